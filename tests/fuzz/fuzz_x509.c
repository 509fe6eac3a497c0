/*
 * fuzz_x509 — a client chain from bytes to a decision: cm_cert_parse(),
 * cm_cert_verify() against the lab issuing CA, cm_revocation_check() (hard)
 * with the lab CRLs, and the identity accessors (x509.c, revocation.c).
 * Input: records of a 2-byte big-endian length and that many DER bytes
 * (the last record takes what is left), leaf first, at most
 * CM_X509_MAX_CHAIN + 1 records (one more than the parser accepts).
 * tests/fuzz/make-corpus writes the fixture chains in this form.
 * Verification time is fixed (2026-01-01) so the fixtures verify and the
 * run does not depend on the clock.
 * Invariants checked: documented results only; ALLOWED means a path from the
 * leaf to an anchor; no path after a failed verify; bounded, control-free
 * trace lines.
 */
#include <stdbool.h>

#include "certmap/revocation.h"
#include "certmap/x509.h"
#include "fuzz_util.h"

#define FIXED_NOW ((time_t)1767225600) /* 2026-01-01T00:00:00Z */
#define MAX_RECORDS (CM_X509_MAX_CHAIN + 1)

static struct cm_trust *trust;
static struct cm_revstore *crls;
static struct cm_config crl_cfg; /* crl_files only: no fetches */
static bool verbose;             /* CERTMAP_FUZZ_VERBOSE=1: print each input's outcome */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char *anchors[] = {CERTMAP_FUZZ_FIXTURES "/issuing-ca.pem"};
	static char *crl_files[] = {CERTMAP_FUZZ_FIXTURES "/issuing-ca.crl.pem",
				    CERTMAP_FUZZ_FIXTURES "/issuing-ca-stale.crl.pem",
				    CERTMAP_FUZZ_FIXTURES "/sub-ca.crl.pem",
				    CERTMAP_FUZZ_FIXTURES "/root-ca.crl.pem"};
	struct cm_err err = {{0}};

	(void)argc;
	(void)argv;
	verbose = getenv("CERTMAP_FUZZ_VERBOSE") != NULL;
	if (cm_trust_load(anchors, 1, &trust, &err) != 0)
		fuzz_setup_fail("trust anchors: %s", err.msg);
	crl_cfg.client_certificates.revocation.mode = CM_REVOCATION_HARD;
	crl_cfg.client_certificates.revocation.crl_files.v = crl_files;
	crl_cfg.client_certificates.revocation.crl_files.n =
		sizeof(crl_files) / sizeof(crl_files[0]);
	if (cm_revstore_new(&crl_cfg, &crls, &err) != 0)
		fuzz_setup_fail("CRLs: %s", err.msg);
	return 0;
}

static void check_trace(const struct cm_trace *trace)
{
	if (trace->n > CM_TRACE_MAX_LINES)
		fuzz_fail("trace has %zu lines (max %d)", trace->n, CM_TRACE_MAX_LINES);
	for (size_t i = 0; i < trace->n; i++) {
		const unsigned char *s = (const unsigned char *)trace->lines[i];
		size_t n = strlen(trace->lines[i]);

		if (n >= CM_TRACE_MAX_LINE_BYTES)
			fuzz_fail("trace line %zu has %zu bytes", i, n);
		for (size_t j = 0; j < n; j++)
			if (s[j] < 0x20 || s[j] == 0x7f)
				fuzz_fail("trace line %zu has control byte 0x%02x", i, s[j]);
	}
}

static void check_serial(const char *dec)
{
	const char *p = dec;

	if (dec == NULL)
		fuzz_fail("cm_cert_serial_decimal returned NULL for a parsed certificate");
	if (*p == '-')
		p++;
	if (*p == '\0')
		fuzz_fail("empty decimal serial");
	for (; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			fuzz_fail("decimal serial \"%s\" has a non-digit", dec);
}

static void check_summary(const struct cm_cert *cert, const unsigned char *der0, size_t len0)
{
	const struct cm_cert_summary *s = cm_cert_summary(cert);
	const unsigned char *der;
	size_t len = 0;

	if (strlen(s->sha256) != 64 || s->subject == NULL || s->issuer == NULL || s->serial == NULL)
		fuzz_fail("incomplete summary of a parsed certificate");
	der = cm_cert_der(cert, &len);
	if (len != len0 || memcmp(der, der0, len) != 0)
		fuzz_fail("cm_cert_der is not the leaf's input bytes");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *der[MAX_RECORDS];
	size_t len[MAX_RECORDS], n = 0, off = 0;
	struct cm_trace trace = {0};
	struct cm_err err = {{0}};
	struct cm_cert *cert = NULL;
	char *detail = NULL, *s;
	struct cm_rev_result rr;
	enum cm_reason r;

	while (off + 2 <= size && n < MAX_RECORDS) {
		size_t l = (size_t)data[off] << 8 | data[off + 1];

		off += 2;
		if (l > size - off)
			l = size - off;
		der[n] = data + off;
		len[n++] = l;
		off += l;
	}

	if (cm_cert_parse(der, len, n, &cert, &err) != 0) {
		if (cert != NULL || err.msg[0] == '\0')
			fuzz_fail("cm_cert_parse failed without a message or left *out set");
		return 0;
	}
	if (n > CM_X509_MAX_CHAIN)
		fuzz_fail("cm_cert_parse accepted %zu certificates (limit %d)", n,
			  CM_X509_MAX_CHAIN);
	check_summary(cert, der[0], len[0]);
	if (cm_cert_path(cert) != NULL)
		fuzz_fail("a path before verification");

	r = cm_cert_verify(cert, trust, FIXED_NOW, true, &trace, &detail);
	if (r != CM_REASON_ALLOWED && r != CM_REASON_UNTRUSTED && r != CM_REASON_EXPIRED &&
	    r != CM_REASON_NOT_YET_VALID)
		fuzz_fail("cm_cert_verify returned reason %d", (int)r);
	if (r == CM_REASON_ALLOWED) {
		STACK_OF(X509) *path = cm_cert_path(cert);
		int depth = path != NULL ? sk_X509_num(path) : 0;

		if (depth < 1)
			fuzz_fail("ALLOWED without a verified path");
		if (X509_cmp(sk_X509_value(path, 0), cm_cert_leaf(cert)) != 0)
			fuzz_fail("the verified path does not start at the leaf");
		if (!cm_trust_is_anchor(trust, sk_X509_value(path, depth - 1)))
			fuzz_fail("the verified path does not end at an anchor");
		if (cm_trust_is_anchor(trust, cm_cert_leaf(cert)))
			fuzz_fail("an anchor was accepted as a client certificate");
	} else if (cm_cert_path(cert) != NULL) {
		fuzz_fail("a path after a failed verification (reason %d)", (int)r);
	}
	if (verbose)
		fprintf(stderr, "fuzz_x509: %s: verify %s (%s)\n", cm_cert_summary(cert)->subject,
			cm_reason_name(r), detail != NULL ? detail : "-");
	free(detail);
	detail = NULL;

	r = cm_revstore_check(crls, NULL, trust, cert, CM_REVOCATION_HARD, FIXED_NOW, &trace,
			      &detail, &rr);
	if (r != CM_REASON_ALLOWED && r != CM_REASON_REVOKED && r != CM_REASON_REVOCATION_UNKNOWN)
		fuzz_fail("cm_revocation_check returned reason %d", (int)r);
	if (r == CM_REASON_ALLOWED && cm_cert_path(cert) == NULL)
		fuzz_fail("hard revocation passed a certificate without a verified path");
	if (verbose)
		fprintf(stderr, "fuzz_x509: revocation %s (%s)\n", cm_reason_name(r),
			detail != NULL ? detail : "-");
	free(detail);

	s = cm_cert_serial_decimal(cert);
	check_serial(s);
	free(s);
	free(cm_cert_upn(cert));
	free(cm_cert_email(cert));

	check_trace(&trace);
	cm_trace_free(&trace);
	cm_cert_free(cert);
	return 0;
}
