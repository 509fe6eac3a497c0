/*
 * config — strict JSON configuration (DESIGN §6) → immutable struct cm_config.
 * Unknown keys, wrong types and bad values are errors that name the file, the
 * JSON path and what was expected ("FILE: $.directory.uris[1]: expected an
 * ldap:// or ldaps:// URI"). All errors are collected, not only the first.
 * Relative paths are resolved against the config file's directory; file keys
 * are checked to be readable; the bind password file is read here (and must
 * not be group/world-readable) and wiped on free.
 * Threading: a loaded config is immutable and may be shared by threads.
 */
#ifndef CERTMAP_CONFIG_H
#define CERTMAP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "certmap/decision.h"

#define CM_CONFIG_MAX_BYTES (1024u * 1024u)
#define CM_CONFIG_MAX_LIST 64 /* entries in any list key */
#define CM_CONFIG_MAX_ERRORS 100

enum cm_revocation_mode { CM_REVOCATION_OFF, CM_REVOCATION_SOFT, CM_REVOCATION_HARD };
enum cm_dialect { CM_DIALECT_AD, CM_DIALECT_RFC4523 };
enum cm_cert_mode { CM_CERT_REQUIRE, CM_CERT_ACCEPT, CM_CERT_IGNORE };
enum cm_basic_binding { CM_BASIC_OFF, CM_BASIC_IF_PRESENT, CM_BASIC_REQUIRED };
enum cm_on_ambiguous { CM_AMBIGUOUS_DENY, CM_AMBIGUOUS_BASIC_USER };
enum cm_identity { CM_IDENTITY_BASIC, CM_IDENTITY_HEADERS };
enum cm_errors_mode { CM_ERRORS_CUSTOM, CM_ERRORS_DETAILED };

/* What the caller needs: certmapctl check needs only the decision sections,
 * certmapd needs listen and upstream as well. */
enum cm_config_purpose { CM_CONFIG_FOR_CHECK, CM_CONFIG_FOR_DAEMON };

struct cm_strlist {
	char **v;
	size_t n;
};

struct cm_listen {
	char *address;
	int port;
	char *certificate; /* resolved path */
	char *key;         /* resolved path; must not be group/world-readable */
};

struct cm_location {
	char *path; /* as written, must start with '/' */
	enum cm_cert_mode client_certificate;
};

struct cm_config {
	char *file; /* the config file as given */
	char *dir;  /* its directory, base of relative paths */

	struct cm_listen *listen;
	size_t n_listen;

	struct {
		bool enabled;  /* key present */
		char *address; /* default "127.0.0.1" */
		int port;      /* default 9090 */
	} admin;

	struct {
		struct cm_strlist trusted_issuers; /* resolved paths, at least one */
		bool require_client_auth_eku;      /* default true */
		struct {
			enum cm_revocation_mode mode; /* default off */
			struct cm_strlist crl_files;  /* resolved paths */
			bool fetch_cdp;               /* default false */
			bool ocsp;                    /* default false */
			char *ocsp_responder;         /* NULL = none */
			int timeout_ms;               /* default 3000 */
			int cdp_timeout_ms;           /* extension; default timeout_ms */
			int ocsp_timeout_ms;          /* extension; default timeout_ms */
		} revocation;
	} client_certificates;

	/* Default when the key is absent: one location "/" with "require". */
	struct cm_location *locations;
	size_t n_locations;

	struct {
		struct cm_strlist uris;  /* at least one; ldap:// or ldaps:// */
		enum cm_dialect dialect; /* default ad */
		char *base_dn;           /* required */
		char *bind_dn;           /* NULL = anonymous */
		char *bind_password_file;
		char *bind_password;  /* read from the file at load; wiped on free */
		char *ca_file;        /* NULL = system default */
		bool starttls;        /* default false */
		int timeout_ms;       /* default 3000 */
		char *netbios_domain; /* NULL = not checked */
		char *dns_domain;     /* derived from the DC= parts of base_dn */
	} directory;

	struct {
		enum cm_method methods[CM_METHOD_COUNT]; /* default [user_certificate] */
		size_t n_methods;
		enum cm_on_ambiguous on_ambiguous; /* default deny */
	} mapping;

	struct {
		struct cm_strlist required_groups;        /* DNs */
		bool check_account_state;                 /* default true */
		enum cm_basic_binding basic_user_binding; /* default off */
	} authorization;

	struct {
		bool present;
		char *url;
		char *ca_file;
		bool verify;               /* default true */
		enum cm_identity identity; /* default basic */
		long timeout_s;            /* default 10800 */
	} upstream;

	struct {
		int ttl_s;          /* default 300 */
		int negative_ttl_s; /* default 30 */
		long max_entries;   /* default 100000 */
	} cache;

	struct {
		char *access_log; /* NULL = none */
		char *audit_log;  /* NULL = none */
	} logging;

	/* certmapd tuning (extension; every key optional). */
	struct {
		int threads;                 /* event loops; default 0 = one per CPU */
		int decision_threads;        /* directory lookups run here; default 4 */
		int max_connections;         /* default 10000 */
		int connection_memory_bytes; /* per-connection buffer (request head); default 16384 */
		int client_timeout_s;        /* idle client connection; default 10800 */
		int handshake_timeout_s;     /* TCP accept to first TLS byte; default 10 */
		int request_header_timeout_s; /* TLS handshake + first request head; default 30 */
		int shutdown_timeout_s;       /* SIGTERM drain deadline; default 30 */
		int max_request_head_bytes;   /* 431 above; default 16384 */
		bool tls_session_tickets;     /* default true */
		char *tls_ticket_key_file;    /* NULL = a random key per process */
	} server;

	enum cm_errors_mode errors; /* default custom */
	char *user;                 /* NULL = do not drop privileges */
};

/* Collected error lines, each "FILE: $.path: what was expected". */
struct cm_config_errors {
	char **lines;
	size_t n;
};

/* 0 and *out on success; -1 with errs filled otherwise (at least one line). */
int cm_config_load(const char *file, enum cm_config_purpose purpose, struct cm_config **out,
		   struct cm_config_errors *errs);
void cm_config_free(struct cm_config *cfg);
void cm_config_errors_free(struct cm_config_errors *errs);

/* The location for a normalized path: whole-segment prefix, case-insensitive,
 * longest wins; NULL when none matches. */
const struct cm_location *cm_config_location(const struct cm_config *cfg, const char *path);

const char *cm_dialect_name(enum cm_dialect d);
const char *cm_revocation_mode_name(enum cm_revocation_mode m);

#endif
