/*
 * decision — reason names, IIS status.substatus and texts (DESIGN §4).
 * Pure tables.
 */
#include "certmap/decision.h"

#include <stddef.h>
#include <string.h>

static const struct {
	const char *name;
	int status;
	int substatus;
} reasons[CM_REASON_COUNT] = {
	[CM_REASON_ALLOWED] = {"allowed", 200, 0},
	[CM_REASON_NO_CERTIFICATE] = {"no_certificate", 403, 7},
	[CM_REASON_UNTRUSTED] = {"untrusted", 403, 16},
	[CM_REASON_EXPIRED] = {"expired", 403, 17},
	[CM_REASON_NOT_YET_VALID] = {"not_yet_valid", 403, 17},
	[CM_REASON_REVOKED] = {"revoked", 403, 13},
	[CM_REASON_REVOCATION_UNKNOWN] = {"revocation_unknown", 403, 13},
	[CM_REASON_NOT_MAPPED] = {"not_mapped", 401, 2},
	[CM_REASON_AMBIGUOUS] = {"ambiguous", 403, 12},
	[CM_REASON_RULE_DENIED] = {"rule_denied", 403, 12},
	[CM_REASON_ACCOUNT_DISABLED] = {"account_disabled", 401, 1},
	[CM_REASON_ACCOUNT_LOCKED] = {"account_locked", 401, 1},
	[CM_REASON_ACCOUNT_EXPIRED] = {"account_expired", 401, 1},
	[CM_REASON_BASIC_USER_MISMATCH] = {"basic_user_mismatch", 401, 1},
	[CM_REASON_NOT_IN_GROUP] = {"not_in_group", 401, 3},
	[CM_REASON_DIRECTORY_UNAVAILABLE] = {"directory_unavailable", 503, 0},
	[CM_REASON_UPSTREAM_UNAVAILABLE] = {"upstream_unavailable", 502, 3},
	[CM_REASON_UPSTREAM_TIMEOUT] = {"upstream_timeout", 504, 0},
	[CM_REASON_BAD_REQUEST] = {"bad_request", 400, 0},
};

/* IIS's texts (the first line and title of its error pages). */
static const struct {
	int status;
	int substatus;
	const char *text;
} texts[] = {
	{200, 0, "OK"},
	{400, 0, "Bad Request"},
	{401, 1, "Logon failed."},
	{401, 2, "Logon failed due to server configuration."},
	{401, 3, "Unauthorized due to ACL on resource."},
	{403, 7, "Client certificate required."},
	{403, 12, "Mapper denied access."},
	{403, 13, "Client certificate revoked."},
	{403, 16, "Client certificate is untrusted or invalid."},
	{403, 17, "Client certificate has expired or is not yet valid."},
	{404, 0, "Not Found"},
	{405, 0, "Method Not Allowed"},
	{413, 0, "Request Entity Too Large"},
	{431, 0, "Request Header Fields Too Large"},
	{500, 0, "Internal Server Error"},
	{502, 3, "Bad Gateway: forwarder connection error."},
	{503, 0, "Service Unavailable"},
	{504, 0, "Gateway Timeout"},
};

static const char *const method_names[CM_METHOD_COUNT] = {
	[CM_METHOD_USER_CERTIFICATE] = "user_certificate",
	[CM_METHOD_ALT_SECURITY_IDENTITIES] = "alt_security_identities",
	[CM_METHOD_UPN] = "upn",
	[CM_METHOD_RULES] = "rules",
};

const char *cm_reason_name(enum cm_reason reason)
{
	if ((int)reason < 0 || reason >= CM_REASON_COUNT)
		return "unknown";
	return reasons[reason].name;
}

int cm_reason_from_name(const char *name, enum cm_reason *out)
{
	for (int i = 0; i < CM_REASON_COUNT; i++) {
		if (strcmp(reasons[i].name, name) == 0) {
			*out = (enum cm_reason)i;
			return 0;
		}
	}
	return -1;
}

int cm_reason_status(enum cm_reason reason)
{
	if ((int)reason < 0 || reason >= CM_REASON_COUNT)
		return 500;
	return reasons[reason].status;
}

int cm_reason_substatus(enum cm_reason reason)
{
	if ((int)reason < 0 || reason >= CM_REASON_COUNT)
		return 0;
	return reasons[reason].substatus;
}

const char *cm_status_text(int status, int substatus)
{
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		if (texts[i].status == status && texts[i].substatus == substatus)
			return texts[i].text;
	/* Unknown substatus: fall back to the status's generic text. */
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		if (texts[i].status == status && texts[i].substatus == 0)
			return texts[i].text;
	if (status == 401)
		return "Unauthorized";
	if (status == 403)
		return "Forbidden";
	return "Error";
}

const char *cm_method_name(enum cm_method method)
{
	if ((int)method < 0 || method >= CM_METHOD_COUNT)
		return NULL;
	return method_names[method];
}

int cm_method_from_name(const char *name, enum cm_method *out)
{
	for (int i = 0; i < CM_METHOD_COUNT; i++) {
		if (strcmp(method_names[i], name) == 0) {
			*out = (enum cm_method)i;
			return 0;
		}
	}
	return -1;
}
