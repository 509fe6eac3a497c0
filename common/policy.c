/*
 * policy — may the mapped account use the service? (include/certmap/policy.h,
 * DESIGN §3). Order: account state (ad, authorization.check_account_state)
 * → required groups → Basic binding; the first failure decides.
 *
 * Account state tests bits, never whole values: disabled is
 * userAccountControl & 0x2, locked is msDS-User-Account-Control-Computed &
 * 0x10 only (a stale lockoutTime or the legacy uAC lockout bit mean nothing),
 * accountExpires 0 and 0x7FFFFFFFFFFFFFFF mean never.
 * Groups: groups.c answers (ad: tokenGroups, nested and primary group
 * included, as a Windows token; rfc4523: a breadth-first walk up
 * groupOfNames/member, at most CM_GROUPS_MAX_DEPTH levels); the first
 * required group the account is not in decides. A group that cannot be
 * found denies.
 * Any directory error denies with directory_unavailable.
 * Threading: stateless; the caller's struct cm_dir serializes LDAP access.
 */
#include "certmap/policy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "certmap/groups.h"
#include "certmap/util.h"

#define SHOWN_USER_MAX 64 /* bytes of a Basic user quoted in a detail */

#define UF_ACCOUNTDISABLE 0x2u
#define UF_LOCKOUT 0x10u /* meaningful in msDS-User-Account-Control-Computed only */
#define FILETIME_NEVER INT64_MAX
#define FILETIME_EPOCH_OFFSET 11644473600LL /* seconds 1601-01-01 → 1970-01-01 */
#define FILETIME_PER_SECOND 10000000LL

/* now as FILETIME (100 ns ticks since 1601), saturating. */
static int64_t filetime_of(time_t now)
{
	int64_t s = (int64_t)now;

	if (s > INT64_MAX / FILETIME_PER_SECOND - FILETIME_EPOCH_OFFSET)
		return INT64_MAX;
	if (s < INT64_MIN / FILETIME_PER_SECOND + FILETIME_EPOCH_OFFSET)
		return INT64_MIN;
	return (s + FILETIME_EPOCH_OFFSET) * FILETIME_PER_SECOND;
}

enum cm_reason cm_policy_account_state(const struct cm_account *acct, time_t now)
{
	if (acct == NULL || !acct->has_uac || (acct->uac & UF_ACCOUNTDISABLE) != 0)
		return CM_REASON_ACCOUNT_DISABLED; /* an unreadable uAC is not "enabled" */
	if (acct->has_uac_computed && (acct->uac_computed & UF_LOCKOUT) != 0)
		return CM_REASON_ACCOUNT_LOCKED;
	if (acct->has_account_expires && acct->account_expires != 0 &&
	    acct->account_expires != FILETIME_NEVER && acct->account_expires <= filetime_of(now))
		return CM_REASON_ACCOUNT_EXPIRED;
	return CM_REASON_ALLOWED;
}

/* user equals name "@" domain, case-insensitively. */
static bool is_name_at(const char *user, const char *name, const char *domain)
{
	size_t n;

	if (name == NULL || name[0] == '\0' || domain == NULL || domain[0] == '\0')
		return false;
	n = strlen(name);
	return strncasecmp(user, name, n) == 0 && user[n] == '@' &&
	       strcasecmp(user + n + 1, domain) == 0;
}

static bool same(const char *a, const char *b)
{
	return a != NULL && b != NULL && b[0] != '\0' && strcasecmp(a, b) == 0;
}

bool cm_policy_basic_user_matches(const struct cm_config *cfg, const struct cm_account *acct,
				  const char *basic_user)
{
	const char *dns, *netbios, *sam, *bs;

	if (cfg == NULL || acct == NULL || basic_user == NULL || basic_user[0] == '\0')
		return false;
	dns = cfg->directory.dns_domain;
	if (cfg->directory.dialect == CM_DIALECT_RFC4523)
		return same(basic_user, acct->name) || same(basic_user, acct->mail) ||
		       is_name_at(basic_user, acct->name, dns);

	sam = acct->sam != NULL ? acct->sam : acct->name;
	if (same(basic_user, sam) || same(basic_user, acct->upn) ||
	    is_name_at(basic_user, sam, dns))
		return true;
	bs = strchr(basic_user, '\\');
	if (bs != NULL && bs != basic_user && same(bs + 1, sam)) {
		size_t dlen = (size_t)(bs - basic_user);

		netbios = cfg->directory.netbios_domain;
		if (netbios == NULL || netbios[0] == '\0')
			return true; /* domain part not checked */
		return strlen(netbios) == dlen && strncasecmp(basic_user, netbios, dlen) == 0;
	}
	return false;
}

static char *state_detail(enum cm_reason r, const struct cm_account *acct)
{
	switch (r) {
	case CM_REASON_ACCOUNT_DISABLED:
		return acct->has_uac ? cm_strdup_printf("account %s is disabled", acct->dn)
				     : cm_strdup_printf("account %s has no readable "
							"userAccountControl; treated as disabled",
							acct->dn);
	case CM_REASON_ACCOUNT_LOCKED:
		return cm_strdup_printf("account %s is locked out", acct->dn);
	case CM_REASON_ACCOUNT_EXPIRED: {
		int64_t secs = acct->account_expires / FILETIME_PER_SECOND - FILETIME_EPOCH_OFFSET;
		time_t t = (time_t)secs;
		struct tm tm;
		char when[32] = "";

		if (gmtime_r(&t, &tm) != NULL)
			strftime(when, sizeof(when), " on %Y-%m-%dT%H:%M:%SZ", &tm);
		return cm_strdup_printf("account %s expired%s", acct->dn, when);
	}
	default:
		return NULL;
	}
}

/* Required groups: the first one the account is not in decides (in order). */
static enum cm_reason check_groups(const struct cm_config *cfg, struct cm_dir *dir,
				   const struct cm_account *acct, struct cm_trace *trace,
				   char **detail)
{
	const struct cm_strlist *req = &cfg->authorization.required_groups;
	enum cm_group_answer *answers = calloc(req->n, sizeof(*answers));
	struct cm_err err = {""};
	enum cm_groups_status st;
	enum cm_reason reason = CM_REASON_ALLOWED;

	if (answers == NULL) {
		*detail = strdup("out of memory");
		return CM_REASON_DIRECTORY_UNAVAILABLE;
	}
	st = cm_groups_check(cfg, dir, acct->dn, req->v, req->n, true, answers, trace, &err);
	if (st == CM_GROUPS_NOT_FOUND) {
		cm_trace_add(trace, "policy: account %s no longer exists", acct->dn);
		*detail = cm_strdup_printf("account %s no longer exists", acct->dn);
		reason = CM_REASON_NOT_IN_GROUP;
		goto done;
	}
	if (st != CM_GROUPS_OK) {
		*detail = strdup(err.msg);
		reason = CM_REASON_DIRECTORY_UNAVAILABLE;
		goto done;
	}
	for (size_t i = 0; i < req->n && reason == CM_REASON_ALLOWED; i++) {
		switch (answers[i]) {
		case CM_GROUP_MEMBER:
			cm_trace_add(trace, "policy: %s is a member of %s", acct->dn, req->v[i]);
			break;
		case CM_GROUP_MISSING:
			cm_trace_add(trace, "policy: required group %s does not exist", req->v[i]);
			*detail = cm_strdup_printf("required group %s does not exist", req->v[i]);
			reason = CM_REASON_NOT_IN_GROUP;
			break;
		case CM_GROUP_NO_SID:
			cm_trace_add(trace, "policy: required group %s has no objectSid",
				     req->v[i]);
			*detail = cm_strdup_printf("required group %s has no objectSid", req->v[i]);
			reason = CM_REASON_NOT_IN_GROUP;
			break;
		default: /* NOT_MEMBER; UNKNOWN cannot come before a miss */
			cm_trace_add(trace, "policy: %s is not a member of %s", acct->dn,
				     req->v[i]);
			*detail = cm_strdup_printf("account %s is not a member of %s", acct->dn,
						   req->v[i]);
			reason = CM_REASON_NOT_IN_GROUP;
			break;
		}
	}
done:
	free(answers);
	return reason;
}

static enum cm_reason check_basic(const struct cm_config *cfg, const struct cm_account *acct,
				  const char *basic_user, struct cm_trace *trace, char **detail)
{
	enum cm_basic_binding mode = cfg->authorization.basic_user_binding;
	char *shown;

	if (mode == CM_BASIC_OFF)
		return CM_REASON_ALLOWED;
	if (basic_user == NULL) {
		if (mode == CM_BASIC_IF_PRESENT) {
			cm_trace_add(trace, "policy: no Basic user; binding not checked");
			return CM_REASON_ALLOWED;
		}
		cm_trace_add(trace, "policy: no Basic user, and basic_user_binding is required");
		*detail = strdup("the request carries no Basic-auth user");
		return CM_REASON_BASIC_USER_MISMATCH;
	}
	shown = cm_sanitize(basic_user, SHOWN_USER_MAX);
	if (cm_policy_basic_user_matches(cfg, acct, basic_user)) {
		cm_trace_add(trace, "policy: Basic user \"%s\" is %s", shown ? shown : "",
			     acct->dn);
		free(shown);
		return CM_REASON_ALLOWED;
	}
	cm_trace_add(trace, "policy: Basic user \"%s\" is not %s", shown ? shown : "", acct->dn);
	*detail = cm_strdup_printf("Basic user \"%s\" is not account %s", shown ? shown : "",
				   acct->name != NULL ? acct->name : acct->dn);
	free(shown);
	return CM_REASON_BASIC_USER_MISMATCH;
}

enum cm_reason cm_policy_check(const struct cm_config *cfg, struct cm_dir *dir,
			       const struct cm_account *acct, const char *basic_user, time_t now,
			       struct cm_trace *trace, char **detail)
{
	enum cm_reason r;

	*detail = NULL;
	if (cfg == NULL || acct == NULL || acct->dn == NULL) {
		*detail = strdup("no account to check");
		return CM_REASON_NOT_MAPPED;
	}
	if (cfg->directory.dialect == CM_DIALECT_AD && cfg->authorization.check_account_state) {
		r = cm_policy_account_state(acct, now);
		if (r != CM_REASON_ALLOWED) {
			*detail = state_detail(r, acct);
			cm_trace_add(trace, "policy: %s",
				     *detail != NULL ? *detail : cm_reason_name(r));
			return r;
		}
		if (!acct->has_uac_computed) {
			/* lockout shows only in the constructed attribute: unknown is not "not locked" */
			cm_trace_add(trace,
				     "policy: %s: msDS-User-Account-Control-Computed unreadable",
				     acct->dn);
			*detail = cm_strdup_printf("lockout state of account %s could not be read",
						   acct->dn);
			return CM_REASON_DIRECTORY_UNAVAILABLE;
		}
		cm_trace_add(trace, "policy: account %s is enabled, not locked, not expired",
			     acct->dn);
	}
	if (cfg->authorization.required_groups.n > 0) {
		if (dir == NULL) {
			*detail = strdup("no directory handle for the group check");
			return CM_REASON_DIRECTORY_UNAVAILABLE;
		}
		r = check_groups(cfg, dir, acct, trace, detail);
		if (r != CM_REASON_ALLOWED)
			return r;
	}
	return check_basic(cfg, acct, basic_user, trace, detail);
}
