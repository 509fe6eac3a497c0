#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "certmap/x509.h"
#include "fixtures.h"

/* One row: certificate (+ chain) against trust anchors at a time → reason. */
struct row {
	const char *cert;
	const char *chain; /* NULL = none */
	const char *anchors;
	bool eku;
	time_t at; /* 0 = 2026-11-22 */
	enum cm_reason want;
};

#define T_2026 1795305600 /* 2026-11-22T00:00:00Z */
#define T_2024 1704067200 /* 2024-01-01 */
#define T_2130 5049561600 /* 2130-01-01 */

static const struct row rows[] = {
	{"alice.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"alice.der", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"alice-chain.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"alice.pem", NULL, "root-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"alice.pem", "issuing-ca.pem", "root-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"alice.pem", NULL, "issuing-ca.pem", true, T_2130, CM_REASON_EXPIRED},
	{"alice.pem", NULL, "issuing-ca.pem", true, T_2024, CM_REASON_NOT_YET_VALID},
	{"carol2.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"ivan.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"ivan.pem", "ivan-chain.pem", "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"ivan.pem", "ivan-chain.pem", "root-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"rogue-alice.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"rogue-alice.pem", "rogue-ca.pem", "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"mallory-selfsigned.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"victor-untrusted.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"victor-untrusted.pem", "other-ca.pem", "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"kim-expired.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_EXPIRED},
	{"leo-notyet.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_NOT_YET_VALID},
	{"mike-serverauth.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"mike-serverauth.pem", NULL, "issuing-ca.pem", false, 0, CM_REASON_ALLOWED},
	{"nina-large.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"oscar-meta.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"serialdup.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"shared.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"judy-revoked.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_ALLOWED},
	{"issuing-ca.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"sub-ca.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"server.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"garbage.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"truncated.der", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
	{"notacert.pem", NULL, "issuing-ca.pem", true, 0, CM_REASON_UNTRUSTED},
};

static enum cm_reason decide(const struct row *r, struct cm_trace *trace, char **detail)
{
	char p1[512], p2[512], p3[512];
	struct cm_der_list list = {0}, chain = {0};
	struct cm_trust *trust = NULL;
	struct cm_cert *cert = NULL;
	struct cm_err err = {{0}};
	char *anchors = fixture_path(p3, sizeof(p3), r->anchors);
	enum cm_reason got = CM_REASON_UNTRUSTED;
	const unsigned char *der[CM_X509_MAX_CHAIN + 2];
	size_t len[CM_X509_MAX_CHAIN + 2], n = 0;

	cr_assert_eq(cm_trust_load(&anchors, 1, &trust, &err), 0, "%s", err.msg);
	cr_assert_eq(cm_der_list_read(fixture_path(p1, sizeof(p1), r->cert), &list, &err), 0, "%s",
		     err.msg);
	if (r->chain)
		cr_assert_eq(cm_der_list_read(fixture_path(p2, sizeof(p2), r->chain), &chain, &err),
			     0);
	for (size_t i = 0; i < list.n; i++, n++) {
		der[n] = list.der[i];
		len[n] = list.len[i];
	}
	for (size_t i = 0; i < chain.n; i++, n++) {
		der[n] = chain.der[i];
		len[n] = chain.len[i];
	}
	if (cm_cert_parse(der, len, n, &cert, &err) == 0) {
		got = cm_cert_verify(cert, trust, r->at ? r->at : T_2026, r->eku, trace, detail);
		if (got == CM_REASON_ALLOWED)
			cr_assert_not_null(cm_cert_path(cert));
		else
			cr_assert_null(cm_cert_path(cert));
	}
	cm_cert_free(cert);
	cm_der_list_free(&list);
	cm_der_list_free(&chain);
	cm_trust_free(trust);
	return got;
}

Test(x509, table)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct cm_trace trace = {0};
		char *detail = NULL;
		enum cm_reason got = decide(&rows[i], &trace, &detail);

		cr_expect_eq(
			got, rows[i].want, "row %zu %s (chain %s, anchors %s): got %s want %s (%s)",
			i, rows[i].cert, rows[i].chain ? rows[i].chain : "-", rows[i].anchors,
			cm_reason_name(got), cm_reason_name(rows[i].want), detail ? detail : "");
		if (got != CM_REASON_ALLOWED && got != CM_REASON_UNTRUSTED)
			cr_expect_not_null(detail, "row %zu has a detail", i);
		free(detail);
		cm_trace_free(&trace);
	}
}

Test(x509, rogue_ca_detail_names_the_issuer)
{
	struct cm_trace trace = {0};
	char *detail = NULL;
	struct row r = {"rogue-alice.pem",  "rogue-ca.pem", "issuing-ca.pem", true, 0,
			CM_REASON_UNTRUSTED};

	cr_assert_eq(decide(&r, &trace, &detail), CM_REASON_UNTRUSTED);
	cr_assert_not_null(detail);
	cr_assert(strstr(detail, "chain to CN=Lab Issuing CA,O=Certmap Lab,C=US failed") != NULL,
		  "%s", detail);
	free(detail);
	cm_trace_free(&trace);
}

Test(x509, summary_formats)
{
	struct cm_der_list list = {0};
	struct cm_cert *cert = NULL;
	struct cm_err err = {{0}};
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len;
	char hex[65];
	const struct cm_cert_summary *s;
	char *dec, *upn, *mail;

	cr_assert_eq(cm_der_list_read(FIXTURE("alice.der"), &list, &err), 0);
	cr_assert_eq(cm_cert_parse((const unsigned char *const *)list.der, list.len, list.n, &cert,
				   &err),
		     0);
	s = cm_cert_summary(cert);
	EVP_Digest(list.der[0], list.len[0], md, &md_len, EVP_sha256(), NULL);
	cm_hex_lower(md, md_len, hex);
	cr_assert_str_eq(s->sha256, hex);
	cr_assert_str_eq(s->subject, "CN=alice,OU=Users,O=Certmap Lab,C=US");
	cr_assert_str_eq(s->issuer, "CN=Lab Issuing CA,O=Certmap Lab,C=US");
	cr_assert_str_eq(s->serial, "3001");
	cr_assert_str_eq(s->not_before, "2025-01-01T00:00:00Z");
	cr_assert_str_eq(s->not_after, "2125-01-01T00:00:00Z");
	dec = cm_cert_serial_decimal(cert);
	cr_assert_str_eq(dec, "12289");
	upn = cm_cert_upn(cert);
	cr_assert_str_eq(upn, "alice@lab.test");
	mail = cm_cert_email(cert);
	cr_assert_str_eq(mail, "alice@lab.test");
	free(dec);
	free(upn);
	free(mail);
	cm_cert_free(cert);
	cm_der_list_free(&list);
}

Test(x509, metacharacters_survive_in_subject)
{
	struct cm_der_list list = {0};
	struct cm_cert *cert = NULL;
	struct cm_err err = {{0}};

	cr_assert_eq(cm_der_list_read(FIXTURE("oscar-meta.pem"), &list, &err), 0);
	cr_assert_eq(cm_cert_parse((const unsigned char *const *)list.der, list.len, list.n, &cert,
				   &err),
		     0);
	cr_assert_str_eq(cm_cert_summary(cert)->subject,
			 "CN=O*scar (test) \\\\ x,OU=Users,O=Certmap Lab,C=US");
	{
		char *upn = cm_cert_upn(cert);

		cr_assert_str_eq(upn, "oscar@lab.test");
		free(upn);
	}
	cm_cert_free(cert);
	cm_der_list_free(&list);
}

Test(x509, parse_limits)
{
	struct cm_der_list list = {0};
	struct cm_cert *cert = NULL;
	struct cm_err err = {{0}};
	const unsigned char *der[CM_X509_MAX_CHAIN + 1];
	size_t len[CM_X509_MAX_CHAIN + 1];
	unsigned char *padded;

	cr_assert_eq(cm_der_list_read(FIXTURE("alice.der"), &list, &err), 0);
	for (int i = 0; i <= CM_X509_MAX_CHAIN; i++) {
		der[i] = list.der[0];
		len[i] = list.len[0];
	}
	cr_assert_eq(cm_cert_parse(der, len, CM_X509_MAX_CHAIN + 1, &cert, &err), -1);
	cr_assert(strstr(err.msg, "limit") != NULL, "%s", err.msg);
	cr_assert_eq(cm_cert_parse(der, len, 0, &cert, &err), -1);
	padded = malloc(list.len[0] + 1);
	memcpy(padded, list.der[0], list.len[0]);
	padded[list.len[0]] = 0;
	der[0] = padded;
	len[0] = list.len[0] + 1;
	cr_assert_eq(cm_cert_parse(der, len, 1, &cert, &err), -1);
	cr_assert(strstr(err.msg, "trailing") != NULL, "%s", err.msg);
	cr_assert_null(cert);
	free(padded);
	cm_der_list_free(&list);
}

Test(x509, trust_load_errors_name_the_file)
{
	struct cm_trust *trust = NULL;
	struct cm_err err = {{0}};
	char *missing = "/nonexistent/ca.pem", *notcert = FIXTURE("notacert.pem");

	cr_assert_eq(cm_trust_load(&missing, 1, &trust, &err), -1);
	cr_assert(strstr(err.msg, "/nonexistent/ca.pem") != NULL, "%s", err.msg);
	cr_assert_eq(cm_trust_load(&notcert, 1, &trust, &err), -1);
	cr_assert(strstr(err.msg, "notacert.pem: no certificate") != NULL, "%s", err.msg);
	cr_assert_null(trust);
}

Test(x509, der_list_reads_pem_bundles)
{
	struct cm_der_list list = {0};
	struct cm_err err = {{0}};

	cr_assert_eq(cm_der_list_read(FIXTURE("ca-bundle.pem"), &list, &err), 0);
	cr_assert_eq(list.n, 2);
	cm_der_list_free(&list);
	cr_assert_eq(cm_der_list_read("/nonexistent.pem", &list, &err), -1);
}
