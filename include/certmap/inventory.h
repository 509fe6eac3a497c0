/*
 * inventory — the certificates stored on directory accounts, as
 * `certmapctl publish` and `audit` see them (DESIGN §11): the members of a
 * group (nested) and, directory-wide, every account holding a
 * userCertificate value, each value classified against the configured trust.
 *
 * Classification of one stored value (DER): "managed" = issued under
 * client_certificates.trusted_issuers (its chain verifies to an anchor, time
 * ignored: an expired managed cert is still managed); "usable" = certmapd
 * would accept it now (chain, validity, EKU/KU as configured, revocation as
 * configured — CRL files only here). Results are cached by SHA-256, so one
 * certificate on many accounts is verified once.
 * Threading: a struct cm_classifier caches (mutable): one thread. An
 * inventory is plain data.
 */
#ifndef CERTMAP_INVENTORY_H
#define CERTMAP_INVENTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "certmap/config.h"
#include "certmap/directory.h"
#include "certmap/trace.h"
#include "certmap/util.h"
#include "certmap/x509.h"

/* What a stored (or to-be-published) certificate is. */
struct cm_inv_class {
	bool parsed;        /* one DER certificate */
	bool managed;       /* chain to a trusted issuer, time ignored */
	bool expired;       /* leaf notAfter < now */
	bool not_yet_valid; /* leaf notBefore > now */
	bool revoked;       /* a configured CRL lists it (chain verified) */
	bool usable;        /* certmapd's x509 + revocation checks pass now */
	char *problem;      /* why not usable ("expired (valid … to …)"); NULL when usable */
	char *subject, *issuer, *serial; /* RFC 4514 / lowercase hex; NULL if unparsed */
	char *upn_san, *email_san;       /* SAN UPN otherName, first rfc822Name; or NULL */
	char not_after[21];
};

struct cm_inv_value {
	unsigned char *der;
	size_t len;
	char sha256[65];
	struct cm_inv_class cls; /* filled by cm_inventory_classify */
};

struct cm_inv_account {
	char *dn;
	char *name; /* sAMAccountName (ad) or uid (rfc4523); may be NULL */
	char *upn;  /* userPrincipalName (ad) or NULL */
	char *mail; /* or NULL */
	bool member;
	struct cm_inv_value *values;
	size_t n_values;
};

struct cm_inventory {
	char *group_dn;
	struct cm_inv_account *accounts; /* members first (directory order), then holders */
	size_t n;
	size_t n_members;
};

/* Trust, CRLs and the moment of classification. Borrows cfg. intermediates
 * (may be NULL) are extra CA certificates (PEM file) offered for chain
 * building — never anchors — like a device's chain. */
struct cm_classifier;
int cm_classifier_new(const struct cm_config *cfg, const char *intermediates_file, time_t now,
		      struct cm_classifier **out, struct cm_err *err);
void cm_classifier_free(struct cm_classifier *c);

/* Classifies len bytes at der into *out (fields owned by *out: free with
 * cm_inv_class_clear). Cached by SHA-256. -1 only when out of memory. */
int cm_classify(struct cm_classifier *c, const unsigned char *der, size_t len,
		struct cm_inv_class *out);
void cm_inv_class_clear(struct cm_inv_class *cls);

/* The certificate attribute of the dialect: "userCertificate" (ad) or
 * "userCertificate;binary" (rfc4523). */
const char *cm_inventory_cert_attr(const struct cm_config *cfg);

enum cm_inventory_scope {
	CM_INVENTORY_MEMBERS,     /* the group's members (with their values) */
	CM_INVENTORY_ALL_HOLDERS, /* members, plus every other account holding a value */
};

/* Reads the inventory. Returns CM_DIR_OK, or CM_DIR_UNAVAILABLE with err
 * (also when a size limit made a list incomplete: acting on part of a group
 * could remove certificates from members). *out is always initialized. */
enum cm_dir_status cm_inventory_load(const struct cm_config *cfg, struct cm_dir *dir,
				     const char *group_dn, enum cm_inventory_scope scope,
				     struct cm_inventory *out, struct cm_trace *trace,
				     struct cm_err *err);

/* Builds one account from a search entry (pure; exposed for tests). */
int cm_inventory_add_entry(const struct cm_config *cfg, const struct cm_dir_entry *e, bool member,
			   struct cm_inventory *inv);

/* Classifies every value. -1 out of memory. */
int cm_inventory_classify(struct cm_inventory *inv, struct cm_classifier *c);

void cm_inventory_free(struct cm_inventory *inv);

/* SHA-256 of len bytes, lowercase hex. */
void cm_sha256_hex(const unsigned char *data, size_t len, char out[65]);

#endif
