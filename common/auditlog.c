/*
 * auditlog — one JSON object per computed decision (include/certmap/auditlog.h,
 * DESIGN §8). Keys, in this order: time, request_id, client_ip, decision,
 * reason, status, substatus, detail, method, user, cert, directory_ms,
 * revocation ({status, source} or null), trace.
 * The decision part comes from cm_decision_to_json(); the strings that can
 * carry peer or directory bytes (detail, user, cert) are rebuilt here so
 * that text which is not valid UTF-8 is kept, sanitized, instead of being
 * dropped by jansson. Lines are dumped JSON_COMPACT|JSON_ENSURE_ASCII: no
 * raw control bytes, no non-ASCII, one object is always one line.
 * Buffering, reopen and close are common/logfile.c's.
 * Threading: no state of its own; see logfile.h.
 */
#include "certmap/auditlog.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logfile.h"

#define TEXT_MAX_BYTES 4096 /* a sanitized replacement string is cut here */

struct cm_auditlog {
	struct cm_logfile *file;
};

/* A JSON string for text, or null; text that jansson refuses (invalid
 * UTF-8) is replaced by its cm_sanitize() form. */
static json_t *text(const char *s)
{
	json_t *j;
	char *clean;

	if (s == NULL)
		return json_null();
	if ((j = json_string(s)) != NULL)
		return j;
	clean = cm_sanitize(s, TEXT_MAX_BYTES);
	j = clean != NULL ? json_string(clean) : NULL;
	free(clean);
	return j != NULL ? j : json_null();
}

static json_t *user_json(const struct cm_user *u)
{
	json_t *o;

	if (u == NULL)
		return json_null();
	o = json_object();
	json_object_set_new(o, "dn", text(u->dn));
	json_object_set_new(o, "name", text(u->name));
	json_object_set_new(o, "sAMAccountName", text(u->sam));
	json_object_set_new(o, "userPrincipalName", text(u->upn));
	return o;
}

static json_t *cert_json(const struct cm_decision *d)
{
	json_t *o;

	if (!d->has_cert)
		return json_null();
	o = json_object();
	json_object_set_new(o, "sha256", text(d->cert.sha256));
	json_object_set_new(o, "subject", text(d->cert.subject));
	json_object_set_new(o, "issuer", text(d->cert.issuer));
	json_object_set_new(o, "serial", text(d->cert.serial));
	return o;
}

/* Copies key from src (borrowed) to dst; null when src lacks it. */
static void copy_key(json_t *dst, const json_t *src, const char *key)
{
	json_t *v = json_object_get(src, key);

	json_object_set_new(dst, key, v != NULL ? json_incref(v) : json_null());
}

json_t *cm_auditlog_json(const struct timespec *when, const char *client_ip, const char *request_id,
			 const struct cm_decision *d)
{
	struct timespec now;
	struct tm tm;
	char ts[80];
	json_t *o, *dj;
	double ms;

	if (when == NULL) {
		clock_gettime(CLOCK_REALTIME, &now);
		when = &now;
	}
	if (gmtime_r(&when->tv_sec, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (long)(when->tv_nsec / 1000000L) % 1000L);

	o = json_object();
	dj = cm_decision_to_json(d);
	if (o == NULL || dj == NULL) {
		json_decref(o);
		json_decref(dj);
		return NULL;
	}
	json_object_set_new(o, "time", json_string(ts));
	json_object_set_new(o, "request_id", text(request_id));
	json_object_set_new(o, "client_ip", text(client_ip));
	copy_key(o, dj, "decision");
	copy_key(o, dj, "reason");
	copy_key(o, dj, "status");
	copy_key(o, dj, "substatus");
	json_object_set_new(o, "detail", text(d->detail));
	copy_key(o, dj, "method");
	json_object_set_new(o, "user", user_json(d->user));
	json_object_set_new(o, "cert", cert_json(d));
	/* Microsecond resolution is all a latency in ms needs. */
	ms = d->directory_ms;
	if (!isfinite(ms) || ms < 0.0)
		ms = 0.0;
	else if (ms < 1e12)
		ms = (double)(long long)(ms * 1000.0 + 0.5) / 1000.0;
	json_object_set_new(o, "directory_ms", json_real(ms));
	copy_key(o, dj, "revocation");
	copy_key(o, dj, "trace");
	json_decref(dj);
	return o;
}

int cm_auditlog_open(const char *path, struct cm_auditlog **out, struct cm_err *err)
{
	struct cm_auditlog *log = calloc(1, sizeof(*log));

	*out = NULL;
	if (log == NULL) {
		cm_err_set(err, "%s: out of memory", path);
		return -1;
	}
	if (cm_logfile_open(path, NULL, &log->file, err) != 0) {
		free(log);
		return -1;
	}
	*out = log;
	return 0;
}

void cm_auditlog_write(struct cm_auditlog *log, const struct timespec *when, const char *client_ip,
		       const char *request_id, const struct cm_decision *d)
{
	json_t *o;
	char *line;

	if (log == NULL || d == NULL)
		return;
	o = cm_auditlog_json(when, client_ip, request_id, d);
	if (o == NULL)
		return;
	/* %.10g: 12.345 stays 12.345 instead of 12.345000000000001. */
	line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(10));
	json_decref(o);
	if (line != NULL)
		cm_logfile_write(log->file, line, strlen(line));
	free(line);
}

int cm_auditlog_reopen(struct cm_auditlog *log, struct cm_err *err)
{
	if (log == NULL) {
		cm_err_set(err, "no audit log");
		return -1;
	}
	return cm_logfile_reopen(log->file, err);
}

void cm_auditlog_flush(struct cm_auditlog *log)
{
	if (log != NULL)
		cm_logfile_flush(log->file);
}

void cm_auditlog_close(struct cm_auditlog *log)
{
	if (log == NULL)
		return;
	cm_logfile_close(log->file);
	free(log);
}
