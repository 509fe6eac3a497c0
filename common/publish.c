/*
 * publish — sources, matching and the change plan of `certmapctl publish`
 * (include/certmap/publish.h).
 *
 * Matching uses sorted indexes of the members' names, UPNs and mail
 * addresses (lowercased), so 10,000 files against 10,000 members costs
 * N log M, not N × M. The plan is a list of changes in the order they must be
 * applied: for each member its adds, then the deletes of the expired values
 * they replace (the executor skips those when an add of that account
 * failed: an account never ends up with no certificate because of us), then
 * the prune deletes.
 * Invariants: nothing here writes to the directory; a delete is only ever
 * planned for a managed value; a value already on the account is never
 * added again.
 */
#include "certmap/publish.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_MAP_BYTES (64u * 1024u * 1024u)
#define MAX_FIELD_BYTES 4096u

/* ---- --map CSV ---- */

void cm_pub_map_free(struct cm_pub_map *map)
{
	if (map == NULL)
		return;
	for (size_t i = 0; i < map->n; i++) {
		free(map->rows[i].account);
		free(map->rows[i].file);
	}
	free(map->rows);
	memset(map, 0, sizeof(*map));
}

/* One RFC 4180 field starting at *p (inside one line ending at end); the
 * field is malloc'd into *out. *p ends on the ',' or at end. */
static int csv_field(const char **p, const char *end, char **out, const char **why)
{
	const char *s = *p;
	size_t len = 0;
	char *buf = malloc(MAX_FIELD_BYTES + 1);

	*out = NULL;
	if (buf == NULL) {
		*why = "out of memory";
		return -1;
	}
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	if (s < end && *s == '"') {
		s++;
		for (;;) {
			if (s >= end) {
				*why = "unterminated quoted field";
				goto fail;
			}
			if (*s == '"') {
				if (s + 1 < end && s[1] == '"') {
					s += 2;
					if (len >= MAX_FIELD_BYTES)
						goto toolong;
					buf[len++] = '"';
					continue;
				}
				s++;
				break;
			}
			if (len >= MAX_FIELD_BYTES)
				goto toolong;
			buf[len++] = *s++;
		}
		while (s < end && (*s == ' ' || *s == '\t'))
			s++;
		if (s < end && *s != ',') {
			*why = "text after a closing quote";
			goto fail;
		}
	} else {
		const char *start = s, *stop;

		while (s < end && *s != ',') {
			if (*s == '"') {
				*why = "a quote inside an unquoted field";
				goto fail;
			}
			s++;
		}
		stop = s;
		while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
			stop--;
		if ((size_t)(stop - start) > MAX_FIELD_BYTES)
			goto toolong;
		len = (size_t)(stop - start);
		memcpy(buf, start, len);
	}
	buf[len] = '\0';
	*out = buf;
	*p = s;
	return 0;
toolong:
	*why = "field longer than 4096 bytes";
fail:
	free(buf);
	return -1;
}

int cm_pub_map_parse(const char *text, size_t len, const char *base_dir, struct cm_pub_map *out,
		     struct cm_err *err)
{
	const char *p = text, *end = text + len;
	bool first_row = true;
	size_t line = 0;

	memset(out, 0, sizeof(*out));
	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	if (memchr(p, '\0', (size_t)(end - p)) != NULL) {
		cm_err_set(err, "a NUL byte: not a text file");
		return -1;
	}
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p)), *lend, *q;
		char *fields[2] = {NULL, NULL};
		const char *why = NULL;
		struct cm_pub_map_row *rows;
		size_t nf = 0;

		line++;
		if (eol == NULL)
			eol = end;
		lend = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
		q = p;
		p = eol < end ? eol + 1 : end;
		while (q < lend && (*q == ' ' || *q == '\t'))
			q++;
		if (q == lend || *q == '#')
			continue;
		for (;;) {
			char *f = NULL;

			if (csv_field(&q, lend, &f, &why) != 0)
				break;
			if (nf >= 2) {
				free(f);
				why = "more than two fields (expected account,certfile)";
				break;
			}
			fields[nf++] = f;
			if (q >= lend)
				break;
			q++; /* the ',' */
		}
		if (why == NULL && nf < 2)
			why = "one field (expected account,certfile)";
		if (why == NULL && (fields[0][0] == '\0' || fields[1][0] == '\0'))
			why = "an empty field";
		if (why != NULL) {
			cm_err_set(err, "line %zu: %s", line, why);
			free(fields[0]);
			free(fields[1]);
			cm_pub_map_free(out);
			return -1;
		}
		if (first_row && strcasecmp(fields[0], "account") == 0 &&
		    strcasecmp(fields[1], "certfile") == 0) {
			first_row = false;
			free(fields[0]);
			free(fields[1]);
			continue;
		}
		first_row = false;
		if (out->n >= CM_PUB_MAX_MAP_ROWS) {
			cm_err_set(err, "line %zu: more than %u rows", line, CM_PUB_MAX_MAP_ROWS);
			goto fail_fields;
		}
		rows = realloc(out->rows, (out->n + 1) * sizeof(*rows));
		if (rows == NULL) {
			cm_err_set(err, "out of memory");
			goto fail_fields;
		}
		out->rows = rows;
		rows[out->n].account = fields[0];
		rows[out->n].file = cm_path_resolve(base_dir, fields[1]);
		rows[out->n].line = line;
		free(fields[1]);
		if (rows[out->n].file == NULL) {
			free(fields[0]);
			cm_err_set(err, "out of memory");
			cm_pub_map_free(out);
			return -1;
		}
		out->n++;
		continue;
	fail_fields:
		free(fields[0]);
		free(fields[1]);
		cm_pub_map_free(out);
		return -1;
	}
	return 0;
}

int cm_pub_map_read(const char *path, struct cm_pub_map *out, struct cm_err *err)
{
	unsigned char *data = NULL;
	size_t len = 0;
	struct cm_err sub = {""};
	char *dir, *slash;
	int rc;

	memset(out, 0, sizeof(*out));
	if (cm_file_read(path, MAX_MAP_BYTES, &data, &len, err) != 0)
		return -1;
	dir = strdup(path);
	if (dir == NULL) {
		free(data);
		cm_err_set(err, "out of memory");
		return -1;
	}
	slash = strrchr(dir, '/');
	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	rc = cm_pub_map_parse((const char *)data, len, dir, out, &sub);
	if (rc != 0)
		cm_err_set(err, "%s: %s", path, sub.msg);
	free(dir);
	free(data);
	return rc;
}

/* ---- --cert-dir ---- */

static bool cert_extension(const char *name)
{
	static const char *const exts[] = {".pem", ".cer", ".crt", ".der"};
	size_t len = strlen(name);

	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++)
		if (len > 4 && strcasecmp(name + len - 4, exts[i]) == 0)
			return true;
	return false;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int cm_pub_dir_list(const char *dir, char ***files, size_t *n, struct cm_err *err)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **v = NULL;
	size_t count = 0;

	*files = NULL;
	*n = 0;
	if (d == NULL) {
		cm_err_set(err, "%s: %s", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		char *path, **nv;

		if (de->d_name[0] == '.' || !cert_extension(de->d_name))
			continue;
		path = cm_path_resolve(dir, de->d_name);
		if (path == NULL)
			goto oom;
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
			free(path);
			continue;
		}
		if (count >= CM_PUB_MAX_DIR_FILES) {
			free(path);
			cm_err_set(err, "%s: more than %u certificate files", dir,
				   CM_PUB_MAX_DIR_FILES);
			goto fail;
		}
		nv = realloc(v, (count + 1) * sizeof(*v));
		if (nv == NULL) {
			free(path);
			goto oom;
		}
		v = nv;
		v[count++] = path;
	}
	closedir(d);
	if (count > 0)
		qsort(v, count, sizeof(*v), str_cmp);
	*files = v;
	*n = count;
	return 0;
oom:
	cm_err_set(err, "out of memory");
fail:
	for (size_t i = 0; i < count; i++)
		free(v[i]);
	free(v);
	closedir(d);
	return -1;
}

/* ---- sources ---- */

void cm_pub_source_clear(struct cm_pub_source *src)
{
	if (src == NULL)
		return;
	free(src->file);
	free(src->account);
	free(src->der);
	free(src->upn_san);
	free(src->email_san);
	free(src->skip);
	free(src->note);
	cm_inv_class_clear(&src->cls);
	memset(src, 0, sizeof(*src));
	src->target = CM_PUB_NONE;
}

/* Sets the skip text (first one wins). */
static int skip(struct cm_pub_source *s, bool error, char *text)
{
	if (text == NULL)
		return -1;
	if (s->skip != NULL) {
		free(text);
		return 0;
	}
	s->skip = text;
	s->error = error;
	return 0;
}

int cm_pub_source_load(const char *file, const char *account, size_t line,
		       struct cm_classifier *classifier, struct cm_pub_source *out)
{
	struct cm_der_list list = {NULL, NULL, 0};
	struct cm_err err = {""};

	memset(out, 0, sizeof(*out));
	out->target = CM_PUB_NONE;
	out->line = line;
	out->file = strdup(file);
	out->account = account != NULL ? strdup(account) : NULL;
	if (out->file == NULL || (account != NULL && out->account == NULL))
		return -1;
	if (cm_der_list_read(file, &list, &err) != 0)
		return skip(out, true, cm_strdup_printf("cannot read: %s", err.msg));
	out->der = list.der[0];
	out->len = list.len[0];
	list.der[0] = NULL;
	cm_der_list_free(&list);
	cm_sha256_hex(out->der, out->len, out->sha256);
	if (cm_classify(classifier, out->der, out->len, &out->cls) != 0)
		return -1;
	if (!out->cls.parsed)
		return skip(out, true,
			    cm_strdup_printf("not a certificate (%s)",
					     out->cls.problem ? out->cls.problem : "malformed"));
	if ((out->cls.upn_san != NULL && (out->upn_san = strdup(out->cls.upn_san)) == NULL) ||
	    (out->cls.email_san != NULL && (out->email_san = strdup(out->cls.email_san)) == NULL))
		return -1;
	if (!out->cls.managed)
		return skip(out, true,
			    cm_strdup_printf("not issued under client_certificates.trusted_issuers "
					     "(%s): refused, --prune could never remove it",
					     out->cls.problem ? out->cls.problem : "untrusted"));
	if (out->cls.expired)
		return skip(out, false,
			    cm_strdup_printf("expired (not after %s): not published",
					     out->cls.not_after));
	if (out->cls.revoked)
		return skip(out, false, strdup("revoked: not published"));
	if (!out->cls.usable) {
		out->note = cm_strdup_printf("certmapd would refuse it now (%s)",
					     out->cls.problem ? out->cls.problem : "unusable");
		if (out->note == NULL)
			return -1;
	}
	return 0;
}

/* ---- matching ---- */

struct name_index {
	char *key; /* lowercased */
	size_t account;
};

struct index {
	struct name_index *v;
	size_t n;
};

static int name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct name_index *)a)->key, ((const struct name_index *)b)->key);
}

static char *lower_dup(const char *s)
{
	char *d = strdup(s);

	for (char *p = d; p != NULL && *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	return d;
}

static void index_free(struct index *ix)
{
	for (size_t i = 0; i < ix->n; i++)
		free(ix->v[i].key);
	free(ix->v);
	ix->v = NULL;
	ix->n = 0;
}

/* Adds (key, account) unless key is NULL or empty. */
static int index_add(struct index *ix, const char *key, size_t account)
{
	struct name_index *v;

	if (key == NULL || key[0] == '\0')
		return 0;
	v = realloc(ix->v, (ix->n + 1) * sizeof(*v));
	if (v == NULL)
		return -1;
	ix->v = v;
	if ((v[ix->n].key = lower_dup(key)) == NULL)
		return -1;
	v[ix->n++].account = account;
	return 0;
}

/* Accounts under key: *first and the count. */
static size_t index_find(const struct index *ix, const char *key, size_t *first)
{
	struct name_index probe;
	size_t lo = 0, hi = ix->n, n = 0;

	if (key == NULL || key[0] == '\0' || (probe.key = lower_dup(key)) == NULL)
		return 0;
	while (lo < hi) { /* lower bound */
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(ix->v[mid].key, probe.key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	while (lo + n < ix->n && strcmp(ix->v[lo + n].key, probe.key) == 0)
		n++;
	free(probe.key);
	return n;
}

/* Distinct accounts found; the first two are kept. */
struct hits {
	size_t v[2];
	size_t n;
};

static void hits_add(struct hits *h, size_t account)
{
	for (size_t j = 0; j < h->n && j < 2; j++)
		if (h->v[j] == account)
			return;
	if (h->n < 2)
		h->v[h->n] = account;
	h->n++; /* past 2 not deduplicated: "several" is all that matters then */
}

/* Adds the members whose identity (UPN, mail) equals key. */
static void lookup_ids(const struct index *ids, size_t n_ids, const char *key, struct hits *h)
{
	for (size_t k = 0; k < n_ids; k++) {
		size_t first = 0, n = index_find(&ids[k], key, &first);

		for (size_t i = 0; i < n; i++)
			hits_add(h, ids[k].v[first + i].account);
	}
}

static bool same_id(const char *a, const char *b)
{
	return a != NULL && b != NULL && a[0] != '\0' && strcasecmp(a, b) == 0;
}

/* Does one of the certificate's SANs name account a? */
static bool san_names(const struct cm_pub_source *s, const struct cm_inv_account *a, bool ad)
{
	return (ad && (same_id(s->upn_san, a->upn) || same_id(s->email_san, a->upn))) ||
	       same_id(s->upn_san, a->mail) || same_id(s->email_san, a->mail);
}

static const char *acct_label(const struct cm_inv_account *a)
{
	return a->name != NULL ? a->name : a->dn;
}

int cm_pub_match(const struct cm_inventory *inv, bool dialect_ad, enum cm_pub_mode mode,
		 struct cm_pub_source *src, size_t n)
{
	struct index names = {NULL, 0}, ids[2] = {{NULL, 0}, {NULL, 0}};
	int rc = -1;

	for (size_t i = 0; i < inv->n; i++) {
		const struct cm_inv_account *a = &inv->accounts[i];

		if (!a->member)
			continue;
		if (index_add(&names, a->name, i) != 0 ||
		    (dialect_ad && index_add(&ids[0], a->upn, i) != 0) ||
		    index_add(&ids[1], a->mail, i) != 0)
			goto done;
	}
	qsort(names.v, names.n, sizeof(*names.v), name_cmp);
	for (int k = 0; k < 2; k++)
		if (ids[k].n > 0)
			qsort(ids[k].v, ids[k].n, sizeof(*ids[k].v), name_cmp);

	for (size_t i = 0; i < n; i++) {
		struct cm_pub_source *s = &src[i];
		struct hits upn_hits = {{0, 0}, 0}, san;
		size_t first = 0, by_name = 0;
		char *base = NULL;

		if (s->skip != NULL)
			continue;
		if (mode == CM_PUB_MODE_CERT) {
			s->how = CM_PUB_HOW_ALL;
			continue;
		}
		if (mode == CM_PUB_MODE_MAP) {
			by_name = index_find(&names, s->account, &first);
			if (by_name == 0 &&
			    skip(s, false,
				 cm_strdup_printf(
					 "account \"%s\" (line %zu) is not a member of the "
					 "group (or does not exist): skipped",
					 s->account, s->line)) != 0)
				goto done;
		} else {
			const char *slash = strrchr(s->file, '/');

			base = strdup(slash != NULL ? slash + 1 : s->file);
			if (base == NULL)
				goto done;
			if (strlen(base) > 4)
				base[strlen(base) - 4] =
					'\0'; /* the extension (checked by the lister) */
			by_name = index_find(&names, base, &first);
		}
		if (s->skip != NULL) {
			free(base);
			continue;
		}
		lookup_ids(ids, 2, s->upn_san, &upn_hits);
		san = upn_hits;
		lookup_ids(ids, 2, s->email_san, &san);
		if (by_name > 1) {
			if (skip(s, true,
				 cm_strdup_printf("\"%s\" names %zu members: skipped",
						  mode == CM_PUB_MODE_MAP ? s->account : base,
						  by_name)) != 0) {
				free(base);
				goto done;
			}
		} else if (by_name == 1) {
			size_t t = names.v[first].account;

			if (san.n > 0 && !san_names(s, &inv->accounts[t], dialect_ad)) {
				/* the file says one member, the certificate another */
				if (skip(s, true,
					 cm_strdup_printf("%s names %s, but the certificate's SAN "
							  "names %s: skipped",
							  mode == CM_PUB_MODE_MAP ? "the --map row"
										  : "the file name",
							  acct_label(&inv->accounts[t]),
							  acct_label(&inv->accounts[san.v[0]]))) !=
				    0) {
					free(base);
					goto done;
				}
			} else {
				s->target = t;
				s->how = mode == CM_PUB_MODE_MAP ? CM_PUB_HOW_MAP : CM_PUB_HOW_NAME;
			}
		} else if (san.n == 1) {
			s->target = san.v[0];
			s->how = upn_hits.n > 0 ? CM_PUB_HOW_UPN : CM_PUB_HOW_EMAIL;
		} else if (san.n > 1) {
			if (skip(s, true,
				 cm_strdup_printf(
					 "the certificate's SANs name several members (%s, "
					 "%s): skipped",
					 acct_label(&inv->accounts[san.v[0]]),
					 acct_label(&inv->accounts[san.v[1]]))) != 0) {
				free(base);
				goto done;
			}
		} else if (skip(s, false,
				strdup("matches no member of the group (by file name, UPN SAN or "
				       "e-mail SAN): skipped")) != 0) {
			free(base);
			goto done;
		}
		free(base);
	}
	rc = 0;
done:
	index_free(&names);
	index_free(&ids[0]);
	index_free(&ids[1]);
	return rc;
}

/* ---- the plan ---- */

void cm_pub_plan_free(struct cm_pub_plan *plan)
{
	if (plan == NULL)
		return;
	for (size_t i = 0; i < plan->n; i++) {
		free(plan->v[i].reason);
		free(plan->v[i].error);
	}
	free(plan->v);
	memset(plan, 0, sizeof(*plan));
}

const char *cm_pub_how_name(enum cm_pub_how how)
{
	switch (how) {
	case CM_PUB_HOW_ALL:
		return "--cert";
	case CM_PUB_HOW_NAME:
		return "file name";
	case CM_PUB_HOW_UPN:
		return "UPN SAN";
	case CM_PUB_HOW_EMAIL:
		return "e-mail SAN";
	case CM_PUB_HOW_MAP:
		return "--map";
	default:
		return "none";
	}
}

const char *cm_pub_why_name(enum cm_pub_why why)
{
	switch (why) {
	case CM_PUB_WHY_NEW:
		return "new";
	case CM_PUB_WHY_REPLACED:
		return "replaced_expired";
	default:
		return "not_a_member";
	}
}

const char *cm_pub_result_name(enum cm_pub_result r)
{
	switch (r) {
	case CM_PUB_DONE:
		return "done";
	case CM_PUB_ALREADY:
		return "already";
	case CM_PUB_FAILED:
		return "failed";
	case CM_PUB_SKIPPED:
		return "skipped";
	default:
		return "planned";
	}
}

static int plan_add(struct cm_pub_plan *plan, enum cm_pub_action action, enum cm_pub_why why,
		    size_t account, const unsigned char *der, size_t len, const char *sha256,
		    const char *subject, size_t source, char *reason)
{
	struct cm_pub_change *v;

	if (reason == NULL)
		return -1;
	v = realloc(plan->v, (plan->n + 1) * sizeof(*v));
	if (v == NULL) {
		free(reason);
		return -1;
	}
	plan->v = v;
	memset(&v[plan->n], 0, sizeof(v[0]));
	v[plan->n].action = action;
	v[plan->n].why = why;
	v[plan->n].account = account;
	v[plan->n].der = der;
	v[plan->n].len = len;
	memcpy(v[plan->n].sha256, sha256, 65);
	v[plan->n].subject = subject;
	v[plan->n].source = source;
	v[plan->n].reason = reason;
	v[plan->n].result = CM_PUB_PENDING;
	plan->n++;
	return 0;
}

static bool has_value(const struct cm_inv_account *a, const char *sha256)
{
	for (size_t i = 0; i < a->n_values; i++)
		if (strcmp(a->values[i].sha256, sha256) == 0)
			return true;
	return false;
}

/* The sources meant for account i: all published ones with HOW_ALL, or
 * those targeting i. Sources are grouped per target (order) by the caller. */
static bool source_for(const struct cm_pub_source *s, size_t account)
{
	return s->skip == NULL && (s->how == CM_PUB_HOW_ALL || s->target == account);
}

static int src_target_cmp(const void *a, const void *b, void *ctx)
{
	const struct cm_pub_source *src = ctx;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	if (src[x].target != src[y].target)
		return src[x].target < src[y].target ? -1 : 1;
	return x < y ? -1 : x > y;
}

static char *add_reason(const struct cm_inventory *inv, const struct cm_pub_source *s)
{
	if (s->how == CM_PUB_HOW_MAP)
		return cm_strdup_printf("member of %s; %s (--map line %zu)", inv->group_dn, s->file,
					s->line);
	return cm_strdup_printf("member of %s; %s (matched by %s)", inv->group_dn, s->file,
				cm_pub_how_name(s->how));
}

int cm_pub_plan_build(const struct cm_inventory *inv, const struct cm_pub_source *src, size_t n_src,
		      const struct cm_pub_options *opt, struct cm_pub_plan *out)
{
	size_t *order = NULL, n_all = 0, n_targeted = 0, pos = 0;
	size_t *mine = NULL;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	/* sources by target account, so each account finds its own in O(1) */
	order = calloc(n_src + 1, sizeof(*order));
	mine = calloc(n_src + 1, sizeof(*mine));
	if (order == NULL || mine == NULL)
		goto done;
	for (size_t i = 0; i < n_src; i++) {
		if (src[i].skip != NULL)
			continue;
		if (src[i].how == CM_PUB_HOW_ALL)
			n_all++;
		else if (src[i].target != CM_PUB_NONE)
			order[n_targeted++] = i;
	}
	qsort_r(order, n_targeted, sizeof(*order), src_target_cmp, (void *)(uintptr_t)src);

	for (size_t a = 0; a < inv->n; a++) {
		const struct cm_inv_account *acct = &inv->accounts[a];
		size_t n_mine = 0, first_new = CM_PUB_NONE;
		bool got_source = false;

		if (!acct->member)
			continue;
		for (size_t i = 0; i < n_src && n_all > 0; i++)
			if (src[i].skip == NULL && src[i].how == CM_PUB_HOW_ALL)
				mine[n_mine++] = i;
		while (pos < n_targeted && src[order[pos]].target < a)
			pos++;
		for (size_t p = pos; p < n_targeted && src[order[p]].target == a; p++)
			mine[n_mine++] = order[p];
		for (size_t k = 0; k < n_mine; k++) {
			const struct cm_pub_source *s = &src[mine[k]];
			bool dup = false;

			if (!source_for(s, a))
				continue;
			for (size_t j = 0; j < k; j++)
				dup = dup || strcmp(src[mine[j]].sha256, s->sha256) == 0;
			if (dup)
				continue; /* the same certificate from two files */
			got_source = true;
			if (first_new == CM_PUB_NONE)
				first_new = mine[k];
			if (has_value(acct, s->sha256)) {
				out->present++;
				continue;
			}
			if (plan_add(out, CM_PUB_ADD, CM_PUB_WHY_NEW, a, s->der, s->len, s->sha256,
				     s->cls.subject, mine[k], add_reason(inv, s)) != 0)
				goto done;
		}
		if (got_source)
			out->targeted++;
		if (!got_source || !opt->replace_expired)
			continue;
		for (size_t v = 0; v < acct->n_values; v++) {
			const struct cm_inv_value *val = &acct->values[v];
			bool is_source = false;

			for (size_t k = 0; k < n_mine; k++)
				is_source =
					is_source || strcmp(src[mine[k]].sha256, val->sha256) == 0;
			if (!val->cls.managed || !val->cls.expired || is_source)
				continue;
			if (plan_add(out, CM_PUB_DELETE, CM_PUB_WHY_REPLACED, a, val->der, val->len,
				     val->sha256, val->cls.subject, CM_PUB_NONE,
				     cm_strdup_printf("expired (not after %s), replaced by %.16s… "
						      "(--replace-expired)",
						      val->cls.not_after, src[first_new].sha256)) !=
			    0)
				goto done;
		}
	}
	if (opt->prune) {
		for (size_t a = 0; a < inv->n; a++) {
			const struct cm_inv_account *acct = &inv->accounts[a];

			if (acct->member)
				continue;
			for (size_t v = 0; v < acct->n_values; v++) {
				const struct cm_inv_value *val = &acct->values[v];

				if (!val->cls.managed)
					continue; /* never ours: never touched */
				if (plan_add(out, CM_PUB_DELETE, CM_PUB_WHY_PRUNED, a, val->der,
					     val->len, val->sha256, val->cls.subject, CM_PUB_NONE,
					     cm_strdup_printf(
						     "not a member of %s (nested membership "
						     "counted); issued under a trusted "
						     "issuer (--prune)",
						     inv->group_dn)) != 0)
					goto done;
			}
		}
	}
	rc = 0;
done:
	free(order);
	free(mine);
	if (rc != 0)
		cm_pub_plan_free(out);
	return rc;
}
