/*
 * revocation — the revocation store (include/certmap/revocation.h).
 *
 * Data:
 *   - crl items: one parsed, pre-sorted CRL each (immutable, refcounted; the
 *     verdict of its signature check is memoized per issuer key);
 *   - files: the configured CRL files with their stat identity and items;
 *   - cdp entries: one per fetched CDP/delta URL (current item, backoff,
 *     the issuer key that verified it, last use), at most CM_REV_MAX_CDP_CRLS;
 *   - ocsp entries: a hash table keyed by SHA-256(issuer name, issuer key,
 *     serial), at most CM_REV_MAX_OCSP_ANSWERS.
 * Locking: one mutex (rs->mu) guards the tables; no I/O and no signature
 * check runs under it. A fetch marks its entry `fetching`, drops the lock,
 * and broadcasts rs->cond when done; callers wanting the same URL wait for
 * it (bounded by timeout_ms + 1 s). Items are referenced while a check uses
 * them, so a reload never frees a CRL in use.
 * Evaluation of one certificate against CRLs (one source: the files, or one
 * distribution point with its delta): listed in a complete CRL and not
 * removed (removeFromCRL) by a delta built on it → revoked; listed in a
 * delta → revoked; a current complete CRL not listing it, plus — when a delta
 * is expected (Freshest CRL in the CRL, or in the certificate for CDPs) — a
 * current delta applicable to that CRL not listing it → good; else unknown.
 * All sources are asked; revoked from any wins, then good, then unknown.
 */
#include "certmap/revocation.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <ldap.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "certmap/directory.h"
#include "certmap/fetch.h"
#include "certmap/ocsp.h"

#define MAX_CRL_FILE_BYTES (256u * 1024u * 1024u)
#define OCSP_BUCKETS 4096u
#define MAX_URLS 8 /* URLs taken from one extension */

static const double latency_bounds[12] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					  0.1,   0.25,   0.5,   1.0,  2.5,   5.0};

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- CRL items ---- */

struct crl_item {
	atomic_int refs;
	X509_CRL *crl;
	char *source; /* "CRL file /x", "CDP http://…", "delta CRL http://…" */
	unsigned char sha256[32];
	bool delta;
	bool has_freshest;
	long number;      /* cRLNumber, -1 when absent or too large */
	long base_number; /* delta: BaseCRLNumber, else -1 */
	time_t this_update, next_update;
	size_t entries;
	char **freshest;    /* delta URLs named by the CRL (NULL-terminated) or NULL */
	pthread_mutex_t mu; /* guards the memo */
	EVP_PKEY *memo_key[2];
	bool memo_ok[2];
	int memo_next;
};

static void item_unref(struct crl_item *it)
{
	if (it == NULL || atomic_fetch_sub(&it->refs, 1) != 1)
		return;
	X509_CRL_free(it->crl);
	free(it->source);
	cm_strv_free(it->freshest);
	for (int i = 0; i < 2; i++)
		EVP_PKEY_free(it->memo_key[i]);
	pthread_mutex_destroy(&it->mu);
	free(it);
}

static struct crl_item *item_ref(struct crl_item *it)
{
	atomic_fetch_add(&it->refs, 1);
	return it;
}

static time_t asn1_time_t(const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return timegm(&tm);
}

static long asn1_int_long(const ASN1_INTEGER *a)
{
	long v;

	if (a == NULL || ASN1_INTEGER_get_int64((int64_t *)&v, a) != 1 || v < 0) {
		ERR_clear_error();
		return -1;
	}
	return v;
}

/* http:// and ldap:// URIs of fullName GeneralNames of dps, in order. */
static char **dp_urls(STACK_OF(DIST_POINT) *dps)
{
	char **v = calloc(MAX_URLS + 1, sizeof(*v));
	size_t n = 0;

	if (v == NULL)
		return NULL;
	for (int i = 0; dps != NULL && i < sk_DIST_POINT_num(dps) && n < MAX_URLS; i++) {
		DIST_POINT *dp = sk_DIST_POINT_value(dps, i);

		if (dp->distpoint == NULL || dp->distpoint->type != 0)
			continue;
		for (int j = 0;
		     j < sk_GENERAL_NAME_num(dp->distpoint->name.fullname) && n < MAX_URLS; j++) {
			GENERAL_NAME *gn = sk_GENERAL_NAME_value(dp->distpoint->name.fullname, j);
			const unsigned char *s;
			int len;

			if (gn->type != GEN_URI)
				continue;
			s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
			len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
			if (len <= 0 || len > 2048 || memchr(s, 0, (size_t)len) != NULL)
				continue;
			if (strncasecmp((const char *)s, "http://", 7) != 0 &&
			    strncasecmp((const char *)s, "ldap://", 7) != 0)
				continue;
			v[n] = strndup((const char *)s, (size_t)len);
			if (v[n] == NULL)
				break;
			n++;
		}
	}
	if (n == 0) {
		free(v);
		return NULL;
	}
	return v;
}

static char **ext_urls(X509 *x, X509_CRL *crl, int nid)
{
	STACK_OF(DIST_POINT) *dps = x != NULL ? X509_get_ext_d2i(x, nid, NULL, NULL)
					      : X509_CRL_get_ext_d2i(crl, nid, NULL, NULL);
	char **v = dp_urls(dps);

	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	ERR_clear_error();
	return v;
}

static struct crl_item *item_new(X509_CRL *crl, const char *source)
{
	struct crl_item *it = calloc(1, sizeof(*it));
	unsigned char *der = NULL;
	int len;
	ASN1_INTEGER *num;
	X509_REVOKED *dummy = NULL;
	ASN1_INTEGER *zero;
	int n_revoked;

	if (it == NULL)
		return NULL;
	atomic_init(&it->refs, 1);
	pthread_mutex_init(&it->mu, NULL);
	it->crl = crl;
	it->source = strdup(source);
	len = i2d_X509_CRL(crl, &der);
	if (it->source == NULL || len <= 0 ||
	    EVP_Digest(der, (size_t)len, it->sha256, NULL, EVP_sha256(), NULL) != 1) {
		OPENSSL_free(der);
		it->crl = NULL;
		item_unref(it);
		ERR_clear_error();
		return NULL;
	}
	OPENSSL_free(der);
	num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	it->number = asn1_int_long(num);
	ASN1_INTEGER_free(num);
	num = X509_CRL_get_ext_d2i(crl, NID_delta_crl, NULL, NULL);
	it->delta = num != NULL;
	it->base_number = asn1_int_long(num);
	ASN1_INTEGER_free(num);
	it->freshest = ext_urls(NULL, crl, NID_freshest_crl);
	it->has_freshest = X509_CRL_get_ext_by_NID(crl, NID_freshest_crl, -1) >= 0;
	it->this_update = asn1_time_t(X509_CRL_get0_lastUpdate(crl));
	it->next_update = asn1_time_t(X509_CRL_get0_nextUpdate(crl));
	n_revoked = sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)); /* -1 when none */
	it->entries = n_revoked > 0 ? (size_t)n_revoked : 0;
	/* OpenSSL sorts the entries on the first lookup (under the CRL's lock):
	 * do it now, not on a request. */
	zero = ASN1_INTEGER_new();
	if (zero != NULL)
		X509_CRL_get0_by_serial(crl, &dummy, zero);
	ASN1_INTEGER_free(zero);
	ERR_clear_error();
	return it;
}

/* Does the CRL's signature verify with key? Memoized per key. */
static bool item_verified(struct crl_item *it, EVP_PKEY *key)
{
	bool ok;

	if (key == NULL)
		return false;
	pthread_mutex_lock(&it->mu);
	for (int i = 0; i < 2; i++) {
		if (it->memo_key[i] != NULL && EVP_PKEY_eq(it->memo_key[i], key) == 1) {
			ok = it->memo_ok[i];
			pthread_mutex_unlock(&it->mu);
			return ok;
		}
	}
	pthread_mutex_unlock(&it->mu);
	ok = X509_CRL_verify(it->crl, key) == 1;
	ERR_clear_error();
	pthread_mutex_lock(&it->mu);
	if (EVP_PKEY_up_ref(key) == 1) {
		int i = it->memo_next;

		EVP_PKEY_free(it->memo_key[i]);
		it->memo_key[i] = key;
		it->memo_ok[i] = ok;
		it->memo_next = (i + 1) % 2;
	}
	pthread_mutex_unlock(&it->mu);
	return ok;
}

static bool item_current(const struct crl_item *it, time_t now)
{
	/* RFC 5280 requires nextUpdate; a CRL without one is never current */
	return it->this_update != 0 && it->next_update != 0 && it->this_update <= now &&
	       now < it->next_update;
}

/* Parses PEM (one or more CRLs) or DER. Returns the count, -1 with err. */
static int parse_crls(const unsigned char *data, size_t len, X509_CRL ***out, struct cm_err *err)
{
	X509_CRL **v = NULL, *crl;
	int n = 0;
	BIO *bio;

	*out = NULL;
	if (len > INT_MAX) {
		cm_err_set(err, "too large");
		return -1;
	}
	bio = BIO_new_mem_buf(data, (int)len);
	if (bio == NULL) {
		cm_err_set(err, "out of memory");
		return -1;
	}
	while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
		X509_CRL **nv = realloc(v, (size_t)(n + 1) * sizeof(*v));

		if (nv == NULL) {
			X509_CRL_free(crl);
			goto oom;
		}
		v = nv;
		v[n++] = crl;
	}
	BIO_free(bio);
	ERR_clear_error();
	if (n == 0) {
		const unsigned char *p = data;

		crl = d2i_X509_CRL(NULL, &p, (long)len);
		if (crl == NULL || p != data + len) {
			X509_CRL_free(crl);
			ERR_clear_error();
			cm_err_set(err, "not a CRL in PEM or DER form (%zu bytes)", len);
			return -1;
		}
		v = malloc(sizeof(*v));
		if (v == NULL) {
			X509_CRL_free(crl);
			cm_err_set(err, "out of memory");
			return -1;
		}
		v[n++] = crl;
	}
	*out = v;
	return n;
oom:
	for (int i = 0; i < n; i++)
		X509_CRL_free(v[i]);
	free(v);
	cm_err_set(err, "out of memory");
	return -1;
}

/* ---- the store ---- */

struct crl_file {
	char *path;
	struct stat st;
	bool have_st;
	struct crl_item **items;
	size_t n;
	char *error; /* the current content was refused */
};

struct cdp_entry {
	char *url;
	bool delta;
	struct crl_item *item; /* NULL until fetched */
	EVP_PKEY *issuer_key;  /* that verified item (for refreshes) */
	time_t failed_at;      /* 0 = last try succeeded */
	time_t attempt_at;     /* last fetch, successful or not (0 = never) */
	char *error;
	time_t last_used;
	bool fetching;
	int users; /* threads holding this entry across an unlock */
};

struct ocsp_entry {
	struct ocsp_entry *next;
	unsigned char key[32];
	bool fetching;
	bool have; /* answer valid */
	struct cm_ocsp_answer answer;
	time_t expires; /* keep until */
	time_t failed_at;
	char *error;
	char *url;
	int users; /* threads holding this entry across an unlock */
};

struct cm_revstore {
	const struct cm_config *cfg;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct crl_file *files;
	size_t n_files;
	struct cdp_entry *cdp[CM_REV_MAX_CDP_CRLS];
	size_t n_cdp;
	struct ocsp_entry **ocsp;
	size_t n_ocsp;
	atomic_ulong epoch;
	cm_rev_log_fn log;
	void *log_arg;
	/* stats (under mu) */
	unsigned long fail_crl, fail_ocsp, crl_loads;
	unsigned long lat_count[12], lat_total;
	double lat_sum;
	unsigned long checks[3];
	/* refresher thread */
	pthread_t thread;
	bool thread_running, stop;
	struct cm_dir *thread_dir;
};

static void rs_log(struct cm_revstore *rs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void rs_log(struct cm_revstore *rs, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (rs->log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	rs->log(rs->log_arg, line);
}

static void file_clear(struct crl_file *f)
{
	for (size_t i = 0; i < f->n; i++)
		item_unref(f->items[i]);
	free(f->items);
	f->items = NULL;
	f->n = 0;
	free(f->error);
	f->error = NULL;
}

/* Reads f->path into new items; 0 or -1 (err). */
static int file_read_items(const char *path, struct crl_item ***items, size_t *n,
			   struct cm_err *err)
{
	unsigned char *data = NULL;
	size_t len = 0;
	X509_CRL **crls = NULL;
	int nc;
	char *source;

	*items = NULL;
	*n = 0;
	if (cm_file_read(path, MAX_CRL_FILE_BYTES, &data, &len, err) != 0)
		return -1;
	nc = parse_crls(data, len, &crls, err);
	free(data);
	if (nc < 0) {
		struct cm_err sub = *err;

		cm_err_set(err, "%s: %s", path, sub.msg);
		return -1;
	}
	source = cm_strdup_printf("CRL file %s", path);
	*items = calloc((size_t)nc, sizeof(**items));
	if (source == NULL || *items == NULL) {
		free(source);
		free(*items);
		*items = NULL;
		for (int i = 0; i < nc; i++)
			X509_CRL_free(crls[i]);
		free(crls);
		cm_err_set(err, "out of memory");
		return -1;
	}
	for (int i = 0; i < nc; i++) {
		struct crl_item *it = item_new(crls[i], source);

		if (it == NULL) {
			X509_CRL_free(crls[i]);
			continue;
		}
		(*items)[(*n)++] = it;
	}
	free(source);
	free(crls);
	return 0;
}

static bool stat_changed(const struct crl_file *f, const struct stat *st)
{
	return !f->have_st || f->st.st_ino != st->st_ino || f->st.st_dev != st->st_dev ||
	       f->st.st_size != st->st_size || f->st.st_mtim.tv_sec != st->st_mtim.tv_sec ||
	       f->st.st_mtim.tv_nsec != st->st_mtim.tv_nsec ||
	       f->st.st_ctim.tv_sec != st->st_ctim.tv_sec ||
	       f->st.st_ctim.tv_nsec != st->st_ctim.tv_nsec;
}

int cm_revstore_new(const struct cm_config *cfg, struct cm_revstore **out, struct cm_err *err)
{
	struct cm_revstore *rs = calloc(1, sizeof(*rs));
	const struct cm_strlist *files = &cfg->client_certificates.revocation.crl_files;

	*out = NULL;
	if (rs == NULL || (rs->ocsp = calloc(OCSP_BUCKETS, sizeof(*rs->ocsp))) == NULL ||
	    (files->n > 0 && (rs->files = calloc(files->n, sizeof(*rs->files))) == NULL)) {
		free(rs != NULL ? rs->ocsp : NULL);
		free(rs);
		cm_err_set(err, "out of memory");
		return -1;
	}
	rs->cfg = cfg;
	pthread_mutex_init(&rs->mu, NULL);
	pthread_cond_init(&rs->cond, NULL);
	atomic_init(&rs->epoch, 1);
	cm_fetch_global_init();
	for (size_t i = 0; i < files->n; i++) {
		struct crl_file *f = &rs->files[i];

		rs->n_files++;
		f->path = strdup(files->v[i]);
		if (f->path == NULL) {
			cm_err_set(err, "out of memory");
			goto fail;
		}
		if (stat(f->path, &f->st) == 0)
			f->have_st = true;
		if (file_read_items(f->path, &f->items, &f->n, err) != 0)
			goto fail;
	}
	*out = rs;
	return 0;
fail:
	cm_revstore_free(rs);
	return -1;
}

static void cdp_entry_free(struct cdp_entry *e)
{
	item_unref(e->item);
	EVP_PKEY_free(e->issuer_key);
	free(e->url);
	free(e->error);
	free(e);
}

static void ocsp_entry_free(struct ocsp_entry *e)
{
	free(e->error);
	free(e->url);
	free(e);
}

void cm_revstore_free(struct cm_revstore *rs)
{
	if (rs == NULL)
		return;
	if (rs->thread_running) {
		pthread_mutex_lock(&rs->mu);
		rs->stop = true;
		pthread_cond_broadcast(&rs->cond);
		pthread_mutex_unlock(&rs->mu);
		pthread_join(rs->thread, NULL);
	}
	cm_dir_free(rs->thread_dir);
	for (size_t i = 0; i < rs->n_files; i++) {
		file_clear(&rs->files[i]);
		free(rs->files[i].path);
	}
	free(rs->files);
	for (size_t i = 0; i < rs->n_cdp; i++)
		cdp_entry_free(rs->cdp[i]);
	for (size_t b = 0; b < OCSP_BUCKETS; b++) {
		struct ocsp_entry *e = rs->ocsp[b], *next;

		for (; e != NULL; e = next) {
			next = e->next;
			ocsp_entry_free(e);
		}
	}
	free(rs->ocsp);
	pthread_cond_destroy(&rs->cond);
	pthread_mutex_destroy(&rs->mu);
	free(rs);
}

void cm_revstore_set_log(struct cm_revstore *rs, cm_rev_log_fn fn, void *arg)
{
	rs->log = fn;
	rs->log_arg = arg;
}

unsigned long cm_revstore_epoch(struct cm_revstore *rs)
{
	return atomic_load(&rs->epoch);
}

/* ---- fetching CRLs ---- */

/* One CRL from an ldap:// URL; 0 and *der or -1 (err). */
static int fetch_ldap(struct cm_revstore *rs, struct cm_dir *dir, const char *url, bool delta,
		      unsigned char **der, size_t *len, struct cm_err *err)
{
	LDAPURLDesc *lud = NULL;
	struct cm_dir *own = NULL;
	struct cm_dir_result res;
	const struct cm_dir_attr *a;
	char attr[128];
	const char *attrs[2] = {attr, NULL};
	struct cm_err sub = {{0}};
	enum cm_dir_status st;
	int rc = -1;

	*der = NULL;
	if (ldap_url_parse(url, &lud) != LDAP_URL_SUCCESS || lud->lud_dn == NULL ||
	    lud->lud_dn[0] == '\0') {
		cm_err_set(err, "not an LDAP URL with a DN");
		goto out;
	}
	snprintf(attr, sizeof(attr), "%s",
		 lud->lud_attrs != NULL && lud->lud_attrs[0] != NULL
			 ? lud->lud_attrs[0]
			 : (delta ? "deltaRevocationList" : "certificateRevocationList"));
	if (rs->cfg->directory.dialect == CM_DIALECT_RFC4523 && strchr(attr, ';') == NULL)
		strncat(attr, ";binary", sizeof(attr) - strlen(attr) - 1);
	if (lud->lud_host != NULL && lud->lud_host[0] != '\0') {
		/* a named host: same bind and TLS settings, that server only */
		struct cm_config *tmp = malloc(sizeof(*tmp));
		char *uri = cm_strdup_printf("%s://%s:%d", lud->lud_scheme, lud->lud_host,
					     lud->lud_port > 0 ? lud->lud_port : 389);
		char *uris[1] = {uri};

		if (tmp == NULL || uri == NULL) {
			free(tmp);
			free(uri);
			cm_err_set(err, "out of memory");
			goto out;
		}
		*tmp = *rs->cfg;
		tmp->directory.uris.v = uris;
		tmp->directory.uris.n = 1;
		if (cm_dir_open(tmp, &own, &sub) != 0) {
			free(tmp);
			free(uri);
			cm_err_set(err, "%s", sub.msg);
			goto out;
		}
		st = cm_dir_search(own, lud->lud_dn, CM_DIR_SCOPE_BASE, "(objectClass=*)", attrs, 1,
				   &res, NULL, &sub);
		cm_dir_free(own);
		free(tmp);
		free(uri);
	} else {
		if (dir == NULL) {
			cm_err_set(err, "no directory connection for a host-less ldap:/// URL");
			goto out;
		}
		st = cm_dir_search(dir, lud->lud_dn, CM_DIR_SCOPE_BASE, "(objectClass=*)", attrs, 1,
				   &res, NULL, &sub);
	}
	if (st == CM_DIR_NO_SUCH_OBJECT) {
		cm_err_set(err, "no such entry");
		goto free_res;
	}
	if (st != CM_DIR_OK) {
		cm_err_set(err, "%s", sub.msg[0] ? sub.msg : "directory unavailable");
		goto free_res;
	}
	a = res.n_entries == 1 ? cm_dir_entry_attr(&res.entries[0], attr) : NULL;
	if (a == NULL || a->n_values == 0 || a->values[0].len == 0) {
		cm_err_set(err, "no %s value", attr);
		goto free_res;
	}
	*der = malloc(a->values[0].len);
	if (*der == NULL) {
		cm_err_set(err, "out of memory");
		goto free_res;
	}
	memcpy(*der, a->values[0].data, a->values[0].len);
	*len = a->values[0].len;
	rc = 0;
free_res:
	cm_dir_result_free(&res);
out:
	if (lud != NULL)
		ldap_free_urldesc(lud);
	return rc;
}

/* Fetches url, parses and checks it against issuer; *out: a new item. */
static int fetch_crl(struct cm_revstore *rs, struct cm_dir *dir, const char *url, bool delta,
		     X509_NAME *issuer_name, EVP_PKEY *issuer_key, struct crl_item **out,
		     struct cm_err *err)
{
	int timeout = rs->cfg->client_certificates.revocation.cdp_timeout_ms;
	unsigned char *data = NULL;
	size_t len = 0;
	X509_CRL **crls = NULL;
	struct crl_item *it;
	struct cm_err sub = {{0}};
	char *source;
	int n;

	*out = NULL;
	if (strncasecmp(url, "ldap://", 7) == 0) {
		if (fetch_ldap(rs, dir, url, delta, &data, &len, &sub) != 0) {
			cm_err_set(err, "fetch failed: %s", sub.msg);
			return -1;
		}
	} else if (cm_fetch_get(url, timeout, CM_REV_MAX_CRL_BYTES, &data, &len, &sub) != 0) {
		cm_err_set(err, "fetch failed: %s", sub.msg);
		return -1;
	}
	n = parse_crls(data, len, &crls, &sub);
	free(data);
	if (n < 0) {
		cm_err_set(err, "refused: %s", sub.msg);
		return -1;
	}
	for (int i = 1; i < n; i++)
		X509_CRL_free(crls[i]);
	if (X509_NAME_cmp(X509_CRL_get_issuer(crls[0]), issuer_name) != 0) {
		X509_CRL_free(crls[0]);
		free(crls);
		cm_err_set(err, "refused: the CRL's issuer is not the certificate's issuer");
		return -1;
	}
	source = cm_strdup_printf("%s %s", delta ? "delta CRL" : "CDP", url);
	it = source != NULL ? item_new(crls[0], source) : NULL;
	free(source);
	free(crls);
	if (it == NULL) {
		cm_err_set(err, "out of memory");
		return -1;
	}
	if (!item_verified(it, issuer_key)) {
		item_unref(it);
		cm_err_set(err,
			   "refused: the CRL's signature does not verify with the issuer's key");
		return -1;
	}
	if (it->delta != delta) {
		item_unref(it);
		cm_err_set(err, delta ? "refused: not a delta CRL"
				      : "refused: a delta CRL where a complete CRL was expected");
		return -1;
	}
	*out = it;
	return 0;
}

static struct cdp_entry *cdp_find(struct cm_revstore *rs, const char *url)
{
	for (size_t i = 0; i < rs->n_cdp; i++)
		if (strcmp(rs->cdp[i]->url, url) == 0)
			return rs->cdp[i];
	return NULL;
}

static struct cdp_entry *cdp_add(struct cm_revstore *rs, const char *url, bool delta, time_t now)
{
	struct cdp_entry *e;

	if (rs->n_cdp == CM_REV_MAX_CDP_CRLS) {
		/* drop the least recently used idle entry */
		size_t victim = SIZE_MAX;

		for (size_t i = 0; i < rs->n_cdp; i++)
			if (!rs->cdp[i]->fetching && rs->cdp[i]->users == 0 &&
			    (victim == SIZE_MAX ||
			     rs->cdp[i]->last_used < rs->cdp[victim]->last_used))
				victim = i;
		if (victim == SIZE_MAX)
			return NULL;
		cdp_entry_free(rs->cdp[victim]);
		rs->cdp[victim] = rs->cdp[--rs->n_cdp];
	}
	e = calloc(1, sizeof(*e));
	if (e == NULL || (e->url = strdup(url)) == NULL) {
		free(e);
		return NULL;
	}
	e->delta = delta;
	e->last_used = now;
	rs->cdp[rs->n_cdp++] = e;
	return e;
}

/* Stores a fetch result in e (under mu). */
static void cdp_store(struct cm_revstore *rs, struct cdp_entry *e, struct crl_item *it,
		      EVP_PKEY *key, const char *error, time_t now)
{
	e->fetching = false;
	e->attempt_at = now;
	if (it != NULL) {
		/* A first CRL for a URL that failed before may change decisions
		 * made (soft) without it; a first CRL for a new URL cannot: every
		 * decision that needed it waited for this fetch. */
		bool changed = e->item != NULL ? memcmp(e->item->sha256, it->sha256, 32) != 0
					       : e->failed_at != 0;
		bool fresh = e->item == NULL || memcmp(e->item->sha256, it->sha256, 32) != 0;

		item_unref(e->item);
		e->item = it;
		if (e->issuer_key != key && EVP_PKEY_up_ref(key) == 1) {
			EVP_PKEY_free(e->issuer_key);
			e->issuer_key = key;
		}
		e->failed_at = 0;
		free(e->error);
		e->error = NULL;
		if (fresh)
			rs->crl_loads++;
		if (changed)
			atomic_fetch_add(&rs->epoch, 1);
	} else {
		e->failed_at = now;
		free(e->error);
		e->error = strdup(error);
		rs->fail_crl++;
	}
	pthread_cond_broadcast(&rs->cond);
}

static void wait_until(struct cm_revstore *rs, bool *flag, int timeout_ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000 + 1;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (*flag && !rs->stop)
		if (pthread_cond_timedwait(&rs->cond, &rs->mu, &ts) == ETIMEDOUT)
			break;
}

/* Seconds between two fetches of one URL: CM_REV_RETRY_S after a failure;
 * after a success a tenth of the CRL's validity, within [1, CM_REV_RETRY_S]
 * (a CDP that keeps serving a stale CRL is not hammered). */
static bool may_fetch(const struct cdp_entry *e, time_t now)
{
	time_t gap = CM_REV_RETRY_S;

	if (e->attempt_at == 0)
		return true;
	if (e->failed_at == 0 && e->item != NULL && e->item->next_update > e->item->this_update) {
		gap = (e->item->next_update - e->item->this_update) / 10;
		gap = gap < 1 ? 1 : gap > CM_REV_RETRY_S ? CM_REV_RETRY_S : gap;
	}
	return now - e->attempt_at >= gap;
}

/* The CRL of one URL: cached, or fetched now when absent or stale and not
 * in backoff. Returns a reference or NULL; *why says why (trace). */
static struct crl_item *cdp_get(struct cm_revstore *rs, struct cm_dir *dir, const char *url,
				bool delta, X509 *issuer, time_t now, char *why, size_t why_len)
{
	int timeout = rs->cfg->client_certificates.revocation.cdp_timeout_ms;
	EVP_PKEY *key = X509_get0_pubkey(issuer);
	struct cdp_entry *e;
	struct crl_item *it = NULL;
	struct cm_err err = {{0}};

	why[0] = '\0';
	pthread_mutex_lock(&rs->mu);
	e = cdp_find(rs, url);
	if (e == NULL)
		e = cdp_add(rs, url, delta, now);
	if (e == NULL) {
		pthread_mutex_unlock(&rs->mu);
		snprintf(why, why_len, "cache full");
		return NULL;
	}
	e->last_used = now;
	if (e->fetching) {
		e->users++;
		wait_until(rs, &e->fetching, timeout);
		e->users--;
	} else if ((e->item == NULL || !item_current(e->item, now)) && may_fetch(e, now)) {
		e->fetching = true;
		pthread_mutex_unlock(&rs->mu);
		if (fetch_crl(rs, dir, url, delta, X509_get_subject_name(issuer), key, &it, &err) !=
		    0)
			rs_log(rs, "revocation: %s %s: %s", delta ? "delta CRL" : "CDP", url,
			       err.msg);
		pthread_mutex_lock(&rs->mu);
		cdp_store(rs, e, it, key, err.msg, now);
		it = NULL;
	}
	if (e->item != NULL &&
	    X509_NAME_cmp(X509_CRL_get_issuer(e->item->crl), X509_get_subject_name(issuer)) == 0)
		it = item_ref(e->item);
	if (e->fetching)
		snprintf(why, why_len, "fetch in progress, timed out waiting");
	else if (e->error != NULL && e->failed_at != 0)
		snprintf(why, why_len, "%s%s", e->error,
			 now - e->failed_at > 0 ? " (not retried for 30 s)" : "");
	pthread_mutex_unlock(&rs->mu);
	if (it != NULL && !item_verified(it, key)) {
		item_unref(it);
		snprintf(why, why_len,
			 "refused: the CRL's signature does not verify with the issuer's key");
		return NULL;
	}
	return it;
}

/* ---- evaluation ---- */

enum cert_status { STATUS_UNKNOWN, STATUS_GOOD, STATUS_REVOKED };

/* 0 not listed, 1 listed, 2 listed as removeFromCRL */
static int listed(struct crl_item *it, X509 *x)
{
	X509_REVOKED *entry = NULL;
	int r = X509_CRL_get0_by_cert(it->crl, &entry, x);

	return r == 1 || r == 2 ? r : 0;
}

/* ISO 8601 UTC of t, or "" for 0. */
static void fmt_time(time_t t, char out[21])
{
	struct tm tm;

	out[0] = '\0';
	if (t != 0 && gmtime_r(&t, &tm) != NULL)
		strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void trace_item(struct cm_trace *trace, int depth, struct crl_item *it, const char *what,
		       time_t now)
{
	char next[21];

	fmt_time(it->next_update, next);
	cm_trace_add(trace, "revocation: depth %d: %s: %s (%s%s, %zu entries, nextUpdate %s)",
		     depth, it->source, what, it->delta ? "delta CRL, " : "",
		     item_current(it, now) ? "current" : "stale", it->entries,
		     next[0] ? next : "none");
}

/* Evaluates x against items (bases and deltas, already verified). */
static enum cert_status eval_items(struct crl_item **items, size_t n, X509 *x, bool delta_expected,
				   int depth, time_t now, struct cm_trace *trace, char *src,
				   size_t src_len)
{
	bool good = false;

	for (size_t i = 0; i < n; i++) {
		struct crl_item *b = items[i];
		int l = listed(b, x);

		if (b->delta) {
			trace_item(trace, depth, b,
				   l == 1   ? "revoked"
				   : l == 2 ? "removed from CRL"
					    : "not listed",
				   now);
			if (l == 1) {
				snprintf(src, src_len, "%s", b->source);
				return STATUS_REVOKED;
			}
			continue;
		}
		if (l == 1) {
			bool removed = false;

			for (size_t j = 0; j < n; j++) {
				struct crl_item *d = items[j];

				if (d->delta && d->base_number <= b->number &&
				    b->number < d->number && listed(d, x) == 2)
					removed = true;
			}
			trace_item(trace, depth, b,
				   removed ? "revoked, removed by a delta CRL" : "revoked", now);
			if (!removed) {
				snprintf(src, src_len, "%s", b->source);
				return STATUS_REVOKED;
			}
		} else {
			trace_item(trace, depth, b, "not listed", now);
		}
		if (!item_current(b, now) || good)
			continue;
		if (!delta_expected && !b->has_freshest) {
			good = true;
			snprintf(src, src_len, "%s", b->source);
			continue;
		}
		for (size_t j = 0; j < n; j++) {
			struct crl_item *d = items[j];

			if (d->delta && item_current(d, now) && d->base_number <= b->number &&
			    b->number < d->number) {
				good = true;
				snprintf(src, src_len, "%s + %s", b->source, d->source);
			}
		}
		if (!good)
			cm_trace_add(
				trace,
				"revocation: depth %d: %s names a delta CRL; no current delta for CRL number %ld",
				depth, b->source, b->number);
	}
	return good ? STATUS_GOOD : STATUS_UNKNOWN;
}

static enum cert_status check_files(struct cm_revstore *rs, X509 *x, X509 *issuer, int depth,
				    time_t now, struct cm_trace *trace, char *src, size_t src_len,
				    char *fail, size_t fail_len)
{
	struct crl_item *items[64];
	size_t n = 0;
	EVP_PKEY *key = X509_get0_pubkey(issuer);
	enum cert_status st;

	pthread_mutex_lock(&rs->mu);
	for (size_t i = 0; i < rs->n_files; i++) {
		struct crl_file *f = &rs->files[i];

		if (f->error != NULL) {
			cm_trace_add(trace, "revocation: depth %d: CRL file %s: refused: %s", depth,
				     f->path, f->error);
			if (fail[0] == '\0')
				snprintf(fail, fail_len, "CRL file %s", f->path);
		}
		for (size_t j = 0; j < f->n && n < 64; j++)
			if (X509_NAME_cmp(X509_CRL_get_issuer(f->items[j]->crl),
					  X509_get_issuer_name(x)) == 0)
				items[n++] = item_ref(f->items[j]);
	}
	pthread_mutex_unlock(&rs->mu);
	for (size_t i = 0; i < n;) {
		if (!item_verified(items[i], key)) {
			cm_trace_add(
				trace,
				"revocation: depth %d: %s: signature does not verify with the issuer's key, ignored",
				depth, items[i]->source);
			item_unref(items[i]);
			items[i] = items[--n];
			continue;
		}
		i++;
	}
	if (n == 0) {
		cm_trace_add(trace,
			     "revocation: depth %d: no CRL file from this certificate's issuer",
			     depth);
		return STATUS_UNKNOWN;
	}
	st = eval_items(items, n, x, false, depth, now, trace, src, src_len);
	if (st == STATUS_UNKNOWN && fail[0] == '\0')
		snprintf(fail, fail_len, "%s", items[0]->source);
	for (size_t i = 0; i < n; i++)
		item_unref(items[i]);
	return st;
}

/* One CRL (base or delta) from the first URL of urls that yields one. */
static struct crl_item *first_of(struct cm_revstore *rs, struct cm_dir *dir, char **urls,
				 bool delta, X509 *issuer, int depth, time_t now,
				 struct cm_trace *trace, char *fail, size_t fail_len)
{
	char why[600];

	for (size_t i = 0; urls != NULL && urls[i] != NULL; i++) {
		struct crl_item *it =
			cdp_get(rs, dir, urls[i], delta, issuer, now, why, sizeof(why));

		if (it != NULL) {
			if (why[0] != '\0')
				cm_trace_add(
					trace,
					"revocation: depth %d: %s %s: %s; using the copy fetched before",
					depth, delta ? "delta CRL" : "CDP", urls[i], why);
			return it;
		}
		cm_trace_add(trace, "revocation: depth %d: %s %s: %s", depth,
			     delta ? "delta CRL" : "CDP", urls[i], why[0] ? why : "no CRL");
		if (fail[0] == '\0')
			snprintf(fail, fail_len, "%s %s (%s)", delta ? "delta CRL" : "CDP", urls[i],
				 why[0] ? why : "no CRL");
	}
	return NULL;
}

static enum cert_status check_cdp(struct cm_revstore *rs, struct cm_dir *dir, X509 *x, X509 *issuer,
				  int depth, time_t now, struct cm_trace *trace, char *src,
				  size_t src_len, char *fail, size_t fail_len)
{
	char **urls = ext_urls(x, NULL, NID_crl_distribution_points);
	char **durls = ext_urls(x, NULL, NID_freshest_crl);
	struct crl_item *items[2];
	size_t n = 0;
	enum cert_status st;
	bool delta_expected;

	if (urls == NULL) {
		cm_trace_add(trace,
			     "revocation: depth %d: no http:// or ldap:// CRL distribution point",
			     depth);
		cm_strv_free(durls);
		return STATUS_UNKNOWN;
	}
	items[0] = first_of(rs, dir, urls, false, issuer, depth, now, trace, fail, fail_len);
	if (items[0] == NULL) {
		cm_strv_free(urls);
		cm_strv_free(durls);
		return STATUS_UNKNOWN;
	}
	n = 1;
	delta_expected = durls != NULL || items[0]->freshest != NULL || items[0]->has_freshest;
	if (durls == NULL && items[0]->freshest != NULL) {
		durls = calloc(MAX_URLS + 1, sizeof(*durls));
		for (size_t i = 0; durls != NULL && items[0]->freshest[i] != NULL; i++)
			durls[i] = strdup(items[0]->freshest[i]);
	}
	if (durls != NULL) {
		items[1] =
			first_of(rs, dir, durls, true, issuer, depth, now, trace, fail, fail_len);
		if (items[1] != NULL)
			n = 2;
	}
	st = eval_items(items, n, x, delta_expected, depth, now, trace, src, src_len);
	if (st == STATUS_UNKNOWN && fail[0] == '\0')
		snprintf(fail, fail_len, "%s", items[0]->source);
	for (size_t i = 0; i < n; i++)
		item_unref(items[i]);
	cm_strv_free(urls);
	cm_strv_free(durls);
	return st;
}

/* ---- OCSP ---- */

static void ocsp_key(X509 *x, X509 *issuer, unsigned char key[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	const ASN1_BIT_STRING *pk = X509_get0_pubkey_bitstr(issuer);
	const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
	unsigned char *name = NULL;
	int name_len = i2d_X509_NAME(X509_get_subject_name(issuer), &name);

	memset(key, 0, 32);
	if (md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
		if (name_len > 0)
			EVP_DigestUpdate(md, name, (size_t)name_len);
		if (pk != NULL)
			EVP_DigestUpdate(md, ASN1_STRING_get0_data(pk),
					 (size_t)ASN1_STRING_length(pk));
		EVP_DigestUpdate(md, ASN1_STRING_get0_data(serial),
				 (size_t)ASN1_STRING_length(serial));
		EVP_DigestFinal_ex(md, key, NULL);
	}
	EVP_MD_CTX_free(md);
	OPENSSL_free(name);
	ERR_clear_error();
}

static struct ocsp_entry **ocsp_slot(struct cm_revstore *rs, const unsigned char key[32])
{
	size_t b = ((size_t)key[0] << 8 | key[1]) % OCSP_BUCKETS;
	struct ocsp_entry **p = &rs->ocsp[b];

	while (*p != NULL && memcmp((*p)->key, key, 32) != 0)
		p = &(*p)->next;
	return p;
}

/* Makes room: drops expired idle answers; if none, the first idle one. */
static void ocsp_evict(struct cm_revstore *rs, time_t now)
{
	for (int pass = 0; pass < 2 && rs->n_ocsp >= CM_REV_MAX_OCSP_ANSWERS; pass++) {
		for (size_t b = 0; b < OCSP_BUCKETS && rs->n_ocsp >= CM_REV_MAX_OCSP_ANSWERS; b++) {
			struct ocsp_entry **p = &rs->ocsp[b];

			while (*p != NULL) {
				struct ocsp_entry *e = *p;

				if (!e->fetching && e->users == 0 &&
				    (pass == 1 || e->expires <= now)) {
					*p = e->next;
					ocsp_entry_free(e);
					rs->n_ocsp--;
					if (pass == 1)
						break;
				} else {
					p = &e->next;
				}
			}
		}
	}
}

static enum cert_status ocsp_status(const struct cm_ocsp_answer *a)
{
	return a->status == CM_OCSP_GOOD      ? STATUS_GOOD
	       : a->status == CM_OCSP_REVOKED ? STATUS_REVOKED
					      : STATUS_UNKNOWN;
}

static void ocsp_record_latency(struct cm_revstore *rs, double s)
{
	for (int i = 0; i < 12; i++)
		if (s <= latency_bounds[i])
			rs->lat_count[i]++;
	rs->lat_total++;
	rs->lat_sum += s;
}

static enum cert_status check_ocsp(struct cm_revstore *rs, const struct cm_trust *trust,
				   STACK_OF(X509) *path, X509 *x, X509 *issuer, int depth,
				   time_t now, struct cm_trace *trace, char *src, size_t src_len,
				   char *fail, size_t fail_len)
{
	const char *configured = rs->cfg->client_certificates.revocation.ocsp_responder;
	int timeout = rs->cfg->client_certificates.revocation.ocsp_timeout_ms;
	char **urls = cm_ocsp_aia_urls(x);
	const char *url = NULL;
	unsigned char key[32];
	struct ocsp_entry *e, **slot;
	struct cm_ocsp_answer ans;
	enum cert_status st = STATUS_UNKNOWN;
	char tu[21], nu[21];
	bool fetched = false;
	double ms = 0;

	for (size_t i = 0; urls != NULL && urls[i] != NULL; i++)
		if (strncasecmp(urls[i], "http://", 7) == 0) {
			url = urls[i];
			break;
		}
	if (url == NULL)
		url = configured;
	if (url == NULL) {
		cm_trace_add(
			trace,
			"revocation: depth %d: OCSP: no responder (no AIA OCSP URL, no ocsp_responder)",
			depth);
		cm_strv_free(urls);
		return STATUS_UNKNOWN;
	}
	ocsp_key(x, issuer, key);
	pthread_mutex_lock(&rs->mu);
	slot = ocsp_slot(rs, key);
	e = *slot;
	if (e == NULL) {
		ocsp_evict(rs, now);
		slot = ocsp_slot(rs, key);
		e = calloc(1, sizeof(*e));
		if (e != NULL) {
			memcpy(e->key, key, 32);
			*slot = e;
			rs->n_ocsp++;
		}
	}
	if (e == NULL) {
		pthread_mutex_unlock(&rs->mu);
		cm_strv_free(urls);
		return STATUS_UNKNOWN;
	}
	if (e->fetching) {
		e->users++;
		wait_until(rs, &e->fetching, timeout);
		e->users--;
	}
	if (!e->fetching && !(e->have && now < e->expires) &&
	    (e->failed_at == 0 || now - e->failed_at >= CM_REV_RETRY_S)) {
		unsigned char *req = NULL, *resp = NULL;
		size_t req_len = 0, resp_len = 0;
		struct cm_err err = {{0}};
		STACK_OF(X509) *untrusted = sk_X509_new_null();
		double t0 = mono_s();
		int rc = -1;
		const char *stage = "fetch failed";

		e->fetching = true;
		pthread_mutex_unlock(&rs->mu);
		for (int i = 0; untrusted != NULL && i < sk_X509_num(path); i++)
			sk_X509_push(untrusted, sk_X509_value(path, i));
		if (cm_ocsp_request(x, issuer, &req, &req_len, &err) == 0 &&
		    cm_fetch_post(url, "application/ocsp-request", req, req_len, timeout,
				  CM_REV_MAX_OCSP_BYTES, &resp, &resp_len, &err) == 0) {
			stage = "refused";
			rc = cm_ocsp_check(resp, resp_len, x, issuer, cm_trust_store(trust),
					   untrusted, now, &ans, &err);
		}
		ms = (mono_s() - t0) * 1000.0;
		sk_X509_free(untrusted);
		free(req);
		free(resp);
		if (rc != 0)
			rs_log(rs, "revocation: OCSP %s: %s: %s", url, stage, err.msg);
		pthread_mutex_lock(&rs->mu);
		e->fetching = false;
		free(e->url);
		e->url = strdup(url);
		if (rc == 0) {
			time_t keep = ans.next_update != 0 ? ans.next_update
							   : now + CM_REV_OCSP_MAX_AGE_S;

			if (ans.next_update == 0 && keep > ans.this_update + CM_REV_OCSP_MAX_AGE_S)
				keep = ans.this_update + CM_REV_OCSP_MAX_AGE_S;
			e->answer = ans;
			e->have = true;
			e->expires = keep;
			e->failed_at = 0;
			free(e->error);
			e->error = NULL;
			ocsp_record_latency(rs, ms / 1000.0);
			fetched = true;
		} else {
			e->have = false;
			e->failed_at = now;
			free(e->error);
			e->error = cm_strdup_printf("%s: %s", stage, err.msg);
			rs->fail_ocsp++;
		}
		pthread_cond_broadcast(&rs->cond);
	}
	if (e->have && now < e->expires) {
		ans = e->answer;
		st = ocsp_status(&ans);
		fmt_time(ans.this_update, tu);
		fmt_time(ans.next_update, nu);
		pthread_mutex_unlock(&rs->mu);
		cm_trace_add(
			trace,
			"revocation: depth %d: OCSP %s: %s (thisUpdate %s, nextUpdate %s, signer %s, %s)",
			depth, url,
			st == STATUS_GOOD      ? "good"
			: st == STATUS_REVOKED ? "revoked"
					       : "unknown",
			tu, nu[0] ? nu : "none", ans.signer, fetched ? "fetched" : "cached");
		if (fetched)
			cm_trace_add(trace, "revocation: depth %d: OCSP %s: answered in %.1f ms",
				     depth, url, ms);
		if (st != STATUS_UNKNOWN)
			snprintf(src, src_len, "OCSP %s", url);
		else if (fail[0] == '\0')
			snprintf(fail, fail_len, "OCSP %s (unknown)", url);
	} else {
		char why[600];

		snprintf(why, sizeof(why), "%s",
			 e->error != NULL ? e->error : "no answer (fetch in progress)");
		pthread_mutex_unlock(&rs->mu);
		cm_trace_add(trace, "revocation: depth %d: OCSP %s: %s", depth, url, why);
		if (fail[0] == '\0')
			snprintf(fail, fail_len, "OCSP %.200s (%.280s)", url, why);
	}
	cm_strv_free(urls);
	return st;
}

/* ---- the check ---- */

enum cm_reason cm_revstore_check(struct cm_revstore *rs, struct cm_dir *dir,
				 const struct cm_trust *trust, const struct cm_cert *cert,
				 enum cm_revocation_mode mode, time_t now, struct cm_trace *trace,
				 char **detail, struct cm_rev_result *res)
{
	const struct cm_config *cfg = rs->cfg;
	STACK_OF(X509) *path = cm_cert_path(cert);
	char fail[512] = "";
	bool unknown = false;
	int unknown_depth = -1;

	memset(res, 0, sizeof(*res));
	res->reason = CM_REASON_ALLOWED;
	if (mode == CM_REVOCATION_OFF) {
		res->status = "off";
		cm_trace_add(trace, "revocation: off");
		return CM_REASON_ALLOWED;
	}
	if (path == NULL) {
		cm_trace_add(trace, "revocation: no verified path");
		res->status = "unknown";
		res->reason = CM_REASON_REVOCATION_UNKNOWN;
		return res->reason;
	}
	for (int i = 0; i < sk_X509_num(path); i++) {
		X509 *x = sk_X509_value(path, i), *issuer;
		enum cert_status st = STATUS_UNKNOWN, s;
		char src[512] = "", good_src[512] = "";

		if (cm_trust_is_anchor(trust, x))
			break; /* anchors (and anything above them) are never checked */
		if (i + 1 >= sk_X509_num(path)) {
			cm_trace_add(trace, "revocation: depth %d: issuer not in the verified path",
				     i);
			unknown = true;
			unknown_depth = unknown_depth < 0 ? i : unknown_depth;
			break;
		}
		issuer = sk_X509_value(path, i + 1);
		for (int source = 0; source < 3 && st != STATUS_REVOKED; source++) {
			src[0] = '\0';
			if (source == 0 && rs->n_files > 0)
				s = check_files(rs, x, issuer, i, now, trace, src, sizeof(src),
						fail, sizeof(fail));
			else if (source == 1 && cfg->client_certificates.revocation.fetch_cdp)
				s = check_cdp(rs, dir, x, issuer, i, now, trace, src, sizeof(src),
					      fail, sizeof(fail));
			else if (source == 2 && cfg->client_certificates.revocation.ocsp)
				s = check_ocsp(rs, trust, path, x, issuer, i, now, trace, src,
					       sizeof(src), fail, sizeof(fail));
			else
				continue;
			if (s == STATUS_REVOKED) {
				st = s;
				snprintf(res->source, sizeof(res->source), "%s", src);
			} else if (s == STATUS_GOOD && st == STATUS_UNKNOWN) {
				st = s;
				snprintf(good_src, sizeof(good_src), "%s", src);
			}
		}
		if (st == STATUS_REVOKED) {
			if (detail != NULL && *detail == NULL) {
				char *subj = cm_x509_name_string(X509_get_subject_name(x));

				*detail = cm_strdup_printf("%s (depth %d) is revoked (%s)",
							   subj ? subj : "?", i, res->source);
				free(subj);
			}
			res->status = "revoked";
			res->reason = CM_REASON_REVOKED;
			pthread_mutex_lock(&rs->mu);
			rs->checks[2]++;
			pthread_mutex_unlock(&rs->mu);
			return res->reason;
		}
		if (st == STATUS_UNKNOWN && !unknown) {
			unknown = true;
			unknown_depth = i;
		}
		if (st == STATUS_GOOD && res->source[0] == '\0')
			snprintf(res->source, sizeof(res->source), "%s", good_src);
	}
	pthread_mutex_lock(&rs->mu);
	rs->checks[unknown ? 1 : 0]++;
	pthread_mutex_unlock(&rs->mu);
	if (unknown) {
		snprintf(res->source, sizeof(res->source), "%s",
			 fail[0] ? fail : "no source configured");
		res->status = "unknown";
	} else {
		res->status = "good";
	}
	if (unknown && mode == CM_REVOCATION_HARD) {
		if (detail != NULL && *detail == NULL)
			*detail = cm_strdup_printf(
				"no current revocation information for the certificate at depth %d (%s)",
				unknown_depth, res->source);
		cm_trace_add(trace, "revocation: hard mode: status unknown at depth %d",
			     unknown_depth);
		res->reason = CM_REASON_REVOCATION_UNKNOWN;
		return res->reason;
	}
	cm_trace_add(trace, unknown ? "revocation: soft mode: status unknown, passed"
				    : "revocation: good");
	return CM_REASON_ALLOWED;
}

/* ---- background duties ---- */

static int poll_files(struct cm_revstore *rs)
{
	int changed = 0;

	for (size_t i = 0; i < rs->n_files; i++) {
		struct crl_file *f = &rs->files[i];
		struct crl_item **items = NULL;
		size_t n = 0;
		struct cm_err err = {{0}};
		struct stat st;
		int rc;

		if (stat(f->path, &st) != 0) {
			pthread_mutex_lock(&rs->mu);
			if (f->error == NULL) {
				file_clear(f);
				f->error = cm_strdup_printf("cannot be read: %s", strerror(errno));
				f->have_st = false;
				atomic_fetch_add(&rs->epoch, 1);
				rs_log(rs, "revocation: CRL file %s: %s; its CRLs no longer count",
				       f->path, f->error);
				changed++;
			}
			pthread_mutex_unlock(&rs->mu);
			continue;
		}
		pthread_mutex_lock(&rs->mu);
		rc = stat_changed(f, &st);
		pthread_mutex_unlock(&rs->mu);
		if (!rc)
			continue;
		rc = file_read_items(f->path, &items, &n, &err);
		pthread_mutex_lock(&rs->mu);
		file_clear(f);
		f->st = st;
		f->have_st = true;
		if (rc == 0) {
			size_t entries = 0;

			f->items = items;
			f->n = n;
			for (size_t j = 0; j < n; j++)
				entries += items[j]->entries;
			rs->crl_loads++;
			rs_log(rs, "revocation: CRL file %s reloaded (%zu CRL%s, %zu entries)",
			       f->path, n, n == 1 ? "" : "s", entries);
		} else {
			f->error = strdup(err.msg);
			rs_log(rs,
			       "revocation: CRL file %s: refused: %s; its CRLs no longer count (unknown)",
			       f->path, err.msg);
		}
		atomic_fetch_add(&rs->epoch, 1);
		changed++;
		pthread_mutex_unlock(&rs->mu);
	}
	return changed;
}

int cm_revstore_poll(struct cm_revstore *rs, struct cm_dir *dir, time_t now)
{
	int changed = poll_files(rs);

	for (;;) {
		struct cdp_entry *e = NULL;
		struct crl_item *it = NULL;
		struct cm_err err = {{0}};
		X509_NAME *name = NULL;
		EVP_PKEY *key = NULL;
		char *url = NULL;
		unsigned long before;

		pthread_mutex_lock(&rs->mu);
		for (size_t i = 0; i < rs->n_cdp && e == NULL; i++) {
			struct cdp_entry *c = rs->cdp[i];
			time_t due;

			if (c->fetching || c->users > 0 || c->item == NULL || c->issuer_key == NULL)
				continue;
			if (now - c->last_used > CM_REV_UNUSED_DROP_S) {
				cdp_entry_free(c);
				rs->cdp[i] = rs->cdp[--rs->n_cdp];
				i--;
				continue;
			}
			due = c->item->next_update == 0
				      ? c->item->this_update + 3600
				      : c->item->this_update +
						(c->item->next_update - c->item->this_update) * 4 /
							5;
			if (now < due || !may_fetch(c, now))
				continue;
			e = c;
		}
		if (e == NULL) {
			pthread_mutex_unlock(&rs->mu);
			break;
		}
		e->fetching = true;
		url = strdup(e->url);
		name = X509_NAME_dup(X509_CRL_get_issuer(e->item->crl));
		key = e->issuer_key;
		EVP_PKEY_up_ref(key);
		before = atomic_load(&rs->epoch);
		pthread_mutex_unlock(&rs->mu);
		if (url == NULL || name == NULL ||
		    fetch_crl(rs, dir, url, e->delta, name, key, &it, &err) != 0) {
			if (url != NULL)
				rs_log(rs, "revocation: refresh of %s %s: %s",
				       e->delta ? "delta CRL" : "CDP", url, err.msg);
		} else {
			rs_log(rs, "revocation: %s %s refreshed (%zu entries)",
			       e->delta ? "delta CRL" : "CDP", url, it->entries);
		}
		pthread_mutex_lock(&rs->mu);
		cdp_store(rs, e, it, key, err.msg[0] ? err.msg : "refresh failed", now);
		if (atomic_load(&rs->epoch) != before)
			changed++;
		pthread_mutex_unlock(&rs->mu);
		EVP_PKEY_free(key);
		X509_NAME_free(name);
		free(url);
	}
	return changed;
}

static void *refresher(void *arg)
{
	struct cm_revstore *rs = arg;

	pthread_mutex_lock(&rs->mu);
	while (!rs->stop) {
		struct timespec ts;

		pthread_mutex_unlock(&rs->mu);
		cm_revstore_poll(rs, rs->thread_dir, time(NULL));
		pthread_mutex_lock(&rs->mu);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		while (!rs->stop && pthread_cond_timedwait(&rs->cond, &rs->mu, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&rs->mu);
	return NULL;
}

int cm_revstore_start(struct cm_revstore *rs, struct cm_err *err)
{
	struct cm_err sub = {{0}};

	if (rs->cfg->client_certificates.revocation.mode == CM_REVOCATION_OFF)
		return 0;
	if (rs->cfg->client_certificates.revocation.fetch_cdp &&
	    cm_dir_open(rs->cfg, &rs->thread_dir, &sub) != 0) {
		cm_err_set(err, "directory for CRL refreshes: %s", sub.msg);
		return -1;
	}
	if (pthread_create(&rs->thread, NULL, refresher, rs) != 0) {
		cm_err_set(err, "cannot start the revocation refresher thread");
		return -1;
	}
	rs->thread_running = true;
	return 0;
}

static void add_info(struct cm_rev_stats *out, const struct crl_item *it)
{
	struct cm_rev_crl_info *c = &out->crls[out->n_crls++];

	snprintf(c->source, sizeof(c->source), "%s", it->source);
	c->this_update = it->this_update;
	c->next_update = it->next_update;
	c->entries = it->entries;
	c->delta = it->delta;
}

void cm_revstore_stats(struct cm_revstore *rs, struct cm_rev_stats *out)
{
	size_t cap;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&rs->mu);
	out->fetch_failures_crl = rs->fail_crl;
	out->fetch_failures_ocsp = rs->fail_ocsp;
	out->crl_loads = rs->crl_loads;
	for (int i = 0; i < 12; i++) {
		out->ocsp_latency_s[i] = latency_bounds[i];
		out->ocsp_latency_count[i] = rs->lat_count[i];
	}
	out->ocsp_latency_total = rs->lat_total;
	out->ocsp_latency_sum = rs->lat_sum;
	out->checks_good = rs->checks[0];
	out->checks_unknown = rs->checks[1];
	out->checks_revoked = rs->checks[2];
	cap = rs->n_cdp;
	for (size_t i = 0; i < rs->n_files; i++)
		cap += rs->files[i].n;
	out->crls = cap > 0 ? calloc(cap, sizeof(*out->crls)) : NULL;
	for (size_t i = 0; out->crls != NULL && i < rs->n_files; i++)
		for (size_t j = 0; j < rs->files[i].n; j++)
			add_info(out, rs->files[i].items[j]);
	for (size_t i = 0; out->crls != NULL && i < rs->n_cdp; i++)
		if (rs->cdp[i]->item != NULL)
			add_info(out, rs->cdp[i]->item);
	pthread_mutex_unlock(&rs->mu);
}

void cm_rev_stats_free(struct cm_rev_stats *st)
{
	free(st->crls);
	st->crls = NULL;
	st->n_crls = 0;
}
