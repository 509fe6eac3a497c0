/*
 * gen — one configuration generation: the immutable config, one decision
 * engine per decision thread (each with its own directory connection) and
 * the decision cache. Reference-counted; see certmapd.h.
 */
#include <stdlib.h>
#include <string.h>

#include "certmapd.h"

#include "certmap/revocation.h"

static unsigned long rev_epoch(void *arg)
{
	return cm_revstore_epoch(arg);
}

static void rev_log(void *arg, const char *line)
{
	(void)arg;
	logmsg("info", "%s", line);
}

struct gen *gen_new(const char *config_file, int n_engines, unsigned long id, char **error)
{
	struct cm_config_errors errs = {0};
	struct gen *g = calloc(1, sizeof(*g));
	struct cm_err err = {{0}};

	*error = NULL;
	if (g == NULL) {
		*error = strdup("out of memory");
		return NULL;
	}
	atomic_init(&g->refs, 1);
	g->id = id;
	if (cm_config_load(config_file, CM_CONFIG_FOR_DAEMON, &g->cfg, &errs) != 0) {
		size_t total = 1;
		char *msg;

		for (size_t i = 0; i < errs.n; i++)
			total += strlen(errs.lines[i]) + 1;
		msg = malloc(total);
		if (msg != NULL) {
			msg[0] = '\0';
			for (size_t i = 0; i < errs.n; i++) {
				strcat(msg, errs.lines[i]);
				if (i + 1 < errs.n)
					strcat(msg, "\n");
			}
		}
		*error = msg;
		cm_config_errors_free(&errs);
		free(g);
		return NULL;
	}
	g->engines = calloc((size_t)n_engines, sizeof(*g->engines));
	if (g->engines == NULL)
		goto oom;
	g->n_engines = n_engines;
	if (cm_revstore_new(g->cfg, &g->rev, &err) != 0) {
		*error = cm_strdup_printf("%s: $.client_certificates.revocation.crl_files: %s",
					  g->cfg->file, err.msg);
		gen_unref(g);
		return NULL;
	}
	cm_revstore_set_log(g->rev, rev_log, NULL);
	for (int i = 0; i < n_engines; i++) {
		if (cm_engine_new_shared(g->cfg, g->rev, &g->engines[i], &err) != 0) {
			*error = strdup(err.msg);
			gen_unref(g);
			return NULL;
		}
	}
	g->cache = cm_cache_new((size_t)g->cfg->cache.max_entries, g->cfg->cache.ttl_s,
				g->cfg->cache.negative_ttl_s);
	if (g->cache == NULL)
		goto oom;
	cm_cache_set_epoch(g->cache, rev_epoch, g->rev);
	if (cm_revstore_start(g->rev, &err) != 0) {
		*error = strdup(err.msg);
		gen_unref(g);
		return NULL;
	}
	g->key_uses_basic = g->cfg->authorization.basic_user_binding != CM_BASIC_OFF ||
			    g->cfg->mapping.on_ambiguous == CM_AMBIGUOUS_BASIC_USER;
	if (g->cfg->upstream.url != NULL) {
		char *why = NULL;

		g->target = upstream_target_new(g->cfg->upstream.url, &why);
		if (why != NULL)
			logmsg("warning", "upstream %s: %s: libcurl serves it",
			       g->cfg->upstream.url, why);
		free(why);
	}
	return g;
oom:
	*error = strdup("out of memory");
	gen_unref(g);
	return NULL;
}

struct gen *gen_ref(struct gen *g)
{
	if (g != NULL)
		atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
	return g;
}

void gen_unref(struct gen *g)
{
	if (g == NULL || atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
		return;
	cm_cache_free(g->cache);
	for (int i = 0; g->engines != NULL && i < g->n_engines; i++)
		cm_engine_free(g->engines[i]);
	free(g->engines);
	cm_revstore_free(g->rev);
	upstream_target_free(g->target);
	cm_config_free(g->cfg);
	free(g);
}

struct gen *server_gen(struct server *srv)
{
	struct gen *g;

	pthread_mutex_lock(&srv->gen_lock);
	g = gen_ref(srv->gen);
	pthread_mutex_unlock(&srv->gen_lock);
	return g;
}
