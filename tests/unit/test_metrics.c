#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certmap/metrics.h"

static void has(const char *text, const char *line)
{
	char *want = NULL;

	cr_assert(asprintf(&want, "\n%s\n", line) > 0);
	cr_assert(strstr(text, want) != NULL || strncmp(text, want + 1, strlen(want + 1)) == 0,
		  "missing line: %s\n--- in ---\n%s", line, text);
	free(want);
}

static void lacks(const char *text, const char *needle)
{
	cr_assert_null(strstr(text, needle), "unexpected %s in\n%s", needle, text);
}

/* Value of the sample line that starts with prefix followed by a space. */
static double value_of(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);

	for (const char *s = text; s != NULL && *s != '\0'; s = strchr(s, '\n'), s = s ? s + 1 : s)
		if (strncmp(s, prefix, n) == 0 && s[n] == ' ')
			return strtod(s + n + 1, NULL);
	cr_assert_fail("no sample %s in\n%s", prefix, text);
	return -1;
}

Test(metrics, counter_lines_exact)
{
	struct cm_metrics *m = cm_metrics_new();
	const char *head =
		"# HELP certmap_requests_total Requests answered, by IIS status and substatus.\n"
		"# TYPE certmap_requests_total counter\n"
		"certmap_requests_total{status=\"200\",substatus=\"0\"} 1\n"
		"certmap_requests_total{status=\"403\",substatus=\"16\"} 2\n"
		"# HELP certmap_decisions_total ";
	char *t;

	cr_assert_not_null(m);
	cm_metrics_request(m, 403, 16);
	cm_metrics_request(m, 200, 0);
	cm_metrics_request(m, 403, 16);
	cm_metrics_decision(m, CM_REASON_ALLOWED, CM_METHOD_USER_CERTIFICATE);
	cm_metrics_decision(m, CM_REASON_NO_CERTIFICATE, CM_METHOD_NONE);
	cm_metrics_cache(m, CM_CACHE_HIT);
	cm_metrics_upstream_error(m, CM_REASON_UPSTREAM_TIMEOUT);
	cm_metrics_upstream_error(m, CM_REASON_UNTRUSTED); /* not an upstream reason: ignored */
	cm_metrics_reload(m, true);
	cm_metrics_reload(m, false);
	cm_metrics_reload(m, false);
	t = cm_metrics_render(m);
	cr_assert_not_null(t);
	cr_assert(strncmp(t, head, strlen(head)) == 0, "%s", t);
	has(t, "# TYPE certmap_decisions_total counter");
	has(t, "certmap_decisions_total{reason=\"allowed\",method=\"user_certificate\"} 1");
	has(t, "certmap_decisions_total{reason=\"no_certificate\",method=\"none\"} 1");
	has(t, "# TYPE certmap_cache_lookups_total counter");
	has(t, "certmap_cache_lookups_total{result=\"hit\"} 1");
	has(t, "certmap_cache_lookups_total{result=\"miss\"} 0");
	has(t, "certmap_cache_lookups_total{result=\"coalesced\"} 0");
	has(t, "certmap_upstream_errors_total{reason=\"upstream_unavailable\"} 0");
	has(t, "certmap_upstream_errors_total{reason=\"upstream_timeout\"} 1");
	has(t, "certmap_config_reloads_total{result=\"ok\"} 1");
	has(t, "certmap_config_reloads_total{result=\"failed\"} 2");
	has(t, "# TYPE certmap_build_info gauge");
	has(t, "certmap_build_info{version=\"" CERTMAP_VERSION "\"} 1");
	lacks(t, "status=\"other\"");
	cr_assert_eq(t[strlen(t) - 1], '\n');
	free(t);
	cm_metrics_free(m);
}

Test(metrics, every_family_has_help_then_type)
{
	static const char *const fam[][2] = {
		{"requests_total", "counter"},
		{"decisions_total", "counter"},
		{"cache_lookups_total", "counter"},
		{"directory_latency_seconds", "histogram"},
		{"upstream_errors_total", "counter"},
		{"connections_open", "gauge"},
		{"requests_held", "gauge"},
		{"config_reloads_total", "counter"},
		{"build_info", "gauge"},
	};
	struct cm_metrics *m = cm_metrics_new();
	char *t = cm_metrics_render(m), *help, *type;

	for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
		char *h = NULL, *ty = NULL;

		cr_assert(asprintf(&h, "# HELP certmap_%s ", fam[i][0]) > 0);
		cr_assert(asprintf(&ty, "# TYPE certmap_%s %s\n", fam[i][0], fam[i][1]) > 0);
		help = strstr(t, h);
		type = strstr(t, ty);
		cr_assert_not_null(help, "%s", h);
		cr_assert_not_null(type, "%s", ty);
		cr_assert_eq(strchr(help, '\n') + 1, type, "TYPE follows HELP for %s", fam[i][0]);
		free(h);
		free(ty);
	}
	free(t);
	cm_metrics_free(m);
	cm_metrics_free(NULL);
	cr_assert_null(cm_metrics_render(NULL));
}

Test(metrics, histogram_buckets_are_cumulative)
{
	struct cm_metrics *m = cm_metrics_new();
	char *t;

	cm_metrics_directory_latency(m, 0.5); /* 0.0005 s */
	cm_metrics_directory_latency(m, 1.0); /* exactly le=0.001 */
	cm_metrics_directory_latency(m, 3.0);
	cm_metrics_directory_latency(m, 3.0);
	cm_metrics_directory_latency(m, 240.0); /* 0.24 s */
	cm_metrics_directory_latency(m, 20000); /* 20 s: +Inf only */
	t = cm_metrics_render(m);
	cr_assert(strstr(t, "# HELP certmap_directory_latency_seconds ") != NULL);
	cr_assert(strstr(t, "# TYPE certmap_directory_latency_seconds histogram\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.001\"} 2\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.0025\"} 2\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.005\"} 4\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.01\"} 4\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.025\"} 4\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.05\"} 4\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.1\"} 4\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.25\"} 5\n"
			    "certmap_directory_latency_seconds_bucket{le=\"0.5\"} 5\n"
			    "certmap_directory_latency_seconds_bucket{le=\"1\"} 5\n"
			    "certmap_directory_latency_seconds_bucket{le=\"2.5\"} 5\n"
			    "certmap_directory_latency_seconds_bucket{le=\"5\"} 5\n"
			    "certmap_directory_latency_seconds_bucket{le=\"10\"} 5\n"
			    "certmap_directory_latency_seconds_bucket{le=\"+Inf\"} 6\n"
			    "certmap_directory_latency_seconds_sum 20.2475\n"
			    "certmap_directory_latency_seconds_count 6\n") != NULL,
		  "%s", t);
	free(t);
	cm_metrics_free(m);
}

Test(metrics, label_escaping)
{
	char out[64];

	cr_assert_eq(cm_metrics_escape_label("plain", out, sizeof(out)), 5);
	cr_assert_str_eq(out, "plain");
	cr_assert_eq(cm_metrics_escape_label("a\\b\"c\nd", out, sizeof(out)), 10);
	cr_assert_str_eq(out, "a\\\\b\\\"c\\nd");
	cr_assert_eq(cm_metrics_escape_label("", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "");
	cr_assert_eq(cm_metrics_escape_label("tab\tstays", out, sizeof(out)), 9);
	cr_assert_eq(cm_metrics_escape_label("\"\"", out, 5), 4);
	cr_assert_eq(cm_metrics_escape_label("\"\"", out, 4), -1); /* no room for the NUL */
	cr_assert_eq(cm_metrics_escape_label("x", out, 0), -1);
}

Test(metrics, unexpected_statuses_go_to_other_and_the_table_stays_bounded)
{
	struct cm_metrics *m = cm_metrics_new();
	double sum = 0, other;
	size_t series = 0;
	char *t;

	for (int i = 0; i < 1000; i++)
		cm_metrics_request(m, 400 + i % 100, i / 100); /* 1000 distinct pairs */
	cm_metrics_request(m, -1, 0);
	cm_metrics_request(m, 1000, 0);
	cm_metrics_request(m, 200, -5);
	t = cm_metrics_render(m);
	for (const char *s = t; (s = strstr(s, "\ncertmap_requests_total{")) != NULL; s++) {
		sum += strtod(strchr(s, '}') + 2, NULL);
		series++;
	}
	other = value_of(t, "certmap_requests_total{status=\"other\",substatus=\"other\"}");
	cr_assert_eq(sum, 1003.0);
	cr_assert_leq(series, 65, "bounded table");
	cr_assert_gt(series, 16);
	cr_assert_eq(other, 1003.0 - (double)(series - 1), "each table series has exactly one");
	free(t);
	/* A pair already in the table still counts there once the table is full. */
	cm_metrics_request(m, 400, 0);
	t = cm_metrics_render(m);
	cr_assert_eq(value_of(t, "certmap_requests_total{status=\"400\",substatus=\"0\"}"), 2);
	cr_assert_eq(value_of(t, "certmap_requests_total{status=\"other\",substatus=\"other\"}"),
		     other);
	free(t);
	cm_metrics_free(m);
}

#define THREADS 4
#define PER_THREAD 100000

static void *hammer(void *arg)
{
	struct cm_metrics *m = arg;

	for (int i = 0; i < PER_THREAD; i++) {
		cm_metrics_request(m, 200, 0);
		cm_metrics_request(m, 401 + i % 3, i % 2); /* six pairs claimed concurrently */
		cm_metrics_decision(m, CM_REASON_ALLOWED, CM_METHOD_UPN);
		cm_metrics_cache(m, CM_CACHE_MISS);
		cm_metrics_directory_latency(m, 2.0);
		cm_metrics_connections(m, 1);
		cm_metrics_held(m, i % 2 ? -1 : 1);
	}
	return NULL;
}

Test(metrics, concurrent_increments_sum_exactly)
{
	struct cm_metrics *m = cm_metrics_new();
	pthread_t th[THREADS];
	const double total = (double)THREADS * PER_THREAD;
	double pairs = 0;
	char *t;

	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, hammer, m), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	t = cm_metrics_render(m);
	cr_assert_eq(value_of(t, "certmap_requests_total{status=\"200\",substatus=\"0\"}"), total);
	for (int st = 401; st <= 403; st++)
		for (int sub = 0; sub <= 1; sub++) {
			char *k = NULL;

			cr_assert(asprintf(&k,
					   "certmap_requests_total{status=\"%d\",substatus=\"%d\"}",
					   st, sub) > 0);
			pairs += value_of(t, k);
			free(k);
		}
	cr_assert_eq(pairs, total);
	lacks(t, "status=\"other\"");
	cr_assert_eq(value_of(t, "certmap_decisions_total{reason=\"allowed\",method=\"upn\"}"),
		     total);
	cr_assert_eq(value_of(t, "certmap_cache_lookups_total{result=\"miss\"}"), total);
	cr_assert_eq(value_of(t, "certmap_directory_latency_seconds_count"), total);
	cr_assert_eq(value_of(t, "certmap_directory_latency_seconds_bucket{le=\"0.0025\"}"), total);
	cr_assert_eq(value_of(t, "certmap_directory_latency_seconds_bucket{le=\"0.001\"}"), 0);
	cr_assert_float_eq(value_of(t, "certmap_directory_latency_seconds_sum"), total * 0.002,
			   1e-9);
	cr_assert_eq(value_of(t, "certmap_connections_open"), total);
	cr_assert_eq(value_of(t, "certmap_requests_held"), 0);
	free(t);
	cm_metrics_free(m);
}

Test(metrics, gauges_go_up_and_down)
{
	struct cm_metrics *m = cm_metrics_new();
	char *t;

	cm_metrics_connections(m, 3);
	cm_metrics_connections(m, -1);
	cm_metrics_held(m, -2);
	t = cm_metrics_render(m);
	has(t, "certmap_connections_open 2");
	has(t, "certmap_requests_held -2");
	free(t);
	cm_metrics_free(m);
}
