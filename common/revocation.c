/*
 * revocation — CRL-file checks of a verified path (include/certmap/revocation.h).
 *
 * For each non-anchor certificate of the path, every loaded CRL whose issuer
 * name equals the certificate's issuer and whose signature verifies with the
 * issuer's key (the next certificate in the path) is consulted. A listing in
 * any of them is "revoked" — also in a stale CRL or a delta CRL. A complete
 * (non-delta) CRL with thisUpdate <= now < nextUpdate makes the answer
 * "good"; otherwise the certificate's status is unknown.
 * Serial lookups use OpenSSL's sorted revoked list (binary search).
 * Invariants: the set is immutable after load; safe to share across threads
 * (OpenSSL sorts a CRL's entries once, under the CRL's own lock).
 */
#include "certmap/revocation.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define MAX_CRL_FILE_BYTES (256u * 1024u * 1024u)

struct cm_crlset {
	STACK_OF(X509_CRL) *crls;
	char **origin; /* file of each CRL, for traces */
};

static int push_crl(struct cm_crlset *set, X509_CRL *crl, const char *file)
{
	int n = sk_X509_CRL_num(set->crls);
	char **o = realloc(set->origin, (size_t)(n + 1) * sizeof(*o));

	if (o == NULL)
		return -1;
	set->origin = o;
	set->origin[n] = strdup(file);
	if (set->origin[n] == NULL || !sk_X509_CRL_push(set->crls, crl)) {
		free(set->origin[n]);
		return -1;
	}
	return 0;
}

int cm_crlset_load(char *const *files, size_t n, struct cm_crlset **out, struct cm_err *err)
{
	struct cm_crlset *set = calloc(1, sizeof(*set));
	unsigned char *data = NULL;
	size_t len = 0;

	*out = NULL;
	if (set == NULL || (set->crls = sk_X509_CRL_new_null()) == NULL) {
		cm_err_set(err, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		X509_CRL *crl;
		BIO *bio;
		size_t found = 0;

		if (cm_file_read(files[i], MAX_CRL_FILE_BYTES, &data, &len, err) != 0)
			goto fail;
		bio = BIO_new_mem_buf(data, (int)len);
		if (bio == NULL) {
			cm_err_set(err, "out of memory");
			goto fail;
		}
		while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
			if (push_crl(set, crl, files[i]) != 0) {
				X509_CRL_free(crl);
				BIO_free(bio);
				cm_err_set(err, "out of memory");
				goto fail;
			}
			found++;
		}
		BIO_free(bio);
		ERR_clear_error();
		if (found == 0) {
			const unsigned char *p = data;

			crl = d2i_X509_CRL(NULL, &p, (long)len);
			if (crl == NULL || p != data + len || push_crl(set, crl, files[i]) != 0) {
				X509_CRL_free(crl);
				ERR_clear_error();
				cm_err_set(err, "%s: no CRL in PEM or DER form", files[i]);
				goto fail;
			}
		}
		free(data);
		data = NULL;
	}
	*out = set;
	return 0;
fail:
	free(data);
	cm_crlset_free(set);
	return -1;
}

void cm_crlset_free(struct cm_crlset *set)
{
	if (set == NULL)
		return;
	for (int i = 0; i < sk_X509_CRL_num(set->crls); i++)
		free(set->origin[i]);
	free(set->origin);
	sk_X509_CRL_pop_free(set->crls, X509_CRL_free);
	free(set);
}

enum cert_status { STATUS_UNKNOWN, STATUS_GOOD, STATUS_REVOKED };

static bool crl_is_current(X509_CRL *crl, time_t now)
{
	const ASN1_TIME *this_update = X509_CRL_get0_lastUpdate(crl);
	const ASN1_TIME *next_update = X509_CRL_get0_nextUpdate(crl);

	/* A CRL without nextUpdate never counts as current (RFC 5280 requires it). */
	if (this_update == NULL || next_update == NULL)
		return false;
	return X509_cmp_time(this_update, &now) < 0 && X509_cmp_time(next_update, &now) > 0;
}

static enum cert_status check_one(const struct cm_crlset *set, X509 *x, X509 *issuer, int depth,
				  time_t now, struct cm_trace *trace)
{
	EVP_PKEY *key = X509_get0_pubkey(issuer);
	enum cert_status status = STATUS_UNKNOWN;
	bool consulted = false;

	for (int i = 0; set != NULL && i < sk_X509_CRL_num(set->crls); i++) {
		X509_CRL *crl = sk_X509_CRL_value(set->crls, i);
		X509_REVOKED *entry = NULL;
		bool delta, current;
		char next[21];

		if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(x)) != 0)
			continue;
		if (key == NULL || X509_CRL_verify(crl, key) != 1) {
			ERR_clear_error();
			cm_trace_add(trace, "revocation: depth %d: CRL %s: signature does not verify with the issuer's key, ignored",
				     depth, set->origin[i]);
			continue;
		}
		consulted = true;
		delta = X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) >= 0;
		current = crl_is_current(crl, now);
		cm_x509_time_iso(X509_CRL_get0_nextUpdate(crl), next);
		if (X509_CRL_get0_by_cert(crl, &entry, x) == 1) {
			cm_trace_add(trace, "revocation: depth %d: CRL %s: revoked (%s%s, nextUpdate %s)",
				     depth, set->origin[i], delta ? "delta CRL, " : "",
				     current ? "current" : "stale", next[0] ? next : "none");
			return STATUS_REVOKED; /* revoked from any source wins */
		}
		cm_trace_add(trace, "revocation: depth %d: CRL %s: not listed (%s%s, nextUpdate %s)",
			     depth, set->origin[i], delta ? "delta CRL, " : "",
			     current ? "current" : "stale", next[0] ? next : "none");
		if (current && !delta)
			status = STATUS_GOOD;
	}
	if (!consulted)
		cm_trace_add(trace, "revocation: depth %d: no CRL from this certificate's issuer", depth);
	return status;
}

enum cm_reason cm_revocation_check(const struct cm_crlset *set, const struct cm_trust *trust,
				   const struct cm_cert *cert, enum cm_revocation_mode mode,
				   time_t now, struct cm_trace *trace, char **detail)
{
	STACK_OF(X509) *path = cm_cert_path(cert);
	bool unknown = false;
	int unknown_depth = -1;

	if (mode == CM_REVOCATION_OFF) {
		cm_trace_add(trace, "revocation: off");
		return CM_REASON_ALLOWED;
	}
	if (path == NULL) {
		cm_trace_add(trace, "revocation: no verified path");
		return CM_REASON_REVOCATION_UNKNOWN;
	}
	for (int i = 0; i < sk_X509_num(path); i++) {
		X509 *x = sk_X509_value(path, i);
		enum cert_status st;

		if (cm_trust_is_anchor(trust, x))
			break; /* anchors (and anything above them) are never checked */
		if (i + 1 >= sk_X509_num(path)) {
			st = STATUS_UNKNOWN; /* no issuer in the path: cannot verify a CRL */
			cm_trace_add(trace, "revocation: depth %d: issuer not in the verified path", i);
		} else {
			st = check_one(set, x, sk_X509_value(path, i + 1), i, now, trace);
		}
		if (st == STATUS_REVOKED) {
			if (detail != NULL && *detail == NULL) {
				char *subj = cm_x509_name_string(X509_get_subject_name(x));

				*detail = cm_strdup_printf("%s (depth %d) is revoked", subj ? subj : "?", i);
				free(subj);
			}
			return CM_REASON_REVOKED;
		}
		if (st == STATUS_UNKNOWN && !unknown) {
			unknown = true;
			unknown_depth = i;
		}
	}
	if (unknown && mode == CM_REVOCATION_HARD) {
		if (detail != NULL && *detail == NULL)
			*detail = cm_strdup_printf("no current revocation information for the certificate at depth %d",
						   unknown_depth);
		cm_trace_add(trace, "revocation: hard mode: status unknown at depth %d", unknown_depth);
		return CM_REASON_REVOCATION_UNKNOWN;
	}
	cm_trace_add(trace, unknown ? "revocation: soft mode: status unknown, passed" : "revocation: good");
	return CM_REASON_ALLOWED;
}
