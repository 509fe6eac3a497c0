/*
 * x509 — client chain → verified identity (include/certmap/x509.h).
 *
 * Verification is OpenSSL's X509_verify_cert with a callback that records
 * every error and lets the walk continue, so that all problems of a chain
 * are known and classified in DESIGN §3's order: anything about trust
 * (issuer, signature, CA constraints, malformed or critical extensions) is
 * untrusted; otherwise a time error is expired / not_yet_valid. EKU/KU are
 * checked by us afterwards (OpenSSL's sslclient purpose refuses
 * anyExtendedKeyUsage, which Windows accepts). Any error recorded denies,
 * whatever X509_verify_cert returned.
 * Invariants: a struct cm_trust is immutable after load (an X509_STORE is
 * safe for concurrent verification); a struct cm_cert is one decision's.
 */
#include "certmap/x509.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define MAX_VERIFY_ERRORS 16
#define MAX_CERT_FILE_BYTES (1024u * 1024u)
#define UPN_OID "1.3.6.1.4.1.311.20.2.3"

struct cm_trust {
	X509_STORE *store;
	STACK_OF(X509) *anchors;
};

struct cm_cert {
	X509 *leaf;
	STACK_OF(X509) *extra; /* client-supplied intermediates */
	STACK_OF(X509) *path;  /* after a successful verify */
	unsigned char *der;
	size_t der_len;
	struct cm_cert_summary summary;
};

/* ---- names, times, summary ---- */

char *cm_x509_name_string(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL, *out = NULL;
	long len;

	if (bio == NULL)
		return NULL;
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
		len = BIO_get_mem_data(bio, &data);
		if (len >= 0)
			out = cm_memdup_str(data, (size_t)len);
	}
	BIO_free(bio);
	return out;
}

void cm_x509_time_iso(const ASN1_TIME *t, char out[21])
{
	struct tm tm;

	out[0] = '\0';
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return;
	if (strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		out[0] = '\0';
}

static char *serial_hex(const X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex, *out = NULL;

	if (bn == NULL)
		return NULL;
	hex = BN_bn2hex(bn);
	if (hex != NULL) {
		out = strdup(hex);
		for (char *p = out; p != NULL && *p != '\0'; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
		OPENSSL_free(hex);
	}
	BN_free(bn);
	return out;
}

static int fill_summary(struct cm_cert *cert)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	struct cm_cert_summary *s = &cert->summary;

	if (EVP_Digest(cert->der, cert->der_len, md, &md_len, EVP_sha256(), NULL) != 1)
		return -1;
	cm_hex_lower(md, md_len, s->sha256);
	s->subject = cm_x509_name_string(X509_get_subject_name(cert->leaf));
	s->issuer = cm_x509_name_string(X509_get_issuer_name(cert->leaf));
	s->serial = serial_hex(cert->leaf);
	cm_x509_time_iso(X509_get0_notBefore(cert->leaf), s->not_before);
	cm_x509_time_iso(X509_get0_notAfter(cert->leaf), s->not_after);
	if (s->subject == NULL || s->issuer == NULL || s->serial == NULL)
		return -1;
	return 0;
}

/* ---- trust anchors ---- */

static void openssl_error_text(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, len, "no certificate found");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
}

int cm_trust_load(char *const *files, size_t n, struct cm_trust **out, struct cm_err *err)
{
	struct cm_trust *trust = calloc(1, sizeof(*trust));
	unsigned char *data = NULL;
	size_t len = 0;

	*out = NULL;
	if (trust == NULL || (trust->store = X509_STORE_new()) == NULL ||
	    (trust->anchors = sk_X509_new_null()) == NULL) {
		cm_err_set(err, "out of memory");
		goto fail;
	}
	if (n == 0) {
		cm_err_set(err, "no trusted issuer configured");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		BIO *bio;
		X509 *x;
		size_t found = 0;

		if (cm_file_read(files[i], MAX_CERT_FILE_BYTES, &data, &len, err) != 0)
			goto fail;
		bio = BIO_new_mem_buf(data, (int)len);
		if (bio == NULL) {
			cm_err_set(err, "out of memory");
			goto fail;
		}
		while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
			if (X509_STORE_add_cert(trust->store, x) != 1 ||
			    !sk_X509_push(trust->anchors, x)) {
				X509_free(x);
				BIO_free(bio);
				cm_err_set(err, "%s: cannot add certificate %zu", files[i],
					   found + 1);
				goto fail;
			}
			found++;
		}
		ERR_clear_error();
		BIO_free(bio);
		if (found == 0) {
			const unsigned char *p = data;

			x = d2i_X509(NULL, &p, (long)len);
			if (x != NULL && p == data + len &&
			    X509_STORE_add_cert(trust->store, x) == 1 &&
			    sk_X509_push(trust->anchors, x)) {
				found = 1;
			} else {
				char msg[128];

				X509_free(x);
				openssl_error_text(msg, sizeof(msg));
				cm_err_set(err, "%s: no certificate in PEM or DER form (%s)",
					   files[i], msg);
				goto fail;
			}
		}
		free(data);
		data = NULL;
	}
	*out = trust;
	return 0;
fail:
	free(data);
	cm_trust_free(trust);
	return -1;
}

void cm_trust_free(struct cm_trust *trust)
{
	if (trust == NULL)
		return;
	X509_STORE_free(trust->store);
	sk_X509_pop_free(trust->anchors, X509_free);
	free(trust);
}

X509_STORE *cm_trust_store(const struct cm_trust *trust)
{
	return trust->store;
}

bool cm_trust_is_anchor(const struct cm_trust *trust, X509 *cert)
{
	for (int i = 0; i < sk_X509_num(trust->anchors); i++)
		if (X509_cmp(sk_X509_value(trust->anchors, i), cert) == 0)
			return true;
	return false;
}

/* ---- parsing client input ---- */

static X509 *parse_one(const unsigned char *der, size_t len, size_t index, struct cm_err *err)
{
	const unsigned char *p = der;
	X509 *x;

	if (len == 0) {
		cm_err_set(err, "certificate %zu is empty", index);
		return NULL;
	}
	if (len > CM_X509_MAX_CERT_BYTES) {
		cm_err_set(err, "certificate %zu is %zu bytes (limit %u)", index, len,
			   CM_X509_MAX_CERT_BYTES);
		return NULL;
	}
	x = d2i_X509(NULL, &p, (long)len);
	if (x == NULL) {
		char msg[128];

		openssl_error_text(msg, sizeof(msg));
		cm_err_set(err, "certificate %zu is not valid DER: %s", index, msg);
		return NULL;
	}
	if (p != der + len) {
		cm_err_set(err, "certificate %zu has %zu trailing bytes", index,
			   (size_t)(der + len - p));
		X509_free(x);
		return NULL;
	}
	/* Force extension parsing now; broken extensions are untrusted later. */
	(void)X509_get_extension_flags(x);
	return x;
}

int cm_cert_parse(const unsigned char *const *der, const size_t *len, size_t n,
		  struct cm_cert **out, struct cm_err *err)
{
	struct cm_cert *cert;

	*out = NULL;
	if (n == 0) {
		cm_err_set(err, "no certificate");
		return -1;
	}
	if (n > CM_X509_MAX_CHAIN) {
		cm_err_set(err, "chain of %zu certificates (limit %d)", n, CM_X509_MAX_CHAIN);
		return -1;
	}
	cert = calloc(1, sizeof(*cert));
	if (cert == NULL || (cert->extra = sk_X509_new_null()) == NULL) {
		cm_err_set(err, "out of memory");
		goto fail;
	}
	cert->leaf = parse_one(der[0], len[0], 0, err);
	if (cert->leaf == NULL)
		goto fail;
	for (size_t i = 1; i < n; i++) {
		X509 *x = parse_one(der[i], len[i], i, err);

		if (x == NULL)
			goto fail;
		if (!sk_X509_push(cert->extra, x)) {
			X509_free(x);
			cm_err_set(err, "out of memory");
			goto fail;
		}
	}
	cert->der = malloc(len[0]);
	if (cert->der == NULL) {
		cm_err_set(err, "out of memory");
		goto fail;
	}
	memcpy(cert->der, der[0], len[0]);
	cert->der_len = len[0];
	if (fill_summary(cert) != 0) {
		cm_err_set(
			err,
			"cannot describe the certificate (subject, issuer or serial unreadable)");
		goto fail;
	}
	*out = cert;
	return 0;
fail:
	cm_cert_free(cert);
	return -1;
}

void cm_cert_free(struct cm_cert *cert)
{
	if (cert == NULL)
		return;
	X509_free(cert->leaf);
	sk_X509_pop_free(cert->extra, X509_free);
	sk_X509_pop_free(cert->path, X509_free);
	free(cert->der);
	free(cert->summary.subject);
	free(cert->summary.issuer);
	free(cert->summary.serial);
	free(cert);
}

/* Finds the next "-----BEGIN CERTIFICATE-----" block; PEM_read_bio skips
 * other block types for us. */
int cm_der_list_read(const char *path, struct cm_der_list *out, struct cm_err *err)
{
	unsigned char *data = NULL;
	size_t len = 0;
	BIO *bio = NULL;

	memset(out, 0, sizeof(*out));
	if (cm_file_read(path, MAX_CERT_FILE_BYTES, &data, &len, err) != 0)
		return -1;
	if (memmem(data, len, "-----BEGIN", 10) != NULL) {
		char *name = NULL, *header = NULL;
		unsigned char *body = NULL;
		long blen = 0;

		bio = BIO_new_mem_buf(data, (int)len);
		if (bio == NULL)
			goto oom;
		while (PEM_read_bio(bio, &name, &header, &body, &blen) == 1) {
			if (strcmp(name, PEM_STRING_X509) == 0 ||
			    strcmp(name, PEM_STRING_X509_OLD) == 0) {
				unsigned char **d = realloc(out->der, (out->n + 1) * sizeof(*d));
				size_t *l = d ? realloc(out->len, (out->n + 1) * sizeof(*l)) : NULL;

				if (d != NULL)
					out->der = d;
				if (l == NULL) {
					OPENSSL_free(name);
					OPENSSL_free(header);
					OPENSSL_free(body);
					goto oom;
				}
				out->len = l;
				out->der[out->n] = malloc(blen > 0 ? (size_t)blen : 1);
				if (out->der[out->n] == NULL) {
					OPENSSL_free(name);
					OPENSSL_free(header);
					OPENSSL_free(body);
					goto oom;
				}
				memcpy(out->der[out->n], body, (size_t)blen);
				out->len[out->n++] = (size_t)blen;
			}
			OPENSSL_free(name);
			OPENSSL_free(header);
			OPENSSL_free(body);
			name = header = NULL;
			body = NULL;
			if (out->n >= CM_X509_MAX_CHAIN + 1)
				break;
		}
		ERR_clear_error();
		BIO_free(bio);
		bio = NULL;
	}
	if (out->n == 0) {
		/* Not PEM certificates: hand the bytes over as one DER blob; the
		 * parser decides (a non-certificate is untrusted, not an error). */
		out->der = malloc(sizeof(*out->der));
		out->len = malloc(sizeof(*out->len));
		if (out->der == NULL || out->len == NULL)
			goto oom;
		out->der[0] = data;
		out->len[0] = len;
		out->n = 1;
		return 0;
	}
	free(data);
	return 0;
oom:
	BIO_free(bio);
	free(data);
	cm_der_list_free(out);
	cm_err_set(err, "%s: out of memory", path);
	return -1;
}

void cm_der_list_free(struct cm_der_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->n; i++)
		free(list->der[i]);
	free(list->der);
	free(list->len);
	memset(list, 0, sizeof(*list));
}

/* ---- verification ---- */

struct verify_errors {
	int n;
	int code[MAX_VERIFY_ERRORS];
	int depth[MAX_VERIFY_ERRORS];
};

static int collect_cb(int ok, X509_STORE_CTX *ctx)
{
	struct verify_errors *ve;

	if (ok)
		return 1;
	ve = X509_STORE_CTX_get_app_data(ctx);
	if (ve == NULL)
		return 0; /* cannot record: stop at the first error */
	if (ve->n < MAX_VERIFY_ERRORS) {
		ve->code[ve->n] = X509_STORE_CTX_get_error(ctx);
		ve->depth[ve->n] = X509_STORE_CTX_get_error_depth(ctx);
	}
	ve->n++;
	return 1; /* keep walking: every error is recorded, any error denies */
}

static bool is_time_error(int code)
{
	return code == X509_V_ERR_CERT_HAS_EXPIRED || code == X509_V_ERR_CERT_NOT_YET_VALID;
}

static bool eku_allows_client_auth(X509 *x)
{
	uint32_t xku = X509_get_extended_key_usage(x);

	if (!(X509_get_extension_flags(x) & EXFLAG_XKUSAGE))
		return true; /* no EKU extension: every purpose, as on Windows */
	return (xku & (XKU_SSL_CLIENT | XKU_ANYEKU)) != 0;
}

static bool ku_allows_signature(X509 *x)
{
	if (!(X509_get_extension_flags(x) & EXFLAG_KUSAGE))
		return true;
	return (X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE) != 0;
}

static void set_detail(char **detail, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_detail(char **detail, const char *fmt, ...)
{
	va_list ap;

	if (detail == NULL || *detail != NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(detail, fmt, ap) < 0)
		*detail = NULL;
	va_end(ap);
}

enum cm_reason cm_cert_verify(struct cm_cert *cert, const struct cm_trust *trust, time_t now,
			      bool require_eku, struct cm_trace *trace, char **detail)
{
	struct verify_errors ve = {0};
	X509_STORE_CTX *ctx = NULL;
	X509_VERIFY_PARAM *param;
	enum cm_reason reason = CM_REASON_UNTRUSTED;
	const char *issuer = cert->summary.issuer;
	int rc, first_trust = -1, first_time = -1;

	if (cm_trust_is_anchor(trust, cert->leaf)) {
		cm_trace_add(
			trace,
			"x509: the certificate is itself a trust anchor, not a client certificate");
		set_detail(detail, "the certificate %s is a trust anchor (depth %d)",
			   cert->summary.subject, 0);
		goto out;
	}
	if (X509_check_ca(cert->leaf) != 0) {
		cm_trace_add(trace,
			     "x509: the certificate is a CA certificate, not a client certificate");
		set_detail(detail, "%s is a CA certificate (depth %d)", cert->summary.subject, 0);
		goto out;
	}
	ctx = X509_STORE_CTX_new();
	if (ctx == NULL || X509_STORE_CTX_init(ctx, trust->store, cert->leaf, cert->extra) != 1) {
		cm_trace_add(trace, "x509: cannot set up verification (out of memory)");
		goto out;
	}
	param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
	X509_VERIFY_PARAM_set_time(param, now);
	X509_VERIFY_PARAM_set_depth(param, CM_X509_MAX_CHAIN);
	X509_STORE_CTX_set_app_data(ctx, &ve);
	X509_STORE_CTX_set_verify_cb(ctx, collect_cb);
	rc = X509_verify_cert(ctx);
	ERR_clear_error();
	if (rc != 1 && ve.n == 0) {
		ve.code[0] = X509_STORE_CTX_get_error(ctx);
		ve.depth[0] = X509_STORE_CTX_get_error_depth(ctx);
		if (ve.code[0] == X509_V_OK)
			ve.code[0] = X509_V_ERR_UNSPECIFIED;
		ve.n = 1;
	}
	for (int i = 0; i < ve.n && i < MAX_VERIFY_ERRORS; i++) {
		cm_trace_add(trace, "x509: depth %d: %s", ve.depth[i],
			     X509_verify_cert_error_string(ve.code[i]));
		if (is_time_error(ve.code[i])) {
			if (first_time < 0)
				first_time = i;
		} else if (first_trust < 0) {
			first_trust = i;
		}
	}
	if (ve.n > MAX_VERIFY_ERRORS)
		cm_trace_add(trace, "x509: %d more errors", ve.n - MAX_VERIFY_ERRORS);
	if (first_trust >= 0) {
		cm_trace_add(trace, "x509: chain to %s failed", issuer);
		if (detail != NULL && *detail == NULL)
			*detail = cm_strdup_printf(
				"chain to %s failed: %s (depth %d)", issuer,
				X509_verify_cert_error_string(ve.code[first_trust]),
				ve.depth[first_trust]);
		goto out;
	}
	if (first_time >= 0) {
		reason = ve.code[first_time] == X509_V_ERR_CERT_HAS_EXPIRED
				 ? CM_REASON_EXPIRED
				 : CM_REASON_NOT_YET_VALID;
		if (ve.depth[first_time] == 0)
			set_detail(detail, "%s (valid %s to %s)",
				   X509_verify_cert_error_string(ve.code[first_time]),
				   cert->summary.not_before, cert->summary.not_after);
		else
			set_detail(detail, "%s (issuer certificate at depth %d)",
				   X509_verify_cert_error_string(ve.code[first_time]),
				   ve.depth[first_time]);
		goto out;
	}
	cert->path = X509_STORE_CTX_get1_chain(ctx);
	if (cert->path == NULL || sk_X509_num(cert->path) < 1) {
		cm_trace_add(trace, "x509: no verified path");
		goto out;
	}
	{
		X509 *top = sk_X509_value(cert->path, sk_X509_num(cert->path) - 1);
		char *anchor = cm_x509_name_string(X509_get_subject_name(top));

		cm_trace_add(trace, "x509: chain to %s verified (%d certificates)",
			     anchor ? anchor : "?", sk_X509_num(cert->path));
		free(anchor);
	}
	if (require_eku) {
		/* Leaf and every intermediate (not the anchor): an EKU extension
		 * must allow client authentication; the leaf's KeyUsage must
		 * allow digitalSignature. */
		for (int i = 0; i < sk_X509_num(cert->path); i++) {
			X509 *x = sk_X509_value(cert->path, i);

			if (cm_trust_is_anchor(trust, x))
				break;
			if (!eku_allows_client_auth(x)) {
				cm_trace_add(
					trace,
					"x509: depth %d: extended key usage does not allow client authentication",
					i);
				set_detail(
					detail,
					"%s: extended key usage does not allow client authentication (depth %d)",
					cert->summary.subject, i);
				goto out;
			}
		}
		if (!ku_allows_signature(cert->leaf)) {
			cm_trace_add(trace, "x509: key usage does not allow digitalSignature");
			set_detail(detail,
				   "%s: key usage does not allow digitalSignature (depth %d)",
				   cert->summary.subject, 0);
			goto out;
		}
		cm_trace_add(trace, "x509: extended key usage allows client authentication");
	}
	reason = CM_REASON_ALLOWED;
out:
	X509_STORE_CTX_free(ctx);
	if (reason != CM_REASON_ALLOWED && cert->path != NULL) {
		sk_X509_pop_free(cert->path, X509_free);
		cert->path = NULL;
	}
	return reason;
}

/* ---- accessors ---- */

const struct cm_cert_summary *cm_cert_summary(const struct cm_cert *cert)
{
	return &cert->summary;
}

const unsigned char *cm_cert_der(const struct cm_cert *cert, size_t *len)
{
	*len = cert->der_len;
	return cert->der;
}

X509 *cm_cert_leaf(const struct cm_cert *cert)
{
	return cert->leaf;
}

STACK_OF(X509) *cm_cert_path(const struct cm_cert *cert)
{
	return cert->path;
}

char *cm_cert_serial_decimal(const struct cm_cert *cert)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert->leaf), NULL);
	char *dec, *out = NULL;

	if (bn == NULL)
		return NULL;
	dec = BN_bn2dec(bn);
	if (dec != NULL) {
		out = strdup(dec);
		OPENSSL_free(dec);
	}
	BN_free(bn);
	return out;
}

static char *san_find(const struct cm_cert *cert, bool want_upn)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert->leaf, NID_subject_alt_name, NULL, NULL);
	ASN1_OBJECT *upn_oid = want_upn ? OBJ_txt2obj(UPN_OID, 1) : NULL;
	char *out = NULL;

	for (int i = 0; names != NULL && out == NULL && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const ASN1_STRING *s = NULL;

		if (want_upn && gn->type == GEN_OTHERNAME && upn_oid != NULL &&
		    OBJ_cmp(gn->d.otherName->type_id, upn_oid) == 0 &&
		    gn->d.otherName->value->type == V_ASN1_UTF8STRING)
			s = gn->d.otherName->value->value.utf8string;
		else if (!want_upn && gn->type == GEN_EMAIL)
			s = gn->d.rfc822Name;
		if (s != NULL) {
			const unsigned char *d = ASN1_STRING_get0_data(s);
			size_t l = (size_t)ASN1_STRING_length(s);

			if (memchr(d, '\0', l) == NULL) /* embedded NULs: ignore the name */
				out = cm_memdup_str(d, l);
		}
	}
	ASN1_OBJECT_free(upn_oid);
	GENERAL_NAMES_free(names);
	ERR_clear_error();
	return out;
}

char *cm_cert_upn(const struct cm_cert *cert)
{
	return san_find(cert, true);
}

char *cm_cert_email(const struct cm_cert *cert)
{
	return san_find(cert, false);
}
