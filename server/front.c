/*
 * front — the HTTP/TLS side of certmapd: libmicrohttpd callbacks and the
 * request state machine (see certmapd.h for the threading model).
 *
 * A request: the URI-log callback allocates it (MHD passes the raw
 * request-target there, query included); the access handler normalizes
 * the path, picks the location, gets the client chain from the GnuTLS
 * session (once per connection), and finds the decision: the connection's
 * memo, else the generation's cache (hit, or coalesce on a lookup in
 * flight), else a job for the decision pool while the connection is
 * suspended. A denial is an IIS-style error page; an allowed request (or one
 * on an `accept`/`ignore` location without identity) is proxied (proxy.c).
 * MHD only lets a response be queued on the first handler call or once the
 * whole request body is read: a late answer first drains the body.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "certmap/http.h"
#include "certmapd.h"

#include "certmap/revocation.h"

#define MAX_BASIC_BYTES 4096

/* ---- connections ---- */

static void conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->chain_n; i++)
		free(c->chain_der[i]);
	free(c->chain_der);
	free(c->chain_len);
	free(c->client_cert_hdr);
	if (c->key_user != NULL) {
		explicit_bzero(c->key_user, strlen(c->key_user));
		free(c->key_user);
	}
	cm_verdict_unref(c->memo);
	free(c);
}

static void addr_string(const struct sockaddr *sa, char *ip, size_t len, int *port)
{
	ip[0] = '\0';
	*port = 0;
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)len);
		*port = ntohs(a->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)len);
		*port = ntohs(a->sin6_port);
	}
}

static void notify_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
			      enum MHD_ConnectionNotificationCode toe)
{
	struct front_ctx *ctx = cls;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		struct conn *c = calloc(1, sizeof(*c));
		const union MHD_ConnectionInfo *ci;

		*socket_context = c;
		if (c == NULL)
			return;
		c->loop = ctx->loop;
		c->listener = ctx->li;
		c->mhd = connection;
		c->hup.fd = -1;
		c->head_deadline = cm_now_ms() + ctx->head_timeout_ms;
		loop_track_conn(ctx->loop, c, true);
		ci = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (ci != NULL)
			addr_string(ci->client_addr, c->client_ip, sizeof(c->client_ip),
				    &c->client_port);
		ci = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
		if (ci != NULL && ci->tls_session != NULL && ctx->srv->tickets)
			gnutls_session_ticket_enable_server(ci->tls_session, &ctx->srv->ticket_key);
		loop_conn_delta(ctx->loop, 1);
		cm_metrics_connections(ctx->srv->metrics, 1);
	} else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (*socket_context != NULL) {
			loop_track_conn(ctx->loop, *socket_context, false);
			loop_forget_conn(ctx->loop, *socket_context);
			conn_free(*socket_context);
			loop_conn_delta(ctx->loop, -1);
			cm_metrics_connections(ctx->srv->metrics, -1);
		}
		*socket_context = NULL;
	}
}

/* The peer chain, copied out of the GnuTLS session once per connection. */
static void conn_load_chain(struct conn *c, struct MHD_Connection *connection)
{
	const union MHD_ConnectionInfo *ci;
	const gnutls_datum_t *peers;
	unsigned int n = 0;

	if (c->chain_loaded)
		return;
	c->chain_loaded = true;
	ci = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (ci == NULL || ci->tls_session == NULL)
		return;
	peers = gnutls_certificate_get_peers(ci->tls_session, &n);
	if (peers == NULL || n == 0)
		return;
	if (n > CM_X509_MAX_CHAIN + 1)
		n = CM_X509_MAX_CHAIN + 1; /* the engine refuses over-long chains */
	c->chain_der = calloc(n, sizeof(*c->chain_der));
	c->chain_len = calloc(n, sizeof(*c->chain_len));
	if (c->chain_der == NULL || c->chain_len == NULL)
		return;
	for (unsigned int i = 0; i < n; i++) {
		c->chain_der[i] = malloc(peers[i].size ? peers[i].size : 1);
		if (c->chain_der[i] == NULL)
			break;
		memcpy(c->chain_der[i], peers[i].data, peers[i].size);
		c->chain_len[i] = peers[i].size;
		c->chain_n++;
	}
	/* The leaf is parsed only when a decision is computed (decider.c), not
	 * on every connection: most connections are answered from the cache. */
}

/* ---- requests ---- */

/* snprintf("%lx") without the printf machinery (once per request). */
static void hex_id(char out[24], unsigned long v)
{
	char tmp[sizeof(v) * 2];
	size_t n = 0;

	do {
		tmp[n++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v != 0);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
}

static void *uri_log(void *cls, const char *uri, struct MHD_Connection *connection)
{
	struct front_ctx *ctx = cls;
	struct req *r = calloc(1, sizeof(*r));
	const union MHD_ConnectionInfo *ci;

	if (r == NULL)
		return NULL;
	r->srv = ctx->srv;
	r->loop = ctx->loop;
	r->mhd = connection;
	r->resp_tail = &r->resp_headers;
	r->resp_length = -1;
	r->headers_call = true;
	clock_gettime(CLOCK_REALTIME, &r->started_wall);
	r->started_ms = cm_now_ms();
	r->seq = atomic_fetch_add(&ctx->srv->request_seq, 1) + 1;
	hex_id(r->id, r->seq);
	r->raw_target = strdup(uri ? uri : "");
	ci = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	r->conn = ci ? ci->socket_context : NULL;
	if (r->conn != NULL) {
		r->conn->head_deadline = r->started_ms + ctx->head_timeout_ms;
		r->conn->req = r;
	}
	r->status = 400; /* until something better is known: MHD refused it */
	loop_track_req(ctx->loop, r, true);
	atomic_fetch_add(&ctx->srv->requests_in_flight, 1);
	return r;
}

static void req_free(struct req *r)
{
	struct hdr *h = r->resp_headers;

	while (h != NULL) {
		struct hdr *next = h->next;

		free(h); /* name and value live in the same block (proxy.c) */
		h = next;
	}
	free(r->raw_target);
	free(r->path);
	free(r->query);
	if (r->basic_user != NULL) {
		explicit_bzero(r->basic_user, strlen(r->basic_user));
		free(r->basic_user);
	}
	loop_buf_put(r->loop, r->up.data);
	loop_buf_put(r->loop, r->down.data);
	cm_verdict_unref(r->verdict);
	gen_unref(r->gen);
	free(r);
}

void front_log_request(struct req *r)
{
	struct cm_access_entry e = {0};
	struct conn *c = r->conn;
	char stem[CM_ACCESSLOG_MAX_FIELD_BYTES];

	e.when = r->started_wall;
	e.s_ip = c ? c->listener->ip : NULL;
	e.s_port = c ? c->listener->port : 0;
	e.method = r->method;
	if (r->path != NULL) {
		e.uri_stem = r->path;
	} else if (r->raw_target != NULL) {
		size_t n = strcspn(r->raw_target, "?");

		if (n >= sizeof(stem))
			n = sizeof(stem) - 1;
		memcpy(stem, r->raw_target, n);
		stem[n] = '\0';
		e.uri_stem = stem;
	}
	e.uri_query = r->query;
	if (r->verdict != NULL && r->verdict->reason == CM_REASON_ALLOWED)
		e.username = r->verdict->logon_name;
	e.c_ip = c ? c->client_ip : NULL;
	if (r->method != NULL) {
		e.user_agent = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, "User-Agent");
		e.referer = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, "Referer");
	}
	e.status = r->status;
	e.substatus = r->substatus;
	e.win32_status = r->win32;
	e.time_taken_ms = (uint64_t)(cm_now_ms() - r->started_ms);
	if (r->srv->access != NULL)
		cm_accesslog_write(r->srv->access, &e);
	cm_metrics_request(r->srv->metrics, r->status, r->substatus);
}

static void request_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
			      enum MHD_RequestTerminationCode toe)
{
	struct front_ctx *ctx = cls;
	struct req *r = *con_cls;
	bool upstream_broke;

	*con_cls = NULL;
	if (r == NULL)
		return;
	loop_track_req(ctx->loop, r, false);
	if (r->state == REQ_NEW && r->method == NULL) {
		/* MHD answered on its own (431, 400, 413, ...): log what it sent. */
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_HTTP_STATUS);

		if (ci != NULL && ci->http_status >= 100)
			r->status = (int)ci->http_status;
		if (r->query == NULL && r->raw_target != NULL) {
			const char *q = strchr(r->raw_target, '?');

			if (q != NULL)
				r->query = strdup(q + 1);
		}
	}
	loop_watch_hangup(ctx->loop, r, false);
	if (r->conn != NULL && r->conn->req == r)
		r->conn->req = NULL;
	upstream_broke = r->upstream_done && r->upstream_result != CURLE_OK;
	proxy_abort(r); /* nothing when no exchange is running */
	if (toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT && r->response_queued && r->status < 400)
		r->win32 = 64; /* ERROR_NETNAME_DELETED, as IIS logs a client gone mid-response */
	else if (upstream_broke && r->response_queued && r->status < 400 && r->win32 == 0)
		r->win32 = 12030; /* ERROR_WINHTTP_CONNECTION_ERROR: ARR's code for an upstream
				   * that broke off after its response had started */
	front_log_request(r);
	if (r->proxied)
		cm_metrics_held(ctx->srv->metrics, -1);
	atomic_fetch_sub(&ctx->srv->requests_in_flight, 1);
	req_free(r);
}

/* ---- answers ---- */

static const char *reason_status_text(int status, int substatus)
{
	return cm_status_text(status, substatus);
}

static enum MHD_Result queue_error(struct req *r)
{
	struct gen *g = r->gen;
	bool detailed = g != NULL && g->cfg->errors == CM_ERRORS_DETAILED;
	size_t len = 0;
	char *body = error_page(r->status, r->substatus, r->verdict, detailed, NULL, &len);
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (body == NULL)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "text/html; charset=utf-8");
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	if (r->status == 503)
		MHD_add_response_header(resp, "Retry-After", "30");
	ret = MHD_queue_response(r->mhd, (unsigned int)r->status, resp);
	MHD_destroy_response(resp);
	r->response_queued = ret == MHD_YES;
	r->state = REQ_RESPONDED;
	(void)reason_status_text;
	return ret;
}

/* Answers with status.substatus now if MHD allows it, else once the body
 * has been read (and thrown away). */
static bool has_body(struct req *r)
{
	const char *cl = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, "Content-Length");
	const char *te = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, "Transfer-Encoding");

	return te != NULL || (cl != NULL && strcmp(cl, "0") != 0);
}

static enum MHD_Result answer(struct req *r, int status, int substatus, size_t *upload_data_size)
{
	r->status = status;
	r->substatus = substatus;
	/* MHD closes the connection after a response queued during its
	 * headers-only call: without a body, answer on the next (final) call
	 * so the connection stays alive, as IIS's does. With a body, answer at
	 * once rather than read a body nobody wants. */
	if (r->headers_call && r->method != NULL && !has_body(r)) {
		r->error_pending = true;
		return MHD_YES;
	}
	if (r->headers_call || *upload_data_size == 0)
		return queue_error(r);
	r->error_pending = true;
	*upload_data_size = 0;
	return MHD_YES;
}

static enum MHD_Result answer_reason(struct req *r, enum cm_reason reason, size_t *upload_data_size)
{
	if (reason == CM_REASON_UNTRUSTED)
		r->win32 = 2148204809u; /* CERT_E_UNTRUSTEDROOT, as IIS logs it */
	return answer(r, cm_reason_status(reason), cm_reason_substatus(reason), upload_data_size);
}

/* ---- request head checks ---- */

struct head_check {
	bool bad;
	size_t bytes;
};

static enum MHD_Result check_header(void *cls, enum MHD_ValueKind kind, const char *key,
				    const char *value)
{
	struct head_check *hc = cls;

	(void)kind;
	hc->bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
	/* Underscores: some backends fold X_Certmap_User into X-Certmap-User. */
	if (!cm_http_valid_header_name(key) || strchr(key, '_') != NULL) {
		hc->bad = true;
		return MHD_NO;
	}
	return MHD_YES;
}

static char *basic_user_of(struct MHD_Connection *connection)
{
	const char *auth =
		MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
	unsigned char dec[MAX_BASIC_BYTES];
	size_t n;
	int len;
	char *colon;

	if (auth == NULL || strncasecmp(auth, "Basic ", 6) != 0)
		return NULL;
	auth += 6;
	while (*auth == ' ')
		auth++;
	n = strlen(auth);
	if (n == 0 || n > (MAX_BASIC_BYTES / 4) * 3 || n % 4 != 0)
		return NULL;
	len = EVP_DecodeBlock(dec, (const unsigned char *)auth, (int)n);
	if (len < 0)
		return NULL;
	/* EVP_DecodeBlock counts padding bytes as data. */
	if (n >= 1 && auth[n - 1] == '=')
		len--;
	if (n >= 2 && auth[n - 2] == '=')
		len--;
	if (len <= 0 || memchr(dec, '\0', (size_t)len) != NULL)
		return NULL;
	dec[len] = '\0';
	colon = strchr((char *)dec, ':');
	if (colon == NULL)
		return NULL;
	*colon = '\0';
	explicit_bzero(colon + 1, (size_t)len - (size_t)(colon + 1 - (char *)dec));
	return dec[0] ? strdup((char *)dec) : NULL;
}

/* ---- decisions ---- */

static void cache_ready(void *arg, struct cm_verdict *v)
{
	front_finish_decision(arg, v);
}

void front_finish_decision(struct req *r, struct cm_verdict *v)
{
	r->verdict = v;
	front_resume(r, SUSP_DECISION);
}

void front_resume(struct req *r, enum req_suspend from)
{
	if (from == SUSP_NONE || r->suspended != from)
		return;
	r->suspended = SUSP_NONE;
	MHD_resume_connection(r->mhd);
	/* In external-epoll mode MHD's own wake-up is not in our epoll set. */
	loop_wake(r->loop);
}

static void suspend(struct req *r, enum req_suspend why)
{
	r->suspended = why;
	r->suspended_in_call = true;
	MHD_suspend_connection(r->mhd);
}

static void audit_no_certificate(struct req *r)
{
	struct cm_decision d;

	memset(&d, 0, sizeof(d));
	d.reason = CM_REASON_NO_CERTIFICATE;
	d.status = cm_reason_status(d.reason);
	d.substatus = cm_reason_substatus(d.reason);
	d.method = CM_METHOD_NONE;
	cm_trace_add(&d.trace, "x509: no client certificate on a location that requires one (%s)",
		     r->path);
	if (r->srv->audit != NULL)
		cm_auditlog_write(r->srv->audit, &r->started_wall, r->conn->client_ip, r->id, &d);
	cm_metrics_decision(r->srv->metrics, d.reason, d.method);
	cm_trace_free(&d.trace);
}

static struct cm_verdict *outage_verdict(void)
{
	struct cm_decision d;

	memset(&d, 0, sizeof(d));
	d.reason = CM_REASON_DIRECTORY_UNAVAILABLE;
	d.status = 503;
	d.method = CM_METHOD_NONE;
	d.detail = "decision could not be computed";
	return cm_verdict_from_decision(&d, NULL);
}

/* r->key: the cache key depends only on the connection's chain (fixed once
 * loaded) and, when use_basic, the Basic user; hashed once per connection
 * and user instead of once per request. */
static void request_key(struct conn *c, struct req *r, bool use_basic)
{
	const char *u = use_basic ? r->basic_user : NULL;

	if (c->key_valid && c->key_use_basic == use_basic &&
	    (c->key_user == NULL ? u == NULL : u != NULL && strcmp(c->key_user, u) == 0)) {
		memcpy(r->key, c->key, CM_CACHE_KEY_BYTES);
		return;
	}
	cm_cache_key((const unsigned char *const *)c->chain_der, c->chain_len, c->chain_n,
		     r->basic_user, use_basic, r->key);
	if (c->key_user != NULL) {
		explicit_bzero(c->key_user, strlen(c->key_user));
		free(c->key_user);
	}
	c->key_user = u != NULL ? strdup(u) : NULL;
	c->key_valid = u == NULL || c->key_user != NULL;
	c->key_use_basic = use_basic;
	memcpy(c->key, r->key, CM_CACHE_KEY_BYTES);
}

/* Looks the decision up; true when r->verdict is known now, false when the
 * connection was suspended until it is. */
static bool lookup_decision(struct req *r)
{
	struct conn *c = r->conn;
	struct gen *g = r->gen;
	struct cm_verdict *v = NULL;
	enum cm_cache_status st;

	request_key(c, r, g->key_uses_basic);
	if (c->memo != NULL && c->memo_gen == g->id &&
	    c->memo->rev_epoch == cm_revstore_epoch(g->rev) &&
	    memcmp(c->memo_key, r->key, CM_CACHE_KEY_BYTES) == 0) {
		r->verdict = cm_verdict_ref(c->memo);
		cm_metrics_cache(r->srv->metrics, CM_CACHE_HIT);
		return true;
	}
	v = cm_cache_peek(g->cache, r->key);
	if (v != NULL) {
		r->verdict = v;
		cm_metrics_cache(r->srv->metrics, CM_CACHE_HIT);
		return true;
	}
	/* Suspend first: a waiter may be called (and resume us) at once. */
	suspend(r, SUSP_DECISION);
	r->state = REQ_WAIT_DECISION;
	st = cm_cache_get(g->cache, r->key, &v, cache_ready, r);
	switch (st) {
	case CM_CACHE_STATUS_HIT:
		cm_metrics_cache(r->srv->metrics, CM_CACHE_HIT);
		front_finish_decision(r, v);
		break;
	case CM_CACHE_STATUS_WAITING:
		cm_metrics_cache(r->srv->metrics, CM_CACHE_COALESCED);
		break;
	case CM_CACHE_STATUS_LEADER:
		cm_metrics_cache(r->srv->metrics, CM_CACHE_MISS);
		if (decider_submit(r->srv->decider, r) != 0) {
			struct cm_verdict *o = outage_verdict();

			cm_cache_put(g->cache, r->key, o, 0);
			front_finish_decision(r, o);
		}
		break;
	}
	return false;
}

static void remember(struct req *r)
{
	struct conn *c = r->conn;

	if (r->verdict == NULL || c == NULL)
		return;
	cm_verdict_unref(c->memo);
	c->memo = cm_verdict_ref(r->verdict);
	c->memo_gen = r->gen->id;
	memcpy(c->memo_key, r->key, CM_CACHE_KEY_BYTES);
}

/* ---- the access handler ---- */

static enum MHD_Result start_request(struct req *r, const char *method, const char *version,
				     size_t *upload_data_size)
{
	struct gen *g;
	const struct cm_location *loc;
	struct head_check hc = {0};
	const char *q, *why = NULL;
	size_t plen;
	char path[CM_HTTP_MAX_PATH_BYTES + 1];

	r->method = method;
	r->version = version;
	r->gen = g = server_gen(r->srv);
	if (r->conn != NULL)
		r->conn->head_deadline = 0;
	/* The head is in: from now on the long idle timeout applies (EAS holds
	 * requests for up to 59 minutes); before, a slow sender had
	 * server.request_header_timeout_s for handshake and head. */
	MHD_set_connection_option(r->mhd, MHD_CONNECTION_OPTION_TIMEOUT,
				  (unsigned int)g->cfg->server.client_timeout_s);
	if (r->conn == NULL || r->raw_target == NULL)
		return answer(r, 500, 0, upload_data_size);
	q = strchr(r->raw_target, '?');
	plen = q ? (size_t)(q - r->raw_target) : strlen(r->raw_target);
	if (q != NULL && (r->query = strdup(q + 1)) == NULL)
		return answer(r, 500, 0, upload_data_size);
	if (cm_http_normalize_path(r->raw_target, plen, path, sizeof(path), &why) != 0) {
		logmsg("info", "request %s from %s: 400: %s", r->id, r->conn->client_ip, why);
		return answer_reason(r, CM_REASON_BAD_REQUEST, upload_data_size);
	}
	r->path = strdup(path);
	if (r->path == NULL)
		return answer(r, 500, 0, upload_data_size);
	MHD_get_connection_values(r->mhd, MHD_HEADER_KIND, check_header, &hc);
	if (hc.bad) {
		logmsg("info", "request %s from %s: 400: invalid header name", r->id,
		       r->conn->client_ip);
		return answer_reason(r, CM_REASON_BAD_REQUEST, upload_data_size);
	}
	if (hc.bytes + strlen(r->raw_target) > (size_t)g->cfg->server.max_request_head_bytes)
		return answer(r, 431, 0, upload_data_size);
	r->basic_user = basic_user_of(r->mhd);
	loc = cm_config_location(g->cfg, r->path);
	r->mode = loc != NULL ? loc->client_certificate : CM_CERT_REQUIRE; /* fail closed */
	if (r->mode == CM_CERT_IGNORE)
		return MHD_YES; /* no decision, no identity */
	conn_load_chain(r->conn, r->mhd);
	if (r->conn->chain_n == 0) {
		if (r->mode == CM_CERT_ACCEPT)
			return MHD_YES;
		audit_no_certificate(r);
		return answer_reason(r, CM_REASON_NO_CERTIFICATE, upload_data_size);
	}
	if (!lookup_decision(r))
		return MHD_YES; /* suspended */
	return MHD_YES;
}

/* After the decision is known: deny, or start proxying. */
static enum MHD_Result decided(struct req *r, size_t *upload_data_size)
{
	r->state = REQ_DECIDED;
	if (r->mode != CM_CERT_IGNORE && r->conn->chain_n > 0) {
		if (r->verdict == NULL)
			r->verdict = outage_verdict();
		remember(r);
		if (r->verdict == NULL)
			return answer(r, 503, 0, upload_data_size);
		if (r->verdict->reason != CM_REASON_ALLOWED)
			return answer_reason(r, r->verdict->reason, upload_data_size);
	}
	if (atomic_load(&r->srv->draining))
		return answer(r, 503, 0, upload_data_size);
	if (proxy_start(r) != 0)
		return answer_reason(r, CM_REASON_UPSTREAM_UNAVAILABLE, upload_data_size);
	r->state = REQ_PROXYING;
	r->proxied = true;
	cm_metrics_held(r->srv->metrics, 1);
	return MHD_YES;
}

static enum MHD_Result queue_upstream_response(struct req *r);
static enum MHD_Result handle(struct req *r, const char *upload_data, size_t *upload_data_size);

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *connection, const char *url,
				      const char *method, const char *version,
				      const char *upload_data, size_t *upload_data_size,
				      void **con_cls)
{
	struct front_ctx *ctx = cls;
	struct req *r = *con_cls;
	enum MHD_Result ret;

	(void)url;
	(void)method;
	(void)version;
	if (r == NULL) {
		r = uri_log(ctx, url, connection);
		if (r == NULL)
			return MHD_NO;
		*con_cls = r;
	}
	if (r->method == NULL) {
		r->method = method;
		r->version = version;
	}
	r->calls++;
	r->suspended_in_call = false;
	ret = handle(r, upload_data, upload_data_size);
	/* MHD repeats its headers-only call after a suspension during it. */
	if (r->headers_call && !r->suspended_in_call)
		r->headers_call = false;
	return ret;
}

static enum MHD_Result handle(struct req *r, const char *upload_data, size_t *upload_data_size)
{
	enum MHD_Result ret;

	if (r->error_pending) {
		if (*upload_data_size > 0) {
			*upload_data_size = 0;
			return MHD_YES;
		}
		return queue_error(r);
	}
	switch (r->state) {
	case REQ_NEW:
		ret = start_request(r, r->method, r->version, upload_data_size);
		if (ret != MHD_YES || r->state != REQ_NEW || r->error_pending)
			return ret;
		return decided(r, upload_data_size);
	case REQ_WAIT_DECISION:
		ret = decided(r, upload_data_size);
		if (ret != MHD_YES || r->state != REQ_PROXYING)
			return ret;
		break;
	case REQ_DECIDED:
		break;
	case REQ_PROXYING:
		break;
	case REQ_RESPONDED:
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->state != REQ_PROXYING)
		return MHD_YES;
	if (*upload_data_size > 0) {
		size_t taken;

		if (r->upstream_done) { /* upstream is finished: drain */
			*upload_data_size = 0;
			return MHD_YES;
		}
		taken = proxy_feed_upload(r, upload_data, *upload_data_size);
		*upload_data_size -= taken;
		if (*upload_data_size > 0)
			suspend(r, SUSP_UPLOAD_FULL);
		return MHD_YES;
	}
	if (r->headers_call)
		return MHD_YES; /* headers only so far */
	proxy_upload_complete(r);
	if (r->head_done || r->upstream_done)
		return queue_upstream_response(r);
	suspend(r, SUSP_WAIT_HEADERS);
	loop_watch_hangup(r->loop, r, true);
	return MHD_YES;
}

static bool skip_response_header(const struct req *r, const char *name)
{
	const struct hdr *h;

	if (cm_http_is_hop_header(name) || strcasecmp(name, "Content-Length") == 0 ||
	    strcasecmp(name, "Date") == 0)
		return true;
	for (h = r->resp_headers; h != NULL; h = h->next)
		if (strcasecmp(h->name, "Connection") == 0 &&
		    cm_http_connection_lists(h->value, name))
			return true;
	return false;
}

static enum MHD_Result queue_upstream_response(struct req *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	bool no_body;

	loop_watch_hangup(r->loop, r, false);
	if (!r->head_done) {
		enum cm_reason reason = r->upstream_result == CURLE_OPERATION_TIMEDOUT
						? CM_REASON_UPSTREAM_TIMEOUT
						: CM_REASON_UPSTREAM_UNAVAILABLE;

		if (!r->client_gone)
			cm_metrics_upstream_error(r->srv->metrics, reason);
		r->status = cm_reason_status(reason);
		r->substatus = cm_reason_substatus(reason);
		return queue_error(r);
	}
	r->status = r->up_status;
	r->substatus = 0;
	no_body = strcmp(r->method, "HEAD") == 0 || r->up_status == 204 || r->up_status == 304 ||
		  r->up_status < 200;
	if (no_body) {
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	} else {
		/* MHD allocates (and zeroes) the block with the response: no larger
		 * than a short body needs. */
		size_t block = 16 * 1024;

		if (r->resp_length >= 0 && (uint64_t)r->resp_length < block)
			block = r->resp_length < 1024 ? 1024 : (size_t)r->resp_length;
		resp = MHD_create_response_from_callback(
			r->resp_length >= 0 ? (uint64_t)r->resp_length : MHD_SIZE_UNKNOWN, block,
			proxy_read_response, r, NULL);
	}
	if (resp == NULL)
		return MHD_NO;
	for (const struct hdr *h = r->resp_headers; h != NULL; h = h->next)
		if (!skip_response_header(r, h->name))
			MHD_add_response_header(resp, h->name, h->value);
	ret = MHD_queue_response(r->mhd, (unsigned int)r->up_status, resp);
	MHD_destroy_response(resp);
	r->response_queued = ret == MHD_YES;
	r->state = REQ_RESPONDED;
	return ret;
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	logmsg("debug", "libmicrohttpd: %s", msg);
}

/* GnuTLS's NORMAL prefers P-256 for key exchange; with server precedence a
 * client that sent an X25519 key share (OpenSSL, iOS, Android, Windows all
 * do) got a HelloRetryRequest — one more round trip and a slower curve in
 * nettle — on every full handshake and every resumption. X25519 first, the
 * NIST curves after it, FFDHE last. */
#define TLS_PRIORITIES                                                                          \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:" \
	"+GROUP-SECP384R1:+GROUP-SECP521R1:+GROUP-X448:+GROUP-FFDHE2048:+GROUP-FFDHE3072:"      \
	"%SERVER_PRECEDENCE"

struct MHD_Daemon *front_daemon_new(struct front_ctx *ctx, char **error)
{
	struct server *srv = ctx->srv;
	struct gen *g = server_gen(srv);
	const struct cm_config *cfg = g->cfg;
	unsigned int per_loop = (unsigned int)(cfg->server.max_connections / srv->n_loops + 1);
	struct MHD_Daemon *d;

	ctx->head_timeout_ms = cfg->server.request_header_timeout_s * 1000.0;
	d = MHD_start_daemon(
		MHD_USE_TLS | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET |
			MHD_USE_ERROR_LOG,
		0, NULL, NULL, access_handler, ctx, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
		MHD_OPTION_HTTPS_MEM_KEY, ctx->li->key_pem, MHD_OPTION_HTTPS_MEM_CERT,
		ctx->li->cert_pem, MHD_OPTION_HTTPS_MEM_TRUST, ctx->li->trust_pem,
		MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
		(size_t)cfg->server.connection_memory_bytes, MHD_OPTION_CONNECTION_LIMIT, per_loop,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->server.request_header_timeout_s,
		MHD_OPTION_NOTIFY_CONNECTION, notify_connection, ctx, MHD_OPTION_NOTIFY_COMPLETED,
		request_completed, ctx, MHD_OPTION_URI_LOG_CALLBACK, uri_log, ctx, MHD_OPTION_END);
	gen_unref(g);
	if (d == NULL)
		*error = cm_strdup_printf(
			"libmicrohttpd could not start TLS for %s:%d (certificate, key or trusted issuers unusable?)",
			ctx->li->ip, ctx->li->port);
	return d;
}
