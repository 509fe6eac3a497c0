/*
 * x509 — DER chain → verified client identity (OpenSSL), DESIGN §6.
 * Takes bytes, never a TLS session. Order of checks as in DESIGN §3:
 * trust (chain, signatures) → validity → EKU/KU. Revocation is revocation.c.
 * Trust anchors are every certificate in the trusted_issuers files (partial
 * chains allowed); intermediates may come from the client; a self-signed
 * certificate from the client is never an anchor.
 * Threading: a struct cm_trust is immutable after load and may be used by
 * many threads at once; a struct cm_cert belongs to one decision.
 */
#ifndef CERTMAP_X509_H
#define CERTMAP_X509_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "certmap/decision.h"
#include "certmap/trace.h"
#include "certmap/util.h"

#define CM_X509_MAX_CHAIN 10                 /* certificates accepted from a client */
#define CM_X509_MAX_CERT_BYTES (64u * 1024u) /* one certificate's DER */

struct cm_trust;
struct cm_cert;

/* What logs and JSON say about a certificate (DESIGN §5 formats). */
struct cm_cert_summary {
	char sha256[65];     /* lowercase hex of the leaf DER */
	char *subject;       /* RFC 4514 */
	char *issuer;        /* RFC 4514 */
	char *serial;        /* lowercase hex */
	char not_before[21]; /* ISO 8601 UTC, "2026-11-22T10:00:00Z" */
	char not_after[21];
};

/* Loads every certificate of every PEM file as an anchor. Errors name the file. */
int cm_trust_load(char *const *files, size_t n, struct cm_trust **out, struct cm_err *err);
void cm_trust_free(struct cm_trust *trust);
/* True when cert (DER-equal) is one of the anchors. */
bool cm_trust_is_anchor(const struct cm_trust *trust, X509 *cert);
/* The anchors as an X509_STORE (borrowed; read-only use). */
X509_STORE *cm_trust_store(const struct cm_trust *trust);

/* Parses a client chain, leaf first. Fails (untrusted) on malformed DER,
 * trailing bytes, more than CM_X509_MAX_CHAIN or oversized certificates. */
int cm_cert_parse(const unsigned char *const *der, const size_t *len, size_t n,
		  struct cm_cert **out, struct cm_err *err);
void cm_cert_free(struct cm_cert *cert);

/* Reads a PEM (one or more certificates) or DER file into a DER list.
 * -1 with err when unreadable or when it holds no certificate; the list is
 * freed with cm_der_list_free(). */
struct cm_der_list {
	unsigned char **der;
	size_t *len;
	size_t n;
};
int cm_der_list_read(const char *path, struct cm_der_list *out, struct cm_err *err);
void cm_der_list_free(struct cm_der_list *list);

/* Verifies trust, validity and (when require_eku) EKU/KU at time now.
 * Returns ALLOWED, UNTRUSTED, EXPIRED or NOT_YET_VALID; fills *detail (static
 * or in trace) and adds "x509: …" trace lines. After ALLOWED the verified
 * path is available from cm_cert_path(). */
enum cm_reason cm_cert_verify(struct cm_cert *cert, const struct cm_trust *trust, time_t now,
			      bool require_eku, struct cm_trace *trace, char **detail);

const struct cm_cert_summary *cm_cert_summary(const struct cm_cert *cert);
const unsigned char *cm_cert_der(const struct cm_cert *cert, size_t *len);
X509 *cm_cert_leaf(const struct cm_cert *cert); /* borrowed */
/* The verified path, leaf first, anchor last; NULL before a successful
 * verify. Borrowed: lives as long as cert. */
STACK_OF(X509) *cm_cert_path(const struct cm_cert *cert);

/* malloc'd decimal serial (for RFC 4523 assertions). */
char *cm_cert_serial_decimal(const struct cm_cert *cert);
/* malloc'd UPN from the SAN otherName 1.3.6.1.4.1.311.20.2.3, or NULL. */
char *cm_cert_upn(const struct cm_cert *cert);
/* malloc'd first rfc822Name from the SAN, or NULL. */
char *cm_cert_email(const struct cm_cert *cert);

/* RFC 4514 string of a name (UTF-8 kept); malloc'd. */
char *cm_x509_name_string(const X509_NAME *name);
/* ISO 8601 UTC of an ASN1_TIME into out[21]; "" when unparseable. */
void cm_x509_time_iso(const ASN1_TIME *t, char out[21]);

#endif
