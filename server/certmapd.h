/*
 * certmapd internals shared by server/ files (not a public API).
 *
 * Threading model:
 *  - N event loops (one per CPU by default), each one thread running an
 *    epoll set with: the shared listening sockets (EPOLLEXCLUSIVE), sockets
 *    accepted but not yet handed over (first byte peeked: TLS or a plain-HTTP
 *    mistake), one MHD daemon per listener in external-epoll mode, and the
 *    upstream side. A request lives on the loop of its connection from start
 *    to end: no per-request handoff.
 *  - Upstream: an http:// upstream is served by a small HTTP/1.1 client on
 *    the loop (upstream.c: non-blocking sockets in the loop's epoll set, a
 *    per-loop pool of idle keep-alive connections, deadlines in the loop's
 *    timeout); an https:// one by one curl multi handle per loop (socket
 *    API, proxy.c). The choice is made per config generation (gen.target).
 *    Why: with curl 7.88 the upstream request cost ~160 k instructions per
 *    request (writing the ~1 KB of identity headers through curl's printf
 *    alone ~105 k); the lean client writes the same head with memcpy, and
 *    keep-alive throughput went from 0.47 to 0.79 x nginx (bench/README.md,
 *    "Keep-alive"). Both clients share the header block (build_headers), the
 *    bounded body buffers and the error mapping: the lean client ends an
 *    exchange with the CURLcode curl would give, so 502.3 / 504 and the
 *    upstream-error metric do not depend on the client.
 *  - A decision pool: K threads, each with its own engine (own LDAP
 *    connection). Directory lookups never run on a loop thread. A finished
 *    decision resumes the waiting MHD connection (MHD_resume_connection is
 *    thread-safe and wakes the loop through MHD's own ITC).
 *  - The main thread handles signals (SIGHUP reload, SIGUSR1 reopen,
 *    SIGTERM/SIGINT drain) and nothing else.
 * Config generations: a reload builds a new struct gen (config, engines,
 * cache) and swaps it in; each request holds a reference to the generation
 * it started under; the old one is freed with its last request.
 */
#ifndef CERTMAPD_H
#define CERTMAPD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "certmap/accesslog.h"
#include "certmap/auditlog.h"
#include "certmap/cache.h"
#include "certmap/config.h"
#include "certmap/engine.h"
#include "certmap/metrics.h"

#define CMD_MAX_LOOPS 64
#define CMD_BUF_BYTES (64u * 1024u) /* each direction of a proxied body */
#define CMD_MAX_UPSTREAM_HEAD_BYTES (64u * 1024u)
#define CMD_MAX_PENDING_ACCEPT 4096 /* sockets waiting for their first byte */
#define CMD_ACCEPT_BURST 8          /* accept() calls per listener wake-up */

/* Tag of every epoll registration of a loop (epoll_event.data.ptr). */
enum evkind { EV_WAKE, EV_LISTEN, EV_MHD, EV_PENDING, EV_CURL, EV_HUP, EV_UPSTREAM };

struct evsrc {
	enum evkind kind;
	int fd;
	void *ptr;
	int index;
};

/* ---- generations ---- */

struct up_target;

struct gen {
	atomic_int refs;
	unsigned long id;
	struct cm_config *cfg;
	struct cm_engine **engines; /* one per decision thread */
	int n_engines;
	struct cm_cache *cache;
	struct cm_revstore *rev;  /* revocation data shared by the engines */
	bool key_uses_basic;      /* the Basic user changes decisions */
	struct up_target *target; /* http:// upstream for upstream.c; NULL: curl */
};

struct gen *gen_new(const char *config_file, int n_engines, unsigned long id, char **error);
struct gen *gen_ref(struct gen *g);
void gen_unref(struct gen *g);

/* ---- the server ---- */

struct loop;
struct decider;

struct listener {
	int fd;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char ip[64];
	int port;
	char *cert_pem;  /* server certificate chain, PEM */
	char *key_pem;   /* wiped on free */
	char *trust_pem; /* trusted issuers: MHD asks clients for certs from these */
};

struct server {
	const char *config_file;
	struct listener *listeners;
	size_t n_listeners;
	struct loop *loops[CMD_MAX_LOOPS];
	int n_loops;
	struct decider *decider;
	struct cm_metrics *metrics;
	struct cm_accesslog *access;
	struct cm_auditlog *audit;
	pthread_mutex_t gen_lock;
	struct gen *gen; /* current; take with server_gen() */
	atomic_ulong next_gen_id;
	atomic_bool draining;
	atomic_long requests_in_flight;
	atomic_ulong request_seq;
	gnutls_datum_t ticket_key;
	bool tickets;
	struct MHD_Daemon *admin;
	char *admin_error;
};

struct gen *server_gen(struct server *srv); /* new reference */

/* ---- per connection and per request ---- */

struct conn {
	struct loop *loop;
	struct MHD_Connection *mhd;
	double head_deadline;     /* monotonic ms; 0 = a request head is being handled */
	struct conn *prev, *next; /* the loop's connections */
	struct listener *listener;
	char client_ip[64];
	int client_port;
	bool chain_loaded;
	unsigned char **chain_der; /* leaf first; copied from GnuTLS */
	size_t *chain_len;
	size_t chain_n;
	/* last verdict on this connection, valid for (gen_id, key) */
	unsigned long memo_gen;
	unsigned char memo_key[CM_CACHE_KEY_BYTES];
	struct cm_verdict *memo;
	char *client_cert_hdr; /* ":<base64 leaf>:" for Client-Cert, made once (proxy.c) */
	/* cache key of the chain (+ Basic user when key_use_basic), see request_key() */
	bool key_valid, key_use_basic;
	char *key_user; /* wiped on free */
	unsigned char key[CM_CACHE_KEY_BYTES];
	/* Hang-up watch (loop.c): the client socket is registered once, edge-
	 * triggered on EPOLLRDHUP, the first time a request of the connection is
	 * suspended waiting for the upstream; it stays registered until the
	 * connection closes, so no epoll_ctl per request. */
	struct req *req;  /* the request in progress (MHD has one at a time) */
	struct evsrc hup; /* fd -1: not registered */
	bool hup_seen;    /* the peer hung up while nobody was watching */
	bool hup_level;   /* re-armed level-triggered to report hup_seen */
};

enum req_state {
	REQ_NEW,
	REQ_WAIT_DECISION,
	REQ_DECIDED,
	REQ_PROXYING,
	REQ_RESPONDED,
};

enum req_suspend {
	SUSP_NONE,
	SUSP_DECISION,
	SUSP_UPLOAD_FULL,
	SUSP_WAIT_HEADERS,
	SUSP_WAIT_BODY,
};

struct hdr { /* one allocation: name and value follow the node */
	char *name;
	char *value;
	struct hdr *next;
};

struct buf {
	unsigned char *data;
	size_t start, end; /* bytes [start, end) are pending */
};

struct req {
	struct req *prev, *next; /* the loop's requests */
	struct server *srv;
	struct loop *loop;
	struct conn *conn;
	struct MHD_Connection *mhd;
	struct gen *gen;
	enum req_state state;
	enum req_suspend suspended;
	unsigned calls;         /* access handler invocations */
	bool headers_call;      /* the next call is MHD's headers-only call (again) */
	bool suspended_in_call; /* suspend() ran during the current handler call */
	bool error_pending;     /* answer with status.substatus once the body is read */
	bool proxied;
	struct timespec started_wall;
	double started_ms;
	unsigned long seq;
	char id[24];
	/* request line */
	char *raw_target; /* as received */
	char *path;       /* normalized */
	char *query;      /* raw, without '?', or NULL */
	const char *method;
	const char *version;
	char *basic_user; /* decoded user part of Authorization: Basic */
	enum cm_cert_mode mode;
	/* decision */
	struct cm_verdict *verdict; /* NULL = no decision (ignore/accept w/o cert) */
	bool decided_now;           /* computed for this request (not a cache hit) */
	unsigned char key[CM_CACHE_KEY_BYTES];
	/* answer */
	int status;
	int substatus;
	uint32_t win32;
	/* upstream: curl (easy) or the lean client (upc), see upstream.c */
	struct upconn *upc;
	CURL *easy;
	unsigned long easy_gen;        /* generation whose options the handle carries (0: none) */
	struct curl_slist *up_headers; /* one allocation: nodes and lines (free()) */
	bool has_body;
	bool upload_done; /* client body fully received */
	bool upload_eof_sent;
	bool curl_read_paused;
	bool curl_write_paused;
	bool upstream_done;
	CURLcode upstream_result;
	int up_status;
	struct hdr *resp_headers, **resp_tail;
	size_t resp_head_bytes;
	bool head_done;
	long long resp_length; /* -1 unknown */
	struct buf up, down;
	bool response_queued;
	bool hup_watch; /* suspended waiting for the upstream: a hang-up aborts it */
	bool client_gone;
	uint64_t bytes_up, bytes_down;
};

/* ---- loops ---- */

struct loop *loop_new(struct server *srv, int index, char **error);
int loop_start(struct loop *l);
void loop_stop(struct loop *l); /* joins */
void loop_free(struct loop *l);
size_t loop_connections(struct loop *l);
void loop_stop_accepting(struct loop *l);
/* Wakes the loop from any thread (after MHD_resume_connection). */
void loop_wake(struct loop *l);
void loop_conn_delta(struct loop *l, int delta);

/* Per-loop pools of curl easy handles and body buffers (loop thread only):
 * a request reuses what the previous one released. A pooled easy handle
 * keeps its options (no curl_easy_reset): *gen_id tells the generation whose
 * constant options it carries (0 for a new handle); proxy_start() sets the
 * per-request options every time and the constant ones when gen_id differs.
 * loop_easy_put() with gen_id 0 (a transfer that did not end well) resets
 * the handle. Every handle carries the loop's socket open/close callbacks. */
#define CMD_POOL_MAX 256
CURL *loop_easy_get(struct loop *l, unsigned long *gen_id);
void loop_easy_put(struct loop *l, CURL *e, unsigned long gen_id);
void loop_easy_clean(struct loop *l, CURL *e); /* curl_easy_reset + the loop's callbacks */
unsigned char *loop_buf_get(struct loop *l);
void loop_buf_put(struct loop *l, unsigned char *b);

/* Curl glue for proxy.c (loop thread only). */
CURLM *loop_multi(struct loop *l);
void loop_watch_hangup(struct loop *l, struct req *r, bool on);
void loop_forget_conn(struct loop *l, struct conn *c); /* before c is freed */
void loop_track_conn(struct loop *l, struct conn *c, bool add);
void loop_track_req(struct loop *l, struct req *r, bool add);

/* ---- front (MHD callbacks) ---- */

struct front_ctx {
	struct server *srv;
	struct loop *loop;
	struct listener *li;
	double head_timeout_ms; /* server.request_header_timeout_s */
};

struct MHD_Daemon *front_daemon_new(struct front_ctx *ctx, char **error);
void front_resume(struct req *r, enum req_suspend from);
void front_finish_decision(struct req *r, struct cm_verdict *v);

/* ---- proxy (curl) ---- */

int proxy_start(struct req *r);
void proxy_transfer_done(struct req *r, CURLcode result);
void proxy_abort(struct req *r);
ssize_t proxy_read_response(void *cls, uint64_t pos, char *buf, size_t max);
/* Feeds request body bytes; returns how many were taken. */
size_t proxy_feed_upload(struct req *r, const char *data, size_t len);
void proxy_upload_complete(struct req *r);

/* Shared with upstream.c. A response head line (with its line end) as curl's
 * header callback sees it; false: the head is too large (abort: 502). */
bool proxy_header_line(struct req *r, const char *data, size_t len);

static inline size_t buf_pending(const struct buf *b)
{
	return b->end - b->start;
}

/* Room at the end after compacting. */
static inline size_t buf_room(struct buf *b)
{
	if (b->start > 0 && b->start == b->end)
		b->start = b->end = 0;
	if (CMD_BUF_BYTES - b->end < CMD_BUF_BYTES / 4 && b->start > 0) {
		memmove(b->data, b->data + b->start, b->end - b->start);
		b->end -= b->start;
		b->start = 0;
	}
	return CMD_BUF_BYTES - b->end;
}

/* ---- lean upstream client (upstream.c): http:// upstreams without curl ----
 * Each loop keeps its upstream connections: active ones (deadline list) and
 * idle keep-alive ones (LIFO, at most CMD_UP_IDLE_MAX, dropped after
 * CMD_UP_IDLE_MS or when the upstream closes them). */
#define CMD_UP_IDLE_MAX 256
#define CMD_UP_IDLE_MS 118000.0 /* curl's default CURLOPT_MAXAGE_CONN */
#define CMD_UP_CONNECT_MS 10000.0

struct upconn;
struct up_pool {
	struct upconn *idle, *idle_tail; /* most recently used first */
	int n_idle;
	struct upconn *active;
	struct upconn *dead;  /* closed this round, freed by upstream_reap() */
	double next_deadline; /* monotonic ms, earliest active deadline or earlier; 0: none */
};

/* http:// URL → target (resolved now, once per generation); NULL when the URL
 * is not one the lean client takes (https://, user info, query) or does not
 * resolve: curl then serves the generation. */
struct up_target *upstream_target_new(const char *url, char **why);
void upstream_target_free(struct up_target *t);
/* Starts r's exchange; r->up_headers holds the header lines (build_headers),
 * body_len: -1 none, -2 chunked, else Content-Length. */
int upstream_start(struct req *r, long long body_len);
void upstream_kick(struct req *r);    /* body bytes or the end of the body arrived */
void upstream_drained(struct req *r); /* room in r->down again */
void upstream_abort(struct req *r);   /* closes the connection */
void upstream_event(struct upconn *c, uint32_t events);
void upstream_expire(struct loop *l, double now); /* deadlines of active exchanges */
void upstream_sweep_idle(struct loop *l, double now);
void upstream_reap(struct loop *l); /* end of each loop round */
void upstream_pool_free(struct loop *l);
struct up_pool *loop_up_pool(struct loop *l);
int loop_epfd(struct loop *l);

/* ---- decisions ---- */

struct decider *decider_new(struct server *srv, int threads);
void decider_free(struct decider *d); /* joins */
/* Queues a decision for r (suspended); the result arrives through the cache
 * waiters and front_finish_decision. */
int decider_submit(struct decider *d, struct req *r);

/* ---- admin ---- */

struct MHD_Daemon *admin_start(struct server *srv, char **error);

/* ---- errors and logs ---- */

void front_log_request(struct req *r);
char *error_page(int status, int substatus, const struct cm_verdict *v, bool detailed,
		 const char *reason_override, size_t *len);

/* ---- logging to stderr ---- */

void logmsg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
