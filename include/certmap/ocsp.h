/*
 * ocsp — RFC 6960 requests and response checks (OpenSSL). No I/O here:
 * the revocation store sends the request with cm_fetch_post and caches the
 * checked answer.
 * A response counts only when: it parses; responseStatus is successful; it
 * is a basic response whose signature verifies; the signer is the issuer
 * itself or a delegated responder certificate issued by the issuer with the
 * id-kp-OCSPSigning EKU (RFC 6960 §4.2.2.2); the response carries a
 * SingleResponse for exactly our CertID; thisUpdate <= now + 5 min and
 * (nextUpdate absent or now - 5 min < nextUpdate). Anything else is an
 * error (the caller treats it as "unknown", never "good").
 * Threading: pure functions; safe from any thread.
 */
#ifndef CERTMAP_OCSP_H
#define CERTMAP_OCSP_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "certmap/util.h"

enum cm_ocsp_status { CM_OCSP_GOOD, CM_OCSP_REVOKED, CM_OCSP_UNKNOWN };

struct cm_ocsp_answer {
	enum cm_ocsp_status status; /* certStatus of our CertID */
	time_t this_update;
	time_t next_update;     /* 0 when the response has none */
	time_t revocation_time; /* REVOKED only */
	int revocation_reason;  /* CRLReason code, -1 when absent */
	char signer[256];       /* "issuer" or the delegated responder's subject */
};

/* DER OCSPRequest for cert (issued by issuer), SHA-1 CertID as RFC 5019
 * profiles, no nonce (answers are cached). 0 or -1 (err). */
int cm_ocsp_request(X509 *cert, X509 *issuer, unsigned char **der, size_t *len, struct cm_err *err);

/* Checks a DER OCSPResponse for cert/issuer as described above. trust: the
 * anchors (a delegated responder cert must chain to them; the response's
 * own certs and `untrusted` may supply intermediates). now: the time of
 * the check. 0 and *out filled, or -1 and err says why (one line, e.g.
 * "signature does not verify", "signer is not authorized by the issuer",
 * "responseStatus unauthorized", "no answer for this certificate",
 * "stale: nextUpdate 2026-…", "not DER"). */
int cm_ocsp_check(const unsigned char *der, size_t len, X509 *cert, X509 *issuer, X509_STORE *trust,
		  STACK_OF(X509) *untrusted, time_t now, struct cm_ocsp_answer *out,
		  struct cm_err *err);

/* OCSP responder URLs from the AIA extension (http:// and others as
 * written), NULL-terminated malloc'd array of malloc'd strings, or NULL
 * when none. Free with cm_strv_free. */
char **cm_ocsp_aia_urls(X509 *cert);

#endif
