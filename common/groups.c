/*
 * groups — nested group membership (include/certmap/groups.h).
 *
 * Two questions, two directions. "Is this account in these groups?" (policy,
 * once per decision) walks up from the account: ad reads the constructed
 * tokenGroups (one base search: nested and primary group included, as the
 * Windows token) and compares each group's objectSid; rfc4523 searches for
 * the groupOfNames that list the account, then the groups that list those,
 * breadth first, MEMBERS_PER_SEARCH DNs per search.
 * "Who is in this group?" (publish, audit) walks down: ad asks the server for
 * the whole transitive closure at once (IN_CHAIN on memberOf, plus the RIDs
 * of G and its nested groups as primaryGroupID, since primary-group
 * membership is not stored in member); rfc4523 reads G's member values and
 * fetches those entries in batches by their RDN — (|(uid=a)(uid=b)…) under
 * base_dn, keeping only exact DN matches — so a group of N accounts costs
 * about N/FETCH_PER_SEARCH searches, not N; fetched groups feed the next
 * level. Every scan is paged.
 * Invariants: DNs are compared by cm_dir_dn_key; a cycle or a diamond in the
 * nesting is visited once; nothing here writes.
 * Threading: stateless; the caller's struct cm_dir serializes LDAP access.
 */
#include "certmap/groups.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldap.h>

#define MEMBERS_PER_SEARCH 16 /* (member=…) terms OR-ed in one upward search */
#define FETCH_PER_SEARCH 64   /* RDN terms OR-ed in one downward fetch */
#define RIDS_PER_SEARCH 200   /* (primaryGroupID=…) terms in one search */
#define IN_CHAIN "1.2.840.113556.1.4.1941"
#define MAX_NAME_BYTES 256 /* a group name given on the command line */

/* ---- DN sets ---- */

static uint64_t hash_key(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static size_t slot_of(char *const *keys, size_t cap, const char *key)
{
	size_t i = (size_t)(hash_key(key) & (cap - 1));

	while (keys[i] != NULL && strcmp(keys[i], key) != 0)
		i = (i + 1) & (cap - 1);
	return i;
}

static int set_grow(struct cm_dnset *set)
{
	size_t cap = set->cap == 0 ? 64 : set->cap * 2;
	char **keys = calloc(cap, sizeof(*keys));

	if (keys == NULL)
		return -1;
	for (size_t i = 0; i < set->cap; i++)
		if (set->keys[i] != NULL)
			keys[slot_of(keys, cap, set->keys[i])] = set->keys[i];
	free(set->keys);
	set->keys = keys;
	set->cap = cap;
	return 0;
}

/* Takes ownership of key. 1 added, 0 present, -1 out of memory. */
static int set_add_key(struct cm_dnset *set, char *key)
{
	size_t i;

	if ((set->n + 1) * 2 > set->cap && set_grow(set) != 0) {
		free(key);
		return -1;
	}
	i = slot_of(set->keys, set->cap, key);
	if (set->keys[i] != NULL) {
		free(key);
		return 0;
	}
	set->keys[i] = key;
	set->n++;
	return 1;
}

static bool set_has_key(const struct cm_dnset *set, const char *key)
{
	return set->cap > 0 && set->keys[slot_of(set->keys, set->cap, key)] != NULL;
}

int cm_dnset_add(struct cm_dnset *set, const char *dn)
{
	char *key = cm_dir_dn_key(dn);

	return key == NULL ? -1 : set_add_key(set, key);
}

bool cm_dnset_has(const struct cm_dnset *set, const char *dn)
{
	char *key = cm_dir_dn_key(dn);
	bool has = key != NULL && set_has_key(set, key);

	free(key);
	return has;
}

void cm_dnset_free(struct cm_dnset *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->cap; i++)
		free(set->keys[i]);
	free(set->keys);
	memset(set, 0, sizeof(*set));
}

/* ---- small lists ---- */

struct dn_list {
	char **v;
	size_t n;
};

static void dn_list_free(struct dn_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int dn_list_add(struct dn_list *l, const char *dn)
{
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

	if (v == NULL)
		return -1;
	l->v = v;
	if ((l->v[l->n] = strdup(dn)) == NULL)
		return -1;
	l->n++;
	return 0;
}

/* Appends text to a growing malloc'd string; -1 out of memory. */
static int str_append(char **buf, size_t *len, size_t *cap, const char *text)
{
	size_t tl = strlen(text);

	if (*len + tl + 1 > *cap) {
		size_t ncap = (*len + tl + 1) * 2;
		char *nb = realloc(*buf, ncap);

		if (nb == NULL)
			return -1;
		*buf = nb;
		*cap = ncap;
	}
	memcpy(*buf + *len, text, tl + 1);
	*len += tl;
	return 0;
}

/* "(<attr>=<escaped value>)"; malloc'd. */
static char *term(const char *attr, const char *value, size_t len)
{
	char *esc = cm_dir_escape_value(value, len), *t;

	if (esc == NULL)
		return NULL;
	t = cm_strdup_printf("(%s=%s)", attr, esc);
	free(esc);
	return t;
}

/* "<prefix>(|(<attr>=v0)(<attr>=v1)…)<suffix>" over vals[0..n). */
static char *or_filter(const char *prefix, const char *attr, char *const *vals, size_t n,
		       const char *suffix)
{
	size_t len = 0, cap = 0;
	char *f = NULL;

	if (str_append(&f, &len, &cap, prefix) != 0 || str_append(&f, &len, &cap, "(|") != 0)
		goto oom;
	for (size_t i = 0; i < n; i++) {
		char *t = term(attr, vals[i], strlen(vals[i]));

		if (t == NULL || str_append(&f, &len, &cap, t) != 0) {
			free(t);
			goto oom;
		}
		free(t);
	}
	if (str_append(&f, &len, &cap, ")") != 0 || str_append(&f, &len, &cap, suffix) != 0)
		goto oom;
	return f;
oom:
	free(f);
	return NULL;
}

/* ---- is this account a member? ---- */

/* Is any value of attr byte-equal to the len bytes at v? */
static bool attr_has_value(const struct cm_dir_attr *attr, const unsigned char *v, size_t len)
{
	if (attr == NULL)
		return false;
	for (size_t i = 0; i < attr->n_values; i++)
		if (attr->values[i].len == len && memcmp(attr->values[i].data, v, len) == 0)
			return true;
	return false;
}

/* ad: tokenGroups of the account vs objectSid of every group. */
static enum cm_groups_status check_ad(struct cm_dir *dir, const char *account_dn,
				      char *const *groups, size_t n, bool stop_at_miss,
				      enum cm_group_answer *answers, struct cm_trace *trace,
				      struct cm_err *err)
{
	static const char *const tg_attrs[] = {"tokenGroups", NULL};
	static const char *const sid_attrs[] = {"objectSid", NULL};
	struct cm_dir_result user = {NULL, 0, false};
	const struct cm_dir_attr *tg;
	enum cm_groups_status status = CM_GROUPS_OK;
	enum cm_dir_status st;

	st = cm_dir_search(dir, account_dn, CM_DIR_SCOPE_BASE, "(objectClass=*)", tg_attrs, 1,
			   &user, trace, err);
	if (st == CM_DIR_UNAVAILABLE)
		return CM_GROUPS_UNAVAILABLE;
	if (st == CM_DIR_NO_SUCH_OBJECT || user.n_entries == 0) {
		cm_dir_result_free(&user);
		cm_trace_add(trace, "groups: account %s no longer exists", account_dn);
		return CM_GROUPS_NOT_FOUND;
	}
	tg = cm_dir_entry_attr(&user.entries[0], "tokenGroups");
	cm_trace_add(trace, "groups: %s: %zu tokenGroups SIDs%s", account_dn,
		     tg != NULL ? tg->n_values : 0,
		     tg == NULL ? " (none readable: check the bind account's rights)" : "");

	for (size_t i = 0; i < n; i++) {
		struct cm_dir_result grp = {NULL, 0, false};
		const struct cm_dir_attr *sid;

		st = cm_dir_search(dir, groups[i], CM_DIR_SCOPE_BASE, "(objectClass=*)", sid_attrs,
				   1, &grp, trace, err);
		if (st == CM_DIR_UNAVAILABLE) {
			status = CM_GROUPS_UNAVAILABLE;
			break;
		}
		if (st == CM_DIR_NO_SUCH_OBJECT || grp.n_entries == 0)
			answers[i] = CM_GROUP_MISSING;
		else if ((sid = cm_dir_entry_attr(&grp.entries[0], "objectSid")) == NULL ||
			 sid->n_values == 0)
			answers[i] = CM_GROUP_NO_SID;
		else if (!attr_has_value(tg, sid->values[0].data, sid->values[0].len))
			answers[i] = CM_GROUP_NOT_MEMBER;
		else
			answers[i] = CM_GROUP_MEMBER;
		cm_dir_result_free(&grp);
		if (stop_at_miss && answers[i] != CM_GROUP_MEMBER)
			break;
	}
	cm_dir_result_free(&user);
	return status;
}

/* Does group exist? MISSING, NOT_MEMBER (it exists), or UNKNOWN with
 * *status UNAVAILABLE. */
static enum cm_group_answer group_exists(struct cm_dir *dir, const char *group,
					 enum cm_groups_status *status, struct cm_trace *trace,
					 struct cm_err *err)
{
	static const char *const no_attrs[] = {"1.1", NULL};
	struct cm_dir_result res = {NULL, 0, false};
	enum cm_dir_status st;
	size_t n;

	st = cm_dir_search(dir, group, CM_DIR_SCOPE_BASE, "(objectClass=*)", no_attrs, 1, &res,
			   trace, err);
	n = res.n_entries;
	cm_dir_result_free(&res);
	if (st == CM_DIR_UNAVAILABLE) {
		*status = CM_GROUPS_UNAVAILABLE;
		return CM_GROUP_UNKNOWN;
	}
	return st == CM_DIR_NO_SUCH_OBJECT || n == 0 ? CM_GROUP_MISSING : CM_GROUP_NOT_MEMBER;
}

/* rfc4523: walk groupOfNames upward from the account, breadth first. */
static enum cm_groups_status check_rfc4523(const struct cm_config *cfg, struct cm_dir *dir,
					   const char *account_dn, char *const *groups, size_t n,
					   bool stop_at_miss, enum cm_group_answer *answers,
					   struct cm_trace *trace, struct cm_err *err)
{
	static const char *const no_attrs[] = {"1.1", NULL};
	struct dn_list frontier = {NULL, 0}, next = {NULL, 0};
	struct cm_dnset seen = {NULL, 0, 0};
	enum cm_groups_status status = CM_GROUPS_OK;
	size_t n_found = 0, level;
	bool capped = false;

	if (dn_list_add(&frontier, account_dn) != 0)
		goto oom;
	for (level = 0; level < CM_GROUPS_MAX_DEPTH && frontier.n > 0 && n_found < n; level++) {
		for (size_t off = 0; off < frontier.n; off += MEMBERS_PER_SEARCH) {
			size_t chunk = frontier.n - off < MEMBERS_PER_SEARCH ? frontier.n - off
									     : MEMBERS_PER_SEARCH;
			struct cm_dir_result res = {NULL, 0, false};
			enum cm_dir_status st;
			char *filter = or_filter("(&(objectClass=groupOfNames)", "member",
						 frontier.v + off, chunk, ")");

			if (filter == NULL)
				goto oom;
			st = cm_dir_search(dir, cfg->directory.base_dn, CM_DIR_SCOPE_SUBTREE,
					   filter, no_attrs, 0, &res, trace, err);
			free(filter);
			if (st != CM_DIR_OK) {
				if (st == CM_DIR_NO_SUCH_OBJECT)
					cm_err_set(err, "directory base DN %s does not exist",
						   cfg->directory.base_dn);
				cm_dir_result_free(&res);
				status = CM_GROUPS_UNAVAILABLE;
				goto done;
			}
			if (res.truncated)
				cm_trace_add(trace, "groups: walk level %zu hit the size limit",
					     level + 1);
			for (size_t i = 0; i < res.n_entries; i++) {
				const char *g = res.entries[i].dn;
				int added;

				if (seen.n >= CM_GROUPS_MAX_GROUPS && !cm_dnset_has(&seen, g)) {
					capped = true;
					break;
				}
				added = cm_dnset_add(&seen, g);
				if (added == 0)
					continue; /* a cycle or a diamond */
				if (added < 0 || dn_list_add(&next, g) != 0) {
					cm_dir_result_free(&res);
					goto oom;
				}
				for (size_t r = 0; r < n; r++)
					if (answers[r] != CM_GROUP_MEMBER &&
					    cm_dir_dn_equal(groups[r], g)) {
						answers[r] = CM_GROUP_MEMBER;
						n_found++;
						cm_trace_add(trace,
							     "groups: %s is a member of %s "
							     "(nesting level %zu)",
							     account_dn, g, level + 1);
					}
			}
			cm_dir_result_free(&res);
		}
		dn_list_free(&frontier);
		frontier = next;
		next.v = NULL;
		next.n = 0;
	}
	if (capped)
		cm_trace_add(trace, "groups: walk stopped at %d groups", CM_GROUPS_MAX_GROUPS);
	if (n_found < n && frontier.n > 0 && level >= CM_GROUPS_MAX_DEPTH)
		cm_trace_add(trace, "groups: walk stopped at %d levels", CM_GROUPS_MAX_DEPTH);
	for (size_t r = 0; r < n; r++) {
		if (answers[r] == CM_GROUP_MEMBER)
			continue;
		answers[r] = group_exists(dir, groups[r], &status, trace, err);
		if (status != CM_GROUPS_OK)
			goto done;
		if (answers[r] == CM_GROUP_NOT_MEMBER)
			cm_trace_add(trace, "groups: %s is not a member of %s (%zu groups seen)",
				     account_dn, groups[r], seen.n);
		if (stop_at_miss)
			break; /* groups after the first miss stay undecided */
	}
	goto done;
oom:
	cm_err_set(err, "out of memory");
	status = CM_GROUPS_UNAVAILABLE;
done:
	dn_list_free(&frontier);
	dn_list_free(&next);
	cm_dnset_free(&seen);
	return status;
}

enum cm_groups_status cm_groups_check(const struct cm_config *cfg, struct cm_dir *dir,
				      const char *account_dn, char *const *groups, size_t n,
				      bool stop_at_miss, enum cm_group_answer *answers,
				      struct cm_trace *trace, struct cm_err *err)
{
	for (size_t i = 0; i < n; i++)
		answers[i] = CM_GROUP_UNKNOWN;
	if (cfg == NULL || dir == NULL || account_dn == NULL) {
		cm_err_set(err, "no directory handle for the group check");
		return CM_GROUPS_UNAVAILABLE;
	}
	if (n == 0)
		return CM_GROUPS_OK;
	return cfg->directory.dialect == CM_DIALECT_AD
		       ? check_ad(dir, account_dn, groups, n, stop_at_miss, answers, trace, err)
		       : check_rfc4523(cfg, dir, account_dn, groups, n, stop_at_miss, answers,
				       trace, err);
}

/* ---- which group is meant? ---- */

enum cm_groups_status cm_groups_resolve(const struct cm_config *cfg, struct cm_dir *dir,
					const char *dn_or_name, char **dn, struct cm_trace *trace,
					struct cm_err *err)
{
	static const char *const attrs[] = {"objectClass", NULL};
	bool ad = cfg->directory.dialect == CM_DIALECT_AD;
	struct cm_dir_result res = {NULL, 0, false};
	enum cm_groups_status status = CM_GROUPS_OK;
	enum cm_dir_status st;
	char *filter = NULL, *esc = NULL;
	size_t len;

	*dn = NULL;
	len = dn_or_name != NULL ? strlen(dn_or_name) : 0;
	if (len == 0 || len > CM_DIR_MAX_VALUE_BYTES) {
		cm_err_set(err, "no group given");
		return CM_GROUPS_NOT_FOUND;
	}
	if (strchr(dn_or_name, '=') != NULL) {
		const char *filter_dn = ad ? "(objectClass=group)" : "(objectClass=groupOfNames)";

		st = cm_dir_search(dir, dn_or_name, CM_DIR_SCOPE_BASE, filter_dn, attrs, 1, &res,
				   trace, err);
		if (st == CM_DIR_UNAVAILABLE)
			return CM_GROUPS_UNAVAILABLE;
		if (st == CM_DIR_NO_SUCH_OBJECT || res.n_entries == 0) {
			cm_dir_result_free(&res);
			cm_err_set(err, "group %.200s does not exist (or is not a %s)", dn_or_name,
				   ad ? "group" : "groupOfNames");
			return CM_GROUPS_NOT_FOUND;
		}
		*dn = strdup(res.entries[0].dn);
		cm_dir_result_free(&res);
		if (*dn == NULL) {
			cm_err_set(err, "out of memory");
			return CM_GROUPS_UNAVAILABLE;
		}
		return CM_GROUPS_OK;
	}
	if (len > MAX_NAME_BYTES) {
		cm_err_set(err, "group name longer than %d bytes", MAX_NAME_BYTES);
		return CM_GROUPS_NOT_FOUND;
	}
	esc = cm_dir_escape_value(dn_or_name, len);
	if (esc != NULL)
		filter =
			ad ? cm_strdup_printf("(&(objectClass=group)(|(cn=%s)(sAMAccountName=%s)))",
					      esc, esc)
			   : cm_strdup_printf("(&(objectClass=groupOfNames)(cn=%s))", esc);
	free(esc);
	if (filter == NULL) {
		cm_err_set(err, "out of memory");
		return CM_GROUPS_UNAVAILABLE;
	}
	st = cm_dir_search(dir, cfg->directory.base_dn, CM_DIR_SCOPE_SUBTREE, filter, attrs, 16,
			   &res, trace, err);
	free(filter);
	if (st == CM_DIR_UNAVAILABLE)
		return CM_GROUPS_UNAVAILABLE;
	if (st == CM_DIR_NO_SUCH_OBJECT || res.n_entries == 0) {
		cm_err_set(err, "no group named \"%.200s\" under %.200s", dn_or_name,
			   cfg->directory.base_dn);
		status = CM_GROUPS_NOT_FOUND;
	} else if (res.n_entries > 1) {
		char list[CM_ERR_MAX_MSG] = "";
		size_t used = 0;

		for (size_t i = 0; i < res.n_entries && used + 1 < sizeof(list); i++) {
			int w = snprintf(list + used, sizeof(list) - used, "%s%s", i ? "; " : "",
					 res.entries[i].dn);
			if (w < 0)
				break;
			used += (size_t)w;
		}
		cm_err_set(err, "the name \"%.60s\" names %zu%s groups (give the DN): %s",
			   dn_or_name, res.n_entries, res.truncated ? " or more" : "", list);
		status = CM_GROUPS_AMBIGUOUS;
	} else if ((*dn = strdup(res.entries[0].dn)) == NULL) {
		cm_err_set(err, "out of memory");
		status = CM_GROUPS_UNAVAILABLE;
	}
	cm_dir_result_free(&res);
	return status;
}

/* ---- who is in the group? ---- */

/* Moves entry e (emptied) to the end of out; -1 out of memory. */
static int take_entry(struct cm_dir_result *out, struct cm_dir_entry *e)
{
	struct cm_dir_entry *v = realloc(out->entries, (out->n_entries + 1) * sizeof(*v));

	if (v == NULL)
		return -1;
	out->entries = v;
	out->entries[out->n_entries++] = *e;
	memset(e, 0, sizeof(*e));
	return 0;
}

/* attrs plus the names in extra that are not already there; malloc'd array
 * of borrowed strings, NULL-terminated. */
static const char **attrs_plus(const char *const *attrs, const char *const *extra)
{
	size_t n = 0, m = 0;
	const char **all;

	while (attrs != NULL && attrs[n] != NULL)
		n++;
	while (extra[m] != NULL)
		m++;
	all = calloc(n + m + 1, sizeof(*all));
	if (all == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		all[i] = attrs[i];
	for (size_t j = 0, k = n; j < m; j++) {
		bool dup = false;

		for (size_t i = 0; i < k; i++)
			dup = dup || strcasecmp(all[i], extra[j]) == 0;
		if (!dup)
			all[k++] = extra[j];
	}
	return all;
}

/* The RID (last sub-authority) of a binary SID; false when malformed. */
static bool sid_rid(const struct cm_dir_value *sid, unsigned long *rid)
{
	const unsigned char *p = sid->data;
	size_t subs;

	if (sid->len < 8)
		return false;
	subs = p[1];
	if (subs == 0 || sid->len != 8 + 4 * subs)
		return false;
	p += sid->len - 4;
	*rid = (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 |
	       (unsigned long)p[3] << 24;
	return true;
}

/* Adds the entries of res not yet in seen to out (moving them). */
static int merge_new(struct cm_dir_result *res, struct cm_dnset *seen, struct cm_dir_result *out)
{
	for (size_t i = 0; i < res->n_entries; i++) {
		int added = cm_dnset_add(seen, res->entries[i].dn);

		if (added < 0 || (added > 0 && take_entry(out, &res->entries[i]) != 0))
			return -1;
	}
	return 0;
}

static enum cm_groups_status members_ad(const struct cm_config *cfg, struct cm_dir *dir,
					const char *group_dn, const char *const *attrs,
					struct cm_dir_result *out, struct cm_trace *trace,
					struct cm_err *err)
{
	static const char *const sid_attrs[] = {"objectSid", NULL};
	const char *base = cfg->directory.base_dn;
	struct cm_dir_result grp = {NULL, 0, false}, nested = {NULL, 0, false};
	struct cm_dir_result res = {NULL, 0, false};
	struct cm_dnset seen = {NULL, 0, 0};
	enum cm_groups_status status = CM_GROUPS_OK;
	char **rids = NULL, *esc = NULL, *filter = NULL;
	size_t n_rids = 0, first_chunk;
	enum cm_dir_status st;

	st = cm_dir_search(dir, group_dn, CM_DIR_SCOPE_BASE, "(objectClass=group)", sid_attrs, 1,
			   &grp, trace, err);
	if (st == CM_DIR_UNAVAILABLE) {
		status = CM_GROUPS_UNAVAILABLE;
		goto done;
	}
	if (st == CM_DIR_NO_SUCH_OBJECT || grp.n_entries == 0) {
		cm_err_set(err, "group %.200s does not exist", group_dn);
		status = CM_GROUPS_NOT_FOUND;
		goto done;
	}
	esc = cm_dir_escape_value(grp.entries[0].dn, strlen(grp.entries[0].dn));
	if (esc == NULL)
		goto oom;
	/* G and every group nested in it: their RIDs as primaryGroupID */
	filter = cm_strdup_printf("(&(objectClass=group)(memberOf:" IN_CHAIN ":=%s))", esc);
	if (filter == NULL)
		goto oom;
	st = cm_dir_search_paged(dir, base, CM_DIR_SCOPE_SUBTREE, filter, sid_attrs, 0, 0, &nested,
				 trace, err);
	free(filter);
	filter = NULL;
	if (st != CM_DIR_OK) {
		status = CM_GROUPS_UNAVAILABLE;
		if (st == CM_DIR_NO_SUCH_OBJECT)
			cm_err_set(err, "directory base DN %s does not exist", base);
		goto done;
	}
	if (nested.truncated) {
		cm_err_set(err, "the groups nested in %.200s are more than a size limit allows",
			   group_dn);
		status = CM_GROUPS_INCOMPLETE;
		goto done;
	}
	rids = calloc(nested.n_entries + 1, sizeof(*rids));
	if (rids == NULL)
		goto oom;
	for (size_t i = 0; i <= nested.n_entries; i++) {
		const struct cm_dir_entry *e = i == 0 ? &grp.entries[0] : &nested.entries[i - 1];
		const struct cm_dir_attr *sid = cm_dir_entry_attr(e, "objectSid");
		unsigned long rid;

		if (sid == NULL || sid->n_values == 0 || !sid_rid(&sid->values[0], &rid)) {
			cm_trace_add(trace,
				     "groups: %s has no readable objectSid: its primary-group "
				     "members are not seen",
				     e->dn);
			continue;
		}
		if ((rids[n_rids] = cm_strdup_printf("%lu", rid)) == NULL)
			goto oom;
		n_rids++;
	}
	cm_trace_add(trace, "groups: %s: %zu nested group%s", group_dn, nested.n_entries,
		     nested.n_entries == 1 ? "" : "s");

	/* members in the chain, plus the first RIDs as primary group */
	first_chunk = n_rids < RIDS_PER_SEARCH ? n_rids : RIDS_PER_SEARCH;
	{
		char *prefix =
			cm_strdup_printf("(&(objectClass=user)(|(memberOf:" IN_CHAIN ":=%s)", esc);

		if (prefix == NULL)
			goto oom;
		filter = first_chunk > 0
				 ? or_filter(prefix, "primaryGroupID", rids, first_chunk, "))")
				 : cm_strdup_printf("%s))", prefix);
		free(prefix);
	}
	for (size_t off = 0;;) {
		if (filter == NULL)
			goto oom;
		st = cm_dir_search_paged(dir, base, CM_DIR_SCOPE_SUBTREE, filter, attrs, 0, 0, &res,
					 trace, err);
		free(filter);
		filter = NULL;
		if (st != CM_DIR_OK) {
			status = CM_GROUPS_UNAVAILABLE;
			goto done;
		}
		if (res.truncated) {
			cm_err_set(err,
				   "the member list of %.200s was cut short by a size limit "
				   "(raise the bind account's limit)",
				   group_dn);
			status = CM_GROUPS_INCOMPLETE;
		}
		if (merge_new(&res, &seen, out) != 0)
			goto oom;
		cm_dir_result_free(&res);
		if (status != CM_GROUPS_OK)
			goto done;
		off += off == 0 ? first_chunk : RIDS_PER_SEARCH;
		if (off >= n_rids)
			break;
		filter = or_filter("(&(objectClass=user)", "primaryGroupID", rids + off,
				   n_rids - off < RIDS_PER_SEARCH ? n_rids - off : RIDS_PER_SEARCH,
				   ")");
	}
	cm_trace_add(trace, "groups: %s: %zu member account%s (nested, primary group included)",
		     group_dn, out->n_entries, out->n_entries == 1 ? "" : "s");
	goto done;
oom:
	cm_err_set(err, "out of memory");
	status = CM_GROUPS_UNAVAILABLE;
done:
	for (size_t i = 0; i < n_rids; i++)
		free(rids[i]);
	free(rids);
	free(esc);
	free(filter);
	cm_dir_result_free(&grp);
	cm_dir_result_free(&nested);
	cm_dir_result_free(&res);
	cm_dnset_free(&seen);
	return status;
}

/* "(a=v)" or "(&(a=v)(b=w))" for the first RDN of dn; malloc'd, NULL when
 * the RDN cannot be a filter (a #hex value) or on error. */
static char *rdn_filter(const char *dn)
{
	LDAPDN parsed = NULL;
	size_t len = 0, cap = 0, n = 0;
	char *f = NULL;

	if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS || parsed == NULL ||
	    parsed[0] == NULL)
		goto fail;
	while (parsed[0][n] != NULL)
		n++;
	if (n > 1 && str_append(&f, &len, &cap, "(&") != 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		LDAPAVA *ava = parsed[0][i];
		char *attr, *t;

		if ((ava->la_flags & LDAP_AVA_BINARY) != 0)
			goto fail;
		attr = cm_memdup_str(ava->la_attr.bv_val, ava->la_attr.bv_len);
		if (attr == NULL)
			goto fail;
		t = term(attr, ava->la_value.bv_val, ava->la_value.bv_len);
		free(attr);
		if (t == NULL || str_append(&f, &len, &cap, t) != 0) {
			free(t);
			goto fail;
		}
		free(t);
	}
	if (n > 1 && str_append(&f, &len, &cap, ")") != 0)
		goto fail;
	ldap_dnfree(parsed);
	return f;
fail:
	if (parsed != NULL)
		ldap_dnfree(parsed);
	free(f);
	return NULL;
}

static bool is_group_entry(const struct cm_dir_entry *e)
{
	const struct cm_dir_attr *oc = cm_dir_entry_attr(e, "objectClass");

	for (size_t i = 0; oc != NULL && i < oc->n_values; i++) {
		const char *v = (const char *)oc->values[i].data;

		if (strcasecmp(v, "groupOfNames") == 0 || strcasecmp(v, "groupOfUniqueNames") == 0)
			return true;
	}
	return false;
}

/* Queues the member values of group entry e that were not seen yet. */
static int queue_members(const struct cm_dir_entry *e, struct cm_dnset *seen, struct dn_list *next)
{
	const struct cm_dir_attr *m = cm_dir_entry_attr(e, "member");

	for (size_t i = 0; m != NULL && i < m->n_values; i++) {
		const char *dn = (const char *)m->values[i].data;
		int added = cm_dnset_add(seen, dn);

		if (added < 0)
			continue; /* a member value that is no DN: nothing to fetch */
		if (added > 0 && dn_list_add(next, dn) != 0)
			return -1;
	}
	return 0;
}

/* Fetches the entries of dns[0..n) (one level of the downward walk) with
 * attrs: accounts move to out, groups queue their members in next. */
static enum cm_groups_status fetch_level(const struct cm_config *cfg, struct cm_dir *dir,
					 char *const *dns, size_t n, const char *const *attrs,
					 struct cm_dnset *seen, struct cm_dnset *found,
					 struct dn_list *next, struct cm_dir_result *out,
					 size_t *missing, struct cm_trace *trace,
					 struct cm_err *err)
{
	for (size_t off = 0; off < n; off += FETCH_PER_SEARCH) {
		size_t chunk = n - off < FETCH_PER_SEARCH ? n - off : FETCH_PER_SEARCH, got = 0;
		struct cm_dnset wanted = {NULL, 0, 0};
		struct cm_dir_result res = {NULL, 0, false};
		size_t len = 0, cap = 0;
		char *filter = NULL;
		enum cm_dir_status st;
		bool oom = str_append(&filter, &len, &cap, "(|") != 0;

		for (size_t i = off; i < off + chunk && !oom; i++) {
			char *t = rdn_filter(dns[i]);

			if (t == NULL) {
				cm_trace_add(trace,
					     "groups: member %s: RDN not searchable, skipped",
					     dns[i]);
				(*missing)++;
				continue;
			}
			oom = str_append(&filter, &len, &cap, t) != 0 ||
			      cm_dnset_add(&wanted, dns[i]) < 0;
			free(t);
		}
		oom = oom || str_append(&filter, &len, &cap, ")") != 0;
		if (oom) {
			free(filter);
			cm_dnset_free(&wanted);
			cm_err_set(err, "out of memory");
			return CM_GROUPS_UNAVAILABLE;
		}
		if (wanted.n == 0) {
			free(filter);
			continue;
		}
		st = cm_dir_search_paged(dir, cfg->directory.base_dn, CM_DIR_SCOPE_SUBTREE, filter,
					 attrs, 0, 0, &res, trace, err);
		free(filter);
		if (st != CM_DIR_OK || res.truncated) {
			if (st == CM_DIR_NO_SUCH_OBJECT)
				cm_err_set(err, "directory base DN %s does not exist",
					   cfg->directory.base_dn);
			else if (st == CM_DIR_OK)
				cm_err_set(err, "fetching group members was cut short by a size "
						"limit (raise the bind account's limit)");
			cm_dir_result_free(&res);
			cm_dnset_free(&wanted);
			return st == CM_DIR_OK ? CM_GROUPS_INCOMPLETE : CM_GROUPS_UNAVAILABLE;
		}
		for (size_t i = 0; i < res.n_entries; i++) {
			struct cm_dir_entry *e = &res.entries[i];
			int r;

			if (!cm_dnset_has(&wanted, e->dn))
				continue; /* same RDN elsewhere in the tree */
			if (cm_dnset_add(found, e->dn) == 0)
				continue; /* returned twice */
			got++;
			r = is_group_entry(e) ? queue_members(e, seen, next) : take_entry(out, e);
			if (r != 0) {
				cm_dir_result_free(&res);
				cm_dnset_free(&wanted);
				cm_err_set(err, "out of memory");
				return CM_GROUPS_UNAVAILABLE;
			}
		}
		*missing += wanted.n - got;
		cm_dir_result_free(&res);
		cm_dnset_free(&wanted);
	}
	return CM_GROUPS_OK;
}

static enum cm_groups_status members_rfc4523(const struct cm_config *cfg, struct cm_dir *dir,
					     const char *group_dn, const char *const *attrs,
					     struct cm_dir_result *out, struct cm_trace *trace,
					     struct cm_err *err)
{
	static const char *const want[] = {"objectClass", "member", NULL};
	struct cm_dir_result grp = {NULL, 0, false};
	struct dn_list frontier = {NULL, 0}, next = {NULL, 0};
	struct cm_dnset seen = {NULL, 0, 0}, found = {NULL, 0, 0};
	enum cm_groups_status status = CM_GROUPS_OK;
	const char **all = attrs_plus(attrs, want);
	size_t missing = 0, level = 0;
	enum cm_dir_status st;

	if (all == NULL)
		goto oom;
	st = cm_dir_search(dir, group_dn, CM_DIR_SCOPE_BASE, "(objectClass=*)", all, 1, &grp, trace,
			   err);
	if (st == CM_DIR_UNAVAILABLE) {
		status = CM_GROUPS_UNAVAILABLE;
		goto done;
	}
	if (st == CM_DIR_NO_SUCH_OBJECT || grp.n_entries == 0 || !is_group_entry(&grp.entries[0])) {
		cm_err_set(err, "group %.200s does not exist (or is not a groupOfNames)", group_dn);
		status = CM_GROUPS_NOT_FOUND;
		goto done;
	}
	if (cm_dnset_add(&seen, grp.entries[0].dn) < 0 ||
	    queue_members(&grp.entries[0], &seen, &frontier) != 0)
		goto oom;
	for (level = 0; level < CM_GROUPS_MAX_DEPTH && frontier.n > 0; level++) {
		status = fetch_level(cfg, dir, frontier.v, frontier.n, all, &seen, &found, &next,
				     out, &missing, trace, err);
		if (status != CM_GROUPS_OK)
			goto done;
		dn_list_free(&frontier);
		frontier = next;
		next.v = NULL;
		next.n = 0;
	}
	if (frontier.n > 0)
		cm_trace_add(trace, "groups: %s: walk stopped at %d levels (%zu DNs not followed)",
			     group_dn, CM_GROUPS_MAX_DEPTH, frontier.n);
	cm_trace_add(trace,
		     "groups: %s: %zu member account%s over %zu level%s; %zu member DN%s not "
		     "found under the base DN",
		     group_dn, out->n_entries, out->n_entries == 1 ? "" : "s", level,
		     level == 1 ? "" : "s", missing, missing == 1 ? "" : "s");
	goto done;
oom:
	cm_err_set(err, "out of memory");
	status = CM_GROUPS_UNAVAILABLE;
done:
	free(all);
	cm_dir_result_free(&grp);
	dn_list_free(&frontier);
	dn_list_free(&next);
	cm_dnset_free(&seen);
	cm_dnset_free(&found);
	return status;
}

enum cm_groups_status cm_groups_members(const struct cm_config *cfg, struct cm_dir *dir,
					const char *group_dn, const char *const *attrs,
					struct cm_dir_result *out, struct cm_trace *trace,
					struct cm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (cfg == NULL || dir == NULL || group_dn == NULL) {
		cm_err_set(err, "no directory handle for the member list");
		return CM_GROUPS_UNAVAILABLE;
	}
	return cfg->directory.dialect == CM_DIALECT_AD
		       ? members_ad(cfg, dir, group_dn, attrs, out, trace, err)
		       : members_rfc4523(cfg, dir, group_dn, attrs, out, trace, err);
}
