/*
 * test_fetch — cm_fetch_get/cm_fetch_post against a tiny HTTP server run by
 * the test itself (a thread on 127.0.0.1:0 serving one canned answer per
 * test), plus refused schemes and a closed port.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "certmap/fetch.h"

#define REQ_MAX 65536

enum answer {
	ANSWER_BODY,       /* 200 + body, Content-Length */
	ANSWER_BODY_CLOSE, /* 200 + body, no Content-Length: ends at close */
	ANSWER_404,
	ANSWER_REDIRECT, /* 302 to another URL on the same server */
	ANSWER_SILENT,   /* accept, read, never answer */
};

struct server {
	int lfd;
	int port;
	int stop[2]; /* a byte on stop[1] ends the thread */
	pthread_t thread;
	enum answer answer;
	const char *body;
	size_t body_len;
	char req[REQ_MAX + 1]; /* the last request received: head + body */
	size_t req_len;
	size_t head_len; /* bytes of the head, "\r\n\r\n" included */
	int requests;
};

static size_t content_length(const char *head)
{
	const char *p = head;

	while ((p = strchr(p, '\n')) != NULL) {
		p++;
		if (strncasecmp(p, "Content-Length:", 15) == 0)
			return strtoul(p + 15, NULL, 10);
	}
	return 0;
}

/* Reads one request (head and Content-Length body) into s->req. */
static void read_request(struct server *s, int fd)
{
	size_t need = 0;
	char *end;

	s->req_len = 0;
	s->head_len = 0;
	for (;;) {
		ssize_t r;

		if (s->head_len != 0 && s->req_len >= s->head_len + need)
			return;
		r = read(fd, s->req + s->req_len, REQ_MAX - s->req_len);
		if (r <= 0)
			return;
		s->req_len += (size_t)r;
		s->req[s->req_len] = '\0';
		if (s->head_len == 0 && (end = strstr(s->req, "\r\n\r\n")) != NULL) {
			s->head_len = (size_t)(end - s->req) + 4;
			need = content_length(s->req);
		}
	}
}

static void write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t w = write(fd, p, len);

		if (w <= 0)
			return; /* the client gave up (size limit): fine */
		p += w;
		len -= (size_t)w;
	}
}

static void answer(struct server *s, int fd)
{
	char head[512];

	switch (s->answer) {
	case ANSWER_BODY:
		snprintf(head, sizeof(head),
			 "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 s->body_len);
		write_all(fd, head, strlen(head));
		write_all(fd, s->body, s->body_len);
		break;
	case ANSWER_BODY_CLOSE:
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
		write_all(fd, head, strlen(head));
		write_all(fd, s->body, s->body_len);
		break;
	case ANSWER_404:
		snprintf(head, sizeof(head),
			 "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
			 "not found");
		write_all(fd, head, strlen(head));
		break;
	case ANSWER_REDIRECT:
		snprintf(head, sizeof(head),
			 "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/elsewhere\r\n"
			 "Content-Length: 0\r\nConnection: close\r\n\r\n",
			 s->port);
		write_all(fd, head, strlen(head));
		break;
	case ANSWER_SILENT: {
		struct pollfd p = {.fd = s->stop[0], .events = POLLIN};

		poll(&p, 1, 30000); /* hold the connection until the test ends */
		break;
	}
	}
}

static void *serve(void *arg)
{
	struct server *s = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN},
				      {.fd = s->stop[0], .events = POLLIN}};
		int fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents != 0)
			break;
		if ((p[0].revents & POLLIN) == 0)
			continue;
		fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		read_request(s, fd);
		s->requests++;
		answer(s, fd);
		shutdown(fd, SHUT_WR);
		close(fd);
	}
	return NULL;
}

static int listen_any(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind: %s", strerror(errno));
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static void server_start(struct server *s, enum answer ans, const char *body, size_t body_len)
{
	memset(s, 0, sizeof(*s));
	s->answer = ans;
	s->body = body;
	s->body_len = body_len;
	s->lfd = listen_any(&s->port);
	cr_assert_eq(listen(s->lfd, 8), 0);
	cr_assert_eq(pipe(s->stop), 0);
	cr_assert_eq(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(struct server *s)
{
	cr_assert_eq(write(s->stop[1], "x", 1), 1);
	pthread_join(s->thread, NULL);
	close(s->lfd);
	close(s->stop[0]);
	close(s->stop[1]);
}

static char *url_of(const struct server *s, const char *path)
{
	static char buf[128];

	snprintf(buf, sizeof(buf), "http://127.0.0.1:%d%s", s->port, path);
	return buf;
}

static bool has_control_byte(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return true;
	return false;
}

static void init(void)
{
	cm_fetch_global_init();
}

TestSuite(fetch, .init = init);

Test(fetch, get_200_returns_the_body)
{
	static const char crl[] = "0\x82\x01\x00 pretend DER \0 with a NUL";
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	server_start(&s, ANSWER_BODY, crl, sizeof(crl));
	cr_assert_eq(cm_fetch_get(url_of(&s, "/issuing.crl"), 3000, 1024, &body, &len, &err), 0,
		     "%s", err.msg);
	cr_assert_eq(len, sizeof(crl));
	cr_assert_eq(memcmp(body, crl, len), 0);
	free(body);
	server_stop(&s);
	cr_assert_eq(s.requests, 1);
	cr_assert(strncmp(s.req, "GET /issuing.crl HTTP/1.1\r\n", 27) == 0, "%s", s.req);
	cr_assert(strstr(s.req, "\r\nUser-Agent: certmap\r\n") != NULL, "%s", s.req);
}

Test(fetch, body_of_exactly_max_bytes_is_fine)
{
	char big[4096];
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	memset(big, 'a', sizeof(big));
	server_start(&s, ANSWER_BODY_CLOSE, big, sizeof(big));
	cr_assert_eq(cm_fetch_get(url_of(&s, "/x"), 3000, sizeof(big), &body, &len, &err), 0, "%s",
		     err.msg);
	cr_assert_eq(len, sizeof(big));
	free(body);
	server_stop(&s);
}

Test(fetch, empty_200_body_is_an_empty_buffer)
{
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 1;

	server_start(&s, ANSWER_BODY, "", 0);
	cr_assert_eq(cm_fetch_get(url_of(&s, "/x"), 3000, 10, &body, &len, &err), 0, "%s", err.msg);
	cr_assert_not_null(body);
	cr_assert_eq(len, 0);
	free(body);
	server_stop(&s);
}

Test(fetch, http_404_is_an_error_naming_the_url)
{
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = (unsigned char *)"unchanged";
	size_t len = 7;
	char want[160];

	server_start(&s, ANSWER_404, NULL, 0);
	cr_assert_eq(cm_fetch_get(url_of(&s, "/x.crl"), 3000, 1024, &body, &len, &err), -1);
	snprintf(want, sizeof(want), "http://127.0.0.1:%d/x.crl: HTTP 404", s.port);
	cr_assert_str_eq(err.msg, want);
	cr_assert_null(body);
	cr_assert_eq(len, 0);
	server_stop(&s);
}

Test(fetch, redirects_are_not_followed)
{
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	server_start(&s, ANSWER_REDIRECT, NULL, 0);
	cr_assert_eq(cm_fetch_get(url_of(&s, "/x"), 3000, 1024, &body, &len, &err), -1);
	cr_assert(strstr(err.msg, ": HTTP 302") != NULL, "%s", err.msg);
	server_stop(&s);
	cr_assert_eq(s.requests, 1);
}

Test(fetch, announced_body_larger_than_max_is_refused)
{
	static char big[100000];
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	memset(big, 'x', sizeof(big));
	server_start(&s, ANSWER_BODY, big, sizeof(big));
	cr_assert_eq(cm_fetch_get(url_of(&s, "/big"), 3000, 1000, &body, &len, &err), -1);
	cr_assert(strstr(err.msg, ": larger than 1000 bytes") != NULL, "%s", err.msg);
	cr_assert_null(body);
	server_stop(&s);
}

Test(fetch, unannounced_body_larger_than_max_is_refused)
{
	static char big[100000];
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	memset(big, 'x', sizeof(big));
	server_start(&s, ANSWER_BODY_CLOSE, big, sizeof(big));
	cr_assert_eq(cm_fetch_get(url_of(&s, "/big"), 3000, 4097, &body, &len, &err), -1);
	cr_assert(strstr(err.msg, ": larger than 4097 bytes") != NULL, "%s", err.msg);
	cr_assert_null(body);
	server_stop(&s);
}

Test(fetch, silent_server_times_out_within_bound)
{
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;
	double t0, elapsed;

	server_start(&s, ANSWER_SILENT, NULL, 0);
	t0 = cm_now_ms();
	cr_assert_eq(cm_fetch_get(url_of(&s, "/slow"), 500, 1024, &body, &len, &err), -1);
	elapsed = cm_now_ms() - t0;
	cr_assert(strstr(err.msg, ": timed out after 500 ms") != NULL, "%s", err.msg);
	cr_assert_lt(elapsed, 1000.0, "took %.0f ms", elapsed);
	cr_assert_geq(elapsed, 400.0, "took %.0f ms", elapsed);
	server_stop(&s);
}

Test(fetch, closed_port_is_connection_refused)
{
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;
	char url[64], want[96];
	int port, fd = listen_any(&port);

	close(fd); /* bound, never listened, now closed: nobody there */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x.crl", port);
	snprintf(want, sizeof(want), "%s: connection refused", url);
	cr_assert_eq(cm_fetch_get(url, 3000, 1024, &body, &len, &err), -1);
	cr_assert_str_eq(err.msg, want);
}

Test(fetch, other_schemes_are_refused_up_front)
{
	const char *urls[] = {"https://127.0.0.1:1/x.crl",
			      "ldap://dc1.lab.test/CN=x?cRL",
			      "file:///etc/passwd",
			      "ftp://x/y",
			      "HTTPS://x/y",
			      "//x/y",
			      ""};
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		char want[96];

		snprintf(want, sizeof(want), "%s: unsupported scheme", urls[i]);
		cr_assert_eq(cm_fetch_get(urls[i], 1000, 1024, &body, &len, &err), -1, "%s",
			     urls[i]);
		cr_assert_str_eq(err.msg, want);
		cr_assert_eq(cm_fetch_post(urls[i], "application/ocsp-request",
					   (const unsigned char *)"x", 1, 1000, 1024, &body, &len,
					   &err),
			     -1);
		cr_assert_str_eq(err.msg, want);
	}
	cr_assert_eq(cm_fetch_get(NULL, 1000, 1024, &body, &len, &err), -1);
	cr_assert(strstr(err.msg, "unsupported scheme") != NULL);
}

Test(fetch, uppercase_http_scheme_is_http)
{
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;
	char url[64];

	server_start(&s, ANSWER_BODY, "ok", 2);
	snprintf(url, sizeof(url), "HTTP://127.0.0.1:%d/x", s.port);
	cr_assert_eq(cm_fetch_get(url, 3000, 1024, &body, &len, &err), 0, "%s", err.msg);
	free(body);
	server_stop(&s);
}

Test(fetch, post_sends_body_and_content_type)
{
	static const unsigned char req[] = {0x30, 0x03, 0x02, 0x01, 0x00, 0x0d, 0x0a, 0xff};
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	server_start(&s, ANSWER_BODY, "answer", 6);
	cr_assert_eq(cm_fetch_post(url_of(&s, "/ocsp"), "application/ocsp-request", req,
				   sizeof(req), 3000, 1024, &body, &len, &err),
		     0, "%s", err.msg);
	cr_assert_eq(len, 6);
	cr_assert_eq(memcmp(body, "answer", 6), 0);
	free(body);
	server_stop(&s);
	cr_assert(strncmp(s.req, "POST /ocsp HTTP/1.1\r\n", 21) == 0, "%s", s.req);
	cr_assert(strcasestr(s.req, "\r\nContent-Type: application/ocsp-request\r\n") != NULL, "%s",
		  s.req);
	cr_assert(strcasestr(s.req, "\r\nContent-Length: 8\r\n") != NULL, "%s", s.req);
	cr_assert_null(strcasestr(s.req, "\r\nExpect:"), "%s", s.req);
	cr_assert_eq(s.req_len - s.head_len, sizeof(req));
	cr_assert_eq(memcmp(s.req + s.head_len, req, sizeof(req)), 0);
}

Test(fetch, post_content_type_cannot_add_headers)
{
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	cr_assert_eq(cm_fetch_post("http://127.0.0.1:1/ocsp", "text/plain\r\nX-Evil: 1",
				   (const unsigned char *)"x", 1, 1000, 1024, &body, &len, &err),
		     -1);
	cr_assert(strstr(err.msg, "invalid Content-Type") != NULL, "%s", err.msg);
}

Test(fetch, environment_proxy_is_ignored)
{
	struct server s;
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	setenv("http_proxy", "http://127.0.0.1:1", 1);
	setenv("HTTP_PROXY", "http://127.0.0.1:1", 1);
	setenv("all_proxy", "http://127.0.0.1:1", 1);
	server_start(&s, ANSWER_BODY, "direct", 6);
	cr_assert_eq(cm_fetch_get(url_of(&s, "/x"), 3000, 1024, &body, &len, &err), 0, "%s",
		     err.msg);
	free(body);
	server_stop(&s);
	cr_assert_eq(s.requests, 1);
}

Test(fetch, url_in_errors_is_sanitized)
{
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;
	char url[3000];

	cr_assert_eq(cm_fetch_get("http://127.0.0.1:1/\x1b[31mred\r\nX: y", 1000, 1024, &body, &len,
				  &err),
		     -1);
	cr_assert_not(has_control_byte(err.msg), "%s", err.msg);
	cr_assert(strstr(err.msg, "\\x1b[31mred") != NULL, "%s", err.msg);
	cr_assert(strstr(err.msg, ": malformed URL") != NULL, "%s", err.msg);

	memset(url, 'a', sizeof(url));
	memcpy(url, "ldap://", 7);
	url[sizeof(url) - 1] = '\0';
	cr_assert_eq(cm_fetch_get(url, 1000, 1024, &body, &len, &err), -1);
	cr_assert(strstr(err.msg, ": unsupported scheme") != NULL, "%s", err.msg);
}

Test(fetch, nonpositive_timeout_is_refused)
{
	struct cm_err err = {{0}};
	unsigned char *body = NULL;
	size_t len = 0;

	cr_assert_eq(cm_fetch_get("http://127.0.0.1:1/x", 0, 1024, &body, &len, &err), -1);
	cr_assert(strstr(err.msg, "timeout") != NULL, "%s", err.msg);
}
