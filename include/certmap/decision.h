/*
 * decision — the stable reason codes, and their IIS status.substatus and
 * IIS texts (DESIGN §4). Pure tables; no state.
 */
#ifndef CERTMAP_DECISION_H
#define CERTMAP_DECISION_H

enum cm_reason {
	CM_REASON_ALLOWED = 0,
	CM_REASON_NO_CERTIFICATE,
	CM_REASON_UNTRUSTED,
	CM_REASON_EXPIRED,
	CM_REASON_NOT_YET_VALID,
	CM_REASON_REVOKED,
	CM_REASON_REVOCATION_UNKNOWN,
	CM_REASON_NOT_MAPPED,
	CM_REASON_AMBIGUOUS,
	CM_REASON_RULE_DENIED,
	CM_REASON_ACCOUNT_DISABLED,
	CM_REASON_ACCOUNT_LOCKED,
	CM_REASON_ACCOUNT_EXPIRED,
	CM_REASON_BASIC_USER_MISMATCH,
	CM_REASON_NOT_IN_GROUP,
	CM_REASON_DIRECTORY_UNAVAILABLE,
	CM_REASON_UPSTREAM_UNAVAILABLE,
	CM_REASON_UPSTREAM_TIMEOUT,
	CM_REASON_BAD_REQUEST,
	CM_REASON_COUNT
};

/* Mapping methods (config mapping.methods). */
enum cm_method {
	CM_METHOD_NONE = -1,
	CM_METHOD_USER_CERTIFICATE = 0,
	CM_METHOD_ALT_SECURITY_IDENTITIES,
	CM_METHOD_UPN,
	CM_METHOD_RULES,
	CM_METHOD_COUNT
};

const char *cm_reason_name(enum cm_reason reason);
/* 0 and *out set when name is a known reason, else -1. */
int cm_reason_from_name(const char *name, enum cm_reason *out);
int cm_reason_status(enum cm_reason reason);
int cm_reason_substatus(enum cm_reason reason);
/* IIS text for status.substatus, e.g. 403,16 → "Client certificate is
 * untrusted or invalid."; a generic text for unknown pairs, never NULL. */
const char *cm_status_text(int status, int substatus);

const char *cm_method_name(enum cm_method method); /* NULL for NONE */
int cm_method_from_name(const char *name, enum cm_method *out);

#endif
