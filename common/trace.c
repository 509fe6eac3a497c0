/*
 * trace — bounded, sanitized list of decision steps (include/certmap/trace.h).
 */
#include "certmap/trace.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "certmap/util.h"

void cm_trace_add(struct cm_trace *trace, const char *fmt, ...)
{
	char raw[CM_TRACE_MAX_LINE_BYTES];
	char **lines;
	char *line;
	va_list ap;

	if (trace == NULL)
		return;
	if (trace->n >= CM_TRACE_MAX_LINES) {
		trace->dropped++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	line = cm_sanitize(raw, CM_TRACE_MAX_LINE_BYTES - 1);
	if (line == NULL) {
		trace->dropped++;
		return;
	}
	lines = realloc(trace->lines, (trace->n + 1) * sizeof(*lines));
	if (lines == NULL) {
		free(line);
		trace->dropped++;
		return;
	}
	trace->lines = lines;
	trace->lines[trace->n++] = line;
}

void cm_trace_free(struct cm_trace *trace)
{
	if (trace == NULL)
		return;
	for (size_t i = 0; i < trace->n; i++)
		free(trace->lines[i]);
	free(trace->lines);
	trace->lines = NULL;
	trace->n = 0;
	trace->dropped = 0;
}
