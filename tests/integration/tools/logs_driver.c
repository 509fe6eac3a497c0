/*
 * logs_driver — test driver for tests/integration/test_logs_consumers.py.
 * Reads one JSON spec on stdin, writes access-log (and optionally audit-log)
 * lines through cm_accesslog / cm_auditlog, applies the matching metrics
 * updates, closes the logs and prints cm_metrics_render() on stdout.
 * Spec:
 *   {"access_log": PATH, "audit_log": PATH?, "start": EPOCH_SECONDS,
 *    "entries": [{"count": N, "status": 403, "substatus": 16, "method": "POST",
 *                 "path": "/x", "query": "a=b"?, "user": "LAB\\alice"?,
 *                 "client_ip": "10.0.0.1", "user_agent": "…"?, "referer": "…"?,
 *                 "user_agent_hex": "ff41"? (raw bytes, e.g. invalid UTF-8, which
 *                 JSON cannot carry; overrides user_agent),
 *                 "time_taken_ms": 12, "directory_ms": 3.5?,
 *                 "reason": "untrusted"?, "map_method": "upn"?}, …],
 *    "connections": DELTA?, "held": DELTA?,
 *    "cache": {"hit": N, "miss": N, "coalesced": N}?,
 *    "upstream_errors": {"upstream_timeout": N, …}?, "reloads": {"ok": N, "failed": N}?}
 * Entry k (over all entries, counting repeats) is logged at start + k seconds.
 * Exit 0 ok, 2 bad spec or unopenable log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "certmap/accesslog.h"
#include "certmap/auditlog.h"
#include "certmap/metrics.h"

static const char *opt_str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key)); /* NULL when absent or null */
}

static long long opt_int(json_t *o, const char *key, long long dflt)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

/* Decodes hex into out (NUL-terminated); -1 on odd length, bad digit or overflow. */
static int unhex(const char *hex, char *out, size_t len)
{
	size_t n = 0;

	for (; hex[0] != '\0'; hex += 2) {
		unsigned int b;

		if (hex[1] == '\0' || n + 1 >= len || sscanf(hex, "%2x", &b) != 1)
			return -1;
		out[n++] = (char)b;
	}
	out[n] = '\0';
	return 0;
}

static int bad(const char *what)
{
	fprintf(stderr, "logs_driver: %s\n", what);
	return 2;
}

/* Applies one entry (count times). */
static int run_entry(json_t *en, time_t start, long long *k, struct cm_accesslog *al,
		     struct cm_auditlog *au, struct cm_metrics *m)
{
	struct cm_access_entry e = {0};
	struct cm_decision d = {0};
	const char *reason = opt_str(en, "reason"), *method = opt_str(en, "map_method");
	const char *ua_hex = opt_str(en, "user_agent_hex");
	json_t *dms = json_object_get(en, "directory_ms");
	long long count = opt_int(en, "count", 1);
	char ua[1024];

	e.s_ip = "192.0.2.1";
	e.s_port = 443;
	e.method = opt_str(en, "method");
	e.uri_stem = opt_str(en, "path");
	e.uri_query = opt_str(en, "query");
	e.username = opt_str(en, "user");
	e.c_ip = opt_str(en, "client_ip");
	e.user_agent = opt_str(en, "user_agent");
	e.referer = opt_str(en, "referer");
	if (ua_hex != NULL) {
		if (unhex(ua_hex, ua, sizeof(ua)) != 0 ||
		    memchr(ua, '\0', strlen(ua_hex) / 2) != NULL)
			return bad("bad user_agent_hex");
		e.user_agent = ua;
	}
	e.status = (int)opt_int(en, "status", 200);
	e.substatus = (int)opt_int(en, "substatus", 0);
	e.time_taken_ms = (uint64_t)opt_int(en, "time_taken_ms", 0);

	d.status = e.status;
	d.substatus = e.substatus;
	d.method = CM_METHOD_NONE;
	d.directory_ms = json_is_number(dms) ? json_number_value(dms) : 0.0;
	if (reason != NULL && cm_reason_from_name(reason, &d.reason) != 0)
		return bad("unknown reason");
	if (method != NULL && cm_method_from_name(method, &d.method) != 0)
		return bad("unknown map_method");

	for (long long i = 0; i < count; i++, (*k)++) {
		e.when.tv_sec = start + (time_t)*k;
		e.when.tv_nsec = 0;
		cm_accesslog_write(al, &e);
		cm_metrics_request(m, e.status, e.substatus);
		if (json_is_number(dms))
			cm_metrics_directory_latency(m, d.directory_ms);
		if (reason != NULL) {
			cm_metrics_decision(m, d.reason, d.method);
			if (au != NULL)
				cm_auditlog_write(au, &e.when, e.c_ip, "logs-driver", &d);
		}
	}
	return 0;
}

static void repeat(struct cm_metrics *m, json_t *o, const char *key,
		   void (*fn)(struct cm_metrics *, int), int arg)
{
	for (long long i = opt_int(o, key, 0); i > 0; i--)
		fn(m, arg);
}

static void cache_hit(struct cm_metrics *m, int r)
{
	cm_metrics_cache(m, (enum cm_cache_result)r);
}

static void upstream(struct cm_metrics *m, int r)
{
	cm_metrics_upstream_error(m, (enum cm_reason)r);
}

static void reload(struct cm_metrics *m, int ok)
{
	cm_metrics_reload(m, ok != 0);
}

int main(void)
{
	json_error_t je;
	json_t *spec = json_loadf(stdin, 0, &je), *entries, *en;
	struct cm_accesslog *al = NULL;
	struct cm_auditlog *au = NULL;
	struct cm_metrics *m = NULL;
	struct cm_err err = {{0}};
	const char *access_path, *audit_path;
	long long k = 0;
	size_t i;
	char *text;
	int rc = 2;

	if (spec == NULL) {
		fprintf(stderr, "logs_driver: stdin:%d: %s\n", je.line, je.text);
		return 2;
	}
	access_path = opt_str(spec, "access_log");
	audit_path = opt_str(spec, "audit_log");
	entries = json_object_get(spec, "entries");
	if (access_path == NULL || !json_is_array(entries)) {
		rc = bad("spec needs access_log and entries");
		goto cleanup;
	}
	if (cm_accesslog_open(access_path, &al, &err) != 0 ||
	    (audit_path != NULL && cm_auditlog_open(audit_path, &au, &err) != 0)) {
		fprintf(stderr, "logs_driver: %s\n", err.msg);
		goto cleanup;
	}
	m = cm_metrics_new();
	if (m == NULL)
		goto cleanup;
	json_array_foreach (entries, i, en) {
		if (run_entry(en, (time_t)opt_int(spec, "start", 1795341600), &k, al, au, m) != 0)
			goto cleanup;
	}
	cm_metrics_connections(m, (int)opt_int(spec, "connections", 0));
	cm_metrics_held(m, (int)opt_int(spec, "held", 0));
	repeat(m, json_object_get(spec, "cache"), "hit", cache_hit, CM_CACHE_HIT);
	repeat(m, json_object_get(spec, "cache"), "miss", cache_hit, CM_CACHE_MISS);
	repeat(m, json_object_get(spec, "cache"), "coalesced", cache_hit, CM_CACHE_COALESCED);
	repeat(m, json_object_get(spec, "upstream_errors"), "upstream_unavailable", upstream,
	       CM_REASON_UPSTREAM_UNAVAILABLE);
	repeat(m, json_object_get(spec, "upstream_errors"), "upstream_timeout", upstream,
	       CM_REASON_UPSTREAM_TIMEOUT);
	repeat(m, json_object_get(spec, "reloads"), "ok", reload, 1);
	repeat(m, json_object_get(spec, "reloads"), "failed", reload, 0);

	text = cm_metrics_render(m);
	if (text == NULL) {
		fprintf(stderr, "logs_driver: cannot render metrics\n");
		goto cleanup;
	}
	fputs(text, stdout);
	free(text);
	rc = 0;
cleanup:
	cm_accesslog_close(al);
	cm_auditlog_close(au);
	cm_metrics_free(m);
	json_decref(spec);
	return rc;
}
