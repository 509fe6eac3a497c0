#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "certmap/revocation.h"
#include "fixtures.h"

#define T_2026 1795305600

struct row {
	const char *cert;
	const char *chain;
	const char *crls[3];
	enum cm_revocation_mode mode;
	enum cm_reason want;
};

static const struct row rows[] = {
	{"judy-revoked.pem", NULL, {"issuing-ca.crl.pem"}, CM_REVOCATION_HARD, CM_REASON_REVOKED},
	{"judy-revoked.pem", NULL, {"issuing-ca.crl.pem"}, CM_REVOCATION_SOFT, CM_REASON_REVOKED},
	{"judy-revoked.pem", NULL, {"issuing-ca.crl.pem"}, CM_REVOCATION_OFF, CM_REASON_ALLOWED},
	/* A stale CRL that lists the certificate still means revoked. */
	{"judy-revoked.pem",
	 NULL,
	 {"issuing-ca-stale.crl.pem"},
	 CM_REVOCATION_SOFT,
	 CM_REASON_REVOKED},
	{"judy-revoked.pem",
	 NULL,
	 {"issuing-ca-stale.crl.pem"},
	 CM_REVOCATION_HARD,
	 CM_REASON_REVOKED},
	{"alice.pem", NULL, {"issuing-ca.crl.pem"}, CM_REVOCATION_HARD, CM_REASON_ALLOWED},
	{"alice.pem",
	 NULL,
	 {"issuing-ca-stale.crl.pem"},
	 CM_REVOCATION_HARD,
	 CM_REASON_REVOCATION_UNKNOWN},
	{"alice.pem", NULL, {"issuing-ca-stale.crl.pem"}, CM_REVOCATION_SOFT, CM_REASON_ALLOWED},
	{"alice.pem", NULL, {NULL}, CM_REVOCATION_HARD, CM_REASON_REVOCATION_UNKNOWN},
	{"alice.pem", NULL, {NULL}, CM_REVOCATION_SOFT, CM_REASON_ALLOWED},
	/* A CRL of another issuer says nothing about alice. */
	{"alice.pem",
	 NULL,
	 {"sub-ca.crl.pem", "root-ca.crl.pem"},
	 CM_REVOCATION_HARD,
	 CM_REASON_REVOCATION_UNKNOWN},
	/* Revoked wins over good from another source. */
	{"judy-revoked.pem",
	 NULL,
	 {"issuing-ca.crl.pem", "issuing-ca-stale.crl.pem"},
	 CM_REVOCATION_HARD,
	 CM_REASON_REVOKED},
	/* Every non-anchor certificate of the path needs a current answer. */
	{"ivan.pem",
	 "ivan-chain.pem",
	 {"issuing-ca.crl.pem"},
	 CM_REVOCATION_HARD,
	 CM_REASON_REVOCATION_UNKNOWN},
	{"ivan.pem",
	 "ivan-chain.pem",
	 {"sub-ca.crl.pem"},
	 CM_REVOCATION_HARD,
	 CM_REASON_REVOCATION_UNKNOWN},
	{"ivan.pem",
	 "ivan-chain.pem",
	 {"sub-ca.crl.pem", "issuing-ca.crl.pem"},
	 CM_REVOCATION_HARD,
	 CM_REASON_ALLOWED},
	{"ivan.pem", "ivan-chain.pem", {"sub-ca.crl.pem"}, CM_REVOCATION_SOFT, CM_REASON_ALLOWED},
};

static enum cm_reason run(const char *cert_name, const char *chain_name,
			  const char *const *crl_names, const char *extra_crl,
			  enum cm_revocation_mode mode, char **detail, struct cm_trace *trace)
{
	char buf[5][512];
	char *anchors = fixture_path(buf[0], sizeof(buf[0]), "issuing-ca.pem");
	char *crl_paths[4];
	size_t n_crls = 0;
	struct cm_trust *trust = NULL;
	struct cm_revstore *set = NULL;
	struct cm_config cfg = {0};
	struct cm_rev_result rr;
	struct cm_der_list list = {0}, chain = {0};
	struct cm_cert *cert = NULL;
	struct cm_err err = {{0}};
	const unsigned char *der[4];
	size_t len[4], n = 0;
	enum cm_reason got;

	for (size_t i = 0; i < 3 && crl_names[i] != NULL; i++)
		crl_paths[n_crls++] = fixture_path(buf[1 + i], sizeof(buf[1 + i]), crl_names[i]);
	if (extra_crl)
		crl_paths[n_crls++] = (char *)extra_crl;
	cr_assert_eq(cm_trust_load(&anchors, 1, &trust, &err), 0, "%s", err.msg);
	cfg.client_certificates.revocation.crl_files.v = crl_paths;
	cfg.client_certificates.revocation.crl_files.n = n_crls;
	cfg.client_certificates.revocation.mode = mode;
	cr_assert_eq(cm_revstore_new(&cfg, &set, &err), 0, "%s", err.msg);
	cr_assert_eq(cm_der_list_read(fixture_path(buf[4], sizeof(buf[4]), cert_name), &list, &err),
		     0);
	der[n] = list.der[0];
	len[n++] = list.len[0];
	if (chain_name) {
		cr_assert_eq(cm_der_list_read(fixture_path(buf[4], sizeof(buf[4]), chain_name),
					      &chain, &err),
			     0);
		der[n] = chain.der[0];
		len[n++] = chain.len[0];
	}
	cr_assert_eq(cm_cert_parse(der, len, n, &cert, &err), 0);
	cr_assert_eq(cm_cert_verify(cert, trust, T_2026, true, trace, NULL), CM_REASON_ALLOWED);
	got = cm_revstore_check(set, NULL, trust, cert, mode, T_2026, trace, detail, &rr);
	cr_assert_eq(got, rr.reason);
	cr_assert_str_eq(rr.status, mode == CM_REVOCATION_OFF             ? "off"
				    : got == CM_REASON_REVOKED            ? "revoked"
				    : got == CM_REASON_REVOCATION_UNKNOWN ? "unknown"
									  : rr.status);
	if (got == CM_REASON_REVOKED)
		cr_assert(strstr(rr.source, "CRL file ") != NULL, "source %s", rr.source);
	cm_cert_free(cert);
	cm_der_list_free(&list);
	cm_der_list_free(&chain);
	cm_revstore_free(set);
	cm_trust_free(trust);
	return got;
}

Test(revocation, table)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct cm_trace trace = {0};
		char *detail = NULL;
		enum cm_reason got = run(rows[i].cert, rows[i].chain, rows[i].crls, NULL,
					 rows[i].mode, &detail, &trace);

		cr_expect_eq(got, rows[i].want, "row %zu (%s): got %s want %s (%s)", i,
			     rows[i].cert, cm_reason_name(got), cm_reason_name(rows[i].want),
			     detail ? detail : "");
		if (got != CM_REASON_ALLOWED)
			cr_expect_not_null(detail, "row %zu has a detail", i);
		free(detail);
		cm_trace_free(&trace);
	}
}

/* A CRL with the issuing CA's name but signed by the rogue CA's key is
 * ignored: it can neither clear nor revoke a certificate. */
Test(revocation, forged_crl_is_ignored)
{
	char tmpl[] = "/tmp/certmap-test-crl-XXXXXX";
	int fd = mkstemp(tmpl);
	FILE *f, *out;
	X509_CRL *crl;
	EVP_PKEY *key;
	const char *none[] = {NULL};
	struct cm_trace trace = {0};
	char *detail = NULL;
	bool said = false;

	cr_assert(fd >= 0);
	f = fopen(FIXTURE("issuing-ca.crl.pem"), "r");
	crl = PEM_read_X509_CRL(f, NULL, NULL, NULL);
	fclose(f);
	f = fopen(FIXTURE("rogue-ca.key"), "r");
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(crl);
	cr_assert_not_null(key);
	cr_assert(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
	out = fdopen(fd, "w");
	PEM_write_X509_CRL(out, crl);
	fclose(out);
	X509_CRL_free(crl);
	EVP_PKEY_free(key);

	cr_expect_eq(run("judy-revoked.pem", NULL, none, tmpl, CM_REVOCATION_HARD, &detail, &trace),
		     CM_REASON_REVOCATION_UNKNOWN);
	for (size_t i = 0; i < trace.n; i++)
		said = said || strstr(trace.lines[i], "signature does not verify") != NULL;
	cr_expect(said, "trace says the forged CRL was ignored");
	free(detail);
	cm_trace_free(&trace);
	detail = NULL;
	cr_expect_eq(run("alice.pem", NULL, none, tmpl, CM_REVOCATION_HARD, &detail, &trace),
		     CM_REASON_REVOCATION_UNKNOWN);
	free(detail);
	cm_trace_free(&trace);
	unlink(tmpl);
}

static struct cm_revstore *store_of(char **paths, size_t n, struct cm_config *cfg,
				    struct cm_err *err)
{
	struct cm_revstore *rs = NULL;

	memset(cfg, 0, sizeof(*cfg));
	cfg->client_certificates.revocation.crl_files.v = paths;
	cfg->client_certificates.revocation.crl_files.n = n;
	cfg->client_certificates.revocation.mode = CM_REVOCATION_HARD;
	if (cm_revstore_new(cfg, &rs, err) != 0)
		return NULL;
	return rs;
}

Test(revocation, load_errors)
{
	struct cm_config cfg;
	struct cm_err err = {{0}};
	char *bad = FIXTURE("alice.pem"), *missing = "/nonexistent.crl";

	cr_assert_null(store_of(&bad, 1, &cfg, &err));
	cr_assert(strstr(err.msg, "alice.pem: not a CRL") != NULL, "%s", err.msg);
	cr_assert_null(store_of(&missing, 1, &cfg, &err));
	cr_assert(strstr(err.msg, "/nonexistent.crl") != NULL, "%s", err.msg);
	cm_revstore_free(store_of(NULL, 0, &cfg, &err));
}

static void copy_file(const char *from, const char *to)
{
	char tmp[600];
	FILE *in = fopen(from, "rb"), *out;
	char buf[4096];
	size_t n;

	snprintf(tmp, sizeof(tmp), "%s.new", to);
	out = fopen(tmp, "wb");
	cr_assert(in != NULL && out != NULL);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		fwrite(buf, 1, n, out);
	fclose(in);
	fclose(out);
	cr_assert_eq(rename(tmp, to), 0); /* as an administrator's script would */
}

static enum cm_reason check_file_store(struct cm_revstore *rs, const char *cert_name, char **src)
{
	char *anchors = FIXTURE("issuing-ca.pem");
	struct cm_trust *trust = NULL;
	struct cm_der_list list = {0};
	struct cm_cert *cert = NULL;
	struct cm_err err = {{0}};
	struct cm_rev_result rr;
	const unsigned char *der[1];
	size_t len[1];
	enum cm_reason got;

	cr_assert_eq(cm_trust_load(&anchors, 1, &trust, &err), 0);
	char buf[512];

	cr_assert_eq(cm_der_list_read(fixture_path(buf, sizeof(buf), cert_name), &list, &err), 0);
	der[0] = list.der[0];
	len[0] = list.len[0];
	cr_assert_eq(cm_cert_parse(der, len, 1, &cert, &err), 0);
	cr_assert_eq(cm_cert_verify(cert, trust, T_2026, true, NULL, NULL), CM_REASON_ALLOWED);
	got = cm_revstore_check(rs, NULL, trust, cert, CM_REVOCATION_HARD, T_2026, NULL, NULL, &rr);
	if (src != NULL)
		*src = strdup(rr.source);
	cm_cert_free(cert);
	cm_der_list_free(&list);
	cm_trust_free(trust);
	return got;
}

static void collect_log(void *arg, const char *line)
{
	char *buf = arg;

	strncat(buf, line, 4000 - strlen(buf));
	strncat(buf, "\n", 4000 - strlen(buf));
}

/* A CRL file replaced on disk counts after the next poll; the epoch moves;
 * a corrupt replacement is refused, logged, and counts as unknown. */
Test(revocation, file_reload)
{
	char dir[] = "/tmp/certmap-test-reload-XXXXXX";
	char path[600], log[4001] = "";
	char *paths[1] = {path};
	struct cm_config cfg;
	struct cm_err err = {{0}};
	struct cm_revstore *rs;
	unsigned long e0, e1;
	FILE *f;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ca.crl", dir);
	copy_file(FIXTURE("sub-ca.crl.pem"), path); /* another issuer's CRL */
	rs = store_of(paths, 1, &cfg, &err);
	cr_assert_not_null(rs, "%s", err.msg);
	cm_revstore_set_log(rs, collect_log, log);
	cr_expect_eq(check_file_store(rs, "judy-revoked.pem", NULL), CM_REASON_REVOCATION_UNKNOWN);
	cr_expect_eq(cm_revstore_poll(rs, NULL, T_2026), 0, "nothing changed yet");
	e0 = cm_revstore_epoch(rs);

	copy_file(FIXTURE("issuing-ca.crl.pem"), path);
	cr_expect_eq(cm_revstore_poll(rs, NULL, T_2026), 1);
	e1 = cm_revstore_epoch(rs);
	cr_expect_neq(e0, e1, "epoch moves on a reload");
	cr_expect(strstr(log, "reloaded") != NULL, "log: %s", log);
	cr_expect_eq(check_file_store(rs, "judy-revoked.pem", NULL), CM_REASON_REVOKED);
	cr_expect_eq(check_file_store(rs, "alice.pem", NULL), CM_REASON_ALLOWED);

	f = fopen(path, "w");
	fputs("-----BEGIN X509 CRL-----\nnot base64 at all\n-----END X509 CRL-----\n", f);
	fclose(f);
	cr_expect_eq(cm_revstore_poll(rs, NULL, T_2026), 1);
	cr_expect(strstr(log, "refused") != NULL, "log: %s", log);
	cr_expect_eq(check_file_store(rs, "alice.pem", NULL), CM_REASON_REVOCATION_UNKNOWN,
		     "a corrupt CRL is never good");
	cm_revstore_free(rs);
	unlink(path);
	rmdir(dir);
}
