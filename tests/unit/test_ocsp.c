/*
 * test_ocsp — cm_ocsp_request, cm_ocsp_check and cm_ocsp_aia_urls against a
 * small PKI built here with the OpenSSL API (P-256 keys, fast):
 *   root ─┬─ ica ─┬─ leaf, other (the certificates asked about)
 *         │       ├─ resp        delegated responder (EKU OCSPSigning)
 *         │       ├─ resp_noeku  same, EKU clientAuth only
 *         │       └─ resp_old    delegated responder, expired
 *         └─ root_resp           responder of the root (EKU OCSPSigning)
 *   evil ─── evil_resp           an unrelated CA and its responder
 * Only root is an anchor: ica is an intermediate the caller verified.
 * Responses are made with OCSP_basic_add1_status / OCSP_basic_sign /
 * OCSP_response_create, as a responder would.
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "certmap/ocsp.h"

#define DAY 86400L

struct pki {
	EVP_PKEY *root_key, *ica_key, *leaf_key, *resp_key, *evil_key, *evil_resp_key;
	X509 *root, *ica, *leaf, *other, *resp, *resp_noeku, *resp_old, *root_resp, *evil,
		*evil_resp;
	X509_STORE *trust;
	STACK_OF(X509) *untrusted; /* what a caller passes: the path above the issuer */
	time_t now;
};

static struct pki pki;

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	cr_assert_not_null(k);
	return k;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	cr_assert_not_null(ext, "extension %d = %s", nid, value);
	cr_assert(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
}

/* A certificate for key, signed by issuer_key (issuer NULL: self-signed).
 * eku NULL: none. Validity [now + nb_days, now + na_days]. */
static X509 *new_cert(const char *cn, long serial, EVP_PKEY *key, X509 *issuer,
		      EVP_PKEY *issuer_key, bool ca, const char *eku, long nb_days, long na_days)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	time_t now = pki.now;

	cr_assert(x != NULL && name != NULL);
	cr_assert(X509_set_version(x, X509_VERSION_3));
	cr_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), serial));
	cr_assert(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
					     (const unsigned char *)"Certmap Test", -1, -1, 0));
	cr_assert(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
					     -1, -1, 0));
	cr_assert(X509_set_subject_name(x, name));
	cr_assert(X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name));
	X509_NAME_free(name);
	cr_assert_not_null(X509_time_adj_ex(X509_getm_notBefore(x), (int)nb_days, 0, &now));
	cr_assert_not_null(X509_time_adj_ex(X509_getm_notAfter(x), (int)na_days, 0, &now));
	cr_assert(X509_set_pubkey(x, key));
	if (issuer == NULL)
		issuer = x;
	add_ext(x, issuer, NID_subject_key_identifier, "hash");
	add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
	if (ca) {
		add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
	} else {
		add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
	}
	if (eku != NULL)
		add_ext(x, issuer, NID_ext_key_usage, eku);
	cr_assert(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void pki_init(void)
{
	pki.now = time(NULL);
	pki.root_key = new_key();
	pki.ica_key = new_key();
	pki.leaf_key = new_key();
	pki.resp_key = new_key();
	pki.evil_key = new_key();
	pki.evil_resp_key = new_key();
	pki.root = new_cert("Test Root CA", 1, pki.root_key, NULL, NULL, true, NULL, -1, 3650);
	pki.ica = new_cert("Test Issuing CA", 2, pki.ica_key, pki.root, pki.root_key, true, NULL,
			   -1, 3650);
	pki.leaf = new_cert("alice", 0x1001, pki.leaf_key, pki.ica, pki.ica_key, false,
			    "clientAuth", -1, 365);
	pki.other = new_cert("bob", 0x1002, pki.leaf_key, pki.ica, pki.ica_key, false, "clientAuth",
			     -1, 365);
	pki.resp = new_cert("Test OCSP Responder", 0x2001, pki.resp_key, pki.ica, pki.ica_key,
			    false, "OCSPSigning", -1, 30);
	pki.resp_noeku = new_cert("Test Not A Responder", 0x2002, pki.resp_key, pki.ica,
				  pki.ica_key, false, "clientAuth", -1, 30);
	pki.resp_old = new_cert("Test Old Responder", 0x2003, pki.resp_key, pki.ica, pki.ica_key,
				false, "OCSPSigning", -60, -30);
	pki.root_resp = new_cert("Test Root Responder", 0x2004, pki.resp_key, pki.root,
				 pki.root_key, false, "OCSPSigning", -1, 30);
	pki.evil = new_cert("Evil CA", 1, pki.evil_key, NULL, NULL, true, NULL, -1, 3650);
	pki.evil_resp = new_cert("Evil Responder", 2, pki.evil_resp_key, pki.evil, pki.evil_key,
				 false, "OCSPSigning", -1, 30);
	pki.trust = X509_STORE_new();
	cr_assert(X509_STORE_add_cert(pki.trust, pki.root));
	pki.untrusted = sk_X509_new_null();
	cr_assert(sk_X509_push(pki.untrusted, pki.root));
}

static void pki_fini(void)
{
	X509 *certs[] = {pki.root,       pki.ica,      pki.leaf,      pki.other, pki.resp,
			 pki.resp_noeku, pki.resp_old, pki.root_resp, pki.evil,  pki.evil_resp};
	EVP_PKEY *keys[] = {pki.root_key, pki.ica_key,  pki.leaf_key,
			    pki.resp_key, pki.evil_key, pki.evil_resp_key};

	for (size_t i = 0; i < sizeof(certs) / sizeof(certs[0]); i++)
		X509_free(certs[i]);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		EVP_PKEY_free(keys[i]);
	X509_STORE_free(pki.trust);
	sk_X509_free(pki.untrusted);
	memset(&pki, 0, sizeof(pki));
}

TestSuite(ocsp, .init = pki_init, .fini = pki_fini);

/* One SingleResponse of a response to build. */
struct single {
	X509 *cert; /* asked about (issued by ica) */
	int status; /* V_OCSP_CERTSTATUS_* */
	int reason;
	long rev_off;  /* revocationTime = now + rev_off */
	long this_off; /* thisUpdate = now + this_off */
	long next_off; /* nextUpdate = now + next_off */
	bool no_next;
};

struct spec {
	X509 *signer;
	EVP_PKEY *key;
	unsigned long flags; /* OCSP_basic_sign flags: OCSP_NOCERTS, OCSP_RESPID_KEY */
	struct single s[2];
	int n;
};

static ASN1_GENERALIZEDTIME *gtime(long off)
{
	ASN1_GENERALIZEDTIME *t = ASN1_GENERALIZEDTIME_set(NULL, pki.now + off);

	cr_assert_not_null(t);
	return t;
}

/* DER OCSPResponse (OPENSSL_malloc'd). */
static unsigned char *build(const struct spec *sp, size_t *len)
{
	OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
	OCSP_RESPONSE *resp;
	unsigned char *der = NULL;
	int n;

	cr_assert_not_null(bs);
	for (int i = 0; i < sp->n; i++) {
		const struct single *s = &sp->s[i];
		OCSP_CERTID *id = OCSP_cert_to_id(EVP_sha1(), s->cert, pki.ica);
		ASN1_GENERALIZEDTIME *rev = gtime(s->rev_off), *thisu = gtime(s->this_off),
				     *nextu = s->no_next ? NULL : gtime(s->next_off);

		cr_assert_not_null(id);
		cr_assert_not_null(OCSP_basic_add1_status(
			bs, id, s->status, s->reason,
			s->status == V_OCSP_CERTSTATUS_REVOKED ? rev : NULL, thisu, nextu));
		OCSP_CERTID_free(id);
		ASN1_GENERALIZEDTIME_free(rev);
		ASN1_GENERALIZEDTIME_free(thisu);
		ASN1_GENERALIZEDTIME_free(nextu);
	}
	cr_assert(OCSP_basic_sign(bs, sp->signer, sp->key, EVP_sha256(), NULL, sp->flags));
	resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
	cr_assert_not_null(resp);
	n = i2d_OCSP_RESPONSE(resp, &der);
	cr_assert_gt(n, 0);
	*len = (size_t)n;
	OCSP_RESPONSE_free(resp);
	OCSP_BASICRESP_free(bs);
	return der;
}

static struct spec good_by(X509 *signer, EVP_PKEY *key)
{
	struct spec sp = {.signer = signer, .key = key, .n = 1};

	sp.s[0] = (struct single){.cert = pki.leaf,
				  .status = V_OCSP_CERTSTATUS_GOOD,
				  .this_off = -3600,
				  .next_off = 3 * DAY};
	return sp;
}

static int check(const unsigned char *der, size_t len, struct cm_ocsp_answer *a, struct cm_err *err)
{
	int r = cm_ocsp_check(der, len, pki.leaf, pki.ica, pki.trust, pki.untrusted, pki.now, a,
			      err);

	cr_assert_eq(ERR_peek_error(), 0, "OpenSSL error queue left non-empty");
	return r;
}

static void expect_ok(const struct spec *sp, struct cm_ocsp_answer *a)
{
	struct cm_err err = {{0}};
	size_t len = 0;
	unsigned char *der = build(sp, &len);

	cr_assert_eq(check(der, len, a, &err), 0, "%s", err.msg);
	OPENSSL_free(der);
}

static void expect_refused(const struct spec *sp, const char *want)
{
	struct cm_ocsp_answer a;
	struct cm_err err = {{0}};
	size_t len = 0;
	unsigned char *der = build(sp, &len);

	cr_assert_eq(check(der, len, &a, &err), -1, "accepted, wanted \"%s\"", want);
	cr_assert(strstr(err.msg, want) != NULL, "got \"%s\", wanted \"%s\"", err.msg, want);
	OPENSSL_free(der);
}

Test(ocsp, good_signed_by_the_issuer)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;

	expect_ok(&sp, &a);
	cr_assert_eq(a.status, CM_OCSP_GOOD);
	cr_assert_eq(a.this_update, pki.now - 3600);
	cr_assert_eq(a.next_update, pki.now + 3 * DAY);
	cr_assert_eq(a.revocation_reason, -1);
	cr_assert_str_eq(a.signer, "issuer");
}

Test(ocsp, issuer_by_key_id_without_certs)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;

	sp.flags = OCSP_RESPID_KEY | OCSP_NOCERTS;
	expect_ok(&sp, &a);
	cr_assert_str_eq(a.signer, "issuer");
}

Test(ocsp, revoked_with_time_and_reason)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;

	sp.s[0].status = V_OCSP_CERTSTATUS_REVOKED;
	sp.s[0].reason = OCSP_REVOKED_STATUS_KEYCOMPROMISE;
	sp.s[0].rev_off = -2 * DAY;
	expect_ok(&sp, &a);
	cr_assert_eq(a.status, CM_OCSP_REVOKED);
	cr_assert_eq(a.revocation_time, pki.now - 2 * DAY);
	cr_assert_eq(a.revocation_reason, 1); /* keyCompromise */
}

Test(ocsp, revoked_without_reason)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;

	sp.s[0].status = V_OCSP_CERTSTATUS_REVOKED;
	sp.s[0].reason = OCSP_REVOKED_STATUS_NOSTATUS;
	sp.s[0].rev_off = -DAY;
	expect_ok(&sp, &a);
	cr_assert_eq(a.status, CM_OCSP_REVOKED);
	cr_assert_eq(a.revocation_reason, -1);
}

Test(ocsp, unknown_and_no_next_update)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;

	sp.s[0].status = V_OCSP_CERTSTATUS_UNKNOWN;
	sp.s[0].no_next = true;
	expect_ok(&sp, &a);
	cr_assert_eq(a.status, CM_OCSP_UNKNOWN);
	cr_assert_eq(a.next_update, 0);
}

Test(ocsp, delegated_responder_in_the_response)
{
	struct spec sp = good_by(pki.resp, pki.resp_key);
	struct cm_ocsp_answer a;

	expect_ok(&sp, &a);
	cr_assert_eq(a.status, CM_OCSP_GOOD);
	cr_assert(strstr(a.signer, "CN=Test OCSP Responder") != NULL, "%s", a.signer);
}

Test(ocsp, delegated_responder_by_key_id)
{
	struct spec sp = good_by(pki.resp, pki.resp_key);
	struct cm_ocsp_answer a;

	sp.flags = OCSP_RESPID_KEY;
	expect_ok(&sp, &a);
	cr_assert(strstr(a.signer, "Test OCSP Responder") != NULL, "%s", a.signer);
}

Test(ocsp, delegated_responder_from_untrusted)
{
	struct spec sp = good_by(pki.resp, pki.resp_key);
	struct cm_ocsp_answer a;
	struct cm_err err = {{0}};
	size_t len = 0;
	unsigned char *der;

	sp.flags = OCSP_NOCERTS;
	expect_refused(&sp, "signer certificate not found");
	der = build(&sp, &len);
	cr_assert(sk_X509_push(pki.untrusted, pki.resp));
	cr_assert_eq(check(der, len, &a, &err), 0, "%s", err.msg);
	OPENSSL_free(der);
}

Test(ocsp, delegated_responder_without_eku_is_refused)
{
	struct spec sp = good_by(pki.resp_noeku, pki.resp_key);

	expect_refused(&sp, "signer is not authorized by the issuer");
	expect_refused(&sp, "id-kp-OCSPSigning");
}

Test(ocsp, expired_delegated_responder_is_refused)
{
	struct spec sp = good_by(pki.resp_old, pki.resp_key);

	expect_refused(&sp, "responder certificate has expired");
}

Test(ocsp, responder_of_the_issuers_parent_is_refused)
{
	struct spec sp = good_by(pki.root_resp, pki.resp_key);

	expect_refused(&sp, "signer is not authorized by the issuer");
}

Test(ocsp, anchor_signing_directly_is_refused)
{
	struct spec sp = good_by(pki.root, pki.root_key);

	expect_refused(&sp, "signer is not authorized by the issuer");
}

Test(ocsp, unrelated_responder_is_refused)
{
	struct spec sp = good_by(pki.evil_resp, pki.evil_resp_key);

	expect_refused(&sp, "signer is not authorized by the issuer");
	sp = good_by(pki.evil, pki.evil_key);
	expect_refused(&sp, "signer is not authorized by the issuer");
}

/* A look-alike of the issuer (same name, other key) in the response. */
Test(ocsp, issuer_look_alike_is_refused)
{
	X509 *fake = new_cert("Test Issuing CA", 2, pki.evil_key, pki.root, pki.evil_key, true,
			      NULL, -1, 30);
	struct spec sp = good_by(fake, pki.evil_key);

	expect_refused(&sp, "signature does not verify");
	X509_free(fake);
}

Test(ocsp, tampered_signature_is_refused)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;
	struct cm_err err = {{0}};
	size_t len = 0;
	unsigned char *der;

	sp.flags = OCSP_NOCERTS; /* the signature BIT STRING ends the DER */
	der = build(&sp, &len);
	der[len - 1] ^= 0x01;
	cr_assert_eq(check(der, len, &a, &err), -1);
	cr_assert_str_eq(err.msg, "signature does not verify");
	OPENSSL_free(der);

	sp = good_by(pki.resp, pki.resp_key);
	der = build(&sp, &len);
	der[len / 2] ^= 0x01; /* somewhere in tbsResponseData or the certs */
	cr_assert_eq(check(der, len, &a, &err), -1);
	OPENSSL_free(der);
}

Test(ocsp, answer_for_another_serial_is_no_answer)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);

	sp.s[0].cert = pki.other;
	expect_refused(&sp, "no answer for this certificate");
}

Test(ocsp, our_answer_among_others)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;

	sp.s[1] = sp.s[0];
	sp.s[0].cert = pki.other;
	sp.s[0].status = V_OCSP_CERTSTATUS_REVOKED;
	sp.n = 2;
	expect_ok(&sp, &a);
	cr_assert_eq(a.status, CM_OCSP_GOOD);
}

Test(ocsp, conflicting_answers_are_refused)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);

	sp.s[1] = sp.s[0];
	sp.s[1].status = V_OCSP_CERTSTATUS_REVOKED;
	sp.n = 2;
	expect_refused(&sp, "conflicting answers");
}

Test(ocsp, stale_next_update_is_refused)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;

	sp.s[0].this_off = -3 * DAY;
	sp.s[0].next_off = -DAY;
	expect_refused(&sp, "stale: nextUpdate ");
	sp.s[0].next_off = -200; /* within the 5 min skew */
	expect_ok(&sp, &a);
	sp.s[0].next_off = -301;
	expect_refused(&sp, "stale: nextUpdate ");
}

Test(ocsp, future_this_update_is_refused)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);
	struct cm_ocsp_answer a;

	sp.s[0].this_off = 3600;
	expect_refused(&sp, "not yet valid: thisUpdate ");
	sp.s[0].this_off = 200; /* within the skew */
	expect_ok(&sp, &a);
}

Test(ocsp, next_update_before_this_update_is_refused)
{
	struct spec sp = good_by(pki.ica, pki.ica_key);

	sp.s[0].this_off = -60;
	sp.s[0].next_off = -120;
	expect_refused(&sp, "nextUpdate before thisUpdate");
}

Test(ocsp, unsuccessful_response_status_is_refused)
{
	static const struct {
		int status;
		const char *want;
	} rows[] = {{OCSP_RESPONSE_STATUS_TRYLATER, "responseStatus trylater"},
		    {OCSP_RESPONSE_STATUS_UNAUTHORIZED, "responseStatus unauthorized"},
		    {OCSP_RESPONSE_STATUS_INTERNALERROR, "responseStatus internalerror"}};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		OCSP_RESPONSE *resp = OCSP_response_create(rows[i].status, NULL);
		struct cm_ocsp_answer a;
		struct cm_err err = {{0}};
		unsigned char *der = NULL;
		int n = i2d_OCSP_RESPONSE(resp, &der);

		cr_assert_gt(n, 0);
		cr_assert_eq(check(der, (size_t)n, &a, &err), -1);
		cr_assert_str_eq(err.msg, rows[i].want);
		OPENSSL_free(der);
		OCSP_RESPONSE_free(resp);
	}
}

Test(ocsp, garbage_and_truncated_der_are_refused)
{
	static const unsigned char garbage[] = "HTTP/1.1 200 OK\r\n\r\n<html>";
	struct spec sp = good_by(pki.resp, pki.resp_key);
	struct cm_ocsp_answer a;
	struct cm_err err = {{0}};
	size_t len = 0;
	unsigned char *der = build(&sp, &len), *longer;

	cr_assert_eq(check(garbage, sizeof(garbage), &a, &err), -1);
	cr_assert_str_eq(err.msg, "not DER");
	cr_assert_eq(check(NULL, 0, &a, &err), -1);
	cr_assert_eq(check(der, 0, &a, &err), -1);
	for (size_t n = 1; n < len; n++) {
		cr_assert_eq(check(der, n, &a, &err), -1, "accepted %zu of %zu bytes", n, len);
		cr_assert_neq(err.msg[0], '\0');
	}
	longer = malloc(len + 1);
	cr_assert_not_null(longer);
	memcpy(longer, der, len);
	longer[len] = 0;
	cr_assert_eq(check(longer, len + 1, &a, &err), -1);
	cr_assert(strstr(err.msg, "not DER") != NULL, "%s", err.msg);
	cr_assert_eq(check(longer, len, &a, &err), 0, "%s", err.msg);
	free(longer);
	OPENSSL_free(der);
}

Test(ocsp, request_has_one_sha1_certid_and_no_nonce)
{
	struct cm_err err = {{0}};
	unsigned char *der = NULL;
	const unsigned char *p;
	size_t len = 0;
	OCSP_REQUEST *req;
	OCSP_CERTID *want = OCSP_cert_to_id(EVP_sha1(), pki.leaf, pki.ica);
	OCSP_CERTID *got;
	ASN1_OBJECT *md = NULL;
	ASN1_INTEGER *serial = NULL;

	cr_assert_eq(cm_ocsp_request(pki.leaf, pki.ica, &der, &len, &err), 0, "%s", err.msg);
	p = der;
	req = d2i_OCSP_REQUEST(NULL, &p, (long)len);
	cr_assert_not_null(req);
	cr_assert_eq(p, der + len, "trailing bytes");
	cr_assert_eq(OCSP_request_onereq_count(req), 1);
	got = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req, 0));
	cr_assert_eq(OCSP_id_cmp(got, want), 0);
	cr_assert(OCSP_id_get0_info(NULL, &md, NULL, &serial, got));
	cr_assert_eq(OBJ_obj2nid(md), NID_sha1);
	cr_assert_eq(ASN1_INTEGER_get(serial), 0x1001);
	cr_assert_lt(OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1), 0);
	cr_assert_eq(OCSP_request_is_signed(req), 0);
	OCSP_REQUEST_free(req);
	OCSP_CERTID_free(want);
	free(der);
}

static void add_access(AUTHORITY_INFO_ACCESS *aia, int method, int type, const char *value,
		       size_t len)
{
	ACCESS_DESCRIPTION *ad = ACCESS_DESCRIPTION_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();

	cr_assert(ad != NULL && s != NULL);
	cr_assert(ASN1_STRING_set(s, value, (int)len));
	ASN1_OBJECT_free(ad->method);
	ad->method = OBJ_nid2obj(method);
	GENERAL_NAME_set0_value(ad->location, type, s);
	cr_assert(sk_ACCESS_DESCRIPTION_push(aia, ad));
}

Test(ocsp, aia_urls_are_the_ocsp_uris_only)
{
	X509 *x = new_cert("aia", 0x3001, pki.leaf_key, pki.ica, pki.ica_key, false, NULL, -1, 30);
	AUTHORITY_INFO_ACCESS *aia = AUTHORITY_INFO_ACCESS_new();
	static char huge[3000];
	char **urls;

	memset(huge, 'a', sizeof(huge));
	memcpy(huge, "http://", 7);
	cr_assert_not_null(aia);
	add_access(aia, NID_ad_OCSP, GEN_URI, "http://ocsp1.lab.test/", 22);
	add_access(aia, NID_ad_ca_issuers, GEN_URI, "http://ca.lab.test/ica.crt", 26);
	add_access(aia, NID_ad_OCSP, GEN_URI, "http://ocsp\x1b[2J.lab.test/", 26);
	add_access(aia, NID_ad_OCSP, GEN_URI, "http://ocsp\0.lab.test/", 22);
	add_access(aia, NID_ad_OCSP, GEN_URI, huge, sizeof(huge));
	add_access(aia, NID_ad_OCSP, GEN_DNS, "ocsp3.lab.test", 14);
	add_access(aia, NID_ad_OCSP, GEN_URI, "http://ocsp2.lab.test:8080/ocsp", 31);
	cr_assert(X509_add1_ext_i2d(x, NID_info_access, aia, 0, X509V3_ADD_DEFAULT) == 1);
	AUTHORITY_INFO_ACCESS_free(aia);

	urls = cm_ocsp_aia_urls(x);
	cr_assert_not_null(urls);
	cr_assert_str_eq(urls[0], "http://ocsp1.lab.test/");
	cr_assert_str_eq(urls[1], "http://ocsp2.lab.test:8080/ocsp");
	cr_assert_null(urls[2]);
	cm_strv_free(urls);
	X509_free(x);
}

Test(ocsp, aia_from_config_syntax_and_absent)
{
	X509 *x = new_cert("aia2", 0x3002, pki.leaf_key, pki.ica, pki.ica_key, false, NULL, -1, 30);
	char **urls;

	cr_assert_null(cm_ocsp_aia_urls(x));
	cr_assert_null(cm_ocsp_aia_urls(NULL));
	add_ext(x, pki.ica, NID_info_access,
		"OCSP;URI:http://a.lab.test/,caIssuers;URI:http://c.lab.test/ica.crt,"
		"OCSP;URI:http://b.lab.test/");
	urls = cm_ocsp_aia_urls(x);
	cr_assert_not_null(urls);
	cr_assert_str_eq(urls[0], "http://a.lab.test/");
	cr_assert_str_eq(urls[1], "http://b.lab.test/");
	cr_assert_null(urls[2]);
	cm_strv_free(urls);
	X509_free(x);
}
