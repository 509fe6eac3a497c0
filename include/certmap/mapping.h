/*
 * mapping — certificate → directory account (DESIGN §2), methods tried in
 * the order of mapping.methods. user_certificate: the account whose
 * userCertificate holds the presented leaf byte for byte; exactly one
 * account may match (on_ambiguous may pick by the Basic-auth user).
 * Threading: stateless; uses the caller's struct cm_dir.
 */
#ifndef CERTMAP_MAPPING_H
#define CERTMAP_MAPPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certmap/config.h"
#include "certmap/decision.h"
#include "certmap/directory.h"
#include "certmap/trace.h"
#include "certmap/x509.h"

/* A mapped account with what policy needs. */
struct cm_account {
	char *dn;
	char *name; /* sAMAccountName (ad) or uid (rfc4523) */
	char *sam;  /* NULL in rfc4523 */
	char *upn;  /* userPrincipalName, or NULL */
	char *mail; /* or NULL */
	bool has_uac;
	uint32_t uac; /* userAccountControl */
	bool has_uac_computed;
	uint32_t uac_computed; /* msDS-User-Account-Control-Computed */
	bool has_account_expires;
	int64_t account_expires; /* FILETIME (100 ns since 1601) */
};

void cm_account_free(struct cm_account *acct);

/* Returns ALLOWED with *out (owned by the caller) and *method set, or
 * NOT_MAPPED, AMBIGUOUS, RULE_DENIED, DIRECTORY_UNAVAILABLE; *detail malloc'd
 * or NULL. basic_user may be NULL. */
enum cm_reason cm_mapping_map(const struct cm_config *cfg, struct cm_dir *dir,
			      const struct cm_cert *cert, const char *basic_user,
			      struct cm_account **out, enum cm_method *method,
			      struct cm_trace *trace, char **detail);

#endif
