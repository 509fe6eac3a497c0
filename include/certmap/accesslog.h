/*
 * accesslog — the IIS W3C access log (DESIGN §8), one line per request.
 *   #Software: certmap <version>
 *   #Version: 1.0
 *   #Date: 2026-11-22 10:00:00
 *   #Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip
 *            cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken
 * UTC times; empty fields are "-"; spaces become "+" as in IIS ('+' itself
 * is kept, as IIS does); other control bytes (< 0x20, 0x7f) and invalid
 * UTF-8 are percent-escaped (%XX) so one request is always one line. The header block
 * starts every new (empty) file. Lines are buffered and written at most 1 s
 * behind (a flusher thread), immediately when the buffer fills.
 * Threading: every function may be called from any thread (internal mutex).
 */
#ifndef CERTMAP_ACCESSLOG_H
#define CERTMAP_ACCESSLOG_H

#include <stdint.h>
#include <time.h>

#include "certmap/util.h"

#define CM_ACCESSLOG_MAX_FIELD_BYTES 2048 /* a longer field is cut */
#define CM_ACCESSLOG_BUFFER_BYTES (64u * 1024u)

struct cm_accesslog;

struct cm_access_entry {
	struct timespec when; /* request start, wall clock (CLOCK_REALTIME) */
	const char *s_ip;     /* server address the request came in on */
	int s_port;
	const char *method;
	const char *uri_stem;  /* normalized path */
	const char *uri_query; /* raw query without '?', or NULL */
	const char *username;  /* NETBIOS\sam, or NULL */
	const char *c_ip;
	const char *user_agent; /* or NULL */
	const char *referer;    /* or NULL */
	int status;
	int substatus;
	uint32_t win32_status;
	uint64_t time_taken_ms;
};

int cm_accesslog_open(const char *path, struct cm_accesslog **out, struct cm_err *err);
void cm_accesslog_write(struct cm_accesslog *log, const struct cm_access_entry *e);
/* Reopens the file by path (logrotate: SIGUSR1); on failure keeps the old one. */
int cm_accesslog_reopen(struct cm_accesslog *log, struct cm_err *err);
void cm_accesslog_flush(struct cm_accesslog *log);
/* Flushes, stops the flusher, closes; accepts NULL. */
void cm_accesslog_close(struct cm_accesslog *log);

/* Formats one line (without the newline) into buf; exposed for tests.
 * Returns the length, or -1 if buf is too small. */
int cm_accesslog_format(const struct cm_access_entry *e, char *buf, size_t len);

#endif
