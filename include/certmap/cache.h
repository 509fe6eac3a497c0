/*
 * cache — decision cache of certmapd (issue: "Decision cache").
 * Keyed by a 32-byte digest of what a decision depends on: the leaf's
 * SHA-256, the client-sent chain, and the Basic user when the policy looks
 * at it (see cm_cache_key()). Allowed verdicts live cache.ttl_s, denials
 * cache.negative_ttl_s, never past the certificate's notAfter;
 * directory_unavailable is never cached. Bounded by max_entries (LRU
 * eviction per shard). Concurrent first requests for one key coalesce: one
 * caller (the leader) computes, the others are called back when it is done.
 * Threading: all functions are thread-safe (sharded mutexes); callbacks run
 * on the thread that calls cm_cache_put().
 */
#ifndef CERTMAP_CACHE_H
#define CERTMAP_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "certmap/decision.h"
#include "certmap/engine.h"

#define CM_CACHE_KEY_BYTES 32
#define CM_CACHE_SHARDS 16

/* The part of a decision a request needs after the fact. Immutable,
 * reference-counted: a request may keep it after eviction. */
struct cm_verdict {
	atomic_int refs;
	enum cm_reason reason;
	int status;
	int substatus;
	enum cm_method method;
	char *detail;
	char *user_dn;
	char *user_name; /* sAMAccountName or uid */
	char *user_upn;
	char *logon_name; /* NETBIOS\sam (ad, netbios set) or the account name */
	char sha256[65];
	unsigned long rev_epoch; /* revocation data the decision saw */
};

struct cm_verdict *cm_verdict_from_decision(const struct cm_decision *d, const char *netbios);
struct cm_verdict *cm_verdict_ref(struct cm_verdict *v);
void cm_verdict_unref(struct cm_verdict *v);

struct cm_cache;

/* max_entries 0 disables caching (every lookup is a miss; no coalescing). */
struct cm_cache *cm_cache_new(size_t max_entries, int ttl_s, int negative_ttl_s);
/* Frees entries; pending waiters are called with NULL (no verdict). */
void cm_cache_free(struct cm_cache *cache);

/* Digest of leaf + chain + (basic user when use_basic). */
void cm_cache_key(const unsigned char *const *der, const size_t *len, size_t n,
		  const char *basic_user, bool use_basic, unsigned char key[CM_CACHE_KEY_BYTES]);

enum cm_cache_status {
	CM_CACHE_STATUS_HIT,     /* *out holds a new reference */
	CM_CACHE_STATUS_LEADER,  /* compute, then cm_cache_put() (always) */
	CM_CACHE_STATUS_WAITING, /* fn(arg, verdict) will be called once */
};

/* fn receives a new reference (or NULL when the cache is freed first). */
typedef void (*cm_cache_ready_fn)(void *arg, struct cm_verdict *v);

enum cm_cache_status cm_cache_get(struct cm_cache *cache,
				  const unsigned char key[CM_CACHE_KEY_BYTES],
				  struct cm_verdict **out, cm_cache_ready_fn fn, void *arg);
/* A ready, unexpired verdict for key (new reference), or NULL. No side
 * effects: a miss registers nothing. */
struct cm_verdict *cm_cache_peek(struct cm_cache *cache,
				 const unsigned char key[CM_CACHE_KEY_BYTES]);

/* Stores v (unless it must not be cached) and calls the waiters. not_after:
 * the leaf's notAfter (0 = unknown). Does not take the caller's reference. */
void cm_cache_put(struct cm_cache *cache, const unsigned char key[CM_CACHE_KEY_BYTES],
		  struct cm_verdict *v, time_t not_after);

size_t cm_cache_size(struct cm_cache *cache);

/* Verdicts whose rev_epoch differs from fn(arg) count as expired (the
 * revocation data changed since they were decided). fn must be thread-safe. */
void cm_cache_set_epoch(struct cm_cache *cache, unsigned long (*fn)(void *), void *arg);

#endif
