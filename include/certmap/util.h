/*
 * util — small shared helpers for libcertmap: the error out-param, bounded
 * file reads, secret files, hex, path resolution.
 * Threading: every function is reentrant; nothing here keeps state.
 */
#ifndef CERTMAP_UTIL_H
#define CERTMAP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CM_ERR_MAX_MSG 256
/* Largest file any loader reads whole (certificates, CRL files, configs). */
#define CM_UTIL_MAX_FILE_BYTES (64u * 1024u * 1024u)

/* Error out-param, filled on failure like jansson's json_error_t. */
struct cm_err {
	char msg[CM_ERR_MAX_MSG];
};

void cm_err_set(struct cm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads a whole file (at most max bytes, else an error naming the limit).
 * *out is malloc'd and NUL-terminated (the NUL is not counted in *len). */
int cm_file_read(const char *path, size_t max, unsigned char **out, size_t *len,
		 struct cm_err *err);

/* Reads a secret file: refuses group/world-readable files (mode & 077),
 * strips one trailing newline ("\n" or "\r\n"). *out is malloc'd; wipe it
 * with cm_secret_free(). */
int cm_secret_read(const char *path, char **out, struct cm_err *err);
void cm_secret_free(char *secret);

/* Frees a NULL-terminated array of malloc'd strings (NULL is fine). */
void cm_strv_free(char **v);

/* Value of one hex digit, or -1. */
int cm_hex_value(int c);

/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void cm_hex_lower(const unsigned char *in, size_t len, char *out);

/* Path relative to base_dir unless absolute; malloc'd. */
char *cm_path_resolve(const char *base_dir, const char *path);

/* Copies exactly len bytes and adds a NUL (the source need not be
 * NUL-terminated, unlike strndup's contract under strict checkers). */
char *cm_memdup_str(const void *data, size_t len);

/* malloc'd printf; NULL on allocation failure. */
char *cm_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Copies text for logs/traces: control bytes, DEL and bytes
 * that are not valid UTF-8 become \xNN; result truncated to max bytes. */
char *cm_sanitize(const char *text, size_t max);

/* Monotonic milliseconds, for latency measurements. */
double cm_now_ms(void);

#endif
