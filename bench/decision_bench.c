/*
 * decision_bench — latency of certmap decisions (bench/README.md).
 *
 *   --mode x509    cm_cert_parse + cm_cert_verify + cm_revocation_check of
 *                  the given certificates; no directory is touched (the
 *                  config's directory section is loaded, never contacted).
 *   --mode decide  cm_engine_decide, as certmapd calls it: x509, revocation,
 *                  mapping and policy. The engine has no decision cache, so
 *                  every call is a cold lookup; the engine's LDAP connection
 *                  is kept between calls, as in certmapd. With --reconnect
 *                  every decision gets a fresh engine (built outside the
 *                  timed region), so the timed call also connects (TCP, TLS
 *                  for ldaps://) and binds.
 *
 * Every decision must end with the expected reason (--expect, default
 * allowed); the first one that does not stops the run with its trace
 * (exit 1): a benchmark of errors is worthless.
 *
 * Per-LDAP-operation timings: the bench links libcertmap statically with
 * -Wl,--wrap=cm_dir_search, so each search mapping.c and policy.c issue is
 * timed here, labelled "<scope> <first attribute>" (e.g. "base tokenGroups").
 * libcertmap itself is unchanged.
 *
 * Output: one JSON line on stdout, one human line on stderr.
 * Exit status: 0 ok, 1 a decision had an unexpected reason or setup failed,
 * 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "certmap/config.h"
#include "certmap/decision.h"
#include "certmap/directory.h"
#include "certmap/engine.h"
#include "certmap/revocation.h"
#include "certmap/trace.h"
#include "certmap/util.h"
#include "certmap/x509.h"

#define BENCH_MAX_CERTS 64
#define BENCH_MAX_ITERATIONS 1000000L
#define BENCH_MAX_OPS 16 /* distinct operation labels tracked */
#define BENCH_OP_LABEL_BYTES 96
#define BENCH_DEFAULT_ITERATIONS 1000L
#define BENCH_DEFAULT_WARMUP 50L
#define BENCH_DEFAULT_LIMIT_S 60.0

enum mode { MODE_X509, MODE_DECIDE };

/* A growable list of latencies in microseconds. */
struct samples {
	double *v;
	size_t n;
	size_t cap;
};

struct op_stats {
	char label[BENCH_OP_LABEL_BYTES];
	struct samples s;
};

/* x509 mode times its three calls separately too. */
enum stage { STAGE_PARSE, STAGE_VERIFY, STAGE_REVOCATION, STAGE_COUNT };
static const char *const stage_names[STAGE_COUNT] = {"cm_cert_parse", "cm_cert_verify",
						     "cm_revocation_check"};

/* State shared with the cm_dir_search wrapper (the bench is one thread). */
static struct {
	struct samples stages[STAGE_COUNT];
	bool measuring;    /* record op samples (not during warmup) */
	bool fresh_engine; /* the next search is the first of a new engine */
	struct op_stats ops[BENCH_MAX_OPS];
	size_t n_ops;
	size_t dropped_ops; /* labels over BENCH_MAX_OPS */
	bool oom;
} g;

/* The linker routes libcertmap's calls here (-Wl,--wrap=cm_dir_search). */
enum cm_dir_status __real_cm_dir_search(struct cm_dir *dir, const char *base,
					enum cm_dir_scope scope, const char *filter,
					const char *const *attrs, size_t size_limit,
					struct cm_dir_result *out, struct cm_trace *trace,
					struct cm_err *err);
enum cm_dir_status __wrap_cm_dir_search(struct cm_dir *dir, const char *base,
					enum cm_dir_scope scope, const char *filter,
					const char *const *attrs, size_t size_limit,
					struct cm_dir_result *out, struct cm_trace *trace,
					struct cm_err *err);

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int samples_add(struct samples *s, double us)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		double *v = realloc(s->v, cap * sizeof(*v));

		if (v == NULL)
			return -1;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = us;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void samples_sort(struct samples *s)
{
	if (s->n > 1)
		qsort(s->v, s->n, sizeof(*s->v), cmp_double);
}

/* Nearest-rank percentile of sorted samples (p in 0..100). */
static double percentile(const struct samples *s, double p)
{
	size_t rank;

	if (s->n == 0)
		return 0.0;
	rank = (size_t)ceil(p / 100.0 * (double)s->n);
	if (rank < 1)
		rank = 1;
	if (rank > s->n)
		rank = s->n;
	return s->v[rank - 1];
}

static double mean(const struct samples *s)
{
	double sum = 0.0;

	for (size_t i = 0; i < s->n; i++)
		sum += s->v[i];
	return s->n ? sum / (double)s->n : 0.0;
}

static double round1(double x)
{
	return round(x * 10.0) / 10.0;
}

static const char *scope_label(enum cm_dir_scope scope)
{
	switch (scope) {
	case CM_DIR_SCOPE_BASE:
		return "base";
	case CM_DIR_SCOPE_ONE:
		return "one";
	default:
		return "sub";
	}
}

static void record_op(const char *label, double us)
{
	size_t i;

	for (i = 0; i < g.n_ops; i++)
		if (strcmp(g.ops[i].label, label) == 0)
			break;
	if (i == g.n_ops) {
		if (g.n_ops == BENCH_MAX_OPS) {
			g.dropped_ops++;
			return;
		}
		snprintf(g.ops[i].label, sizeof(g.ops[i].label), "%s", label);
		g.n_ops++;
	}
	if (samples_add(&g.ops[i].s, us) != 0)
		g.oom = true;
}

enum cm_dir_status __wrap_cm_dir_search(struct cm_dir *dir, const char *base,
					enum cm_dir_scope scope, const char *filter,
					const char *const *attrs, size_t size_limit,
					struct cm_dir_result *out, struct cm_trace *trace,
					struct cm_err *err)
{
	bool fresh = g.fresh_engine;
	double t0 = now_us();
	enum cm_dir_status st =
		__real_cm_dir_search(dir, base, scope, filter, attrs, size_limit, out, trace, err);
	double us = now_us() - t0;

	g.fresh_engine = false;
	if (g.measuring) {
		char label[BENCH_OP_LABEL_BYTES];

		snprintf(label, sizeof(label), "%s%s %s", fresh ? "connect+bind+" : "",
			 scope_label(scope), attrs != NULL && attrs[0] != NULL ? attrs[0] : "*");
		record_op(label, us);
	}
	return st;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: decision_bench --mode x509|decide --config FILE --cert FILE [--cert FILE ...]\n"
		"                      [--expect REASON] [--iterations N] [--warmup N]\n"
		"                      [--duration-limit SECONDS] [--reconnect] [--label TEXT]\n"
		"                      [--show-trace]\n"
		"\n"
		"  --mode x509        parse + verify + CRL check only (no directory contact)\n"
		"  --mode decide      full cm_engine_decide (cold lookup, connection kept)\n"
		"  --reconnect        decide: a fresh engine per decision, so every timed\n"
		"                     decision connects and binds (engine build not timed)\n"
		"  --config FILE      certmap JSON config (loaded as for certmapctl check)\n"
		"  --cert FILE        PEM or DER; more certificates in a PEM are its chain;\n"
		"                     repeat to rotate through several (round robin)\n"
		"  --expect REASON    reason every decision must have (default allowed)\n"
		"  --iterations N     measured decisions (default %ld, at most %ld)\n"
		"  --warmup N         unmeasured decisions first (default %ld)\n"
		"  --duration-limit S stop after S seconds, warmup included (default %.0f);\n"
		"                     the JSON then says \"truncated\": true\n"
		"  --label TEXT       carried into the JSON line (\"label\")\n"
		"  --show-trace       print the trace of the first measured decision (stderr)\n"
		"\n"
		"Prints one JSON line on stdout ({mode, dialect, iterations, p50_us, p90_us,\n"
		"p99_us, max_us, mean_us, decisions_per_s, ...}) and a summary on stderr.\n"
		"exit status: 0 ok, 1 unexpected reason or setup failure, 2 usage\n",
		BENCH_DEFAULT_ITERATIONS, BENCH_MAX_ITERATIONS, BENCH_DEFAULT_WARMUP,
		BENCH_DEFAULT_LIMIT_S);
}

static int parse_long(const char *opt, const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "decision_bench: %s: expected an integer %ld..%ld, got '%s'\n", opt,
			min, max, s);
		return -1;
	}
	*out = v;
	return 0;
}

static void print_trace(FILE *f, const char *what, const struct cm_trace *t)
{
	fprintf(f, "decision_bench: %s trace:\n", what);
	for (size_t i = 0; i < t->n; i++)
		fprintf(f, "    %s\n", t->lines[i]);
	if (t->dropped)
		fprintf(f, "    (%zu more lines dropped)\n", t->dropped);
}

/* Fails loudly: the reason, detail and trace of a decision that did not
 * end as expected. */
static void report_unexpected(const char *cert, enum cm_reason want, enum cm_reason got,
			      const char *detail, const struct cm_trace *trace)
{
	fprintf(stderr, "decision_bench: %s: expected %s, got %s%s%s\n", cert, cm_reason_name(want),
		cm_reason_name(got), detail ? ": " : "", detail ? detail : "");
	print_trace(stderr, cert, trace);
}

struct bench {
	enum mode mode;
	bool reconnect;
	bool show_trace;
	enum cm_reason expect;
	const struct cm_config *cfg;
	const char *cert_files[BENCH_MAX_CERTS];
	struct cm_der_list certs[BENCH_MAX_CERTS];
	size_t n_certs;
	/* x509 mode */
	struct cm_trust *trust;
	struct cm_revstore *crls;
	/* decide mode */
	struct cm_engine *engine;
};

/* One x509-only decision: 0 with *us, -1 on an unexpected reason. */
static int run_x509(struct bench *b, size_t ci, bool show, double *us)
{
	const struct cm_der_list *c = &b->certs[ci];
	struct cm_trace trace = {NULL, 0, 0};
	struct cm_cert *cert = NULL;
	struct cm_err err = {{0}};
	char *detail = NULL;
	enum cm_reason r;
	time_t now = time(NULL);
	double t0 = now_us(), t1, t2, t3;
	int rc = 0;

	if (cm_cert_parse((const unsigned char *const *)c->der, c->len, c->n, &cert, &err) != 0) {
		r = CM_REASON_UNTRUSTED;
		t1 = t2 = t3 = now_us();
	} else {
		t1 = now_us();
		r = cm_cert_verify(cert, b->trust, now,
				   b->cfg->client_certificates.require_client_auth_eku, &trace,
				   &detail);
		t2 = now_us();
		if (r == CM_REASON_ALLOWED) {
			struct cm_rev_result rr;

			r = cm_revstore_check(b->crls, NULL, b->trust, cert,
					      b->cfg->client_certificates.revocation.mode, now,
					      &trace, &detail, &rr);
		}
		t3 = now_us();
	}
	*us = t3 - t0;
	if (g.measuring && (samples_add(&g.stages[STAGE_PARSE], t1 - t0) != 0 ||
			    samples_add(&g.stages[STAGE_VERIFY], t2 - t1) != 0 ||
			    samples_add(&g.stages[STAGE_REVOCATION], t3 - t2) != 0))
		g.oom = true;
	if (r != b->expect) {
		report_unexpected(b->cert_files[ci], b->expect, r, detail ? detail : err.msg,
				  &trace);
		rc = -1;
	} else if (show) {
		print_trace(stderr, b->cert_files[ci], &trace);
	}
	cm_cert_free(cert);
	free(detail);
	cm_trace_free(&trace);
	return rc;
}

/* One engine decision: 0 with *us and *dir_us, -1 on an unexpected reason
 * or when a fresh engine cannot be built. */
static int run_decide(struct bench *b, size_t ci, bool show, double *us, double *dir_us)
{
	const struct cm_der_list *c = &b->certs[ci];
	struct cm_request req = {
		.chain_der = (const unsigned char *const *)c->der,
		.chain_len = c->len,
		.chain_n = c->n,
		.basic_user = NULL,
		.now = time(NULL),
	};
	struct cm_engine *engine = b->engine;
	struct cm_decision d;
	struct cm_err err = {{0}};
	double t0;
	int rc = 0;

	if (b->reconnect) {
		if (cm_engine_new(b->cfg, &engine, &err) != 0) {
			fprintf(stderr, "decision_bench: %s\n", err.msg);
			return -1;
		}
		g.fresh_engine = true;
	}
	t0 = now_us();
	cm_engine_decide(engine, &req, &d);
	*us = now_us() - t0;
	*dir_us = d.directory_ms * 1000.0;
	if (d.reason != b->expect) {
		report_unexpected(b->cert_files[ci], b->expect, d.reason, d.detail, &d.trace);
		rc = -1;
	} else if (show) {
		print_trace(stderr, b->cert_files[ci], &d.trace);
	}
	cm_decision_free(&d);
	if (b->reconnect)
		cm_engine_free(engine); /* unbind: not timed */
	return rc;
}

static json_t *stats_json(const struct samples *s)
{
	return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)s->n, "p50_us",
			 round1(percentile(s, 50)), "p90_us", round1(percentile(s, 90)), "p99_us",
			 round1(percentile(s, 99)), "max_us", round1(s->n ? s->v[s->n - 1] : 0.0),
			 "mean_us", round1(mean(s)));
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"mode", required_argument, NULL, 'm'},
		{"config", required_argument, NULL, 'c'},
		{"cert", required_argument, NULL, 'C'},
		{"expect", required_argument, NULL, 'e'},
		{"iterations", required_argument, NULL, 'n'},
		{"warmup", required_argument, NULL, 'w'},
		{"duration-limit", required_argument, NULL, 'd'},
		{"reconnect", no_argument, NULL, 'r'},
		{"label", required_argument, NULL, 'l'},
		{"show-trace", no_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct bench b;
	const char *config = NULL, *mode = NULL, *label = NULL;
	long iterations = BENCH_DEFAULT_ITERATIONS, warmup = BENCH_DEFAULT_WARMUP;
	double limit_s = BENCH_DEFAULT_LIMIT_S;
	struct cm_config *cfg = NULL;
	struct cm_config_errors errs = {0};
	struct cm_err err = {{0}};
	struct samples lat = {0}, dir = {0};
	json_t *out = NULL, *ops = NULL;
	bool truncated = false;
	double start, wall_s = 0.0;
	long done = 0;
	int c, rc = 1;

	memset(&b, 0, sizeof(b));
	b.expect = CM_REASON_ALLOWED;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			mode = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case 'C':
			if (b.n_certs == BENCH_MAX_CERTS) {
				fprintf(stderr, "decision_bench: at most %d --cert\n",
					BENCH_MAX_CERTS);
				return 2;
			}
			b.cert_files[b.n_certs++] = optarg;
			break;
		case 'e':
			if (cm_reason_from_name(optarg, &b.expect) != 0) {
				fprintf(stderr, "decision_bench: --expect: unknown reason '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'n':
			if (parse_long("--iterations", optarg, 1, BENCH_MAX_ITERATIONS,
				       &iterations) != 0)
				return 2;
			break;
		case 'w':
			if (parse_long("--warmup", optarg, 0, BENCH_MAX_ITERATIONS, &warmup) != 0)
				return 2;
			break;
		case 'd': {
			char *end;

			errno = 0;
			limit_s = strtod(optarg, &end);
			if (errno != 0 || end == optarg || *end != '\0' || !(limit_s > 0.0) ||
			    limit_s > 86400.0) {
				fprintf(stderr,
					"decision_bench: --duration-limit: expected seconds "
					"(0 < S <= 86400), got '%s'\n",
					optarg);
				return 2;
			}
			break;
		}
		case 'r':
			b.reconnect = true;
			break;
		case 'l':
			label = optarg;
			break;
		case 't':
			b.show_trace = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "decision_bench: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (mode != NULL && strcmp(mode, "x509") == 0) {
		b.mode = MODE_X509;
	} else if (mode != NULL && strcmp(mode, "decide") == 0) {
		b.mode = MODE_DECIDE;
	} else {
		fprintf(stderr, "decision_bench: --mode x509 or --mode decide is required\n");
		usage(stderr);
		return 2;
	}
	if (config == NULL || b.n_certs == 0) {
		fprintf(stderr, "decision_bench: --config and at least one --cert are required\n");
		usage(stderr);
		return 2;
	}
	if (b.reconnect && b.mode != MODE_DECIDE) {
		fprintf(stderr, "decision_bench: --reconnect needs --mode decide\n");
		return 2;
	}

	if (cm_config_load(config, CM_CONFIG_FOR_CHECK, &cfg, &errs) != 0) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.lines[i]);
		cm_config_errors_free(&errs);
		return 1;
	}
	b.cfg = cfg;
	for (size_t i = 0; i < b.n_certs; i++) {
		if (cm_der_list_read(b.cert_files[i], &b.certs[i], &err) != 0) {
			fprintf(stderr, "decision_bench: --cert %s: %s\n", b.cert_files[i],
				err.msg);
			goto cleanup;
		}
	}
	if (b.mode == MODE_X509) {
		const struct cm_strlist *ti = &cfg->client_certificates.trusted_issuers;
		if (cm_trust_load(ti->v, ti->n, &b.trust, &err) != 0 ||
		    cm_revstore_new(cfg, &b.crls, &err) != 0) {
			fprintf(stderr, "decision_bench: %s: %s\n", config, err.msg);
			goto cleanup;
		}
	} else if (!b.reconnect && cm_engine_new(cfg, &b.engine, &err) != 0) {
		fprintf(stderr, "decision_bench: %s\n", err.msg);
		goto cleanup;
	}

	start = now_us();
	for (long i = 0; i < warmup + iterations; i++) {
		size_t ci = (size_t)i % b.n_certs;
		bool measured = i >= warmup;
		bool show = b.show_trace && i == warmup;
		double us = 0.0, dir_us = 0.0;
		int r;

		if ((now_us() - start) / 1e6 >= limit_s) {
			truncated = true;
			break;
		}
		g.measuring = measured;
		r = b.mode == MODE_X509 ? run_x509(&b, ci, show, &us)
					: run_decide(&b, ci, show, &us, &dir_us);
		if (r != 0) {
			fprintf(stderr, "decision_bench: stopped at decision %ld (%s)\n", i + 1,
				measured ? "measured" : "warmup");
			goto cleanup;
		}
		if (!measured)
			continue;
		if (samples_add(&lat, us) != 0 ||
		    (b.mode == MODE_DECIDE && samples_add(&dir, dir_us) != 0) || g.oom) {
			fprintf(stderr, "decision_bench: out of memory\n");
			goto cleanup;
		}
		done++;
	}
	g.measuring = false;
	wall_s = (now_us() - start) / 1e6;
	if (done == 0) {
		fprintf(stderr,
			"decision_bench: no measured decision within %.1f s "
			"(--duration-limit)\n",
			limit_s);
		goto cleanup;
	}

	samples_sort(&lat);
	samples_sort(&dir);
	{
		double sum = 0.0;

		for (size_t i = 0; i < lat.n; i++)
			sum += lat.v[i];
		out = json_pack(
			"{s:s, s:s?, s:o, s:I, s:I, s:b, s:b, s:i, s:s, s:f, s:f, s:f, s:f, "
			"s:f, s:f, s:f}",
			"mode", b.mode == MODE_X509 ? "x509" : "decide", "label", label, "dialect",
			b.mode == MODE_X509 ? json_null()
					    : json_string(cm_dialect_name(cfg->directory.dialect)),
			"iterations", (json_int_t)done, "warmup", (json_int_t)warmup, "reconnect",
			b.reconnect, "truncated", truncated, "certs", (int)b.n_certs, "expect",
			cm_reason_name(b.expect), "p50_us", round1(percentile(&lat, 50)), "p90_us",
			round1(percentile(&lat, 90)), "p99_us", round1(percentile(&lat, 99)),
			"max_us", round1(lat.v[lat.n - 1]), "mean_us", round1(mean(&lat)),
			"decisions_per_s", round1(sum > 0.0 ? (double)lat.n / (sum / 1e6) : 0.0),
			"wall_s", round(wall_s * 1000.0) / 1000.0);
	}
	if (out == NULL) {
		fprintf(stderr, "decision_bench: cannot build the JSON line\n");
		goto cleanup;
	}
	if (b.mode == MODE_DECIDE) {
		json_object_set_new(out, "directory_p50_us",
				    json_real(round1(percentile(&dir, 50))));
		json_object_set_new(out, "directory_p99_us",
				    json_real(round1(percentile(&dir, 99))));
		json_object_set_new(out, "uri", json_string(cfg->directory.uris.v[0]));
		ops = json_object();
		for (size_t i = 0; i < g.n_ops; i++) {
			struct samples *s = &g.ops[i].s;

			samples_sort(s);
			json_object_set_new(ops, g.ops[i].label, stats_json(s));
		}
		if (g.dropped_ops)
			json_object_set_new(ops, "(other)",
					    json_integer((json_int_t)g.dropped_ops));
		json_object_set_new(out, "ldap_ops", ops);
	}
	if (b.mode == MODE_X509) {
		json_t *st = json_object();

		for (size_t i = 0; i < STAGE_COUNT; i++) {
			samples_sort(&g.stages[i]);
			json_object_set_new(st, stage_names[i], stats_json(&g.stages[i]));
		}
		json_object_set_new(out, "stages", st);
	}
	json_dumpf(out, stdout, JSON_COMPACT | JSON_REAL_PRECISION(12));
	fputc('\n', stdout);
	fflush(stdout);

	fprintf(stderr,
		"%-6s %-7s%s %ld x %zu cert%s: p50 %.1f us  p90 %.1f us  p99 %.1f us  "
		"max %.1f us  mean %.1f us  %.0f decisions/s%s\n",
		b.mode == MODE_X509 ? "x509" : "decide",
		b.mode == MODE_X509 ? "-" : cm_dialect_name(cfg->directory.dialect),
		b.reconnect ? " reconnect" : "", done, b.n_certs, b.n_certs == 1 ? "" : "s",
		percentile(&lat, 50), percentile(&lat, 90), percentile(&lat, 99), lat.v[lat.n - 1],
		mean(&lat), json_real_value(json_object_get(out, "decisions_per_s")),
		truncated ? "  (stopped by --duration-limit)" : "");
	for (size_t i = 0; b.mode == MODE_X509 && i < STAGE_COUNT; i++) {
		struct samples *s = &g.stages[i];

		fprintf(stderr, "    %-53s n=%-6zu p50 %.1f us  p99 %.1f us  mean %.1f us\n",
			stage_names[i], s->n, percentile(s, 50), percentile(s, 99), mean(s));
	}
	for (size_t i = 0; i < g.n_ops; i++) {
		struct samples *s = &g.ops[i].s;

		fprintf(stderr, "    ldap %-48s n=%-6zu p50 %.1f us  p99 %.1f us  mean %.1f us\n",
			g.ops[i].label, s->n, percentile(s, 50), percentile(s, 99), mean(s));
	}
	rc = 0;

cleanup:
	json_decref(out);
	free(lat.v);
	free(dir.v);
	for (size_t i = 0; i < g.n_ops; i++)
		free(g.ops[i].s.v);
	for (size_t i = 0; i < STAGE_COUNT; i++)
		free(g.stages[i].v);
	for (size_t i = 0; i < b.n_certs; i++)
		cm_der_list_free(&b.certs[i]);
	cm_trust_free(b.trust);
	cm_revstore_free(b.crls);
	cm_engine_free(b.engine);
	cm_config_free(cfg);
	return rc;
}
