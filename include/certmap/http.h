/*
 * http — pure helpers of the HTTP front end: request-path normalization
 * (DESIGN §6 "Locations") and header classification (DESIGN §7).
 * No state; every function is reentrant.
 */
#ifndef CERTMAP_HTTP_H
#define CERTMAP_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define CM_HTTP_MAX_PATH_BYTES 8192

/* Normalizes the path part of a request-target (no query): percent-decodes
 * unreserved characters (ALPHA DIGIT - . _ ~), keeps other escapes (hex
 * uppercased), resolves "." and ".." segments, merges repeated slashes.
 * Refuses (-1, *why set): not starting with '/', encoded '/' or '\' or NUL,
 * a raw '\', control bytes, bad escapes, ".." above the root, too long.
 * 0 and out (NUL-terminated) on success. */
int cm_http_normalize_path(const char *path, size_t len, char *out, size_t outlen,
			   const char **why);

/* Inbound identity headers that are always stripped (X-Certmap-*,
 * Client-Cert, Client-Cert-Chain, X-Forwarded-Tls-Client-Cert*, X-SSL-*,
 * X-Client-Cert*). Case-insensitive. */
bool cm_http_is_identity_header(const char *name);

/* Fixed hop-by-hop headers (Connection, Keep-Alive, Proxy-Connection, TE,
 * Trailer, Transfer-Encoding, Upgrade, Proxy-Authorization,
 * Proxy-Authenticate). Names listed in Connection: are checked with
 * cm_http_connection_lists(). */
bool cm_http_is_hop_header(const char *name);

/* True when the Connection header value lists name as a token. */
bool cm_http_connection_lists(const char *connection_value, const char *name);

/* RFC 9110 token characters only (and not empty). */
bool cm_http_valid_header_name(const char *name);

#endif
