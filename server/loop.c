/*
 * loop — one event loop thread (see certmapd.h for the model).
 * Owns: an epoll set; the accept path (shared listening sockets with
 * EPOLLEXCLUSIVE; an accepted socket waits for its first byte, bounded by
 * server.handshake_timeout_s: 0x16 starts TLS and the socket goes to MHD,
 * anything else is a plain-HTTP request on the TLS port and gets a 400);
 * one MHD daemon per listener (external epoll); one curl multi handle
 * driven by the socket API (https:// upstreams) and the lean client's
 * connections (http://, upstream.c). Everything here runs on the loop thread except
 * loop_stop() and loop_connections().
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "certmapd.h"

struct pending {
	struct evsrc src;
	int listener;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	double deadline;
	struct pending *prev, *next;
};

/* A socket curl asked us to watch. One per fd number, kept for the life of
 * the loop (l->csocks[fd]): curl drops a socket from its set (POLL_REMOVE)
 * after every transfer and asks for it again with the next request on the
 * same keep-alive connection, so the registration stays in the epoll set
 * while the connection is idle and an unchanged interest costs no
 * epoll_ctl. A readiness event for a socket curl does not want (an idle
 * connection the upstream closed) removes the registration. curl opens and
 * closes its sockets through our callbacks, so a reused fd number always
 * starts unregistered. */
struct csock {
	struct evsrc src;
	uint32_t events; /* registered interest */
	bool in_epoll;
	bool wanted; /* curl watches it now */
};

struct loop {
	struct server *srv;
	int index;
	pthread_t thread;
	bool started;
	int epfd;
	struct evsrc wake;
	int wakefd;
	atomic_bool stop;
	atomic_bool accepting;
	struct evsrc *listen_src; /* one per listener */
	struct MHD_Daemon **mhd;
	struct evsrc *mhd_src;
	struct front_ctx *ctx;
	CURLM *multi;
	double curl_deadline; /* monotonic ms; <0 = none */
	struct pending *pending;
	size_t n_pending;
	atomic_size_t conns;
	bool rerun_mhd; /* a connection was resumed on this thread: MHD_run again */
	struct conn *conns_list;
	struct req *reqs;
	CURL *easy_pool[CMD_POOL_MAX];
	unsigned long easy_gen[CMD_POOL_MAX];
	int n_easy;
	struct csock **csocks; /* by fd */
	int n_csocks;
	unsigned char *buf_pool[CMD_POOL_MAX];
	int n_buf;
	struct up_pool up; /* lean upstream connections (upstream.c) */
};

static curl_socket_t curl_open_socket(void *clientp, curlsocktype purpose,
				      struct curl_sockaddr *addr);
static int curl_close_socket(void *clientp, curl_socket_t s);

static void easy_socket_callbacks(struct loop *l, CURL *e)
{
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, curl_open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, l);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, curl_close_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, l);
}

void loop_easy_clean(struct loop *l, CURL *e)
{
	curl_easy_reset(e);
	easy_socket_callbacks(l, e);
}

CURL *loop_easy_get(struct loop *l, unsigned long *gen_id)
{
	CURL *e;

	if (l->n_easy > 0) {
		l->n_easy--;
		*gen_id = l->easy_gen[l->n_easy];
		return l->easy_pool[l->n_easy];
	}
	*gen_id = 0;
	e = curl_easy_init();
	if (e != NULL)
		easy_socket_callbacks(l, e);
	return e;
}

void loop_easy_put(struct loop *l, CURL *e, unsigned long gen_id)
{
	if (e == NULL)
		return;
	if (l->n_easy >= CMD_POOL_MAX) {
		curl_easy_cleanup(e);
		return;
	}
	if (gen_id == 0) /* aborted or failed: start from a clean handle */
		loop_easy_clean(l, e);
	l->easy_gen[l->n_easy] = gen_id;
	l->easy_pool[l->n_easy++] = e;
}

unsigned char *loop_buf_get(struct loop *l)
{
	if (l->n_buf > 0)
		return l->buf_pool[--l->n_buf];
	return malloc(CMD_BUF_BYTES);
}

void loop_buf_put(struct loop *l, unsigned char *b)
{
	if (b == NULL)
		return;
	if (l->n_buf < CMD_POOL_MAX)
		l->buf_pool[l->n_buf++] = b;
	else
		free(b);
}

/* The loop this thread runs, NULL on other threads. */
static _Thread_local struct loop *current_loop;

static double now_ms(void)
{
	return cm_now_ms();
}

struct up_pool *loop_up_pool(struct loop *l)
{
	return &l->up;
}

int loop_epfd(struct loop *l)
{
	return l->epfd;
}

CURLM *loop_multi(struct loop *l)
{
	return l->multi;
}

size_t loop_connections(struct loop *l)
{
	return atomic_load(&l->conns) + l->n_pending;
}

/* ---- curl multi glue ---- */

/* The entry for fd s, made on first use; NULL when out of memory. */
static struct csock *csock_of(struct loop *l, curl_socket_t s)
{
	struct csock *cs;

	if (s < 0)
		return NULL;
	if (s >= l->n_csocks) {
		int n = l->n_csocks ? l->n_csocks : 64;
		struct csock **t;

		while (n <= s)
			n *= 2;
		t = realloc(l->csocks, (size_t)n * sizeof(*t));
		if (t == NULL)
			return NULL;
		memset(t + l->n_csocks, 0, (size_t)(n - l->n_csocks) * sizeof(*t));
		l->csocks = t;
		l->n_csocks = n;
	}
	cs = l->csocks[s];
	if (cs == NULL) {
		cs = calloc(1, sizeof(*cs));
		if (cs == NULL)
			return NULL;
		cs->src.kind = EV_CURL;
		cs->src.fd = s;
		cs->src.ptr = cs;
		l->csocks[s] = cs;
	}
	return cs;
}

static void csock_unregister(struct loop *l, struct csock *cs)
{
	if (cs->in_epoll)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, cs->src.fd, NULL);
	cs->in_epoll = false;
	cs->wanted = false;
	cs->events = 0;
}

static curl_socket_t curl_open_socket(void *clientp, curlsocktype purpose,
				      struct curl_sockaddr *addr)
{
	struct loop *l = clientp;
	curl_socket_t s;

	(void)purpose;
	s = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
	if (s >= 0 && s < l->n_csocks && l->csocks[s] != NULL) {
		/* A new file: whatever this fd number was registered as is gone. */
		l->csocks[s]->in_epoll = false;
		l->csocks[s]->wanted = false;
		l->csocks[s]->events = 0;
	}
	return s;
}

static int curl_close_socket(void *clientp, curl_socket_t s)
{
	struct loop *l = clientp;

	if (s >= 0 && s < l->n_csocks && l->csocks[s] != NULL)
		csock_unregister(l, l->csocks[s]);
	return close(s);
}

static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct loop *l = userp;
	struct csock *cs = csock_of(l, s);
	struct epoll_event ev = {0};

	(void)easy;
	(void)socketp;
	if (cs == NULL)
		return what == CURL_POLL_REMOVE ? 0 : -1;
	if (what == CURL_POLL_REMOVE) {
		cs->wanted = false; /* stays registered: see struct csock */
		return 0;
	}
	cs->wanted = true;
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (cs->in_epoll && cs->events == ev.events)
		return 0;
	ev.data.ptr = &cs->src;
	if (cs->in_epoll) {
		if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
			epoll_ctl(l->epfd, EPOLL_CTL_ADD, s, &ev);
	} else if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST) {
		epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
	}
	cs->in_epoll = true;
	cs->events = ev.events;
	return 0;
}

static void on_curl_event(struct loop *l, struct csock *cs, uint32_t e);

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct loop *l = userp;

	(void)multi;
	l->curl_deadline = timeout_ms < 0 ? -1 : now_ms() + (double)timeout_ms;
	return 0;
}

static void curl_check_done(struct loop *l)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(l->multi, &left)) != NULL) {
		if (msg->msg == CURLMSG_DONE) {
			struct req *r = NULL;
			CURL *easy = msg->easy_handle;
			CURLcode result = msg->data.result;

			curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
			if (r != NULL)
				proxy_transfer_done(r, result);
		}
	}
}

static void curl_action(struct loop *l, curl_socket_t s, int mask)
{
	int running;

	curl_multi_socket_action(l->multi, s, mask, &running);
	curl_check_done(l);
}

static void on_curl_event(struct loop *l, struct csock *cs, uint32_t e)
{
	if (!cs->wanted) { /* an idle connection: the upstream closed it, or stale */
		if (cs->in_epoll)
			csock_unregister(l, cs);
		return;
	}
	curl_action(l, cs->src.fd,
		    (e & EPOLLIN ? CURL_CSELECT_IN : 0) | (e & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
			    (e & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0));
}

/* ---- hang-up watch on suspended client connections ---- */

static void hup_arm(struct loop *l, struct conn *c, bool level)
{
	struct epoll_event ev = {0};

	ev.events = EPOLLRDHUP | (level ? 0 : EPOLLET);
	ev.data.ptr = &c->hup;
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->hup.fd, &ev) == 0)
		c->hup_level = level;
}

void loop_watch_hangup(struct loop *l, struct req *r, bool on)
{
	struct conn *c = r->conn;
	struct epoll_event ev = {0};

	r->hup_watch = on;
	if (!on || c == NULL)
		return;
	if (c->hup.fd < 0) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(r->mhd, MHD_CONNECTION_INFO_CONNECTION_FD);

		if (ci == NULL)
			return;
		c->hup.kind = EV_HUP;
		c->hup.ptr = c;
		ev.events = EPOLLRDHUP | EPOLLET;
		ev.data.ptr = &c->hup;
		if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, ci->connect_fd, &ev) != 0)
			return;
		c->hup.fd = ci->connect_fd; /* an earlier hang-up is reported at once */
		c->hup_level = false;
	} else if (c->hup_seen && !c->hup_level) {
		hup_arm(l, c, true); /* reported by the next epoll_wait */
	}
}

void loop_forget_conn(struct loop *l, struct conn *c)
{
	if (c->hup.fd >= 0)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->hup.fd, NULL);
	c->hup.fd = -1;
	c->req = NULL;
}

static void on_hangup(struct loop *l, struct conn *c)
{
	struct req *r = c->req;

	c->hup_seen = true;
	if (r == NULL || !r->hup_watch) {
		if (c->hup_level)
			hup_arm(l, c, false); /* level-triggered would repeat it */
		return;
	}
	if (c->hup_level)
		hup_arm(l, c, false);
	loop_watch_hangup(l, r, false);
	r->client_gone = true;
	proxy_abort(r);
	front_resume(r, r->suspended);
}

/* ---- accept path ---- */

static void pending_remove(struct loop *l, struct pending *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		l->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	l->n_pending--;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, p->src.fd, NULL);
}

static void sockaddr_ip(const struct sockaddr_storage *ss, char *ip, size_t len, int *port);

/* A plain-HTTP request on the TLS port: answer 400 in clear text, as nginx
 * and IIS do, log it, close. */
static void refuse_plain_http(struct loop *l, struct pending *p)
{
	static const char body[] =
		"400 - Bad Request. The plain HTTP request was sent to the HTTPS port.\n";
	char resp[512];
	int n = snprintf(resp, sizeof(resp),
			 "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 sizeof(body) - 1, body);
	struct listener *li = &l->srv->listeners[p->listener];
	char cip[64];
	int cport = 0;
	struct cm_access_entry e = {0};

	char head[512], method[32] = "", target[400] = "", *q;
	ssize_t got = recv(p->src.fd, head, sizeof(head) - 1, MSG_PEEK | MSG_DONTWAIT);

	/* The request line, for the log (GoAccess drops a line whose method and
	 * stem are both "-"). */
	if (got > 0) {
		head[got] = '\0';
		if (sscanf(head, "%31[A-Za-z] %399[^ \r\n]", method, target) < 2)
			method[0] = target[0] = '\0';
	}
	q = strchr(target, '?');
	if (q != NULL)
		*q++ = '\0';
	if (n > 0)
		(void)!send(p->src.fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	sockaddr_ip(&p->addr, cip, sizeof(cip), &cport);
	clock_gettime(CLOCK_REALTIME, &e.when);
	e.s_ip = li->ip;
	e.s_port = li->port;
	e.method = method[0] ? method : NULL;
	e.uri_stem = target[0] ? target : "/";
	e.uri_query = q;
	e.c_ip = cip;
	e.status = 400;
	e.substatus = 0;
	if (l->srv->access != NULL)
		cm_accesslog_write(l->srv->access, &e);
	cm_metrics_request(l->srv->metrics, 400, 0);
}

static void on_pending(struct loop *l, struct pending *p)
{
	unsigned char b = 0;
	ssize_t n = recv(p->src.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	pending_remove(l, p);
	if (n == 1 && b == 0x16) {
		/* MHD owns the socket now, also when it refuses it. */
		if (MHD_add_connection(l->mhd[p->listener], p->src.fd, (struct sockaddr *)&p->addr,
				       p->addrlen) != MHD_YES)
			logmsg("warning", "loop %d: MHD refused a connection: %s", l->index,
			       strerror(errno));
		free(p);
		return;
	}
	if (n == 1)
		refuse_plain_http(l, p);
	close(p->src.fd);
	free(p);
}

static void on_listen(struct loop *l, int li)
{
	struct listener *lis = &l->srv->listeners[li];
	int timeout_s;
	struct gen *g;

	if (!atomic_load(&l->accepting))
		return;
	g = server_gen(l->srv);
	timeout_s = g->cfg->server.handshake_timeout_s;
	gen_unref(g);
	/* A small burst per wake-up: requests already decided must not queue
	 * behind hundreds of new handshakes (seen in the reconnect storm). */
	for (int i = 0; i < CMD_ACCEPT_BURST; i++) {
		struct pending *p;
		struct sockaddr_storage addr;
		socklen_t alen = sizeof(addr);
		struct epoll_event ev = {0};
		int one = 1;
		int fd = accept4(lis->fd, (struct sockaddr *)&addr, &alen,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				logmsg("error", "accept: %s", strerror(errno));
			return;
		}
		if (l->n_pending >= CMD_MAX_PENDING_ACCEPT || (p = calloc(1, sizeof(*p))) == NULL) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		p->src.kind = EV_PENDING;
		p->src.fd = fd;
		p->src.ptr = p;
		p->listener = li;
		p->addr = addr;
		p->addrlen = alen;
		p->deadline = now_ms() + timeout_s * 1000.0;
		ev.events = EPOLLIN | EPOLLRDHUP;
		ev.data.ptr = &p->src;
		if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			close(fd);
			free(p);
			continue;
		}
		p->next = l->pending;
		if (l->pending)
			l->pending->prev = p;
		l->pending = p;
		l->n_pending++;
	}
}

static void sweep_pending(struct loop *l, double now)
{
	struct pending *p = l->pending;

	while (p != NULL) {
		struct pending *next = p->next;

		if (p->deadline <= now) {
			pending_remove(l, p);
			close(p->src.fd);
			free(p);
		}
		p = next;
	}
}

static void sockaddr_ip(const struct sockaddr_storage *ss, char *ip, size_t len, int *port)
{
	ip[0] = '\0';
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)len);
		*port = ntohs(a->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)len);
		*port = ntohs(a->sin6_port);
	}
}

/* ---- connection and request lists (loop thread) ---- */

void loop_track_conn(struct loop *l, struct conn *c, bool add)
{
	if (add) {
		c->prev = NULL;
		c->next = l->conns_list;
		if (l->conns_list)
			l->conns_list->prev = c;
		l->conns_list = c;
		return;
	}
	if (c->prev)
		c->prev->next = c->next;
	else if (l->conns_list == c)
		l->conns_list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

void loop_track_req(struct loop *l, struct req *r, bool add)
{
	if (add) {
		r->prev = NULL;
		r->next = l->reqs;
		if (l->reqs)
			l->reqs->prev = r;
		l->reqs = r;
		return;
	}
	if (r->prev)
		r->prev->next = r->next;
	else if (l->reqs == r)
		l->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
}

/* Slow senders: the TLS handshake and each request head must be complete
 * by their deadline, however slowly the bytes trickle in (MHD's own timeout
 * restarts with every byte). Shutting the socket down makes MHD close it. */
static void sweep_heads(struct loop *l, double now)
{
	for (struct conn *c = l->conns_list; c != NULL; c = c->next) {
		if (c->head_deadline > 0 && c->head_deadline <= now) {
			const union MHD_ConnectionInfo *ci =
				MHD_get_connection_info(c->mhd, MHD_CONNECTION_INFO_CONNECTION_FD);

			c->head_deadline = 0;
			if (ci != NULL) {
				logmsg("info", "closing %s: request head not complete in time",
				       c->client_ip);
				shutdown(ci->connect_fd, SHUT_RDWR);
			}
		}
	}
}

/* Before MHD_stop_daemon: no connection may stay suspended. */
static void release_suspended(struct loop *l)
{
	for (struct req *r = l->reqs; r != NULL; r = r->next) {
		if (r->suspended == SUSP_NONE)
			continue;
		r->client_gone = true;
		loop_watch_hangup(l, r, false);
		proxy_abort(r);
		r->suspended = SUSP_NONE;
		MHD_resume_connection(r->mhd);
	}
	for (int round = 0; round < 8; round++)
		for (size_t i = 0; i < l->srv->n_listeners; i++)
			if (l->mhd[i] != NULL)
				MHD_run(l->mhd[i]);
}

/* ---- the loop ---- */

static void *loop_main(void *arg)
{
	struct loop *l = arg;
	struct epoll_event evs[128];
	double last_sweep = now_ms();

	current_loop = l;
	while (!atomic_load(&l->stop)) {
		int timeout = 1000, n;
		double now = now_ms();
		MHD_UNSIGNED_LONG_LONG mt;

		if (l->curl_deadline >= 0) {
			double d = l->curl_deadline - now;

			timeout = d <= 0 ? 0 : (d < timeout ? (int)d + 1 : timeout);
		}
		if (l->up.next_deadline > 0) {
			double d = l->up.next_deadline - now;

			timeout = d <= 0 ? 0 : (d < timeout ? (int)d + 1 : timeout);
		}
		for (size_t i = 0; i < l->srv->n_listeners; i++)
			if (MHD_get_timeout(l->mhd[i], &mt) == MHD_YES && (long long)mt < timeout)
				timeout = (int)mt;
		if (l->rerun_mhd) {
			l->rerun_mhd = false;
			timeout = 0;
		}
		n = epoll_wait(l->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
		for (int i = 0; i < n; i++) {
			struct evsrc *src = evs[i].data.ptr;
			uint32_t e = evs[i].events;

			switch (src->kind) {
			case EV_WAKE: {
				uint64_t v;

				(void)!read(l->wakefd, &v, sizeof(v));
				break;
			}
			case EV_LISTEN:
				on_listen(l, src->index);
				break;
			case EV_MHD:
				break; /* MHD_run below */
			case EV_PENDING:
				on_pending(l, src->ptr);
				break;
			case EV_CURL:
				on_curl_event(l, src->ptr, e);
				break;
			case EV_HUP:
				on_hangup(l, src->ptr);
				break;
			case EV_UPSTREAM:
				upstream_event(src->ptr, e);
				break;
			}
		}
		now = now_ms();
		if (l->curl_deadline >= 0 && l->curl_deadline <= now) {
			l->curl_deadline = -1;
			curl_action(l, CURL_SOCKET_TIMEOUT, 0);
		}
		if (l->up.next_deadline > 0 && l->up.next_deadline <= now)
			upstream_expire(l, now);
		for (size_t i = 0; i < l->srv->n_listeners; i++)
			MHD_run(l->mhd[i]);
		if (now - last_sweep >= 250) {
			sweep_pending(l, now);
			sweep_heads(l, now);
			upstream_sweep_idle(l, now);
			last_sweep = now;
		}
		upstream_reap(l);
	}
	return NULL;
}

struct loop *loop_new(struct server *srv, int index, char **error)
{
	struct loop *l = calloc(1, sizeof(*l));
	struct epoll_event ev = {0};

	*error = NULL;
	if (l == NULL)
		goto oom;
	l->srv = srv;
	l->index = index;
	l->curl_deadline = -1;
	l->wakefd = -1;
	atomic_init(&l->accepting, true);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->epfd < 0 || l->wakefd < 0) {
		*error = cm_strdup_printf("epoll/eventfd: %s", strerror(errno));
		goto fail;
	}
	l->wake.kind = EV_WAKE;
	l->wake.fd = l->wakefd;
	ev.events = EPOLLIN;
	ev.data.ptr = &l->wake;
	epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev);
	l->listen_src = calloc(srv->n_listeners, sizeof(*l->listen_src));
	l->mhd = calloc(srv->n_listeners, sizeof(*l->mhd));
	l->mhd_src = calloc(srv->n_listeners, sizeof(*l->mhd_src));
	l->ctx = calloc(srv->n_listeners, sizeof(*l->ctx));
	if (l->listen_src == NULL || l->mhd == NULL || l->mhd_src == NULL || l->ctx == NULL)
		goto oom;
	for (size_t i = 0; i < srv->n_listeners; i++) {
		const union MHD_DaemonInfo *di;

		l->ctx[i].srv = srv;
		l->ctx[i].loop = l;
		l->ctx[i].li = &srv->listeners[i];
		l->mhd[i] = front_daemon_new(&l->ctx[i], error);
		if (l->mhd[i] == NULL)
			goto fail;
		di = MHD_get_daemon_info(l->mhd[i], MHD_DAEMON_INFO_EPOLL_FD);
		if (di == NULL) {
			*error = strdup("libmicrohttpd: no epoll fd (built without epoll?)");
			goto fail;
		}
		l->mhd_src[i].kind = EV_MHD;
		l->mhd_src[i].fd = di->epoll_fd;
		ev.events = EPOLLIN;
		ev.data.ptr = &l->mhd_src[i];
		epoll_ctl(l->epfd, EPOLL_CTL_ADD, di->epoll_fd, &ev);
		l->listen_src[i].kind = EV_LISTEN;
		l->listen_src[i].fd = srv->listeners[i].fd;
		l->listen_src[i].index = (int)i;
		ev.events = EPOLLIN | EPOLLEXCLUSIVE;
		ev.data.ptr = &l->listen_src[i];
		if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, srv->listeners[i].fd, &ev) != 0) {
			*error = cm_strdup_printf("epoll_ctl(listen): %s", strerror(errno));
			goto fail;
		}
	}
	l->multi = curl_multi_init();
	if (l->multi == NULL)
		goto oom;
	curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
	curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
	curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
	curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
	/* Upstream keep-alive pool: held Pings pin connections, so no per-host cap. */
	curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, 1024L);
	return l;
oom:
	if (*error == NULL)
		*error = strdup("out of memory");
fail:
	loop_free(l);
	return NULL;
}

int loop_start(struct loop *l)
{
	if (pthread_create(&l->thread, NULL, loop_main, l) != 0)
		return -1;
	l->started = true;
	return 0;
}

/* Stops accepting (drain): new connections are no longer taken. */
void loop_stop_accepting(struct loop *l)
{
	atomic_store(&l->accepting, false);
}

void loop_wake(struct loop *l)
{
	uint64_t one = 1;

	/* On its own thread: MHD_run must run again before the loop sleeps
	 * (an MHD_run in progress does not see a resume made inside it). */
	if (current_loop == l) {
		l->rerun_mhd = true;
		return;
	}
	(void)!write(l->wakefd, &one, sizeof(one));
}

void loop_stop(struct loop *l)
{
	uint64_t one = 1;

	if (l == NULL || !l->started)
		return;
	atomic_store(&l->stop, true);
	(void)!write(l->wakefd, &one, sizeof(one));
	pthread_join(l->thread, NULL);
	l->started = false;
}

void loop_free(struct loop *l)
{
	if (l == NULL)
		return;
	loop_stop(l);
	while (l->pending != NULL) {
		struct pending *p = l->pending;

		pending_remove(l, p);
		close(p->src.fd);
		free(p);
	}
	current_loop = l; /* the loop thread is gone: this thread acts for it */
	if (l->mhd != NULL)
		release_suspended(l);
	/* MHD first: completing requests remove their curl handles. */
	for (size_t i = 0; l->mhd != NULL && i < l->srv->n_listeners; i++)
		if (l->mhd[i] != NULL)
			MHD_stop_daemon(l->mhd[i]);
	upstream_pool_free(l);
	while (l->n_easy > 0)
		curl_easy_cleanup(l->easy_pool[--l->n_easy]);
	while (l->n_buf > 0)
		free(l->buf_pool[--l->n_buf]);
	if (l->multi != NULL)
		curl_multi_cleanup(l->multi); /* closes through curl_close_socket */
	for (int i = 0; i < l->n_csocks; i++)
		free(l->csocks[i]);
	free(l->csocks);
	free(l->mhd);
	free(l->mhd_src);
	free(l->ctx);
	free(l->listen_src);
	if (l->wakefd >= 0)
		close(l->wakefd);
	if (l->epfd >= 0)
		close(l->epfd);
	free(l);
}

void loop_conn_delta(struct loop *l, int delta)
{
	if (delta > 0)
		atomic_fetch_add(&l->conns, (size_t)delta);
	else
		atomic_fetch_sub(&l->conns, (size_t)-delta);
}
