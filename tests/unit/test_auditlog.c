#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certmap/auditlog.h"
#include "certmap/util.h"

#define T_2026_11_22_10_00_00 1795341600

static char tmpdir[64];

static void setup(void)
{
	strcpy(tmpdir, "/tmp/certmap-test-auditlog-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(auditlog, .init = setup, .fini = teardown);

static const char *const keys[] = {"time",   "request_id",   "client_ip",  "decision", "reason",
				   "status", "substatus",    "detail",     "method",   "user",
				   "cert",   "directory_ms", "revocation", "trace"};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static void check_keys(json_t *o)
{
	const char *k;
	json_t *v;
	size_t i = 0;

	cr_assert(json_is_object(o));
	cr_assert_eq(json_object_size(o), NKEYS);
	json_object_foreach (o, k, v) {
		(void)v;
		cr_assert_str_eq(k, keys[i], "key %zu", i);
		i++;
	}
}

static const char *str(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	cr_assert(json_is_string(v), "%s is not a string", key);
	return json_string_value(v);
}

/* A denial after mapping: user and certificate known. */
struct fixture {
	struct cm_user user;
	struct cm_decision d;
};

static void fill(struct fixture *fx)
{
	memset(fx, 0, sizeof(*fx));
	fx->user.dn = "CN=Bob Example,CN=Users,DC=lab,DC=test";
	fx->user.name = "bob";
	fx->user.sam = "bob";
	fx->user.upn = "bob@lab.test";
	fx->d.reason = CM_REASON_NOT_IN_GROUP;
	fx->d.status = 401;
	fx->d.substatus = 3;
	fx->d.detail = "not a member of CN=ActiveSync Users,CN=Users,DC=lab,DC=test";
	fx->d.method = CM_METHOD_USER_CERTIFICATE;
	fx->d.user = &fx->user;
	fx->d.has_cert = true;
	strcpy(fx->d.cert.sha256,
	       "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592");
	fx->d.cert.subject = "CN=Bob Example,O=Lab";
	fx->d.cert.issuer = "CN=Lab Issuing CA,O=Lab";
	fx->d.cert.serial = "1a2b3c";
	strcpy(fx->d.cert.not_after, "2027-11-22T10:00:00Z");
	fx->d.directory_ms = 12.3456789;
	cm_trace_add(&fx->d.trace, "x509: chain to %s ok", "CN=Lab Issuing CA,O=Lab");
	cm_trace_add(&fx->d.trace, "policy: not in %s", "CN=ActiveSync Users");
}

Test(auditlog, keys_and_values_from_a_decision)
{
	struct fixture fx;
	struct timespec when = {T_2026_11_22_10_00_00, 123987654};
	json_t *o, *u, *c, *t;

	fill(&fx);
	o = cm_auditlog_json(&when, "198.51.100.7", "r-0001", &fx.d);
	check_keys(o);
	cr_assert_str_eq(str(o, "time"), "2026-11-22T10:00:00.123Z");
	cr_assert_str_eq(str(o, "request_id"), "r-0001");
	cr_assert_str_eq(str(o, "client_ip"), "198.51.100.7");
	cr_assert_str_eq(str(o, "decision"), "deny");
	cr_assert_str_eq(str(o, "reason"), "not_in_group");
	cr_assert_eq(json_integer_value(json_object_get(o, "status")), 401);
	cr_assert_eq(json_integer_value(json_object_get(o, "substatus")), 3);
	cr_assert_str_eq(str(o, "detail"), fx.d.detail);
	cr_assert_str_eq(str(o, "method"), "user_certificate");

	u = json_object_get(o, "user");
	cr_assert_eq(json_object_size(u), 4);
	cr_assert_str_eq(str(u, "dn"), fx.user.dn);
	cr_assert_str_eq(str(u, "name"), "bob");
	cr_assert_str_eq(str(u, "sAMAccountName"), "bob");
	cr_assert_str_eq(str(u, "userPrincipalName"), "bob@lab.test");

	c = json_object_get(o, "cert");
	cr_assert_eq(json_object_size(c), 4, "cert has exactly sha256, subject, issuer, serial");
	cr_assert_str_eq(str(c, "sha256"), fx.d.cert.sha256);
	cr_assert_str_eq(str(c, "subject"), "CN=Bob Example,O=Lab");
	cr_assert_str_eq(str(c, "issuer"), "CN=Lab Issuing CA,O=Lab");
	cr_assert_str_eq(str(c, "serial"), "1a2b3c");

	cr_assert(json_is_real(json_object_get(o, "directory_ms")));
	cr_assert_float_eq(json_real_value(json_object_get(o, "directory_ms")), 12.346, 1e-9);
	t = json_object_get(o, "trace");
	cr_assert_eq(json_array_size(t), 2);
	cr_assert_str_eq(json_string_value(json_array_get(t, 0)),
			 "x509: chain to CN=Lab Issuing CA,O=Lab ok");
	json_decref(o);
	cm_trace_free(&fx.d.trace);
}

Test(auditlog, null_user_cert_method_detail_and_ids)
{
	struct cm_decision d = {0};
	struct timespec when = {T_2026_11_22_10_00_00 + 59, 999999999};
	json_t *o;

	d.reason = CM_REASON_NO_CERTIFICATE;
	d.status = 403;
	d.substatus = 7;
	d.method = CM_METHOD_NONE;
	o = cm_auditlog_json(&when, NULL, NULL, &d);
	check_keys(o);
	cr_assert_str_eq(str(o, "time"), "2026-11-22T10:00:59.999Z");
	cr_assert(json_is_null(json_object_get(o, "request_id")));
	cr_assert(json_is_null(json_object_get(o, "client_ip")));
	cr_assert_str_eq(str(o, "decision"), "deny");
	cr_assert_str_eq(str(o, "reason"), "no_certificate");
	cr_assert(json_is_null(json_object_get(o, "detail")));
	cr_assert(json_is_null(json_object_get(o, "method")));
	cr_assert(json_is_null(json_object_get(o, "user")));
	cr_assert(json_is_null(json_object_get(o, "cert")));
	cr_assert_float_eq(json_real_value(json_object_get(o, "directory_ms")), 0.0, 1e-12);
	cr_assert_eq(json_array_size(json_object_get(o, "trace")), 0);
	json_decref(o);
}

Test(auditlog, allowed_decision)
{
	struct fixture fx;
	json_t *o;

	fill(&fx);
	fx.d.reason = CM_REASON_ALLOWED;
	fx.d.status = 200;
	fx.d.substatus = 0;
	fx.d.detail = NULL;
	o = cm_auditlog_json(NULL, "::1", "r", &fx.d);
	check_keys(o);
	cr_assert_str_eq(str(o, "decision"), "allow");
	cr_assert_str_eq(str(o, "reason"), "allowed");
	cr_assert_eq(strlen(str(o, "time")), strlen("2026-11-22T10:00:00.123Z"));
	json_decref(o);
	cm_trace_free(&fx.d.trace);
}

Test(auditlog, invalid_utf8_is_kept_sanitized)
{
	struct fixture fx;
	json_t *o;

	fill(&fx);
	fx.d.cert.subject = "CN=bad\xff\xfe,O=Lab";
	fx.user.dn = "CN=x\xc3";
	fx.d.detail = "detail \x01";
	o = cm_auditlog_json(NULL, "198.51.100.7", "r", &fx.d);
	check_keys(o);
	cr_assert_str_eq(str(json_object_get(o, "cert"), "subject"), "CN=bad\\xff\\xfe,O=Lab");
	cr_assert_str_eq(str(json_object_get(o, "user"), "dn"), "CN=x\\xc3");
	cr_assert_str_eq(str(o, "detail"), "detail \x01"); /* valid UTF-8; escaped by the dump */
	json_decref(o);
	cm_trace_free(&fx.d.trace);
}

Test(auditlog, file_has_one_ascii_json_object_per_line)
{
	char *p = cm_strdup_printf("%s/audit.log", tmpdir), *rotated = cm_strdup_printf("%s.1", p);
	struct cm_auditlog *log = NULL;
	struct cm_err err = {{0}};
	struct fixture fx;
	struct timespec when = {T_2026_11_22_10_00_00, 0};
	unsigned char *text = NULL;
	size_t len = 0, lines = 0;
	char *s, *nl;
	const char *prefix = "{\"time\":\"2026-11-22T10:00:00.000Z\",\"request_id\":\"r-3\",";

	fill(&fx);
	fx.user.name = "b\xc3\xb6"
		       "b\nline2"; /* non-ASCII and a newline */
	cr_assert_eq(cm_auditlog_open(p, &log, &err), 0, "%s", err.msg);
	cm_auditlog_write(log, &when, "198.51.100.7", "r-1", &fx.d);
	cm_auditlog_write(log, &when, "198.51.100.8", "r-2", &fx.d);
	cm_auditlog_flush(log);
	cr_assert_eq(rename(p, rotated), 0);
	cr_assert_eq(cm_auditlog_reopen(log, &err), 0, "%s", err.msg);
	cm_auditlog_write(log, &when, "198.51.100.9", "r-3", &fx.d);
	cm_auditlog_close(log);
	cm_trace_free(&fx.d.trace);

	cr_assert_eq(cm_file_read(rotated, 1u << 20, &text, &len, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < len; i++)
		cr_assert(text[i] == '\n' || (text[i] >= 0x20 && text[i] < 0x7f), "byte %zu", i);
	for (s = (char *)text; (nl = strchr(s, '\n')) != NULL; s = nl + 1) {
		json_error_t je;
		json_t *o;

		*nl = '\0';
		o = json_loads(s, 0, &je);
		cr_assert_not_null(o, "line %zu: %s", lines, je.text);
		check_keys(o);
		cr_assert_str_eq(str(json_object_get(o, "user"), "name"), "b\xc3\xb6"
									  "b\nline2");
		cr_assert_str_eq(str(o, "request_id"), lines == 0 ? "r-1" : "r-2");
		cr_assert(strstr(s, "\"directory_ms\":12.346,") != NULL, "%s", s);
		json_decref(o);
		lines++;
	}
	cr_assert_eq(lines, 2);
	cr_assert_str_eq(s, "");
	free(text);

	cr_assert_eq(cm_file_read(p, 1u << 20, &text, &len, &err), 0, "%s", err.msg);
	cr_assert(strncmp((char *)text, prefix, strlen(prefix)) == 0, "%s", text);
	cr_assert_eq(text[len - 1], '\n');
	cr_assert_null(memchr(text, '\n', len - 1));
	free(text);
	free(rotated);
	free(p);
}

Test(auditlog, null_arguments)
{
	struct cm_auditlog *log = NULL;
	struct cm_err err = {{0}};

	cr_assert_eq(cm_auditlog_open("/nonexistent/dir/audit.log", &log, &err), -1);
	cr_assert_null(log);
	cr_assert_str_eq(err.msg, "/nonexistent/dir/audit.log: No such file or directory");
	cm_auditlog_close(NULL);
	cm_auditlog_flush(NULL);
	cm_auditlog_write(NULL, NULL, NULL, NULL, NULL);
	cr_assert_eq(cm_auditlog_reopen(NULL, &err), -1);
}
