/*
 * proxy — the upstream side of a request (libcurl easy handle on the loop's
 * multi handle). Bodies stream both ways through one bounded buffer per
 * direction (CMD_BUF_BYTES) with backpressure:
 *   client → upstream: MHD hands body bytes to the access handler, which
 *     copies what fits and suspends the connection when the buffer is full;
 *     curl's read callback drains it, resumes the connection, and pauses
 *     itself (CURL_READFUNC_PAUSE) when the buffer is empty.
 *   upstream → client: curl's write callback copies into the buffer or
 *     pauses the transfer (CURL_WRITEFUNC_PAUSE) when it is full; MHD's
 *     content reader drains it, unpauses curl, and suspends the connection
 *     when nothing is there yet.
 * Everything here runs on the request's loop thread.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "certmap/http.h"
#include "certmapd.h"

static int buf_ensure(struct loop *l, struct buf *b)
{
	if (b->data == NULL)
		b->data = loop_buf_get(l);
	return b->data != NULL ? 0 : -1;
}

/* ---- curl callbacks ---- */

static size_t on_read(char *out, size_t size, size_t nitems, void *userp)
{
	struct req *r = userp;
	size_t max = size * nitems, n = buf_pending(&r->up);

	if (n == 0) {
		if (r->upload_done || r->client_gone) {
			r->upload_eof_sent = true;
			return 0;
		}
		r->curl_read_paused = true;
		return CURL_READFUNC_PAUSE;
	}
	if (n > max)
		n = max;
	memcpy(out, r->up.data + r->up.start, n);
	r->up.start += n;
	r->bytes_up += n;
	if (r->suspended == SUSP_UPLOAD_FULL)
		front_resume(r, SUSP_UPLOAD_FULL);
	return n;
}

static void add_header(struct req *r, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	struct hdr *h;
	const char *v, *end = line + len;

	if (colon == NULL || colon == line)
		return;
	v = colon + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	/* One allocation: the node, then "name\0value\0" (free(h) frees all). */
	h = malloc(sizeof(*h) + (size_t)(colon - line) + (size_t)(end - v) + 2);
	if (h == NULL)
		return;
	h->next = NULL;
	h->name = (char *)(h + 1);
	memcpy(h->name, line, (size_t)(colon - line));
	h->name[colon - line] = '\0';
	h->value = h->name + (colon - line) + 1;
	memcpy(h->value, v, (size_t)(end - v));
	h->value[end - v] = '\0';
	if (!cm_http_valid_header_name(h->name)) {
		free(h);
		return;
	}
	if (strcasecmp(h->name, "Content-Length") == 0) {
		char *e = NULL;
		long long cl = strtoll(h->value, &e, 10);

		if (e != h->value && *e == '\0' && cl >= 0)
			r->resp_length = cl;
	}
	*r->resp_tail = h;
	r->resp_tail = &h->next;
}

static void clear_headers(struct req *r)
{
	while (r->resp_headers != NULL) {
		struct hdr *h = r->resp_headers;

		r->resp_headers = h->next;
		free(h); /* name and value live in the same block */
	}
	r->resp_tail = &r->resp_headers;
	r->resp_length = -1;
}

bool proxy_header_line(struct req *r, const char *data, size_t len)
{
	size_t l = len;

	r->resp_head_bytes += len;
	if (r->resp_head_bytes > CMD_MAX_UPSTREAM_HEAD_BYTES)
		return false; /* aborts the transfer: 502 */
	while (l > 0 && (data[l - 1] == '\n' || data[l - 1] == '\r'))
		l--;
	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		const char *sp = memchr(data, ' ', len);
		int status = 0;

		/* data is not NUL-terminated (the lean client's read buffer) */
		for (const char *p = sp ? sp + 1 : data + len;
		     p < data + len && *p >= '0' && *p <= '9' && status < 100000; p++)
			status = status * 10 + (*p - '0');
		clear_headers(r);
		r->up_status = status;
		return true;
	}
	if (l == 0) { /* end of a header block */
		if (r->up_status >= 200 && r->up_status <= 999) {
			r->head_done = true;
			if (r->suspended == SUSP_WAIT_HEADERS)
				front_resume(r, SUSP_WAIT_HEADERS);
		} else {
			clear_headers(r); /* 1xx interim answer */
			r->resp_head_bytes = 0;
		}
		return true;
	}
	add_header(r, data, l);
	return true;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *userp)
{
	size_t len = size * nitems;

	return proxy_header_line(userp, data, len) ? len : 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userp)
{
	struct req *r = userp;
	size_t len = size * nmemb;

	if (r->client_gone)
		return 0;
	if (buf_ensure(r->loop, &r->down) != 0)
		return 0;
	if (buf_room(&r->down) < len) {
		r->curl_write_paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	memcpy(r->down.data + r->down.end, data, len);
	r->down.end += len;
	if (r->suspended == SUSP_WAIT_BODY)
		front_resume(r, SUSP_WAIT_BODY);
	return len;
}

/* ---- MHD content reader ---- */

ssize_t proxy_read_response(void *cls, uint64_t pos, char *out, size_t max)
{
	struct req *r = cls;
	size_t n = buf_pending(&r->down);

	(void)pos;
	if (n > 0) {
		if (n > max)
			n = max;
		memcpy(out, r->down.data + r->down.start, n);
		r->down.start += n;
		r->bytes_down += n;
		if (r->curl_write_paused && r->easy != NULL) {
			r->curl_write_paused = false;
			curl_easy_pause(r->easy, CURLPAUSE_CONT); /* may call on_write */
		} else if (r->upc != NULL) {
			upstream_drained(r); /* may fill r->down again */
		}
		return (ssize_t)n;
	}
	if (r->client_gone)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (r->upstream_done)
		return r->upstream_result == CURLE_OK ? MHD_CONTENT_READER_END_OF_STREAM
						      : MHD_CONTENT_READER_END_WITH_ERROR;
	r->suspended = SUSP_WAIT_BODY;
	MHD_suspend_connection(r->mhd);
	loop_watch_hangup(r->loop, r, true);
	return 0;
}

/* ---- request body ---- */

size_t proxy_feed_upload(struct req *r, const char *data, size_t len)
{
	size_t room;

	if (buf_ensure(r->loop, &r->up) != 0)
		return 0;
	room = buf_room(&r->up);
	if (len > room)
		len = room;
	memcpy(r->up.data + r->up.end, data, len);
	r->up.end += len;
	if (len > 0 && r->curl_read_paused && r->easy != NULL) {
		r->curl_read_paused = false;
		curl_easy_pause(r->easy, CURLPAUSE_CONT);
	} else if (len > 0 && r->upc != NULL) {
		upstream_kick(r);
	}
	return len;
}

void proxy_upload_complete(struct req *r)
{
	r->upload_done = true;
	if (r->curl_read_paused && r->easy != NULL) {
		r->curl_read_paused = false;
		curl_easy_pause(r->easy, CURLPAUSE_CONT);
	} else if (r->upc != NULL) {
		upstream_kick(r);
	}
}

/* ---- transfer lifecycle ---- */

/* ok: the transfer ended normally, the handle keeps its options for the next
 * request; else it is reset. */
static void release_easy(struct req *r, bool ok)
{
	if (r->easy != NULL) {
		curl_multi_remove_handle(loop_multi(r->loop), r->easy);
		loop_easy_put(r->loop, r->easy, ok ? r->easy_gen : 0);
		r->easy = NULL;
	}
	free(r->up_headers); /* one block: see build_headers */
	r->up_headers = NULL;
}

void proxy_transfer_done(struct req *r, CURLcode result)
{
	release_easy(r, result == CURLE_OK);
	r->upstream_done = true;
	r->upstream_result = result;
	if (result != CURLE_OK && !r->client_gone)
		logmsg("info", "request %s: upstream: %s", r->id, curl_easy_strerror(result));
	if (r->suspended == SUSP_WAIT_HEADERS || r->suspended == SUSP_WAIT_BODY ||
	    r->suspended == SUSP_UPLOAD_FULL) {
		loop_watch_hangup(r->loop, r, false);
		front_resume(r, r->suspended);
	}
}

void proxy_abort(struct req *r)
{
	if (r->upc != NULL) {
		upstream_abort(r);
		free(r->up_headers);
		r->up_headers = NULL;
		r->upstream_done = true;
		r->upstream_result = CURLE_ABORTED_BY_CALLBACK;
		return;
	}
	if (r->easy == NULL)
		return;
	release_easy(r, false);
	r->upstream_done = true;
	r->upstream_result = CURLE_ABORTED_BY_CALLBACK;
}

/* ---- building the upstream request ---- */

/* The upstream header lines are built in two passes over the same headers:
 * the first counts, the second fills one block holding the curl_slist nodes
 * and the "Name: value" lines (curl only reads the list; it must outlive the
 * transfer and is freed with free() in release_easy). */
#define KEPT_MAX 64

struct hdr_block {
	bool fill;
	size_t n, bytes; /* counted */
	/* the client headers the first pass kept (MHD's strings, valid for the
	 * request), so the second pass does not filter again */
	const char *kept[2 * KEPT_MAX];
	size_t n_kept;
	bool kept_overflow;
	struct curl_slist *nodes; /* fill: n nodes, then the lines */
	size_t used;
	char *text;
};

static void emit(struct hdr_block *b, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	struct curl_slist *node;
	char *line;

	if (!b->fill) {
		b->n++;
		b->bytes += nl + 2 + vl + 1;
		return;
	}
	node = &b->nodes[b->used];
	line = b->text;
	memcpy(line, name, nl);
	line[nl] = ':';
	line[nl + 1] = ' ';
	memcpy(line + nl + 2, value, vl);
	line[nl + 2 + vl] = '\0';
	/* CR/LF cannot come from MHD's parser; strip any from our own values. */
	for (char *p = strpbrk(line + nl + 2, "\r\n"); p != NULL; p = strpbrk(p + 1, "\r\n"))
		*p = ' ';
	b->text += nl + 2 + vl + 1;
	node->data = line;
	node->next = NULL;
	if (b->used > 0)
		b->nodes[b->used - 1].next = node;
	b->used++;
}

struct hdr_ctx {
	struct hdr_block *b;
	const char *connection;
	bool keep_authorization;
};

static enum MHD_Result copy_header(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	struct hdr_ctx *hc = cls;

	(void)kind;
	if (cm_http_is_hop_header(key) || cm_http_is_identity_header(key) ||
	    strchr(key, '_') != NULL || strcasecmp(key, "Host") == 0 ||
	    strcasecmp(key, "Content-Length") == 0 || strcasecmp(key, "Expect") == 0 ||
	    strncasecmp(key, "X-Forwarded-", 12) == 0 ||
	    (hc->connection != NULL && cm_http_connection_lists(hc->connection, key)))
		return MHD_YES;
	if (strcasecmp(key, "Authorization") == 0 && !hc->keep_authorization)
		return MHD_YES;
	if (!hc->b->fill) {
		if (hc->b->n_kept < KEPT_MAX) {
			hc->b->kept[2 * hc->b->n_kept] = key;
			hc->b->kept[2 * hc->b->n_kept + 1] = value ? value : "";
			hc->b->n_kept++;
		} else {
			hc->b->kept_overflow = true;
		}
	}
	emit(hc->b, key, value ? value : "");
	return MHD_YES;
}

/* Client-Cert value ":<base64 DER of the leaf>:", made once per connection. */
static const char *client_cert_value(struct conn *c)
{
	if (c->client_cert_hdr == NULL) {
		size_t len = c->chain_len[0];
		char *out = malloc(4 * ((len + 2) / 3) + 3);

		if (out == NULL)
			return NULL;
		out[0] = ':';
		EVP_EncodeBlock((unsigned char *)out + 1, c->chain_der[0], (int)len);
		strcat(out, ":");
		c->client_cert_hdr = out;
	}
	return c->client_cert_hdr;
}

static void emit_all(struct req *r, struct hdr_block *b, const char *host, const char *cert)
{
	const struct cm_config *cfg = r->gen->cfg;
	bool allowed = r->verdict != NULL && r->verdict->reason == CM_REASON_ALLOWED;
	struct hdr_ctx hc = {
		.b = b,
		.connection = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, "Connection"),
		/* basic: the client's Basic credentials go on (Exchange checks
		 * them); headers: certmapd's identity replaces them. */
		.keep_authorization = cfg->upstream.identity == CM_IDENTITY_BASIC,
	};

	if (b->fill && !b->kept_overflow) {
		for (size_t i = 0; i < b->n_kept; i++)
			emit(b, b->kept[2 * i], b->kept[2 * i + 1]);
	} else {
		MHD_get_connection_values(r->mhd, MHD_HEADER_KIND, copy_header, &hc);
	}
	emit(b, "X-Forwarded-For", r->conn->client_ip);
	emit(b, "X-Forwarded-Proto", "https");
	if (host != NULL)
		emit(b, "X-Forwarded-Host", host);
	emit(b, "Expect", ""); /* no 100-continue stalls */
	if (cfg->upstream.identity == CM_IDENTITY_HEADERS && allowed) {
		const struct cm_verdict *v = r->verdict;

		if (v->logon_name)
			emit(b, "X-Certmap-User", v->logon_name);
		if (v->user_upn)
			emit(b, "X-Certmap-UPN", v->user_upn);
		if (v->user_dn)
			emit(b, "X-Certmap-DN", v->user_dn);
		emit(b, "Client-Cert", cert);
	}
}

static int build_headers(struct req *r)
{
	const struct cm_config *cfg = r->gen->cfg;
	bool allowed = r->verdict != NULL && r->verdict->reason == CM_REASON_ALLOWED;
	const char *host = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, "Host");
	const char *cert = NULL;
	struct hdr_block b = {0};

	if (cfg->upstream.identity == CM_IDENTITY_HEADERS && allowed &&
	    (cert = client_cert_value(r->conn)) == NULL)
		return -1;
	emit_all(r, &b, host, cert);
	b.nodes = malloc(b.n * sizeof(*b.nodes) + b.bytes);
	if (b.nodes == NULL)
		return -1;
	b.text = (char *)(b.nodes + b.n);
	b.fill = true;
	emit_all(r, &b, host, cert);
	if (b.used != b.n) { /* cannot happen: the same headers twice */
		free(b.nodes);
		return -1;
	}
	r->up_headers = b.nodes;
	return 0;
}

/* Options that depend only on the generation's config. */
static void set_constant_options(CURL *e, const struct cm_config *cfg)
{
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, cfg->upstream.timeout_s);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	if (cfg->upstream.ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, cfg->upstream.ca_file);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, cfg->upstream.verify ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, cfg->upstream.verify ? 2L : 0L);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
}

/* -1: no body; -2: a body of unknown length (chunked); else Content-Length. */
static long long request_body_length(struct req *r)
{
	const char *cl = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, "Content-Length");
	const char *te = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, "Transfer-Encoding");
	long long len = -2;

	if (cl == NULL && (te == NULL || strcasecmp(te, "identity") == 0))
		return -1;
	if (cl != NULL) {
		char *end = NULL;

		len = strtoll(cl, &end, 10);
		if (end == cl || *end != '\0' || len < 0)
			len = -2;
	}
	return len;
}

int proxy_start(struct req *r)
{
	const struct cm_config *cfg = r->gen->cfg;
	long long body_len = request_body_length(r);
	size_t base_len = strlen(cfg->upstream.url), path_len = strlen(r->path);
	size_t query_len = r->query ? strlen(r->query) : 0;
	char stack_url[2048], *url = stack_url;
	unsigned long easy_gen = 0;
	CURL *e;

	r->has_body = body_len != -1;
	if (r->gen->target != NULL) { /* http://: the lean client (upstream.c) */
		if (build_headers(r) != 0)
			return -1;
		return upstream_start(r, body_len);
	}
	while (base_len > 0 && cfg->upstream.url[base_len - 1] == '/')
		base_len--;
	if (base_len + path_len + 1 + query_len + 1 > sizeof(stack_url) &&
	    (url = malloc(base_len + path_len + 1 + query_len + 1)) == NULL)
		return -1;
	memcpy(url, cfg->upstream.url, base_len);
	memcpy(url + base_len, r->path, path_len);
	if (r->query != NULL) {
		url[base_len + path_len] = '?';
		memcpy(url + base_len + path_len + 1, r->query, query_len + 1);
	} else {
		url[base_len + path_len] = '\0';
	}
	e = loop_easy_get(r->loop, &easy_gen);
	if (e == NULL || build_headers(r) != 0) {
		if (url != stack_url)
			free(url);
		loop_easy_put(r->loop, e, easy_gen);
		return -1;
	}
	r->easy = e;
	if (easy_gen != r->gen->id) {
		if (easy_gen != 0) /* configured by an older generation: start clean */
			loop_easy_clean(r->loop, e);
		set_constant_options(e, cfg);
		easy_gen = r->gen->id;
	}
	r->easy_gen = easy_gen;
	curl_easy_setopt(e, CURLOPT_URL, url); /* copied */
	if (url != stack_url)
		free(url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	/* A pooled handle keeps the previous request's options: set each one
	 * that varies. UPLOAD 0 first (method GET), then NOBODY, then UPLOAD. */
	curl_easy_setopt(e, CURLOPT_UPLOAD, 0L);
	curl_easy_setopt(e, CURLOPT_NOBODY, strcmp(r->method, "HEAD") == 0 ? 1L : 0L);
	if (r->has_body) {
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
				 (curl_off_t)(body_len < 0 ? -1 : body_len));
		curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(e, CURLOPT_READDATA, r);
	} else {
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)-1);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, (curl_read_callback)NULL);
		curl_easy_setopt(e, CURLOPT_READDATA, (void *)NULL);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->up_headers);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	if (curl_multi_add_handle(loop_multi(r->loop), e) != CURLM_OK) {
		release_easy(r, false);
		return -1;
	}
	return 0;
}
