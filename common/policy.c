/*
 * policy — may the mapped account use the service? (include/certmap/policy.h,
 * DESIGN §3). Order: account state (ad, authorization.check_account_state)
 * → required groups → Basic binding; the first failure decides.
 *
 * Account state tests bits, never whole values: disabled is
 * userAccountControl & 0x2, locked is msDS-User-Account-Control-Computed &
 * 0x10 only (a stale lockoutTime or the legacy uAC lockout bit mean nothing),
 * accountExpires 0 and 0x7FFFFFFFFFFFFFFF mean never.
 * Groups, ad: the account's tokenGroups (nested and primary group included,
 * as a Windows token) against each required group's objectSid. rfc4523: a
 * breadth-first walk up groupOfNames/member from the account, at most
 * CM_POLICY_MAX_DEPTH levels. A group that cannot be found denies.
 * Any directory error denies with directory_unavailable.
 * Threading: stateless; the caller's struct cm_dir serializes LDAP access.
 */
#include "certmap/policy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "certmap/util.h"

#define CM_POLICY_MAX_DEPTH 16   /* rfc4523 group nesting levels walked */
#define CM_POLICY_MAX_GROUPS 512 /* groups collected by one rfc4523 walk */
#define MEMBERS_PER_SEARCH 16    /* (member=…) terms OR-ed in one search */
#define SHOWN_USER_MAX 64        /* bytes of a Basic user quoted in a detail */

#define UF_ACCOUNTDISABLE 0x2u
#define UF_LOCKOUT 0x10u /* meaningful in msDS-User-Account-Control-Computed only */
#define FILETIME_NEVER INT64_MAX
#define FILETIME_EPOCH_OFFSET 11644473600LL /* seconds 1601-01-01 → 1970-01-01 */
#define FILETIME_PER_SECOND 10000000LL

/* now as FILETIME (100 ns ticks since 1601), saturating. */
static int64_t filetime_of(time_t now)
{
	int64_t s = (int64_t)now;

	if (s > INT64_MAX / FILETIME_PER_SECOND - FILETIME_EPOCH_OFFSET)
		return INT64_MAX;
	if (s < INT64_MIN / FILETIME_PER_SECOND + FILETIME_EPOCH_OFFSET)
		return INT64_MIN;
	return (s + FILETIME_EPOCH_OFFSET) * FILETIME_PER_SECOND;
}

enum cm_reason cm_policy_account_state(const struct cm_account *acct, time_t now)
{
	if (acct == NULL || !acct->has_uac || (acct->uac & UF_ACCOUNTDISABLE) != 0)
		return CM_REASON_ACCOUNT_DISABLED; /* an unreadable uAC is not "enabled" */
	if (acct->has_uac_computed && (acct->uac_computed & UF_LOCKOUT) != 0)
		return CM_REASON_ACCOUNT_LOCKED;
	if (acct->has_account_expires && acct->account_expires != 0 &&
	    acct->account_expires != FILETIME_NEVER && acct->account_expires <= filetime_of(now))
		return CM_REASON_ACCOUNT_EXPIRED;
	return CM_REASON_ALLOWED;
}

/* user equals name "@" domain, case-insensitively. */
static bool is_name_at(const char *user, const char *name, const char *domain)
{
	size_t n;

	if (name == NULL || name[0] == '\0' || domain == NULL || domain[0] == '\0')
		return false;
	n = strlen(name);
	return strncasecmp(user, name, n) == 0 && user[n] == '@' &&
	       strcasecmp(user + n + 1, domain) == 0;
}

static bool same(const char *a, const char *b)
{
	return a != NULL && b != NULL && b[0] != '\0' && strcasecmp(a, b) == 0;
}

bool cm_policy_basic_user_matches(const struct cm_config *cfg, const struct cm_account *acct,
				  const char *basic_user)
{
	const char *dns, *netbios, *sam, *bs;

	if (cfg == NULL || acct == NULL || basic_user == NULL || basic_user[0] == '\0')
		return false;
	dns = cfg->directory.dns_domain;
	if (cfg->directory.dialect == CM_DIALECT_RFC4523)
		return same(basic_user, acct->name) || same(basic_user, acct->mail) ||
		       is_name_at(basic_user, acct->name, dns);

	sam = acct->sam != NULL ? acct->sam : acct->name;
	if (same(basic_user, sam) || same(basic_user, acct->upn) ||
	    is_name_at(basic_user, sam, dns))
		return true;
	bs = strchr(basic_user, '\\');
	if (bs != NULL && bs != basic_user && same(bs + 1, sam)) {
		size_t dlen = (size_t)(bs - basic_user);

		netbios = cfg->directory.netbios_domain;
		if (netbios == NULL || netbios[0] == '\0')
			return true; /* domain part not checked */
		return strlen(netbios) == dlen && strncasecmp(basic_user, netbios, dlen) == 0;
	}
	return false;
}

static char *state_detail(enum cm_reason r, const struct cm_account *acct)
{
	switch (r) {
	case CM_REASON_ACCOUNT_DISABLED:
		return acct->has_uac ? cm_strdup_printf("account %s is disabled", acct->dn)
				     : cm_strdup_printf("account %s has no readable "
							"userAccountControl; treated as disabled",
							acct->dn);
	case CM_REASON_ACCOUNT_LOCKED:
		return cm_strdup_printf("account %s is locked out", acct->dn);
	case CM_REASON_ACCOUNT_EXPIRED: {
		int64_t secs = acct->account_expires / FILETIME_PER_SECOND - FILETIME_EPOCH_OFFSET;
		time_t t = (time_t)secs;
		struct tm tm;
		char when[32] = "";

		if (gmtime_r(&t, &tm) != NULL)
			strftime(when, sizeof(when), " on %Y-%m-%dT%H:%M:%SZ", &tm);
		return cm_strdup_printf("account %s expired%s", acct->dn, when);
	}
	default:
		return NULL;
	}
}

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

/* ad: tokenGroups of the account vs objectSid of every required group. */
static enum cm_reason groups_ad(const struct cm_config *cfg, struct cm_dir *dir,
				const struct cm_account *acct, struct cm_trace *trace,
				char **detail)
{
	static const char *const tg_attrs[] = { "tokenGroups", NULL };
	static const char *const sid_attrs[] = { "objectSid", NULL };
	const struct cm_strlist *req = &cfg->authorization.required_groups;
	struct cm_dir_result user = { NULL, 0, false };
	const struct cm_dir_attr *tg;
	struct cm_err err = { "" };
	enum cm_dir_status st;
	enum cm_reason reason = CM_REASON_ALLOWED;

	st = cm_dir_search(dir, acct->dn, CM_DIR_SCOPE_BASE, "(objectClass=*)", tg_attrs, 1, &user,
			   trace, &err);
	if (st == CM_DIR_UNAVAILABLE) {
		*detail = strdup(err.msg);
		return CM_REASON_DIRECTORY_UNAVAILABLE;
	}
	if (st == CM_DIR_NO_SUCH_OBJECT || user.n_entries == 0) {
		cm_dir_result_free(&user);
		cm_trace_add(trace, "policy: account %s no longer exists", acct->dn);
		*detail = cm_strdup_printf("account %s no longer exists", acct->dn);
		return CM_REASON_NOT_IN_GROUP;
	}
	tg = cm_dir_entry_attr(&user.entries[0], "tokenGroups");
	cm_trace_add(trace, "policy: %s: %zu tokenGroups SIDs%s", acct->dn,
		     tg != NULL ? tg->n_values : 0,
		     tg == NULL ? " (none readable: check the bind account's rights)" : "");

	for (size_t i = 0; i < req->n && reason == CM_REASON_ALLOWED; i++) {
		struct cm_dir_result grp = { NULL, 0, false };
		const struct cm_dir_attr *sid;

		st = cm_dir_search(dir, req->v[i], CM_DIR_SCOPE_BASE, "(objectClass=*)", sid_attrs,
				   1, &grp, trace, &err);
		if (st == CM_DIR_UNAVAILABLE) {
			*detail = strdup(err.msg);
			reason = CM_REASON_DIRECTORY_UNAVAILABLE;
		} else if (st == CM_DIR_NO_SUCH_OBJECT || grp.n_entries == 0) {
			cm_trace_add(trace, "policy: required group %s does not exist", req->v[i]);
			*detail = cm_strdup_printf("required group %s does not exist", req->v[i]);
			reason = CM_REASON_NOT_IN_GROUP;
		} else if ((sid = cm_dir_entry_attr(&grp.entries[0], "objectSid")) == NULL ||
			   sid->n_values == 0) {
			cm_trace_add(trace, "policy: required group %s has no objectSid", req->v[i]);
			*detail = cm_strdup_printf("required group %s has no objectSid", req->v[i]);
			reason = CM_REASON_NOT_IN_GROUP;
		} else if (!attr_has_value(tg, sid->values[0].data, sid->values[0].len)) {
			cm_trace_add(trace, "policy: %s is not a member of %s", acct->dn,
				     req->v[i]);
			*detail = cm_strdup_printf("account %s is not a member of %s", acct->dn,
						   req->v[i]);
			reason = CM_REASON_NOT_IN_GROUP;
		} else {
			cm_trace_add(trace, "policy: %s is a member of %s", acct->dn, req->v[i]);
		}
		cm_dir_result_free(&grp);
	}
	cm_dir_result_free(&user);
	return reason;
}

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

static bool dn_list_has(const struct dn_list *l, const char *dn)
{
	for (size_t i = 0; i < l->n; i++)
		if (cm_dir_dn_equal(l->v[i], dn))
			return true;
	return false;
}

/* "(&(objectClass=groupOfNames)(|(member=a)(member=b)…))" over dns[0..n). */
static char *member_filter(char *const *dns, size_t n)
{
	size_t cap = 64, len;
	char *f = malloc(cap), *esc = NULL;

	if (f == NULL)
		return NULL;
	len = (size_t)snprintf(f, cap, "(&(objectClass=groupOfNames)(|");
	for (size_t i = 0; i < n; i++) {
		size_t need;

		esc = cm_dir_escape_value(dns[i], strlen(dns[i]));
		if (esc == NULL)
			goto oom;
		need = len + strlen(esc) + sizeof("(member=)))");
		if (need > cap) {
			char *nf = realloc(f, need);

			if (nf == NULL)
				goto oom;
			f = nf;
			cap = need;
		}
		len += (size_t)snprintf(f + len, cap - len, "(member=%s)", esc);
		free(esc);
		esc = NULL;
	}
	snprintf(f + len, cap - len, "))");
	return f;
oom:
	free(esc);
	free(f);
	return NULL;
}

/* Tells a required group that does not exist from one the account is not in:
 * NOT_IN_GROUP (missing) or DIRECTORY_UNAVAILABLE with *detail set, ALLOWED
 * when the group exists. */
static enum cm_reason group_missing(struct cm_dir *dir, const char *group, struct cm_trace *trace,
				    char **detail)
{
	static const char *const no_attrs[] = { "1.1", NULL };
	struct cm_dir_result res = { NULL, 0, false };
	struct cm_err err = { "" };
	enum cm_dir_status st;
	size_t n;

	st = cm_dir_search(dir, group, CM_DIR_SCOPE_BASE, "(objectClass=*)", no_attrs, 1, &res,
			   trace, &err);
	n = res.n_entries;
	cm_dir_result_free(&res);
	if (st == CM_DIR_UNAVAILABLE) {
		*detail = strdup(err.msg);
		return CM_REASON_DIRECTORY_UNAVAILABLE;
	}
	if (st == CM_DIR_NO_SUCH_OBJECT || n == 0) {
		cm_trace_add(trace, "policy: required group %s does not exist", group);
		*detail = cm_strdup_printf("required group %s does not exist", group);
		return CM_REASON_NOT_IN_GROUP;
	}
	return CM_REASON_ALLOWED;
}

/* rfc4523: walk groupOfNames upward from the account, breadth first. */
static enum cm_reason groups_rfc4523(const struct cm_config *cfg, struct cm_dir *dir,
				     const struct cm_account *acct, struct cm_trace *trace,
				     char **detail)
{
	static const char *const no_attrs[] = { "1.1", NULL };
	const struct cm_strlist *req = &cfg->authorization.required_groups;
	struct dn_list frontier = { NULL, 0 }, next = { NULL, 0 }, seen = { NULL, 0 };
	enum cm_reason reason = CM_REASON_ALLOWED;
	bool *found = calloc(req->n, sizeof(*found));
	size_t n_found = 0, level;
	bool capped = false;

	if (found == NULL || dn_list_add(&frontier, acct->dn) != 0)
		goto oom;
	for (level = 0; level < CM_POLICY_MAX_DEPTH && frontier.n > 0 && n_found < req->n;
	     level++) {
		for (size_t off = 0; off < frontier.n; off += MEMBERS_PER_SEARCH) {
			size_t chunk = frontier.n - off < MEMBERS_PER_SEARCH ? frontier.n - off
									     : MEMBERS_PER_SEARCH;
			struct cm_dir_result res = { NULL, 0, false };
			struct cm_err err = { "" };
			enum cm_dir_status st;
			char *filter = member_filter(frontier.v + off, chunk);

			if (filter == NULL)
				goto oom;
			st = cm_dir_search(dir, cfg->directory.base_dn, CM_DIR_SCOPE_SUBTREE, filter,
					   no_attrs, 0, &res, trace, &err);
			free(filter);
			if (st != CM_DIR_OK) {
				*detail = st == CM_DIR_UNAVAILABLE
						  ? strdup(err.msg)
						  : cm_strdup_printf("directory base DN %s does not "
								     "exist",
								     cfg->directory.base_dn);
				cm_dir_result_free(&res);
				reason = CM_REASON_DIRECTORY_UNAVAILABLE;
				goto done;
			}
			if (res.truncated)
				cm_trace_add(trace, "policy: group walk level %zu hit the size limit",
					     level + 1);
			for (size_t i = 0; i < res.n_entries; i++) {
				const char *g = res.entries[i].dn;

				if (dn_list_has(&seen, g))
					continue; /* a cycle or a diamond */
				if (seen.n >= CM_POLICY_MAX_GROUPS) {
					capped = true;
					break;
				}
				if (dn_list_add(&seen, g) != 0 || dn_list_add(&next, g) != 0) {
					cm_dir_result_free(&res);
					goto oom;
				}
				for (size_t r = 0; r < req->n; r++)
					if (!found[r] && cm_dir_dn_equal(req->v[r], g)) {
						found[r] = true;
						n_found++;
						cm_trace_add(trace,
							     "policy: %s is a member of %s "
							     "(nesting level %zu)",
							     acct->dn, g, level + 1);
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
		cm_trace_add(trace, "policy: group walk stopped at %d groups", CM_POLICY_MAX_GROUPS);
	if (n_found < req->n && frontier.n > 0 && level >= CM_POLICY_MAX_DEPTH)
		cm_trace_add(trace, "policy: group walk stopped at %d levels", CM_POLICY_MAX_DEPTH);
	for (size_t r = 0; r < req->n; r++) {
		if (found[r])
			continue;
		reason = group_missing(dir, req->v[r], trace, detail);
		if (reason == CM_REASON_ALLOWED) {
			cm_trace_add(trace, "policy: %s is not a member of %s (%zu groups seen)",
				     acct->dn, req->v[r], seen.n);
			*detail = cm_strdup_printf("account %s is not a member of %s", acct->dn,
						   req->v[r]);
			reason = CM_REASON_NOT_IN_GROUP;
		}
		break;
	}
	goto done;
oom:
	free(*detail);
	*detail = strdup("out of memory");
	reason = CM_REASON_DIRECTORY_UNAVAILABLE;
done:
	dn_list_free(&frontier);
	dn_list_free(&next);
	dn_list_free(&seen);
	free(found);
	return reason;
}

static enum cm_reason check_basic(const struct cm_config *cfg, const struct cm_account *acct,
				  const char *basic_user, struct cm_trace *trace, char **detail)
{
	enum cm_basic_binding mode = cfg->authorization.basic_user_binding;
	char *shown;

	if (mode == CM_BASIC_OFF)
		return CM_REASON_ALLOWED;
	if (basic_user == NULL) {
		if (mode == CM_BASIC_IF_PRESENT) {
			cm_trace_add(trace, "policy: no Basic user; binding not checked");
			return CM_REASON_ALLOWED;
		}
		cm_trace_add(trace, "policy: no Basic user, and basic_user_binding is required");
		*detail = strdup("the request carries no Basic-auth user");
		return CM_REASON_BASIC_USER_MISMATCH;
	}
	shown = cm_sanitize(basic_user, SHOWN_USER_MAX);
	if (cm_policy_basic_user_matches(cfg, acct, basic_user)) {
		cm_trace_add(trace, "policy: Basic user \"%s\" is %s", shown ? shown : "", acct->dn);
		free(shown);
		return CM_REASON_ALLOWED;
	}
	cm_trace_add(trace, "policy: Basic user \"%s\" is not %s", shown ? shown : "", acct->dn);
	*detail = cm_strdup_printf("Basic user \"%s\" is not account %s", shown ? shown : "",
				   acct->name != NULL ? acct->name : acct->dn);
	free(shown);
	return CM_REASON_BASIC_USER_MISMATCH;
}

enum cm_reason cm_policy_check(const struct cm_config *cfg, struct cm_dir *dir,
			       const struct cm_account *acct, const char *basic_user, time_t now,
			       struct cm_trace *trace, char **detail)
{
	enum cm_reason r;

	*detail = NULL;
	if (cfg == NULL || acct == NULL || acct->dn == NULL) {
		*detail = strdup("no account to check");
		return CM_REASON_NOT_MAPPED;
	}
	if (cfg->directory.dialect == CM_DIALECT_AD && cfg->authorization.check_account_state) {
		r = cm_policy_account_state(acct, now);
		if (r != CM_REASON_ALLOWED) {
			*detail = state_detail(r, acct);
			cm_trace_add(trace, "policy: %s", *detail != NULL ? *detail : cm_reason_name(r));
			return r;
		}
		if (!acct->has_uac_computed) {
			/* lockout shows only in the constructed attribute: unknown is not "not locked" */
			cm_trace_add(trace, "policy: %s: msDS-User-Account-Control-Computed unreadable",
				     acct->dn);
			*detail = cm_strdup_printf("lockout state of account %s could not be read",
						   acct->dn);
			return CM_REASON_DIRECTORY_UNAVAILABLE;
		}
		cm_trace_add(trace, "policy: account %s is enabled, not locked, not expired",
			     acct->dn);
	}
	if (cfg->authorization.required_groups.n > 0) {
		if (dir == NULL) {
			*detail = strdup("no directory handle for the group check");
			return CM_REASON_DIRECTORY_UNAVAILABLE;
		}
		r = cfg->directory.dialect == CM_DIALECT_AD
			    ? groups_ad(cfg, dir, acct, trace, detail)
			    : groups_rfc4523(cfg, dir, acct, trace, detail);
		if (r != CM_REASON_ALLOWED)
			return r;
	}
	return check_basic(cfg, acct, basic_user, trace, detail);
}
