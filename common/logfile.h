/*
 * logfile — private to libcertmap: the buffered, reopenable line file under
 * the access log and the audit log (DESIGN §8).
 * Lines go into a bounded buffer (CM_LOGFILE_BUFFER_BYTES); a flusher thread
 * writes them at most CM_LOGFILE_FLUSH_MS after the first pending line was
 * added; a line that does not fit is written synchronously by the caller,
 * after what was buffered before it. The optional header callback runs
 * whenever the open file is found empty (new file, after reopen following a
 * rotation, after copytruncate) before lines are written to it.
 * Write errors are counted and the data dropped: logging never stops the
 * daemon. Files are opened O_APPEND|O_CREAT|O_CLOEXEC, mode 0640,
 * non-blocking so that a FIFO without reader cannot hang open or write.
 * Threading: every function may be called from any thread. Two locks: io
 * (fd and file writes) is always taken before buf (the pending buffer), so
 * writers only ever wait for disk I/O when the buffer is full.
 */
#ifndef CERTMAP_LOGFILE_H
#define CERTMAP_LOGFILE_H

#include <stddef.h>
#include <stdint.h>

#include "certmap/util.h"

#define CM_LOGFILE_FLUSH_MS 900 /* < 1 s, so lines are never more than 1 s behind */
#define CM_LOGFILE_BUFFER_BYTES (64u * 1024u)

struct cm_logfile;

/* Fills buf with the header block (complete lines); returns its length, or 0
 * for none. Called with the io lock held. */
typedef size_t (*cm_logfile_header_fn)(char *buf, size_t len);

int cm_logfile_open(const char *path, cm_logfile_header_fn header, struct cm_logfile **out,
		    struct cm_err *err);
/* Appends line (len bytes, no newline; the newline is added). */
void cm_logfile_write(struct cm_logfile *lf, const char *line, size_t len);
/* Flushes the buffer to the current file, then opens path again; on failure
 * keeps writing to the old file. */
int cm_logfile_reopen(struct cm_logfile *lf, struct cm_err *err);
void cm_logfile_flush(struct cm_logfile *lf);
/* Flushes, stops the flusher, closes; accepts NULL. */
void cm_logfile_close(struct cm_logfile *lf);
/* Failed or short writes so far (each loses the data of that write). */
uint64_t cm_logfile_write_errors(struct cm_logfile *lf);

#endif
