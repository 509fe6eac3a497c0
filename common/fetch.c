/*
 * fetch — bounded HTTP GET/POST for revocation data (include/certmap/fetch.h).
 *
 * One call = one libcurl easy handle, created, used and cleaned up inside
 * the call: nothing is shared between calls, so any thread may fetch once
 * curl_global_init has run (cm_fetch_global_init; the fetch functions call
 * it too, pthread_once makes that free after the first time).
 * Bounds, all set on every handle:
 *   - scheme: "http://" only, checked before libcurl sees the URL and again
 *     by CURLOPT_PROTOCOLS_STR; no redirects (CURLOPT_FOLLOWLOCATION off and
 *     CURLOPT_REDIR_PROTOCOLS_STR "http" should it ever be turned on);
 *   - time: CURLOPT_CONNECTTIMEOUT_MS and CURLOPT_TIMEOUT_MS are both
 *     timeout_ms, so connect + transfer together never exceed it (name
 *     resolution is inside that bound with the threaded resolver Debian's
 *     libcurl uses; CURLOPT_NOSIGNAL because a daemon's threads must not
 *     get SIGALRM);
 *   - size: CURLOPT_MAXFILESIZE_LARGE refuses an announced Content-Length
 *     above max_bytes before the body is read, and the write callback
 *     aborts the transfer as soon as the body would grow past max_bytes
 *     (chunked or lying servers). No Accept-Encoding is sent, so the bytes
 *     on the wire are the bytes kept;
 *   - environment: CURLOPT_NOPROXY "*" and an empty CURLOPT_PROXY ignore
 *     http_proxy & co.; no cookies, no .netrc.
 * The URL usually comes from a certificate (CDP, AIA): error messages carry
 * it through cm_sanitize, cut to URL_SHOWN_MAX bytes so the cause fits too.
 * Every path frees the handle, the header list and the body buffer it made;
 * on failure *body is NULL and *len 0.
 */
#include "certmap/fetch.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#define URL_SHOWN_MAX 160      /* bytes of a (sanitized) URL in an error */
#define CONTENT_TYPE_MAX 128   /* bytes of a POST Content-Type value */
#define BODY_FIRST_ALLOC 16384 /* first body buffer, grown by doubling */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void cm_fetch_global_init(void)
{
	pthread_once(&global_once, global_init);
}

/* The body being received; never more than max bytes. */
struct sink {
	unsigned char *buf;
	size_t len, cap, max;
	bool too_large; /* the write callback refused more data */
	bool no_memory;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct sink *s = userdata;
	size_t n = size * nmemb; /* libcurl: size is always 1 */

	if (n > s->max - s->len) {
		s->too_large = true;
		return 0; /* anything but n aborts with CURLE_WRITE_ERROR */
	}
	if (s->len + n > s->cap) {
		size_t cap = s->cap != 0 ? s->cap : BODY_FIRST_ALLOC;
		unsigned char *p;

		while (cap < s->len + n)
			cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
		if (cap > s->max)
			cap = s->max;
		p = realloc(s->buf, cap);
		if (p == NULL) {
			s->no_memory = true;
			return 0;
		}
		s->buf = p;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
	return n;
}

/* "<url>: <cause>", the URL sanitized and cut. */
__attribute__((format(printf, 3, 4))) static void fail(struct cm_err *err, const char *url,
						       const char *fmt, ...)
{
	char cause[CM_ERR_MAX_MSG];
	char *shown = cm_sanitize(url, URL_SHOWN_MAX);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cause, sizeof(cause), fmt, ap);
	va_end(ap);
	cm_err_set(err, "%s: %s", shown != NULL ? shown : "(url)", cause);
	free(shown);
}

static bool http_scheme(const char *url)
{
	return url != NULL && strncasecmp(url, "http://", 7) == 0;
}

/* A Content-Type value that cannot split or add a header line. */
static bool header_value_ok(const char *v)
{
	size_t n = 0;

	for (; v[n] != '\0'; n++)
		if ((unsigned char)v[n] < 0x20 || (unsigned char)v[n] >= 0x7f)
			return false;
	return n > 0 && n <= CONTENT_TYPE_MAX;
}

/* Why a transfer failed, in the words of fetch.h. */
static void explain(struct cm_err *err, const char *url, CURL *h, CURLcode rc, const struct sink *s,
		    int timeout_ms, const char *errbuf)
{
	long os_errno = 0, status = 0;
	char errtext[128], *detail;

	/* A 404 page larger than max_bytes is still "HTTP 404". */
	if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status != 0 &&
	    status != 200 && (rc == CURLE_WRITE_ERROR || rc == CURLE_FILESIZE_EXCEEDED)) {
		fail(err, url, "HTTP %ld", status);
		return;
	}
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		fail(err, url, "timed out after %d ms", timeout_ms);
		return;
	case CURLE_FILESIZE_EXCEEDED:
		fail(err, url, "larger than %zu bytes", s->max);
		return;
	case CURLE_WRITE_ERROR:
		if (s->too_large) {
			fail(err, url, "larger than %zu bytes", s->max);
			return;
		}
		if (s->no_memory) {
			fail(err, url, "out of memory");
			return;
		}
		break;
	case CURLE_OUT_OF_MEMORY:
		fail(err, url, "out of memory");
		return;
	case CURLE_UNSUPPORTED_PROTOCOL:
		fail(err, url, "unsupported scheme");
		return;
	case CURLE_URL_MALFORMAT:
		fail(err, url, "malformed URL");
		return;
	case CURLE_COULDNT_RESOLVE_HOST:
		fail(err, url, "cannot resolve host");
		return;
	case CURLE_COULDNT_CONNECT:
		curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
		if (os_errno == ECONNREFUSED)
			fail(err, url, "connection refused");
		else if (os_errno != 0)
			fail(err, url, "cannot connect: %s",
			     strerror_r((int)os_errno, errtext, sizeof(errtext)));
		else
			fail(err, url, "cannot connect");
		return;
	default:
		break;
	}
	/* libcurl's own words; they may quote the peer, so sanitize them. */
	detail = cm_sanitize(errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc), 80);
	fail(err, url, "%s", detail != NULL ? detail : curl_easy_strerror(rc));
	free(detail);
}

static int transfer(const char *url, const char *content_type, const unsigned char *req,
		    size_t req_len, int timeout_ms, size_t max_bytes, unsigned char **body,
		    size_t *len, struct cm_err *err)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct sink s = {.max = max_bytes};
	struct curl_slist *headers = NULL;
	char *ct_header = NULL;
	CURL *h = NULL;
	CURLcode rc;
	long status = 0;
	int ret = -1;

	*body = NULL;
	*len = 0;
	if (!http_scheme(url)) {
		fail(err, url != NULL ? url : "", "unsupported scheme");
		return -1;
	}
	if (timeout_ms <= 0) {
		fail(err, url, "timeout must be positive (%d ms)", timeout_ms);
		return -1;
	}
	if (content_type != NULL && !header_value_ok(content_type)) {
		fail(err, url, "invalid Content-Type");
		return -1;
	}
	cm_fetch_global_init();
	if (global_rc != CURLE_OK) {
		fail(err, url, "curl_global_init: %s", curl_easy_strerror(global_rc));
		return -1;
	}
	if ((h = curl_easy_init()) == NULL) {
		fail(err, url, "out of memory");
		return -1;
	}

	rc = CURLE_OK;
#define SETOPT(opt, val)                                    \
	do {                                                \
		if (rc == CURLE_OK)                         \
			rc = curl_easy_setopt(h, opt, val); \
	} while (0)
	SETOPT(CURLOPT_URL, url);
	SETOPT(CURLOPT_PROTOCOLS_STR, "http");
	SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http");
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_PROXY, "");
	SETOPT(CURLOPT_NOPROXY, "*");
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	SETOPT(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	SETOPT(CURLOPT_MAXFILESIZE_LARGE,
	       (curl_off_t)(max_bytes > INT64_MAX ? INT64_MAX : max_bytes));
	SETOPT(CURLOPT_WRITEFUNCTION, on_body);
	SETOPT(CURLOPT_WRITEDATA, &s);
	SETOPT(CURLOPT_ERRORBUFFER, errbuf);
	SETOPT(CURLOPT_USERAGENT, "certmap");
	SETOPT(CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
	if (req != NULL) {
		/* Content-Type as given; no "Expect: 100-continue" round trip. */
		ct_header = cm_strdup_printf("Content-Type: %s",
					     content_type != NULL ? content_type
								  : "application/octet-stream");
		if (ct_header == NULL || (headers = curl_slist_append(NULL, ct_header)) == NULL) {
			fail(err, url, "out of memory");
			goto cleanup;
		}
		{
			struct curl_slist *more = curl_slist_append(headers, "Expect:");

			if (more == NULL) {
				fail(err, url, "out of memory");
				goto cleanup;
			}
			headers = more;
		}
		SETOPT(CURLOPT_POST, 1L);
		SETOPT(CURLOPT_POSTFIELDS, (const char *)req);
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req_len);
		SETOPT(CURLOPT_HTTPHEADER, headers);
	} else {
		SETOPT(CURLOPT_HTTPGET, 1L);
	}
#undef SETOPT
	if (rc != CURLE_OK) {
		fail(err, url, "curl_easy_setopt: %s", curl_easy_strerror(rc));
		goto cleanup;
	}

	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		explain(err, url, h, rc, &s, timeout_ms, errbuf);
		goto cleanup;
	}
	if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200) {
		fail(err, url, "HTTP %ld", status);
		goto cleanup;
	}
	if (s.buf == NULL && (s.buf = malloc(1)) == NULL) { /* empty body: still malloc'd */
		fail(err, url, "out of memory");
		goto cleanup;
	}
	*body = s.buf;
	*len = s.len;
	s.buf = NULL;
	ret = 0;

cleanup:
	curl_easy_cleanup(h);
	curl_slist_free_all(headers);
	free(ct_header);
	free(s.buf);
	return ret;
}

int cm_fetch_get(const char *url, int timeout_ms, size_t max_bytes, unsigned char **body,
		 size_t *len, struct cm_err *err)
{
	return transfer(url, NULL, NULL, 0, timeout_ms, max_bytes, body, len, err);
}

int cm_fetch_post(const char *url, const char *content_type, const unsigned char *req,
		  size_t req_len, int timeout_ms, size_t max_bytes, unsigned char **body,
		  size_t *len, struct cm_err *err)
{
	static const unsigned char empty[1] = {0};

	return transfer(url, content_type, req != NULL ? req : empty, req != NULL ? req_len : 0,
			timeout_ms, max_bytes, body, len, err);
}
