/*
 * certmap-loadgen — an mTLS HTTP/1.1 load generator (wrk and h2load cannot present client
 * certificates). Used by bench/run-proxy-bench; see bench/README.md "Proxy benchmark".
 *
 * What it owns: T worker threads, each with its own epoll loop and its share of the C
 * connections; one SSL_CTX (read-only after start) and the client identities.
 * Threading: workers share nothing but atomics (request budget, stop flag, idle/storm counters);
 * each keeps its own statistics, which main adds up after joining them. Main only supervises:
 * signals, the deadline, and the "idle: N connections established" line.
 * Invariants: every connection is in exactly one state; every socket is closed by conn_close();
 * at most LG_MAX_CONNECTIONS connections; the run ends at --duration or --requests (first wins),
 * and every operation has a --timeout.
 *
 * Output: one JSON line with every figure, then one human summary line (both on stdout).
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define LG_MAX_CONNECTIONS 20000
#define LG_MAX_THREADS 256
#define LG_MAX_HEADERS 64
#define LG_MAX_IDENTITIES 100000
#define LG_RESP_HEAD_MAX_BYTES (64 * 1024)
#define LG_IO_CHUNK_BYTES (16 * 1024)
#define LG_BODY_BUF_BYTES (64 * 1024)
#define LG_RETRY_DELAY_S 0.05
#define LG_LOGGED_ERRORS_MAX 8
#define HIST_BUCKETS 3776 /* see hist_index(): 128 exact + 56 octaves x 64 */

enum mode { MODE_KEEPALIVE, MODE_HANDSHAKE, MODE_RESUME, MODE_IDLE, MODE_STORM, MODE_UPLOAD };
static const char *const mode_names[] = {"keepalive", "handshake", "resume",
					 "idle",      "storm",     "upload"};

enum err_kind { ERR_CONNECT, ERR_TLS, ERR_TIMEOUT, ERR_CLOSED, ERR_HTTP, ERR_STATUS, ERR_KINDS };
static const char *const err_names[] = {"connect", "tls", "timeout", "closed", "http", "status"};

enum cstate {
	CS_NONE,       /* never opened */
	CS_CONNECTING, /* TCP connect in progress */
	CS_HANDSHAKE,
	CS_SEND, /* request head */
	CS_BODY, /* request body (upload) */
	CS_READ, /* response */
	CS_IDLE, /* idle mode: answered, held open */
	CS_WAIT, /* closed after an error; reopen at retry_at */
	CS_DONE,
};

enum rphase { RP_HEAD, RP_LEN, RP_CHUNK_SIZE, RP_CHUNK_DATA, RP_CHUNK_CRLF, RP_TRAILER, RP_EOF };

struct ident {
	X509 *cert;
	EVP_PKEY *key;
	STACK_OF(X509) *chain;
};

struct hist {
	uint64_t n, sum_us, max_us;
	uint64_t b[HIST_BUCKETS];
};

struct resp {
	enum rphase phase;
	char *head; /* allocated while the head is read, LG_RESP_HEAD_MAX_BYTES */
	size_t head_len;
	char line[128]; /* chunk-size or trailer line */
	size_t line_len;
	unsigned status;
	uint64_t left;
	bool close;
};

struct worker;

struct conn {
	struct worker *w;
	unsigned slot; /* global connection index: picks the identity */
	int fd;
	SSL *ssl;
	enum cstate st;
	SSL_SESSION *sess; /* resume mode: the newest ticket from this slot's last connection */
	bool offered;      /* this handshake offered a session */
	double t_open, t_req, deadline, retry_at;
	size_t req_off;
	uint64_t body_left;
	struct resp r;
};

struct stats {
	struct hist lat, hs;
	uint64_t status[600];
	uint64_t errors[ERR_KINDS];
	uint64_t requests, hs_full, hs_resumed, hs_offered;
	uint64_t bytes_sent, bytes_recv, body_sent;
	uint64_t closed_by_peer;
	double last_done;
};

struct worker {
	pthread_t thread;
	int ep;
	struct conn *conns;
	unsigned nconns, first_slot;
	atomic_uint done; /* connections in CS_DONE (main reads it) */
	struct stats st;
	char tls_version[16], cipher[64];
};

/* --- configuration (read-only once workers run) ------------------------------------------ */
static struct {
	enum mode mode;
	char host[256], port[8], path[2048];
	bool host_is_ip;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	const char *cert, *key, *cert_dir, *ca, *method;
	unsigned threads, connections;
	double duration_s, timeout_s;
	long long requests; /* < 0: unbounded */
	int tls_min, tls_max;
	uint64_t upload_bytes;
	const char *headers[LG_MAX_HEADERS];
	unsigned nheaders;
	unsigned expect_status;
	SSL_CTX *ctx;
	struct ident *ids;
	size_t nids;
	char *req; /* request head */
	size_t req_len;
	unsigned char body[LG_BODY_BUF_BYTES];
} cfg;

static atomic_llong tickets; /* requests left to start, when bounded */
static atomic_int stop_flag; /* set by main: stop now */
static atomic_uint idle_est, idle_failed;
static atomic_int logged_errors;
static double t_start;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void __attribute__((noreturn, format(printf, 1, 2))) fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("certmap-loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* --- histogram: microseconds, exact below 128 us, then 64 buckets per octave (~1.6 %) ----- */

static unsigned hist_index(uint64_t v)
{
	unsigned e;

	if (v < 128)
		return (unsigned)v;
	e = 63U - (unsigned)__builtin_clzll(v);
	return 128U + (e - 7U) * 64U + (unsigned)((v >> (e - 6U)) & 63U);
}

static uint64_t hist_value(unsigned i)
{
	unsigned e;
	uint64_t m;

	if (i < 128)
		return i;
	e = (i - 128U) / 64U + 7U;
	m = (i - 128U) % 64U;
	return ((64U + m) << (e - 6U)) + ((1ULL << (e - 6U)) >> 1);
}

static void hist_add(struct hist *h, double seconds)
{
	uint64_t us = seconds > 0 ? (uint64_t)(seconds * 1e6 + 0.5) : 0;

	h->n++;
	h->sum_us += us;
	if (us > h->max_us)
		h->max_us = us;
	h->b[hist_index(us)]++;
}

static void hist_merge(struct hist *into, const struct hist *h)
{
	into->n += h->n;
	into->sum_us += h->sum_us;
	if (h->max_us > into->max_us)
		into->max_us = h->max_us;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->b[i] += h->b[i];
}

/* Percentile in milliseconds. */
static double hist_pct(const struct hist *h, double pct)
{
	uint64_t want, seen = 0;

	if (h->n == 0)
		return 0;
	want = (uint64_t)((double)h->n * pct / 100.0 + 0.999999);
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			uint64_t v = hist_value(i);

			return (double)(v > h->max_us ? h->max_us : v) / 1e3;
		}
	}
	return (double)h->max_us / 1e3;
}

/* --- errors ------------------------------------------------------------------------------- */

static void __attribute__((format(printf, 3, 4)))
count_error(struct conn *c, enum err_kind kind, const char *fmt, ...)
{
	va_list ap;

	c->w->st.errors[kind]++;
	if (atomic_fetch_add(&logged_errors, 1) >= LG_LOGGED_ERRORS_MAX)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "certmap-loadgen: conn %u: %s: ", c->slot, err_names[kind]);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static const char *ssl_err_text(void)
{
	static _Thread_local char buf[256];
	unsigned long e = ERR_get_error();

	if (e == 0)
		return errno ? strerror(errno) : "unexpected EOF";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/* --- request budget ------------------------------------------------------------------------ */

static bool take_ticket(void)
{
	if (atomic_load(&stop_flag))
		return false;
	if (cfg.requests < 0)
		return true;
	return atomic_fetch_sub(&tickets, 1) > 0;
}

/* --- connections ---------------------------------------------------------------------------- */

static void conn_close(struct conn *c, bool graceful)
{
	if (c->ssl != NULL) {
		if (graceful)
			SSL_shutdown(c->ssl); /* one non-blocking close_notify; keeps the session */
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd); /* also leaves the epoll set */
		c->fd = -1;
	}
	free(c->r.head);
	c->r.head = NULL;
}

static void conn_done(struct conn *c)
{
	if (c->st != CS_DONE) {
		c->st = CS_DONE;
		atomic_fetch_add(&c->w->done, 1);
	}
}

static bool one_shot_mode(void)
{
	return cfg.mode == MODE_IDLE || cfg.mode == MODE_STORM;
}

static void conn_open(struct conn *c);

/* After an error: idle/storm connections are finished; the others retry shortly. */
static void conn_fail(struct conn *c)
{
	conn_close(c, false);
	if (one_shot_mode()) {
		if (cfg.mode == MODE_IDLE)
			atomic_fetch_add(&idle_failed, 1);
		conn_done(c);
		return;
	}
	c->st = CS_WAIT;
	c->retry_at = now_s() + LG_RETRY_DELAY_S;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_app_data(ssl);

	if (c == NULL)
		return 0;
	SSL_SESSION_free(c->sess);
	c->sess = sess;
	return 1; /* we keep the reference */
}

static void conn_open(struct conn *c)
{
	const struct ident *id = &cfg.ids[c->slot % cfg.nids];
	struct epoll_event ev;
	int one = 1;

	if ((cfg.mode == MODE_HANDSHAKE || cfg.mode == MODE_RESUME) && !take_ticket()) {
		conn_done(c);
		return;
	}
	memset(&c->r, 0, sizeof(c->r));
	c->t_open = now_s();
	c->deadline = c->t_open + cfg.timeout_s;
	c->fd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		count_error(c, ERR_CONNECT, "socket: %s", strerror(errno));
		conn_fail(c);
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->ssl = SSL_new(cfg.ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
	    SSL_use_cert_and_key(c->ssl, id->cert, id->key, id->chain, 1) != 1 ||
	    (!cfg.host_is_ip && SSL_set_tlsext_host_name(c->ssl, cfg.host) != 1)) {
		count_error(c, ERR_TLS, "SSL setup: %s", ssl_err_text());
		conn_fail(c);
		return;
	}
	SSL_set_app_data(c->ssl, c);
	SSL_set_connect_state(c->ssl);
	c->offered = false;
	if (cfg.mode == MODE_RESUME && c->sess != NULL) {
		if (SSL_set_session(c->ssl, c->sess) == 1)
			c->offered = true;
	}
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	ev.data.ptr = c;
	if (epoll_ctl(c->w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
		count_error(c, ERR_CONNECT, "epoll_ctl: %s", strerror(errno));
		conn_fail(c);
		return;
	}
	if (connect(c->fd, (struct sockaddr *)&cfg.addr, cfg.addrlen) == 0)
		c->st = CS_HANDSHAKE;
	else if (errno == EINPROGRESS)
		c->st = CS_CONNECTING;
	else {
		count_error(c, ERR_CONNECT, "connect: %s", strerror(errno));
		conn_fail(c);
	}
}

static void start_request(struct conn *c)
{
	c->t_req = now_s();
	c->deadline = c->t_req + cfg.timeout_s;
	c->req_off = 0;
	c->body_left = cfg.mode == MODE_UPLOAD ? cfg.upload_bytes : 0;
	free(c->r.head);
	memset(&c->r, 0, sizeof(c->r));
	c->st = CS_SEND;
}

/* --- response parser ------------------------------------------------------------------------- */

static bool header_is(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);

	return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

static bool value_has(const char *line, size_t len, const char *token)
{
	const char *colon = memchr(line, ':', len);
	size_t n = strlen(token);

	for (const char *p = colon + 1; p + n <= line + len; p++)
		if (strncasecmp(p, token, n) == 0)
			return true;
	return false;
}

/* Parses the complete head in r->head[0..len). 0 ok; -1 malformed. */
static int parse_head(struct resp *r, size_t len)
{
	const char *p = r->head, *end = r->head + len;
	bool chunked = false, have_len = false;
	uint64_t clen = 0;

	if (len < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
	    !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
	    !isdigit((unsigned char)p[11]))
		return -1;
	r->close = p[7] == '0';
	r->status = (unsigned)((p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
	if (r->status < 100 || r->status > 599)
		return -1;
	p = memchr(p, '\n', (size_t)(end - p));
	while (p != NULL && ++p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t l;

		if (nl == NULL)
			break;
		l = (size_t)(nl - p);
		if (l > 0 && p[l - 1] == '\r')
			l--;
		if (header_is(p, l, "Content-Length")) {
			const char *v = memchr(p, ':', l) + 1;

			while (*v == ' ' || *v == '\t')
				v++;
			clen = strtoull(v, NULL, 10);
			have_len = true;
		} else if (header_is(p, l, "Transfer-Encoding") && value_has(p, l, "chunked")) {
			chunked = true;
		} else if (header_is(p, l, "Connection")) {
			if (value_has(p, l, "close"))
				r->close = true;
		}
		p = nl;
	}
	if (r->status == 204 || r->status == 304 || (r->status >= 100 && r->status < 200) ||
	    strcmp(cfg.method, "HEAD") == 0) {
		r->phase = RP_LEN;
		r->left = 0;
	} else if (chunked) {
		r->phase = RP_CHUNK_SIZE;
	} else if (have_len) {
		r->phase = RP_LEN;
		r->left = clen;
	} else {
		r->phase = RP_EOF;
		r->close = true;
	}
	return 0;
}

/* Feeds n bytes. Returns 1 when the response is complete, 0 for more, -1 malformed. */
static int resp_feed(struct resp *r, const char *d, size_t n)
{
	while (n > 0 || (r->phase == RP_LEN && r->left == 0)) {
		switch (r->phase) {
		case RP_HEAD: {
			size_t old = r->head_len, take = n, scan;
			char *eoh;

			if (r->head == NULL && (r->head = malloc(LG_RESP_HEAD_MAX_BYTES)) == NULL)
				return -1;
			if (take > LG_RESP_HEAD_MAX_BYTES - old)
				take = LG_RESP_HEAD_MAX_BYTES - old;
			memcpy(r->head + old, d, take);
			r->head_len += take;
			scan = old > 3 ? old - 3 : 0;
			eoh = memmem(r->head + scan, r->head_len - scan, "\r\n\r\n", 4);
			if (eoh == NULL) {
				if (r->head_len == LG_RESP_HEAD_MAX_BYTES)
					return -1;
				return 0;
			}
			{
				size_t hl = (size_t)(eoh - r->head) + 4, used = hl - old;

				if (parse_head(r, hl) != 0)
					return -1;
				free(r->head);
				r->head = NULL;
				r->head_len = 0;
				d += used;
				n -= used;
				if (r->status >= 100 &&
				    r->status < 200) { /* interim: 100 Continue */
					r->phase = RP_HEAD;
					r->left = 0;
				}
			}
			break;
		}
		case RP_LEN:
			if (r->left == 0)
				return 1;
			if ((uint64_t)n >= r->left) {
				n -= (size_t)r->left, d += r->left;
				r->left = 0;
				return 1;
			}
			r->left -= n;
			return 0;
		case RP_EOF:
			return 0; /* complete when the peer closes */
		case RP_CHUNK_SIZE:
		case RP_TRAILER:
			while (n > 0) {
				char ch = *d++;

				n--;
				if (ch != '\n') {
					if (r->line_len + 1 >= sizeof(r->line))
						return -1;
					r->line[r->line_len++] = ch;
					continue;
				}
				if (r->line_len > 0 && r->line[r->line_len - 1] == '\r')
					r->line_len--;
				r->line[r->line_len] = '\0';
				if (r->phase == RP_TRAILER) {
					if (r->line_len == 0)
						return 1;
					r->line_len = 0;
					continue;
				}
				r->left = strtoull(r->line, NULL, 16);
				r->line_len = 0;
				r->phase = r->left == 0 ? RP_TRAILER : RP_CHUNK_DATA;
				break;
			}
			break;
		case RP_CHUNK_DATA: {
			size_t take = (uint64_t)n < r->left ? n : (size_t)r->left;

			d += take;
			n -= take;
			r->left -= take;
			if (r->left == 0) {
				r->phase = RP_CHUNK_CRLF;
				r->left = 2;
			}
			break;
		}
		case RP_CHUNK_CRLF:
			while (n > 0 && r->left > 0) {
				char ch = *d++;

				n--;
				r->left = ch == '\n' ? 0 : r->left;
			}
			if (r->left == 0)
				r->phase = RP_CHUNK_SIZE;
			break;
		}
	}
	return 0;
}

/* --- the state machine ------------------------------------------------------------------------ */

static void handshake_done(struct conn *c)
{
	struct worker *w = c->w;

	hist_add(&w->st.hs, now_s() - c->t_open);
	if (c->offered)
		w->st.hs_offered++;
	if (SSL_session_reused(c->ssl))
		w->st.hs_resumed++;
	else
		w->st.hs_full++;
	if (w->tls_version[0] == '\0') {
		snprintf(w->tls_version, sizeof(w->tls_version), "%s", SSL_get_version(c->ssl));
		snprintf(w->cipher, sizeof(w->cipher), "%s", SSL_get_cipher_name(c->ssl));
	}
	if ((cfg.mode == MODE_KEEPALIVE || cfg.mode == MODE_UPLOAD) && !take_ticket()) {
		conn_close(c, true);
		conn_done(c);
		return;
	}
	start_request(c);
}

/* A complete response arrived. */
static void response_done(struct conn *c)
{
	struct worker *w = c->w;
	double now = now_s();
	unsigned s = c->r.status;

	w->st.requests++;
	w->st.status[s < 600 ? s : 0]++;
	hist_add(&w->st.lat, now - c->t_req);
	w->st.last_done = now;
	if (cfg.expect_status != 0 && s != cfg.expect_status)
		count_error(c, ERR_STATUS, "status %u, expected %u", s, cfg.expect_status);
	switch (cfg.mode) {
	case MODE_KEEPALIVE:
	case MODE_UPLOAD:
		if (c->r.close || c->body_left > 0) {
			conn_close(c, true);
			conn_open(c);
		} else if (take_ticket()) {
			start_request(c);
		} else {
			conn_close(c, true);
			conn_done(c);
		}
		break;
	case MODE_HANDSHAKE:
	case MODE_RESUME:
		conn_close(c, true);
		conn_open(c);
		break;
	case MODE_IDLE:
		free(c->r.head);
		c->r.head = NULL;
		c->st = CS_IDLE;
		atomic_fetch_add(&idle_est, 1);
		break;
	case MODE_STORM:
		conn_close(c, true);
		conn_done(c);
		break;
	}
}

/* Reads what is there. 1: response complete (handled); 0: want more; -1: failed (handled). */
static int conn_read(struct conn *c)
{
	char buf[LG_IO_CHUNK_BYTES];

	for (;;) {
		int n, e, rc;

		ERR_clear_error();
		n = SSL_read(c->ssl, buf, sizeof(buf));
		if (n > 0) {
			c->w->st.bytes_recv += (uint64_t)n;
			rc = resp_feed(&c->r, buf, (size_t)n);
			if (rc < 0) {
				count_error(c, ERR_HTTP, "malformed response");
				conn_fail(c);
				return -1;
			}
			if (rc == 1) {
				response_done(c);
				return 1;
			}
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return 0;
		if (c->r.phase == RP_EOF &&
		    (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL)) {
			c->r.close = true;
			response_done(c);
			return 1;
		}
		if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
			count_error(c, ERR_CLOSED,
				    "server closed the connection before the response");
		else
			count_error(c, ERR_TLS, "read: %s", ssl_err_text());
		conn_fail(c);
		return -1;
	}
}

static void drive(struct conn *c, uint32_t events)
{
	for (;;) {
		int n, e;

		ERR_clear_error();
		switch (c->st) {
		case CS_CONNECTING: {
			/* ask the socket, not the event: it may be stale (fd reused by this slot) */
			struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
			int err = 0;
			socklen_t len = sizeof(err);

			if (poll(&pfd, 1, 0) == 0)
				return;
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
				count_error(c, ERR_CONNECT, "connect: %s",
					    strerror(err ? err : errno));
				conn_fail(c);
				return;
			}
			c->st = CS_HANDSHAKE;
			break;
		}
		case CS_HANDSHAKE:
			n = SSL_do_handshake(c->ssl);
			if (n == 1) {
				handshake_done(c);
				break;
			}
			e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return;
			{
				long vr = SSL_get_verify_result(c->ssl);

				if (vr != X509_V_OK)
					count_error(c, ERR_TLS, "server certificate: %s",
						    X509_verify_cert_error_string(vr));
				else
					count_error(c, ERR_TLS, "handshake: %s", ssl_err_text());
			}
			conn_fail(c);
			return;
		case CS_SEND:
			n = SSL_write(c->ssl, cfg.req + c->req_off,
				      (int)(cfg.req_len - c->req_off));
			if (n > 0) {
				c->w->st.bytes_sent += (uint64_t)n;
				c->req_off += (size_t)n;
				if (c->req_off == cfg.req_len)
					c->st = c->body_left > 0 ? CS_BODY : CS_READ;
				break;
			}
			e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return;
			count_error(c, ERR_CLOSED, "write: %s", ssl_err_text());
			conn_fail(c);
			return;
		case CS_BODY: {
			size_t off =
				(size_t)((cfg.upload_bytes - c->body_left) % LG_BODY_BUF_BYTES);
			size_t len = LG_BODY_BUF_BYTES - off;

			if (len > c->body_left)
				len = (size_t)c->body_left;
			if (events & EPOLLIN) {
				/* the server may answer (e.g. 403) before reading the whole body */
				events &= ~(uint32_t)EPOLLIN;
				if (conn_read(c) != 0)
					return;
			}
			n = SSL_write(c->ssl, cfg.body + off, (int)len);
			if (n > 0) {
				c->w->st.bytes_sent += (uint64_t)n;
				c->w->st.body_sent += (uint64_t)n;
				c->body_left -= (uint64_t)n;
				if (c->body_left == 0)
					c->st = CS_READ;
				break;
			}
			e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return;
			/* write failed: an early response may be waiting */
			if (conn_read(c) != 0)
				return;
			count_error(c, ERR_CLOSED, "write (body): %s", ssl_err_text());
			conn_fail(c);
			return;
		}
		case CS_READ:
			if (conn_read(c) == 1)
				break; /* next state already set: keep going */
			return;
		case CS_IDLE: {
			char buf[256];

			n = SSL_read(c->ssl, buf, sizeof(buf));
			if (n > 0)
				break; /* unexpected bytes on an idle connection: ignore */
			e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return;
			c->w->st.closed_by_peer++;
			conn_close(c, false);
			conn_done(c);
			return;
		}
		case CS_NONE:
		case CS_WAIT:
		case CS_DONE:
			return;
		}
	}
}

static void check_timers(struct worker *w, double now)
{
	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];

		switch (c->st) {
		case CS_CONNECTING:
		case CS_HANDSHAKE:
		case CS_SEND:
		case CS_BODY:
		case CS_READ:
			if (now >= c->deadline) {
				count_error(c, ERR_TIMEOUT, "no progress for %.0f s (state %d)",
					    cfg.timeout_s, (int)c->st);
				conn_fail(c);
			}
			break;
		case CS_WAIT:
			if (now >= c->retry_at) {
				conn_open(c);
				if (c->st == CS_HANDSHAKE)
					drive(c, 0);
			}
			break;
		default:
			break;
		}
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[256];
	double next_timers = 0;

	for (unsigned i = 0; i < w->nconns; i++) {
		conn_open(&w->conns[i]);
		if (w->conns[i].st == CS_HANDSHAKE)
			drive(&w->conns[i], 0);
	}
	while (!atomic_load(&stop_flag) && atomic_load(&w->done) < w->nconns) {
		int n = epoll_wait(w->ep, evs, 256, 20);
		double now;

		for (int i = 0; i < n; i++)
			drive(evs[i].data.ptr, evs[i].events);
		now = now_s();
		if (now >= next_timers) {
			check_timers(w, now);
			next_timers = now + 0.02;
		}
	}
	for (unsigned i = 0; i < w->nconns; i++) {
		conn_close(&w->conns[i], false);
		SSL_SESSION_free(w->conns[i].sess);
		w->conns[i].sess = NULL;
	}
	return NULL;
}

/* --- set-up ----------------------------------------------------------------------------------- */

static void parse_url(const char *url)
{
	const char *p, *hostend, *slash;
	struct addrinfo hints = {0}, *ai;
	size_t hl;
	int rc;
	unsigned char tmp[16];

	if (strncmp(url, "https://", 8) != 0)
		fatal("--url %s: only https:// URLs", url);
	p = url + 8;
	slash = strchr(p, '/');
	if (slash == NULL)
		slash = p + strlen(p);
	if (*p == '[') {
		hostend = memchr(p, ']', (size_t)(slash - p));
		if (hostend == NULL)
			fatal("--url %s: bad IPv6 literal", url);
		hl = (size_t)(hostend - p - 1);
		if (hl >= sizeof(cfg.host))
			fatal("--url: host too long");
		memcpy(cfg.host, p + 1, hl);
		hostend++;
	} else {
		hostend = memchr(p, ':', (size_t)(slash - p));
		if (hostend == NULL)
			hostend = slash;
		hl = (size_t)(hostend - p);
		if (hl >= sizeof(cfg.host))
			fatal("--url: host too long");
		memcpy(cfg.host, p, hl);
	}
	cfg.host[hl] = '\0';
	if (*hostend == ':') {
		size_t pl = (size_t)(slash - hostend - 1);

		if (pl == 0 || pl >= sizeof(cfg.port))
			fatal("--url %s: bad port", url);
		memcpy(cfg.port, hostend + 1, pl);
		cfg.port[pl] = '\0';
		if (strspn(cfg.port, "0123456789") != pl)
			fatal("--url %s: bad port", url);
	} else {
		snprintf(cfg.port, sizeof(cfg.port), "443");
	}
	if (strlen(*slash ? slash : "/") >= sizeof(cfg.path))
		fatal("--url: path too long");
	snprintf(cfg.path, sizeof(cfg.path), "%s", *slash ? slash : "/");
	cfg.host_is_ip =
		inet_pton(AF_INET, cfg.host, tmp) == 1 || inet_pton(AF_INET6, cfg.host, tmp) == 1;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(cfg.host, cfg.port, &hints, &ai);
	if (rc != 0)
		fatal("--url %s: %s", url, gai_strerror(rc));
	memcpy(&cfg.addr, ai->ai_addr, ai->ai_addrlen);
	cfg.addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
}

/* Loads leaf + optional chain from a PEM file and the key; -1 (quietly) if unusable. */
static int load_ident(const char *cert_path, const char *key_path, struct ident *id, bool loud)
{
	FILE *f = fopen(cert_path, "r");
	X509 *x;

	memset(id, 0, sizeof(*id));
	if (f == NULL) {
		if (loud)
			fatal("%s: %s", cert_path, strerror(errno));
		return -1;
	}
	id->cert = PEM_read_X509(f, NULL, NULL, NULL);
	id->chain = sk_X509_new_null();
	while (id->cert != NULL && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
		sk_X509_push(id->chain, x);
	ERR_clear_error();
	fclose(f);
	f = fopen(key_path, "r");
	if (f != NULL) {
		id->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (id->cert == NULL || id->key == NULL || X509_check_private_key(id->cert, id->key) != 1) {
		if (loud)
			fatal("%s / %s: not a matching PEM certificate and key: %s", cert_path,
			      key_path, ssl_err_text());
		X509_free(id->cert);
		EVP_PKEY_free(id->key);
		sk_X509_pop_free(id->chain, X509_free);
		ERR_clear_error();
		return -1;
	}
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every NAME.pem with a matching NAME.key that is not a CA certificate, in name order. */
static void load_cert_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (d == NULL)
		fatal("--cert-dir %s: %s", dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);

		if (l < 5 || strcmp(de->d_name + l - 4, ".pem") != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			if (names == NULL)
				fatal("out of memory");
		}
		names[n] = strndup(de->d_name, l - 4);
		if (names[n] == NULL)
			fatal("out of memory");
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	cfg.ids = calloc(n ? n : 1, sizeof(*cfg.ids));
	if (cfg.ids == NULL)
		fatal("out of memory");
	for (size_t i = 0; i < n && cfg.nids < LG_MAX_IDENTITIES; i++) {
		char cp[4096], kp[4096];
		struct ident *id = &cfg.ids[cfg.nids];

		snprintf(cp, sizeof(cp), "%s/%s.pem", dir, names[i]);
		snprintf(kp, sizeof(kp), "%s/%s.key", dir, names[i]);
		if (load_ident(cp, kp, id, false) == 0) {
			if (X509_check_ca(id->cert) != 0) {
				X509_free(id->cert);
				EVP_PKEY_free(id->key);
				sk_X509_pop_free(id->chain, X509_free);
			} else {
				cfg.nids++;
			}
		}
		free(names[i]);
	}
	free(names);
	if (cfg.nids == 0)
		fatal("--cert-dir %s: no NAME.pem + NAME.key pairs", dir);
}

static void build_ctx(void)
{
	X509_VERIFY_PARAM *vp;

	cfg.ctx = SSL_CTX_new(TLS_client_method());
	if (cfg.ctx == NULL)
		fatal("SSL_CTX_new: %s", ssl_err_text());
	SSL_CTX_set_min_proto_version(cfg.ctx, cfg.tls_min);
	SSL_CTX_set_max_proto_version(cfg.ctx, cfg.tls_max);
	SSL_CTX_set_mode(cfg.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
	/* a close without close_notify ends an EOF-delimited body; the parser still catches
	 * a truncated length-delimited or chunked one */
	SSL_CTX_set_options(cfg.ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (SSL_CTX_load_verify_locations(cfg.ctx, cfg.ca, NULL) != 1)
		fatal("--ca %s: %s", cfg.ca, ssl_err_text());
	SSL_CTX_set_verify(cfg.ctx, SSL_VERIFY_PEER, NULL);
	vp = SSL_CTX_get0_param(cfg.ctx);
	if (cfg.host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, cfg.host) != 1
			   : X509_VERIFY_PARAM_set1_host(vp, cfg.host, 0) != 1)
		fatal("cannot set the expected server name %s", cfg.host);
	if (cfg.mode == MODE_RESUME) {
		SSL_CTX_set_session_cache_mode(cfg.ctx, SSL_SESS_CACHE_CLIENT |
								SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(cfg.ctx, new_session_cb);
	} else {
		/* no reuse: every connection is a full handshake */
		SSL_CTX_set_session_cache_mode(cfg.ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(cfg.ctx, SSL_OP_NO_TICKET);
	}
}

static void build_request(void)
{
	size_t cap = 4096 + strlen(cfg.path);
	bool close_conn =
		cfg.mode == MODE_HANDSHAKE || cfg.mode == MODE_RESUME || cfg.mode == MODE_STORM;
	char *r;
	int n;

	for (unsigned i = 0; i < cfg.nheaders; i++)
		cap += strlen(cfg.headers[i]) + 2;
	r = malloc(cap);
	if (r == NULL)
		fatal("out of memory");
	n = snprintf(r, cap, "%s %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: certmap-loadgen\r\n",
		     cfg.method, cfg.path, strchr(cfg.host, ':') ? "[" : "", cfg.host,
		     strchr(cfg.host, ':') ? "]" : "", cfg.port);
	for (unsigned i = 0; i < cfg.nheaders; i++)
		n += snprintf(r + n, cap - (size_t)n, "%s\r\n", cfg.headers[i]);
	if (cfg.mode == MODE_UPLOAD)
		n += snprintf(r + n, cap - (size_t)n, "Content-Length: %llu\r\n",
			      (unsigned long long)cfg.upload_bytes);
	if (close_conn)
		n += snprintf(r + n, cap - (size_t)n, "Connection: close\r\n");
	n += snprintf(r + n, cap - (size_t)n, "\r\n");
	cfg.req = r;
	cfg.req_len = (size_t)n;
	/* body: deterministic pseudo-random bytes (incompressible) */
	{
		uint64_t x = 0x9E3779B97F4A7C15ULL;

		for (size_t i = 0; i < LG_BODY_BUF_BYTES; i += 8) {
			uint64_t v;

			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			v = x * 0x2545F4914F6CDD1DULL;
			memcpy(cfg.body + i, &v, 8);
		}
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: certmap-loadgen --url https://HOST:PORT/PATH --ca F\n"
		"                       (--cert F --key F | --cert-dir D) [options]\n"
		"\n"
		"  --url URL            https only; HTTP/1.1\n"
		"  --ca F               CA bundle to verify the server (and its name/IP) with\n"
		"  --cert F --key F     client certificate (PEM, may carry its chain) and key\n"
		"  --cert-dir D         NAME.pem + NAME.key pairs (CA certs skipped), one per\n"
		"                       connection, round-robin in name order\n"
		"  --mode M             keepalive (default) | handshake | resume | idle | storm | upload\n"
		"  --threads T          worker threads, each with its own epoll loop (default: CPUs)\n"
		"  --connections C      concurrent connections (default 1 for upload, else 2*T;\n"
		"                       max %d)\n"
		"  --duration S         stop after S seconds (default 10; idle: hold time once all are\n"
		"                       up; with --requests and no --duration: 60)\n"
		"  --requests N         stop after N requests (keepalive/handshake/resume/upload;\n"
		"                       upload default: one per connection)\n"
		"  --timeout S          per-operation timeout (connect+handshake, request) (default 30)\n"
		"  --tls12 | --tls13    pin the protocol version (default: 1.2..1.3)\n"
		"  --method M           request method (default GET; POST for upload)\n"
		"  --upload-bytes N     upload mode: POST body of N bytes with Content-Length\n"
		"  --header 'N: v'      extra request header (repeatable, max %d)\n"
		"  --expect-status CODE count other statuses as errors\n"
		"\n"
		"Modes: keepalive = sequential requests on C kept-alive connections; handshake = one\n"
		"request per new TCP+TLS connection, no session reuse; resume = the same, offering the\n"
		"last session ticket of the slot (reports the resumption rate); idle = one request per\n"
		"connection, then hold all idle (prints 'idle: N connections established' once all are\n"
		"up or failed); storm = C connections at once with distinct --cert-dir identities, one\n"
		"request each; upload = POSTs of --upload-bytes, reports throughput.\n"
		"Output: one JSON line, then one summary line. SIGINT/SIGTERM: stop and report.\n"
		"Exit: 0 ok; 1 some requests failed or none completed; 2 usage/setup error.\n",
		LG_MAX_CONNECTIONS, LG_MAX_HEADERS);
}

static unsigned long long parse_num(const char *opt, const char *v, unsigned long long max)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || *v == '-' || n > max)
		fatal("%s %s: expected an integer 0..%llu", opt, v, max);
	return n;
}

static double parse_secs(const char *opt, const char *v)
{
	char *end;
	double d = strtod(v, &end);

	if (end == v || *end != '\0' || !(d > 0) || d > 86400)
		fatal("%s %s: expected seconds (0..86400]", opt, v);
	return d;
}

static void parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},
		{"cert", required_argument, NULL, 'c'},
		{"key", required_argument, NULL, 'k'},
		{"cert-dir", required_argument, NULL, 'D'},
		{"ca", required_argument, NULL, 'a'},
		{"threads", required_argument, NULL, 't'},
		{"connections", required_argument, NULL, 'C'},
		{"duration", required_argument, NULL, 'd'},
		{"requests", required_argument, NULL, 'n'},
		{"timeout", required_argument, NULL, 'T'},
		{"mode", required_argument, NULL, 'm'},
		{"tls13", no_argument, NULL, '3'},
		{"tls12", no_argument, NULL, '2'},
		{"method", required_argument, NULL, 'M'},
		{"upload-bytes", required_argument, NULL, 'U'},
		{"header", required_argument, NULL, 'H'},
		{"expect-status", required_argument, NULL, 'e'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *url = NULL;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	bool have_duration = false;
	int c;

	cfg.threads = cpus > 0 ? (unsigned)cpus : 1;
	cfg.requests = -1;
	cfg.timeout_s = 30;
	cfg.duration_s = 10;
	cfg.tls_min = TLS1_2_VERSION;
	cfg.tls_max = TLS1_3_VERSION;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			url = optarg;
			break;
		case 'c':
			cfg.cert = optarg;
			break;
		case 'k':
			cfg.key = optarg;
			break;
		case 'D':
			cfg.cert_dir = optarg;
			break;
		case 'a':
			cfg.ca = optarg;
			break;
		case 't':
			cfg.threads = (unsigned)parse_num("--threads", optarg, LG_MAX_THREADS);
			break;
		case 'C':
			cfg.connections =
				(unsigned)parse_num("--connections", optarg, LG_MAX_CONNECTIONS);
			break;
		case 'd':
			cfg.duration_s = parse_secs("--duration", optarg);
			have_duration = true;
			break;
		case 'n':
			cfg.requests = (long long)parse_num("--requests", optarg, 1ULL << 40);
			break;
		case 'T':
			cfg.timeout_s = parse_secs("--timeout", optarg);
			break;
		case 'm': {
			size_t i;

			for (i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
				if (strcmp(optarg, mode_names[i]) == 0)
					break;
			if (i == sizeof(mode_names) / sizeof(mode_names[0]))
				fatal("--mode %s: unknown", optarg);
			cfg.mode = (enum mode)i;
			break;
		}
		case '3':
			cfg.tls_min = cfg.tls_max = TLS1_3_VERSION;
			break;
		case '2':
			cfg.tls_min = cfg.tls_max = TLS1_2_VERSION;
			break;
		case 'M':
			cfg.method = optarg;
			break;
		case 'U':
			cfg.upload_bytes = parse_num("--upload-bytes", optarg, 1ULL << 40);
			break;
		case 'H':
			if (cfg.nheaders == LG_MAX_HEADERS)
				fatal("--header: at most %d", LG_MAX_HEADERS);
			if (strchr(optarg, ':') == NULL || strpbrk(optarg, "\r\n") != NULL)
				fatal("--header %s: expected 'Name: value'", optarg);
			cfg.headers[cfg.nheaders++] = optarg;
			break;
		case 'e':
			cfg.expect_status = (unsigned)parse_num("--expect-status", optarg, 599);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind != argc || url == NULL || cfg.ca == NULL ||
	    (cfg.cert_dir == NULL && (cfg.cert == NULL || cfg.key == NULL)) ||
	    (cfg.cert_dir != NULL && cfg.cert != NULL)) {
		usage(stderr);
		exit(2);
	}
	if (cfg.threads == 0)
		fatal("--threads must be at least 1");
	if (cfg.mode == MODE_UPLOAD && cfg.upload_bytes == 0)
		fatal("--mode upload needs --upload-bytes N");
	if (cfg.mode != MODE_UPLOAD && cfg.upload_bytes != 0)
		fatal("--upload-bytes is for --mode upload");
	if (cfg.connections == 0)
		cfg.connections = cfg.mode == MODE_UPLOAD ? 1 : 2 * cfg.threads;
	if (cfg.mode == MODE_UPLOAD && cfg.requests < 0)
		cfg.requests = cfg.connections;
	if (cfg.requests >= 0 && !have_duration && cfg.mode != MODE_IDLE)
		cfg.duration_s = 60;
	if (cfg.threads > cfg.connections)
		cfg.threads = cfg.connections;
	if (cfg.method == NULL)
		cfg.method = cfg.mode == MODE_UPLOAD ? "POST" : "GET";
	parse_url(url);
}

static void raise_nofile(unsigned need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)need + 64)
		fatal("--connections %u needs %u file descriptors; RLIMIT_NOFILE is %llu", need,
		      need + 64, (unsigned long long)rl.rlim_cur);
}

/* --- report ----------------------------------------------------------------------------------- */

static void json_str(const char *v)
{
	putchar('"');
	for (; *v != '\0'; v++) {
		unsigned char ch = (unsigned char)*v;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void report(struct worker *ws, double elapsed, bool by_deadline)
{
	struct stats *t = calloc(1, sizeof(*t));
	const char *ver = "", *cipher = "";
	uint64_t errs = 0, hs;
	double rps, hs_ps, res_ps, rate;

	if (t == NULL)
		fatal("out of memory");
	for (unsigned i = 0; i < cfg.threads; i++) {
		struct stats *s = &ws[i].st;

		hist_merge(&t->lat, &s->lat);
		hist_merge(&t->hs, &s->hs);
		for (unsigned k = 0; k < 600; k++)
			t->status[k] += s->status[k];
		for (unsigned k = 0; k < ERR_KINDS; k++)
			t->errors[k] += s->errors[k];
		t->requests += s->requests;
		t->hs_full += s->hs_full;
		t->hs_resumed += s->hs_resumed;
		t->hs_offered += s->hs_offered;
		t->bytes_sent += s->bytes_sent;
		t->bytes_recv += s->bytes_recv;
		t->body_sent += s->body_sent;
		t->closed_by_peer += s->closed_by_peer;
		if (ver[0] == '\0' && ws[i].tls_version[0] != '\0') {
			ver = ws[i].tls_version;
			cipher = ws[i].cipher;
		}
	}
	for (unsigned k = 0; k < ERR_KINDS; k++)
		errs += t->errors[k];
	if (elapsed <= 0)
		elapsed = 1e-9;
	hs = t->hs_full + t->hs_resumed;
	rps = (double)t->requests / elapsed;
	hs_ps = (double)hs / elapsed;
	res_ps = (double)t->hs_resumed / elapsed;
	rate = t->hs_offered ? (double)t->hs_resumed / (double)t->hs_offered : 0;

	printf("{\"tool\":\"certmap-loadgen\",\"mode\":\"%s\",\"host\":", mode_names[cfg.mode]);
	json_str(cfg.host);
	printf(",\"port\":%s,\"path\":", cfg.port);
	json_str(cfg.path);
	printf(",\"tls_version\":\"%s\",\"cipher\":\"%s\",\"threads\":%u,\"connections\":%u,"
	       "\"identities\":%zu,\"elapsed_s\":%.3f,\"stopped_by\":\"%s\",\"requests\":%llu,"
	       "\"req_per_s\":%.1f,\"errors\":%llu,\"error_kinds\":{",
	       ver, cipher, cfg.threads, cfg.connections, cfg.nids, elapsed,
	       by_deadline ? "deadline" : "completion", (unsigned long long)t->requests, rps,
	       (unsigned long long)errs);
	for (unsigned k = 0; k < ERR_KINDS; k++)
		printf("%s\"%s\":%llu", k ? "," : "", err_names[k],
		       (unsigned long long)t->errors[k]);
	printf("},\"status\":{");
	for (unsigned k = 0, first = 1; k < 600; k++)
		if (t->status[k]) {
			printf("%s\"%u\":%llu", first ? "" : ",", k,
			       (unsigned long long)t->status[k]);
			first = 0;
		}
	printf("},\"latency_ms\":{\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
	       "\"max\":%.3f},",
	       t->lat.n ? (double)t->lat.sum_us / (double)t->lat.n / 1e3 : 0, hist_pct(&t->lat, 50),
	       hist_pct(&t->lat, 90), hist_pct(&t->lat, 99), (double)t->lat.max_us / 1e3);
	printf("\"handshakes\":{\"full\":%llu,\"resumed\":%llu,\"offered\":%llu,\"per_s\":%.1f,"
	       "\"resumed_per_s\":%.1f,\"resumption_rate\":%.4f,\"ms\":{\"p50\":%.3f,"
	       "\"p99\":%.3f,\"max\":%.3f}},",
	       (unsigned long long)t->hs_full, (unsigned long long)t->hs_resumed,
	       (unsigned long long)t->hs_offered, hs_ps, res_ps, rate, hist_pct(&t->hs, 50),
	       hist_pct(&t->hs, 99), (double)t->hs.max_us / 1e3);
	printf("\"bytes\":{\"sent\":%llu,\"received\":%llu}", (unsigned long long)t->bytes_sent,
	       (unsigned long long)t->bytes_recv);
	if (cfg.mode == MODE_UPLOAD)
		printf(",\"upload\":{\"bytes_per_request\":%llu,\"body_bytes_sent\":%llu,"
		       "\"mib_per_s\":%.2f}",
		       (unsigned long long)cfg.upload_bytes, (unsigned long long)t->body_sent,
		       (double)t->body_sent / elapsed / 1048576.0);
	if (cfg.mode == MODE_IDLE)
		printf(",\"idle\":{\"established\":%u,\"failed\":%u,\"closed_by_peer\":%llu}",
		       atomic_load(&idle_est), atomic_load(&idle_failed),
		       (unsigned long long)t->closed_by_peer);
	if (cfg.mode == MODE_STORM)
		printf(",\"storm\":{\"answered\":%llu,\"all_answered_ms\":%.1f}",
		       (unsigned long long)t->requests, elapsed * 1e3);
	printf("}\n");

	printf("certmap-loadgen: %s %s: %llu requests in %.2f s = %.0f req/s, p50 %.2f ms, p99 %.2f "
	       "ms, max %.2f ms; handshakes %.0f/s (%llu full, %llu resumed of %llu offered), "
	       "%llu errors",
	       mode_names[cfg.mode], ver, (unsigned long long)t->requests, elapsed, rps,
	       hist_pct(&t->lat, 50), hist_pct(&t->lat, 99), (double)t->lat.max_us / 1e3, hs_ps,
	       (unsigned long long)t->hs_full, (unsigned long long)t->hs_resumed,
	       (unsigned long long)t->hs_offered, (unsigned long long)errs);
	if (cfg.mode == MODE_UPLOAD)
		printf("; upload %.1f MiB/s", (double)t->body_sent / elapsed / 1048576.0);
	printf("\n");
	fflush(stdout);
	free(t);
}

int main(int argc, char **argv)
{
	struct worker *ws;
	sigset_t sigs;
	bool announced = false, by_deadline = false;
	double deadline, t_end;
	unsigned slot = 0;
	int exit_code;

	parse_args(argc, argv);
	raise_nofile(cfg.connections);
	if (cfg.cert_dir != NULL) {
		load_cert_dir(cfg.cert_dir);
	} else {
		cfg.ids = calloc(1, sizeof(*cfg.ids));
		if (cfg.ids == NULL)
			fatal("out of memory");
		load_ident(cfg.cert, cfg.key, &cfg.ids[0], true);
		cfg.nids = 1;
	}
	if (cfg.mode == MODE_STORM && cfg.nids < cfg.connections)
		fprintf(stderr,
			"certmap-loadgen: warning: %zu identities for %u connections: some repeat\n",
			cfg.nids, cfg.connections);
	build_ctx();
	build_request();
	atomic_init(&tickets, cfg.requests);

	/* Workers block the signals; main waits for them with a timeout. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	ws = calloc(cfg.threads, sizeof(*ws));
	if (ws == NULL)
		fatal("out of memory");
	t_start = now_s();
	for (unsigned i = 0; i < cfg.threads; i++) {
		struct worker *w = &ws[i];
		int rc;

		w->nconns = cfg.connections / cfg.threads + (i < cfg.connections % cfg.threads);
		w->first_slot = slot;
		w->conns = calloc(w->nconns ? w->nconns : 1, sizeof(*w->conns));
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		if (w->conns == NULL || w->ep < 0)
			fatal("worker set-up: %s", strerror(errno));
		for (unsigned k = 0; k < w->nconns; k++) {
			w->conns[k].w = w;
			w->conns[k].slot = slot++;
			w->conns[k].fd = -1;
		}
		rc = pthread_create(&w->thread, NULL, worker_main, w);
		if (rc != 0)
			fatal("pthread_create: %s", strerror(rc));
	}

	deadline = t_start + cfg.duration_s;
	if (cfg.mode == MODE_IDLE)
		deadline = t_start + cfg.timeout_s + 5; /* to get them all up; then duration */
	for (;;) {
		struct timespec ts = {.tv_nsec = 10 * 1000 * 1000};
		double now;
		bool all_done = true;

		if (sigtimedwait(&sigs, NULL, &ts) > 0) {
			by_deadline = true;
			break;
		}
		now = now_s();
		if (cfg.mode == MODE_IDLE && !announced &&
		    atomic_load(&idle_est) + atomic_load(&idle_failed) >= cfg.connections) {
			printf("idle: %u connections established\n", atomic_load(&idle_est));
			fflush(stdout);
			announced = true;
			deadline = now + cfg.duration_s;
		}
		if (now >= deadline) {
			by_deadline = true;
			break;
		}
		if (cfg.mode != MODE_IDLE) {
			for (unsigned i = 0; i < cfg.threads; i++)
				if (atomic_load(&ws[i].done) < ws[i].nconns)
					all_done = false;
			if (all_done)
				break;
		}
	}
	t_end = now_s();
	atomic_store(&stop_flag, 1);
	for (unsigned i = 0; i < cfg.threads; i++)
		pthread_join(ws[i].thread, NULL);
	if (!by_deadline) {
		/* finished early: the rates cover the time until the last response, if any */
		double last = 0;

		for (unsigned i = 0; i < cfg.threads; i++)
			if (ws[i].st.last_done > last)
				last = ws[i].st.last_done;
		if (last > t_start)
			t_end = last;
	}
	report(ws, t_end - t_start, by_deadline);

	exit_code = 0;
	{
		uint64_t req = 0, errs = 0;

		for (unsigned i = 0; i < cfg.threads; i++) {
			req += ws[i].st.requests;
			for (unsigned k = 0; k < ERR_KINDS; k++)
				errs += ws[i].st.errors[k];
		}
		if (req == 0 || errs > 0)
			exit_code = 1;
	}
	for (unsigned i = 0; i < cfg.threads; i++) {
		close(ws[i].ep);
		free(ws[i].conns);
	}
	free(ws);
	for (size_t i = 0; i < cfg.nids; i++) {
		X509_free(cfg.ids[i].cert);
		EVP_PKEY_free(cfg.ids[i].key);
		sk_X509_pop_free(cfg.ids[i].chain, X509_free);
	}
	free(cfg.ids);
	free(cfg.req);
	SSL_CTX_free(cfg.ctx);
	return exit_code;
}
