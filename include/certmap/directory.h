/*
 * directory — LDAP access for mapping and policy (OpenLDAP libldap).
 * Owns one connection to the first URI of directory.uris that answers;
 * connect and every operation are bounded by directory.timeout_ms per
 * server, then the next URI is tried (failover). LDAPS and StartTLS verify
 * the server against directory.ca_file (TLS demand, new context per handle).
 * Simple bind with the configured DN and password (or anonymous).
 * Referrals are never chased; every search has a size and a time limit.
 * Results are copied into plain structs (binary-safe values).
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

#define CM_DIR_MAX_ENTRIES 64      /* default size limit of a search */
#define CM_DIR_MAX_VALUE_BYTES (1024u * 1024u) /* one attribute value */

enum cm_dir_scope { CM_DIR_SCOPE_BASE, CM_DIR_SCOPE_ONE, CM_DIR_SCOPE_SUBTREE };

enum cm_dir_status {
	CM_DIR_OK = 0,
	CM_DIR_NO_SUCH_OBJECT = 1, /* base DN does not exist (not an outage) */
	CM_DIR_UNAVAILABLE = -1,   /* every server failed, timed out, or erred */
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

#endif
