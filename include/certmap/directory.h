/*
 * directory — LDAP access for mapping and policy (OpenLDAP libldap).
 * Owns one connection to the first URI of directory.uris that answers;
 * connect and every operation are bounded by directory.timeout_ms per
 * server, then the next URI is tried (failover). LDAPS and StartTLS verify
 * the server against directory.ca_file (TLS demand, new context per handle).
 * Simple bind with the configured DN and password (or anonymous).
 * Referrals are never chased; every search has a size and a time limit.
 * Results are copied into plain structs (binary-safe values).
 * Writes are value-level only (add or delete listed values of one attribute,
 * never a replace); a write the server refuses (rights, constraints, entry
 * gone) is that call's answer, not an outage.
 * Every operation sent (bind, search or search page, modify) is counted.
 * Threading: a struct cm_dir serializes its operations with an internal
 * mutex; callers on many threads may share one.
 */
#ifndef CERTMAP_DIRECTORY_H
#define CERTMAP_DIRECTORY_H

#include <stdbool.h>
#include <stddef.h>

#include "certmap/config.h"
#include "certmap/trace.h"
#include "certmap/util.h"

#define CM_DIR_MAX_ENTRIES 64                  /* default size limit of a search */
#define CM_DIR_MAX_VALUE_BYTES (1024u * 1024u) /* one attribute value */
#define CM_DIR_PAGE_ENTRIES 1000               /* default page of a paged search (AD MaxPageSize) */
#define CM_DIR_MAX_PAGED_ENTRIES 10000000u     /* default bound of a whole paged search */

enum cm_dir_scope { CM_DIR_SCOPE_BASE, CM_DIR_SCOPE_ONE, CM_DIR_SCOPE_SUBTREE };

enum cm_dir_status {
	CM_DIR_OK = 0,
	CM_DIR_NO_SUCH_OBJECT = 1, /* base DN does not exist (not an outage) */
	CM_DIR_UNAVAILABLE = -1,   /* every server failed, timed out, or erred */
	CM_DIR_REFUSED = 2,        /* a write the server refused (rights, constraint, …):
				    * this call failed, the directory is fine */
};

enum cm_dir_mod_op { CM_DIR_MOD_ADD, CM_DIR_MOD_DELETE };

/* Operations this handle sent to servers (each page of a paged search counts
 * as one search). */
struct cm_dir_stats {
	unsigned long binds;
	unsigned long searches;
	unsigned long modifies;
};

struct cm_dir_value {
	unsigned char *data; /* NUL-terminated copy; len excludes the NUL */
	size_t len;
};

struct cm_dir_attr {
	char *name; /* as returned (may carry ";binary") */
	struct cm_dir_value *values;
	size_t n_values;
};

struct cm_dir_entry {
	char *dn;
	struct cm_dir_attr *attrs;
	size_t n_attrs;
};

struct cm_dir_result {
	struct cm_dir_entry *entries;
	size_t n_entries;
	bool truncated; /* size limit reached: more entries exist */
};

struct cm_dir;

/* Creates the handle; connects lazily on the first search. Borrows cfg. */
int cm_dir_open(const struct cm_config *cfg, struct cm_dir **out, struct cm_err *err);
void cm_dir_free(struct cm_dir *dir);

/* Searches; attrs NULL-terminated. size_limit 0 = CM_DIR_MAX_ENTRIES.
 * On CM_DIR_UNAVAILABLE err says which servers failed and why; trace gets
 * "ldap: …" lines (URI used, filter, entries). *out is always initialized. */
enum cm_dir_status cm_dir_search(struct cm_dir *dir, const char *base, enum cm_dir_scope scope,
				 const char *filter, const char *const *attrs, size_t size_limit,
				 struct cm_dir_result *out, struct cm_trace *trace,
				 struct cm_err *err);
void cm_dir_result_free(struct cm_dir_result *res);

/* A search with the simple paged results control (RFC 2696,
 * 1.2.840.113556.1.4.319) for scans of any size: pages of page_size entries
 * (0 = CM_DIR_PAGE_ENTRIES), at most max_entries in all (0 =
 * CM_DIR_MAX_PAGED_ENTRIES). Each page is one operation bounded by
 * directory.timeout_ms. A server failure mid-way restarts the whole search on
 * the next URI (cookies belong to one server). out->truncated when
 * max_entries or a server size limit (e.g. slapd's size.prtotal) stopped it
 * early: the caller must not take the result as complete. A server that
 * ignores the control answers in one page up to its own size limit. */
enum cm_dir_status cm_dir_search_paged(struct cm_dir *dir, const char *base,
				       enum cm_dir_scope scope, const char *filter,
				       const char *const *attrs, size_t page_size,
				       size_t max_entries, struct cm_dir_result *out,
				       struct cm_trace *trace, struct cm_err *err);

/* Adds or deletes values of one attribute of dn in one LDAP modify (never a
 * replace). CM_DIR_OK also when the change was already so: an add of a value
 * that is present (attributeOrValueExists) or a delete of one that is absent
 * (noSuchAttribute); *ldap_code (may be NULL) then tells which, else
 * LDAP_SUCCESS. CM_DIR_NO_SUCH_OBJECT: dn does not exist. CM_DIR_REFUSED:
 * the server answered with another error for this change
 * (insufficientAccessRights, constraintViolation, unwillingToPerform,
 * referral, …), named in err; not an outage. CM_DIR_UNAVAILABLE: no server
 * could be asked (connect, bind, timeout, busy/unavailable on every URI). A
 * write is retried on the next URI only when no answer came; a value-level
 * add/delete applied twice lands as "already so". */
enum cm_dir_status cm_dir_modify_values(struct cm_dir *dir, const char *dn, const char *attr,
					enum cm_dir_mod_op op, const struct cm_dir_value *values,
					size_t n_values, int *ldap_code, struct cm_trace *trace,
					struct cm_err *err);

/* Counters since cm_dir_open. */
void cm_dir_get_stats(struct cm_dir *dir, struct cm_dir_stats *out);

/* Attribute of an entry by name, case-insensitive, ignoring options such as
 * ";binary"; NULL when absent. */
const struct cm_dir_attr *cm_dir_entry_attr(const struct cm_dir_entry *e, const char *name);
/* First value as a string, or NULL. */
const char *cm_dir_entry_str(const struct cm_dir_entry *e, const char *name);

/* Escapes any bytes as an LDAP filter value (binary-safe, RFC 4515); malloc'd. */
char *cm_dir_escape_value(const void *data, size_t len);

/* Milliseconds spent in LDAP operations by this handle since the last call
 * (the caller's "directory_ms"). Not meaningful across threads. */
double cm_dir_take_elapsed_ms(struct cm_dir *dir);

/* Compares two DNs as the directory would (normalized, case-insensitive
 * attribute values); true when equal. */
bool cm_dir_dn_equal(const char *a, const char *b);

/* A DN's comparison key: the normalized RFC 4514 form, ASCII-lowercased, so
 * that two DNs are cm_dir_dn_equal exactly when their keys are strcmp-equal;
 * malloc'd, NULL when dn does not parse. */
char *cm_dir_dn_key(const char *dn);

#endif
