/*
 * revocation — is any non-anchor certificate of a verified path revoked?
 * Sources (this module so far): CRL files from client_certificates.revocation.
 * A CRL counts for a certificate only when its issuer name matches and its
 * signature verifies with the issuer's key (the next certificate in the path).
 * "Revoked" from any CRL wins, also from a stale one. hard: each non-anchor
 * certificate needs a current CRL (thisUpdate <= now < nextUpdate), else
 * revocation_unknown; soft: only a definite "revoked" denies; off: nothing.
 * Anchors are never checked. Lookups are by serial (sorted; not linear).
 * Threading: a struct cm_crlset is immutable after load; shared freely.
 */
#ifndef CERTMAP_REVOCATION_H
#define CERTMAP_REVOCATION_H

#include <stddef.h>
#include <time.h>

#include "certmap/config.h"
#include "certmap/decision.h"
#include "certmap/trace.h"
#include "certmap/util.h"
#include "certmap/x509.h"

struct cm_crlset;

/* Loads CRLs (PEM, possibly several per file, or DER). Errors name the file. */
int cm_crlset_load(char *const *files, size_t n, struct cm_crlset **out, struct cm_err *err);
void cm_crlset_free(struct cm_crlset *set);

/* Returns ALLOWED, REVOKED or REVOCATION_UNKNOWN; cert must be verified.
 * Adds "revocation: …" trace lines naming each source and its answer. */
enum cm_reason cm_revocation_check(const struct cm_crlset *set, const struct cm_trust *trust,
				   const struct cm_cert *cert, enum cm_revocation_mode mode,
				   time_t now, struct cm_trace *trace, char **detail);

#endif
