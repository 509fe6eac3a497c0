/*
 * audit — findings of `certmapctl audit` over a classified inventory
 * (DESIGN §11). Pure: no directory access here.
 *
 * Findings and levels (fixed):
 *   critical  shared_certificate          one DER on more than one account (directory-wide)
 *   warning   expired, not_yet_valid,      a member's value
 *             untrusted_issuer, revoked,
 *             duplicate_value             a member holds the same certificate twice
 *                                          (same DER, or same issuer + serial)
 *   warning   member_without_usable_cert  no value certmapd would accept and map to
 *                                          this member alone
 *   warning   holder_outside_group        a managed value on an account outside the group
 * Every finding names its accounts (DNs) and the certificate's SHA-256.
 * Threading: plain data.
 */
#ifndef CERTMAP_AUDIT_H
#define CERTMAP_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "certmap/config.h"
#include "certmap/inventory.h"

enum cm_audit_level { CM_AUDIT_INFO, CM_AUDIT_WARNING, CM_AUDIT_CRITICAL };

enum cm_audit_kind {
	CM_AUDIT_SHARED_CERTIFICATE,
	CM_AUDIT_DUPLICATE_VALUE,
	CM_AUDIT_EXPIRED,
	CM_AUDIT_NOT_YET_VALID,
	CM_AUDIT_UNTRUSTED_ISSUER,
	CM_AUDIT_REVOKED,
	CM_AUDIT_MEMBER_WITHOUT_USABLE_CERT,
	CM_AUDIT_HOLDER_OUTSIDE_GROUP,
};

struct cm_audit_finding {
	enum cm_audit_kind kind;
	enum cm_audit_level level;
	char sha256[65]; /* "" when the finding is about no certificate in particular */
	char **dns;      /* accounts, sorted */
	size_t n_dns;
	char *subject; /* of the certificate, or NULL */
	char *detail;
};

struct cm_audit_report {
	struct cm_audit_finding *v; /* critical first, then by kind, DN, SHA-256 */
	size_t n;
	size_t counts[3]; /* by level */
	size_t accounts, members, values;
};

/* Findings for inv (values classified). on_ambiguous basic_user makes a
 * shared value still count as usable for its holders. -1 out of memory. */
int cm_audit_run(const struct cm_inventory *inv, enum cm_on_ambiguous on_ambiguous,
		 struct cm_audit_report *out);
void cm_audit_report_free(struct cm_audit_report *report);

const char *cm_audit_kind_name(enum cm_audit_kind kind);
const char *cm_audit_level_name(enum cm_audit_level level);
/* "critical" | "warning" | "info" → 0 and *out; -1 otherwise. */
int cm_audit_level_parse(const char *text, enum cm_audit_level *out);

#endif
