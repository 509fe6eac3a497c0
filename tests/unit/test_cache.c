#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "certmap/cache.h"

static struct cm_verdict *verdict(enum cm_reason r)
{
	struct cm_decision d;
	struct cm_user u = {.dn = "CN=alice,CN=Users,DC=lab,DC=test",
			    .name = "alice",
			    .sam = "alice",
			    .upn = "alice@lab.test"};

	memset(&d, 0, sizeof(d));
	d.reason = r;
	d.status = cm_reason_status(r);
	d.substatus = cm_reason_substatus(r);
	d.method = CM_METHOD_USER_CERTIFICATE;
	d.user = r == CM_REASON_ALLOWED ? &u : NULL;
	return cm_verdict_from_decision(&d, "LAB");
}

static void key_of(const char *s, unsigned char key[CM_CACHE_KEY_BYTES])
{
	const unsigned char *der = (const unsigned char *)s;
	size_t len = strlen(s);

	cm_cache_key(&der, &len, 1, NULL, false, key);
}

struct waited {
	int calls;
	struct cm_verdict *v;
};

static void on_ready(void *arg, struct cm_verdict *v)
{
	struct waited *w = arg;

	w->calls++;
	w->v = v;
}

Test(cache, leader_then_hit)
{
	struct cm_cache *c = cm_cache_new(100, 300, 30);
	unsigned char k[CM_CACHE_KEY_BYTES];
	struct cm_verdict *out = NULL, *v = verdict(CM_REASON_ALLOWED);

	key_of("alice", k);
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	cm_cache_put(c, k, v, 0);
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, NULL), CM_CACHE_STATUS_HIT);
	cr_assert_eq(out, v);
	cr_assert_str_eq(out->logon_name, "LAB\\alice");
	cm_verdict_unref(out);
	cm_verdict_unref(v);
	cr_assert_eq(cm_cache_size(c), 1);
	cm_cache_free(c);
}

Test(cache, concurrent_first_requests_coalesce)
{
	struct cm_cache *c = cm_cache_new(100, 300, 30);
	unsigned char k[CM_CACHE_KEY_BYTES];
	struct cm_verdict *out = NULL, *v = verdict(CM_REASON_NOT_IN_GROUP);
	struct waited w[5] = {{0}};

	key_of("bob", k);
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(cm_cache_get(c, k, &out, on_ready, &w[i]), CM_CACHE_STATUS_WAITING);
	cm_cache_put(c, k, v, 0);
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(w[i].calls, 1);
		cr_assert_eq(w[i].v, v);
		cm_verdict_unref(w[i].v);
	}
	cm_verdict_unref(v);
	cm_cache_free(c);
}

Test(cache, directory_outage_is_not_cached_but_wakes_waiters)
{
	struct cm_cache *c = cm_cache_new(100, 300, 30);
	unsigned char k[CM_CACHE_KEY_BYTES];
	struct cm_verdict *out = NULL, *v = verdict(CM_REASON_DIRECTORY_UNAVAILABLE);
	struct waited w = {0};

	key_of("carol", k);
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, &w), CM_CACHE_STATUS_WAITING);
	cm_cache_put(c, k, v, 0);
	cr_assert_eq(w.calls, 1);
	cm_verdict_unref(w.v);
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	cm_cache_put(c, k, v, 0);
	cm_verdict_unref(v);
	cm_cache_free(c);
}

Test(cache, ttl_and_not_after)
{
	struct cm_cache *c = cm_cache_new(100, 300, 0);
	unsigned char k1[CM_CACHE_KEY_BYTES], k2[CM_CACHE_KEY_BYTES];
	struct cm_verdict *out = NULL, *deny = verdict(CM_REASON_NOT_MAPPED),
			  *allow = verdict(CM_REASON_ALLOWED);

	key_of("denied", k1);
	key_of("expiring", k2);
	/* negative_ttl_s 0: denials are not kept */
	cr_assert_eq(cm_cache_get(c, k1, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	cm_cache_put(c, k1, deny, 0);
	cr_assert_eq(cm_cache_get(c, k1, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	cm_cache_put(c, k1, deny, 0);
	/* a certificate already past notAfter is never kept */
	cr_assert_eq(cm_cache_get(c, k2, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	cm_cache_put(c, k2, allow, time(NULL) - 1);
	cr_assert_eq(cm_cache_get(c, k2, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	cm_cache_put(c, k2, allow, 0);
	cr_assert_eq(cm_cache_get(c, k2, &out, on_ready, NULL), CM_CACHE_STATUS_HIT);
	cm_verdict_unref(out);
	cm_verdict_unref(deny);
	cm_verdict_unref(allow);
	cm_cache_free(c);
}

Test(cache, bounded_by_max_entries)
{
	struct cm_cache *c = cm_cache_new(32, 300, 30);
	struct cm_verdict *out = NULL, *v = verdict(CM_REASON_ALLOWED);
	char name[32];
	unsigned char k[CM_CACHE_KEY_BYTES];

	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "cert-%d", i);
		key_of(name, k);
		cr_assert_eq(cm_cache_get(c, k, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
		cm_cache_put(c, k, v, 0);
	}
	cr_assert_leq(cm_cache_size(c), 32 + 16);
	/* the newest is still there */
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, NULL), CM_CACHE_STATUS_HIT);
	cm_verdict_unref(out);
	cm_verdict_unref(v);
	cm_cache_free(c);
}

Test(cache, keys_depend_on_chain_and_basic_user)
{
	const unsigned char *der[2] = {(const unsigned char *)"leaf", (const unsigned char *)"ca"};
	size_t len[2] = {4, 2};
	unsigned char a[32], b[32], c1[32], d[32], e[32];

	cm_cache_key(der, len, 1, NULL, false, a);
	cm_cache_key(der, len, 2, NULL, false, b);
	cm_cache_key(der, len, 1, "alice", true, c1);
	cm_cache_key(der, len, 1, "bob", true, d);
	cm_cache_key(der, len, 1, "alice", false, e);
	cr_assert_neq(memcmp(a, b, 32), 0);
	cr_assert_neq(memcmp(a, c1, 32), 0);
	cr_assert_neq(memcmp(c1, d, 32), 0);
	cr_assert_eq(memcmp(a, e, 32), 0, "basic user ignored when the policy does not use it");
}

Test(cache, free_with_pending_waiters_calls_them_with_null)
{
	struct cm_cache *c = cm_cache_new(10, 300, 30);
	unsigned char k[CM_CACHE_KEY_BYTES];
	struct cm_verdict *out = NULL;
	struct waited w = {0};

	key_of("x", k);
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, NULL), CM_CACHE_STATUS_LEADER);
	cr_assert_eq(cm_cache_get(c, k, &out, on_ready, &w), CM_CACHE_STATUS_WAITING);
	cm_cache_free(c);
	cr_assert_eq(w.calls, 1);
	cr_assert_null(w.v);
}
