/*
 * policy — may the mapped account use the service? (DESIGN §3)
 * Order: account state → required groups (nested, primary group included)
 * → Basic binding. Any directory error denies (directory_unavailable).
 * Threading: stateless; uses the caller's struct cm_dir.
 */
#ifndef CERTMAP_POLICY_H
#define CERTMAP_POLICY_H

#include <stdbool.h>
#include <time.h>

#include "certmap/config.h"
#include "certmap/decision.h"
#include "certmap/directory.h"
#include "certmap/mapping.h"
#include "certmap/trace.h"

/* Returns ALLOWED or the reason; *detail malloc'd or NULL. */
enum cm_reason cm_policy_check(const struct cm_config *cfg, struct cm_dir *dir,
			       const struct cm_account *acct, const char *basic_user, time_t now,
			       struct cm_trace *trace, char **detail);

/* Does the Basic-auth user name this account? Case-insensitive forms:
 * sam, NETBIOS\sam (domain checked when directory.netbios_domain is set),
 * userPrincipalName, sam@<DNS domain of base_dn>; uid in rfc4523. */
bool cm_policy_basic_user_matches(const struct cm_config *cfg, const struct cm_account *acct,
				  const char *basic_user);

/* Account state alone (ad): ALLOWED, ACCOUNT_DISABLED, ACCOUNT_LOCKED,
 * ACCOUNT_EXPIRED. Pure; exposed for unit tests. */
enum cm_reason cm_policy_account_state(const struct cm_account *acct, time_t now);

#endif
