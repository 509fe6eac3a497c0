/* certmapctl — subcommands (each returns the process exit code). */
#ifndef CERTMAPCTL_H
#define CERTMAPCTL_H

#define CTL_EXIT_ALLOW 0
#define CTL_EXIT_DENY 1
#define CTL_EXIT_USAGE 2

int ctl_check(int argc, char **argv);
int ctl_publish(int argc, char **argv);
int ctl_audit(int argc, char **argv);

/* ---- shared by publish and audit (ctl_common.c) ---- */
#include <stdio.h>
#include <time.h>

#include <jansson.h>

#include "certmap/config.h"
#include "certmap/directory.h"
#include "certmap/inventory.h"

/* Config, directory handle, classifier and the group, for one run. */
struct ctl_session {
	const char *prog; /* "certmapctl publish" */
	struct cm_config *cfg;
	struct cm_dir *dir;
	struct cm_classifier *classifier;
	char *group_dn;
	time_t now;
};

/* Loads the config (CM_CONFIG_FOR_CHECK), trust and CRLs (plus the optional
 * intermediates file), opens the directory and resolves group (NULL = the
 * first authorization.required_groups). Returns 0, or the exit code after
 * printing why: CTL_EXIT_USAGE (config, files, unknown or ambiguous group),
 * CTL_EXIT_DENY (directory unavailable). */
int ctl_session_open(struct ctl_session *s, const char *prog, const char *config, const char *group,
		     const char *intermediates, time_t now);
void ctl_session_close(struct ctl_session *s);

/* ISO 8601 UTC "2026-11-22T10:00:00Z" of t. */
void ctl_time_iso(time_t t, char out[21]);
/* "--at" parsing: 0 and *out, -1 on a malformed time. */
int ctl_parse_time(const char *s, time_t *out);
/* The same for an option value; on error prints "PROG: --at: expected …" to stderr. */
int ctl_opt_at(const char *prog, const char *arg, time_t *out);
/* 0 when no operand is left after the options, else prints "PROG: unexpected argument" and -1. */
int ctl_no_operands(const char *prog, int optind_, int argc, char **argv);
/* A JSON string of untrusted text (sanitized), or null for NULL. */
json_t *ctl_json_str(const char *s);
/* {"binds":…,"searches":…,"modifies":…,"operations":…} */
json_t *ctl_ldap_stats_json(struct cm_dir *dir);
/* "12 LDAP operations (1 bind, 9 searches, 2 modifies)" into buf. */
void ctl_ldap_stats_text(struct cm_dir *dir, char *buf, size_t size);

#endif
