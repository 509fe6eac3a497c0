/*
 * audit — findings over a classified inventory (include/certmap/audit.h).
 *
 * One pass sorts every (SHA-256, account) pair of the inventory: runs with
 * more than one account are the shared certificates (the mapping hole: the
 * cert maps ambiguously, or to the wrong person under basic_user). Members'
 * values are then judged one by one; a member's value is "usable" when
 * certmapd would accept it now and it maps to that member alone (or
 * on_ambiguous is basic_user). Accounts outside the group are only looked at
 * for managed values (the ones --prune would remove).
 * Invariants: the same problem is reported once; findings are sorted so two
 * runs over the same directory print the same lines.
 */
#include "certmap/audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "certmap/util.h"

struct pair {
	const char *sha256;
	size_t account;
};

struct holders {
	const char *sha256;
	size_t n; /* distinct accounts */
};

static int pair_cmp(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	int c = strcmp(x->sha256, y->sha256);

	if (c != 0)
		return c;
	return x->account < y->account ? -1 : x->account > y->account;
}

static int holders_cmp(const void *a, const void *b)
{
	return strcmp(((const struct holders *)a)->sha256, ((const struct holders *)b)->sha256);
}

static int str_ptr_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

const char *cm_audit_kind_name(enum cm_audit_kind kind)
{
	switch (kind) {
	case CM_AUDIT_SHARED_CERTIFICATE:
		return "shared_certificate";
	case CM_AUDIT_DUPLICATE_VALUE:
		return "duplicate_value";
	case CM_AUDIT_EXPIRED:
		return "expired";
	case CM_AUDIT_NOT_YET_VALID:
		return "not_yet_valid";
	case CM_AUDIT_UNTRUSTED_ISSUER:
		return "untrusted_issuer";
	case CM_AUDIT_REVOKED:
		return "revoked";
	case CM_AUDIT_MEMBER_WITHOUT_USABLE_CERT:
		return "member_without_usable_cert";
	default:
		return "holder_outside_group";
	}
}

const char *cm_audit_level_name(enum cm_audit_level level)
{
	switch (level) {
	case CM_AUDIT_CRITICAL:
		return "critical";
	case CM_AUDIT_WARNING:
		return "warning";
	default:
		return "info";
	}
}

int cm_audit_level_parse(const char *text, enum cm_audit_level *out)
{
	if (text == NULL)
		return -1;
	if (strcmp(text, "critical") == 0)
		*out = CM_AUDIT_CRITICAL;
	else if (strcmp(text, "warning") == 0)
		*out = CM_AUDIT_WARNING;
	else if (strcmp(text, "info") == 0)
		*out = CM_AUDIT_INFO;
	else
		return -1;
	return 0;
}

static enum cm_audit_level level_of(enum cm_audit_kind kind)
{
	return kind == CM_AUDIT_SHARED_CERTIFICATE ? CM_AUDIT_CRITICAL : CM_AUDIT_WARNING;
}

void cm_audit_report_free(struct cm_audit_report *report)
{
	if (report == NULL)
		return;
	for (size_t i = 0; i < report->n; i++) {
		struct cm_audit_finding *f = &report->v[i];

		for (size_t j = 0; j < f->n_dns; j++)
			free(f->dns[j]);
		free(f->dns);
		free(f->subject);
		free(f->detail);
	}
	free(report->v);
	memset(report, 0, sizeof(*report));
}

/* Appends a finding about the accounts dns[0..n) (copied); takes detail. */
static int add_finding(struct cm_audit_report *r, enum cm_audit_kind kind, const char *sha256,
		       const char *const *dns, size_t n, const char *subject, char *detail)
{
	struct cm_audit_finding *v, *f;

	if (detail == NULL)
		return -1;
	v = realloc(r->v, (r->n + 1) * sizeof(*v));
	if (v == NULL) {
		free(detail);
		return -1;
	}
	r->v = v;
	f = &v[r->n];
	memset(f, 0, sizeof(*f));
	r->n++;
	f->kind = kind;
	f->level = level_of(kind);
	f->detail = detail;
	if (sha256 != NULL)
		snprintf(f->sha256, sizeof(f->sha256), "%s", sha256);
	if (subject != NULL && (f->subject = strdup(subject)) == NULL)
		return -1;
	f->dns = calloc(n, sizeof(*f->dns));
	if (f->dns == NULL && n > 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if ((f->dns[i] = strdup(dns[i])) == NULL)
			return -1;
		f->n_dns++;
	}
	qsort(f->dns, f->n_dns, sizeof(*f->dns), str_ptr_cmp);
	r->counts[f->level]++;
	return 0;
}

static int finding_cmp(const void *a, const void *b)
{
	const struct cm_audit_finding *x = a, *y = b;
	int c;

	if (x->level != y->level)
		return x->level > y->level ? -1 : 1;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	c = strcmp(x->n_dns > 0 ? x->dns[0] : "", y->n_dns > 0 ? y->dns[0] : "");
	return c != 0 ? c : strcmp(x->sha256, y->sha256);
}

static size_t holders_of(const struct holders *h, size_t n, const char *sha256)
{
	struct holders probe = {sha256, 0}, *hit = bsearch(&probe, h, n, sizeof(*h), holders_cmp);

	return hit != NULL ? hit->n : 0;
}

/* Value-level findings of one member; *usable set when one value serves it. */
static int judge_value(struct cm_audit_report *r, const struct cm_inv_account *a, size_t idx,
		       const struct holders *h, size_t n_h, enum cm_on_ambiguous on_ambiguous,
		       bool *usable)
{
	const struct cm_inv_value *v = &a->values[idx];
	const struct cm_inv_class *c = &v->cls;
	const char *dn = a->dn, *subj = c->subject;
	size_t holders = holders_of(h, n_h, v->sha256);

	for (size_t j = 0; j < idx; j++) {
		const struct cm_inv_value *w = &a->values[j];
		char *dup = NULL;

		if (strcmp(w->sha256, v->sha256) == 0)
			dup = strdup("the same certificate is stored twice on the account");
		else if (c->parsed && w->cls.parsed && w->cls.issuer != NULL && c->issuer != NULL &&
			 w->cls.serial != NULL && c->serial != NULL &&
			 strcmp(w->cls.issuer, c->issuer) == 0 &&
			 strcmp(w->cls.serial, c->serial) == 0)
			dup = cm_strdup_printf(
				"same issuer and serial %s as value %s, other bytes (a "
				"re-encoding or a misissued twin)",
				c->serial, w->sha256);
		else
			continue;
		if (add_finding(r, CM_AUDIT_DUPLICATE_VALUE, v->sha256, &dn, 1, subj, dup) != 0)
			return -1;
		break; /* one duplicate finding per value */
	}
	if ((!c->parsed || !c->managed) &&
	    add_finding(r, CM_AUDIT_UNTRUSTED_ISSUER, v->sha256, &dn, 1, subj,
			c->issuer != NULL
				? cm_strdup_printf("issued by %s: %s", c->issuer,
						   c->problem != NULL
							   ? c->problem
							   : "no chain to a trusted issuer")
				: strdup(c->problem != NULL ? c->problem : "malformed")) != 0)
		return -1;
	if (c->expired && add_finding(r, CM_AUDIT_EXPIRED, v->sha256, &dn, 1, subj,
				      cm_strdup_printf("not after %s", c->not_after)) != 0)
		return -1;
	if (c->not_yet_valid &&
	    add_finding(r, CM_AUDIT_NOT_YET_VALID, v->sha256, &dn, 1, subj,
			strdup(c->problem != NULL ? c->problem : "not yet valid")) != 0)
		return -1;
	if (c->revoked && add_finding(r, CM_AUDIT_REVOKED, v->sha256, &dn, 1, subj,
				      strdup("listed in a configured CRL")) != 0)
		return -1;
	if (c->usable && (holders <= 1 || on_ambiguous == CM_AMBIGUOUS_BASIC_USER))
		*usable = true;
	return 0;
}

/* "sha…: why; sha…: why" for a member with no usable value. */
static char *unusable_detail(const struct cm_inv_account *a, const struct holders *h, size_t n_h)
{
	size_t len = 0, cap = 0;
	char *out = NULL;

	if (a->n_values == 0)
		return strdup("holds no certificate");
	for (size_t i = 0; i < a->n_values; i++) {
		const struct cm_inv_value *v = &a->values[i];
		size_t holders = holders_of(h, n_h, v->sha256);
		char *part;
		size_t pl;

		if (v->cls.problem != NULL)
			part = cm_strdup_printf("%s%.16s…: %s", i ? "; " : "", v->sha256,
						v->cls.problem);
		else
			part = cm_strdup_printf("%s%.16s…: on %zu accounts (maps ambiguously)",
						i ? "; " : "", v->sha256, holders);
		if (part == NULL)
			goto oom;
		pl = strlen(part);
		if (len + pl + 1 > cap) {
			char *n = realloc(out, (len + pl + 1) * 2);

			if (n == NULL) {
				free(part);
				goto oom;
			}
			out = n;
			cap = (len + pl + 1) * 2;
		}
		memcpy(out + len, part, pl + 1);
		len += pl;
		free(part);
	}
	return out;
oom:
	free(out);
	return NULL;
}

int cm_audit_run(const struct cm_inventory *inv, enum cm_on_ambiguous on_ambiguous,
		 struct cm_audit_report *out)
{
	struct pair *pairs = NULL;
	struct holders *h = NULL;
	const char **dns = NULL;
	size_t n_pairs = 0, n_h = 0;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	out->accounts = inv->n;
	for (size_t i = 0; i < inv->n; i++) {
		out->values += inv->accounts[i].n_values;
		out->members += inv->accounts[i].member;
	}
	pairs = calloc(out->values + 1, sizeof(*pairs));
	h = calloc(out->values + 1, sizeof(*h));
	dns = calloc(inv->n + 1, sizeof(*dns));
	if (pairs == NULL || h == NULL || dns == NULL)
		goto done;
	for (size_t i = 0; i < inv->n; i++)
		for (size_t j = 0; j < inv->accounts[i].n_values; j++)
			pairs[n_pairs++] = (struct pair){inv->accounts[i].values[j].sha256, i};
	qsort(pairs, n_pairs, sizeof(*pairs), pair_cmp);

	/* runs of one SHA-256: how many accounts hold it; shared ones are critical */
	for (size_t i = 0; i < n_pairs;) {
		size_t j = i, n_acc = 0;
		const struct cm_inv_value *val = NULL;

		while (j < n_pairs && strcmp(pairs[j].sha256, pairs[i].sha256) == 0) {
			if (j == i || pairs[j].account != pairs[j - 1].account)
				dns[n_acc++] = inv->accounts[pairs[j].account].dn;
			j++;
		}
		h[n_h++] = (struct holders){pairs[i].sha256, n_acc};
		if (n_acc > 1) {
			const struct cm_inv_account *a = &inv->accounts[pairs[i].account];

			for (size_t k = 0; k < a->n_values && val == NULL; k++)
				if (strcmp(a->values[k].sha256, pairs[i].sha256) == 0)
					val = &a->values[k];
			if (add_finding(
				    out, CM_AUDIT_SHARED_CERTIFICATE, pairs[i].sha256, dns, n_acc,
				    val != NULL ? val->cls.subject : NULL,
				    cm_strdup_printf("on %zu accounts: whoever holds its key can "
						     "sign in as any of them%s",
						     n_acc,
						     on_ambiguous == CM_AMBIGUOUS_BASIC_USER
							     ? " (on_ambiguous basic_user: "
							       "picked by the Basic user)"
							     : " (on_ambiguous deny: none "
							       "of them can use it)")) != 0)
				goto done;
		}
		i = j;
	}

	for (size_t i = 0; i < inv->n; i++) {
		const struct cm_inv_account *a = &inv->accounts[i];
		const char *dn = a->dn;
		bool usable = false;

		if (!a->member) {
			for (size_t j = 0; j < a->n_values; j++) {
				const struct cm_inv_value *v = &a->values[j];

				if (v->cls.managed &&
				    add_finding(out, CM_AUDIT_HOLDER_OUTSIDE_GROUP, v->sha256, &dn,
						1, v->cls.subject,
						cm_strdup_printf("not a member of %s (nested "
								 "membership counted); --prune "
								 "removes it",
								 inv->group_dn)) != 0)
					goto done;
			}
			continue;
		}
		for (size_t j = 0; j < a->n_values; j++)
			if (judge_value(out, a, j, h, n_h, on_ambiguous, &usable) != 0)
				goto done;
		if (!usable && add_finding(out, CM_AUDIT_MEMBER_WITHOUT_USABLE_CERT, NULL, &dn, 1,
					   NULL, unusable_detail(a, h, n_h)) != 0)
			goto done;
	}
	qsort(out->v, out->n, sizeof(*out->v), finding_cmp);
	rc = 0;
done:
	free(pairs);
	free(h);
	free(dns);
	if (rc != 0)
		cm_audit_report_free(out);
	return rc;
}
