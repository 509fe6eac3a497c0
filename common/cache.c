/*
 * cache — sharded LRU decision cache with request coalescing
 * (include/certmap/cache.h).
 * Each shard: a mutex, a chained hash table, an LRU list of ready entries.
 * A pending entry (leader computing) holds a list of waiters and is never
 * evicted; cm_cache_put() turns it ready (or drops it when the verdict must
 * not be cached) and calls the waiters outside the lock.
 * Expiry uses CLOCK_MONOTONIC; the certificate's notAfter caps it.
 */
#include "certmap/cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "certmap/util.h"

struct waiter {
	cm_cache_ready_fn fn;
	void *arg;
	struct waiter *next;
};

struct entry {
	unsigned char key[CM_CACHE_KEY_BYTES];
	struct cm_verdict *verdict; /* NULL while pending */
	double expires;             /* monotonic seconds */
	struct waiter *waiters;
	struct entry *hnext;               /* hash chain */
	struct entry *lru_prev, *lru_next; /* ready entries only */
};

struct shard {
	pthread_mutex_t lock;
	struct entry **buckets;
	size_t n_buckets; /* power of two */
	size_t n_ready;
	size_t max_ready;
	struct entry *lru_head, *lru_tail; /* head = most recent */
};

struct cm_cache {
	struct shard shards[CM_CACHE_SHARDS];
	size_t max_entries;
	int ttl_s;
	int negative_ttl_s;
	unsigned long (*epoch_fn)(void *); /* NULL: verdicts never go stale */
	void *epoch_arg;
};

static bool stale(const struct cm_cache *cache, const struct cm_verdict *v)
{
	return cache->epoch_fn != NULL && v->rev_epoch != cache->epoch_fn(cache->epoch_arg);
}

void cm_cache_set_epoch(struct cm_cache *cache, unsigned long (*fn)(void *), void *arg)
{
	cache->epoch_fn = fn;
	cache->epoch_arg = arg;
}

/* ---- verdicts ---- */

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

struct cm_verdict *cm_verdict_from_decision(const struct cm_decision *d, const char *netbios)
{
	struct cm_verdict *v = calloc(1, sizeof(*v));

	if (v == NULL)
		return NULL;
	atomic_init(&v->refs, 1);
	v->reason = d->reason;
	v->status = d->status;
	v->substatus = d->substatus;
	v->method = d->method;
	v->detail = dup_or_null(d->detail);
	v->rev_epoch = d->rev_epoch;
	if (d->has_cert)
		memcpy(v->sha256, d->cert.sha256, sizeof(v->sha256));
	if (d->user != NULL) {
		v->user_dn = dup_or_null(d->user->dn);
		v->user_name = dup_or_null(d->user->name);
		v->user_upn = dup_or_null(d->user->upn);
		if (d->user->sam != NULL && netbios != NULL)
			v->logon_name = cm_strdup_printf("%s\\%s", netbios, d->user->sam);
		else
			v->logon_name = dup_or_null(d->user->name);
	}
	return v;
}

struct cm_verdict *cm_verdict_ref(struct cm_verdict *v)
{
	if (v != NULL)
		atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
	return v;
}

void cm_verdict_unref(struct cm_verdict *v)
{
	if (v == NULL || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(v->detail);
	free(v->user_dn);
	free(v->user_name);
	free(v->user_upn);
	free(v->logon_name);
	free(v);
}

/* ---- keys ---- */

void cm_cache_key(const unsigned char *const *der, const size_t *len, size_t n,
		  const char *basic_user, bool use_basic, unsigned char key[CM_CACHE_KEY_BYTES])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char sep[9];
	unsigned int out_len = 0;

	/* Length-prefix every part so no two inputs hash alike. */
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		uint64_t l = len[i];

		sep[0] = 'C';
		memcpy(sep + 1, &l, sizeof(l));
		EVP_DigestUpdate(ctx, sep, sizeof(sep));
		EVP_DigestUpdate(ctx, der[i], len[i]);
	}
	if (use_basic) {
		uint64_t l = basic_user ? strlen(basic_user) : UINT64_MAX;

		sep[0] = 'B';
		memcpy(sep + 1, &l, sizeof(l));
		EVP_DigestUpdate(ctx, sep, sizeof(sep));
		if (basic_user)
			EVP_DigestUpdate(ctx, basic_user, strlen(basic_user));
	}
	if (EVP_DigestFinal_ex(ctx, key, &out_len) != 1 || out_len != CM_CACHE_KEY_BYTES)
		goto fail;
	EVP_MD_CTX_free(ctx);
	return;
fail:
	/* Cannot hash: an all-zero key would alias; make it unique instead. */
	EVP_MD_CTX_free(ctx);
	memset(key, 0, CM_CACHE_KEY_BYTES);
	memcpy(key, &ctx, sizeof(ctx) < CM_CACHE_KEY_BYTES ? sizeof(ctx) : CM_CACHE_KEY_BYTES);
}

/* ---- cache ---- */

static double mono_s(void)
{
	return cm_now_ms() / 1000.0;
}

static size_t round_pow2(size_t n)
{
	size_t p = 16;

	while (p < n && p < ((size_t)1 << 24))
		p <<= 1;
	return p;
}

struct cm_cache *cm_cache_new(size_t max_entries, int ttl_s, int negative_ttl_s)
{
	struct cm_cache *c = calloc(1, sizeof(*c));
	size_t per_shard = (max_entries + CM_CACHE_SHARDS - 1) / CM_CACHE_SHARDS;

	if (c == NULL)
		return NULL;
	c->max_entries = max_entries;
	c->ttl_s = ttl_s;
	c->negative_ttl_s = negative_ttl_s;
	for (int i = 0; i < CM_CACHE_SHARDS; i++) {
		struct shard *s = &c->shards[i];

		pthread_mutex_init(&s->lock, NULL);
		s->max_ready = per_shard;
		s->n_buckets = round_pow2(per_shard < 16 ? 16 : per_shard);
		s->buckets = calloc(s->n_buckets, sizeof(*s->buckets));
		if (s->buckets == NULL) {
			cm_cache_free(c);
			return NULL;
		}
	}
	return c;
}

static void call_waiters(struct waiter *w, struct cm_verdict *v)
{
	while (w != NULL) {
		struct waiter *next = w->next;

		w->fn(w->arg, cm_verdict_ref(v));
		free(w);
		w = next;
	}
}

void cm_cache_free(struct cm_cache *cache)
{
	if (cache == NULL)
		return;
	for (int i = 0; i < CM_CACHE_SHARDS; i++) {
		struct shard *s = &cache->shards[i];

		for (size_t b = 0; s->buckets != NULL && b < s->n_buckets; b++) {
			struct entry *e = s->buckets[b];

			while (e != NULL) {
				struct entry *next = e->hnext;

				call_waiters(e->waiters, NULL);
				cm_verdict_unref(e->verdict);
				free(e);
				e = next;
			}
		}
		free(s->buckets);
		pthread_mutex_destroy(&s->lock);
	}
	free(cache);
}

static struct shard *shard_of(struct cm_cache *c, const unsigned char *key, size_t *bucket)
{
	uint64_t h;
	struct shard *s;

	memcpy(&h, key, sizeof(h)); /* the key is a SHA-256: already uniform */
	s = &c->shards[key[31] % CM_CACHE_SHARDS];
	*bucket = (size_t)(h & (s->n_buckets - 1));
	return s;
}

static void lru_unlink(struct shard *s, struct entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		s->lru_head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		s->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(struct shard *s, struct entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = s->lru_head;
	if (s->lru_head)
		s->lru_head->lru_prev = e;
	s->lru_head = e;
	if (s->lru_tail == NULL)
		s->lru_tail = e;
}

static void hash_remove(struct shard *s, size_t bucket, struct entry *e)
{
	struct entry **pp = &s->buckets[bucket];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
}

/* Removes a ready entry; caller holds the lock. */
static void drop_ready(struct shard *s, struct entry *e, size_t bucket)
{
	hash_remove(s, bucket, e);
	lru_unlink(s, e);
	s->n_ready--;
	cm_verdict_unref(e->verdict);
	free(e);
}

enum cm_cache_status cm_cache_get(struct cm_cache *cache,
				  const unsigned char key[CM_CACHE_KEY_BYTES],
				  struct cm_verdict **out, cm_cache_ready_fn fn, void *arg)
{
	size_t bucket;
	struct shard *s;
	struct entry *e;
	double now = mono_s();

	*out = NULL;
	if (cache->max_entries == 0)
		return CM_CACHE_STATUS_LEADER;
	s = shard_of(cache, key, &bucket);
	pthread_mutex_lock(&s->lock);
	for (e = s->buckets[bucket]; e != NULL; e = e->hnext)
		if (memcmp(e->key, key, CM_CACHE_KEY_BYTES) == 0)
			break;
	if (e != NULL && e->verdict != NULL && (e->expires <= now || stale(cache, e->verdict))) {
		drop_ready(s, e, bucket);
		e = NULL;
	}
	if (e != NULL && e->verdict != NULL) {
		lru_unlink(s, e);
		lru_push_front(s, e);
		*out = cm_verdict_ref(e->verdict);
		pthread_mutex_unlock(&s->lock);
		return CM_CACHE_STATUS_HIT;
	}
	if (e != NULL) { /* pending: join the leader */
		struct waiter *w = malloc(sizeof(*w));

		if (w == NULL) {
			pthread_mutex_unlock(&s->lock);
			return CM_CACHE_STATUS_LEADER; /* compute on our own */
		}
		w->fn = fn;
		w->arg = arg;
		w->next = e->waiters;
		e->waiters = w;
		pthread_mutex_unlock(&s->lock);
		return CM_CACHE_STATUS_WAITING;
	}
	e = calloc(1, sizeof(*e));
	if (e != NULL) {
		memcpy(e->key, key, CM_CACHE_KEY_BYTES);
		e->hnext = s->buckets[bucket];
		s->buckets[bucket] = e;
	}
	pthread_mutex_unlock(&s->lock);
	return CM_CACHE_STATUS_LEADER;
}

struct cm_verdict *cm_cache_peek(struct cm_cache *cache,
				 const unsigned char key[CM_CACHE_KEY_BYTES])
{
	size_t bucket;
	struct shard *s;
	struct entry *e;
	struct cm_verdict *v = NULL;
	double now = mono_s();

	if (cache->max_entries == 0)
		return NULL;
	s = shard_of(cache, key, &bucket);
	pthread_mutex_lock(&s->lock);
	for (e = s->buckets[bucket]; e != NULL; e = e->hnext)
		if (memcmp(e->key, key, CM_CACHE_KEY_BYTES) == 0)
			break;
	if (e != NULL && e->verdict != NULL && e->expires > now && !stale(cache, e->verdict)) {
		lru_unlink(s, e);
		lru_push_front(s, e);
		v = cm_verdict_ref(e->verdict);
	}
	pthread_mutex_unlock(&s->lock);
	return v;
}

void cm_cache_put(struct cm_cache *cache, const unsigned char key[CM_CACHE_KEY_BYTES],
		  struct cm_verdict *v, time_t not_after)
{
	size_t bucket;
	struct shard *s;
	struct entry *e;
	struct waiter *waiters = NULL;
	double now = mono_s(), ttl;
	bool keep;

	if (cache->max_entries == 0)
		return;
	ttl = v != NULL && v->reason == CM_REASON_ALLOWED ? cache->ttl_s : cache->negative_ttl_s;
	if (not_after > 0) {
		double left = difftime(not_after, time(NULL));

		if (left < ttl)
			ttl = left;
	}
	keep = v != NULL && v->reason != CM_REASON_DIRECTORY_UNAVAILABLE && ttl > 0;
	s = shard_of(cache, key, &bucket);
	pthread_mutex_lock(&s->lock);
	for (e = s->buckets[bucket]; e != NULL; e = e->hnext)
		if (memcmp(e->key, key, CM_CACHE_KEY_BYTES) == 0)
			break;
	if (e != NULL && e->verdict == NULL) {
		waiters = e->waiters;
		e->waiters = NULL;
		if (keep) {
			e->verdict = cm_verdict_ref(v);
			e->expires = now + ttl;
			lru_push_front(s, e);
			s->n_ready++;
			while (s->n_ready > s->max_ready && s->lru_tail != NULL) {
				struct entry *old = s->lru_tail;
				size_t ob;

				(void)shard_of(cache, old->key, &ob);
				drop_ready(s, old, ob);
			}
		} else {
			hash_remove(s, bucket, e);
			free(e);
		}
	}
	pthread_mutex_unlock(&s->lock);
	call_waiters(waiters, v);
}

size_t cm_cache_size(struct cm_cache *cache)
{
	size_t n = 0;

	for (int i = 0; i < CM_CACHE_SHARDS; i++) {
		pthread_mutex_lock(&cache->shards[i].lock);
		n += cache->shards[i].n_ready;
		pthread_mutex_unlock(&cache->shards[i].lock);
	}
	return n;
}
