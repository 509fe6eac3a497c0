/*
 * util — small shared helpers (see include/certmap/util.h).
 * No state; every function is reentrant.
 */
#include "certmap/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void cm_err_set(struct cm_err *err, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

/* Reads at most max bytes; one byte more is an error (the file is larger). */
static int read_fd(int fd, const char *path, size_t max, unsigned char **out, size_t *len,
		   struct cm_err *err)
{
	size_t cap = max < 4096 ? max + 1 : 4096, n = 0;
	unsigned char *buf = malloc(cap + 1);

	if (buf == NULL) {
		cm_err_set(err, "%s: out of memory", path);
		return -1;
	}
	for (;;) {
		ssize_t r;

		if (n == cap) {
			unsigned char *nb;

			if (cap > max)
				break;
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			nb = realloc(buf, cap + 1);
			if (nb == NULL) {
				cm_err_set(err, "%s: out of memory", path);
				free(buf);
				return -1;
			}
			buf = nb;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			cm_err_set(err, "%s: %s", path, strerror(errno));
			free(buf);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > max) {
		cm_err_set(err, "%s: larger than %zu bytes", path, max);
		free(buf);
		return -1;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

int cm_file_read(const char *path, size_t max, unsigned char **out, size_t *len, struct cm_err *err)
{
	int fd, rc;

	*out = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		cm_err_set(err, "%s: %s", path, strerror(errno));
		return -1;
	}
	rc = read_fd(fd, path, max, out, len, err);
	close(fd);
	return rc;
}

int cm_secret_read(const char *path, char **out, struct cm_err *err)
{
	struct stat st;
	unsigned char *buf = NULL;
	size_t len = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		cm_err_set(err, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		cm_err_set(err, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		cm_err_set(err, "%s: not a regular file", path);
		close(fd);
		return -1;
	}
	if ((st.st_mode & 077) != 0) {
		cm_err_set(
			err,
			"%s is readable by group or others (mode %04o); expected mode 0600 or stricter",
			path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	rc = read_fd(fd, path, 64 * 1024, &buf, &len, err);
	close(fd);
	if (rc != 0)
		return -1;
	if (len > 0 && buf[len - 1] == '\n') {
		buf[--len] = '\0';
		if (len > 0 && buf[len - 1] == '\r')
			buf[--len] = '\0';
	}
	if (memchr(buf, '\0', len) != NULL) {
		cm_err_set(err, "%s: contains a NUL byte", path);
		explicit_bzero(buf, len);
		free(buf);
		return -1;
	}
	*out = (char *)buf;
	return 0;
}

void cm_secret_free(char *secret)
{
	if (secret == NULL)
		return;
	explicit_bzero(secret, strlen(secret));
	free(secret);
}

int cm_hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void cm_hex_lower(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

char *cm_path_resolve(const char *base_dir, const char *path)
{
	if (path[0] == '/' || base_dir == NULL || base_dir[0] == '\0')
		return strdup(path);
	return cm_strdup_printf("%s/%s", base_dir, path);
}

char *cm_memdup_str(const void *data, size_t len)
{
	char *s = malloc(len + 1);

	if (s == NULL)
		return NULL;
	memcpy(s, data, len);
	s[len] = '\0';
	return s;
}

char *cm_strdup_printf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

/* Length of the well-formed UTF-8 sequence at s (1..4, per RFC 3629:
 * no overlongs, no surrogates, nothing above U+10FFFF), or 0. C1 controls
 * (U+0080..U+009F) count as invalid so they are escaped too. */
static size_t utf8_seq_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t need;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		need = 2;
		if (s[0] == 0xc2)
			lo = 0xa0; /* C1 controls */
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		need = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		else if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		need = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		else if (s[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return need;
}

char *cm_sanitize(const char *text, size_t max)
{
	const unsigned char *s = (const unsigned char *)(text ? text : "");
	size_t cap = max + 1, n = 0;
	char *out = malloc(cap);

	if (out == NULL)
		return NULL;
	while (*s != '\0') {
		size_t l = utf8_seq_len(s);
		bool plain = l > 1 || (l == 1 && *s >= 0x20 && *s < 0x7f);

		if (plain) {
			if (n + l > max)
				break;
			memcpy(out + n, s, l);
			n += l;
			s += l;
		} else {
			if (n + 4 > max)
				break;
			snprintf(out + n, 5, "\\x%02x", *s);
			n += 4;
			s++;
		}
	}
	out[n] = '\0';
	return out;
}

double cm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void cm_strv_free(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p != NULL; p++)
		free(*p);
	free(v);
}
