/*
 * Unit tests for common/directory.c: filter-value escaping (binary-safe),
 * DN equality, result accessors, and the failure paths that need no real
 * directory (refused port, a listener that never answers).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "certmap/directory.h"

/* RFC 4515 unescape: "\XX" → byte; -1 on a malformed escape. */
static long unescape(const char *in, unsigned char *out, size_t cap)
{
	size_t n = 0;

	for (const char *p = in; *p != '\0'; p++) {
		unsigned int byte;

		if (n >= cap)
			return -1;
		if (*p != '\\') {
			out[n++] = (unsigned char)*p;
			continue;
		}
		if (sscanf(p + 1, "%2x", &byte) != 1 || p[1] == '\0' || p[2] == '\0')
			return -1;
		out[n++] = (unsigned char)byte;
		p += 2;
	}
	return (long)n;
}

static bool must_escape(unsigned char c)
{
	return c < 0x20 || c >= 0x7f || c == '*' || c == '(' || c == ')' || c == '\\';
}

Test(escape, every_single_byte)
{
	for (unsigned int b = 0; b < 256; b++) {
		unsigned char in = (unsigned char)b, back[4];
		char *e = cm_dir_escape_value(&in, 1);

		cr_assert_not_null(e, "byte 0x%02x", b);
		if (must_escape(in)) {
			char want[4];

			snprintf(want, sizeof(want), "\\%02x", b);
			cr_assert_eq(strcasecmp(e, want), 0, "byte 0x%02x escaped as \"%s\"", b, e);
		} else {
			cr_assert_eq(strlen(e), 1, "byte 0x%02x", b);
			cr_assert_eq((unsigned char)e[0], in);
		}
		cr_assert_eq(unescape(e, back, sizeof(back)), 1, "byte 0x%02x", b);
		cr_assert_eq(back[0], in, "byte 0x%02x round trip", b);
		free(e);
	}
}

Test(escape, all_bytes_in_one_value_round_trip)
{
	unsigned char in[512], back[512];
	char *e;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(i * 7 + 3); /* every byte value, NUL included */
	e = cm_dir_escape_value(in, sizeof(in));
	cr_assert_not_null(e);
	for (const char *p = e; *p != '\0'; p++) {
		cr_assert(*p != '*' && *p != '(' && *p != ')', "raw metacharacter in output");
		cr_assert((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f,
			  "raw control or high byte in output");
		if (*p == '\\') {
			cr_assert(p[1] != '\0' && p[2] != '\0');
			p += 2;
		}
	}
	cr_assert_eq(unescape(e, back, sizeof(back)), (long)sizeof(in));
	cr_assert_eq(memcmp(in, back, sizeof(in)), 0);
	free(e);
}

Test(escape, embedded_nul_is_kept)
{
	const unsigned char in[] = {'a', 0, 'b'};
	char *e = cm_dir_escape_value(in, sizeof(in));

	cr_assert_not_null(e);
	cr_assert_str_eq(e, "a\\00b");
	free(e);
}

Test(escape, filter_metacharacters)
{
	static const char *const rows[][2] = {
		{"O*scar (test) \\ x", "O\\2Ascar \\28test\\29 \\5C x"},
		{"*", "\\2A"},
		{"(", "\\28"},
		{")", "\\29"},
		{"\\", "\\5C"},
		{"alice", "alice"},
		{"CN=a\\,b,DC=x", "CN=a\\5C,b,DC=x"},
		{"\xc3\xa9t\xc3\xa9", "\\C3\\A9t\\C3\\A9"},
		{"\xff\xfe", "\\FF\\FE"},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *e = cm_dir_escape_value(rows[i][0], strlen(rows[i][0]));

		cr_assert_not_null(e);
		cr_assert_eq(strcasecmp(e, rows[i][1]), 0, "\"%s\" escaped as \"%s\"", rows[i][0],
			     e);
		free(e);
	}
}

Test(escape, empty_value)
{
	char *e = cm_dir_escape_value("", 0);

	cr_assert_not_null(e);
	cr_assert_str_eq(e, "");
	free(e);
}

Test(dn, equality)
{
	static const struct {
		const char *a, *b;
		bool equal;
	} rows[] = {
		{"CN=Alice,CN=Users,DC=lab,DC=test", "CN=Alice,CN=Users,DC=lab,DC=test", true},
		{"CN=Alice,CN=Users,DC=lab,DC=test", "cn=alice,cn=users,dc=LAB,dc=test", true},
		{"CN=ActiveSync Users,CN=Users,DC=lab,DC=test",
		 "cn=activesync users, cn=users, dc=lab, dc=test", true},
		{"CN=a ,DC=x", "CN=a,DC=x", true},
		{"CN=a\\,b,DC=x", "CN=a\\2Cb,DC=x", true},
		{"CN=a\\,b,DC=x", "CN=a\\2cb,DC=x", true},
		{"CN=a\\+b,DC=x", "CN=a\\2Bb,DC=x", true},
		{"cn=O*scar (test) \\5c x,dc=x", "cn=O*scar (test) \\\\ x,dc=x", true},
		{"CN=\xc3\x84rger,DC=x", "CN=\\C3\\84rger,DC=x", true},
		{"", "", true},
		{"CN=a,DC=x", "CN=b,DC=x", false},
		{"CN=a,DC=x", "CN=a,DC=x,DC=y", false},
		{"CN=a,DC=x", "OU=a,DC=x", false},
		{"CN=a\\ ,DC=x", "CN=a,DC=x", false}, /* escaped trailing space is data */
		{"cn=Alice,ou=people,dc=lab,dc=test", "uid=alice,ou=people,dc=lab,dc=test", false},
		{"not a dn", "not a dn", false}, /* unparseable: never equal */
		{"CN=a,DC=x", "CN=a,DC=x,", false},
		{"CN=a,DC=x", NULL, false},
		{NULL, NULL, false},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		cr_assert_eq(cm_dir_dn_equal(rows[i].a, rows[i].b), rows[i].equal,
			     "row %zu: \"%s\" vs \"%s\"", i, rows[i].a ? rows[i].a : "(null)",
			     rows[i].b ? rows[i].b : "(null)");
}

Test(entry, attribute_lookup_ignores_case_and_options)
{
	unsigned char cert[] = {0x30, 0x82, 0x00, 0x01};
	unsigned char uid[] = "alice";
	struct cm_dir_value cv = {cert, sizeof(cert)}, uv = {uid, 5};
	struct cm_dir_attr attrs[] = {
		{"userCertificate;binary", &cv, 1},
		{"uid", &uv, 1},
		{"mail", NULL, 0},
	};
	struct cm_dir_entry e = {"uid=alice,dc=x", attrs, 3};
	const struct cm_dir_attr *a;

	a = cm_dir_entry_attr(&e, "usercertificate");
	cr_assert_eq(a, &attrs[0]);
	cr_assert_eq(cm_dir_entry_attr(&e, "userCertificate;binary"), &attrs[0]);
	cr_assert_null(cm_dir_entry_attr(&e, "userCert"));
	cr_assert_null(cm_dir_entry_attr(&e, "userCertificates"));
	cr_assert_str_eq(cm_dir_entry_str(&e, "UID"), "alice");
	cr_assert_null(cm_dir_entry_str(&e, "mail")); /* present without values */
	cr_assert_null(cm_dir_entry_str(&e, "cn"));
	cr_assert_null(cm_dir_entry_attr(NULL, "uid"));
}

Test(open, needs_a_uri)
{
	struct cm_config cfg;
	struct cm_dir *dir = (struct cm_dir *)&cfg;
	struct cm_err err = {""};

	memset(&cfg, 0, sizeof(cfg));
	cr_assert_eq(cm_dir_open(&cfg, &dir, &err), -1);
	cr_assert_null(dir);
	cr_assert_neq(err.msg[0], '\0');
	cm_dir_free(NULL);
	cm_dir_result_free(NULL);
}

/* A TCP port on 127.0.0.1 that refuses connections (bound, then closed). */
static int closed_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int s = socket(AF_INET, SOCK_STREAM, 0), port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(s >= 0);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(s);
	return port;
}

/* A listener that completes TCP handshakes (backlog) but never answers. */
static int silent_listener(int *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int s = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(s >= 0);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(s, 16), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return s;
}

Test(search, every_server_failing_is_unavailable_and_bounded, .timeout = 20)
{
	char u0[64], u1[64], u2[64];
	char *uris[3] = {u0, u1, u2};
	struct cm_config cfg;
	struct cm_dir *dir = NULL;
	struct cm_dir_result res;
	struct cm_trace trace = {NULL, 0, 0};
	struct cm_err err = {""};
	static const char *const attrs[] = {"uid", NULL};
	int silent_port, silent = silent_listener(&silent_port);
	double t0, took, ms;
	enum cm_dir_status st;

	snprintf(u0, sizeof(u0), "ldap://127.0.0.1:%d", closed_port());
	snprintf(u1, sizeof(u1), "ldap://127.0.0.1:%d", silent_port);
	/* libldap alone would wait forever in this TLS handshake */
	snprintf(u2, sizeof(u2), "ldaps://127.0.0.1:%d", silent_port);
	memset(&cfg, 0, sizeof(cfg));
	cfg.directory.uris.v = uris;
	cfg.directory.uris.n = 3;
	cfg.directory.base_dn = "dc=lab,dc=test";
	cfg.directory.timeout_ms = 300;
	cr_assert_eq(cm_dir_open(&cfg, &dir, &err), 0, "%s", err.msg);

	t0 = cm_now_ms();
	st = cm_dir_search(dir, "dc=lab,dc=test", CM_DIR_SCOPE_SUBTREE, "(uid=alice)", attrs, 0,
			   &res, &trace, &err);
	took = cm_now_ms() - t0;
	cr_assert_eq(st, CM_DIR_UNAVAILABLE);
	cr_assert_eq(res.n_entries, 0);
	cr_assert_null(res.entries);
	cr_assert_not_null(strstr(err.msg, u0), "err names the refused URI: %s", err.msg);
	cr_assert_not_null(strstr(err.msg, u1), "err names the silent URI: %s", err.msg);
	cr_assert_not_null(strstr(err.msg, u2), "err names the silent ldaps URI: %s", err.msg);
	cr_assert(took < 2500.0, "failover took %.0f ms with a 300 ms timeout", took);
	cr_assert_geq(trace.n, 3);
	for (size_t i = 0; i < trace.n; i++)
		cr_assert_eq(strncmp(trace.lines[i], "ldap: ", 6), 0, "%s", trace.lines[i]);
	ms = cm_dir_take_elapsed_ms(dir);
	cr_assert(ms > 0.0 && ms <= took + 1.0, "elapsed %.1f of %.1f", ms, took);
	cr_assert_eq(cm_dir_take_elapsed_ms(dir), 0.0);

	cm_trace_free(&trace);
	cm_dir_free(dir);
	close(silent);
}

Test(dn, key_is_equality_as_strcmp)
{
	char *a = cm_dir_dn_key("CN=Alice Smith, OU=Sales ,DC=LAB,DC=test");
	char *b = cm_dir_dn_key("cn=alice smith,ou=sales,dc=lab,dc=test");
	char *c = cm_dir_dn_key("cn=alice smith,ou=sales,dc=lab");

	cr_assert_not_null(a);
	cr_assert_not_null(b);
	cr_assert_str_eq(a, b);
	cr_assert_str_neq(a, c);
	cr_assert(cm_dir_dn_equal("CN=Alice Smith, OU=Sales ,DC=LAB,DC=test",
				  "cn=alice smith,ou=sales,dc=lab,dc=test"));
	cr_assert_null(cm_dir_dn_key("not a dn"));
	cr_assert_null(cm_dir_dn_key(NULL));
	free(a);
	free(b);
	free(c);
}

/* Paged searches and modifies fail over and give up like searches, and a
 * write that could not be sent is no modify in the counters. */
Test(modify, paged_and_modify_unavailable_bounded_and_counted, .timeout = 20)
{
	char u0[64], u1[64];
	char *uris[2] = {u0, u1};
	struct cm_config cfg;
	struct cm_dir *dir = NULL;
	struct cm_dir_result res;
	struct cm_dir_stats st;
	struct cm_trace trace = {NULL, 0, 0};
	struct cm_err err = {""};
	static const char *const attrs[] = {"uid", NULL};
	struct cm_dir_value v = {(unsigned char *)"\x30\x03\x02\x01\x01", 5};
	int silent_port, silent = silent_listener(&silent_port), code = 0;
	double t0;

	snprintf(u0, sizeof(u0), "ldap://127.0.0.1:%d", closed_port());
	snprintf(u1, sizeof(u1), "ldap://127.0.0.1:%d", silent_port);
	memset(&cfg, 0, sizeof(cfg));
	cfg.directory.uris.v = uris;
	cfg.directory.uris.n = 2;
	cfg.directory.base_dn = "dc=lab,dc=test";
	cfg.directory.timeout_ms = 300;
	cr_assert_eq(cm_dir_open(&cfg, &dir, &err), 0, "%s", err.msg);

	t0 = cm_now_ms();
	cr_assert_eq(cm_dir_search_paged(dir, "dc=lab,dc=test", CM_DIR_SCOPE_SUBTREE,
					 "(objectClass=*)", attrs, 0, 0, &res, &trace, &err),
		     CM_DIR_UNAVAILABLE);
	cr_assert_eq(res.n_entries, 0);
	cr_assert_not_null(strstr(err.msg, u0), "%s", err.msg);
	cr_assert_not_null(strstr(err.msg, u1), "%s", err.msg);
	cr_assert_eq(cm_dir_modify_values(dir, "uid=alice,dc=lab,dc=test", "userCertificate;binary",
					  CM_DIR_MOD_ADD, &v, 1, &code, &trace, &err),
		     CM_DIR_UNAVAILABLE);
	cr_assert(cm_now_ms() - t0 < 5000.0, "bounded by timeout_ms");
	cr_assert_not_null(strstr(err.msg, "directory unavailable"), "%s", err.msg);
	cr_assert_eq(cm_dir_modify_values(dir, "uid=alice,dc=lab,dc=test", "userCertificate",
					  CM_DIR_MOD_DELETE, &v, 0, &code, &trace, &err),
		     CM_DIR_UNAVAILABLE, "no value: refused before any network");
	cm_dir_get_stats(dir, &st);
	cr_assert_eq(st.modifies, 0);
	cr_assert_eq(st.searches, 0);
	for (size_t i = 0; i < trace.n; i++)
		cr_assert_eq(strncmp(trace.lines[i], "ldap: ", 6), 0, "%s", trace.lines[i]);
	cm_trace_free(&trace);
	cm_dir_free(dir);
	close(silent);
}
