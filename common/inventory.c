/*
 * inventory — accounts and their stored certificates for publish and audit
 * (include/certmap/inventory.h).
 *
 * Reading: the group's members come from groups.c (nested, paged); with
 * CM_INVENTORY_ALL_HOLDERS one more paged scan lists every account that
 * holds a certificate value (userCertificate is not indexed in AD: a scan is
 * what the server would do anyway), and members are then read without their
 * values so that no certificate crosses the wire twice. Values are moved,
 * not copied, out of the search results.
 * Classifying: x509.c's verification with the configured trust, plus
 * optional extra intermediates; "managed" ignores time (an expired managed
 * value is still ours to replace or prune). Revocation uses the CRL files
 * only (no CDP or OCSP fetching in a batch over thousands of values).
 * Invariants: an inventory lists each DN once; members come first.
 */
#include "certmap/inventory.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "certmap/groups.h"
#include "certmap/revocation.h"

struct cache_slot {
	char sha256[65];
	bool used;
	struct cm_inv_class cls;
};

struct cm_classifier {
	const struct cm_config *cfg;
	struct cm_trust *trust;
	struct cm_revstore *rev;
	struct cm_der_list intermediates;
	time_t now;
	struct cache_slot *slots; /* open addressing on the SHA-256 */
	size_t cap, n;
};

void cm_sha256_hex(const unsigned char *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32) {
		memset(out, '0', 64);
		out[64] = '\0';
		return;
	}
	cm_hex_lower(md, md_len, out);
}

const char *cm_inventory_cert_attr(const struct cm_config *cfg)
{
	return cfg->directory.dialect == CM_DIALECT_AD ? "userCertificate"
						       : "userCertificate;binary";
}

/* ---- classification ---- */

int cm_classifier_new(const struct cm_config *cfg, const char *intermediates_file, time_t now,
		      struct cm_classifier **out, struct cm_err *err)
{
	const struct cm_strlist *issuers = &cfg->client_certificates.trusted_issuers;
	struct cm_classifier *c = calloc(1, sizeof(*c));
	struct cm_err sub = {""};

	*out = NULL;
	if (c == NULL) {
		cm_err_set(err, "out of memory");
		return -1;
	}
	c->cfg = cfg;
	c->now = now;
	if (cm_trust_load(issuers->v, issuers->n, &c->trust, &sub) != 0) {
		cm_err_set(err, "%s: $.client_certificates.trusted_issuers: %s", cfg->file,
			   sub.msg);
		goto fail;
	}
	if (cm_revstore_new(cfg, &c->rev, &sub) != 0) {
		cm_err_set(err, "%s: $.client_certificates.revocation.crl_files: %s", cfg->file,
			   sub.msg);
		goto fail;
	}
	if (intermediates_file != NULL) {
		if (cm_der_list_read(intermediates_file, &c->intermediates, &sub) != 0) {
			cm_err_set(err, "%s", sub.msg);
			goto fail;
		}
		if (c->intermediates.n >= CM_X509_MAX_CHAIN) {
			cm_err_set(err, "%s: more than %d certificates", intermediates_file,
				   CM_X509_MAX_CHAIN - 1);
			goto fail;
		}
	}
	*out = c;
	return 0;
fail:
	cm_classifier_free(c);
	return -1;
}

void cm_inv_class_clear(struct cm_inv_class *cls)
{
	if (cls == NULL)
		return;
	free(cls->problem);
	free(cls->subject);
	free(cls->issuer);
	free(cls->serial);
	free(cls->upn_san);
	free(cls->email_san);
	memset(cls, 0, sizeof(*cls));
}

void cm_classifier_free(struct cm_classifier *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->cap; i++)
		if (c->slots[i].used)
			cm_inv_class_clear(&c->slots[i].cls);
	free(c->slots);
	cm_der_list_free(&c->intermediates);
	cm_revstore_free(c->rev);
	cm_trust_free(c->trust);
	free(c);
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static int class_copy(const struct cm_inv_class *in, struct cm_inv_class *out)
{
	*out = *in;
	out->problem = dup_or_null(in->problem);
	out->subject = dup_or_null(in->subject);
	out->issuer = dup_or_null(in->issuer);
	out->serial = dup_or_null(in->serial);
	out->upn_san = dup_or_null(in->upn_san);
	out->email_san = dup_or_null(in->email_san);
	if ((in->problem && !out->problem) || (in->subject && !out->subject) ||
	    (in->issuer && !out->issuer) || (in->serial && !out->serial) ||
	    (in->upn_san && !out->upn_san) || (in->email_san && !out->email_san)) {
		cm_inv_class_clear(out);
		return -1;
	}
	return 0;
}

/* The verdict on one DER value, uncached. */
static int classify_one(struct cm_classifier *c, const unsigned char *der, size_t len,
			struct cm_inv_class *out)
{
	const unsigned char *ders[CM_X509_MAX_CHAIN];
	size_t lens[CM_X509_MAX_CHAIN], n = 1;
	enum cm_revocation_mode mode = c->cfg->client_certificates.revocation.mode;
	bool require_eku = c->cfg->client_certificates.require_client_auth_eku;
	struct cm_err err = {""};
	struct cm_cert *cert = NULL;
	const struct cm_cert_summary *sum;
	enum cm_reason r;
	char *detail = NULL;
	time_t now = c->now;
	X509 *leaf;

	memset(out, 0, sizeof(*out));
	ders[0] = der;
	lens[0] = len;
	for (size_t i = 0; i < c->intermediates.n && n < CM_X509_MAX_CHAIN; i++, n++) {
		ders[n] = c->intermediates.der[i];
		lens[n] = c->intermediates.len[i];
	}
	if (cm_cert_parse(ders, lens, n, &cert, &err) != 0) {
		out->problem = cm_strdup_printf("malformed: %s", err.msg);
		return out->problem != NULL ? 0 : -1;
	}
	out->parsed = true;
	sum = cm_cert_summary(cert);
	out->subject = dup_or_null(sum->subject);
	out->issuer = dup_or_null(sum->issuer);
	out->serial = dup_or_null(sum->serial);
	out->upn_san = cm_cert_upn(cert);
	out->email_san = cm_cert_email(cert);
	memcpy(out->not_after, sum->not_after, sizeof(out->not_after));
	leaf = cm_cert_leaf(cert);
	out->expired = X509_cmp_time(X509_get0_notAfter(leaf), &now) < 0;
	out->not_yet_valid = X509_cmp_time(X509_get0_notBefore(leaf), &now) > 0;

	r = cm_cert_verify(cert, c->trust, now, require_eku, NULL, &detail);
	if (r == CM_REASON_UNTRUSTED && require_eku) {
		/* trusted chain, wrong EKU/KU? Still one of ours. */
		char *plain = NULL;
		enum cm_reason r2 = cm_cert_verify(cert, c->trust, now, false, NULL, &plain);

		out->managed = r2 != CM_REASON_UNTRUSTED;
		free(plain);
	} else {
		out->managed = r != CM_REASON_UNTRUSTED;
	}
	if (r == CM_REASON_ALLOWED &&
	    (c->cfg->client_certificates.revocation.crl_files.n > 0 || mode != CM_REVOCATION_OFF)) {
		/* "revoked" is reported whenever a CRL says so; whether that makes
		 * the value unusable follows the configured mode */
		char *rdetail = NULL;
		struct cm_rev_result rr;
		enum cm_reason soft = cm_revstore_check(
			c->rev, NULL, c->trust, cert, CM_REVOCATION_SOFT, now, NULL, &rdetail, &rr);

		out->revoked = soft == CM_REASON_REVOKED;
		if (out->revoked && mode != CM_REVOCATION_OFF) {
			r = CM_REASON_REVOKED;
			free(detail);
			detail = rdetail;
			rdetail = NULL;
		}
		free(rdetail);
	}
	if (r == CM_REASON_ALLOWED && mode == CM_REVOCATION_HARD) {
		char *rdetail = NULL;

		struct cm_rev_result rr;

		r = cm_revstore_check(c->rev, NULL, c->trust, cert, mode, now, NULL, &rdetail, &rr);
		if (r != CM_REASON_ALLOWED) {
			free(detail);
			detail = rdetail;
		} else {
			free(rdetail);
		}
	}
	out->usable = r == CM_REASON_ALLOWED;
	if (!out->usable) {
		out->problem = cm_strdup_printf("%s: %s", cm_reason_name(r),
						detail != NULL ? detail : "rejected");
		if (out->problem == NULL) {
			free(detail);
			cm_cert_free(cert);
			cm_inv_class_clear(out);
			return -1;
		}
	}
	free(detail);
	if ((sum->subject && !out->subject) || (sum->issuer && !out->issuer)) {
		cm_cert_free(cert);
		cm_inv_class_clear(out);
		return -1;
	}
	cm_cert_free(cert);
	return 0;
}

/* The first 64 bits of a hex SHA-256: already a good hash. */
static uint64_t sha_prefix(const char *sha)
{
	uint64_t h = 0;

	for (int i = 0; i < 16 && sha[i] != '\0'; i++)
		h = h << 4 | (uint64_t)(sha[i] <= '9' ? sha[i] - '0' : sha[i] - 'a' + 10);
	return h;
}

static size_t cache_slot_of(const struct cache_slot *slots, size_t cap, const char *sha)
{
	size_t i = (size_t)(sha_prefix(sha) & (cap - 1));

	while (slots[i].used && strcmp(slots[i].sha256, sha) != 0)
		i = (i + 1) & (cap - 1);
	return i;
}

static int cache_grow(struct cm_classifier *c)
{
	size_t cap = c->cap == 0 ? 256 : c->cap * 2;
	struct cache_slot *slots = calloc(cap, sizeof(*slots));

	if (slots == NULL)
		return -1;
	for (size_t i = 0; i < c->cap; i++)
		if (c->slots[i].used)
			slots[cache_slot_of(slots, cap, c->slots[i].sha256)] = c->slots[i];
	free(c->slots);
	c->slots = slots;
	c->cap = cap;
	return 0;
}

int cm_classify(struct cm_classifier *c, const unsigned char *der, size_t len,
		struct cm_inv_class *out)
{
	char sha[65];
	size_t i;

	cm_sha256_hex(der, len, sha);
	if ((c->n + 1) * 2 > c->cap && cache_grow(c) != 0)
		return -1;
	i = cache_slot_of(c->slots, c->cap, sha);
	if (!c->slots[i].used) {
		if (classify_one(c, der, len, &c->slots[i].cls) != 0)
			return -1;
		memcpy(c->slots[i].sha256, sha, sizeof(sha));
		c->slots[i].used = true;
		c->n++;
	}
	return class_copy(&c->slots[i].cls, out);
}

/* ---- the account list ---- */

static void account_free(struct cm_inv_account *a)
{
	free(a->dn);
	free(a->name);
	free(a->upn);
	free(a->mail);
	for (size_t i = 0; i < a->n_values; i++) {
		free(a->values[i].der);
		cm_inv_class_clear(&a->values[i].cls);
	}
	free(a->values);
}

void cm_inventory_free(struct cm_inventory *inv)
{
	if (inv == NULL)
		return;
	for (size_t i = 0; i < inv->n; i++)
		account_free(&inv->accounts[i]);
	free(inv->accounts);
	free(inv->group_dn);
	memset(inv, 0, sizeof(*inv));
}

static char *entry_strdup(const struct cm_dir_entry *e, const char *name)
{
	const char *s = cm_dir_entry_str(e, name);

	return s != NULL ? strdup(s) : NULL;
}

/* Moves the certificate values of e (its data pointers are taken) onto a. */
static int take_values(const struct cm_config *cfg, const struct cm_dir_entry *e,
		       struct cm_inv_account *a)
{
	const struct cm_dir_attr *attr = cm_dir_entry_attr(e, cm_inventory_cert_attr(cfg));
	struct cm_inv_value *v;

	if (attr == NULL || attr->n_values == 0)
		return 0;
	v = realloc(a->values, (a->n_values + attr->n_values) * sizeof(*v));
	if (v == NULL)
		return -1;
	a->values = v;
	for (size_t i = 0; i < attr->n_values; i++) {
		struct cm_inv_value *nv = &a->values[a->n_values++];
		struct cm_dir_value *dv = &attr->values[i];

		memset(nv, 0, sizeof(*nv));
		nv->der = dv->data;
		nv->len = dv->len;
		dv->data = NULL; /* taken; cm_dir_result_free frees NULL */
		dv->len = 0;
		cm_sha256_hex(nv->der, nv->len, nv->sha256);
	}
	return 0;
}

int cm_inventory_add_entry(const struct cm_config *cfg, const struct cm_dir_entry *e, bool member,
			   struct cm_inventory *inv)
{
	bool ad = cfg->directory.dialect == CM_DIALECT_AD;
	struct cm_inv_account *v = realloc(inv->accounts, (inv->n + 1) * sizeof(*v)), *a;

	if (v == NULL)
		return -1;
	inv->accounts = v;
	a = &inv->accounts[inv->n];
	memset(a, 0, sizeof(*a));
	a->member = member;
	a->dn = strdup(e->dn);
	a->name = entry_strdup(e, ad ? "sAMAccountName" : "uid");
	a->upn = ad ? entry_strdup(e, "userPrincipalName") : NULL;
	a->mail = entry_strdup(e, "mail");
	inv->n++;
	if (member)
		inv->n_members++;
	if (a->dn == NULL || take_values(cfg, e, a) != 0)
		return -1;
	return 0;
}

int cm_inventory_classify(struct cm_inventory *inv, struct cm_classifier *c)
{
	for (size_t i = 0; i < inv->n; i++)
		for (size_t j = 0; j < inv->accounts[i].n_values; j++) {
			struct cm_inv_value *v = &inv->accounts[i].values[j];

			cm_inv_class_clear(&v->cls);
			if (cm_classify(c, v->der, v->len, &v->cls) != 0)
				return -1;
		}
	return 0;
}

struct key_index {
	char *key;
	size_t index;
};

static int key_cmp(const void *a, const void *b)
{
	return strcmp(((const struct key_index *)a)->key, ((const struct key_index *)b)->key);
}

enum cm_dir_status cm_inventory_load(const struct cm_config *cfg, struct cm_dir *dir,
				     const char *group_dn, enum cm_inventory_scope scope,
				     struct cm_inventory *out, struct cm_trace *trace,
				     struct cm_err *err)
{
	bool ad = cfg->directory.dialect == CM_DIALECT_AD;
	bool all = scope == CM_INVENTORY_ALL_HOLDERS;
	const char *cert_attr = cm_inventory_cert_attr(cfg);
	const char *attrs[5];
	struct cm_dir_result res = {NULL, 0, false};
	struct key_index *index = NULL;
	size_t n_index = 0;
	enum cm_dir_status status = CM_DIR_OK;
	enum cm_groups_status gs;
	size_t k = 0;

	memset(out, 0, sizeof(*out));
	attrs[k++] = ad ? "sAMAccountName" : "uid";
	if (ad)
		attrs[k++] = "userPrincipalName";
	attrs[k++] = "mail";
	if (!all)
		attrs[k++] = cert_attr; /* else the holder scan brings the values */
	attrs[k] = NULL;
	if ((out->group_dn = strdup(group_dn)) == NULL)
		goto oom;
	gs = cm_groups_members(cfg, dir, group_dn, attrs, &res, trace, err);
	if (gs != CM_GROUPS_OK) {
		cm_dir_result_free(&res);
		return CM_DIR_UNAVAILABLE; /* err says why: gone, incomplete, outage */
	}
	for (size_t i = 0; i < res.n_entries; i++)
		if (cm_inventory_add_entry(cfg, &res.entries[i], true, out) != 0)
			goto oom;
	cm_dir_result_free(&res);
	if (!all)
		return CM_DIR_OK;

	/* every account holding a value, directory-wide */
	attrs[k++] = cert_attr;
	attrs[k] = NULL;
	index = calloc(out->n + 1, sizeof(*index));
	if (index == NULL)
		goto oom;
	for (n_index = 0; n_index < out->n; n_index++) {
		index[n_index].key = cm_dir_dn_key(out->accounts[n_index].dn);
		index[n_index].index = n_index;
		if (index[n_index].key == NULL)
			goto oom;
	}
	qsort(index, n_index, sizeof(*index), key_cmp);
	{
		size_t n_members = n_index;
		enum cm_dir_status st = cm_dir_search_paged(
			dir, cfg->directory.base_dn, CM_DIR_SCOPE_SUBTREE,
			ad ? "(&(objectClass=user)(userCertificate=*))" : "(userCertificate=*)",
			attrs, 0, 0, &res, trace, err);

		if (st != CM_DIR_OK || res.truncated) {
			if (st == CM_DIR_NO_SUCH_OBJECT)
				cm_err_set(err, "directory base DN %s does not exist",
					   cfg->directory.base_dn);
			else if (st == CM_DIR_OK)
				cm_err_set(err,
					   "the scan for certificate holders under %s was cut "
					   "short by a size limit (raise the bind account's limit)",
					   cfg->directory.base_dn);
			status = CM_DIR_UNAVAILABLE;
			goto done;
		}
		for (size_t i = 0; i < res.n_entries; i++) {
			struct key_index probe = {cm_dir_dn_key(res.entries[i].dn), 0}, *hit;

			if (probe.key == NULL)
				goto oom;
			hit = bsearch(&probe, index, n_members, sizeof(*index), key_cmp);
			free(probe.key);
			if (hit != NULL) {
				if (take_values(cfg, &res.entries[i], &out->accounts[hit->index]) !=
				    0)
					goto oom;
			} else if (cm_inventory_add_entry(cfg, &res.entries[i], false, out) != 0) {
				goto oom;
			}
		}
		cm_trace_add(trace,
			     "inventory: %zu members, %zu certificate holders (%zu outside "
			     "the group)",
			     n_members, res.n_entries, out->n - n_members);
	}
	goto done;
oom:
	cm_err_set(err, "out of memory");
	status = CM_DIR_UNAVAILABLE;
done:
	for (size_t i = 0; i < n_index; i++)
		free(index[i].key);
	free(index);
	cm_dir_result_free(&res);
	return status;
}
