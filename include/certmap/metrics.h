/*
 * metrics — counters, gauges and histograms for /metrics (Prometheus text
 * exposition format 0.0.4). Lock-free updates (C11 atomics) from any thread;
 * rendering takes a consistent-enough snapshot.
 * Metric names (all prefixed certmap_):
 *   requests_total{status="403",substatus="16"}          counter
 *   decisions_total{reason="allowed",method="user_certificate"} counter
 *   cache_lookups_total{result="hit|miss|coalesced"}     counter
 *   directory_latency_seconds (histogram; buckets 1ms..10s)
 *   upstream_errors_total{reason="upstream_unavailable|upstream_timeout"} counter
 *   connections_open                                     gauge
 *   requests_held                                        gauge (in flight upstream)
 *   config_reloads_total{result="ok|failed"}             counter
 *   build_info{version="…"} 1                            gauge
 * Threading: any thread.
 */
#ifndef CERTMAP_METRICS_H
#define CERTMAP_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "certmap/decision.h"

struct cm_metrics;

struct cm_metrics *cm_metrics_new(void);
void cm_metrics_free(struct cm_metrics *m);

void cm_metrics_request(struct cm_metrics *m, int status, int substatus);
void cm_metrics_decision(struct cm_metrics *m, enum cm_reason reason, enum cm_method method);
enum cm_cache_result { CM_CACHE_HIT, CM_CACHE_MISS, CM_CACHE_COALESCED };
void cm_metrics_cache(struct cm_metrics *m, enum cm_cache_result r);
void cm_metrics_directory_latency(struct cm_metrics *m, double ms);
void cm_metrics_upstream_error(struct cm_metrics *m, enum cm_reason reason);
void cm_metrics_connections(struct cm_metrics *m, int delta);
void cm_metrics_held(struct cm_metrics *m, int delta);
void cm_metrics_reload(struct cm_metrics *m, bool ok);

/* Prometheus text; malloc'd, NUL-terminated. */
char *cm_metrics_render(struct cm_metrics *m);

/* A label value escaped per the text format (\\ \" \n) into out; exposed
 * for tests. Returns the length, or -1 if out is too small. */
int cm_metrics_escape_label(const char *value, char *out, size_t len);

#endif
