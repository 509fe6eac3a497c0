/*
 * admin — the plain-HTTP admin listener (loopback by default): /healthz
 * (200 while serving), /readyz (200 when the directory answers; checked at
 * most every 5 s), /metrics (Prometheus text). Its own MHD daemon with an
 * internal thread: nothing here touches the event loops.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "certmap/directory.h"
#include "certmapd.h"

struct admin_state {
	pthread_mutex_t lock;
	double checked_ms;
	bool ready;
	char why[256];
};

static struct admin_state astate = {PTHREAD_MUTEX_INITIALIZER, 0, false, ""};

static bool directory_ready(struct server *srv, char *why, size_t len)
{
	struct gen *g;
	struct cm_dir *dir = NULL;
	struct cm_err err = {{0}};
	struct cm_dir_result res;
	const char *attrs[] = {"1.1", NULL};
	bool ok = false;
	double now = cm_now_ms();

	pthread_mutex_lock(&astate.lock);
	if (now - astate.checked_ms < 5000 && astate.checked_ms > 0) {
		ok = astate.ready;
		snprintf(why, len, "%s", astate.why);
		pthread_mutex_unlock(&astate.lock);
		return ok;
	}
	g = server_gen(srv);
	if (cm_dir_open(g->cfg, &dir, &err) == 0) {
		enum cm_dir_status st = cm_dir_search(dir, g->cfg->directory.base_dn,
						      CM_DIR_SCOPE_BASE, "(objectClass=*)", attrs, 1,
						      &res, NULL, &err);

		ok = st == CM_DIR_OK;
		cm_dir_result_free(&res);
		cm_dir_free(dir);
	}
	gen_unref(g);
	astate.checked_ms = now;
	astate.ready = ok;
	snprintf(astate.why, sizeof(astate.why), "%s", ok ? "directory answers" : err.msg);
	snprintf(why, len, "%s", astate.why);
	pthread_mutex_unlock(&astate.lock);
	return ok;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status, const char *type,
			     char *body)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (r == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result admin_handler(void *cls, struct MHD_Connection *c, const char *url,
				     const char *method, const char *version, const char *upload,
				     size_t *upload_size, void **con_cls)
{
	struct server *srv = cls;
	char why[256];

	(void)version;
	(void)upload;
	(void)con_cls;
	if (*upload_size != 0) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(c, 405, "text/plain", strdup("method not allowed\n"));
	if (strcmp(url, "/healthz") == 0) {
		bool draining = atomic_load(&srv->draining);

		return reply(c, draining ? 503 : 200, "text/plain",
			     strdup(draining ? "draining\n" : "ok\n"));
	}
	if (strcmp(url, "/readyz") == 0) {
		bool ok = !atomic_load(&srv->draining) && directory_ready(srv, why, sizeof(why));

		return reply(c, ok ? 200 : 503, "text/plain",
			     cm_strdup_printf("%s\n", ok ? "ready" : why));
	}
	if (strcmp(url, "/metrics") == 0) {
		char *text = cm_metrics_render(srv->metrics);

		return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8",
			     text ? text : strdup(""));
	}
	return reply(c, 404, "text/plain", strdup("not found\n"));
}

struct MHD_Daemon *admin_start(struct server *srv, char **error)
{
	struct gen *g = server_gen(srv);
	struct sockaddr_storage ss;
	struct MHD_Daemon *d = NULL;
	socklen_t alen = 0;

	*error = NULL;
	memset(&ss, 0, sizeof(ss));
	if (!g->cfg->admin.enabled) {
		gen_unref(g);
		return NULL;
	}
	if (inet_pton(AF_INET, g->cfg->admin.address, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)g->cfg->admin.port);
		alen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, g->cfg->admin.address,
			     &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)g->cfg->admin.port);
		alen = sizeof(struct sockaddr_in6);
	} else {
		*error = cm_strdup_printf("%s: $.admin.address: expected an IPv4 or IPv6 address, got \"%s\"",
					  g->cfg->file, g->cfg->admin.address);
		gen_unref(g);
		return NULL;
	}
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
				     (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
			     (uint16_t)g->cfg->admin.port, NULL, NULL, admin_handler, srv,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
			     64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	(void)alen;
	if (d == NULL)
		*error = cm_strdup_printf("admin listener %s:%d: cannot bind", g->cfg->admin.address,
					  g->cfg->admin.port);
	gen_unref(g);
	return d;
}
