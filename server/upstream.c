/*
 * upstream — the lean HTTP/1.1 client for http:// upstreams (https:// stays
 * with curl, proxy.c). It runs on the request's loop thread: non-blocking
 * sockets registered once, edge-triggered, on the loop's epoll set; the
 * request head is written from the header lines build_headers() made for
 * curl (so stripping, identity and X-Forwarded-* are the same), bodies move
 * through the request's bounded buffers (r->up, r->down) with the same
 * backpressure as with curl:
 *   client → upstream: bytes are sent as they arrive (Content-Length as the
 *     client gave it, else chunked); taking bytes out of r->up resumes a
 *     client suspended on a full buffer.
 *   upstream → client: the response is read only while r->down has room;
 *     proxy_read_response() draining it calls upstream_drained().
 * Responses: Content-Length, chunked (decoded; MHD frames it again) or
 * read until close; HEAD, 1xx, 204 and 304 have no body. Head lines go
 * through proxy_header_line(), as curl's header callback does.
 * Errors end the exchange with the CURLcode curl would have given in the same
 * case (the mapping to 502.3 / 504 is in front.c), so the logs, metrics and
 * answers do not depend on the client used.
 * Connections: an exchange without a request body takes the most recently
 * used idle connection of the loop to the same address; when a reused one
 * fails before the first response byte, the request is sent once more on a
 * new connection. An exchange with a body always opens a new connection
 * (nothing of the body would have to be kept for a retry). A connection goes
 * back to the pool when the response was complete and framed, HTTP/1.1, not
 * "Connection: close", and the request was sent whole.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "certmapd.h"

#define CHUNK_LINE_MAX 1024 /* a chunk-size line, extensions included */

#define TARGET_MAX_ADDRS 8

struct up_target {
	struct sockaddr_storage addr[TARGET_MAX_ADDRS]; /* tried in order, as curl does */
	socklen_t addrlen[TARGET_MAX_ADDRS];
	int n_addr;
	char *host; /* Host header value */
	size_t host_len;
	char *prefix; /* path part of the URL without a trailing '/'; "" for none */
	size_t prefix_len;
};

enum rstate {
	RS_HEAD,        /* status line and header lines */
	RS_LENGTH,      /* body_left bytes */
	RS_CHUNK_SIZE,  /* a chunk-size line */
	RS_CHUNK_DATA,  /* body_left bytes of a chunk */
	RS_CHUNK_END,   /* the CRLF after a chunk's data */
	RS_TRAILER,     /* trailer lines up to an empty one */
	RS_UNTIL_CLOSE, /* everything until the upstream closes */
	RS_DONE,
};

enum framing { UP_NONE, UP_LENGTH, UP_CHUNKED };

struct upconn {
	struct evsrc src; /* EV_UPSTREAM; fd */
	struct loop *loop;
	struct req *r;              /* NULL: idle */
	struct upconn *prev, *next; /* the pool's active or idle list */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int addr_index;          /* in the target's addresses */
	double deadline;         /* active: connect or exchange deadline; idle: drop time */
	double total_deadline;   /* upstream.timeout_s from the start of the exchange */
	double connect_deadline; /* CMD_UP_CONNECT_MS for the connect phase (all addresses) */
	bool dead;               /* closed, waiting for upstream_reap() */
	bool connecting;
	bool reused;   /* taken from the pool for this exchange */
	bool got_byte; /* a response byte arrived for this exchange */
	bool send_failed;
	bool read_blocked; /* r->down was full */
	/* request */
	char *head;
	size_t head_len, head_off;
	enum framing framing;
	unsigned long long up_left; /* UP_LENGTH */
	char fb[32];                /* UP_CHUNKED: framing bytes to send */
	size_t fb_off, fb_len;
	size_t chunk_left; /* data bytes of the current chunk not yet sent */
	bool chunk_open;   /* a chunk's data is out; its CRLF is not */
	bool body_ended;   /* the last chunk is queued in fb */
	bool sent_all;
	/* response */
	unsigned char *in; /* loop buffer (CMD_BUF_BYTES) while active */
	size_t in_start, in_end;
	enum rstate rs;
	unsigned long long body_left;
	bool http11, conn_close, resp_chunked, resp_length_known;
	unsigned long long resp_length;
	size_t trailer_bytes;
};

static double now_ms(void)
{
	return cm_now_ms();
}

/* ---- targets (one per generation) ---- */

void upstream_target_free(struct up_target *t)
{
	if (t == NULL)
		return;
	free(t->host);
	free(t->prefix);
	free(t);
}

struct up_target *upstream_target_new(const char *url, char **why)
{
	struct up_target *t = NULL;
	struct addrinfo hints = {0}, *ai = NULL;
	const char *auth, *auth_end, *host, *host_end, *port_s = NULL;
	char hostbuf[256], portbuf[8];
	long port = 80;
	int rc;

	*why = NULL;
	if (strncasecmp(url, "http://", 7) != 0)
		return NULL; /* https: curl */
	auth = url + 7;
	auth_end = auth + strcspn(auth, "/?#");
	if (*auth_end == '?' || *auth_end == '#' || strchr(auth_end, '?') != NULL ||
	    strchr(auth_end, '#') != NULL || memchr(auth, '@', (size_t)(auth_end - auth)) != NULL) {
		*why = strdup("the URL has user info, a query or a fragment");
		return NULL;
	}
	if (*auth == '[') {
		host = auth + 1;
		host_end = memchr(host, ']', (size_t)(auth_end - host));
		if (host_end == NULL)
			goto bad;
		if (host_end + 1 < auth_end) {
			if (host_end[1] != ':')
				goto bad;
			port_s = host_end + 2;
		}
	} else {
		host = auth;
		host_end = memchr(auth, ':', (size_t)(auth_end - auth));
		if (host_end != NULL)
			port_s = host_end + 1;
		else
			host_end = auth_end;
	}
	if (host_end == host || (size_t)(host_end - host) >= sizeof(hostbuf))
		goto bad;
	if (port_s != NULL && port_s < auth_end) {
		port = 0;
		for (const char *p = port_s; p < auth_end; p++) {
			if (*p < '0' || *p > '9' || port > 65535)
				goto bad;
			port = port * 10 + (*p - '0');
		}
		if (port < 1 || port > 65535)
			goto bad;
	}
	memcpy(hostbuf, host, (size_t)(host_end - host));
	hostbuf[host_end - host] = '\0';
	snprintf(portbuf, sizeof(portbuf), "%ld", port);
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(hostbuf, portbuf, &hints, &ai);
	if (rc != 0 || ai == NULL) {
		*why = cm_strdup_printf("%s does not resolve: %s", hostbuf, gai_strerror(rc));
		if (ai != NULL)
			freeaddrinfo(ai);
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		goto oom;
	for (const struct addrinfo *a = ai; a != NULL && t->n_addr < TARGET_MAX_ADDRS;
	     a = a->ai_next) {
		if (a->ai_addrlen > sizeof(t->addr[0]))
			continue;
		memcpy(&t->addr[t->n_addr], a->ai_addr, a->ai_addrlen);
		t->addrlen[t->n_addr++] = a->ai_addrlen;
	}
	freeaddrinfo(ai);
	ai = NULL;
	/* Host as curl writes it: the URL's host, the port unless it is 80. */
	if (port == 80)
		t->host = cm_strdup_printf("%.*s", (int)(host_end - auth + (*auth == '[')), auth);
	else
		t->host = cm_strdup_printf("%.*s:%ld", (int)(host_end - auth + (*auth == '[')),
					   auth, port);
	t->prefix_len = strlen(auth_end);
	while (t->prefix_len > 0 && auth_end[t->prefix_len - 1] == '/')
		t->prefix_len--;
	t->prefix = strndup(auth_end, t->prefix_len);
	if (t->host == NULL || t->prefix == NULL)
		goto oom;
	t->host_len = strlen(t->host);
	return t;
bad:
	*why = strdup("cannot parse the host and port of the URL");
	return NULL;
oom:
	if (ai != NULL)
		freeaddrinfo(ai);
	upstream_target_free(t);
	*why = strdup("out of memory");
	return NULL;
}

/* ---- the pool's lists ---- */

static void list_remove(struct upconn **head, struct upconn **tail, struct upconn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		*head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else if (tail != NULL)
		*tail = c->prev;
	c->prev = c->next = NULL;
}

static void list_push(struct upconn **head, struct upconn **tail, struct upconn *c)
{
	c->prev = NULL;
	c->next = *head;
	if (*head != NULL)
		(*head)->prev = c;
	else if (tail != NULL)
		*tail = c;
	*head = c;
}

static void set_deadline(struct upconn *c, double d)
{
	struct up_pool *p = loop_up_pool(c->loop);

	c->deadline = d;
	if (p->next_deadline == 0 || d < p->next_deadline)
		p->next_deadline = d;
}

/* Closes a connection that is on no list. Freed by upstream_reap() at the
 * end of the loop's round: an event for it may still wait in the batch the
 * loop is working through. */
static void conn_free(struct upconn *c)
{
	struct up_pool *p = loop_up_pool(c->loop);

	if (c->src.fd >= 0)
		close(c->src.fd); /* also leaves the epoll set */
	c->src.fd = -1;
	loop_buf_put(c->loop, c->in);
	c->in = NULL;
	free(c->head);
	c->head = NULL;
	c->r = NULL;
	c->dead = true;
	c->next = p->dead;
	p->dead = c;
}

void upstream_reap(struct loop *l)
{
	struct up_pool *p = loop_up_pool(l);

	while (p->dead != NULL) {
		struct upconn *c = p->dead;

		p->dead = c->next;
		free(c);
	}
}

static struct upconn *conn_new(struct loop *l, const struct sockaddr_storage *addr,
			       socklen_t addrlen, CURLcode *fail)
{
	struct upconn *c = calloc(1, sizeof(*c));
	struct epoll_event ev = {0};
	int one = 1;

	*fail = CURLE_OUT_OF_MEMORY;
	if (c == NULL)
		return NULL;
	c->loop = l;
	c->src.kind = EV_UPSTREAM;
	c->src.ptr = c;
	memcpy(&c->addr, addr, addrlen);
	c->addrlen = addrlen;
	c->src.fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->src.fd < 0) {
		*fail = CURLE_COULDNT_CONNECT;
		free(c);
		return NULL;
	}
	setsockopt(c->src.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(c->src.fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	if (connect(c->src.fd, (const struct sockaddr *)addr, addrlen) != 0) {
		if (errno != EINPROGRESS) {
			*fail = CURLE_COULDNT_CONNECT;
			conn_free(c);
			return NULL;
		}
		c->connecting = true;
	}
	/* Once, edge-triggered, for the life of the socket. */
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	ev.data.ptr = &c->src;
	if (epoll_ctl(loop_epfd(l), EPOLL_CTL_ADD, c->src.fd, &ev) != 0) {
		*fail = CURLE_COULDNT_CONNECT;
		conn_free(c);
		return NULL;
	}
	return c;
}

/* ---- ending an exchange ---- */

static bool reusable(const struct upconn *c)
{
	return c->rs == RS_DONE && c->sent_all && !c->send_failed && c->http11 && !c->conn_close &&
	       c->in_start == c->in_end;
}

static void detach(struct upconn *c)
{
	struct up_pool *p = loop_up_pool(c->loop);

	list_remove(&p->active, NULL, c);
	if (c->r != NULL)
		c->r->upc = NULL;
	c->r = NULL;
}

/* Ends r's exchange on c: the connection goes back to the pool or is
 * closed, then proxy_transfer_done() (c is not touched after it). */
static void finish(struct upconn *c, CURLcode rc)
{
	struct req *r = c->r;
	struct up_pool *p = loop_up_pool(c->loop);

	detach(c);
	if (rc == CURLE_OK && reusable(c) && p->n_idle < CMD_UP_IDLE_MAX) {
		loop_buf_put(c->loop, c->in);
		c->in = NULL;
		free(c->head);
		c->head = NULL;
		c->deadline = now_ms() + CMD_UP_IDLE_MS;
		list_push(&p->idle, &p->idle_tail, c);
		p->n_idle++;
	} else {
		conn_free(c);
	}
	proxy_transfer_done(r, rc);
}

static void start_on(struct req *r, struct upconn *c, char *head, size_t head_len,
		     enum framing framing, unsigned long long len, double total_deadline);

/* A reused connection failed before the first response byte: the upstream
 * closed it while idle. A request without a body is sent once more on a new
 * connection. */
static bool retry(struct upconn *c)
{
	struct req *r = c->r;
	struct upconn *n;
	CURLcode fail;
	char *head = c->head;
	size_t head_len = c->head_len;
	double total = c->total_deadline;

	if (!c->reused || c->got_byte || r->has_body || r->client_gone)
		return false;
	n = conn_new(c->loop, &c->addr, c->addrlen, &fail);
	if (n == NULL)
		return false;
	n->addr_index = c->addr_index;
	c->connect_deadline = now_ms() + CMD_UP_CONNECT_MS;
	n->connect_deadline = c->connect_deadline;
	c->head = NULL;
	detach(c);
	conn_free(c);
	start_on(r, n, head, head_len, UP_NONE, 0, total);
	return true;
}

/* Connecting to one address failed: the exchange moves to a connection to
 * the next address of the target, if any (nothing was sent yet). */
static bool next_address(struct upconn *c)
{
	struct req *r = c->r;
	const struct up_target *t = r->gen->target;

	for (int i = c->addr_index + 1; i < t->n_addr; i++) {
		CURLcode rc;
		struct upconn *n = conn_new(c->loop, &t->addr[i], t->addrlen[i], &rc);
		char *head = c->head;

		if (n == NULL)
			continue;
		n->addr_index = i;
		n->connect_deadline = c->connect_deadline;
		c->head = NULL;
		detach(c);
		start_on(r, n, head, c->head_len, c->framing, c->up_left, c->total_deadline);
		conn_free(c);
		return true;
	}
	return false;
}

static void fail(struct upconn *c, CURLcode rc)
{
	if (rc != CURLE_OPERATION_TIMEDOUT && retry(c))
		return;
	finish(c, rc);
}

/* ---- sending ---- */

/* Sends what can be sent now. -1: the connection failed (c->send_failed). */
static int do_send(struct upconn *c)
{
	struct req *r = c->r;

	while (!c->sent_all) {
		struct iovec iov[2];
		int n = 0;
		size_t data = 0;
		ssize_t w;
		struct msghdr msg = {0};

		if (c->head_off < c->head_len) {
			iov[n].iov_base = c->head + c->head_off;
			iov[n++].iov_len = c->head_len - c->head_off;
		} else if (c->framing == UP_LENGTH) {
			data = buf_pending(&r->up);
			if (data > c->up_left)
				data = (size_t)c->up_left;
		} else if (c->framing == UP_CHUNKED) {
			if (c->fb_off == c->fb_len && c->chunk_left == 0) {
				size_t pending = buf_pending(&r->up);
				const char *crlf = c->chunk_open ? "\r\n" : "";

				c->fb_off = 0;
				c->fb_len = 0;
				if (pending > 0) {
					c->fb_len = (size_t)snprintf(c->fb, sizeof(c->fb),
								     "%s%zx\r\n", crlf, pending);
					c->chunk_left = pending;
					c->chunk_open = true;
				} else if (r->upload_done && !c->body_ended) {
					c->fb_len = (size_t)snprintf(c->fb, sizeof(c->fb),
								     "%s0\r\n\r\n", crlf);
					c->chunk_open = false;
					c->body_ended = true;
				}
			}
			if (c->fb_off < c->fb_len) {
				iov[n].iov_base = c->fb + c->fb_off;
				iov[n++].iov_len = c->fb_len - c->fb_off;
			}
			data = buf_pending(&r->up);
			if (data > c->chunk_left)
				data = c->chunk_left;
		}
		if (data > 0) {
			iov[n].iov_base = r->up.data + r->up.start;
			iov[n++].iov_len = data;
		}
		if (n == 0)
			break; /* waiting for body bytes */
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)n;
		w = sendmsg(c->src.fd, &msg, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			c->send_failed = true;
			return -1;
		}
		for (int i = 0; i < n && w > 0; i++) {
			size_t k = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;

			w -= (ssize_t)k;
			if (iov[i].iov_base == c->head + c->head_off) {
				c->head_off += k;
			} else if (iov[i].iov_base == c->fb + c->fb_off) {
				c->fb_off += k;
			} else {
				r->up.start += k;
				r->bytes_up += k;
				if (c->framing == UP_LENGTH)
					c->up_left -= k;
				else
					c->chunk_left -= k;
				if (r->suspended == SUSP_UPLOAD_FULL)
					front_resume(r, SUSP_UPLOAD_FULL);
			}
		}
		if (c->head_off == c->head_len) {
			if (c->framing == UP_NONE || (c->framing == UP_LENGTH && c->up_left == 0) ||
			    (c->framing == UP_CHUNKED && c->body_ended && c->fb_off == c->fb_len))
				c->sent_all = true;
		}
	}
	return 0;
}

/* ---- receiving ---- */

/* Copies body bytes to r->down; returns how many it took (0: full). */
static size_t deliver(struct upconn *c, const unsigned char *data, size_t len, bool *err)
{
	struct req *r = c->r;
	size_t room;

	if (r->client_gone ||
	    (r->down.data == NULL && (r->down.data = loop_buf_get(c->loop)) == NULL)) {
		*err = true;
		return 0;
	}
	room = buf_room(&r->down);
	if (len > room)
		len = room;
	if (len == 0) {
		c->read_blocked = true;
		return 0;
	}
	memcpy(r->down.data + r->down.end, data, len);
	r->down.end += len;
	if (r->suspended == SUSP_WAIT_BODY)
		front_resume(r, SUSP_WAIT_BODY);
	return len;
}

static bool name_is(const char *line, size_t len, const char *name, const char **value,
		    size_t *vlen)
{
	size_t n = strlen(name);
	const char *v, *end = line + len;

	if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
		return false;
	v = line + n + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		end--;
	*value = v;
	*vlen = (size_t)(end - v);
	return true;
}

static bool has_token(const char *v, size_t len, const char *token)
{
	size_t tl = strlen(token);

	for (size_t i = 0; i + tl <= len; i++)
		if (strncasecmp(v + i, token, tl) == 0 &&
		    (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
		    (i + tl == len || v[i + tl] == ',' || v[i + tl] == ' ' || v[i + tl] == ';'))
			return true;
	return false;
}

/* One head line (with its line end). 1: the head is complete; 0: go on;
 * -1: protocol error; -2: not an HTTP/1.x answer. */
static int head_line(struct upconn *c, const char *line, size_t len)
{
	struct req *r = c->r;
	const char *v;
	size_t vl, l = len;

	while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r'))
		l--;
	if (r->up_status == 0 && !(len >= 5 && memcmp(line, "HTTP/", 5) == 0))
		return -2; /* no status line: not HTTP/1.x */
	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
		if (l < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' || line[9] < '1' ||
		    line[9] > '9' || line[10] < '0' || line[10] > '9' || line[11] < '0' ||
		    line[11] > '9' || (l > 12 && line[12] != ' '))
			return -1;
		c->http11 = line[7] == '1';
		c->conn_close = c->resp_chunked = c->resp_length_known = false;
	} else if (l > 0) {
		if (name_is(line, l, "Transfer-Encoding", &v, &vl)) {
			c->resp_chunked = has_token(v, vl, "chunked");
		} else if (name_is(line, l, "Content-Length", &v, &vl)) {
			unsigned long long n = 0;

			if (vl == 0 || vl > 18)
				return -1;
			for (size_t i = 0; i < vl; i++) {
				if (v[i] < '0' || v[i] > '9')
					return -1;
				n = n * 10 + (unsigned long long)(v[i] - '0');
			}
			if (c->resp_length_known && n != c->resp_length)
				return -1;
			c->resp_length = n;
			c->resp_length_known = true;
		} else if (name_is(line, l, "Connection", &v, &vl)) {
			if (has_token(v, vl, "close"))
				c->conn_close = true;
		}
	}
	if (!proxy_header_line(r, line, len))
		return -1; /* too large */
	if (l > 0 || r->up_status < 200)
		return 0; /* a header line, or the end of a 1xx answer */
	/* end of the final head: how the body is framed */
	if (strcmp(r->method, "HEAD") == 0 || r->up_status == 204 || r->up_status == 304) {
		c->rs = RS_DONE;
	} else if (c->resp_chunked) {
		c->rs = RS_CHUNK_SIZE;
	} else if (c->resp_length_known) {
		c->body_left = c->resp_length;
		c->rs = c->body_left > 0 ? RS_LENGTH : RS_DONE;
	} else {
		c->rs = RS_UNTIL_CLOSE;
		c->conn_close = true;
	}
	return 1;
}

/* The next line in c->in (with its '\n'); NULL when incomplete. */
static const char *next_line(struct upconn *c, size_t *len)
{
	const unsigned char *s = c->in + c->in_start;
	const unsigned char *nl = memchr(s, '\n', c->in_end - c->in_start);

	if (nl == NULL)
		return NULL;
	*len = (size_t)(nl - s) + 1;
	c->in_start += *len;
	return (const char *)s;
}

/* Parses what c->in holds. -1: protocol error; 0: needs more bytes (or
 * r->down is full: c->read_blocked); 1: the response is complete. */
static int parse(struct upconn *c, CURLcode *rc)
{
	for (;;) {
		size_t avail = c->in_end - c->in_start, len, k;
		const char *line;
		bool err = false;

		*rc = CURLE_WEIRD_SERVER_REPLY;
		switch (c->rs) {
		case RS_HEAD: {
			int hl;

			line = next_line(c, &len);
			if (line == NULL) {
				if (avail + c->r->resp_head_bytes > CMD_MAX_UPSTREAM_HEAD_BYTES) {
					*rc = CURLE_WRITE_ERROR; /* as on_header refusing it */
					return -1;
				}
				return 0;
			}
			hl = head_line(c, line, len);
			if (hl < 0) {
				/* the codes curl gives: HTTP/0.9 is refused, a head too
				 * large is refused by the header callback */
				if (hl == -2)
					*rc = CURLE_UNSUPPORTED_PROTOCOL;
				else if (c->r->resp_head_bytes > CMD_MAX_UPSTREAM_HEAD_BYTES)
					*rc = CURLE_WRITE_ERROR;
				return -1;
			}
			break;
		}
		case RS_LENGTH:
		case RS_CHUNK_DATA:
		case RS_UNTIL_CLOSE:
			if (avail == 0)
				return 0;
			if (c->rs != RS_UNTIL_CLOSE && avail > c->body_left)
				avail = (size_t)c->body_left;
			k = deliver(c, c->in + c->in_start, avail, &err);
			if (err) {
				*rc = CURLE_WRITE_ERROR;
				return -1;
			}
			if (k == 0)
				return 0; /* read_blocked */
			c->in_start += k;
			if (c->rs != RS_UNTIL_CLOSE) {
				c->body_left -= k;
				if (c->body_left == 0)
					c->rs = c->rs == RS_LENGTH ? RS_DONE : RS_CHUNK_END;
			}
			break;
		case RS_CHUNK_SIZE: {
			unsigned long long n = 0;
			size_t i = 0;

			*rc = CURLE_RECV_ERROR; /* curl's code for bad chunked framing */
			line = next_line(c, &len);
			if (line == NULL)
				return avail > CHUNK_LINE_MAX ? -1 : 0;
			if (len > CHUNK_LINE_MAX)
				return -1;
			for (; i < len; i++) {
				char ch = line[i];
				int d = ch >= '0' && ch <= '9'   ? ch - '0'
					: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
					: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
								 : -1;

				if (d < 0)
					break;
				if (n >> 56)
					return -1;
				n = n * 16 + (unsigned)d;
			}
			if (i == 0 || (line[i] != ';' && line[i] != ' ' && line[i] != '\t' &&
				       line[i] != '\r' && line[i] != '\n'))
				return -1;
			c->body_left = n;
			c->rs = n > 0 ? RS_CHUNK_DATA : RS_TRAILER;
			break;
		}
		case RS_CHUNK_END:
			*rc = CURLE_RECV_ERROR;
			line = next_line(c, &len);
			if (line == NULL)
				return avail > 2 ? -1 : 0;
			if (!(len == 1 || (len == 2 && line[0] == '\r')))
				return -1;
			c->rs = RS_CHUNK_SIZE;
			break;
		case RS_TRAILER:
			*rc = CURLE_RECV_ERROR;
			line = next_line(c, &len);
			if (line == NULL)
				return avail + c->trailer_bytes > CMD_MAX_UPSTREAM_HEAD_BYTES ? -1
											      : 0;
			c->trailer_bytes += len;
			if (c->trailer_bytes > CMD_MAX_UPSTREAM_HEAD_BYTES)
				return -1;
			if (len == 1 || (len == 2 && line[0] == '\r'))
				c->rs = RS_DONE;
			break;
		case RS_DONE:
			*rc = CURLE_OK;
			return 1;
		}
	}
}

/* Reads and parses until the socket is empty, r->down is full or the
 * exchange ended. Returns false when it ended (c is gone). */
static bool do_recv(struct upconn *c)
{
	struct req *r = c->r;
	CURLcode rc;

	c->read_blocked = false;
	for (;;) {
		int p = parse(c, &rc);
		ssize_t n;

		if (p < 0) {
			finish(c, rc);
			return false;
		}
		if (p > 0) {
			finish(c, CURLE_OK);
			return false;
		}
		if (c->read_blocked)
			return true;
		if (c->in_start == c->in_end) {
			c->in_start = c->in_end = 0;
		} else if (c->in_start > 0 && CMD_BUF_BYTES - c->in_end < CMD_BUF_BYTES / 4) {
			memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
			c->in_end -= c->in_start;
			c->in_start = 0;
		}
		if (c->in_end == CMD_BUF_BYTES) { /* cannot happen: lines are bounded */
			finish(c, CURLE_WEIRD_SERVER_REPLY);
			return false;
		}
		/* A body framed by length or by the close goes straight to r->down. */
		if (c->in_start == c->in_end && (c->rs == RS_LENGTH || c->rs == RS_UNTIL_CLOSE) &&
		    r->down.data != NULL && !r->client_gone) {
			size_t room = buf_room(&r->down);

			if (c->rs == RS_LENGTH && room > c->body_left)
				room = (size_t)c->body_left;
			if (room == 0) {
				c->read_blocked = true;
				return true;
			}
			n = recv(c->src.fd, r->down.data + r->down.end, room, 0);
			if (n > 0) {
				c->got_byte = true;
				r->down.end += (size_t)n;
				if (c->rs == RS_LENGTH && (c->body_left -= (size_t)n) == 0)
					c->rs = RS_DONE;
				if (r->suspended == SUSP_WAIT_BODY)
					front_resume(r, SUSP_WAIT_BODY);
				continue;
			}
		} else {
			n = recv(c->src.fd, c->in + c->in_end, CMD_BUF_BYTES - c->in_end, 0);
			if (n > 0) {
				c->got_byte = true;
				c->in_end += (size_t)n;
				continue;
			}
		}
		if (n == 0) { /* the upstream closed */
			if (c->rs == RS_UNTIL_CLOSE) {
				c->rs = RS_DONE;
				finish(c, CURLE_OK);
			} else if (c->send_failed) {
				fail(c, CURLE_SEND_ERROR);
			} else {
				fail(c, c->got_byte ? CURLE_PARTIAL_FILE : CURLE_GOT_NOTHING);
			}
			return false;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (c->send_failed) { /* nothing more will come */
				fail(c, CURLE_SEND_ERROR);
				return false;
			}
			return true;
		}
		fail(c, c->send_failed ? CURLE_SEND_ERROR : CURLE_RECV_ERROR);
		return false;
	}
}

/* Moves the exchange on: connect, send, receive. events: the epoll events
 * that woke it, 0 when called for new body bytes or buffer room. */
static void pump(struct upconn *c, uint32_t events)
{
	if (c->connecting) {
		int err = 0;
		socklen_t el = sizeof(err);

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		if (getsockopt(c->src.fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
			err = errno;
		if (err != 0) {
			if (err == EINPROGRESS || err == EALREADY)
				return;
			if (!next_address(c))
				fail(c, CURLE_COULDNT_CONNECT);
			return;
		}
		c->connecting = false;
		set_deadline(c, c->total_deadline);
	}
	if (!c->sent_all && !c->send_failed)
		do_send(c); /* a failure still reads: an answer may be there */
	do_recv(c);
}

static void start_on(struct req *r, struct upconn *c, char *head, size_t head_len,
		     enum framing framing, unsigned long long len, double total_deadline)
{
	struct up_pool *p = loop_up_pool(r->loop);

	c->r = r;
	r->upc = c;
	list_push(&p->active, NULL, c);
	c->got_byte = c->send_failed = c->sent_all = c->read_blocked = false;
	c->fb_off = c->fb_len = c->chunk_left = 0;
	c->chunk_open = c->body_ended = false;
	c->rs = RS_HEAD;
	c->trailer_bytes = 0;
	c->head_off = 0;
	c->head = head;
	c->head_len = head_len;
	c->framing = framing;
	c->up_left = len;
	c->total_deadline = total_deadline;
	if (c->in == NULL)
		c->in = loop_buf_get(c->loop);
	set_deadline(c, c->connecting && c->connect_deadline < total_deadline ? c->connect_deadline
									      : total_deadline);
	if (c->in == NULL) {
		finish(c, CURLE_OUT_OF_MEMORY);
		return;
	}
	if (!c->connecting)
		pump(c, 0);
}

/* ---- the request head ---- */

/* "METHOD /prefix/path?query HTTP/1.1", Host, the lines build_headers() made
 * (a line with an empty value is left out, as curl does), Accept as curl
 * adds it, the body framing, the empty line. */
static char *make_head(struct req *r, const struct up_target *t, long long body_len,
		       size_t *out_len)
{
	size_t ml = strlen(r->method), pl = strlen(r->path), ql = r->query ? strlen(r->query) : 0;
	size_t total =
		ml + 1 + t->prefix_len + pl + 1 + ql + 11 + 6 + t->host_len + 2 + 13 + 40 + 2 + 1;
	bool accept = false;
	char *head, *w;

	for (const struct curl_slist *s = r->up_headers; s != NULL; s = s->next)
		total += strlen(s->data) + 2;
	head = malloc(total);
	if (head == NULL)
		return NULL;
	w = head;
	memcpy(w, r->method, ml);
	w += ml;
	*w++ = ' ';
	memcpy(w, t->prefix, t->prefix_len);
	w += t->prefix_len;
	memcpy(w, r->path, pl);
	w += pl;
	if (r->query != NULL) {
		*w++ = '?';
		memcpy(w, r->query, ql);
		w += ql;
	}
	memcpy(w, " HTTP/1.1\r\nHost: ", 17);
	w += 17;
	memcpy(w, t->host, t->host_len);
	w += t->host_len;
	*w++ = '\r';
	*w++ = '\n';
	for (const struct curl_slist *s = r->up_headers; s != NULL; s = s->next) {
		const char *colon = strchr(s->data, ':'), *v;
		size_t n;

		if (colon == NULL)
			continue;
		for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
			;
		if (*v == '\0')
			continue; /* "Name:" with no value: curl sends nothing */
		if (colon - s->data == 6 && strncasecmp(s->data, "Accept", 6) == 0)
			accept = true;
		n = strlen(s->data);
		memcpy(w, s->data, n);
		w += n;
		*w++ = '\r';
		*w++ = '\n';
	}
	if (!accept) {
		memcpy(w, "Accept: */*\r\n", 13);
		w += 13;
	}
	if (body_len >= 0)
		w += sprintf(w, "Content-Length: %lld\r\n", body_len);
	else if (body_len == -2)
		w += sprintf(w, "Transfer-Encoding: chunked\r\n");
	*w++ = '\r';
	*w++ = '\n';
	*out_len = (size_t)(w - head);
	return head;
}

/* ---- entry points (proxy.c) ---- */

int upstream_start(struct req *r, long long body_len)
{
	const struct up_target *t = r->gen->target;
	struct up_pool *p = loop_up_pool(r->loop);
	struct upconn *c = NULL;
	CURLcode fail_rc = CURLE_COULDNT_CONNECT;
	size_t head_len = 0;
	char *head = make_head(r, t, body_len, &head_len);
	double total = now_ms() + (double)r->gen->cfg->upstream.timeout_s * 1000.0;

	free(r->up_headers); /* one block (build_headers): in the head now */
	r->up_headers = NULL;
	if (head == NULL)
		return -1;
	if (body_len == -1) {
		for (c = p->idle; c != NULL; c = c->next)
			if (c->addr_index < t->n_addr && c->addrlen == t->addrlen[c->addr_index] &&
			    memcmp(&c->addr, &t->addr[c->addr_index], c->addrlen) == 0)
				break;
		if (c != NULL) {
			list_remove(&p->idle, &p->idle_tail, c);
			p->n_idle--;
			c->reused = true;
		}
	}
	for (int i = 0; c == NULL && i < t->n_addr; i++) {
		c = conn_new(r->loop, &t->addr[i], t->addrlen[i], &fail_rc);
		if (c != NULL) {
			c->addr_index = i;
			c->connect_deadline = now_ms() + CMD_UP_CONNECT_MS;
		}
	}
	if (c == NULL) {
		/* as curl: the exchange fails (502.3 and the upstream-error metric) */
		free(head);
		r->upstream_done = true;
		r->upstream_result = fail_rc;
		logmsg("info", "request %s: upstream: %s", r->id, curl_easy_strerror(fail_rc));
		return 0;
	}
	start_on(r, c, head, head_len,
		 body_len == -1   ? UP_NONE
		 : body_len == -2 ? UP_CHUNKED
				  : UP_LENGTH,
		 body_len >= 0 ? (unsigned long long)body_len : 0, total);
	return 0;
}

void upstream_kick(struct req *r)
{
	struct upconn *c = r->upc;

	if (c == NULL || c->connecting)
		return;
	if (!c->sent_all && !c->send_failed && do_send(c) != 0)
		do_recv(c); /* reports the failure, unless an answer is complete */
}

void upstream_drained(struct req *r)
{
	struct upconn *c = r->upc;

	if (c != NULL && c->read_blocked)
		do_recv(c);
}

void upstream_abort(struct req *r)
{
	struct upconn *c = r->upc;

	if (c == NULL)
		return;
	detach(c);
	conn_free(c);
}

void upstream_event(struct upconn *c, uint32_t events)
{
	if (c->dead)
		return;
	if (c->r == NULL) { /* idle: the upstream closed it (or sent garbage) */
		struct up_pool *p = loop_up_pool(c->loop);

		if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
			return; /* a late "writable" edge */
		list_remove(&p->idle, &p->idle_tail, c);
		p->n_idle--;
		conn_free(c);
		return;
	}
	pump(c, events);
}

void upstream_expire(struct loop *l, double now)
{
	struct up_pool *p = loop_up_pool(l);
	struct upconn *c = p->active, *next;
	double earliest = 0;

	for (; c != NULL; c = next) {
		next = c->next;
		if (c->deadline <= now)
			finish(c, CURLE_OPERATION_TIMEDOUT); /* connect or exchange: as curl */
	}
	for (c = p->active; c != NULL; c = c->next)
		if (earliest == 0 || c->deadline < earliest)
			earliest = c->deadline;
	p->next_deadline = earliest;
}

void upstream_sweep_idle(struct loop *l, double now)
{
	struct up_pool *p = loop_up_pool(l);

	while (p->idle_tail != NULL && p->idle_tail->deadline <= now) {
		struct upconn *c = p->idle_tail;

		list_remove(&p->idle, &p->idle_tail, c);
		p->n_idle--;
		conn_free(c);
	}
}

void upstream_pool_free(struct loop *l)
{
	struct up_pool *p = loop_up_pool(l);

	while (p->active != NULL) {
		struct upconn *c = p->active;

		if (c->r != NULL) {
			c->r->upstream_done = true;
			c->r->upstream_result = CURLE_ABORTED_BY_CALLBACK;
		}
		detach(c);
		conn_free(c);
	}
	while (p->idle != NULL) {
		struct upconn *c = p->idle;

		list_remove(&p->idle, &p->idle_tail, c);
		conn_free(c);
	}
	p->n_idle = 0;
	upstream_reap(l);
}
