/*
 * decider — the decision pool. Directory lookups (and x509 verification)
 * run here, never on an event loop. Thread i uses engine i of the request's
 * generation, so every thread has its own directory connection.
 * A job is a suspended request whose cache lookup made it the leader; the
 * result goes into the cache (which wakes the requests that coalesced on
 * it) and back to the leader.
 */
#include <stdlib.h>
#include <string.h>

#include "certmapd.h"

struct job {
	struct req *r;
	struct job *next;
};

struct decider {
	struct server *srv;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail;
	bool stopping;
	int n_threads;
	pthread_t *threads;
};

static void decide(struct decider *d, int idx, struct req *r)
{
	struct gen *g = r->gen;
	struct cm_engine *engine = g->engines[idx % g->n_engines];
	struct conn *c = r->conn;
	struct cm_request creq = {
		.chain_der = (const unsigned char *const *)c->chain_der,
		.chain_len = c->chain_len,
		.chain_n = c->chain_n,
		.basic_user = r->basic_user,
		.now = time(NULL),
	};
	struct cm_decision dec;
	struct cm_verdict *v;
	time_t not_after = 0;

	cm_engine_decide(engine, &creq, &dec);
	v = cm_verdict_from_decision(&dec, g->cfg->directory.netbios_domain);
	if (d->srv->audit != NULL)
		cm_auditlog_write(d->srv->audit, &r->started_wall, c->client_ip, r->id, &dec);
	cm_metrics_decision(d->srv->metrics, dec.reason, dec.method);
	if (dec.directory_ms > 0)
		cm_metrics_directory_latency(d->srv->metrics, dec.directory_ms);
	if (dec.reason != CM_REASON_ALLOWED)
		logmsg("info", "request %s from %s: %s %d.%d%s%s", r->id, c->client_ip,
		       cm_reason_name(dec.reason), dec.status, dec.substatus,
		       dec.detail ? ": " : "", dec.detail ? dec.detail : "");
	if (dec.has_cert && dec.cert.not_after[0] != '\0') {
		struct tm tm;

		memset(&tm, 0, sizeof(tm));
		if (strptime(dec.cert.not_after, "%Y-%m-%dT%H:%M:%SZ", &tm) != NULL)
			not_after = timegm(&tm); /* the cache never outlives the certificate */
	}
	cm_decision_free(&dec);
	r->decided_now = true;
	if (v != NULL)
		cm_cache_put(g->cache, r->key, v, not_after);
	front_finish_decision(r, v); /* takes our reference */
}

struct worker_arg {
	struct decider *d;
	int idx;
};

static void *worker_main(void *arg)
{
	struct worker_arg *wa = arg;
	struct decider *d = wa->d;
	int idx = wa->idx;

	free(wa);
	for (;;) {
		struct job *j;

		pthread_mutex_lock(&d->lock);
		while (d->head == NULL && !d->stopping)
			pthread_cond_wait(&d->cond, &d->lock);
		if (d->head == NULL) {
			pthread_mutex_unlock(&d->lock);
			return NULL;
		}
		j = d->head;
		d->head = j->next;
		if (d->head == NULL)
			d->tail = NULL;
		pthread_mutex_unlock(&d->lock);
		decide(d, idx, j->r);
		free(j);
	}
}

struct decider *decider_new(struct server *srv, int threads)
{
	struct decider *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	d->srv = srv;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	d->threads = calloc((size_t)threads, sizeof(*d->threads));
	if (d->threads == NULL) {
		free(d);
		return NULL;
	}
	for (int i = 0; i < threads; i++) {
		struct worker_arg *wa = malloc(sizeof(*wa));

		if (wa == NULL)
			break;
		wa->d = d;
		wa->idx = i;
		if (pthread_create(&d->threads[i], NULL, worker_main, wa) != 0) {
			free(wa);
			break;
		}
		d->n_threads++;
	}
	if (d->n_threads == 0) {
		decider_free(d);
		return NULL;
	}
	return d;
}

void decider_free(struct decider *d)
{
	if (d == NULL)
		return;
	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	for (int i = 0; i < d->n_threads; i++)
		pthread_join(d->threads[i], NULL);
	free(d->threads);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	free(d);
}

int decider_submit(struct decider *d, struct req *r)
{
	struct job *j = malloc(sizeof(*j));

	if (j == NULL)
		return -1;
	j->r = r;
	j->next = NULL;
	pthread_mutex_lock(&d->lock);
	if (d->tail)
		d->tail->next = j;
	else
		d->head = j;
	d->tail = j;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return 0;
}
