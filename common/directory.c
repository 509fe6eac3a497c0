/*
 * directory — LDAP access for mapping and policy (include/certmap/directory.h).
 *
 * Owns at most one LDAP handle, connected and bound to one URI of
 * directory.uris (dir->cur). The connection is made lazily and kept. When an
 * operation fails in a way that says "this server" (down, timed out, TLS,
 * bind, busy), the handle is closed and the next URI is tried, wrapping
 * around once from the current one: one call tries each URI at most once
 * (plus one immediate reconnect when a kept connection turned out to be
 * closed by the server). Every blocking step is bounded by
 * directory.timeout_ms: TCP connect (LDAP_OPT_NETWORK_TIMEOUT), TLS handshake
 * (see connect_uri), socket reads and writes (SO_RCVTIMEO/SO_SNDTIMEO),
 * synchronous calls such as StartTLS (LDAP_OPT_TIMEOUT), bind and search
 * (ldap_result with a timeout), plus a server-side time and size limit on
 * every search. A server that accepts TCP and never answers therefore costs
 * about one timeout before the next URI is tried.
 * TLS options are set on each handle (LDAP_OPT_X_TLS_NEWCTX), never globally;
 * certificate checking is "demand" with directory.ca_file.
 * Paged searches and value-level modifies share one failover loop
 * (with_failover); a paged search that fails mid-way starts over on the next
 * server, a modify is retried elsewhere only when no answer came.
 * Threading: dir->lock serializes every operation on the handle.
 */
#include "certmap/directory.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <lber.h>
#include <ldap.h>

#define TRACE_FILTER_MAX 160 /* bytes of a filter shown in a trace line */
#define FAILURE_MSG_MAX 200  /* bytes of one server's failure text */

struct cm_dir {
	const struct cm_config *cfg; /* borrowed */
	pthread_mutex_t lock;
	LDAP *ld;          /* connected and bound to uris[cur], or NULL */
	size_t cur;        /* URI in use, or the one to try first */
	double elapsed_ms; /* time in LDAP calls since the last take */
	struct cm_dir_stats stats;
};

/* How an attempt on one server ended. */
enum attempt {
	ATTEMPT_OK,
	ATTEMPT_NO_SUCH_OBJECT,
	ATTEMPT_FAILOVER, /* this server is unusable: close it, try the next */
	ATTEMPT_FATAL,    /* the request itself failed: other servers would agree */
	ATTEMPT_REFUSED,  /* a write this server answered with an error (not an outage) */
};

int cm_dir_open(const struct cm_config *cfg, struct cm_dir **out, struct cm_err *err)
{
	struct cm_dir *dir;
	int rc;

	*out = NULL;
	if (cfg == NULL || cfg->directory.uris.n == 0) {
		cm_err_set(err, "directory: no URI configured");
		return -1;
	}
	dir = calloc(1, sizeof(*dir));
	if (dir == NULL) {
		cm_err_set(err, "directory: out of memory");
		return -1;
	}
	rc = pthread_mutex_init(&dir->lock, NULL);
	if (rc != 0) {
		cm_err_set(err, "directory: pthread_mutex_init: %s", strerror(rc));
		free(dir);
		return -1;
	}
	dir->cfg = cfg;
	*out = dir;
	return 0;
}

static void close_handle(struct cm_dir *dir)
{
	if (dir->ld != NULL) {
		ldap_unbind_ext_s(dir->ld, NULL, NULL);
		dir->ld = NULL;
	}
}

void cm_dir_free(struct cm_dir *dir)
{
	if (dir == NULL)
		return;
	close_handle(dir);
	pthread_mutex_destroy(&dir->lock);
	free(dir);
}

static int timeout_ms(const struct cm_dir *dir)
{
	int ms = dir->cfg->directory.timeout_ms;

	return ms > 0 ? ms : 3000;
}

static struct timeval ms_to_tv(int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};

	return tv;
}

/* "<prefix>Can't contact LDAP server (diagnostic)" for rc on ld, into buf
 * (truncated to size). server_msg, when given, is the server's text. */
static void describe(LDAP *ld, int rc, const char *server_msg, const char *prefix, char *buf,
		     size_t size)
{
	char *diag = NULL;
	const char *extra = server_msg;
	int n;

	if ((extra == NULL || extra[0] == '\0') && ld != NULL &&
	    ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag) == LDAP_OPT_SUCCESS)
		extra = diag;
	if (extra != NULL && strcmp(extra, "(unknown error code)") == 0)
		extra = NULL; /* libldap's text for GnuTLS verification failures */
	n = snprintf(buf, size, "%s%s", prefix, ldap_err2string(rc));
	if (n >= 0 && (size_t)n < size && extra != NULL && extra[0] != '\0')
		snprintf(buf + n, size - (size_t)n, " (%s)", extra);
	if (diag != NULL)
		ldap_memfree(diag);
}

/* Does a result code say "this server cannot serve us now"? */
static bool is_server_failure(int rc)
{
	switch (rc) {
	case LDAP_SERVER_DOWN:
	case LDAP_LOCAL_ERROR:
	case LDAP_ENCODING_ERROR:
	case LDAP_DECODING_ERROR:
	case LDAP_TIMEOUT:
	case LDAP_CONNECT_ERROR:
	case LDAP_TIMELIMIT_EXCEEDED:
	case LDAP_ADMINLIMIT_EXCEEDED:
	case LDAP_BUSY:
	case LDAP_UNAVAILABLE:
	case LDAP_UNWILLING_TO_PERFORM:
	case LDAP_OTHER:
		return true;
	default:
		return false;
	}
}

static int set_opt(LDAP *ld, int opt, const void *val, const char *name, char *msg, size_t size)
{
	int rc = ldap_set_option(ld, opt, val);

	if (rc != LDAP_OPT_SUCCESS) {
		snprintf(msg, size, "cannot set %s: %s", name, ldap_err2string(rc));
		return -1;
	}
	return 0;
}

/* Waits for the bind answer; LDAP_SUCCESS or an error code with msg. */
static int bind_handle(struct cm_dir *dir, LDAP *ld, char *msg, size_t size)
{
	const char *dn = dir->cfg->directory.bind_dn;
	const char *pw = dir->cfg->directory.bind_password;
	struct berval cred = {0, NULL};
	struct timeval tv = ms_to_tv(timeout_ms(dir));
	LDAPMessage *res = NULL;
	char *errmsg = NULL;
	int msgid = -1, rc, code = LDAP_SUCCESS;

	if (dn != NULL) {
		if (pw == NULL || pw[0] == '\0') {
			/* an empty password would be an unauthenticated bind (RFC 4513 5.1.2) */
			snprintf(msg, size, "no bind password for %s", dn);
			return LDAP_INVALID_CREDENTIALS;
		}
		cred.bv_val = (char *)pw;
		cred.bv_len = strlen(pw);
	}
	rc = ldap_sasl_bind(ld, dn != NULL ? dn : "", LDAP_SASL_SIMPLE, &cred, NULL, NULL, &msgid);
	if (rc != LDAP_SUCCESS) {
		describe(ld, rc, NULL, "", msg, size);
		return rc;
	}
	dir->stats.binds++;
	rc = ldap_result(ld, msgid, LDAP_MSG_ALL, &tv, &res);
	if (rc == 0) {
		snprintf(msg, size, "bind timed out after %d ms", timeout_ms(dir));
		return LDAP_TIMEOUT;
	}
	if (rc < 0) {
		if (ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &code) != LDAP_OPT_SUCCESS ||
		    code == LDAP_SUCCESS)
			code = LDAP_SERVER_DOWN;
		describe(ld, code, NULL, "", msg, size);
		return code;
	}
	rc = ldap_parse_result(ld, res, &code, NULL, &errmsg, NULL, NULL, 1);
	if (rc != LDAP_SUCCESS) {
		describe(ld, rc, NULL, "", msg, size);
		ldap_memfree(errmsg);
		return rc;
	}
	if (code != LDAP_SUCCESS) {
		char prefix[FAILURE_MSG_MAX];

		snprintf(prefix, sizeof(prefix), "bind%s%s: ", dn != NULL ? " as " : " anonymously",
			 dn != NULL ? dn : "");
		describe(NULL, code, errmsg, prefix, msg, size);
	}
	ldap_memfree(errmsg);
	return code;
}

/* "ldap://host:port" for an ldaps:// URI (port 636 when none is given), so
 * that the TCP connect and the TLS handshake are separate steps; malloc'd. */
static char *plain_uri_of(const char *uri)
{
	LDAPURLDesc *lud = NULL;
	const char *host;
	char *out;
	int port;

	if (ldap_url_parse(uri, &lud) != LDAP_URL_SUCCESS)
		return NULL;
	host = lud->lud_host != NULL ? lud->lud_host : "";
	port = lud->lud_port > 0 ? lud->lud_port : LDAPS_PORT;
	out = cm_strdup_printf(strchr(host, ':') != NULL ? "ldap://[%s]:%d" : "ldap://%s:%d", host,
			       port);
	ldap_free_urldesc(lud);
	return out;
}

/* Bounds every blocking read and write on the connection's socket. */
static int set_socket_timeouts(LDAP *ld, int ms, char *msg, size_t size)
{
	struct timeval tv = ms_to_tv(ms);
	int fd = -1;

	if (ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0) {
		snprintf(msg, size, "connect: no socket");
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
		snprintf(msg, size, "connect: setsockopt: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Prefix of a TLS failure: a handshake that failed (not timed out) is most
 * often an untrusted or misnamed server certificate. */
static const char *tls_prefix(int rc, const char *step)
{
	if (rc != LDAP_CONNECT_ERROR)
		return strcmp(step, "TLS") == 0 ? "TLS: " : "StartTLS: ";
	return strcmp(step, "TLS") == 0
		       ? "TLS handshake failed (server certificate not trusted by ca_file, or not "
			 "issued for this host?): "
		       : "StartTLS handshake failed (server certificate not trusted by ca_file, or "
			 "not issued for this host?): ";
}

/* A new handle, connected (TLS as configured) and bound to uris[idx]; NULL
 * with msg on failure.
 *
 * Why the TLS handshake is done by hand: libldap 2.5 bounds the handshake of
 * an ldaps:// connect by LDAP_OPT_NETWORK_TIMEOUT only in its asynchronous
 * connect mode; otherwise it spins (non-blocking socket) or waits forever
 * (blocking socket) on a server that accepts TCP and never answers. So the
 * TCP connect goes to ldap://host:port synchronously (bounded by the network
 * timeout), the socket gets SO_RCVTIMEO/SO_SNDTIMEO, LDAP_OPT_CONNECT_ASYNC is
 * switched on (it only selects the bounded handshake loop from then on: the
 * connection exists and referrals are off), and TLS is started with
 * ldap_install_tls (ldaps) or ldap_start_tls_s (StartTLS). The server name
 * checked against its certificate is still the URI's host. */
static LDAP *connect_uri(struct cm_dir *dir, size_t idx, char *msg, size_t size)
{
	const char *uri = dir->cfg->directory.uris.v[idx];
	const char *ca = dir->cfg->directory.ca_file;
	int ms = timeout_ms(dir);
	struct timeval tv = ms_to_tv(ms);
	int v3 = LDAP_VERSION3, demand = LDAP_OPT_X_TLS_DEMAND, zero = 0;
	int tls12 = LDAP_OPT_X_TLS_PROTOCOL_TLS1_2;
	bool ldaps = strncasecmp(uri, "ldaps://", 8) == 0;
	bool use_tls = ldaps || dir->cfg->directory.starttls;
	char *plain = NULL;
	LDAP *ld = NULL;
	int rc;

	if (ldaps && (plain = plain_uri_of(uri)) == NULL) {
		snprintf(msg, size, "bad URI");
		return NULL;
	}
	rc = ldap_initialize(&ld, ldaps ? plain : uri);
	free(plain);
	if (rc != LDAP_SUCCESS || ld == NULL) {
		snprintf(msg, size, "bad URI: %s", ldap_err2string(rc));
		return NULL;
	}
	if (set_opt(ld, LDAP_OPT_PROTOCOL_VERSION, &v3, "protocol version", msg, size) != 0 ||
	    set_opt(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF, "referrals", msg, size) != 0 ||
	    set_opt(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv, "network timeout", msg, size) != 0 ||
	    set_opt(ld, LDAP_OPT_TIMEOUT, &tv, "timeout", msg, size) != 0)
		goto fail;
	if (use_tls && (set_opt(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand, "TLS require cert", msg,
				size) != 0 ||
			set_opt(ld, LDAP_OPT_X_TLS_PROTOCOL_MIN, &tls12, "TLS minimum version", msg,
				size) != 0 ||
			(ca != NULL && set_opt(ld, LDAP_OPT_X_TLS_CACERTFILE, ca, "TLS CA file",
					       msg, size) != 0) ||
			set_opt(ld, LDAP_OPT_X_TLS_NEWCTX, &zero, "TLS context", msg, size) != 0))
		goto fail;

	rc = ldap_connect(ld);
	if (rc != LDAP_SUCCESS) {
		describe(ld, rc, NULL, "connect: ", msg, size);
		goto fail;
	}
	if (set_socket_timeouts(ld, ms, msg, size) != 0 ||
	    set_opt(ld, LDAP_OPT_CONNECT_ASYNC, LDAP_OPT_ON, "async connect", msg, size) != 0)
		goto fail;
	if (ldaps) {
		rc = ldap_install_tls(ld);
		if (rc != LDAP_SUCCESS) {
			describe(ld, rc, NULL, tls_prefix(rc, "TLS"), msg, size);
			goto fail;
		}
	} else if (dir->cfg->directory.starttls) {
		rc = ldap_start_tls_s(ld, NULL, NULL);
		if (rc != LDAP_SUCCESS) {
			describe(ld, rc, NULL, tls_prefix(rc, "StartTLS"), msg, size);
			goto fail;
		}
	}
	rc = bind_handle(dir, ld, msg, size);
	if (rc != LDAP_SUCCESS)
		goto fail;
	return ld;

fail:
	ldap_unbind_ext_s(ld, NULL, NULL);
	return NULL;
}

static void value_free(struct cm_dir_value *v)
{
	free(v->data);
}

static void attr_free(struct cm_dir_attr *a)
{
	free(a->name);
	for (size_t i = 0; i < a->n_values; i++)
		value_free(&a->values[i]);
	free(a->values);
}

static void entry_free(struct cm_dir_entry *e)
{
	free(e->dn);
	for (size_t i = 0; i < e->n_attrs; i++)
		attr_free(&e->attrs[i]);
	free(e->attrs);
}

void cm_dir_result_free(struct cm_dir_result *res)
{
	if (res == NULL)
		return;
	for (size_t i = 0; i < res->n_entries; i++)
		entry_free(&res->entries[i]);
	free(res->entries);
	res->entries = NULL;
	res->n_entries = 0;
	res->truncated = false;
}

/* Copies one attribute's values; -1 on allocation failure. Values over
 * CM_DIR_MAX_VALUE_BYTES are dropped (counted in *dropped). */
static int copy_attr(LDAP *ld, LDAPMessage *msg, const char *name, struct cm_dir_attr *a,
		     size_t *dropped)
{
	struct berval **vals = ldap_get_values_len(ld, msg, name);
	size_t n = vals != NULL ? (size_t)ldap_count_values_len(vals) : 0;
	int rc = 0;

	a->name = strdup(name);
	if (a->name == NULL) {
		rc = -1;
		goto done;
	}
	if (n == 0)
		goto done;
	a->values = calloc(n, sizeof(*a->values));
	if (a->values == NULL) {
		rc = -1;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		struct cm_dir_value *v = &a->values[a->n_values];

		if (vals[i]->bv_len > CM_DIR_MAX_VALUE_BYTES) {
			(*dropped)++;
			continue;
		}
		v->data = malloc(vals[i]->bv_len + 1);
		if (v->data == NULL) {
			rc = -1;
			goto done;
		}
		if (vals[i]->bv_len > 0)
			memcpy(v->data, vals[i]->bv_val, vals[i]->bv_len);
		v->data[vals[i]->bv_len] = '\0';
		v->len = vals[i]->bv_len;
		a->n_values++;
	}
done:
	if (vals != NULL)
		ldap_value_free_len(vals);
	return rc;
}

static int copy_entry(LDAP *ld, LDAPMessage *msg, struct cm_dir_entry *e, size_t *dropped)
{
	BerElement *ber = NULL;
	char *dn = ldap_get_dn(ld, msg);
	int rc = 0;

	memset(e, 0, sizeof(*e));
	if (dn == NULL)
		return -1;
	e->dn = strdup(dn);
	ldap_memfree(dn);
	if (e->dn == NULL)
		return -1;
	for (char *name = ldap_first_attribute(ld, msg, &ber); name != NULL;
	     name = ldap_next_attribute(ld, msg, ber)) {
		struct cm_dir_attr *attrs = realloc(e->attrs, (e->n_attrs + 1) * sizeof(*attrs));

		if (attrs == NULL) {
			ldap_memfree(name);
			rc = -1;
			break;
		}
		e->attrs = attrs;
		memset(&e->attrs[e->n_attrs], 0, sizeof(e->attrs[0]));
		e->n_attrs++;
		rc = copy_attr(ld, msg, name, &e->attrs[e->n_attrs - 1], dropped);
		ldap_memfree(name);
		if (rc != 0)
			break;
	}
	if (ber != NULL)
		ber_free(ber, 0);
	return rc;
}

static const char *scope_name(enum cm_dir_scope scope)
{
	switch (scope) {
	case CM_DIR_SCOPE_BASE:
		return "base";
	case CM_DIR_SCOPE_ONE:
		return "one";
	default:
		return "sub";
	}
}

static int ldap_scope(enum cm_dir_scope scope)
{
	switch (scope) {
	case CM_DIR_SCOPE_BASE:
		return LDAP_SCOPE_BASE;
	case CM_DIR_SCOPE_ONE:
		return LDAP_SCOPE_ONELEVEL;
	default:
		return LDAP_SCOPE_SUBTREE;
	}
}

struct search_req {
	const char *base;
	enum cm_dir_scope scope;
	const char *filter;
	const char *const *attrs;
	size_t size_limit;
};

/* One search on the current handle. */
static enum attempt search_once(struct cm_dir *dir, const struct search_req *req,
				struct cm_dir_result *out, size_t *refs, int *code_out, char *msg,
				size_t size)
{
	LDAP *ld = dir->ld;
	int ms = timeout_ms(dir);
	struct timeval limit = {.tv_sec = (ms + 999) / 1000, .tv_usec = 0};
	struct timeval tv = ms_to_tv(ms);
	LDAPMessage *res = NULL;
	char *errmsg = NULL;
	int msgid = -1, rc, code = LDAP_OTHER;
	size_t dropped = 0;
	bool got_result = false;
	enum attempt ret;

	*code_out = LDAP_SUCCESS;
	rc = ldap_search_ext(ld, req->base, ldap_scope(req->scope), req->filter,
			     (char **)(uintptr_t)req->attrs, 0, NULL, NULL, &limit,
			     (int)req->size_limit, &msgid);
	if (rc != LDAP_SUCCESS) {
		*code_out = rc;
		describe(ld, rc, NULL, "", msg, size);
		return is_server_failure(rc) ? ATTEMPT_FAILOVER : ATTEMPT_FATAL;
	}
	dir->stats.searches++;
	rc = ldap_result(ld, msgid, LDAP_MSG_ALL, &tv, &res);
	if (rc == 0) {
		*code_out = LDAP_TIMEOUT;
		snprintf(msg, size, "search timed out after %d ms", ms);
		ldap_msgfree(res);
		return ATTEMPT_FAILOVER;
	}
	if (rc < 0) {
		if (ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &code) != LDAP_OPT_SUCCESS ||
		    code == LDAP_SUCCESS)
			code = LDAP_SERVER_DOWN;
		*code_out = code;
		describe(ld, code, NULL, "", msg, size);
		ldap_msgfree(res);
		return is_server_failure(code) ? ATTEMPT_FAILOVER : ATTEMPT_FATAL;
	}
	for (LDAPMessage *m = ldap_first_message(ld, res); m != NULL;
	     m = ldap_next_message(ld, m)) {
		switch (ldap_msgtype(m)) {
		case LDAP_RES_SEARCH_ENTRY: {
			struct cm_dir_entry *entries;

			if (out->n_entries >= req->size_limit) {
				/* the server ignored our size limit */
				out->truncated = true;
				break;
			}
			entries = realloc(out->entries, (out->n_entries + 1) * sizeof(*entries));
			if (entries == NULL) {
				snprintf(msg, size, "out of memory");
				ldap_msgfree(res);
				return ATTEMPT_FATAL;
			}
			out->entries = entries;
			if (copy_entry(ld, m, &out->entries[out->n_entries], &dropped) != 0) {
				entry_free(&out->entries[out->n_entries]);
				snprintf(msg, size, "out of memory");
				ldap_msgfree(res);
				return ATTEMPT_FATAL;
			}
			out->n_entries++;
			break;
		}
		case LDAP_RES_SEARCH_REFERENCE:
			(*refs)++; /* referrals are never chased */
			break;
		case LDAP_RES_SEARCH_RESULT:
			rc = ldap_parse_result(ld, m, &code, NULL, &errmsg, NULL, NULL, 0);
			if (rc != LDAP_SUCCESS)
				code = rc;
			got_result = true;
			break;
		default:
			break;
		}
	}
	ldap_msgfree(res);
	*code_out = code;
	if (!got_result) {
		*code_out = LDAP_DECODING_ERROR;
		snprintf(msg, size, "search ended without a result");
		ldap_memfree(errmsg);
		return ATTEMPT_FAILOVER;
	}
	if (dropped > 0)
		snprintf(msg, size, "%zu values over %u bytes dropped", dropped,
			 CM_DIR_MAX_VALUE_BYTES);
	switch (code) {
	case LDAP_SUCCESS:
		ret = ATTEMPT_OK;
		break;
	case LDAP_SIZELIMIT_EXCEEDED:
		out->truncated = true;
		ret = ATTEMPT_OK;
		break;
	case LDAP_NO_SUCH_OBJECT:
		ret = ATTEMPT_NO_SUCH_OBJECT;
		break;
	default:
		describe(NULL, code, errmsg, "", msg, size);
		ret = is_server_failure(code) ? ATTEMPT_FAILOVER : ATTEMPT_FATAL;
		break;
	}
	ldap_memfree(errmsg);
	return ret;
}

/* "filter" shortened for a trace line: never a whole certificate. */
static void filter_for_trace(const char *filter, char *buf, size_t size)
{
	size_t len = strlen(filter);

	if (len <= TRACE_FILTER_MAX)
		snprintf(buf, size, "%s", filter);
	else
		snprintf(buf, size, "%.*s… (%zu bytes)", TRACE_FILTER_MAX, filter, len);
}

/* Appends "uri: what" to the collected failure text. */
static void add_failure(char *all, size_t size, const char *uri, const char *what)
{
	size_t used = strlen(all);

	if (used + 1 >= size)
		return;
	snprintf(all + used, size - used, "%s%s: %s", used > 0 ? "; " : "", uri, what);
}

/* ---- searches, paged searches and value-level modifies: one failover loop ---- */

/* One attempt of an operation on dir->ld, connected to uris[dir->cur]. Adds
 * its own trace line on success; on failure fills msg and *code. */
typedef enum attempt (*attempt_fn)(struct cm_dir *dir, void *ctx, int *code, char *msg, size_t size,
				   struct cm_trace *trace);

/* Runs fn with cm_dir_search's failover rules: each URI at most once per call
 * (starting with the one in use), plus one fresh connection to the same
 * server when a kept connection turned out to be closed. reset (may be NULL)
 * discards a failed attempt's partial output. what names the operation in
 * failure lines. */
static enum cm_dir_status with_failover(struct cm_dir *dir, attempt_fn fn, void (*reset)(void *),
					void *ctx, const char *what, struct cm_trace *trace,
					struct cm_err *err)
{
	const struct cm_strlist *uris = &dir->cfg->directory.uris;
	char failures[CM_ERR_MAX_MSG] = "";
	enum cm_dir_status status = CM_DIR_UNAVAILABLE;
	bool reconnected = false;
	size_t start, i;
	double t0;

	pthread_mutex_lock(&dir->lock);
	t0 = cm_now_ms();
	start = dir->cur < uris->n ? dir->cur : 0;
	for (i = 0; i < uris->n; i++) {
		size_t idx = (start + i) % uris->n;
		const char *uri = uris->v[idx];
		char msg[FAILURE_MSG_MAX] = "";
		int code = LDAP_SUCCESS;
		bool fresh = false;
		enum attempt a;

		if (dir->ld == NULL || dir->cur != idx) {
			close_handle(dir);
			dir->ld = connect_uri(dir, idx, msg, sizeof(msg));
			if (dir->ld == NULL) {
				cm_trace_add(trace, "ldap: %s: %s", uri, msg);
				add_failure(failures, sizeof(failures), uri, msg);
				continue;
			}
			dir->cur = idx;
			fresh = true;
		}
		a = fn(dir, ctx, &code, msg, sizeof(msg), trace);
		if (a == ATTEMPT_OK || a == ATTEMPT_NO_SUCH_OBJECT) {
			status = a == ATTEMPT_OK ? CM_DIR_OK : CM_DIR_NO_SUCH_OBJECT;
			goto done;
		}
		if (a == ATTEMPT_REFUSED) {
			cm_trace_add(trace, "ldap: %s: %s refused: %s", uri, what, msg);
			cm_err_set(err, "%s", msg);
			status = CM_DIR_REFUSED;
			goto done;
		}
		if (reset != NULL)
			reset(ctx);
		cm_trace_add(trace, "ldap: %s: %s failed: %s", uri, what, msg);
		add_failure(failures, sizeof(failures), uri, msg);
		if (a == ATTEMPT_FATAL)
			goto fail;
		close_handle(dir);
		if (!fresh && !reconnected && code == LDAP_SERVER_DOWN) {
			reconnected = true;
			dir->cur = idx;
			i--; /* unsigned: wraps at 0, and the loop's i++ brings it back */
			failures[0] = '\0';
		}
	}
	dir->cur = start;
fail:
	cm_err_set(err, "directory unavailable: %s", failures[0] != '\0' ? failures : "no server");
	status = CM_DIR_UNAVAILABLE;
done:
	dir->elapsed_ms += cm_now_ms() - t0;
	pthread_mutex_unlock(&dir->lock);
	return status;
}

struct plain_search {
	struct search_req req;
	struct cm_dir_result *out;
	const char *shown; /* the filter as traced */
};

static enum attempt search_attempt(struct cm_dir *dir, void *ctx, int *code, char *msg, size_t size,
				   struct cm_trace *trace)
{
	struct plain_search *ps = ctx;
	const char *uri = dir->cfg->directory.uris.v[dir->cur];
	size_t refs = 0;
	enum attempt a = search_once(dir, &ps->req, ps->out, &refs, code, msg, size);

	if (a == ATTEMPT_OK || a == ATTEMPT_NO_SUCH_OBJECT) {
		cm_trace_add(trace, "ldap: %s: search %s (%s) %s: %s%zu entr%s%s%s%s", uri,
			     ps->req.base, scope_name(ps->req.scope), ps->shown,
			     a == ATTEMPT_NO_SUCH_OBJECT ? "no such object, " : "",
			     ps->out->n_entries, ps->out->n_entries == 1 ? "y" : "ies",
			     ps->out->truncated ? " (size limit reached)" : "",
			     msg[0] != '\0' ? "; " : "", msg);
		if (refs > 0)
			cm_trace_add(trace, "ldap: %zu search reference%s ignored", refs,
				     refs == 1 ? "" : "s");
	}
	return a;
}

static void search_reset(void *ctx)
{
	cm_dir_result_free(((struct plain_search *)ctx)->out);
}

enum cm_dir_status cm_dir_search(struct cm_dir *dir, const char *base, enum cm_dir_scope scope,
				 const char *filter, const char *const *attrs, size_t size_limit,
				 struct cm_dir_result *out, struct cm_trace *trace,
				 struct cm_err *err)
{
	char shown[TRACE_FILTER_MAX + 64];
	char what[TRACE_FILTER_MAX + 128];
	struct plain_search ps = {
		{base, scope, filter, attrs, size_limit > 0 ? size_limit : CM_DIR_MAX_ENTRIES},
		out,
		shown,
	};

	memset(out, 0, sizeof(*out));
	if (dir == NULL || base == NULL || filter == NULL) {
		cm_err_set(err, "directory: no directory handle");
		return CM_DIR_UNAVAILABLE;
	}
	if (ps.req.size_limit > INT32_MAX)
		ps.req.size_limit = INT32_MAX;
	filter_for_trace(filter, shown, sizeof(shown));
	snprintf(what, sizeof(what), "search %s (%s) %s", base, scope_name(scope), shown);
	return with_failover(dir, search_attempt, search_reset, &ps, what, trace, err);
}

/* Waits for the answer to msgid; 1 with *res, or 0 with *code/msg filled
 * (timeout, connection lost). */
static int await_result(struct cm_dir *dir, int msgid, const char *what, LDAPMessage **res,
			int *code, char *msg, size_t size)
{
	int ms = timeout_ms(dir);
	struct timeval tv = ms_to_tv(ms);
	int rc = ldap_result(dir->ld, msgid, LDAP_MSG_ALL, &tv, res);

	if (rc > 0)
		return 1;
	if (rc == 0) {
		*code = LDAP_TIMEOUT;
		snprintf(msg, size, "%s timed out after %d ms", what, ms);
	} else {
		if (ldap_get_option(dir->ld, LDAP_OPT_RESULT_CODE, code) != LDAP_OPT_SUCCESS ||
		    *code == LDAP_SUCCESS)
			*code = LDAP_SERVER_DOWN;
		describe(dir->ld, *code, NULL, "", msg, size);
	}
	ldap_msgfree(*res);
	*res = NULL;
	return 0;
}

struct paged_req {
	const char *base;
	enum cm_dir_scope scope;
	const char *filter;
	const char *const *attrs;
	size_t page_size;
	size_t max_entries;
	const char *shown; /* filter for trace lines */
	struct cm_dir_result *out;
};

static void paged_reset(void *ctx)
{
	cm_dir_result_free(((struct paged_req *)ctx)->out);
}

/* Reads one page's messages into req->out; the result code, its server text
 * and the next cookie (empty at the end) come back. */
static enum attempt read_page(struct cm_dir *dir, LDAPMessage *res, struct paged_req *req,
			      size_t *refs, size_t *dropped, int *code, char **errmsg,
			      struct berval *cookie, char *msg, size_t size)
{
	LDAP *ld = dir->ld;
	struct cm_dir_result *out = req->out;
	bool got_result = false;

	for (LDAPMessage *m = ldap_first_message(ld, res); m != NULL;
	     m = ldap_next_message(ld, m)) {
		switch (ldap_msgtype(m)) {
		case LDAP_RES_SEARCH_ENTRY: {
			struct cm_dir_entry *entries;

			if (out->n_entries >= req->max_entries) {
				out->truncated = true;
				break;
			}
			entries = realloc(out->entries, (out->n_entries + 1) * sizeof(*entries));
			if (entries == NULL) {
				snprintf(msg, size, "out of memory");
				return ATTEMPT_FATAL;
			}
			out->entries = entries;
			if (copy_entry(ld, m, &out->entries[out->n_entries], dropped) != 0) {
				entry_free(&out->entries[out->n_entries]);
				snprintf(msg, size, "out of memory");
				return ATTEMPT_FATAL;
			}
			out->n_entries++;
			break;
		}
		case LDAP_RES_SEARCH_REFERENCE:
			(*refs)++; /* referrals are never chased */
			break;
		case LDAP_RES_SEARCH_RESULT: {
			LDAPControl **ctrls = NULL, *page;
			ber_int_t estimate = 0;
			int rc = ldap_parse_result(ld, m, code, NULL, errmsg, NULL, &ctrls, 0);

			if (rc != LDAP_SUCCESS)
				*code = rc;
			page = ctrls != NULL
				       ? ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, ctrls, NULL)
				       : NULL;
			if (page != NULL && ldap_parse_pageresponse_control(
						    ld, page, &estimate, cookie) != LDAP_SUCCESS) {
				cookie->bv_val = NULL;
				cookie->bv_len = 0;
			}
			ldap_controls_free(ctrls);
			got_result = true;
			break;
		}
		default:
			break;
		}
	}
	if (!got_result) {
		*code = LDAP_DECODING_ERROR;
		snprintf(msg, size, "search ended without a result");
		return ATTEMPT_FAILOVER;
	}
	return ATTEMPT_OK;
}

static enum attempt paged_attempt(struct cm_dir *dir, void *ctx, int *code_out, char *msg,
				  size_t size, struct cm_trace *trace)
{
	struct paged_req *req = ctx;
	const char *uri = dir->cfg->directory.uris.v[dir->cur];
	int ms = timeout_ms(dir);
	struct timeval limit = {.tv_sec = (ms + 999) / 1000, .tv_usec = 0};
	struct berval cookie = {0, NULL};
	size_t pages = 0, refs = 0, dropped = 0;
	enum attempt ret = ATTEMPT_OK;

	*code_out = LDAP_SUCCESS;
	for (;;) {
		LDAPControl *page = NULL, *sctrls[2] = {NULL, NULL};
		LDAPMessage *res = NULL;
		char *errmsg = NULL;
		int msgid = -1, code = LDAP_OTHER, rc;

		rc = ldap_create_page_control(dir->ld, (ber_int_t)req->page_size, &cookie, 0,
					      &page);
		ber_memfree(cookie.bv_val);
		cookie.bv_val = NULL;
		cookie.bv_len = 0;
		if (rc != LDAP_SUCCESS) {
			*code_out = rc;
			describe(dir->ld, rc, NULL, "paged results control: ", msg, size);
			return ATTEMPT_FATAL;
		}
		sctrls[0] = page;
		/* the size limit is left to the server: the bound is max_entries,
		 * counted here across pages */
		rc = ldap_search_ext(dir->ld, req->base, ldap_scope(req->scope), req->filter,
				     (char **)(uintptr_t)req->attrs, 0, sctrls, NULL, &limit, 0,
				     &msgid);
		ldap_control_free(page);
		if (rc != LDAP_SUCCESS) {
			*code_out = rc;
			describe(dir->ld, rc, NULL, "", msg, size);
			return is_server_failure(rc) ? ATTEMPT_FAILOVER : ATTEMPT_FATAL;
		}
		dir->stats.searches++;
		pages++;
		if (!await_result(dir, msgid, "search page", &res, code_out, msg, size))
			return is_server_failure(*code_out) ? ATTEMPT_FAILOVER : ATTEMPT_FATAL;
		ret = read_page(dir, res, req, &refs, &dropped, &code, &errmsg, &cookie, msg, size);
		ldap_msgfree(res);
		*code_out = code;
		if (ret == ATTEMPT_OK) {
			switch (code) {
			case LDAP_SUCCESS:
				break;
			case LDAP_SIZELIMIT_EXCEEDED:
				req->out->truncated = true;
				break;
			case LDAP_NO_SUCH_OBJECT:
				ret = ATTEMPT_NO_SUCH_OBJECT;
				break;
			default:
				describe(NULL, code, errmsg, "", msg, size);
				ret = is_server_failure(code) ? ATTEMPT_FAILOVER : ATTEMPT_FATAL;
				break;
			}
		}
		ldap_memfree(errmsg);
		if (ret != ATTEMPT_OK || code != LDAP_SUCCESS || req->out->truncated ||
		    cookie.bv_len == 0)
			break;
	}
	ber_memfree(cookie.bv_val);
	if (ret == ATTEMPT_OK || ret == ATTEMPT_NO_SUCH_OBJECT) {
		cm_trace_add(trace,
			     "ldap: %s: paged search %s (%s) %s: %s%zu entr%s in %zu page%s%s", uri,
			     req->base, scope_name(req->scope), req->shown,
			     ret == ATTEMPT_NO_SUCH_OBJECT ? "no such object, " : "",
			     req->out->n_entries, req->out->n_entries == 1 ? "y" : "ies", pages,
			     pages == 1 ? "" : "s",
			     req->out->truncated ? " (incomplete: size limit reached)" : "");
		if (dropped > 0)
			cm_trace_add(trace, "ldap: %zu values over %u bytes dropped", dropped,
				     CM_DIR_MAX_VALUE_BYTES);
		if (refs > 0)
			cm_trace_add(trace, "ldap: %zu search reference%s ignored", refs,
				     refs == 1 ? "" : "s");
	}
	return ret;
}

enum cm_dir_status cm_dir_search_paged(struct cm_dir *dir, const char *base,
				       enum cm_dir_scope scope, const char *filter,
				       const char *const *attrs, size_t page_size,
				       size_t max_entries, struct cm_dir_result *out,
				       struct cm_trace *trace, struct cm_err *err)
{
	char shown[TRACE_FILTER_MAX + 64];
	struct paged_req req = {base,
				scope,
				filter,
				attrs,
				page_size > 0 ? page_size : CM_DIR_PAGE_ENTRIES,
				max_entries > 0 ? max_entries : CM_DIR_MAX_PAGED_ENTRIES,
				shown,
				out};
	char what[TRACE_FILTER_MAX + 128];

	memset(out, 0, sizeof(*out));
	if (dir == NULL || base == NULL || filter == NULL) {
		cm_err_set(err, "directory: no directory handle");
		return CM_DIR_UNAVAILABLE;
	}
	if (req.page_size > INT32_MAX)
		req.page_size = INT32_MAX;
	filter_for_trace(filter, shown, sizeof(shown));
	snprintf(what, sizeof(what), "paged search %s (%s) %s", base, scope_name(scope), shown);
	return with_failover(dir, paged_attempt, paged_reset, &req, what, trace, err);
}

/* RFC 4511 name of a result code a write may get. */
static const char *result_name(int code)
{
	switch (code) {
	case LDAP_REFERRAL:
		return "referral";
	case LDAP_ADMINLIMIT_EXCEEDED:
		return "adminLimitExceeded";
	case LDAP_CONFIDENTIALITY_REQUIRED:
		return "confidentialityRequired";
	case LDAP_NO_SUCH_ATTRIBUTE:
		return "noSuchAttribute";
	case LDAP_UNDEFINED_TYPE:
		return "undefinedAttributeType";
	case LDAP_CONSTRAINT_VIOLATION:
		return "constraintViolation";
	case LDAP_TYPE_OR_VALUE_EXISTS:
		return "attributeOrValueExists";
	case LDAP_INVALID_SYNTAX:
		return "invalidAttributeSyntax";
	case LDAP_NO_SUCH_OBJECT:
		return "noSuchObject";
	case LDAP_INVALID_DN_SYNTAX:
		return "invalidDNSyntax";
	case LDAP_INAPPROPRIATE_AUTH:
		return "inappropriateAuthentication";
	case LDAP_INSUFFICIENT_ACCESS:
		return "insufficientAccessRights";
	case LDAP_BUSY:
		return "busy";
	case LDAP_UNAVAILABLE:
		return "unavailable";
	case LDAP_UNWILLING_TO_PERFORM:
		return "unwillingToPerform";
	case LDAP_OBJECT_CLASS_VIOLATION:
		return "objectClassViolation";
	case LDAP_NOT_ALLOWED_ON_NONLEAF:
		return "notAllowedOnNonLeaf";
	case LDAP_NOT_ALLOWED_ON_RDN:
		return "notAllowedOnRDN";
	case LDAP_OTHER:
		return "other";
	default:
		return NULL;
	}
}

struct modify_req {
	const char *dn;
	const char *attr;
	enum cm_dir_mod_op op;
	const struct cm_dir_value *values;
	size_t n_values;
	int result; /* LDAP result code of the answer */
};

static enum attempt modify_attempt(struct cm_dir *dir, void *ctx, int *code_out, char *msg,
				   size_t size, struct cm_trace *trace)
{
	struct modify_req *req = ctx;
	const char *uri = dir->cfg->directory.uris.v[dir->cur];
	const char *opname = req->op == CM_DIR_MOD_ADD ? "add" : "delete";
	struct berval *bv = calloc(req->n_values, sizeof(*bv));
	struct berval **bvp = calloc(req->n_values + 1, sizeof(*bvp));
	LDAPMod mod, *mods[2] = {&mod, NULL};
	LDAPMessage *res = NULL;
	char *errmsg = NULL, *matched = NULL;
	int msgid = -1, code = LDAP_OTHER, rc;
	enum attempt ret;

	*code_out = LDAP_SUCCESS;
	if (bv == NULL || bvp == NULL) {
		free(bv);
		free(bvp);
		snprintf(msg, size, "out of memory");
		return ATTEMPT_FATAL;
	}
	for (size_t i = 0; i < req->n_values; i++) {
		bv[i].bv_val = (char *)req->values[i].data;
		bv[i].bv_len = req->values[i].len;
		bvp[i] = &bv[i];
	}
	memset(&mod, 0, sizeof(mod));
	mod.mod_op =
		(req->op == CM_DIR_MOD_ADD ? LDAP_MOD_ADD : LDAP_MOD_DELETE) | LDAP_MOD_BVALUES;
	mod.mod_type = (char *)(uintptr_t)req->attr;
	mod.mod_bvalues = bvp;
	rc = ldap_modify_ext(dir->ld, req->dn, mods, NULL, NULL, &msgid);
	free(bvp);
	free(bv);
	if (rc != LDAP_SUCCESS) {
		*code_out = rc;
		describe(dir->ld, rc, NULL, "", msg, size);
		return is_server_failure(rc) ? ATTEMPT_FAILOVER : ATTEMPT_FATAL;
	}
	dir->stats.modifies++;
	if (!await_result(dir, msgid, "modify", &res, code_out, msg, size))
		return is_server_failure(*code_out) ? ATTEMPT_FAILOVER : ATTEMPT_FATAL;
	rc = ldap_parse_result(dir->ld, res, &code, &matched, &errmsg, NULL, NULL, 1);
	if (rc != LDAP_SUCCESS) {
		*code_out = rc;
		describe(dir->ld, rc, NULL, "", msg, size);
		ldap_memfree(matched);
		ldap_memfree(errmsg);
		return ATTEMPT_FAILOVER;
	}
	*code_out = code;
	req->result = code;
	if (errmsg != NULL) /* AD ends its diagnostic text with a newline */
		for (size_t len = strlen(errmsg);
		     len > 0 &&
		     (errmsg[len - 1] == '\n' || errmsg[len - 1] == '\r' || errmsg[len - 1] == ' ');
		     len--)
			errmsg[len - 1] = '\0';
	if (code == LDAP_SUCCESS ||
	    (code == LDAP_TYPE_OR_VALUE_EXISTS && req->op == CM_DIR_MOD_ADD) ||
	    (code == LDAP_NO_SUCH_ATTRIBUTE && req->op == CM_DIR_MOD_DELETE)) {
		cm_trace_add(trace, "ldap: %s: modify %s: %s %zu value%s of %s: %s", uri, req->dn,
			     opname, req->n_values, req->n_values == 1 ? "" : "s", req->attr,
			     code == LDAP_SUCCESS        ? "done"
			     : req->op == CM_DIR_MOD_ADD ? "already present"
							 : "already absent");
		ret = ATTEMPT_OK;
	} else if (code == LDAP_NO_SUCH_OBJECT) {
		cm_trace_add(trace, "ldap: %s: modify %s: no such object", uri, req->dn);
		ret = ATTEMPT_NO_SUCH_OBJECT;
	} else if (code == LDAP_BUSY || code == LDAP_UNAVAILABLE) {
		describe(NULL, code, errmsg, "", msg, size);
		ret = ATTEMPT_FAILOVER;
	} else {
		char prefix[FAILURE_MSG_MAX];
		const char *name = result_name(code);

		if (name != NULL)
			snprintf(prefix, sizeof(prefix), "%s (%d): ", name, code);
		else
			snprintf(prefix, sizeof(prefix), "result %d: ", code);
		describe(NULL, code, errmsg, prefix, msg, size);
		ret = ATTEMPT_REFUSED;
	}
	ldap_memfree(matched);
	ldap_memfree(errmsg);
	return ret;
}

enum cm_dir_status cm_dir_modify_values(struct cm_dir *dir, const char *dn, const char *attr,
					enum cm_dir_mod_op op, const struct cm_dir_value *values,
					size_t n_values, int *ldap_code, struct cm_trace *trace,
					struct cm_err *err)
{
	struct modify_req req = {dn, attr, op, values, n_values, LDAP_OTHER};
	char what[FAILURE_MSG_MAX];
	enum cm_dir_status st;

	if (ldap_code != NULL)
		*ldap_code = LDAP_OTHER;
	if (dir == NULL || dn == NULL || attr == NULL || values == NULL || n_values == 0) {
		cm_err_set(err, "directory: modify without a handle, DN, attribute or value");
		return CM_DIR_UNAVAILABLE;
	}
	snprintf(what, sizeof(what), "modify %.120s (%s %s)", dn,
		 op == CM_DIR_MOD_ADD ? "add" : "delete", attr);
	st = with_failover(dir, modify_attempt, NULL, &req, what, trace, err);
	if (st == CM_DIR_NO_SUCH_OBJECT)
		cm_err_set(err, "noSuchObject (32): %s does not exist", dn);
	if (ldap_code != NULL)
		*ldap_code = req.result;
	return st;
}

void cm_dir_get_stats(struct cm_dir *dir, struct cm_dir_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (dir == NULL)
		return;
	pthread_mutex_lock(&dir->lock);
	*out = dir->stats;
	pthread_mutex_unlock(&dir->lock);
}

const struct cm_dir_attr *cm_dir_entry_attr(const struct cm_dir_entry *e, const char *name)
{
	size_t nlen;

	if (e == NULL || name == NULL)
		return NULL;
	nlen = strcspn(name, ";");
	for (size_t i = 0; i < e->n_attrs; i++) {
		const char *an = e->attrs[i].name;
		size_t alen = strcspn(an, ";");

		if (alen == nlen && strncasecmp(an, name, nlen) == 0)
			return &e->attrs[i];
	}
	return NULL;
}

const char *cm_dir_entry_str(const struct cm_dir_entry *e, const char *name)
{
	const struct cm_dir_attr *a = cm_dir_entry_attr(e, name);

	if (a == NULL || a->n_values == 0)
		return NULL;
	return (const char *)a->values[0].data;
}

char *cm_dir_escape_value(const void *data, size_t len)
{
	struct berval in = {.bv_len = len, .bv_val = (char *)(uintptr_t)data};
	struct berval esc = {0, NULL};
	char *out;

	if (len == 0 || data == NULL)
		return strdup("");
	if (ldap_bv2escaped_filter_value(&in, &esc) != 0 || esc.bv_val == NULL)
		return NULL;
	/* hand back plain malloc'd memory (the caller frees with free()) */
	out = malloc(esc.bv_len + 1);
	if (out != NULL) {
		memcpy(out, esc.bv_val, esc.bv_len);
		out[esc.bv_len] = '\0';
	}
	ber_memfree(esc.bv_val);
	return out;
}

double cm_dir_take_elapsed_ms(struct cm_dir *dir)
{
	double ms;

	if (dir == NULL)
		return 0.0;
	pthread_mutex_lock(&dir->lock);
	ms = dir->elapsed_ms;
	dir->elapsed_ms = 0.0;
	pthread_mutex_unlock(&dir->lock);
	return ms;
}

/* RFC 4514 string of dn as libldap re-renders it (canonical escaping and
 * spacing); malloc'd, NULL when dn does not parse. */
static char *dn_normalize(const char *dn)
{
	LDAPDN parsed = NULL;
	char *str = NULL, *copy;

	if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
		return NULL;
	if (parsed == NULL) /* the empty DN */
		return strdup("");
	if (ldap_dn2str(parsed, &str, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS) {
		ldap_dnfree(parsed);
		return NULL;
	}
	ldap_dnfree(parsed);
	copy = strdup(str != NULL ? str : "");
	ldap_memfree(str);
	return copy;
}

bool cm_dir_dn_equal(const char *a, const char *b)
{
	char *na, *nb;
	bool eq;

	if (a == NULL || b == NULL)
		return false;
	na = dn_normalize(a);
	nb = dn_normalize(b);
	eq = na != NULL && nb != NULL && strcasecmp(na, nb) == 0;
	free(na);
	free(nb);
	return eq;
}

char *cm_dir_dn_key(const char *dn)
{
	char *key;

	if (dn == NULL || (key = dn_normalize(dn)) == NULL)
		return NULL;
	for (char *p = key; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	return key;
}
