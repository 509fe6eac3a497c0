/*
 * revocation — is any non-anchor certificate of a verified path revoked?
 *
 * A struct cm_revstore holds every piece of revocation data certmap knows:
 *   - CRL files (client_certificates.revocation.crl_files), re-read when
 *     their mtime/size/inode change (checked at most once a second by
 *     cm_revstore_poll(), which certmapd's refresher thread calls);
 *   - CRLs fetched from the certificates' CRL Distribution Points (fetch_cdp:
 *     http:// via cm_fetch_get, host-less ldap:/// through the caller's
 *     directory handle, ldap://host/ through a handle to that host with the
 *     same bind and TLS settings), delta CRLs from Freshest CRL, kept until
 *     nextUpdate and refreshed before it (cm_revstore_poll);
 *   - OCSP answers (ocsp: the AIA responder, else ocsp_responder), kept until
 *     nextUpdate (at most CM_REV_OCSP_MAX_AGE_S when the answer has none).
 * A CRL counts for a certificate only when its issuer name matches and its
 * signature verifies with the issuer's key (verified once per issuer key and
 * remembered: at fetch for CDP CRLs, at first use for CRL files). A
 * listing is "revoked" from any source, also a stale CRL; "revoked" wins
 * over "good". hard: every non-anchor certificate needs a current answer (a
 * CRL with thisUpdate <= now < nextUpdate, plus its delta when the CRL or
 * certificate names one, or a good OCSP answer), else revocation_unknown;
 * soft: only a definite "revoked" denies; off: nothing is consulted. Anchors
 * are never checked. Lookups in a CRL are binary searches by serial.
 * Corrupt or wrongly signed data is refused (logged, traced) and counts as
 * "unknown", never as "good". A failed fetch is not retried for
 * CM_REV_RETRY_S (the URL stays "unknown" meanwhile; an older copy still
 * answers until its nextUpdate).
 * The epoch (cm_revstore_epoch) changes whenever stored CRL data changes, so
 * that cached decisions made before can be dropped.
 * Threading: all functions are thread-safe; fetches of one URL coalesce
 * (one transfer, the other callers wait for it).
 */
#ifndef CERTMAP_REVOCATION_H
#define CERTMAP_REVOCATION_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "certmap/config.h"
#include "certmap/decision.h"
#include "certmap/trace.h"
#include "certmap/util.h"
#include "certmap/x509.h"

#define CM_REV_RETRY_S 30         /* a failed URL is not asked again sooner */
#define CM_REV_OCSP_MAX_AGE_S 300 /* keep an answer without nextUpdate this long */
#define CM_REV_MAX_CRL_BYTES (64u * 1024u * 1024u)
#define CM_REV_MAX_OCSP_BYTES (1024u * 1024u)
#define CM_REV_MAX_CDP_CRLS 256 /* distinct CDP/delta URLs kept */
#define CM_REV_MAX_OCSP_ANSWERS 100000
#define CM_REV_UNUSED_DROP_S 86400 /* CDP CRLs not used for a day are not refreshed */

struct cm_revstore;
struct cm_dir;

/* Summary of one check, for audit lines and `check` JSON. */
struct cm_rev_result {
	enum cm_reason reason; /* ALLOWED, REVOKED or REVOCATION_UNKNOWN */
	const char *status;    /* "off", "good", "revoked", "unknown" (static) */
	char source[512];      /* what decided: "CRL file /x.crl", "CDP http://…",
				  * "OCSP http://…"; for unknown the first failure; "" for off */
};

/* Counters and gauges for /metrics. */
struct cm_rev_crl_info {
	char source[512];                /* "file /x.crl" or the CDP URL */
	time_t this_update, next_update; /* 0 = absent */
	size_t entries;
	bool delta;
};

struct cm_rev_stats {
	unsigned long fetch_failures_crl;     /* CDP fetches that failed or were refused */
	unsigned long fetch_failures_ocsp;    /* OCSP requests that failed or were refused */
	unsigned long crl_loads;              /* CRLs (re)loaded with new content */
	double ocsp_latency_s[12];            /* histogram bucket bounds (le) */
	unsigned long ocsp_latency_count[12]; /* cumulative counts per bound */
	unsigned long ocsp_latency_total;     /* OCSP answers fetched */
	double ocsp_latency_sum;
	unsigned long checks_good, checks_revoked, checks_unknown;
	struct cm_rev_crl_info *crls; /* malloc'd, n_crls entries */
	size_t n_crls;
};

/* Loads crl_files (errors name the file and the problem). Borrows cfg. */
int cm_revstore_new(const struct cm_config *cfg, struct cm_revstore **out, struct cm_err *err);
void cm_revstore_free(struct cm_revstore *rs);

/* Where log lines go (reloads, refused data, fetch failures); NULL = nowhere. */
typedef void (*cm_rev_log_fn)(void *arg, const char *line);
void cm_revstore_set_log(struct cm_revstore *rs, cm_rev_log_fn fn, void *arg);

/* Checks the verified path of cert in mode (normally the configured one). dir: the
 * caller's directory handle for ldap:/// CDPs (NULL: those are "unknown").
 * Fills *res; returns res->reason. detail (may be NULL) gets one line for
 * people on REVOKED/REVOCATION_UNKNOWN when *detail is NULL. */
enum cm_reason cm_revstore_check(struct cm_revstore *rs, struct cm_dir *dir,
				 const struct cm_trust *trust, const struct cm_cert *cert,
				 enum cm_revocation_mode mode, time_t now, struct cm_trace *trace,
				 char **detail, struct cm_rev_result *res);

/* Background duties, called about once a second by one thread: re-reads
 * changed CRL files, refreshes CDP CRLs due (past 80 % of their validity,
 * or stale) and forgets unused ones. dir: a handle the caller owns for
 * ldap:/// refreshes (may be NULL). Returns the number of CRLs that changed. */
int cm_revstore_poll(struct cm_revstore *rs, struct cm_dir *dir, time_t now);

/* Starts a thread that calls cm_revstore_poll every second with its own
 * directory handle (certmapd); stopped by cm_revstore_free. No-op in mode
 * off. */
int cm_revstore_start(struct cm_revstore *rs, struct cm_err *err);

unsigned long cm_revstore_epoch(struct cm_revstore *rs);
void cm_revstore_stats(struct cm_revstore *rs, struct cm_rev_stats *out);
void cm_rev_stats_free(struct cm_rev_stats *st);

#endif
