/*
 * test_config — cm_config_load against the fixtures in data/config/ and
 * configs written into a temporary directory per test (file modes, missing
 * files). Each error case checks the exact line: file, JSON path, expectation.
 * Criterion forks per test, so the temporary directory below is per test.
 */
#include "certmap/config.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <jansson.h>

#include "certmap/decision.h"
#include "certmap/util.h"

/* ---- helpers ------------------------------------------------------------- */

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Criterion runs each test in a re-executed process, so parameters must not
 * hold pointers into the parent (string literals move with ASLR): tables are
 * static and the parameter is the row index. */
#define TABLE_PARAMS(table)                                            \
	do {                                                           \
		static size_t idx_[N_OF(table)];                       \
		for (size_t i_ = 0; i_ < N_OF(table); i_++)            \
			idx_[i_] = i_;                                 \
		return cr_make_param_array(size_t, idx_, N_OF(table)); \
	} while (0)

static char tmpdir[PATH_MAX]; /* per test (criterion forks); realpath'd */

/* data/config next to this source file, unless the build says otherwise. */
static char *data_dir(void)
{
#ifdef CERTMAP_SOURCE_DIR
	return cm_strdup_printf("%s/tests/unit/data/config", CERTMAP_SOURCE_DIR);
#else
	const char *slash = strrchr(__FILE__, '/');
	int n = slash == NULL ? 1 : (int)(slash - __FILE__);

	return cm_strdup_printf("%.*s/data/config", n, slash == NULL ? "." : __FILE__);
#endif
}

static char *tmp_path(const char *name)
{
	char *p = cm_strdup_printf("%s/%s", tmpdir, name);

	cr_assert_not_null(p);
	return p;
}

static void write_file(const char *name, const char *content, mode_t mode)
{
	char *p = tmp_path(name);
	FILE *f;

	f = fopen(p, "w");
	cr_assert_not_null(f, "fopen %s: %s", p, strerror(errno));
	cr_assert_eq(fwrite(content, 1, strlen(content), f), strlen(content));
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(chmod(p, mode), 0);
	free(p);
}

/* JSON written with single quotes (readable in C), turned into double quotes. */
static char *write_config(const char *name, const char *sq_json)
{
	char *json = strdup(sq_json);

	cr_assert_not_null(json);
	for (char *c = json; *c != '\0'; c++)
		if (*c == '\'')
			*c = '"';
	write_file(name, json, 0644);
	free(json);
	return tmp_path(name);
}

static char *write_config_json(const char *name, json_t *root)
{
	char *p = tmp_path(name);

	cr_assert_eq(json_dump_file(root, p, JSON_INDENT(2)), 0);
	json_decref(root);
	return p;
}

/* Replaces every '@' in s by the temporary directory. */
static char *expand(const char *s)
{
	size_t n = 1;
	char *out, *o;

	for (const char *c = s; *c != '\0'; c++)
		n += *c == '@' ? strlen(tmpdir) : 1;
	out = o = malloc(n);
	cr_assert_not_null(out);
	for (const char *c = s; *c != '\0'; c++) {
		if (*c == '@') {
			memcpy(o, tmpdir, strlen(tmpdir));
			o += strlen(tmpdir);
		} else {
			*o++ = *c;
		}
	}
	*o = '\0';
	return out;
}

static void copy_tree(const char *src, const char *dst)
{
	DIR *d = opendir(src);
	struct dirent *e;

	cr_assert_not_null(d, "opendir %s: %s", src, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		char *s, *t;
		struct stat st;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		s = cm_strdup_printf("%s/%s", src, e->d_name);
		t = cm_strdup_printf("%s/%s", dst, e->d_name);
		cr_assert(s != NULL && t != NULL);
		cr_assert_eq(stat(s, &st), 0);
		if (S_ISDIR(st.st_mode)) {
			cr_assert_eq(mkdir(t, 0755), 0);
			copy_tree(s, t);
		} else {
			unsigned char *buf;
			size_t len;
			struct cm_err err;
			FILE *f;

			cr_assert_eq(cm_file_read(s, 1 << 20, &buf, &len, &err), 0, "%s", err.msg);
			f = fopen(t, "w");
			cr_assert_not_null(f);
			cr_assert_eq(fwrite(buf, 1, len, f), len);
			cr_assert_eq(fclose(f), 0);
			cr_assert_eq(chmod(t, 0644), 0);
			free(buf);
		}
		free(s);
		free(t);
	}
	closedir(d);
}

/* The fixture directory copied into tmpdir, secrets at mode 0600. */
static void stage_fixtures(void)
{
	char *src = data_dir();
	char *key = tmp_path("server.key"), *pw = tmp_path("bind.pw");

	cr_assert_not_null(src);
	copy_tree(src, tmpdir);
	cr_assert_eq(chmod(key, 0600), 0);
	cr_assert_eq(chmod(pw, 0600), 0);
	free(src);
	free(key);
	free(pw);
}

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	char tmpl[PATH_MAX];

	snprintf(tmpl, sizeof(tmpl), "%s/certmap-config-XXXXXX",
		 base != NULL && base[0] != '\0' ? base : "/tmp");
	cr_assert_not_null(mkdtemp(tmpl), "mkdtemp: %s", strerror(errno));
	cr_assert_not_null(realpath(tmpl, tmpdir));
	/* What the inline configs below refer to. */
	write_file("ca.pem", "placeholder\n", 0644);
	write_file("server.pem", "placeholder\n", 0644);
	write_file("server.key", "placeholder\n", 0600);
	write_file("bind.pw", "pw\n", 0600);
	write_file("open.pw", "pw\n", 0644);
	write_file("group.pw", "pw\n", 0620);
	write_file("empty.pw", "\n", 0600);
	{
		char *sub = tmp_path("sub");

		cr_assert_eq(mkdir(sub, 0755), 0);
		free(sub);
	}
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void teardown(void)
{
	if (tmpdir[0] != '\0')
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Loads and asserts failure with exactly the expected lines (each expanded,
 * "FILE" prefix added). */
static void assert_errors(const char *file, enum cm_config_purpose purpose,
			  const char *const *expected, size_t n)
{
	struct cm_config *cfg = (struct cm_config *)1;
	struct cm_config_errors errs;

	cr_assert_eq(cm_config_load(file, purpose, &cfg, &errs), -1);
	cr_assert_null(cfg);
	for (size_t i = 0; i < errs.n && i < n; i++) {
		char *want = expand(expected[i]);
		char *line = cm_strdup_printf("%s: %s", file, want);

		cr_expect_str_eq(errs.lines[i], line, "line %zu:\n  got  %s\n  want %s", i,
				 errs.lines[i], line);
		free(want);
		free(line);
	}
	for (size_t i = n; i < errs.n; i++)
		cr_expect_fail("unexpected extra line: %s", errs.lines[i]);
	cr_assert_eq(errs.n, n, "expected %zu error lines, got %zu", n, errs.n);
	cm_config_errors_free(&errs);
}

static struct cm_config *load_ok(const char *file, enum cm_config_purpose purpose)
{
	struct cm_config *cfg = NULL;
	struct cm_config_errors errs;

	if (cm_config_load(file, purpose, &cfg, &errs) != 0) {
		for (size_t i = 0; i < errs.n; i++)
			cr_log_error("%s", errs.lines[i]);
		cr_assert_fail("%s did not load (%zu errors)", file, errs.n);
	}
	cr_assert_not_null(cfg);
	cr_assert_eq(errs.n, 0);
	cr_assert_null(errs.lines);
	return cfg;
}

TestSuite(config, .init = setup, .fini = teardown);

/* ---- valid configs ------------------------------------------------------- */

Test(config, full_config_every_key)
{
	char *file, *p;
	struct cm_config *cfg;

	stage_fixtures();
	file = tmp_path("full.json");
	cfg = load_ok(file, CM_CONFIG_FOR_DAEMON);

	cr_assert_str_eq(cfg->file, file);
	cr_assert_str_eq(cfg->dir, tmpdir);

	cr_assert_eq(cfg->n_listen, 2);
	cr_assert_str_eq(cfg->listen[0].address, "0.0.0.0");
	cr_assert_eq(cfg->listen[0].port, 8443);
	p = tmp_path("server.pem");
	cr_assert_str_eq(cfg->listen[0].certificate, p);
	free(p);
	p = tmp_path("server.key");
	cr_assert_str_eq(cfg->listen[1].key, p);
	free(p);
	cr_assert_str_eq(cfg->listen[1].address, "::");
	cr_assert_eq(cfg->listen[1].port, 9443);

	cr_assert(cfg->admin.enabled);
	cr_assert_str_eq(cfg->admin.address, "127.0.0.2");
	cr_assert_eq(cfg->admin.port, 9191);

	cr_assert_eq(cfg->client_certificates.trusted_issuers.n, 2);
	p = tmp_path("pki/issuing-ca.pem");
	cr_assert_str_eq(cfg->client_certificates.trusted_issuers.v[0], p);
	free(p);
	p = tmp_path("pki/root-ca.pem");
	cr_assert_str_eq(cfg->client_certificates.trusted_issuers.v[1], p);
	free(p);
	cr_assert_not(cfg->client_certificates.require_client_auth_eku);
	cr_assert_eq(cfg->client_certificates.revocation.mode, CM_REVOCATION_HARD);
	cr_assert_eq(cfg->client_certificates.revocation.crl_files.n, 1);
	p = tmp_path("crl/issuing.crl");
	cr_assert_str_eq(cfg->client_certificates.revocation.crl_files.v[0], p);
	free(p);
	cr_assert(cfg->client_certificates.revocation.fetch_cdp);
	cr_assert(cfg->client_certificates.revocation.ocsp);
	cr_assert_str_eq(cfg->client_certificates.revocation.ocsp_responder,
			 "http://ocsp.lab.test/");
	cr_assert_eq(cfg->client_certificates.revocation.timeout_ms, 1500);

	cr_assert_eq(cfg->n_locations, 3);
	cr_assert_str_eq(cfg->locations[0].path, "/Microsoft-Server-ActiveSync");
	cr_assert_eq(cfg->locations[0].client_certificate, CM_CERT_REQUIRE);
	cr_assert_str_eq(cfg->locations[1].path, "/owa");
	cr_assert_eq(cfg->locations[1].client_certificate, CM_CERT_IGNORE);
	cr_assert_str_eq(cfg->locations[2].path, "/");
	cr_assert_eq(cfg->locations[2].client_certificate, CM_CERT_ACCEPT);

	cr_assert_eq(cfg->directory.uris.n, 2);
	cr_assert_str_eq(cfg->directory.uris.v[0], "ldap://dc1.lab.test");
	cr_assert_str_eq(cfg->directory.uris.v[1], "LDAP://dc2.lab.test:389");
	cr_assert_eq(cfg->directory.dialect, CM_DIALECT_RFC4523);
	cr_assert_str_eq(cfg->directory.base_dn, "OU=Staff,DC=lab,DC=test");
	cr_assert_str_eq(cfg->directory.dns_domain, "lab.test");
	cr_assert_str_eq(cfg->directory.bind_dn, "CN=certmap,CN=Users,DC=lab,DC=test");
	p = tmp_path("bind.pw");
	cr_assert_str_eq(cfg->directory.bind_password_file, p);
	free(p);
	cr_assert_str_eq(cfg->directory.bind_password, "s3cret");
	p = tmp_path("ldap-ca.pem");
	cr_assert_str_eq(cfg->directory.ca_file, p);
	free(p);
	cr_assert(cfg->directory.starttls);
	cr_assert_eq(cfg->directory.timeout_ms, 2500);
	cr_assert_str_eq(cfg->directory.netbios_domain, "LAB");

	cr_assert_eq(cfg->mapping.n_methods, 1);
	cr_assert_eq(cfg->mapping.methods[0], CM_METHOD_USER_CERTIFICATE);
	cr_assert_eq(cfg->mapping.on_ambiguous, CM_AMBIGUOUS_BASIC_USER);

	cr_assert_eq(cfg->authorization.required_groups.n, 2);
	cr_assert_str_eq(cfg->authorization.required_groups.v[0],
			 "CN=ActiveSync Users,CN=Users,DC=lab,DC=test");
	cr_assert_str_eq(cfg->authorization.required_groups.v[1], "CN=Staff,DC=lab,DC=test");
	cr_assert_not(cfg->authorization.check_account_state);
	cr_assert_eq(cfg->authorization.basic_user_binding, CM_BASIC_IF_PRESENT);

	cr_assert(cfg->upstream.present);
	cr_assert_str_eq(cfg->upstream.url, "https://exchange.lab.test");
	p = tmp_path("upstream-ca.pem");
	cr_assert_str_eq(cfg->upstream.ca_file, p);
	free(p);
	cr_assert_not(cfg->upstream.verify);
	cr_assert_eq(cfg->upstream.identity, CM_IDENTITY_HEADERS);
	cr_assert_eq(cfg->upstream.timeout_s, 7200);

	cr_assert_eq(cfg->cache.ttl_s, 60);
	cr_assert_eq(cfg->cache.negative_ttl_s, 0);
	cr_assert_eq(cfg->cache.max_entries, 5000);

	p = tmp_path("logs/access.log"); /* resolved, need not exist */
	cr_assert_str_eq(cfg->logging.access_log, p);
	free(p);
	cr_assert_str_eq(cfg->logging.audit_log, "/var/log/certmap/audit.jsonl");

	cr_assert_eq(cfg->errors, CM_ERRORS_DETAILED);
	cr_assert_str_eq(cfg->user, "certmap");

	cm_config_free(cfg);
	free(file);
}

Test(config, defaults)
{
	char *dir = data_dir(), *file = cm_strdup_printf("%s/minimal.json", dir);
	char real[PATH_MAX];
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);

	cr_assert_not_null(realpath(dir, real));
	cr_assert_str_eq(cfg->file, file);
	cr_assert_str_eq(cfg->dir, real);
	cr_assert_eq(cfg->n_listen, 0);
	cr_assert_null(cfg->listen);
	cr_assert_not(cfg->admin.enabled);
	cr_assert_str_eq(cfg->admin.address, "127.0.0.1");
	cr_assert_eq(cfg->admin.port, 9090);
	cr_assert_eq(cfg->client_certificates.trusted_issuers.n, 1);
	cr_assert(cfg->client_certificates.require_client_auth_eku);
	cr_assert_eq(cfg->client_certificates.revocation.mode, CM_REVOCATION_OFF);
	cr_assert_eq(cfg->client_certificates.revocation.crl_files.n, 0);
	cr_assert_not(cfg->client_certificates.revocation.fetch_cdp);
	cr_assert_not(cfg->client_certificates.revocation.ocsp);
	cr_assert_null(cfg->client_certificates.revocation.ocsp_responder);
	cr_assert_eq(cfg->client_certificates.revocation.timeout_ms, 3000);
	cr_assert_eq(cfg->n_locations, 1);
	cr_assert_str_eq(cfg->locations[0].path, "/");
	cr_assert_eq(cfg->locations[0].client_certificate, CM_CERT_REQUIRE);
	cr_assert_eq(cfg->directory.dialect, CM_DIALECT_AD);
	cr_assert_null(cfg->directory.bind_dn);
	cr_assert_null(cfg->directory.bind_password_file);
	cr_assert_null(cfg->directory.bind_password);
	cr_assert_null(cfg->directory.ca_file);
	cr_assert_not(cfg->directory.starttls);
	cr_assert_eq(cfg->directory.timeout_ms, 3000);
	cr_assert_null(cfg->directory.netbios_domain);
	cr_assert_str_eq(cfg->directory.dns_domain, "lab.test");
	cr_assert_eq(cfg->mapping.n_methods, 1);
	cr_assert_eq(cfg->mapping.methods[0], CM_METHOD_USER_CERTIFICATE);
	cr_assert_eq(cfg->mapping.on_ambiguous, CM_AMBIGUOUS_DENY);
	cr_assert_eq(cfg->authorization.required_groups.n, 0);
	cr_assert(cfg->authorization.check_account_state);
	cr_assert_eq(cfg->authorization.basic_user_binding, CM_BASIC_OFF);
	cr_assert_not(cfg->upstream.present);
	cr_assert_null(cfg->upstream.url);
	cr_assert(cfg->upstream.verify);
	cr_assert_eq(cfg->upstream.identity, CM_IDENTITY_BASIC);
	cr_assert_eq(cfg->upstream.timeout_s, 10800);
	cr_assert_eq(cfg->cache.ttl_s, 300);
	cr_assert_eq(cfg->cache.negative_ttl_s, 30);
	cr_assert_eq(cfg->cache.max_entries, 100000);
	cr_assert_null(cfg->logging.access_log);
	cr_assert_null(cfg->logging.audit_log);
	cr_assert_eq(cfg->errors, CM_ERRORS_CUSTOM);
	cr_assert_null(cfg->user);
	cm_config_free(cfg);
	free(file);
	free(dir);
}

Test(config, admin_defaults_when_present)
{
	char *file = write_config("c.json", "{'admin':{},"
					    "'client_certificates':{'trusted_issuers':['ca.pem']},"
					    "'directory':{'uris':['ldap://dc1'],"
					    "'base_dn':'DC=lab,DC=test'}}");
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);

	cr_assert(cfg->admin.enabled);
	cr_assert_str_eq(cfg->admin.address, "127.0.0.1");
	cr_assert_eq(cfg->admin.port, 9090);
	cm_config_free(cfg);
	free(file);
}

Test(config, nulls_mean_absent)
{
	char *file = write_config("c.json",
				  "{'client_certificates':{'trusted_issuers':['ca.pem'],"
				  "'revocation':{'ocsp_responder':null}},"
				  "'directory':{'uris':['ldap://dc1'],'base_dn':'DC=lab,DC=test',"
				  "'bind_dn':null,'bind_password_file':null,'ca_file':null,"
				  "'netbios_domain':null},"
				  "'logging':{'access_log':null,'audit_log':null}}");
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);

	cr_assert_null(cfg->client_certificates.revocation.ocsp_responder);
	cr_assert_null(cfg->directory.bind_dn);
	cr_assert_null(cfg->directory.ca_file);
	cr_assert_null(cfg->logging.access_log);
	cm_config_free(cfg);
	free(file);
}

/* ---- one error each: exact line ------------------------------------------ */

#define CC "'client_certificates':{'trusted_issuers':['ca.pem']}"
#define DIRECTORY(extra) \
	"'directory':{'uris':['ldap://dc1.lab.test'],'base_dn':'DC=lab,DC=test'" extra "}"
#define BASE CC "," DIRECTORY("")
#define LISTEN                                                                   \
	"'listen':[{'address':'0.0.0.0','port':8443,'certificate':'server.pem'," \
	"'key':'server.key'}]"
#define UPSTREAM "'upstream':{'url':'https://exchange.lab.test'}"

struct error_case {
	const char *name;
	enum cm_config_purpose purpose;
	const char *json;     /* single quotes for double quotes */
	const char *expected; /* after "FILE: "; '@' is the temporary directory */
};

static const struct error_case error_cases[] = {
	{"not an object", CM_CONFIG_FOR_CHECK, "[1]", "$: expected an object, got array"},
	{"int wrong type", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'timeout_ms':'5'") "}",
	 "$.directory.timeout_ms: expected an integer from 1 to 600000, got string"},
	{"int is real", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'timeout_ms':1.5") "}",
	 "$.directory.timeout_ms: expected an integer from 1 to 600000, got number"},
	{"int too small", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'timeout_ms':0") "}",
	 "$.directory.timeout_ms: expected an integer from 1 to 600000, got 0"},
	{"int too big", CM_CONFIG_FOR_CHECK, "{" BASE ",'cache':{'ttl_s':90000}}",
	 "$.cache.ttl_s: expected an integer from 0 to 86400, got 90000"},
	{"negative", CM_CONFIG_FOR_CHECK, "{" BASE ",'cache':{'max_entries':-1}}",
	 "$.cache.max_entries: expected an integer from 0 to 10000000, got -1"},
	{"negative ttl", CM_CONFIG_FOR_CHECK, "{" BASE ",'cache':{'negative_ttl_s':-5}}",
	 "$.cache.negative_ttl_s: expected an integer from 0 to 86400, got -5"},
	{"enum two", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'dialect':'ldap'") "}",
	 "$.directory.dialect: expected \"ad\" or \"rfc4523\", got \"ldap\""},
	{"enum wrong type", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'dialect':1") "}",
	 "$.directory.dialect: expected \"ad\" or \"rfc4523\", got integer"},
	{"enum three", CM_CONFIG_FOR_CHECK,
	 "{'client_certificates':{'trusted_issuers':['ca.pem'],'revocation':{'mode':'strict'}}," DIRECTORY(
		 "") "}",
	 "$.client_certificates.revocation.mode: expected \"off\", \"soft\" or \"hard\", got "
	 "\"strict\""},
	{"enum escaped", CM_CONFIG_FOR_CHECK, "{" BASE ",'errors':'a\\\"b\\n'}",
	 "$.errors: expected \"custom\" or \"detailed\", got \"a\\\"b\\x0a\""},
	{"boolean", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'starttls':'yes'") "}",
	 "$.directory.starttls: expected true or false, got string"},
	{"boolean null", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'upstream':{'url':'http://x','verify':null}}",
	 "$.upstream.verify: expected true or false, got null"},
	{"unknown top-level key", CM_CONFIG_FOR_CHECK, "{" BASE ",'frobnicate':1}",
	 "$.frobnicate: unknown key"},
	{"unknown nested key", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'urls':[]") "}",
	 "$.directory.urls: unknown key"},
	{"unknown key shown quoted", CM_CONFIG_FOR_CHECK, "{" BASE ",'bad key':1}",
	 "$[\"bad key\"]: unknown key"},
	{"unknown key in list entry", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'locations':[{'path':'/','client_certificate':'require','x':1}]}",
	 "$.locations[0].x: unknown key"},
	{"NUL in string", CM_CONFIG_FOR_CHECK,
	 "{" CC "," DIRECTORY(",'netbios_domain':'LA\\u0000B'") "}",
	 "$.directory.netbios_domain: string contains a NUL byte"},
	{"section wrong type", CM_CONFIG_FOR_CHECK, "{" BASE ",'mapping':[]}",
	 "$.mapping: expected an object, got array"},
	{"list wrong type", CM_CONFIG_FOR_CHECK,
	 "{'client_certificates':{'trusted_issuers':'ca.pem'}," DIRECTORY("") "}",
	 "$.client_certificates.trusted_issuers: expected an array, got string"},
	{"missing section", CM_CONFIG_FOR_CHECK, "{" CC "}",
	 "$.directory: required key is missing"},
	{"missing cc", CM_CONFIG_FOR_CHECK, "{" DIRECTORY("") "}",
	 "$.client_certificates: required key is missing"},
	{"missing base_dn", CM_CONFIG_FOR_CHECK, "{" CC ",'directory':{'uris':['ldap://dc1']}}",
	 "$.directory.base_dn: required key is missing"},
	{"missing uris", CM_CONFIG_FOR_CHECK, "{" CC ",'directory':{'base_dn':'DC=x'}}",
	 "$.directory.uris: required key is missing"},
	{"no trusted issuer", CM_CONFIG_FOR_CHECK,
	 "{'client_certificates':{'trusted_issuers':[]}," DIRECTORY("") "}",
	 "$.client_certificates.trusted_issuers: expected at least one file"},
	{"no uri", CM_CONFIG_FOR_CHECK, "{" CC ",'directory':{'uris':[],'base_dn':'DC=x'}}",
	 "$.directory.uris: expected at least one URI"},
	{"bad uri", CM_CONFIG_FOR_CHECK,
	 "{" CC ",'directory':{'uris':['ldap://dc1','http://dc2'],'base_dn':'DC=x'}}",
	 "$.directory.uris[1]: expected an ldap:// or ldaps:// URI"},
	{"uri with space", CM_CONFIG_FOR_CHECK,
	 "{" CC ",'directory':{'uris':['ldap://dc 1'],'base_dn':'DC=x'}}",
	 "$.directory.uris[0]: expected an ldap:// or ldaps:// URI"},
	{"uri not a string", CM_CONFIG_FOR_CHECK,
	 "{" CC ",'directory':{'uris':[true],'base_dn':'DC=x'}}",
	 "$.directory.uris[0]: expected a string, got boolean"},
	{"starttls with ldaps", CM_CONFIG_FOR_CHECK,
	 "{" CC ",'directory':{'uris':['ldap://dc1','LDAPS://dc2'],'base_dn':'DC=x',"
	 "'starttls':true}}",
	 "$.directory.uris[1]: \"starttls\" cannot be used with an ldaps:// URI"},
	{"bad base_dn", CM_CONFIG_FOR_CHECK,
	 "{" CC ",'directory':{'uris':['ldap://dc1'],'base_dn':'lab.test'}}",
	 "$.directory.base_dn: expected a DN such as \"DC=example,DC=com\""},
	{"empty base_dn", CM_CONFIG_FOR_CHECK,
	 "{" CC ",'directory':{'uris':['ldap://dc1'],'base_dn':''}}",
	 "$.directory.base_dn: expected a non-empty string"},
	{"bad bind_dn", CM_CONFIG_FOR_CHECK,
	 "{" CC "," DIRECTORY(",'bind_dn':'certmap','bind_password_file':'bind.pw'") "}",
	 "$.directory.bind_dn: expected a DN such as \"CN=certmap,CN=Users,DC=example,DC=com\""},
	{"bind_dn without password", CM_CONFIG_FOR_CHECK,
	 "{" CC "," DIRECTORY(",'bind_dn':'CN=certmap,DC=lab,DC=test'") "}",
	 "$.directory.bind_password_file: required with \"bind_dn\""},
	{"password without bind_dn", CM_CONFIG_FOR_CHECK,
	 "{" CC "," DIRECTORY(",'bind_password_file':'bind.pw'") "}",
	 "$.directory.bind_dn: required with \"bind_password_file\""},
	{"password file 0644", CM_CONFIG_FOR_CHECK,
	 "{" CC "," DIRECTORY(",'bind_dn':'CN=c,DC=lab','bind_password_file':'open.pw'") "}",
	 "$.directory.bind_password_file: @/open.pw is readable by group or others (mode 0644); "
	 "expected mode 0600 or stricter"},
	{"password file 0620", CM_CONFIG_FOR_CHECK,
	 "{" CC "," DIRECTORY(",'bind_dn':'CN=c,DC=lab','bind_password_file':'group.pw'") "}",
	 "$.directory.bind_password_file: @/group.pw is accessible by group or others (mode 0620); "
	 "expected mode 0600 or stricter"},
	{"password file empty", CM_CONFIG_FOR_CHECK,
	 "{" CC "," DIRECTORY(",'bind_dn':'CN=c,DC=lab','bind_password_file':'empty.pw'") "}",
	 "$.directory.bind_password_file: @/empty.pw is empty"},
	{"password file missing", CM_CONFIG_FOR_CHECK,
	 "{" CC "," DIRECTORY(",'bind_dn':'CN=c,DC=lab','bind_password_file':'nope.pw'") "}",
	 "$.directory.bind_password_file: cannot read @/nope.pw: No such file or directory"},
	{"ca_file missing", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'ca_file':'nope.pem'") "}",
	 "$.directory.ca_file: cannot read @/nope.pem: No such file or directory"},
	{"ca_file a directory", CM_CONFIG_FOR_CHECK, "{" CC "," DIRECTORY(",'ca_file':'sub'") "}",
	 "$.directory.ca_file: @/sub is not a regular file"},
	{"trusted issuer missing", CM_CONFIG_FOR_CHECK,
	 "{'client_certificates':{'trusted_issuers':['ca.pem','/nonexistent/ca.pem']}," DIRECTORY(
		 "") "}",
	 "$.client_certificates.trusted_issuers[1]: cannot read /nonexistent/ca.pem: "
	 "No such file or directory"},
	{"crl file missing", CM_CONFIG_FOR_CHECK,
	 "{'client_certificates':{'trusted_issuers':['ca.pem'],"
	 "'revocation':{'crl_files':['x.crl']}}," DIRECTORY("") "}",
	 "$.client_certificates.revocation.crl_files[0]: cannot read @/x.crl: "
	 "No such file or directory"},
	{"revocation timeout", CM_CONFIG_FOR_CHECK,
	 "{'client_certificates':{'trusted_issuers':['ca.pem'],'revocation':{'timeout_ms':600001}}," DIRECTORY(
		 "") "}",
	 "$.client_certificates.revocation.timeout_ms: expected an integer from 1 to 600000, got "
	 "600001"},
	{"ocsp responder", CM_CONFIG_FOR_CHECK,
	 "{'client_certificates':{'trusted_issuers':['ca.pem'],"
	 "'revocation':{'ocsp_responder':'ldap://x'}}," DIRECTORY("") "}",
	 "$.client_certificates.revocation.ocsp_responder: expected an http:// URL (OCSP is fetched over plain HTTP)"},
	{"method not implemented", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'mapping':{'methods':['user_certificate','upn']}}",
	 "$.mapping.methods[1]: method \"upn\" is not implemented yet "
	 "(available: user_certificate)"},
	{"method unknown", CM_CONFIG_FOR_CHECK, "{" BASE ",'mapping':{'methods':['magic']}}",
	 "$.mapping.methods[0]: expected \"user_certificate\", \"alt_security_identities\", "
	 "\"upn\" or \"rules\", got \"magic\""},
	{"method duplicate", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'mapping':{'methods':['user_certificate','user_certificate']}}",
	 "$.mapping.methods[1]: duplicate method \"user_certificate\""},
	{"no method", CM_CONFIG_FOR_CHECK, "{" BASE ",'mapping':{'methods':[]}}",
	 "$.mapping.methods: expected at least one method"},
	{"on_ambiguous", CM_CONFIG_FOR_CHECK, "{" BASE ",'mapping':{'on_ambiguous':'first'}}",
	 "$.mapping.on_ambiguous: expected \"deny\" or \"basic_user\", got \"first\""},
	{"basic_user_binding", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'authorization':{'basic_user_binding':'always'}}",
	 "$.authorization.basic_user_binding: expected \"off\", \"if_present\" or "
	 "\"required\", got \"always\""},
	{"group not a DN", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'authorization':{'required_groups':['CN=ok,DC=lab','ActiveSync Users']}}",
	 "$.authorization.required_groups[1]: expected a DN such as "
	 "\"CN=Users,DC=example,DC=com\""},
	{"location relative", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'locations':[{'path':'owa','client_certificate':'require'}]}",
	 "$.locations[0].path: expected a normalized path starting with \"/\" (like \"/owa\"), got "
	 "\"owa\""},
	{"location trailing slash", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'locations':[{'path':'/owa/','client_certificate':'require'}]}",
	 "$.locations[0].path: expected a normalized path starting with \"/\" (like \"/owa\"), got "
	 "\"/owa/\""},
	{"location dot-dot", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'locations':[{'path':'/a/../b','client_certificate':'require'}]}",
	 "$.locations[0].path: expected a normalized path starting with \"/\" (like \"/owa\"), got "
	 "\"/a/../b\""},
	{"location duplicate", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'locations':[{'path':'/owa','client_certificate':'require'},"
	 "{'path':'/OWA','client_certificate':'accept'}]}",
	 "$.locations[1].path: duplicate of $.locations[0].path (paths are case-insensitive)"},
	{"location mode", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'locations':[{'path':'/','client_certificate':'maybe'}]}",
	 "$.locations[0].client_certificate: expected \"require\", \"accept\" or \"ignore\", got "
	 "\"maybe\""},
	{"location mode missing", CM_CONFIG_FOR_CHECK, "{" BASE ",'locations':[{'path':'/'}]}",
	 "$.locations[0].client_certificate: required key is missing"},
	{"no location", CM_CONFIG_FOR_CHECK, "{" BASE ",'locations':[]}",
	 "$.locations: expected at least one location"},
	{"listen port", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'listen':[{'address':'::','port':70000,'certificate':'server.pem',"
	 "'key':'server.key'}]}",
	 "$.listen[0].port: expected an integer from 1 to 65535, got 70000"},
	{"listen entry not an object", CM_CONFIG_FOR_CHECK, "{" BASE ",'listen':['0.0.0.0:8443']}",
	 "$.listen[0]: expected an object, got string"},
	{"listen empty", CM_CONFIG_FOR_DAEMON, "{" BASE "," UPSTREAM ",'listen':[]}",
	 "$.listen: expected at least one listener"},
	{"listen key missing", CM_CONFIG_FOR_DAEMON,
	 "{" BASE "," UPSTREAM ",'listen':[{'address':'::','port':1,'certificate':'server.pem'}]}",
	 "$.listen[0].key: required key is missing"},
	{"listen key 0644", CM_CONFIG_FOR_DAEMON,
	 "{" BASE "," UPSTREAM ",'listen':[{'address':'::','port':1,'certificate':'server.pem',"
	 "'key':'open.pw'}]}",
	 "$.listen[0].key: @/open.pw is readable by group or others (mode 0644); "
	 "expected mode 0600 or stricter"},
	{"listen certificate missing file", CM_CONFIG_FOR_DAEMON,
	 "{" BASE "," UPSTREAM ",'listen':[{'address':'::','port':1,'certificate':'x.pem',"
	 "'key':'server.key'}]}",
	 "$.listen[0].certificate: cannot read @/x.pem: No such file or directory"},
	{"admin port", CM_CONFIG_FOR_CHECK, "{" BASE ",'admin':{'port':0}}",
	 "$.admin.port: expected an integer from 1 to 65535, got 0"},
	{"upstream url", CM_CONFIG_FOR_CHECK, "{" BASE ",'upstream':{'url':'ftp://exchange'}}",
	 "$.upstream.url: expected an http:// or https:// URL"},
	{"upstream url without host", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'upstream':{'url':'https://'}}",
	 "$.upstream.url: expected an http:// or https:// URL"},
	{"upstream without url", CM_CONFIG_FOR_CHECK, "{" BASE ",'upstream':{'verify':true}}",
	 "$.upstream.url: required key is missing"},
	{"upstream identity", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'upstream':{'url':'http://x','identity':'kerberos'}}",
	 "$.upstream.identity: expected \"basic\" or \"headers\", got \"kerberos\""},
	{"upstream timeout", CM_CONFIG_FOR_CHECK,
	 "{" BASE ",'upstream':{'url':'http://x','timeout_s':0}}",
	 "$.upstream.timeout_s: expected an integer from 1 to 86400, got 0"},
	{"upstream ca_file", CM_CONFIG_FOR_DAEMON,
	 "{" BASE "," LISTEN ",'upstream':{'url':'http://x','ca_file':'nope.pem'}}",
	 "$.upstream.ca_file: cannot read @/nope.pem: No such file or directory"},
	{"logging wrong type", CM_CONFIG_FOR_CHECK, "{" BASE ",'logging':{'access_log':true}}",
	 "$.logging.access_log: expected a string or null, got boolean"},
	{"errors", CM_CONFIG_FOR_CHECK, "{" BASE ",'errors':'verbose'}",
	 "$.errors: expected \"custom\" or \"detailed\", got \"verbose\""},
	{"user empty", CM_CONFIG_FOR_CHECK, "{" BASE ",'user':''}",
	 "$.user: expected a non-empty string"},
	{"user wrong type", CM_CONFIG_FOR_CHECK, "{" BASE ",'user':1000}",
	 "$.user: expected a string, got integer"},
	{"daemon needs listen", CM_CONFIG_FOR_DAEMON, "{" BASE "," UPSTREAM "}",
	 "$.listen: required key is missing"},
	{"daemon needs upstream", CM_CONFIG_FOR_DAEMON, "{" BASE "," LISTEN "}",
	 "$.upstream: required key is missing"},
	{"daemon needs upstream url", CM_CONFIG_FOR_DAEMON,
	 "{" BASE "," LISTEN ",'upstream':{'verify':false}}",
	 "$.upstream.url: required key is missing"},
};

ParameterizedTestParameters(config, error_line)
{
	TABLE_PARAMS(error_cases);
}

ParameterizedTest(size_t *row, config, error_line)
{
	const struct error_case *c = &error_cases[*row];
	char *file = write_config("c.json", c->json);
	const char *expected[] = {c->expected};

	cr_log_info("case: %s", c->name);
	assert_errors(file, c->purpose, expected, 1);
	free(file);
}

/* ---- several errors, syntax, duplicates ---------------------------------- */

Test(config, several_errors_collected)
{
	char *file;
	const char *const expected[] = {
		"$.colour: unknown key",
		"$.listen[0].port: expected an integer from 1 to 65535, got 0",
		"$.listen[0].key: required key is missing",
		"$.client_certificates.trusted_issuers[0]: cannot read @/pki/missing-ca.pem: "
		"No such file or directory",
		"$.client_certificates.require_client_auth_eku: expected true or false, got string",
		"$.directory.uris[1]: expected an ldap:// or ldaps:// URI",
		"$.directory.dialect: expected \"ad\" or \"rfc4523\", got \"ldap\"",
		"$.directory.timeout_ms: expected an integer from 1 to 600000, got string",
		"$.mapping.methods[1]: method \"upn\" is not implemented yet (available: "
		"user_certificate)",
		"$.cache.ttl_s: expected an integer from 0 to 86400, got -1",
		"$.errors: expected \"custom\" or \"detailed\", got \"verbose\"",
	};

	stage_fixtures();
	file = tmp_path("several-errors.json");
	assert_errors(file, CM_CONFIG_FOR_CHECK, expected, sizeof(expected) / sizeof(expected[0]));
	free(file);
}

Test(config, unknown_nested_keys)
{
	char *dir = data_dir(), *file = cm_strdup_printf("%s/unknown-nested.json", dir);
	const char *const expected[] = {
		"$.client_certificates.revocation.crl_file: unknown key",
		"$.directory.urls: unknown key",
	};

	assert_errors(file, CM_CONFIG_FOR_CHECK, expected, 2);
	free(file);
	free(dir);
}

static void assert_one_line(const char *file, const char *line)
{
	struct cm_config *cfg = NULL;
	struct cm_config_errors errs;

	cr_assert_eq(cm_config_load(file, CM_CONFIG_FOR_CHECK, &cfg, &errs), -1);
	cr_assert_null(cfg);
	cr_assert_eq(errs.n, 1, "got %zu lines, first: %s", errs.n, errs.n ? errs.lines[0] : "");
	cr_assert_str_eq(errs.lines[0], line);
	cm_config_errors_free(&errs);
	cr_assert_null(errs.lines);
	cr_assert_eq(errs.n, 0);
}

Test(config, duplicate_key)
{
	char *dir = data_dir(), *file = cm_strdup_printf("%s/duplicate-key.json", dir);
	char *line = cm_strdup_printf("%s:6:10: invalid JSON: duplicate object key near "
				      "'\"uris\"'",
				      file);

	assert_one_line(file, line);
	free(line);
	free(file);
	free(dir);
}

Test(config, syntax_error_line_and_column)
{
	char *dir = data_dir(), *file = cm_strdup_printf("%s/syntax-error.json", dir);
	char *line =
		cm_strdup_printf("%s:3:58: invalid JSON: '}' expected near '\"base_dn\"'", file);

	assert_one_line(file, line);
	free(line);
	free(file);
	free(dir);
}

Test(config, nul_in_key_is_a_json_error)
{
	char *file = write_config("c.json", "{" BASE ",'a\\u0000b':1}");
	struct cm_config *cfg = NULL;
	struct cm_config_errors errs;

	/* jansson refuses it while parsing, so the line carries the position. */
	cr_assert_eq(cm_config_load(file, CM_CONFIG_FOR_CHECK, &cfg, &errs), -1);
	cr_assert_eq(errs.n, 1);
	cr_assert_not_null(strstr(errs.lines[0], ": invalid JSON: NUL byte in object key"), "%s",
			   errs.lines[0]);
	cr_assert_eq(strncmp(errs.lines[0], file, strlen(file)), 0);
	cm_config_errors_free(&errs);
	free(file);
}

Test(config, missing_config_file)
{
	char *file = tmp_path("nope.json");
	char *line = cm_strdup_printf("%s: cannot read: No such file or directory", file);

	assert_one_line(file, line);
	free(line);
	free(file);
}

Test(config, config_too_large)
{
	char *file = tmp_path("big.json");
	char *line = cm_strdup_printf("%s: larger than %u bytes", file, CM_CONFIG_MAX_BYTES);
	FILE *f = fopen(file, "w");

	cr_assert_not_null(f);
	fputc('{', f);
	for (unsigned i = 0; i < CM_CONFIG_MAX_BYTES; i++)
		fputc(' ', f);
	fputc('}', f);
	cr_assert_eq(fclose(f), 0);
	assert_one_line(file, line);
	free(line);
	free(file);
}

Test(config, list_too_long)
{
	json_t *issuers = json_array();
	char *file, *line;
	struct cm_config *cfg = NULL;
	struct cm_config_errors errs;

	for (int i = 0; i <= CM_CONFIG_MAX_LIST; i++)
		json_array_append_new(issuers, json_string("ca.pem"));
	file = write_config_json("c.json",
				 json_pack("{s:{s:o},s:{s:[s],s:s}}", "client_certificates",
					   "trusted_issuers", issuers, "directory", "uris",
					   "ldap://dc1", "base_dn", "DC=lab"));
	line = cm_strdup_printf("%s: $.client_certificates.trusted_issuers: too many entries "
				"(%d; at most %d)",
				file, CM_CONFIG_MAX_LIST + 1, CM_CONFIG_MAX_LIST);
	cr_assert_eq(cm_config_load(file, CM_CONFIG_FOR_CHECK, &cfg, &errs), -1);
	cr_assert_eq(errs.n, 1);
	cr_assert_str_eq(errs.lines[0], line);
	cm_config_errors_free(&errs);
	free(line);
	free(file);
}

Test(config, list_at_limit_loads)
{
	json_t *issuers = json_array();
	char *file;
	struct cm_config *cfg;

	for (int i = 0; i < CM_CONFIG_MAX_LIST; i++)
		json_array_append_new(issuers, json_string("ca.pem"));
	file = write_config_json("c.json",
				 json_pack("{s:{s:o},s:{s:[s],s:s}}", "client_certificates",
					   "trusted_issuers", issuers, "directory", "uris",
					   "ldap://dc1", "base_dn", "DC=lab"));
	cfg = load_ok(file, CM_CONFIG_FOR_CHECK);
	cr_assert_eq(cfg->client_certificates.trusted_issuers.n, CM_CONFIG_MAX_LIST);
	cm_config_free(cfg);
	free(file);
}

Test(config, error_count_is_bounded)
{
	json_t *root =
		json_pack("{s:{s:[s]},s:{s:[s],s:s}}", "client_certificates", "trusted_issuers",
			  "ca.pem", "directory", "uris", "ldap://dc1", "base_dn", "DC=lab");
	char *file, *last;
	struct cm_config *cfg = NULL;
	struct cm_config_errors errs;

	for (int i = 0; i < 2 * CM_CONFIG_MAX_ERRORS; i++) {
		char key[32];

		snprintf(key, sizeof(key), "extra%d", i);
		json_object_set_new(root, key, json_true());
	}
	file = write_config_json("c.json", root);
	cr_assert_eq(cm_config_load(file, CM_CONFIG_FOR_CHECK, &cfg, &errs), -1);
	cr_assert_eq(errs.n, CM_CONFIG_MAX_ERRORS);
	last = cm_strdup_printf("%s: too many errors; only the first %d are shown", file,
				CM_CONFIG_MAX_ERRORS - 1);
	cr_assert_str_eq(errs.lines[CM_CONFIG_MAX_ERRORS - 1], last);
	cr_assert_str_eq(errs.lines[0] + strlen(file), ": $.extra0: unknown key");
	cm_config_errors_free(&errs);
	free(last);
	free(file);
}

Test(config, errs_may_be_null)
{
	char *file = write_config("c.json", "{'x':1}");
	struct cm_config *cfg = NULL;

	cr_assert_eq(cm_config_load(file, CM_CONFIG_FOR_CHECK, &cfg, NULL), -1);
	cr_assert_null(cfg);
	free(file);
}

/* ---- files and paths ----------------------------------------------------- */

Test(config, relative_paths_resolve_against_config_dir)
{
	char *conf_dir = tmp_path("etc"), *deep = tmp_path("etc/certmap");
	char cwd[PATH_MAX], *want;
	struct cm_config *cfg;

	cr_assert_eq(mkdir(conf_dir, 0755), 0);
	cr_assert_eq(mkdir(deep, 0755), 0);
	write_file("etc/certmap/issuing.pem", "x\n", 0644);
	write_file("etc/certmap/bind.pw", "pw\n", 0600);
	free(write_config("etc/certmap/certmap.json",
			  "{'client_certificates':"
			  "{'trusted_issuers':['issuing.pem','../../ca.pem']},"
			  "'directory':{'uris':['ldap://dc1'],'base_dn':'DC=lab,DC=test',"
			  "'bind_dn':'CN=certmap,DC=lab,DC=test','bind_password_file':'./bind.pw'},"
			  "'logging':{'access_log':'logs/access.log'}}"));
	/* Loaded by a relative name from another directory: the error prefix and
	 * cfg->file keep the name as given, cfg->dir is absolute. */
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	cr_assert_eq(chdir(conf_dir), 0);
	cfg = load_ok("certmap/certmap.json", CM_CONFIG_FOR_CHECK);
	cr_assert_eq(chdir(cwd), 0);

	cr_assert_str_eq(cfg->file, "certmap/certmap.json");
	cr_assert_str_eq(cfg->dir, deep);
	want = tmp_path("etc/certmap/issuing.pem");
	cr_assert_str_eq(cfg->client_certificates.trusted_issuers.v[0], want);
	free(want);
	want = tmp_path("etc/certmap/../../ca.pem");
	cr_assert_str_eq(cfg->client_certificates.trusted_issuers.v[1], want);
	free(want);
	want = tmp_path("etc/certmap/./bind.pw");
	cr_assert_str_eq(cfg->directory.bind_password_file, want);
	free(want);
	want = tmp_path("etc/certmap/logs/access.log");
	cr_assert_str_eq(cfg->logging.access_log, want);
	free(want);
	cm_config_free(cfg);
	free(conf_dir);
	free(deep);
}

Test(config, error_lines_use_file_name_as_given)
{
	char cwd[PATH_MAX];
	struct cm_config *cfg = NULL;
	struct cm_config_errors errs;

	free(write_config("c.json", "{" BASE ",'user':7}"));
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	cr_assert_eq(chdir(tmpdir), 0);
	cr_assert_eq(cm_config_load("./c.json", CM_CONFIG_FOR_CHECK, &cfg, &errs), -1);
	cr_assert_eq(chdir(cwd), 0);
	cr_assert_eq(errs.n, 1);
	cr_assert_str_eq(errs.lines[0], "./c.json: $.user: expected a string, got integer");
	cm_config_errors_free(&errs);
}

Test(config, unreadable_file)
{
	char *file, *want, *line;

	if (geteuid() == 0) {
		/* root reads mode 000 files; the missing-file and not-a-regular-file
		 * cases in error_line cover the same code path. */
		return;
	}
	write_file("locked.pem", "x\n", 0000);
	file = write_config("c.json", "{'client_certificates':{'trusted_issuers':['locked.pem']},"
				      "'directory':{'uris':['ldap://dc1'],'base_dn':'DC=x'}}");
	want = tmp_path("locked.pem");
	line = cm_strdup_printf("%s: $.client_certificates.trusted_issuers[0]: cannot read %s: "
				"Permission denied",
				file, want);
	assert_one_line(file, line);
	free(line);
	free(want);
	free(file);
}

struct secret_case {
	const char *content;
	const char *expected;
};

static const struct secret_case secret_cases[] = {
	{"s3cret\n", "s3cret"},     {"s3cret\r\n", "s3cret"},   {"s3cret", "s3cret"},
	{"s3cret\n\n", "s3cret\n"}, {" spaced \n", " spaced "},
};

ParameterizedTestParameters(config, bind_password_0600)
{
	TABLE_PARAMS(secret_cases);
}

ParameterizedTest(size_t *row, config, bind_password_0600)
{
	const struct secret_case *c = &secret_cases[*row];
	char *file;
	struct cm_config *cfg;

	write_file("secret.pw", c->content, 0600);
	file = write_config("c.json", "{" CC "," DIRECTORY(",'bind_dn':'CN=certmap,DC=lab,DC=test',"
							   "'bind_password_file':'secret.pw'") "}");
	cfg = load_ok(file, CM_CONFIG_FOR_CHECK);
	cr_assert_str_eq(cfg->directory.bind_password, c->expected);
	cm_config_free(cfg);
	free(file);
}

Test(config, bind_password_0400_accepted)
{
	char *file;
	struct cm_config *cfg;

	write_file("ro.pw", "pw\n", 0400);
	file = write_config("c.json", "{" CC "," DIRECTORY(",'bind_dn':'CN=certmap,DC=lab,DC=test',"
							   "'bind_password_file':'ro.pw'") "}");
	cfg = load_ok(file, CM_CONFIG_FOR_CHECK);
	cr_assert_str_eq(cfg->directory.bind_password, "pw");
	cm_config_free(cfg);
	free(file);
}

/* certmapctl check does not open the daemon's TLS key, so it must not fail
 * when an operator cannot read it (or it is missing on the check host). */
Test(config, check_does_not_open_daemon_files)
{
	char *file = write_config(
		"c.json", "{" BASE ",'listen':[{'address':'::','port':443,'certificate':'no.pem',"
			  "'key':'open.pw'}],"
			  "'upstream':{'url':'https://x','ca_file':'no-ca.pem'}}");
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);
	char *want = tmp_path("open.pw");

	cr_assert_eq(cfg->n_listen, 1);
	cr_assert_str_eq(cfg->listen[0].key, want);
	cm_config_free(cfg);
	free(want);
	free(file);
}

/* ---- purposes ------------------------------------------------------------ */

Test(config, daemon_requires_listen_and_upstream_check_does_not)
{
	char *dir = data_dir(), *file = cm_strdup_printf("%s/minimal.json", dir);
	const char *const expected[] = {
		"$.listen: required key is missing",
		"$.upstream: required key is missing",
	};
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);

	cm_config_free(cfg);
	assert_errors(file, CM_CONFIG_FOR_DAEMON, expected, 2);
	free(file);
	free(dir);
}

Test(config, daemon_minimal_loads)
{
	char *file;
	struct cm_config *cfg;

	stage_fixtures();
	file = tmp_path("daemon.json");
	cfg = load_ok(file, CM_CONFIG_FOR_DAEMON);
	cr_assert_eq(cfg->n_listen, 1);
	cr_assert_eq(cfg->listen[0].port, 8443);
	cr_assert(cfg->upstream.present);
	cr_assert_str_eq(cfg->upstream.url, "http://127.0.0.1:8080");
	cr_assert_not(cfg->admin.enabled);
	cm_config_free(cfg);
	free(file);
}

/* ---- DNS domain from base_dn --------------------------------------------- */

struct dn_case {
	const char *base_dn;
	const char *dns; /* NULL: none derived */
};

static const struct dn_case dn_cases[] = {
	{"DC=lab,DC=test", "lab.test"},
	{"dc=lab,dc=test", "lab.test"},
	{"Dc=Corp, DC=Example ,DC=com", "Corp.Example.com"},
	{"OU=Staff,DC=lab,DC=test", "lab.test"},
	{"CN=Users,DC=emea,DC=corp,DC=example", "emea.corp.example"},
	{"O=Example,C=DE", NULL},
	{"CN=a\\,b,DC=lab", "lab"},
	{"DC=l\\61b,DC=test", "lab.test"},
	{"0.9.2342.19200300.100.1.25=lab,DC=test", "lab.test"},
	{"OU=x+DC=multi,DC=test", "multi.test"},
	{"DCX=no,DC=test", "test"},
};

ParameterizedTestParameters(config, dns_domain)
{
	TABLE_PARAMS(dn_cases);
}

ParameterizedTest(size_t *row, config, dns_domain)
{
	const struct dn_case *c = &dn_cases[*row];
	char *file = write_config_json("c.json",
				       json_pack("{s:{s:[s]},s:{s:[s],s:s}}", "client_certificates",
						 "trusted_issuers", "ca.pem", "directory", "uris",
						 "ldap://dc1", "base_dn", c->base_dn));
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);

	cr_assert_str_eq(cfg->directory.base_dn, c->base_dn);
	if (c->dns == NULL)
		cr_assert_null(cfg->directory.dns_domain, "%s", cfg->directory.dns_domain);
	else
		cr_assert_str_eq(cfg->directory.dns_domain, c->dns, "base_dn %s", c->base_dn);
	cm_config_free(cfg);
	free(file);
}

static const char *const bad_dns[] = {
	"lab.test", "DC=lab,",  ",DC=lab",         "=lab", "DC", "DC=a\\zz",
	"DC=a\\",   "DC=a\\00", "DC=lab,,DC=test",
};

ParameterizedTestParameters(config, bad_base_dn)
{
	TABLE_PARAMS(bad_dns);
}

ParameterizedTest(size_t *row, config, bad_base_dn)
{
	const char *const *dn = &bad_dns[*row];
	char *file = write_config_json("c.json",
				       json_pack("{s:{s:[s]},s:{s:[s],s:s}}", "client_certificates",
						 "trusted_issuers", "ca.pem", "directory", "uris",
						 "ldap://dc1", "base_dn", *dn));
	const char *const expected[] = {
		"$.directory.base_dn: expected a DN such as \"DC=example,DC=com\""};

	assert_errors(file, CM_CONFIG_FOR_CHECK, expected, 1);
	free(file);
}

/* ---- location matching --------------------------------------------------- */

struct location_case {
	const char *path;
	const char *location; /* NULL: none */
};

static const struct location_case location_cases[] = {
	{"/owa", "/owa"},
	{"/owa/x", "/owa"},
	{"/owa2", "/"},
	{"/owa2/x", "/"},
	{"/OWA", "/owa"},
	{"/Owa/Auth/logon.aspx", "/owa"},
	{"/owa/admin", "/owa/admin"},
	{"/owa/admin/x", "/owa/admin"},
	{"/owa/administrator", "/owa"},
	{"/microsoft-server-activesync", "/Microsoft-Server-ActiveSync"},
	{"/Microsoft-Server-ActiveSync/x", "/Microsoft-Server-ActiveSync"},
	{"/Microsoft-Server-ActiveSyncX", "/"},
	{"/", "/"},
	{"/ow", "/"},
	{"/x/owa", "/"},
	{"", NULL},
	{"owa", NULL},
};

ParameterizedTestParameters(config, location_match)
{
	TABLE_PARAMS(location_cases);
}

ParameterizedTest(size_t *row, config, location_match)
{
	const struct location_case *c = &location_cases[*row];
	char *file = write_config("c.json", "{" BASE ",'locations':["
					    "{'path':'/owa','client_certificate':'accept'},"
					    "{'path':'/','client_certificate':'ignore'},"
					    "{'path':'/owa/admin','client_certificate':'require'},"
					    "{'path':'/Microsoft-Server-ActiveSync',"
					    "'client_certificate':'require'}]}");
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);
	const struct cm_location *l = cm_config_location(cfg, c->path);

	if (c->location == NULL)
		cr_assert_null(l, "%s matched %s", c->path, l ? l->path : "");
	else {
		cr_assert_not_null(l, "%s matched nothing", c->path);
		cr_assert_str_eq(l->path, c->location, "for %s", c->path);
	}
	cm_config_free(cfg);
	free(file);
}

Test(config, location_without_root_matches_nothing_else)
{
	char *file = write_config(
		"c.json", "{" BASE ",'locations':[{'path':'/owa','client_certificate':'accept'}]}");
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);

	cr_assert_null(cm_config_location(cfg, "/ews"));
	cr_assert_null(cm_config_location(cfg, "/"));
	cr_assert_not_null(cm_config_location(cfg, "/owa/"));
	cr_assert_null(cm_config_location(cfg, NULL));
	cr_assert_null(cm_config_location(NULL, "/owa"));
	cm_config_free(cfg);
	free(file);
}

Test(config, default_location_requires_cert_everywhere)
{
	char *dir = data_dir(), *file = cm_strdup_printf("%s/minimal.json", dir);
	struct cm_config *cfg = load_ok(file, CM_CONFIG_FOR_CHECK);
	const struct cm_location *l = cm_config_location(cfg, "/Microsoft-Server-ActiveSync");

	cr_assert_not_null(l);
	cr_assert_str_eq(l->path, "/");
	cr_assert_eq(l->client_certificate, CM_CERT_REQUIRE);
	cm_config_free(cfg);
	free(file);
	free(dir);
}

/* ---- small API ----------------------------------------------------------- */

Test(config, free_accepts_null)
{
	struct cm_config_errors errs = {NULL, 0};

	cm_config_free(NULL);
	cm_config_errors_free(NULL);
	cm_config_errors_free(&errs);
}

Test(config, names)
{
	cr_assert_str_eq(cm_dialect_name(CM_DIALECT_AD), "ad");
	cr_assert_str_eq(cm_dialect_name(CM_DIALECT_RFC4523), "rfc4523");
	cr_assert_str_eq(cm_revocation_mode_name(CM_REVOCATION_OFF), "off");
	cr_assert_str_eq(cm_revocation_mode_name(CM_REVOCATION_SOFT), "soft");
	cr_assert_str_eq(cm_revocation_mode_name(CM_REVOCATION_HARD), "hard");
}
