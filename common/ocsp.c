/*
 * ocsp — RFC 6960 requests and response checks (include/certmap/ocsp.h).
 *
 * Who may sign an answer about cert (RFC 6960 §4.2.2.2), and how we check it.
 * The caller has already verified the client's path, issuer included, to
 * its anchors at `now`; `issuer` is that verified certificate. The issuer
 * may be an intermediate that is not itself an anchor.
 *   1. The signer is located by the response's ResponderID (byName or
 *      byKey, the SHA-1 of the subjectPublicKey): first `issuer` itself,
 *      then the certificates the response carries, then `untrusted`.
 *      `issuer` comes first so that a byName ResponderID with a look-alike
 *      certificate in the response cannot shadow the real issuer.
 *   2. The response signature must verify with the signer's key
 *      (OCSP_basic_verify restricted to that one certificate, with
 *      OCSP_NOINTERN | OCSP_NOVERIFY: signature only, no chain building).
 *   3. Signer == issuer (DER-equal): accepted. Re-verifying the issuer's
 *      chain here would be both redundant and wrong: OpenSSL's own chain
 *      check (OCSP_basic_verify without OCSP_NOVERIFY) wants the issuer to
 *      chain to `trust` again from whatever intermediates happen to be at
 *      hand, uses the wall clock instead of `now`, and with OCSP_TRUSTOTHER
 *      it would trust *any* certificate in the stack passed to it — which
 *      is why `untrusted` (client-supplied) never goes into that stack.
 *   4. Otherwise the signer is a delegated responder and must be issued by
 *      the issuer: X509_check_issued (names, AKID/SKI, the issuer may sign
 *      certificates) and its signature verifies with the issuer's key — the
 *      same key the CertID's issuerKeyHash names, so the delegation is by
 *      the CA that issued cert. It must carry EKU id-kp-OCSPSigning
 *      (what OpenSSL's ocsp_check_delegated requires), no unsupported
 *      critical extension, digitalSignature when it has a KeyUsage, and be
 *      valid at `now`. A path responder → issuer is a path to the anchors
 *      because the issuer's own path was verified by the caller, so `trust`
 *      is not consulted again (kept in the signature for callers that
 *      check a responder against the anchors directly; see cm_ocsp_check).
 *      Not done: the responder certificate's own revocation (id-pkix-ocsp-
 *      nocheck is assumed, as for short-lived responder certificates).
 *   5. Anything else — an unrelated CA's responder, a responder of a sibling
 *      CA, the issuer's parent — is "signer is not authorized by the issuer".
 * The answer is the SingleResponse for our CertID (SHA-1, built exactly as
 * in the request, compared by OCSP_id_cmp); two answers for it that
 * disagree are refused. Times are compared with `now`, not the wall clock
 * (OCSP_check_validity reads the clock): thisUpdate <= now + 300 s, and
 * nextUpdate, when present, >= thisUpdate and > now - 300 s.
 * Every failure path clears the OpenSSL error queue and frees what it made.
 * Threading: pure functions, no state.
 */
#include "certmap/ocsp.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "certmap/x509.h"

#define SKEW_S 300             /* clock skew allowed on thisUpdate/nextUpdate */
#define AIA_URL_MAX_BYTES 2048 /* longest responder URL taken from a certificate */
#define AIA_MAX_URLS 16        /* responder URLs kept from one certificate */
#define ISO_MAX 21             /* "2026-01-01T00:00:00Z" + NUL */

int cm_ocsp_request(X509 *cert, X509 *issuer, unsigned char **der, size_t *len, struct cm_err *err)
{
	OCSP_REQUEST *req = NULL;
	OCSP_CERTID *id = NULL;
	unsigned char *buf = NULL, *p;
	int n, ret = -1;

	*der = NULL;
	*len = 0;
	if (cert == NULL || issuer == NULL) {
		cm_err_set(err, "no certificate or issuer");
		return -1;
	}
	if ((req = OCSP_REQUEST_new()) == NULL ||
	    (id = OCSP_cert_to_id(EVP_sha1(), cert, issuer)) == NULL) {
		cm_err_set(err, "cannot build the CertID");
		goto cleanup;
	}
	if (OCSP_request_add0_id(req, id) == NULL) {
		cm_err_set(err, "out of memory");
		goto cleanup;
	}
	id = NULL; /* owned by req now */
	n = i2d_OCSP_REQUEST(req, NULL);
	if (n <= 0 || (buf = malloc((size_t)n)) == NULL) {
		cm_err_set(err, "cannot encode the request");
		goto cleanup;
	}
	p = buf;
	if (i2d_OCSP_REQUEST(req, &p) != n) {
		cm_err_set(err, "cannot encode the request");
		goto cleanup;
	}
	*der = buf;
	*len = (size_t)n;
	buf = NULL;
	ret = 0;

cleanup:
	if (ret != 0)
		ERR_clear_error();
	free(buf);
	OCSP_CERTID_free(id);
	OCSP_REQUEST_free(req);
	return ret;
}

/* ---- checking a response ---- */

static bool asn1_time_to_time_t(const ASN1_TIME *t, time_t *out)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return false;
	*out = timegm(&tm);
	return true;
}

static void iso(time_t t, char out[ISO_MAX])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, ISO_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, ISO_MAX, "?");
}

/* Does the ResponderID (byName or byKey) name x? */
static bool responder_id_matches(const ASN1_OCTET_STRING *key_id, const X509_NAME *name, X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (name != NULL)
		return X509_NAME_cmp(name, X509_get_subject_name(x)) == 0;
	if (key_id == NULL || !X509_pubkey_digest(x, EVP_sha1(), md, &n))
		return false;
	return (int)n == ASN1_STRING_length(key_id) &&
	       memcmp(md, ASN1_STRING_get0_data(key_id), n) == 0;
}

static X509 *find_in(const STACK_OF(X509) *sk, const ASN1_OCTET_STRING *key_id,
		     const X509_NAME *name)
{
	for (int i = 0; i < sk_X509_num(sk); i++) {
		X509 *x = sk_X509_value(sk, i);

		if (responder_id_matches(key_id, name, x))
			return x;
	}
	return NULL;
}

/* Step 2 of the top comment: the response is signed with signer's key. */
static bool signature_verifies(OCSP_BASICRESP *bs, X509 *signer)
{
	STACK_OF(X509) *one = sk_X509_new_null();
	bool ok = false;

	if (one != NULL && sk_X509_push(one, signer))
		ok = OCSP_basic_verify(bs, one, NULL,
				       OCSP_NOINTERN | OCSP_NOVERIFY | OCSP_NOCHAIN) == 1;
	sk_X509_free(one);
	return ok;
}

/* Step 4: a delegated responder certificate of issuer, valid at now.
 * NULL when acceptable, else why not. */
static const char *delegation_problem(X509 *signer, X509 *issuer, time_t now)
{
	EVP_PKEY *ikey = X509_get0_pubkey(issuer);
	uint32_t flags = X509_get_extension_flags(signer);

	if (X509_check_issued(issuer, signer) != X509_V_OK || ikey == NULL ||
	    X509_verify(signer, ikey) != 1)
		return "signer is not authorized by the issuer";
	if ((flags & EXFLAG_XKUSAGE) == 0 ||
	    (X509_get_extended_key_usage(signer) & XKU_OCSP_SIGN) == 0)
		return "signer is not authorized by the issuer (responder certificate lacks id-kp-OCSPSigning)";
	if ((flags & (EXFLAG_INVALID | EXFLAG_CRITICAL)) != 0)
		return "signer is not authorized by the issuer (responder certificate has an invalid or unsupported critical extension)";
	if ((flags & EXFLAG_KUSAGE) != 0 &&
	    (X509_get_key_usage(signer) & KU_DIGITAL_SIGNATURE) == 0)
		return "signer is not authorized by the issuer (responder certificate key usage lacks digitalSignature)";
	if (X509_cmp_time(X509_get0_notBefore(signer), &now) >= 0)
		return "responder certificate is not yet valid";
	if (X509_cmp_time(X509_get0_notAfter(signer), &now) <= 0)
		return "responder certificate has expired";
	return NULL;
}

static void set_signer(struct cm_ocsp_answer *out, X509 *signer, bool is_issuer)
{
	char *subject, *shown;

	if (is_issuer) {
		snprintf(out->signer, sizeof(out->signer), "issuer");
		return;
	}
	subject = cm_x509_name_string(X509_get_subject_name(signer));
	shown = cm_sanitize(subject != NULL ? subject : "?", sizeof(out->signer) - 1);
	snprintf(out->signer, sizeof(out->signer), "%s", shown != NULL ? shown : "?");
	free(shown);
	free(subject);
}

/* Another SingleResponse for the same CertID with a different status? */
static bool conflicting_answer(OCSP_BASICRESP *bs, OCSP_CERTID *id, int first, int status)
{
	for (int i = OCSP_resp_find(bs, id, first); i >= 0; i = OCSP_resp_find(bs, id, i)) {
		OCSP_SINGLERESP *single = OCSP_resp_get0(bs, i);

		if (single == NULL ||
		    OCSP_single_get0_status(single, NULL, NULL, NULL, NULL) != status)
			return true;
	}
	return false;
}

int cm_ocsp_check(const unsigned char *der, size_t len, X509 *cert, X509 *issuer, X509_STORE *trust,
		  STACK_OF(X509) *untrusted, time_t now, struct cm_ocsp_answer *out,
		  struct cm_err *err)
{
	OCSP_RESPONSE *resp = NULL;
	OCSP_BASICRESP *bs = NULL;
	OCSP_CERTID *id = NULL;
	const ASN1_OCTET_STRING *key_id = NULL;
	const X509_NAME *name = NULL;
	ASN1_GENERALIZEDTIME *revtime = NULL, *thisupd = NULL, *nextupd = NULL;
	struct cm_ocsp_answer a = {.revocation_reason = -1};
	const unsigned char *p = der;
	X509 *signer;
	bool by_issuer;
	int rstatus, status = -1, reason = -1, idx, ret = -1;
	char when[ISO_MAX];

	(void)trust; /* see step 4 of the top comment */
	if (der == NULL || len == 0 || len > LONG_MAX ||
	    (resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len)) == NULL) {
		cm_err_set(err, "not DER");
		goto cleanup;
	}
	if (p != der + len) {
		cm_err_set(err, "not DER (%zu bytes after the response)", (size_t)(der + len - p));
		goto cleanup;
	}
	rstatus = OCSP_response_status(resp);
	if (rstatus != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		cm_err_set(err, "responseStatus %s", OCSP_response_status_str(rstatus));
		goto cleanup;
	}
	if ((bs = OCSP_response_get1_basic(resp)) == NULL) {
		cm_err_set(err, "not a basic OCSP response");
		goto cleanup;
	}

	/* Steps 1–5 of the top comment. */
	if (!OCSP_resp_get0_id(bs, &key_id, &name)) {
		cm_err_set(err, "no responder id");
		goto cleanup;
	}
	signer = NULL;
	by_issuer = responder_id_matches(key_id, name, issuer);
	if (by_issuer)
		signer = issuer;
	else if ((signer = find_in(OCSP_resp_get0_certs(bs), key_id, name)) == NULL)
		signer = find_in(untrusted, key_id, name);
	if (signer == NULL) {
		cm_err_set(err,
			   "signer is not authorized by the issuer (signer certificate not found)");
		goto cleanup;
	}
	if (!signature_verifies(bs, signer)) {
		cm_err_set(err, "signature does not verify");
		goto cleanup;
	}
	if (!by_issuer && X509_cmp(signer, issuer) == 0)
		by_issuer = true; /* byName matched a copy the response carried */
	if (!by_issuer) {
		const char *why = delegation_problem(signer, issuer, now);

		if (why != NULL) {
			cm_err_set(err, "%s", why);
			goto cleanup;
		}
	}

	/* Our answer. */
	if ((id = OCSP_cert_to_id(EVP_sha1(), cert, issuer)) == NULL) {
		cm_err_set(err, "cannot build the CertID");
		goto cleanup;
	}
	idx = OCSP_resp_find(bs, id, -1);
	if (idx < 0) {
		cm_err_set(err, "no answer for this certificate");
		goto cleanup;
	}
	status = OCSP_single_get0_status(OCSP_resp_get0(bs, idx), &reason, &revtime, &thisupd,
					 &nextupd);
	if (conflicting_answer(bs, id, idx, status)) {
		cm_err_set(err, "conflicting answers for this certificate");
		goto cleanup;
	}
	switch (status) {
	case V_OCSP_CERTSTATUS_GOOD:
		a.status = CM_OCSP_GOOD;
		break;
	case V_OCSP_CERTSTATUS_REVOKED:
		a.status = CM_OCSP_REVOKED;
		if (!asn1_time_to_time_t(revtime, &a.revocation_time)) {
			cm_err_set(err, "bad revocationTime");
			goto cleanup;
		}
		a.revocation_reason = reason;
		break;
	case V_OCSP_CERTSTATUS_UNKNOWN:
		a.status = CM_OCSP_UNKNOWN;
		break;
	default:
		cm_err_set(err, "bad certStatus");
		goto cleanup;
	}

	/* Freshness, against now. */
	if (!asn1_time_to_time_t(thisupd, &a.this_update)) {
		cm_err_set(err, "bad thisUpdate");
		goto cleanup;
	}
	if (nextupd != NULL && !asn1_time_to_time_t(nextupd, &a.next_update)) {
		cm_err_set(err, "bad nextUpdate");
		goto cleanup;
	}
	if (a.this_update > now + SKEW_S) {
		iso(a.this_update, when);
		cm_err_set(err, "not yet valid: thisUpdate %s", when);
		goto cleanup;
	}
	if (nextupd != NULL && a.next_update < a.this_update) {
		cm_err_set(err, "nextUpdate before thisUpdate");
		goto cleanup;
	}
	if (nextupd != NULL && a.next_update <= now - SKEW_S) {
		iso(a.next_update, when);
		cm_err_set(err, "stale: nextUpdate %s", when);
		goto cleanup;
	}
	set_signer(&a, signer, by_issuer);
	*out = a;
	ret = 0;

cleanup:
	if (ret != 0)
		ERR_clear_error();
	OCSP_CERTID_free(id);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	return ret;
}

/* ---- responder URLs ---- */

static bool url_ok(const unsigned char *s, int n)
{
	if (n <= 0 || n > AIA_URL_MAX_BYTES)
		return false;
	for (int i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] >= 0x7f)
			return false;
	return true;
}

char **cm_ocsp_aia_urls(X509 *cert)
{
	AUTHORITY_INFO_ACCESS *aia;
	char **v = NULL;
	size_t n = 0;
	int crit = 0;

	if (cert == NULL)
		return NULL;
	aia = X509_get_ext_d2i(cert, NID_info_access, &crit, NULL);
	if (aia == NULL) {
		ERR_clear_error();
		return NULL;
	}
	for (int i = 0; i < sk_ACCESS_DESCRIPTION_num(aia) && n < AIA_MAX_URLS; i++) {
		ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, i);
		const ASN1_IA5STRING *uri;
		char **grown;

		if (OBJ_obj2nid(ad->method) != NID_ad_OCSP || ad->location == NULL ||
		    ad->location->type != GEN_URI)
			continue;
		uri = ad->location->d.uniformResourceIdentifier;
		if (!url_ok(ASN1_STRING_get0_data(uri), ASN1_STRING_length(uri)))
			continue;
		grown = realloc(v, (n + 2) * sizeof(*v));
		if (grown == NULL)
			goto fail;
		v = grown;
		v[n] = cm_memdup_str(ASN1_STRING_get0_data(uri), (size_t)ASN1_STRING_length(uri));
		if (v[n] == NULL)
			goto fail;
		v[++n] = NULL;
	}
	AUTHORITY_INFO_ACCESS_free(aia);
	return v;

fail:
	if (v != NULL)
		v[n] = NULL;
	cm_strv_free(v);
	AUTHORITY_INFO_ACCESS_free(aia);
	return NULL;
}
