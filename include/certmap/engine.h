/*
 * engine — one decision for one request: x509 → revocation → mapping →
 * policy (DESIGN §3). certmapd and `certmapctl check` call the same code.
 * Threading: cm_engine_decide may be called from several threads; the
 * engine's trust store and CRLs are immutable, directory access is
 * serialized inside struct cm_dir.
 */
#ifndef CERTMAP_ENGINE_H
#define CERTMAP_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "certmap/config.h"
#include "certmap/decision.h"
#include "certmap/trace.h"
#include "certmap/x509.h"

struct cm_engine;

struct cm_request {
	const unsigned char *const *chain_der; /* leaf first; chain_n 0 = no cert */
	const size_t *chain_len;
	size_t chain_n;
	const char *basic_user; /* user part of Authorization: Basic, or NULL */
	time_t now;
};

struct cm_user {
	char *dn;
	char *name;
	char *sam; /* sAMAccountName or NULL */
	char *upn; /* userPrincipalName or NULL */
};

struct cm_decision {
	enum cm_reason reason;
	int status;
	int substatus;
	char *detail;          /* one line for people; may be NULL */
	enum cm_method method; /* CM_METHOD_NONE when nothing mapped */
	struct cm_user *user;  /* filled once mapping succeeded, else NULL */
	bool has_cert;
	struct cm_cert_summary cert;
	struct cm_trace trace;
	double directory_ms;
	/* revocation: NULL when not reached, else "off", "good", "revoked",
	 * "unknown"; source: what answered (or the first failure), or NULL */
	const char *revocation_status;
	char *revocation_source;
	unsigned long rev_epoch; /* cm_revstore_epoch() before the check */
};

/* Builds trust store, CRL set and directory handle. Borrows cfg for the
 * engine's lifetime. Errors name the config key. */
int cm_engine_new(const struct cm_config *cfg, struct cm_engine **out, struct cm_err *err);
/* The same with a revocation store shared by several engines (certmapd:
 * one per config generation); rev NULL = a store of its own. */
struct cm_revstore;
int cm_engine_new_shared(const struct cm_config *cfg, struct cm_revstore *rev,
			 struct cm_engine **out, struct cm_err *err);
void cm_engine_free(struct cm_engine *engine);

/* Always fills *out (free with cm_decision_free). */
void cm_engine_decide(struct cm_engine *engine, const struct cm_request *req,
		      struct cm_decision *out);
void cm_decision_free(struct cm_decision *d);

/* The DESIGN §5 JSON object (decision, status, substatus, reason, detail,
 * method, user, certificate, trace). New reference. */
json_t *cm_decision_to_json(const struct cm_decision *d);

#endif
