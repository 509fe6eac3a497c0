/*
 * trace — the ordered list of steps a decision took ("x509: …", "ldap: …").
 * Shown by `certmapctl check --trace`, written to the audit log.
 * Bounded: at most CM_TRACE_MAX_LINES lines of CM_TRACE_MAX_LINE_BYTES each;
 * text is sanitized on entry (untrusted DNs, URLs may be part of it).
 * Threading: one trace belongs to one decision; not shared.
 */
#ifndef CERTMAP_TRACE_H
#define CERTMAP_TRACE_H

#include <stddef.h>

#define CM_TRACE_MAX_LINES 64
#define CM_TRACE_MAX_LINE_BYTES 512

struct cm_trace {
	char **lines;
	size_t n;
	size_t dropped; /* lines over the bound */
};

void cm_trace_add(struct cm_trace *trace, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void cm_trace_free(struct cm_trace *trace);

#endif
