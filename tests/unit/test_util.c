#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "certmap/trace.h"
#include "certmap/util.h"

static char tmpdir[64];

static void setup(void)
{
	strcpy(tmpdir, "/tmp/certmap-test-util-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

static char *write_file(const char *name, const char *content, mode_t mode)
{
	char *path = cm_strdup_printf("%s/%s", tmpdir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	cr_assert_eq(chmod(path, mode), 0);
	return path;
}

TestSuite(util, .init = setup, .fini = teardown);

Test(util, secret_refuses_group_or_world_readable)
{
	char *p = write_file("pw", "s3cret\n", 0644);
	char *s = NULL;
	struct cm_err err = {{0}};

	cr_assert_eq(cm_secret_read(p, &s, &err), -1);
	cr_assert_null(s);
	cr_assert(strstr(err.msg, "readable by group or others (mode 0644)") != NULL, "%s",
		  err.msg);
	cr_assert_eq(chmod(p, 0640), 0);
	cr_assert_eq(cm_secret_read(p, &s, &err), -1);
	cr_assert_eq(chmod(p, 0600), 0);
	cr_assert_eq(cm_secret_read(p, &s, &err), 0, "%s", err.msg);
	cr_assert_str_eq(s, "s3cret");
	cm_secret_free(s);
	free(p);
}

Test(util, secret_strips_one_newline_only)
{
	char *p = write_file("pw", "a b\r\n", 0600), *q = write_file("pw2", "x\n\n", 0400);
	char *s = NULL;
	struct cm_err err = {{0}};

	cr_assert_eq(cm_secret_read(p, &s, &err), 0);
	cr_assert_str_eq(s, "a b");
	cm_secret_free(s);
	cr_assert_eq(cm_secret_read(q, &s, &err), 0);
	cr_assert_str_eq(s, "x\n");
	cm_secret_free(s);
	cr_assert_eq(cm_secret_read("/nonexistent/pw", &s, &err), -1);
	cr_assert(strstr(err.msg, "No such file") != NULL, "%s", err.msg);
	free(p);
	free(q);
}

Test(util, file_read_is_bounded)
{
	char *p = write_file("big", "0123456789", 0644);
	unsigned char *buf = NULL;
	size_t len = 0;
	struct cm_err err = {{0}};

	cr_assert_eq(cm_file_read(p, 5, &buf, &len, &err), -1);
	cr_assert(strstr(err.msg, "larger than 5 bytes") != NULL, "%s", err.msg);
	cr_assert_eq(cm_file_read(p, 10, &buf, &len, &err), 0);
	cr_assert_eq(len, 10);
	cr_assert_str_eq((char *)buf, "0123456789");
	free(buf);
	free(p);
}

Test(util, sanitize_escapes_controls_and_bad_utf8)
{
	char *s = cm_sanitize("a\nb\x01\xff \xc3\xa9 \"q\"", 100);

	cr_assert_str_eq(s, "a\\x0ab\\x01\\xff \xc3\xa9 \"q\"");
	free(s);
	s = cm_sanitize("\xed\xa0\x80|\xe0\x80\xaf|\xf4\x90\x80\x80|\xc2\x9b|\xf0\x9f\x98\x80",
			100);
	cr_assert_str_eq(
		s,
		"\\xed\\xa0\\x80|\\xe0\\x80\\xaf|\\xf4\\x90\\x80\\x80|\\xc2\\x9b|\xf0\x9f\x98\x80");
	free(s);
	s = cm_sanitize("abcdef", 3);
	cr_assert_str_eq(s, "abc");
	free(s);
	s = cm_sanitize("ab\n", 4); /* no room for a whole escape: cut before it */
	cr_assert_str_eq(s, "ab");
	free(s);
	s = cm_sanitize(NULL, 4);
	cr_assert_str_eq(s, "");
	free(s);
}

Test(util, hex_and_paths)
{
	const unsigned char in[] = {0x00, 0xab, 0x7f, 0xff};
	char out[9];
	char *p;

	cm_hex_lower(in, sizeof(in), out);
	cr_assert_str_eq(out, "00ab7fff");
	p = cm_path_resolve("/etc/certmap", "ca.pem");
	cr_assert_str_eq(p, "/etc/certmap/ca.pem");
	free(p);
	p = cm_path_resolve("/etc/certmap", "/abs/ca.pem");
	cr_assert_str_eq(p, "/abs/ca.pem");
	free(p);
}

Test(util, trace_is_bounded_and_sanitized)
{
	struct cm_trace t = {0};

	for (int i = 0; i < CM_TRACE_MAX_LINES + 5; i++)
		cm_trace_add(&t, "line %d %s", i, i == 0 ? "evil\r\ninjected" : "");
	cr_assert_eq(t.n, CM_TRACE_MAX_LINES);
	cr_assert_eq(t.dropped, 5);
	cr_assert_str_eq(t.lines[0], "line 0 evil\\x0d\\x0ainjected");
	cm_trace_free(&t);
	cr_assert_eq(t.n, 0);
}
