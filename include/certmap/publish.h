/*
 * publish — what `certmapctl publish` changes (DESIGN §11), decided before
 * anything is written: certificate sources (--cert, --cert-dir, --map CSV)
 * are read and classified, matched to the group's members, and turned into
 * a plan of value-level adds and deletes. Applying the plan is the caller's
 * (tools/publish.c); everything here but the file reading is pure.
 *
 * Rules: a value is added only when the same DER is not already on the
 * account; only managed values (issued under trusted_issuers) are ever
 * deleted — with --prune from accounts outside the group, with
 * --replace-expired the expired ones of an account that gets a new cert (after
 * its add succeeded). Sources that are not managed certificates are refused:
 * nothing could ever remove them again.
 * Threading: plain data; one thread.
 */
#ifndef CERTMAP_PUBLISH_H
#define CERTMAP_PUBLISH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certmap/config.h"
#include "certmap/inventory.h"
#include "certmap/util.h"

#define CM_PUB_MAX_MAP_ROWS 1000000u  /* lines of a --map CSV */
#define CM_PUB_MAX_DIR_FILES 1000000u /* certificate files in a --cert-dir */
#define CM_PUB_NONE SIZE_MAX          /* no account */

/* ---- --map CSV: "account,certfile" per line ----
 * RFC 4180 fields (double quotes, "" inside quotes); an optional UTF-8 BOM;
 * blank lines and lines starting with '#' are skipped; a first row
 * "account,certfile" (any case) is a header. Unquoted fields are trimmed.
 * Relative certfile paths are relative to base_dir (the CSV's directory). */
struct cm_pub_map_row {
	char *account;
	char *file; /* resolved */
	size_t line;
};

struct cm_pub_map {
	struct cm_pub_map_row *rows;
	size_t n;
};

/* -1 with err "line N: …" on the first malformed line. */
int cm_pub_map_parse(const char *text, size_t len, const char *base_dir, struct cm_pub_map *out,
		     struct cm_err *err);
int cm_pub_map_read(const char *path, struct cm_pub_map *out, struct cm_err *err);
void cm_pub_map_free(struct cm_pub_map *map);

/* Regular files named *.pem, *.cer, *.crt, *.der (any case) directly in dir,
 * sorted by name; paths malloc'd. */
int cm_pub_dir_list(const char *dir, char ***files, size_t *n, struct cm_err *err);

/* ---- sources ---- */

enum cm_pub_how {
	CM_PUB_HOW_NONE,
	CM_PUB_HOW_ALL,   /* --cert: every member */
	CM_PUB_HOW_NAME,  /* file base name = account name */
	CM_PUB_HOW_UPN,   /* UPN SAN = userPrincipalName (ad) or mail */
	CM_PUB_HOW_EMAIL, /* e-mail SAN = mail (or userPrincipalName, ad) */
	CM_PUB_HOW_MAP,   /* --map row */
};

struct cm_pub_source {
	char *file;
	char *account;      /* --map: the account named; else NULL */
	size_t line;        /* --map line, else 0 */
	unsigned char *der; /* the first certificate of the file */
	size_t len;
	char sha256[65];
	char *upn_san; /* from the certificate, or NULL */
	char *email_san;
	struct cm_inv_class cls;
	/* matching */
	size_t target; /* account index, CM_PUB_NONE (HOW_ALL: every member) */
	enum cm_pub_how how;
	char *skip; /* why it is not published; NULL = published */
	bool error; /* skip is an error (exit 1), else a warning */
	char *note; /* published, with this warning (e.g. not yet valid) */
};

/* Reads and classifies one file into *out (always initialized). A file that
 * cannot be read or is no certificate, or a certificate not issued under the
 * trusted issuers, comes back with out->skip and out->error set; an expired
 * or revoked one with a warning skip; one certmapd would refuse for another
 * reason (not yet valid, EKU) is published with out->note. -1 only when out
 * of memory. */
int cm_pub_source_load(const char *file, const char *account, size_t line,
		       struct cm_classifier *classifier, struct cm_pub_source *out);
void cm_pub_source_clear(struct cm_pub_source *src);

enum cm_pub_mode { CM_PUB_MODE_CERT, CM_PUB_MODE_DIR, CM_PUB_MODE_MAP };

/* Matches sources without a skip to members of inv (target/how, or
 * skip+error). DIR: the member named by the file's base name, else the
 * member whose userPrincipalName (ad) or mail equals the certificate's UPN or
 * e-mail SAN; a SAN that names another member than the file name does is an
 * error, as is a match on several members. MAP: the member named; others
 * are skipped with a warning. Names compare case-insensitively. dialect_ad
 * enables userPrincipalName. -1 only when out of memory. */
int cm_pub_match(const struct cm_inventory *inv, bool dialect_ad, enum cm_pub_mode mode,
		 struct cm_pub_source *src, size_t n);

/* ---- the plan ---- */

enum cm_pub_action { CM_PUB_ADD, CM_PUB_DELETE };
enum cm_pub_why { CM_PUB_WHY_NEW, CM_PUB_WHY_REPLACED, CM_PUB_WHY_PRUNED };
enum cm_pub_result {
	CM_PUB_PENDING,
	CM_PUB_DONE,
	CM_PUB_ALREADY, /* the directory said it was already so */
	CM_PUB_FAILED,
	CM_PUB_SKIPPED, /* not attempted (the account's add failed first) */
};

struct cm_pub_change {
	enum cm_pub_action action;
	enum cm_pub_why why;
	size_t account;           /* index in the inventory */
	const unsigned char *der; /* borrowed from a source or the inventory */
	size_t len;
	char sha256[65];
	const char *subject; /* borrowed; may be NULL */
	size_t source;       /* adds: index of the source; else CM_PUB_NONE */
	char *reason;        /* human text */
	enum cm_pub_result result;
	char *error; /* FAILED/SKIPPED: why */
};

struct cm_pub_plan {
	struct cm_pub_change *v;
	size_t n;
	size_t present;  /* (account, cert) pairs already in place */
	size_t targeted; /* members that got at least one source */
};

struct cm_pub_options {
	bool prune;
	bool replace_expired;
};

/* Builds the plan: per account (inventory order) its adds, then its
 * replacements' deletes; prune deletes for non-members. -1 out of memory. */
int cm_pub_plan_build(const struct cm_inventory *inv, const struct cm_pub_source *src, size_t n_src,
		      const struct cm_pub_options *opt, struct cm_pub_plan *out);
void cm_pub_plan_free(struct cm_pub_plan *plan);

const char *cm_pub_how_name(enum cm_pub_how how);
const char *cm_pub_why_name(enum cm_pub_why why);
const char *cm_pub_result_name(enum cm_pub_result r);

#endif
