/*
 * fetch — bounded HTTP GET/POST for revocation data (CDP CRLs, OCSP).
 * libcurl easy interface, blocking, one call = one transfer. Only http://
 * URLs (RFC 5280 §4.2.1.13 / RFC 6960 transports; https:// is refused: a
 * CRL or OCSP answer is signed, and TLS to a responder whose own revocation
 * would need checking is a loop). No redirects, no proxy from the
 * environment, no cookies; connect + transfer bounded by timeout_ms in all;
 * bodies larger than max_bytes abort the transfer. Status other than 200 is
 * an error naming the status.
 * Threading: calls are independent; safe from any thread once
 * curl_global_init has run (cm_fetch_global_init, idempotent).
 */
#ifndef CERTMAP_FETCH_H
#define CERTMAP_FETCH_H

#include <stddef.h>

#include "certmap/util.h"

void cm_fetch_global_init(void);

/* GET url; on success *body (malloc'd, len *len) and 0. On failure -1 and
 * err names the URL and the cause ("timed out after 3000 ms", "HTTP 404",
 * "connection refused", "larger than 1048576 bytes", "unsupported scheme"). */
int cm_fetch_get(const char *url, int timeout_ms, size_t max_bytes, unsigned char **body,
		 size_t *len, struct cm_err *err);

/* POST req (content_type) to url; same contract as cm_fetch_get. */
int cm_fetch_post(const char *url, const char *content_type, const unsigned char *req,
		  size_t req_len, int timeout_ms, size_t max_bytes, unsigned char **body,
		  size_t *len, struct cm_err *err);

#endif
