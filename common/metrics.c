/*
 * metrics — counters, gauges and one histogram for /metrics
 * (include/certmap/metrics.h), rendered in the Prometheus text exposition
 * format 0.0.4.
 * Threading: every update is a relaxed C11 atomic; no locks anywhere.
 * Rendering reads each value once, so a scrape may see an update in one
 * series and not yet in another, but histogram buckets, _count and the +Inf
 * bucket always agree (_count is derived from the same bucket reads).
 * Bounds: requests_total keeps at most STATUS_SLOTS distinct
 * status/substatus pairs in a fixed open-addressing table (slots are claimed
 * by CAS and never freed); anything beyond, or outside 0..999 / 0..99999,
 * goes to status="other",substatus="other". Unknown reasons, methods and
 * results passed to the other updates are ignored.
 */
#include "certmap/metrics.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_SLOTS 64
#define STATUS_MAX 999
#define SUBSTATUS_MAX 99999

/* directory_latency_seconds upper bounds, 1 ms .. 10 s; +Inf is implicit. */
static const double latency_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
				    0.25,  0.5,    1,     2.5,  5,     10};
#define LATENCY_BUCKETS (sizeof(latency_le) / sizeof(latency_le[0]))

static const char *const cache_names[] = {"hit", "miss", "coalesced"};

struct status_slot {
	atomic_uint_fast32_t key; /* 0 = free, else status * 100000 + substatus + 1 */
	atomic_uint_fast64_t count;
};

struct cm_metrics {
	struct status_slot status[STATUS_SLOTS];
	atomic_uint_fast64_t status_other;
	/* [reason][method + 1]: index 0 is CM_METHOD_NONE */
	atomic_uint_fast64_t decisions[CM_REASON_COUNT][CM_METHOD_COUNT + 1];
	atomic_uint_fast64_t cache[3];
	atomic_uint_fast64_t latency[LATENCY_BUCKETS + 1]; /* per bucket, not cumulative */
	atomic_uint_fast64_t latency_sum_ns;
	atomic_uint_fast64_t upstream[2]; /* unavailable, timeout */
	atomic_int_fast64_t connections;
	atomic_int_fast64_t held;
	atomic_uint_fast64_t reloads[2]; /* ok, failed */
};

static void inc(atomic_uint_fast64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static uint64_t get(atomic_uint_fast64_t *c)
{
	return (uint64_t)atomic_load_explicit(c, memory_order_relaxed);
}

struct cm_metrics *cm_metrics_new(void)
{
	/* All-zero bytes are a valid initial state for these lock-free atomics. */
	return calloc(1, sizeof(struct cm_metrics));
}

void cm_metrics_free(struct cm_metrics *m)
{
	free(m);
}

void cm_metrics_request(struct cm_metrics *m, int status, int substatus)
{
	uint_fast32_t key;
	size_t h;

	if (m == NULL)
		return;
	if (status < 0 || status > STATUS_MAX || substatus < 0 || substatus > SUBSTATUS_MAX) {
		inc(&m->status_other);
		return;
	}
	key = (uint_fast32_t)status * 100000u + (uint_fast32_t)substatus + 1u;
	h = (size_t)((key * 2654435761u) >> 7);
	for (size_t i = 0; i < STATUS_SLOTS; i++) {
		struct status_slot *s = &m->status[(h + i) % STATUS_SLOTS];
		uint_fast32_t k = atomic_load_explicit(&s->key, memory_order_acquire);

		if (k == 0) {
			uint_fast32_t expect = 0;

			if (atomic_compare_exchange_strong_explicit(&s->key, &expect, key,
								    memory_order_acq_rel,
								    memory_order_acquire))
				k = key;
			else
				k = expect; /* someone else claimed it: maybe for our key */
		}
		if (k == key) {
			inc(&s->count);
			return;
		}
	}
	inc(&m->status_other);
}

void cm_metrics_decision(struct cm_metrics *m, enum cm_reason reason, enum cm_method method)
{
	if (m == NULL || (int)reason < 0 || reason >= CM_REASON_COUNT ||
	    (int)method < (int)CM_METHOD_NONE || method >= CM_METHOD_COUNT)
		return;
	inc(&m->decisions[reason][(int)method + 1]);
}

void cm_metrics_cache(struct cm_metrics *m, enum cm_cache_result r)
{
	if (m != NULL && (int)r >= 0 && (size_t)r < sizeof(cache_names) / sizeof(cache_names[0]))
		inc(&m->cache[r]);
}

void cm_metrics_directory_latency(struct cm_metrics *m, double ms)
{
	double s;
	size_t i;

	if (m == NULL)
		return;
	if (!(ms >= 0.0)) /* also NaN */
		ms = 0.0;
	s = ms / 1000.0;
	for (i = 0; i < LATENCY_BUCKETS && s > latency_le[i]; i++)
		;
	inc(&m->latency[i]);
	/* Saturate rather than wrap for absurd values (> ~584 years in total). */
	if (ms < 1e12)
		atomic_fetch_add_explicit(&m->latency_sum_ns, (uint_fast64_t)(ms * 1e6 + 0.5),
					  memory_order_relaxed);
}

void cm_metrics_upstream_error(struct cm_metrics *m, enum cm_reason reason)
{
	if (m == NULL)
		return;
	if (reason == CM_REASON_UPSTREAM_UNAVAILABLE)
		inc(&m->upstream[0]);
	else if (reason == CM_REASON_UPSTREAM_TIMEOUT)
		inc(&m->upstream[1]);
}

void cm_metrics_connections(struct cm_metrics *m, int delta)
{
	if (m != NULL)
		atomic_fetch_add_explicit(&m->connections, delta, memory_order_relaxed);
}

void cm_metrics_held(struct cm_metrics *m, int delta)
{
	if (m != NULL)
		atomic_fetch_add_explicit(&m->held, delta, memory_order_relaxed);
}

void cm_metrics_reload(struct cm_metrics *m, bool ok)
{
	if (m != NULL)
		inc(&m->reloads[ok ? 0 : 1]);
}

int cm_metrics_escape_label(const char *value, char *out, size_t len)
{
	size_t n = 0;

	if (out == NULL || len == 0)
		return -1;
	for (const char *p = value ? value : ""; *p != '\0'; p++) {
		const char *rep = NULL;
		size_t l = 1;

		if (*p == '\\')
			rep = "\\\\";
		else if (*p == '"')
			rep = "\\\"";
		else if (*p == '\n')
			rep = "\\n";
		if (rep != NULL)
			l = 2;
		if (n + l >= len)
			return -1;
		if (rep != NULL)
			memcpy(out + n, rep, 2);
		else
			out[n] = *p;
		n += l;
	}
	out[n] = '\0';
	return (int)n;
}

/* Shortest %g form that reads back as the same double ("0.001", "2.5"),
 * without an exponent for whole numbers ("10", not "1e+01"). */
static void fmt_double(double v, char *out, size_t len)
{
	if (v > -1e15 && v < 1e15 && v == (double)(long long)v) {
		snprintf(out, len, "%lld", (long long)v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(out, len, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP certmap_%s %s\n# TYPE certmap_%s %s\n", name, help, name, type);
}

static int cmp_slot(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b; /* {key, count} pairs */

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

static void render_requests(FILE *f, struct cm_metrics *m)
{
	uint64_t snap[STATUS_SLOTS][2];
	size_t n = 0;

	family(f, "requests_total", "counter", "Requests answered, by IIS status and substatus.");
	for (size_t i = 0; i < STATUS_SLOTS; i++) {
		uint_fast32_t k = atomic_load_explicit(&m->status[i].key, memory_order_acquire);

		if (k == 0)
			continue;
		snap[n][0] = k;
		snap[n][1] = get(&m->status[i].count);
		n++;
	}
	qsort(snap, n, sizeof(snap[0]), cmp_slot);
	for (size_t i = 0; i < n; i++)
		fprintf(f,
			"certmap_requests_total{status=\"%" PRIu64 "\",substatus=\"%" PRIu64
			"\"} %" PRIu64 "\n",
			(snap[i][0] - 1) / 100000u, (snap[i][0] - 1) % 100000u, snap[i][1]);
	if (get(&m->status_other) > 0)
		fprintf(f,
			"certmap_requests_total{status=\"other\",substatus=\"other\"} %" PRIu64
			"\n",
			get(&m->status_other));
}

static void render_decisions(FILE *f, struct cm_metrics *m)
{
	family(f, "decisions_total", "counter",
	       "Computed decisions, by reason and mapping method.");
	for (int r = 0; r < CM_REASON_COUNT; r++)
		for (int mt = CM_METHOD_NONE; mt < CM_METHOD_COUNT; mt++) {
			uint64_t v = get(&m->decisions[r][mt + 1]);
			const char *method = cm_method_name((enum cm_method)mt);

			if (v > 0)
				fprintf(f,
					"certmap_decisions_total{reason=\"%s\",method=\"%s\"} %" PRIu64
					"\n",
					cm_reason_name((enum cm_reason)r), method ? method : "none",
					v);
		}
}

static void render_latency(FILE *f, struct cm_metrics *m)
{
	uint64_t cum = 0;
	char le[32], sum[32];

	family(f, "directory_latency_seconds", "histogram",
	       "Directory lookup time per decision, in seconds.");
	for (size_t i = 0; i <= LATENCY_BUCKETS; i++) {
		cum += get(&m->latency[i]);
		if (i < LATENCY_BUCKETS)
			fmt_double(latency_le[i], le, sizeof(le));
		else
			snprintf(le, sizeof(le), "+Inf");
		fprintf(f, "certmap_directory_latency_seconds_bucket{le=\"%s\"} %" PRIu64 "\n", le,
			cum);
	}
	fmt_double((double)get(&m->latency_sum_ns) / 1e9, sum, sizeof(sum));
	fprintf(f, "certmap_directory_latency_seconds_sum %s\n", sum);
	fprintf(f, "certmap_directory_latency_seconds_count %" PRIu64 "\n", cum);
}

char *cm_metrics_render(struct cm_metrics *m)
{
	char *text = NULL, version[128];
	size_t size = 0;
	FILE *f;

	if (m == NULL)
		return NULL;
	f = open_memstream(&text, &size);
	if (f == NULL)
		return NULL;
	render_requests(f, m);
	render_decisions(f, m);

	family(f, "cache_lookups_total", "counter", "Decision cache lookups, by result.");
	for (size_t i = 0; i < 3; i++)
		fprintf(f, "certmap_cache_lookups_total{result=\"%s\"} %" PRIu64 "\n",
			cache_names[i], get(&m->cache[i]));

	render_latency(f, m);

	family(f, "upstream_errors_total", "counter", "Requests the upstream failed, by reason.");
	fprintf(f, "certmap_upstream_errors_total{reason=\"upstream_unavailable\"} %" PRIu64 "\n",
		get(&m->upstream[0]));
	fprintf(f, "certmap_upstream_errors_total{reason=\"upstream_timeout\"} %" PRIu64 "\n",
		get(&m->upstream[1]));

	family(f, "connections_open", "gauge", "Client connections open now.");
	fprintf(f, "certmap_connections_open %" PRIdFAST64 "\n",
		atomic_load_explicit(&m->connections, memory_order_relaxed));
	family(f, "requests_held", "gauge", "Requests in flight to the upstream now.");
	fprintf(f, "certmap_requests_held %" PRIdFAST64 "\n",
		atomic_load_explicit(&m->held, memory_order_relaxed));

	family(f, "config_reloads_total", "counter", "Configuration reloads, by result.");
	fprintf(f, "certmap_config_reloads_total{result=\"ok\"} %" PRIu64 "\n",
		get(&m->reloads[0]));
	fprintf(f, "certmap_config_reloads_total{result=\"failed\"} %" PRIu64 "\n",
		get(&m->reloads[1]));

	family(f, "build_info", "gauge", "Always 1; the version is a label.");
	if (cm_metrics_escape_label(CERTMAP_VERSION, version, sizeof(version)) < 0)
		snprintf(version, sizeof(version), "unknown");
	fprintf(f, "certmap_build_info{version=\"%s\"} 1\n", version);

	if (ferror(f)) {
		fclose(f);
		free(text);
		return NULL;
	}
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}
