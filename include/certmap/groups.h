/*
 * groups — nested group membership as a Windows token sees it (DESIGN §3),
 * shared by policy ("is this account in the required groups?") and by
 * certmapctl publish/audit ("who are all the members of this group?").
 *
 * ad: one account's groups are its tokenGroups (nested, primary group
 * included). All members of G: accounts (objectClass=user) in G's chain
 * (LDAP_MATCHING_RULE_IN_CHAIN, 1.2.840.113556.1.4.1941) plus accounts whose
 * primaryGroupID is the RID of G or of a group nested in G — what a token
 * would say for each of them — in one paged search.
 * rfc4523: groupOfNames/member. One account's groups: a breadth-first walk
 * upward ((member=…) searches); all members of G: a breadth-first walk
 * downward from G's member values, fetching member entries in batches by
 * their RDN. At most CM_GROUPS_MAX_DEPTH levels either way.
 * Threading: stateless; uses the caller's struct cm_dir.
 */
#ifndef CERTMAP_GROUPS_H
#define CERTMAP_GROUPS_H

#include <stdbool.h>
#include <stddef.h>

#include "certmap/config.h"
#include "certmap/directory.h"
#include "certmap/trace.h"
#include "certmap/util.h"

#define CM_GROUPS_MAX_DEPTH 16   /* group nesting levels walked (rfc4523) */
#define CM_GROUPS_MAX_GROUPS 512 /* groups collected by one upward walk (rfc4523) */

enum cm_groups_status {
	CM_GROUPS_OK = 0,
	CM_GROUPS_NOT_FOUND,   /* the group (resolve, members) or account (check) does not exist */
	CM_GROUPS_AMBIGUOUS,   /* resolve: the name names several groups (listed in err) */
	CM_GROUPS_INCOMPLETE,  /* members: a size limit cut the list short (err says where) */
	CM_GROUPS_UNAVAILABLE, /* directory error (err) */
};

/* One required group, as seen from one account. */
enum cm_group_answer {
	CM_GROUP_UNKNOWN = 0, /* not evaluated (stopped at an earlier miss) */
	CM_GROUP_MEMBER,
	CM_GROUP_NOT_MEMBER,
	CM_GROUP_MISSING, /* the group does not exist */
	CM_GROUP_NO_SID,  /* ad: the group has no readable objectSid */
};

/* Is account_dn a member (nested) of each groups[i]? Fills answers[0..n).
 * With stop_at_miss the groups are decided in order and the first answer
 * that is not MEMBER ends the check (later ones stay UNKNOWN). Returns OK,
 * NOT_FOUND (ad: the account no longer exists) or UNAVAILABLE (err). Adds
 * "groups: …" trace lines. */
enum cm_groups_status cm_groups_check(const struct cm_config *cfg, struct cm_dir *dir,
				      const char *account_dn, char *const *groups, size_t n,
				      bool stop_at_miss, enum cm_group_answer *answers,
				      struct cm_trace *trace, struct cm_err *err);

/* A group given as a DN (anything with '=') or a name: ad cn or
 * sAMAccountName, rfc4523 cn, searched under directory.base_dn. *dn
 * (malloc'd) is the group's DN as the directory spells it. NOT_FOUND and
 * AMBIGUOUS explain themselves in err. */
enum cm_groups_status cm_groups_resolve(const struct cm_config *cfg, struct cm_dir *dir,
					const char *dn_or_name, char **dn, struct cm_trace *trace,
					struct cm_err *err);

/* Every account that is a member of group_dn, nested membership (and in ad
 * the primary group) included, with attrs (NULL-terminated; more may come
 * back). Groups themselves are not listed; each account once. *out is always
 * initialized; on INCOMPLETE it holds what was read, which must not be taken
 * for the whole group. */
enum cm_groups_status cm_groups_members(const struct cm_config *cfg, struct cm_dir *dir,
					const char *group_dn, const char *const *attrs,
					struct cm_dir_result *out, struct cm_trace *trace,
					struct cm_err *err);

/* A set of DNs compared as the directory compares them (cm_dir_dn_key). */
struct cm_dnset {
	char **keys; /* open addressing; NULL = free slot */
	size_t cap;
	size_t n;
};

/* 1 added, 0 already there, -1 out of memory or unparseable DN. */
int cm_dnset_add(struct cm_dnset *set, const char *dn);
bool cm_dnset_has(const struct cm_dnset *set, const char *dn);
void cm_dnset_free(struct cm_dnset *set);

#endif
