/*
 * admin — the plain-HTTP admin listener (loopback by default): /healthz
 * (200 while serving), /readyz (200 when the directory answers; checked at
 * most every 5 s), /metrics (Prometheus text). Its own MHD daemon with an
 * internal thread: nothing here touches the event loops.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "certmap/directory.h"
#include "certmapd.h"

#include "certmap/revocation.h"

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
		enum cm_dir_status st =
			cm_dir_search(dir, g->cfg->directory.base_dn, CM_DIR_SCOPE_BASE,
				      "(objectClass=*)", attrs, 1, &res, NULL, &err);

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

/* Appends printf output to a growing buffer; on OOM the buffer is dropped. */
static void buf_add(char **buf, size_t *len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void buf_add(char **buf, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *nb;

	if (*buf == NULL)
		return;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	nb = n >= 0 ? realloc(*buf, *len + (size_t)n + 1) : NULL;
	if (nb == NULL) {
		free(*buf);
		*buf = NULL;
		return;
	}
	*buf = nb;
	va_start(ap, fmt);
	vsnprintf(*buf + *len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	*len += (size_t)n;
}

/* A Prometheus label value: \, " and newlines escaped, at most 400 bytes. */
static void label_value(const char *in, char *out, size_t out_len)
{
	size_t o = 0;

	for (; *in != '\0' && o + 3 < out_len && o < 400; in++) {
		if (*in == '\\' || *in == '"') {
			out[o++] = '\\';
			out[o++] = *in;
		} else if (*in == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if ((unsigned char)*in >= 0x20) {
			out[o++] = *in;
		}
	}
	out[o] = '\0';
}

/* The revocation store's metrics (current generation). */
static char *render_revocation(struct server *srv)
{
	struct gen *g = server_gen(srv);
	struct cm_rev_stats st;
	time_t now = time(NULL);
	size_t len = 0;
	char *buf = calloc(1, 1);
	char lv[1024];

	cm_revstore_stats(g->rev, &st);
	buf_add(&buf, &len,
		"# HELP certmap_revocation_checks_total Revocation checks by result.\n"
		"# TYPE certmap_revocation_checks_total counter\n");
	buf_add(&buf, &len, "certmap_revocation_checks_total{result=\"good\"} %lu\n",
		st.checks_good);
	buf_add(&buf, &len, "certmap_revocation_checks_total{result=\"revoked\"} %lu\n",
		st.checks_revoked);
	buf_add(&buf, &len, "certmap_revocation_checks_total{result=\"unknown\"} %lu\n",
		st.checks_unknown);
	buf_add(&buf, &len,
		"# HELP certmap_revocation_fetch_failures_total CRL and OCSP fetches that failed or were refused.\n"
		"# TYPE certmap_revocation_fetch_failures_total counter\n"
		"certmap_revocation_fetch_failures_total{kind=\"crl\"} %lu\n"
		"certmap_revocation_fetch_failures_total{kind=\"ocsp\"} %lu\n",
		st.fetch_failures_crl, st.fetch_failures_ocsp);
	buf_add(&buf, &len,
		"# HELP certmap_revocation_crl_loads_total CRLs loaded with new content (files and CDPs).\n"
		"# TYPE certmap_revocation_crl_loads_total counter\n"
		"certmap_revocation_crl_loads_total %lu\n",
		st.crl_loads);
	buf_add(&buf, &len,
		"# HELP certmap_revocation_crl_age_seconds Seconds since the CRL's thisUpdate.\n"
		"# TYPE certmap_revocation_crl_age_seconds gauge\n");
	for (size_t i = 0; i < st.n_crls; i++) {
		label_value(st.crls[i].source, lv, sizeof(lv));
		if (st.crls[i].this_update != 0)
			buf_add(&buf, &len,
				"certmap_revocation_crl_age_seconds{source=\"%s\"} %lld\n", lv,
				(long long)(now - st.crls[i].this_update));
	}
	buf_add(&buf, &len,
		"# HELP certmap_revocation_crl_next_update_seconds Seconds until the CRL's nextUpdate (negative: stale).\n"
		"# TYPE certmap_revocation_crl_next_update_seconds gauge\n");
	for (size_t i = 0; i < st.n_crls; i++) {
		label_value(st.crls[i].source, lv, sizeof(lv));
		if (st.crls[i].next_update != 0)
			buf_add(&buf, &len,
				"certmap_revocation_crl_next_update_seconds{source=\"%s\"} %lld\n",
				lv, (long long)(st.crls[i].next_update - now));
	}
	buf_add(&buf, &len,
		"# HELP certmap_revocation_crl_entries Revoked certificates listed in the CRL.\n"
		"# TYPE certmap_revocation_crl_entries gauge\n");
	for (size_t i = 0; i < st.n_crls; i++) {
		label_value(st.crls[i].source, lv, sizeof(lv));
		buf_add(&buf, &len, "certmap_revocation_crl_entries{source=\"%s\"} %zu\n", lv,
			st.crls[i].entries);
	}
	buf_add(&buf, &len,
		"# HELP certmap_revocation_ocsp_latency_seconds Time to fetch and check an OCSP answer.\n"
		"# TYPE certmap_revocation_ocsp_latency_seconds histogram\n");
	for (int i = 0; i < 12; i++)
		buf_add(&buf, &len,
			"certmap_revocation_ocsp_latency_seconds_bucket{le=\"%g\"} %lu\n",
			st.ocsp_latency_s[i], st.ocsp_latency_count[i]);
	buf_add(&buf, &len,
		"certmap_revocation_ocsp_latency_seconds_bucket{le=\"+Inf\"} %lu\n"
		"certmap_revocation_ocsp_latency_seconds_sum %.6f\n"
		"certmap_revocation_ocsp_latency_seconds_count %lu\n",
		st.ocsp_latency_total, st.ocsp_latency_sum, st.ocsp_latency_total);
	cm_rev_stats_free(&st);
	gen_unref(g);
	return buf;
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
		char *rev = render_revocation(srv);

		if (text != NULL && rev != NULL) {
			char *all = cm_strdup_printf("%s%s", text, rev);

			free(text);
			text = all;
		}
		free(rev);

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
	if (inet_pton(AF_INET, g->cfg->admin.address, &((struct sockaddr_in *)&ss)->sin_addr) ==
	    1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)g->cfg->admin.port);
		alen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, g->cfg->admin.address,
			     &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)g->cfg->admin.port);
		alen = sizeof(struct sockaddr_in6);
	} else {
		*error = cm_strdup_printf(
			"%s: $.admin.address: expected an IPv4 or IPv6 address, got \"%s\"",
			g->cfg->file, g->cfg->admin.address);
		gen_unref(g);
		return NULL;
	}
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
				     (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
			     (uint16_t)g->cfg->admin.port, NULL, NULL, admin_handler, srv,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
			     MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
			     MHD_OPTION_END);
	(void)alen;
	if (d == NULL)
		*error = cm_strdup_printf("admin listener %s:%d: cannot bind",
					  g->cfg->admin.address, g->cfg->admin.port);
	gen_unref(g);
	return d;
}
