/*
 * answers — IIS-style error pages and the daemon's stderr log.
 * The first line of an error page (and its HTML title) is IIS's
 * "403.16 - Client certificate is untrusted or invalid."; `errors:
 * detailed` adds the reason and the detail; `custom` never shows account
 * names, DNs or reason codes. Everything is HTML-escaped.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certmapd.h"

static void html_escape(FILE *f, const char *s)
{
	for (; s != NULL && *s != '\0'; s++) {
		switch (*s) {
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '&':
			fputs("&amp;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		case '\'':
			fputs("&#39;", f);
			break;
		default:
			if ((unsigned char)*s < 0x20)
				fputc(' ', f);
			else
				fputc(*s, f);
		}
	}
}

char *error_page(int status, int substatus, const struct cm_verdict *v, bool detailed,
		 const char *reason_override, size_t *len)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	const char *text = cm_status_text(status, substatus);
	char code[16];

	if (f == NULL)
		return NULL;
	snprintf(code, sizeof(code), "%d.%d", status, substatus);
	fprintf(f, "%s - ", code);
	html_escape(f, text);
	fputs("\n<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>", f);
	fprintf(f, "%s - ", code);
	html_escape(f, text);
	fputs("</title></head>\n<body><h1>", f);
	fprintf(f, "%s - ", code);
	html_escape(f, text);
	fputs("</h1>\n", f);
	if (detailed && v != NULL) {
		fputs("<p>Reason: <code>", f);
		html_escape(f, reason_override ? reason_override : cm_reason_name(v->reason));
		fputs("</code></p>\n", f);
		if (v->detail != NULL) {
			fputs("<p>", f);
			html_escape(f, v->detail);
			fputs("</p>\n", f);
		}
		if (v->user_name != NULL) {
			fputs("<p>Account: ", f);
			html_escape(f, v->user_dn ? v->user_dn : v->user_name);
			fputs("</p>\n", f);
		}
		if (v->sha256[0] != '\0')
			fprintf(f, "<p>Certificate SHA-256: %s</p>\n", v->sha256);
	}
	fputs("<hr><p>certmap</p></body></html>\n", f);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*len = size;
	return buf;
}

void logmsg(const char *level, const char *fmt, ...)
{
	char msg[2048], *clean;
	struct timespec ts;
	struct tm tm;
	char when[32];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clean = cm_sanitize(msg, sizeof(msg) - 1);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ certmapd %s: %s\n", when, ts.tv_nsec / 1000000, level,
		clean ? clean : msg);
	free(clean);
}
