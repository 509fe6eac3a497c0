/*
 * auditlog — JSON lines, one per computed decision (DESIGN §8): top-level
 * keys time, client_ip, decision, reason, status, substatus, method, user
 * (object or null), cert (sha256, subject, issuer, serial) or null,
 * directory_ms, trace; plus request_id and detail.
 * Written line by line (each line is flushed whole, at most 1 s behind).
 * Threading: any thread (internal mutex).
 */
#ifndef CERTMAP_AUDITLOG_H
#define CERTMAP_AUDITLOG_H

#include <time.h>

#include "certmap/engine.h"
#include "certmap/util.h"

struct cm_auditlog;

int cm_auditlog_open(const char *path, struct cm_auditlog **out, struct cm_err *err);
void cm_auditlog_write(struct cm_auditlog *log, const struct timespec *when, const char *client_ip,
		       const char *request_id, const struct cm_decision *d);
int cm_auditlog_reopen(struct cm_auditlog *log, struct cm_err *err);
void cm_auditlog_flush(struct cm_auditlog *log);
void cm_auditlog_close(struct cm_auditlog *log);

/* The line's JSON object (new reference); exposed for tests. */
json_t *cm_auditlog_json(const struct timespec *when, const char *client_ip, const char *request_id,
			 const struct cm_decision *d);

#endif
