/*
 * fuzz_ocsp — arbitrary bytes as a DER OCSPResponse about the lab's alice,
 * issued by the lab issuing CA, checked by cm_ocsp_check() with the lab
 * root as the only anchor (ocsp.c). The same bytes are also tried as a DER
 * certificate for cm_ocsp_aia_urls().
 * Check time is fixed at 2100-01-01: the seeds written by make-corpus (with
 * `openssl ocsp`, so thisUpdate is the day they were made) are then current
 * when they carry no nextUpdate, and stale when they do; the fixtures are
 * valid until 2125.
 * Invariants checked: 0 or -1 only; on success a known status, a signer
 * ("issuer" or a control-free subject), times consistent with the check,
 * a CRLReason in range or -1 and a revocation time only when revoked; on
 * failure a non-empty, one-line message; the OpenSSL error queue left
 * empty either way; responder URLs bounded and control-free.
 */
#include <stdbool.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "certmap/ocsp.h"
#include "fuzz_util.h"

#define FIXED_NOW ((time_t)4102444800) /* 2100-01-01T00:00:00Z */
#define SKEW_S 300

static X509 *alice, *issuer;
static X509_STORE *trust;
static STACK_OF(X509) *untrusted;
static bool verbose; /* CERTMAP_FUZZ_VERBOSE=1: print each input's outcome */

static X509 *load(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	if (f == NULL)
		fuzz_setup_fail("%s: %s", path, strerror(errno));
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (x == NULL)
		fuzz_setup_fail("%s: no certificate", path);
	return x;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	X509 *root;

	(void)argc;
	(void)argv;
	verbose = getenv("CERTMAP_FUZZ_VERBOSE") != NULL;
	alice = load(CERTMAP_FUZZ_FIXTURES "/alice.pem");
	issuer = load(CERTMAP_FUZZ_FIXTURES "/issuing-ca.pem");
	root = load(CERTMAP_FUZZ_FIXTURES "/root-ca.pem");
	trust = X509_STORE_new();
	untrusted = sk_X509_new_null();
	if (trust == NULL || untrusted == NULL || !X509_STORE_add_cert(trust, root) ||
	    !sk_X509_push(untrusted, root))
		fuzz_setup_fail("out of memory");
	return 0;
}

static void check_text(const char *what, const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		fuzz_fail("%s has %zu bytes", what, n);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
			fuzz_fail("%s has control byte 0x%02x", what, (unsigned char)s[i]);
}

static void check_answer(const struct cm_ocsp_answer *a)
{
	if (a->status != CM_OCSP_GOOD && a->status != CM_OCSP_REVOKED &&
	    a->status != CM_OCSP_UNKNOWN)
		fuzz_fail("status %d", (int)a->status);
	check_text("signer", a->signer, sizeof(a->signer) - 1);
	if (a->this_update > FIXED_NOW + SKEW_S)
		fuzz_fail("accepted a thisUpdate in the future");
	if (a->next_update != 0 &&
	    (a->next_update <= FIXED_NOW - SKEW_S || a->next_update < a->this_update))
		fuzz_fail("accepted a stale or inverted nextUpdate");
	if (a->status != CM_OCSP_REVOKED && (a->revocation_time != 0 || a->revocation_reason != -1))
		fuzz_fail("revocation details on a status other than revoked");
	if (a->revocation_reason < -1 || a->revocation_reason > 10)
		fuzz_fail("CRLReason %d", a->revocation_reason);
}

static void try_aia(const uint8_t *data, size_t size)
{
	const unsigned char *p = data;
	X509 *x = d2i_X509(NULL, &p, (long)size);
	char **urls;

	if (x == NULL) {
		ERR_clear_error();
		return;
	}
	urls = cm_ocsp_aia_urls(x);
	for (size_t i = 0; urls != NULL && urls[i] != NULL; i++)
		check_text("responder URL", urls[i], 2048);
	if (ERR_peek_error() != 0)
		fuzz_fail("cm_ocsp_aia_urls left the OpenSSL error queue non-empty");
	cm_strv_free(urls);
	X509_free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cm_ocsp_answer a;
	struct cm_err err = {{0}};
	int r;

	memset(&a, 0xa5, sizeof(a));
	r = cm_ocsp_check(data, size, alice, issuer, trust, untrusted, FIXED_NOW, &a, &err);
	if (ERR_peek_error() != 0)
		fuzz_fail("cm_ocsp_check left the OpenSSL error queue non-empty (returned %d)", r);
	if (r == 0)
		check_answer(&a);
	else if (r == -1)
		check_text("error message", err.msg, sizeof(err.msg) - 1);
	else
		fuzz_fail("cm_ocsp_check returned %d", r);
	if (verbose)
		fprintf(stderr, "fuzz_ocsp: %s\n",
			r == 0 ? (a.status == CM_OCSP_GOOD      ? "good"
				  : a.status == CM_OCSP_REVOKED ? "revoked"
								: "unknown")
			       : err.msg);
	try_aia(data, size);
	return 0;
}
