/*
 * accesslog — IIS W3C access log (include/certmap/accesslog.h, DESIGN §8).
 * Owns the line format and its escaping; buffering, the flusher thread,
 * reopen and the header-on-empty-file rule are common/logfile.c's.
 * Escaping invariant: a formatted line contains no byte < 0x21 except the
 * single spaces between fields, no 0x7f and only valid UTF-8, so one request
 * is always exactly one line of exactly 15 fields. Text fields: NULL/"" →
 * "-", ' ' → '+', control bytes, DEL and bytes of invalid UTF-8 → %XX; '+'
 * and '%' are kept as they came (IIS does the same).
 * Threading: no state of its own; see logfile.h.
 */
#include "certmap/accesslog.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logfile.h"

#define FIELDS                                                                       \
	"date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip " \
	"cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken"

struct cm_accesslog {
	struct cm_logfile *file;
};

/* Output cursor over a caller's buffer; ok turns false once it overflows. */
struct out {
	char *p;
	size_t len, n;
	bool ok;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (!o->ok || o->n + n >= o->len) {
		o->ok = false;
		return;
	}
	memcpy(o->p + o->n, s, n);
	o->n += n;
	o->p[o->n] = '\0';
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		o->ok = false;
		return;
	}
	put(o, tmp, (size_t)n);
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0. s is NUL-terminated, so a
 * truncated sequence stops at the NUL. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t need;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		need = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		need = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		need = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0; /* overlong */
	else if (s[0] == 0xed)
		hi = 0x9f; /* surrogates */
	else if (s[0] == 0xf0)
		lo = 0x90; /* overlong */
	else if (s[0] == 0xf4)
		hi = 0x8f; /* > U+10FFFF */
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return need;
}

/* One text field, escaped, cut at CM_ACCESSLOG_MAX_FIELD_BYTES output bytes
 * (never inside an escape or a UTF-8 sequence). */
static void put_field(struct out *o, const char *text)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t field = 0;

	if (s == NULL || *s == '\0') {
		put(o, "-", 1);
		return;
	}
	while (*s != '\0') {
		char esc[4];
		const char *chunk = (const char *)s;
		size_t l = utf8_len(s), adv = l, n = l;

		if (l == 1 && *s == ' ') {
			chunk = "+";
		} else if (l == 0 || (l == 1 && (*s < 0x20 || *s == 0x7f))) {
			snprintf(esc, sizeof(esc), "%%%02X", *s);
			chunk = esc;
			adv = 1;
			n = 3;
		}
		if (field + n > CM_ACCESSLOG_MAX_FIELD_BYTES)
			break;
		put(o, chunk, n);
		field += n;
		s += adv;
	}
}

int cm_accesslog_format(const struct cm_access_entry *e, char *buf, size_t len)
{
	struct out o = {.p = buf, .len = len, .n = 0, .ok = buf != NULL && len > 0};
	struct tm tm;
	time_t t = e->when.tv_sec;

	if (o.ok)
		buf[0] = '\0';
	if (gmtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	putf(&o, "%04d-%02d-%02d %02d:%02d:%02d ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
	     tm.tm_hour, tm.tm_min, tm.tm_sec);
	put_field(&o, e->s_ip);
	put(&o, " ", 1);
	put_field(&o, e->method);
	put(&o, " ", 1);
	put_field(&o, e->uri_stem);
	put(&o, " ", 1);
	put_field(&o, e->uri_query);
	if (e->s_port > 0)
		putf(&o, " %d ", e->s_port);
	else
		put(&o, " - ", 3);
	put_field(&o, e->username);
	put(&o, " ", 1);
	put_field(&o, e->c_ip);
	put(&o, " ", 1);
	put_field(&o, e->user_agent);
	put(&o, " ", 1);
	put_field(&o, e->referer);
	putf(&o, " %d %d %" PRIu32 " %" PRIu64, e->status, e->substatus, e->win32_status,
	     e->time_taken_ms);
	return o.ok ? (int)o.n : -1;
}

static size_t header(char *buf, size_t len)
{
	struct timespec now;
	struct tm tm;
	int n;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = snprintf(buf, len,
		     "#Software: certmap %s\n#Version: 1.0\n"
		     "#Date: %04d-%02d-%02d %02d:%02d:%02d\n#Fields: " FIELDS "\n",
		     CERTMAP_VERSION, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec);
	return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

int cm_accesslog_open(const char *path, struct cm_accesslog **out, struct cm_err *err)
{
	struct cm_accesslog *log = calloc(1, sizeof(*log));

	*out = NULL;
	if (log == NULL) {
		cm_err_set(err, "%s: out of memory", path);
		return -1;
	}
	if (cm_logfile_open(path, header, &log->file, err) != 0) {
		free(log);
		return -1;
	}
	*out = log;
	return 0;
}

void cm_accesslog_write(struct cm_accesslog *log, const struct cm_access_entry *e)
{
	/* 9 text fields of at most CM_ACCESSLOG_MAX_FIELD_BYTES, plus numbers. */
	char line[9 * CM_ACCESSLOG_MAX_FIELD_BYTES + 256];
	int n;

	if (log == NULL || e == NULL)
		return;
	n = cm_accesslog_format(e, line, sizeof(line));
	if (n > 0)
		cm_logfile_write(log->file, line, (size_t)n);
}

int cm_accesslog_reopen(struct cm_accesslog *log, struct cm_err *err)
{
	if (log == NULL) {
		cm_err_set(err, "no access log");
		return -1;
	}
	return cm_logfile_reopen(log->file, err);
}

void cm_accesslog_flush(struct cm_accesslog *log)
{
	if (log != NULL)
		cm_logfile_flush(log->file);
}

void cm_accesslog_close(struct cm_accesslog *log)
{
	if (log == NULL)
		return;
	cm_logfile_close(log->file);
	free(log);
}
