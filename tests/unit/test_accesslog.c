#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "certmap/accesslog.h"
#include "certmap/util.h"

#define FIELDS_LINE                                                                           \
	"#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip " \
	"cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken"
#define T_2026_11_22_10_00_00 1795341600

static char tmpdir[64];

static void setup(void)
{
	strcpy(tmpdir, "/tmp/certmap-test-accesslog-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(accesslog, .init = setup, .fini = teardown);

static struct cm_access_entry entry(void)
{
	struct cm_access_entry e = {
		.when = {T_2026_11_22_10_00_00 + 5, 987654321},
		.s_ip = "192.0.2.10",
		.s_port = 443,
		.method = "POST",
		.uri_stem = "/Microsoft-Server-ActiveSync",
		.uri_query = "Cmd=Sync&User=alice&DeviceId=ABC123&DeviceType=iPhone",
		.username = "LAB\\alice",
		.c_ip = "198.51.100.7",
		.user_agent = "Apple-iPhone9C1/1602.92",
		.referer = NULL,
		.status = 200,
		.substatus = 0,
		.win32_status = 0,
		.time_taken_ms = 31,
	};
	return e;
}

static char *path_in(const char *name)
{
	return cm_strdup_printf("%s/%s", tmpdir, name);
}

static char *slurp(const char *path)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	struct cm_err err = {{0}};

	cr_assert_eq(cm_file_read(path, 1u << 24, &buf, &len, &err), 0, "%s", err.msg);
	return (char *)buf;
}

/* Splits a line on single spaces; returns the number of fields. */
static size_t split(char *line, char **fields, size_t max)
{
	size_t n = 0;

	for (char *s = line, *sp; n < max; s = sp + 1) {
		fields[n++] = s;
		sp = strchr(s, ' ');
		if (sp == NULL)
			break;
		*sp = '\0';
	}
	return n;
}

Test(accesslog, full_line)
{
	struct cm_access_entry e = entry();
	char buf[4096];
	const char *want = "2026-11-22 10:00:05 192.0.2.10 POST /Microsoft-Server-ActiveSync "
			   "Cmd=Sync&User=alice&DeviceId=ABC123&DeviceType=iPhone 443 LAB\\alice "
			   "198.51.100.7 Apple-iPhone9C1/1602.92 - 200 0 0 31";

	cr_assert_eq(cm_accesslog_format(&e, buf, sizeof(buf)), (int)strlen(want));
	cr_assert_str_eq(buf, want);

	e.status = 403;
	e.substatus = 16;
	e.win32_status = 5;
	e.time_taken_ms = 1234567;
	e.username = NULL;
	e.uri_query = "";
	e.s_port = 0;
	e.referer = "https://example.test/a b";
	cr_assert_gt(cm_accesslog_format(&e, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf,
			 "2026-11-22 10:00:05 192.0.2.10 POST /Microsoft-Server-ActiveSync - - "
			 "- 198.51.100.7 Apple-iPhone9C1/1602.92 https://example.test/a+b 403 "
			 "16 5 1234567");
}

Test(accesslog, date_time_are_utc)
{
	struct cm_access_entry e = entry();
	char buf[4096];

	setenv("TZ", "America/New_York", 1);
	tzset();
	e.when.tv_sec = T_2026_11_22_10_00_00 + 14 * 3600 - 1; /* 23:59:59 UTC */
	cr_assert_gt(cm_accesslog_format(&e, buf, sizeof(buf)), 0);
	cr_assert(strncmp(buf, "2026-11-22 23:59:59 ", 20) == 0, "%s", buf);
	unsetenv("TZ");
	tzset();
}

struct esc_row {
	const char *in;
	const char *out;
};

static const struct esc_row esc_rows[] = {
	{NULL, "-"},
	{"", "-"},
	{"Apple iPhone/1.0", "Apple+iPhone/1.0"},
	{"a  b", "a++b"},
	{"a+b", "a+b"},
	{"50%25 off", "50%25+off"},
	{"a\tb", "a%09b"},
	{"a\nb", "a%0Ab"},
	{"a\rb", "a%0Db"},
	{"a\r\nb", "a%0D%0Ab"},
	{"\x01\x1f\x7f", "%01%1F%7F"},
	{"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91", "caf\xc3\xa9+\xe2\x82\xac+\xf0\x9f\x94\x91"},
	{"\xff\xfe", "%FF%FE"},
	{"x\xc3", "x%C3"},                    /* truncated sequence */
	{"\xc3(", "%C3("},                    /* bad continuation */
	{"\xc0\xaf", "%C0%AF"},               /* overlong '/' */
	{"\xe0\x80\xaf", "%E0%80%AF"},        /* overlong, 3 bytes */
	{"\xed\xa0\x80", "%ED%A0%80"},        /* UTF-16 surrogate */
	{"\xf4\x90\x80\x80", "%F4%90%80%80"}, /* above U+10FFFF */
	{"\xc2\x85", "\xc2\x85"},             /* U+0085 is valid UTF-8: kept */
	{"-", "-"},
};

Test(accesslog, escaping_table)
{
	char buf[8192];
	char *f[32];

	for (size_t i = 0; i < sizeof(esc_rows) / sizeof(esc_rows[0]); i++) {
		const char *fields[] = {"s_ip",     "method", "uri_stem",   "uri_query",
					"username", "c_ip",   "user_agent", "referer"};
		static const int pos[] = {2, 3, 4, 5, 7, 8, 9, 10};

		for (size_t k = 0; k < sizeof(pos) / sizeof(pos[0]); k++) {
			struct cm_access_entry e = entry();
			const char **slot[] = {&e.s_ip,     &e.method, &e.uri_stem,   &e.uri_query,
					       &e.username, &e.c_ip,   &e.user_agent, &e.referer};
			int n;

			*slot[k] = esc_rows[i].in;
			n = cm_accesslog_format(&e, buf, sizeof(buf));
			cr_assert_gt(n, 0);
			cr_assert_eq(strlen(buf), (size_t)n);
			for (const unsigned char *p = (const unsigned char *)buf; *p; p++)
				cr_assert(*p >= 0x20 && *p != 0x7f, "row %zu: control byte in %s",
					  i, buf);
			cr_assert_eq(split(buf, f, 32), 15, "row %zu field %s", i, fields[k]);
			cr_assert_str_eq(f[pos[k]], esc_rows[i].out, "row %zu field %s", i,
					 fields[k]);
		}
	}
}

Test(accesslog, forged_line_stays_one_line)
{
	struct cm_access_entry e = entry();
	char buf[8192], *f[32];

	e.user_agent =
		"x\n2026-11-22 10:00:00 192.0.2.10 GET / - 443 LAB\\admin 10.0.0.1 - - 200 0 0 1";
	cr_assert_gt(cm_accesslog_format(&e, buf, sizeof(buf)), 0);
	cr_assert_null(strchr(buf, '\n'));
	cr_assert_eq(split(buf, f, 32), 15);
	cr_assert_str_eq(f[9],
			 "x%0A2026-11-22+10:00:00+192.0.2.10+GET+/+-+443+LAB\\admin+10.0.0.1+-"
			 "+-+200+0+0+1");
}

Test(accesslog, long_field_is_cut_on_a_boundary)
{
	struct cm_access_entry e = entry();
	size_t big = 3 * CM_ACCESSLOG_MAX_FIELD_BYTES;
	char *ua = malloc(big + 1), *buf = malloc(4 * big), *f[32];

	/* 'a' then newlines: escapes of 3 bytes must not be split at the cut. */
	ua[0] = 'a';
	memset(ua + 1, '\n', big - 1);
	ua[big] = '\0';
	e.user_agent = ua;
	cr_assert_gt(cm_accesslog_format(&e, buf, 4 * big), 0);
	cr_assert_eq(split(buf, f, 32), 15);
	cr_assert_leq(strlen(f[9]), CM_ACCESSLOG_MAX_FIELD_BYTES);
	cr_assert_eq(strlen(f[9]), 1 + 3 * ((CM_ACCESSLOG_MAX_FIELD_BYTES - 1) / 3));
	cr_assert_str_eq(f[9] + strlen(f[9]) - 3, "%0A");
	free(ua);
	free(buf);
}

Test(accesslog, small_buffer_is_an_error)
{
	struct cm_access_entry e = entry();
	char buf[4096];
	int n = cm_accesslog_format(&e, buf, sizeof(buf));

	cr_assert_gt(n, 0);
	cr_assert_eq(cm_accesslog_format(&e, buf, (size_t)n), -1); /* no room for the NUL */
	cr_assert_eq(cm_accesslog_format(&e, buf, (size_t)n + 1), n);
	cr_assert_eq(cm_accesslog_format(&e, buf, 10), -1);
}

static void check_header(char **lines)
{
	int y, mo, d, h, mi, s;
	char extra;

	cr_assert_str_eq(lines[0], "#Software: certmap " CERTMAP_VERSION);
	cr_assert_str_eq(lines[1], "#Version: 1.0");
	cr_assert_eq(sscanf(lines[2], "#Date: %4d-%2d-%2d %2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &s,
			    &extra),
		     6, "%s", lines[2]);
	cr_assert_eq(strlen(lines[2]), strlen("#Date: 2026-11-22 10:00:00"));
	cr_assert_str_eq(lines[3], FIELDS_LINE);
}

/* Splits text into lines (in place); returns the count. A trailing "\n" is required. */
static size_t lines_of(char *text, char **lines, size_t max)
{
	size_t n = 0;
	char *s = text, *nl;

	while (*s != '\0' && n < max && (nl = strchr(s, '\n')) != NULL) {
		*nl = '\0';
		lines[n++] = s;
		s = nl + 1;
	}
	cr_assert_eq(*s, '\0', "unterminated last line: %s", s);
	return n;
}

Test(accesslog, header_on_new_file)
{
	char *p = path_in("new.log"), *text, *lines[16], want[4096];
	struct cm_accesslog *log = NULL;
	struct cm_err err = {{0}};
	struct cm_access_entry e = entry();
	struct stat st;
	mode_t mask = umask(022);

	umask(mask);
	cr_assert_eq(cm_accesslog_open(p, &log, &err), 0, "%s", err.msg);
	cr_assert_eq(stat(p, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0640 & ~mask);
	cm_accesslog_write(log, &e);
	cm_accesslog_close(log);

	cr_assert_gt(cm_accesslog_format(&e, want, sizeof(want)), 0);
	text = slurp(p);
	cr_assert_eq(lines_of(text, lines, 16), 5, "%s", text);
	check_header(lines);
	cr_assert_str_eq(lines[4], want);
	free(text);
	free(p);
}

Test(accesslog, no_header_on_non_empty_file)
{
	char *p = path_in("old.log"), *text, want[4096], *expect;
	struct cm_accesslog *log = NULL;
	struct cm_err err = {{0}};
	struct cm_access_entry e = entry();
	FILE *f = fopen(p, "w");

	cr_assert_not_null(f);
	fputs("#Software: certmap 0.0.1\nearlier line\n", f);
	fclose(f);
	cr_assert_eq(cm_accesslog_open(p, &log, &err), 0, "%s", err.msg);
	cm_accesslog_write(log, &e);
	cm_accesslog_close(log);

	cr_assert_gt(cm_accesslog_format(&e, want, sizeof(want)), 0);
	expect = cm_strdup_printf("#Software: certmap 0.0.1\nearlier line\n%s\n", want);
	text = slurp(p);
	cr_assert_str_eq(text, expect);
	free(expect);
	free(text);
	free(p);
}

Test(accesslog, flush_writes_pending_lines)
{
	char *p = path_in("flush.log"), *text, *lines[16];
	struct cm_accesslog *log = NULL;
	struct cm_err err = {{0}};
	struct cm_access_entry e = entry();

	cr_assert_eq(cm_accesslog_open(p, &log, &err), 0, "%s", err.msg);
	cm_accesslog_write(log, &e);
	cm_accesslog_write(log, &e);
	cm_accesslog_flush(log);
	text = slurp(p); /* the log is still open */
	cr_assert_eq(lines_of(text, lines, 16), 6, "%s", text);
	free(text);
	cm_accesslog_flush(log); /* nothing pending: no-op */
	cm_accesslog_close(log);
	text = slurp(p);
	cr_assert_eq(lines_of(text, lines, 16), 6, "%s", text);
	free(text);
	free(p);
}

Test(accesslog, reopen_after_rename_starts_a_new_file_with_header)
{
	char *p = path_in("access.log"), *rotated = path_in("access.log.1"), *text, *lines[16];
	struct cm_accesslog *log = NULL;
	struct cm_err err = {{0}};
	struct cm_access_entry a = entry(), b = entry(), c = entry();
	char la[4096], lb[4096], lc[4096];

	a.uri_stem = "/a";
	b.uri_stem = "/b";
	c.uri_stem = "/c";
	cm_accesslog_format(&a, la, sizeof(la));
	cm_accesslog_format(&b, lb, sizeof(lb));
	cm_accesslog_format(&c, lc, sizeof(lc));

	cr_assert_eq(cm_accesslog_open(p, &log, &err), 0, "%s", err.msg);
	cm_accesslog_write(log, &a);
	cm_accesslog_flush(log);
	cr_assert_eq(rename(p, rotated), 0); /* logrotate */
	cm_accesslog_write(log, &b);         /* logged before the signal: old file */
	cr_assert_eq(cm_accesslog_reopen(log, &err), 0, "%s", err.msg); /* SIGUSR1 */
	cm_accesslog_write(log, &c);
	cm_accesslog_close(log);

	text = slurp(rotated);
	cr_assert_eq(lines_of(text, lines, 16), 6, "%s", text);
	check_header(lines);
	cr_assert_str_eq(lines[4], la);
	cr_assert_str_eq(lines[5], lb);
	free(text);
	text = slurp(p);
	cr_assert_eq(lines_of(text, lines, 16), 5, "%s", text);
	check_header(lines);
	cr_assert_str_eq(lines[4], lc);
	free(text);
	free(rotated);
	free(p);
}

Test(accesslog, failed_reopen_keeps_the_old_file)
{
	char *dir = path_in("d"), *dir2 = path_in("d2"), *p = path_in("d/a.log"),
	     *moved = path_in("d2/a.log"), *text, *lines[16];
	struct cm_accesslog *log = NULL;
	struct cm_err err = {{0}};
	struct cm_access_entry e = entry();

	cr_assert_eq(mkdir(dir, 0700), 0);
	cr_assert_eq(cm_accesslog_open(p, &log, &err), 0, "%s", err.msg);
	cr_assert_eq(rename(dir, dir2), 0);
	cr_assert_eq(cm_accesslog_reopen(log, &err), -1);
	cr_assert(strstr(err.msg, "d/a.log: No such file or directory") != NULL, "%s", err.msg);
	cm_accesslog_write(log, &e);
	cm_accesslog_close(log);
	text = slurp(moved);
	cr_assert_eq(lines_of(text, lines, 16), 5, "%s", text);
	free(text);
	free(dir);
	free(dir2);
	free(p);
	free(moved);
}

Test(accesslog, open_error_names_the_path)
{
	struct cm_accesslog *log = (struct cm_accesslog *)&log;
	struct cm_err err = {{0}};

	cr_assert_eq(cm_accesslog_open("/nonexistent/dir/a.log", &log, &err), -1);
	cr_assert_null(log);
	cr_assert_str_eq(err.msg, "/nonexistent/dir/a.log: No such file or directory");
	cm_accesslog_close(NULL);
	cm_accesslog_write(NULL, NULL);
	cm_accesslog_flush(NULL);
}

Test(accesslog, write_errors_do_not_stop_logging)
{
	struct cm_accesslog *log = NULL;
	struct cm_err err = {{0}};
	struct cm_access_entry e = entry();

	if (access("/dev/full", W_OK) != 0)
		cr_skip_test("no /dev/full");
	cr_assert_eq(cm_accesslog_open("/dev/full", &log, &err), 0, "%s", err.msg);
	for (int i = 0; i < 2000; i++) /* > one buffer: the synchronous path fails too */
		cm_accesslog_write(log, &e);
	cm_accesslog_flush(log);
	cm_accesslog_close(log);
}

#define THREADS 4
#define PER_THREAD 2000

static void *writer(void *arg)
{
	struct cm_accesslog *log = arg;
	struct cm_access_entry e = entry();

	for (int i = 0; i < PER_THREAD; i++) {
		e.time_taken_ms = (uint64_t)i;
		cm_accesslog_write(log, &e);
	}
	return NULL;
}

Test(accesslog, concurrent_writers_beyond_the_buffer_keep_lines_whole)
{
	char *p = path_in("many.log"), *text, *f[32];
	struct cm_accesslog *log = NULL;
	struct cm_err err = {{0}};
	pthread_t t[THREADS];
	size_t n = 0;
	char *s, *nl;

	cr_assert_eq(cm_accesslog_open(p, &log, &err), 0, "%s", err.msg);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, writer, log), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	cm_accesslog_close(log);

	text = slurp(p);
	cr_assert_gt(strlen(text), 2 * CM_ACCESSLOG_BUFFER_BYTES);
	for (s = text; (nl = strchr(s, '\n')) != NULL; s = nl + 1) {
		*nl = '\0';
		if (s[0] == '#')
			continue;
		cr_assert_eq(split(s, f, 32), 15);
		cr_assert_str_eq(f[0], "2026-11-22");
		n++;
	}
	cr_assert_eq(n, (size_t)THREADS * PER_THREAD);
	free(text);
	free(p);
}
