/*
 * config — strict JSON configuration (DESIGN §6) → immutable struct cm_config.
 * Owns the parse, every validation, path resolution against the config file's
 * directory and the bind password (read here, wiped in cm_config_free).
 * Threading: cm_config_load is reentrant (no state outside its arguments); a
 * loaded config is never modified, so threads may share it.
 * Invariants: on success every field holds its value or its documented
 * default and every checked file was readable at load time; on failure no
 * config is returned and errs holds at least one line (unless even that line
 * could not be allocated). Sections are validated in a fixed order so the
 * error lines come out in the same order for the same file.
 */
#include "certmap/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "certmap/decision.h"
#include "certmap/util.h"

#define JPATH_MAX 320 /* our JSON paths: fixed keys, indices < 64, one shown key */
#define SHOW_MAX 64   /* bytes of an offending value or key shown in a message */
#define SHOW_BUF (SHOW_MAX * 4 + 8)

#define BASE_DN_EXAMPLE "\"DC=example,DC=com\""
#define BIND_DN_EXAMPLE "\"CN=certmap,CN=Users,DC=example,DC=com\""
#define GROUP_DN_EXAMPLE "\"CN=Users,DC=example,DC=com\""

/* Flags for the key/value readers. */
#define F_REQUIRED 0x1u /* absent is an error */
#define F_NULLABLE 0x2u /* null means absent */
#define F_CHECK 0x4u    /* file: must be a readable regular file */
#define F_SECRET 0x8u   /* file: must not be group/world-accessible */

/* Methods mapping.c implements today; others are refused with a clear error. */
static const enum cm_method implemented_methods[] = {CM_METHOD_USER_CERTIFICATE};
#define N_IMPLEMENTED (sizeof(implemented_methods) / sizeof(implemented_methods[0]))

struct loader {
	const char *file; /* as given, prefix of every error line */
	bool daemon;      /* CM_CONFIG_FOR_DAEMON */
	struct cm_config *cfg;
	struct cm_config_errors *errs; /* lines has room for CM_CONFIG_MAX_ERRORS */
	bool oom;
};

/* ---- error lines --------------------------------------------------------- */

/* Takes ownership of line (NULL = allocation failed). Keeps at most
 * CM_CONFIG_MAX_ERRORS lines, the last of which then says more were dropped. */
static void add_line(struct loader *ld, char *line)
{
	struct cm_config_errors *e = ld->errs;

	if (line == NULL) {
		ld->oom = true;
		return;
	}
	if (e->n >= CM_CONFIG_MAX_ERRORS) {
		free(line);
		return;
	}
	if (e->n == CM_CONFIG_MAX_ERRORS - 1) {
		free(line);
		line = cm_strdup_printf("%s: too many errors; only the first %d are shown",
					ld->file, CM_CONFIG_MAX_ERRORS - 1);
		if (line == NULL) {
			ld->oom = true;
			return;
		}
	}
	e->lines[e->n++] = line;
}

static void add_error(struct loader *ld, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* One line "FILE: PATH: message" (or "FILE: message" when path is NULL). */
static void add_error(struct loader *ld, const char *path, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;
	int n;

	if (ld->errs->n >= CM_CONFIG_MAX_ERRORS)
		return;
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		ld->oom = true;
		return;
	}
	if (path != NULL)
		add_line(ld, cm_strdup_printf("%s: %s: %s", ld->file, path, msg));
	else
		add_line(ld, cm_strdup_printf("%s: %s", ld->file, msg));
	free(msg);
}

static void add_oom(struct loader *ld, const char *path)
{
	ld->oom = true;
	add_error(ld, path, "out of memory");
}

static char *dup_or_oom(struct loader *ld, const char *path, const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		add_oom(ld, path);
	return d;
}

/* ---- describing values ---------------------------------------------------- */

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
		return "integer";
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	case JSON_NULL:
		return "null";
	}
	return "value";
}

/* s[0..len) quoted for a message: '"' and '\\' escaped, control bytes as
 * \xNN, cut after SHOW_MAX bytes (on a UTF-8 boundary) with "...". */
static void quote(const char *s, size_t len, char *out, size_t outsz)
{
	size_t o = 0, i = 0;

	out[o++] = '"';
	while (i < len && o + 8 < outsz) {
		unsigned char c = (unsigned char)s[i];

		if (i >= SHOW_MAX && (c & 0xc0) != 0x80) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
		i++;
	}
	out[o++] = '"';
	out[o] = '\0';
}

static void quote_json_string(const json_t *v, char *out, size_t outsz)
{
	quote(json_string_value(v), json_string_length(v), out, outsz);
}

/* '"a"', '"a" or "b"', '"a", "b" or "c"' */
static void expect_list(const char *const *names, size_t n, char *out, size_t outsz)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && o < outsz; i++) {
		const char *sep = i == 0 ? "" : (i + 1 == n ? " or " : ", ");
		int w = snprintf(out + o, outsz - o, "%s\"%s\"", sep, names[i]);

		if (w < 0)
			break;
		o += (size_t)w;
	}
}

/* ---- JSON paths ----------------------------------------------------------- */

static bool plain_key(const char *key, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)key[i];

		if (!isalnum(c) && c != '_' && c != '-')
			return false;
	}
	return true;
}

static void path_fmt(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Paths are diagnostics: one that would not fit ends in "..." instead. */
static void path_fmt(char *out, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, JPATH_MAX, fmt, ap);
	va_end(ap);
	if (n < 0)
		out[0] = '\0';
	else if (n >= JPATH_MAX)
		memcpy(out + JPATH_MAX - 4, "...", 4);
}

static void path_key(char *out, const char *parent, const char *key, size_t len)
{
	if (plain_key(key, len)) {
		path_fmt(out, "%s.%s", parent, key);
	} else {
		char q[SHOW_BUF];

		quote(key, len, q, sizeof(q));
		path_fmt(out, "%s[%s]", parent, q);
	}
}

static void path_index(char *out, const char *parent, size_t i)
{
	path_fmt(out, "%s[%zu]", parent, i);
}

/* ---- generic readers ------------------------------------------------------ */

static bool in_names(const char *key, const char *const *names)
{
	for (size_t i = 0; names[i] != NULL; i++)
		if (strcmp(key, names[i]) == 0)
			return true;
	return false;
}

/* v must be an object with only the allowed keys; 0 when it is an object
 * (unknown keys are reported but do not stop the caller). */
static int val_object(struct loader *ld, const char *path, json_t *v, const char *const *allowed)
{
	const char *key;
	size_t klen;
	json_t *item;

	if (!json_is_object(v)) {
		add_error(ld, path, "expected an object, got %s", type_name(v));
		return -1;
	}
	json_object_keylen_foreach(v, key, klen, item)
	{
		char p[JPATH_MAX];

		(void)item;
		path_key(p, path, key, klen);
		/* jansson 2.14 already refuses "\u0000" in keys; kept in case a
		 * later version lets them through with JSON_ALLOW_NUL. */
		if (strlen(key) != klen)
			add_error(ld, p, "key contains a NUL byte");
		else if (!in_names(key, allowed))
			add_error(ld, p, "unknown key");
	}
	return 0;
}

/* 1 and *v when the key is present (and not null with F_NULLABLE); 0 when
 * absent, reported when F_REQUIRED. path receives the key's JSON path. */
static int lookup(struct loader *ld, json_t *obj, const char *parent, const char *key,
		  unsigned flags, char *path, json_t **v)
{
	path_key(path, parent, key, strlen(key));
	*v = json_object_get(obj, key);
	if (*v != NULL && json_is_null(*v) && (flags & F_NULLABLE))
		*v = NULL;
	if (*v == NULL) {
		if (flags & F_REQUIRED)
			add_error(ld, path, "required key is missing");
		return 0;
	}
	return 1;
}

/* The non-empty, NUL-free string in v (borrowed), or NULL after an error. */
static const char *val_str(struct loader *ld, const char *path, json_t *v, unsigned flags)
{
	const char *s;

	if (!json_is_string(v)) {
		add_error(ld, path, "expected a string%s, got %s",
			  (flags & F_NULLABLE) ? " or null" : "", type_name(v));
		return NULL;
	}
	s = json_string_value(v);
	if (strlen(s) != json_string_length(v)) {
		add_error(ld, path, "string contains a NUL byte");
		return NULL;
	}
	if (s[0] == '\0') {
		add_error(ld, path, "expected a non-empty string");
		return NULL;
	}
	return s;
}

static int val_int(struct loader *ld, const char *path, json_t *v, long long min, long long max,
		   long long *out)
{
	long long x;

	if (!json_is_integer(v)) {
		add_error(ld, path, "expected an integer from %lld to %lld, got %s", min, max,
			  type_name(v));
		return -1;
	}
	x = (long long)json_integer_value(v);
	if (x < min || x > max) {
		add_error(ld, path, "expected an integer from %lld to %lld, got %lld", min, max, x);
		return -1;
	}
	*out = x;
	return 0;
}

/* *out = index of the string in names (NULL-terminated). */
static int val_enum(struct loader *ld, const char *path, json_t *v, const char *const *names,
		    int *out)
{
	char expect[256], got[SHOW_BUF];
	size_t n = 0;

	while (names[n] != NULL)
		n++;
	expect_list(names, n, expect, sizeof(expect));
	if (!json_is_string(v)) {
		add_error(ld, path, "expected %s, got %s", expect, type_name(v));
		return -1;
	}
	if (strlen(json_string_value(v)) == json_string_length(v)) {
		for (size_t i = 0; i < n; i++) {
			if (strcmp(json_string_value(v), names[i]) == 0) {
				*out = (int)i;
				return 0;
			}
		}
	}
	quote_json_string(v, got, sizeof(got));
	add_error(ld, path, "expected %s, got %s", expect, got);
	return -1;
}

static int file_checked(struct loader *ld, const char *path, const char *file, bool secret)
{
	struct stat st;
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		add_error(ld, path, "cannot read %s: %s", file, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		add_error(ld, path, "cannot read %s: %s", file, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	if (!S_ISREG(st.st_mode)) {
		add_error(ld, path, "%s is not a regular file", file);
		return -1;
	}
	if (secret && (st.st_mode & 077) != 0) {
		add_error(ld, path,
			  "%s is %s by group or others (mode %04o); expected mode 0600 or stricter",
			  file, (st.st_mode & 044) ? "readable" : "accessible",
			  (unsigned)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

/* A path string resolved against cfg->dir and, with F_CHECK, checked. */
static int val_file(struct loader *ld, const char *path, json_t *v, unsigned flags, char **out)
{
	const char *s = val_str(ld, path, v, flags);
	char *abs;

	if (s == NULL)
		return -1;
	abs = cm_path_resolve(ld->cfg->dir, s);
	if (abs == NULL) {
		add_oom(ld, path);
		return -1;
	}
	if ((flags & F_CHECK) && file_checked(ld, path, abs, (flags & F_SECRET) != 0) != 0) {
		free(abs);
		return -1;
	}
	*out = abs;
	return 0;
}

/* Key readers: 0 absent, 1 present and valid (*out set), -1 present but
 * invalid (reported). *out is untouched unless 1, so defaults survive. */

static int key_string(struct loader *ld, json_t *obj, const char *parent, const char *key,
		      unsigned flags, char **out)
{
	char path[JPATH_MAX];
	const char *s;
	char *d;
	json_t *v;

	if (lookup(ld, obj, parent, key, flags, path, &v) == 0)
		return 0;
	s = val_str(ld, path, v, flags);
	if (s == NULL)
		return -1;
	d = dup_or_oom(ld, path, s);
	if (d == NULL)
		return -1;
	free(*out);
	*out = d;
	return 1;
}

static int key_bool(struct loader *ld, json_t *obj, const char *parent, const char *key, bool *out)
{
	char path[JPATH_MAX];
	json_t *v;

	if (lookup(ld, obj, parent, key, 0, path, &v) == 0)
		return 0;
	if (!json_is_boolean(v)) {
		add_error(ld, path, "expected true or false, got %s", type_name(v));
		return -1;
	}
	*out = json_is_true(v);
	return 1;
}

static int key_int(struct loader *ld, json_t *obj, const char *parent, const char *key,
		   unsigned flags, long long min, long long max, long long *out)
{
	char path[JPATH_MAX];
	json_t *v;

	if (lookup(ld, obj, parent, key, flags, path, &v) == 0)
		return 0;
	return val_int(ld, path, v, min, max, out) == 0 ? 1 : -1;
}

static int key_enum(struct loader *ld, json_t *obj, const char *parent, const char *key,
		    const char *const *names, int *out)
{
	char path[JPATH_MAX];
	json_t *v;

	if (lookup(ld, obj, parent, key, 0, path, &v) == 0)
		return 0;
	return val_enum(ld, path, v, names, out) == 0 ? 1 : -1;
}

static int key_file(struct loader *ld, json_t *obj, const char *parent, const char *key,
		    unsigned flags, char **out)
{
	char path[JPATH_MAX];
	char *abs = NULL;
	json_t *v;

	if (lookup(ld, obj, parent, key, flags, path, &v) == 0)
		return 0;
	if (val_file(ld, path, v, flags, &abs) != 0)
		return -1;
	free(*out);
	*out = abs;
	return 1;
}

/* An array of at most CM_CONFIG_MAX_LIST entries (0/1/-1 as above). */
static int key_array(struct loader *ld, json_t *obj, const char *parent, const char *key,
		     unsigned flags, char *path, json_t **arr)
{
	if (lookup(ld, obj, parent, key, flags, path, arr) == 0)
		return 0;
	if (!json_is_array(*arr)) {
		add_error(ld, path, "expected an array, got %s", type_name(*arr));
		return -1;
	}
	if (json_array_size(*arr) > CM_CONFIG_MAX_LIST) {
		add_error(ld, path, "too many entries (%zu; at most %d)", json_array_size(*arr),
			  CM_CONFIG_MAX_LIST);
		return -1;
	}
	return 1;
}

/* An object; unknown keys reported. 0 absent, 1 object, -1 not an object. */
static int key_object(struct loader *ld, json_t *obj, const char *parent, const char *key,
		      unsigned flags, const char *const *allowed, char *path, json_t **o)
{
	if (lookup(ld, obj, parent, key, flags, path, o) == 0)
		return 0;
	return val_object(ld, path, *o, allowed) == 0 ? 1 : -1;
}

/* ---- DNs and URLs --------------------------------------------------------- */

static bool is_dc_type(const char *t, size_t n)
{
	static const char dc_oid[] = "0.9.2342.19200300.100.1.25";

	return (n == 2 && strncasecmp(t, "dc", 2) == 0) ||
	       (n == sizeof(dc_oid) - 1 && memcmp(t, dc_oid, n) == 0);
}

/* Loose RFC 4514 DN check: one or more RDNs of type=value AVAs, escapes
 * well-formed, no NUL. With dns non-NULL, *dns is the DC= values in order
 * joined by '.', or NULL when there are none. 0 ok, -1 malformed, -2 OOM. */
static int parse_dn(const char *dn, char **dns)
{
	size_t cap = strlen(dn) + 1, dn_len = 0;
	char *val = malloc(cap), *dc = malloc(cap);
	const char *p = dn;
	int rc = -1;

	if (val == NULL || dc == NULL) {
		rc = -2;
		goto cleanup;
	}
	for (;;) {
		const char *type;
		size_t tlen, vlen = 0, keep = 0;

		while (*p == ' ')
			p++;
		type = p;
		while (isalnum((unsigned char)*p) || *p == '-' || *p == '.')
			p++;
		tlen = (size_t)(p - type);
		while (*p == ' ')
			p++;
		if (tlen == 0 || *p != '=')
			goto cleanup;
		p++;
		while (*p == ' ')
			p++;
		while (*p != '\0' && *p != ',' && *p != '+') {
			int c;
			bool escaped = *p == '\\';

			if (escaped) {
				int h = cm_hex_value((unsigned char)p[1]);
				int l = h < 0 ? -1 : cm_hex_value((unsigned char)p[2]);

				if (h >= 0 && l >= 0) {
					c = h * 16 + l;
					p += 3;
				} else if (p[1] != '\0' && strchr(" \"#+,;<=>\\", p[1]) != NULL) {
					c = (unsigned char)p[1];
					p += 2;
				} else {
					goto cleanup;
				}
				if (c == 0)
					goto cleanup;
			} else {
				c = (unsigned char)*p++;
			}
			val[vlen++] = (char)c;
			if (escaped || c != ' ')
				keep = vlen; /* unescaped trailing spaces are not part of it */
		}
		vlen = keep;
		if (is_dc_type(type, tlen) && vlen > 0) {
			if (dn_len > 0)
				dc[dn_len++] = '.';
			memcpy(dc + dn_len, val, vlen);
			dn_len += vlen;
		}
		if (*p == '\0')
			break;
		p++; /* ',' or '+': another AVA must follow */
	}
	dc[dn_len] = '\0';
	rc = 0;
	if (dns != NULL) {
		*dns = dn_len > 0 ? dc : NULL;
		if (dn_len > 0)
			dc = NULL;
	}
cleanup:
	free(val);
	free(dc);
	return rc;
}

static bool has_space_or_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return true;
	return false;
}

static bool has_prefix_ci(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool valid_ldap_uri(const char *s)
{
	return (has_prefix_ci(s, "ldap://") || has_prefix_ci(s, "ldaps://")) &&
	       !has_space_or_ctl(s);
}

static bool valid_http_url(const char *s)
{
	size_t n = has_prefix_ci(s, "http://") ? 7 : has_prefix_ci(s, "https://") ? 8 : 0;

	return n > 0 && s[n] != '\0' && s[n] != '/' && !has_space_or_ctl(s);
}

/* "/" or "/seg/seg": no empty, "." or ".." segment, no trailing '/', no '?',
 * '#' or '\\' — the form request paths have after normalization. */
static bool valid_location_path(const char *s)
{
	if (s[0] != '/')
		return false;
	if (s[1] == '\0')
		return true;
	for (const char *seg = s + 1;;) {
		size_t n = strcspn(seg, "/");

		if (n == 0 || (n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)seg[i];

			if (c < 0x20 || c == 0x7f || c == '?' || c == '#' || c == '\\')
				return false;
		}
		if (seg[n] == '\0')
			return true;
		seg += n + 1;
	}
}

/* ---- lists ----------------------------------------------------------------- */

enum list_kind { LIST_FILES, LIST_DNS };

/* A string list; entries that fail validation are reported and left out. */
static int key_strlist(struct loader *ld, json_t *obj, const char *parent, const char *key,
		       unsigned flags, enum list_kind kind, bool nonempty, struct cm_strlist *out)
{
	char path[JPATH_MAX];
	json_t *arr, *v;
	size_t i;
	int r = key_array(ld, obj, parent, key, flags, path, &arr);

	if (r <= 0)
		return r;
	if (nonempty && json_array_size(arr) == 0) {
		add_error(ld, path, "expected at least one %s", kind == LIST_FILES ? "file" : "DN");
		return -1;
	}
	if (json_array_size(arr) > 0) {
		out->v = calloc(json_array_size(arr), sizeof(*out->v));
		if (out->v == NULL) {
			add_oom(ld, path);
			return -1;
		}
	}
	json_array_foreach (arr, i, v) {
		char ip[JPATH_MAX];
		char *s = NULL;

		path_index(ip, path, i);
		if (kind == LIST_FILES) {
			if (val_file(ld, ip, v, flags & (F_CHECK | F_SECRET), &s) != 0)
				continue;
		} else {
			const char *dn = val_str(ld, ip, v, 0);
			int pr;

			if (dn == NULL)
				continue;
			pr = parse_dn(dn, NULL);
			if (pr != 0) {
				if (pr == -2)
					add_oom(ld, ip);
				else
					add_error(ld, ip, "expected a DN such as %s",
						  GROUP_DN_EXAMPLE);
				continue;
			}
			s = dup_or_oom(ld, ip, dn);
			if (s == NULL)
				continue;
		}
		out->v[out->n++] = s;
	}
	return 1;
}

static void strlist_free(struct cm_strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* ---- sections ------------------------------------------------------------- */

static const char *const top_keys[] = {"listen",        "admin",     "client_certificates",
				       "locations",     "directory", "mapping",
				       "authorization", "upstream",  "cache",
				       "logging",       "errors",    "user",
				       "server",        NULL};
static const char *const listen_keys[] = {"address", "port", "certificate", "key", NULL};
static const char *const admin_keys[] = {"address", "port", NULL};
static const char *const cc_keys[] = {"trusted_issuers", "require_client_auth_eku", "revocation",
				      NULL};
static const char *const revocation_keys[] = {"mode",           "crl_files",       "fetch_cdp",
					      "ocsp",           "ocsp_responder",  "timeout_ms",
					      "cdp_timeout_ms", "ocsp_timeout_ms", NULL};
static const char *const location_keys[] = {"path", "client_certificate", NULL};
static const char *const directory_keys[] = {
	"uris",    "dialect",  "base_dn",    "bind_dn",        "bind_password_file",
	"ca_file", "starttls", "timeout_ms", "netbios_domain", NULL};
static const char *const mapping_keys[] = {"methods", "on_ambiguous", NULL};
static const char *const authorization_keys[] = {"required_groups", "check_account_state",
						 "basic_user_binding", NULL};
static const char *const upstream_keys[] = {"url",      "ca_file",   "verify",
					    "identity", "timeout_s", NULL};
static const char *const cache_keys[] = {"ttl_s", "negative_ttl_s", "max_entries", NULL};
static const char *const logging_keys[] = {"access_log", "audit_log", NULL};
static const char *const server_keys[] = {"threads",
					  "decision_threads",
					  "max_connections",
					  "connection_memory_bytes",
					  "client_timeout_s",
					  "handshake_timeout_s",
					  "request_header_timeout_s",
					  "shutdown_timeout_s",
					  "max_request_head_bytes",
					  "tls_session_tickets",
					  "tls_ticket_key_file",
					  NULL};

static const char *const revocation_modes[] = {"off", "soft", "hard", NULL};
static const char *const dialects[] = {"ad", "rfc4523", NULL};
static const char *const cert_modes[] = {"require", "accept", "ignore", NULL};
static const char *const basic_bindings[] = {"off", "if_present", "required", NULL};
static const char *const ambiguous_modes[] = {"deny", "basic_user", NULL};
static const char *const identities[] = {"basic", "headers", NULL};
static const char *const errors_modes[] = {"custom", "detailed", NULL};

/* Files certmapd alone opens (TLS key and certificate, upstream CA) are only
 * checked for the daemon: `certmapctl check` must work for an operator who
 * cannot read the server's private key. */
static unsigned daemon_check(const struct loader *ld)
{
	return ld->daemon ? F_CHECK : 0;
}

static void parse_listen(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	json_t *arr, *item;
	size_t i;
	int r = key_array(ld, root, "$", "listen", ld->daemon ? F_REQUIRED : 0, path, &arr);

	if (r <= 0)
		return;
	if (json_array_size(arr) == 0) {
		add_error(ld, path, "expected at least one listener");
		return;
	}
	cfg->listen = calloc(json_array_size(arr), sizeof(*cfg->listen));
	if (cfg->listen == NULL) {
		add_oom(ld, path);
		return;
	}
	cfg->n_listen = json_array_size(arr);
	json_array_foreach (arr, i, item) {
		struct cm_listen *l = &cfg->listen[i];
		char ip[JPATH_MAX];
		long long port;

		path_index(ip, path, i);
		if (val_object(ld, ip, item, listen_keys) != 0)
			continue;
		key_string(ld, item, ip, "address", F_REQUIRED, &l->address);
		if (key_int(ld, item, ip, "port", F_REQUIRED, 1, 65535, &port) == 1)
			l->port = (int)port;
		key_file(ld, item, ip, "certificate", F_REQUIRED | daemon_check(ld),
			 &l->certificate);
		key_file(ld, item, ip, "key", F_REQUIRED | F_SECRET | daemon_check(ld), &l->key);
	}
}

static void parse_admin(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	long long port;
	json_t *o;

	if (key_object(ld, root, "$", "admin", 0, admin_keys, path, &o) <= 0)
		return;
	cfg->admin.enabled = true;
	key_string(ld, o, path, "address", 0, &cfg->admin.address);
	if (key_int(ld, o, path, "port", 0, 1, 65535, &port) == 1)
		cfg->admin.port = (int)port;
}

static void parse_revocation(struct loader *ld, json_t *cc, const char *parent)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX], up[JPATH_MAX];
	long long t;
	int mode;
	json_t *o;
	char *url = NULL;

	if (key_object(ld, cc, parent, "revocation", 0, revocation_keys, path, &o) <= 0)
		return;
	if (key_enum(ld, o, path, "mode", revocation_modes, &mode) == 1)
		cfg->client_certificates.revocation.mode = (enum cm_revocation_mode)mode;
	key_strlist(ld, o, path, "crl_files", F_CHECK, LIST_FILES, false,
		    &cfg->client_certificates.revocation.crl_files);
	key_bool(ld, o, path, "fetch_cdp", &cfg->client_certificates.revocation.fetch_cdp);
	key_bool(ld, o, path, "ocsp", &cfg->client_certificates.revocation.ocsp);
	if (key_string(ld, o, path, "ocsp_responder", F_NULLABLE, &url) == 1) {
		path_key(up, path, "ocsp_responder", strlen("ocsp_responder"));
		if (!valid_http_url(url) || strncasecmp(url, "http://", 7) != 0) {
			add_error(ld, up,
				  "expected an http:// URL (OCSP is fetched over plain HTTP)");
			free(url);
		} else {
			cfg->client_certificates.revocation.ocsp_responder = url;
		}
	}
	if (key_int(ld, o, path, "timeout_ms", 0, 1, 600000, &t) == 1)
		cfg->client_certificates.revocation.timeout_ms = (int)t;
	/* extension: per-source timeouts, default timeout_ms */
	cfg->client_certificates.revocation.cdp_timeout_ms =
		cfg->client_certificates.revocation.timeout_ms;
	cfg->client_certificates.revocation.ocsp_timeout_ms =
		cfg->client_certificates.revocation.timeout_ms;
	if (key_int(ld, o, path, "cdp_timeout_ms", 0, 1, 600000, &t) == 1)
		cfg->client_certificates.revocation.cdp_timeout_ms = (int)t;
	if (key_int(ld, o, path, "ocsp_timeout_ms", 0, 1, 600000, &t) == 1)
		cfg->client_certificates.revocation.ocsp_timeout_ms = (int)t;
}

static void parse_client_certificates(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	json_t *o;

	if (key_object(ld, root, "$", "client_certificates", F_REQUIRED, cc_keys, path, &o) <= 0)
		return;
	key_strlist(ld, o, path, "trusted_issuers", F_REQUIRED | F_CHECK, LIST_FILES, true,
		    &cfg->client_certificates.trusted_issuers);
	key_bool(ld, o, path, "require_client_auth_eku",
		 &cfg->client_certificates.require_client_auth_eku);
	parse_revocation(ld, o, path);
}

static void parse_locations(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	json_t *arr, *item;
	size_t i;
	int r = key_array(ld, root, "$", "locations", 0, path, &arr);

	if (r < 0)
		return;
	if (r == 0) {
		cfg->locations = calloc(1, sizeof(*cfg->locations));
		if (cfg->locations == NULL || (cfg->locations[0].path = strdup("/")) == NULL) {
			add_oom(ld, "$.locations");
			return;
		}
		cfg->locations[0].client_certificate = CM_CERT_REQUIRE;
		cfg->n_locations = 1;
		return;
	}
	if (json_array_size(arr) == 0) {
		add_error(ld, path, "expected at least one location");
		return;
	}
	cfg->locations = calloc(json_array_size(arr), sizeof(*cfg->locations));
	if (cfg->locations == NULL) {
		add_oom(ld, path);
		return;
	}
	cfg->n_locations = json_array_size(arr);
	json_array_foreach (arr, i, item) {
		struct cm_location *l = &cfg->locations[i];
		char ip[JPATH_MAX], pp[JPATH_MAX], got[SHOW_BUF];
		json_t *v;
		int mode;

		path_index(ip, path, i);
		if (val_object(ld, ip, item, location_keys) != 0)
			continue;
		if (lookup(ld, item, ip, "path", F_REQUIRED, pp, &v) == 1) {
			const char *s = val_str(ld, pp, v, 0);

			if (s != NULL && !valid_location_path(s)) {
				quote_json_string(v, got, sizeof(got));
				add_error(ld, pp,
					  "expected a normalized path starting with \"/\" (like "
					  "\"/owa\"), got %s",
					  got);
			} else if (s != NULL) {
				for (size_t j = 0; j < i; j++) {
					if (cfg->locations[j].path != NULL &&
					    strcasecmp(cfg->locations[j].path, s) == 0) {
						add_error(ld, pp,
							  "duplicate of %s[%zu].path (paths are "
							  "case-insensitive)",
							  path, j);
						s = NULL;
						break;
					}
				}
				if (s != NULL)
					l->path = dup_or_oom(ld, pp, s);
			}
		}
		if (lookup(ld, item, ip, "client_certificate", F_REQUIRED, pp, &v) == 1 &&
		    val_enum(ld, pp, v, cert_modes, &mode) == 0)
			l->client_certificate = (enum cm_cert_mode)mode;
	}
}

static void read_bind_password(struct loader *ld, const char *path)
{
	struct cm_config *cfg = ld->cfg;
	struct cm_err err;

	if (cm_secret_read(cfg->directory.bind_password_file, &cfg->directory.bind_password,
			   &err) != 0) {
		add_error(ld, path, "%s", err.msg);
		return;
	}
	if (cfg->directory.bind_password[0] == '\0') {
		/* An empty password makes a simple bind anonymous (RFC 4513 §5.1.2). */
		add_error(ld, path, "%s is empty", cfg->directory.bind_password_file);
	}
}

/* directory.uris; needs directory.starttls already read. */
static void parse_uris(struct loader *ld, json_t *o, const char *parent)
{
	struct cm_strlist *uris = &ld->cfg->directory.uris;
	char path[JPATH_MAX];
	json_t *arr, *v;
	size_t i;

	if (key_array(ld, o, parent, "uris", F_REQUIRED, path, &arr) != 1)
		return;
	if (json_array_size(arr) == 0) {
		add_error(ld, path, "expected at least one URI");
		return;
	}
	uris->v = calloc(json_array_size(arr), sizeof(*uris->v));
	if (uris->v == NULL) {
		add_oom(ld, path);
		return;
	}
	json_array_foreach (arr, i, v) {
		char ip[JPATH_MAX];
		const char *s;
		char *d;

		path_index(ip, path, i);
		s = val_str(ld, ip, v, 0);
		if (s == NULL)
			continue;
		if (!valid_ldap_uri(s)) {
			add_error(ld, ip, "expected an ldap:// or ldaps:// URI");
			continue;
		}
		if (ld->cfg->directory.starttls && has_prefix_ci(s, "ldaps://")) {
			add_error(ld, ip, "\"starttls\" cannot be used with an ldaps:// URI");
			continue;
		}
		d = dup_or_oom(ld, ip, s);
		if (d != NULL)
			uris->v[uris->n++] = d;
	}
}

static void parse_directory(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX], kp[JPATH_MAX], pwp[JPATH_MAX];
	long long t;
	json_t *o;
	int dialect, r_dn, r_pw, pr;

	if (key_object(ld, root, "$", "directory", F_REQUIRED, directory_keys, path, &o) <= 0)
		return;
	key_bool(ld, o, path, "starttls", &cfg->directory.starttls);
	parse_uris(ld, o, path);
	if (key_enum(ld, o, path, "dialect", dialects, &dialect) == 1)
		cfg->directory.dialect = (enum cm_dialect)dialect;
	if (key_string(ld, o, path, "base_dn", F_REQUIRED, &cfg->directory.base_dn) == 1) {
		path_key(kp, path, "base_dn", strlen("base_dn"));
		pr = parse_dn(cfg->directory.base_dn, &cfg->directory.dns_domain);
		if (pr == -2)
			add_oom(ld, kp);
		else if (pr != 0)
			add_error(ld, kp, "expected a DN such as %s", BASE_DN_EXAMPLE);
	}
	r_dn = key_string(ld, o, path, "bind_dn", F_NULLABLE, &cfg->directory.bind_dn);
	if (r_dn == 1) {
		path_key(kp, path, "bind_dn", strlen("bind_dn"));
		pr = parse_dn(cfg->directory.bind_dn, NULL);
		if (pr == -2)
			add_oom(ld, kp);
		else if (pr != 0)
			add_error(ld, kp, "expected a DN such as %s", BIND_DN_EXAMPLE);
	}
	r_pw = key_file(ld, o, path, "bind_password_file", F_NULLABLE | F_CHECK | F_SECRET,
			&cfg->directory.bind_password_file);
	path_key(pwp, path, "bind_password_file", strlen("bind_password_file"));
	if (r_pw == 1)
		read_bind_password(ld, pwp);
	if (r_dn == 0 && r_pw != 0) {
		path_key(kp, path, "bind_dn", strlen("bind_dn"));
		add_error(ld, kp, "required with \"bind_password_file\"");
	}
	if (r_dn != 0 && r_pw == 0)
		add_error(ld, pwp, "required with \"bind_dn\"");
	key_file(ld, o, path, "ca_file", F_NULLABLE | F_CHECK, &cfg->directory.ca_file);
	if (key_int(ld, o, path, "timeout_ms", 0, 1, 600000, &t) == 1)
		cfg->directory.timeout_ms = (int)t;
	key_string(ld, o, path, "netbios_domain", F_NULLABLE, &cfg->directory.netbios_domain);
}

static bool is_implemented(enum cm_method m)
{
	for (size_t i = 0; i < N_IMPLEMENTED; i++)
		if (implemented_methods[i] == m)
			return true;
	return false;
}

/* "user_certificate, upn" */
static void implemented_list(char *out, size_t outsz)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < N_IMPLEMENTED; i++) {
		int w = snprintf(out + o, outsz - o, "%s%s", i > 0 ? ", " : "",
				 cm_method_name(implemented_methods[i]));

		if (w < 0 || (size_t)w >= outsz - o)
			break;
		o += (size_t)w;
	}
}

/* mapping.methods: names known to decision.c, no duplicates, implemented. */
static void parse_methods(struct loader *ld, json_t *o, const char *parent)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX], expect[256], avail[256];
	const char *names[CM_METHOD_COUNT];
	bool seen[CM_METHOD_COUNT] = {false};
	size_t i, n = 0;
	json_t *arr, *v;

	if (key_array(ld, o, parent, "methods", 0, path, &arr) != 1)
		return;
	if (json_array_size(arr) == 0) {
		add_error(ld, path, "expected at least one method");
		return;
	}
	for (i = 0; i < CM_METHOD_COUNT; i++)
		names[i] = cm_method_name((enum cm_method)i);
	expect_list(names, CM_METHOD_COUNT, expect, sizeof(expect));
	implemented_list(avail, sizeof(avail));
	json_array_foreach (arr, i, v) {
		char ip[JPATH_MAX], got[SHOW_BUF];
		enum cm_method m;

		path_index(ip, path, i);
		if (!json_is_string(v)) {
			add_error(ld, ip, "expected %s, got %s", expect, type_name(v));
			continue;
		}
		if (strlen(json_string_value(v)) != json_string_length(v) ||
		    cm_method_from_name(json_string_value(v), &m) != 0) {
			quote_json_string(v, got, sizeof(got));
			add_error(ld, ip, "expected %s, got %s", expect, got);
			continue;
		}
		if (seen[m]) {
			add_error(ld, ip, "duplicate method \"%s\"", cm_method_name(m));
			continue;
		}
		seen[m] = true;
		if (!is_implemented(m)) {
			add_error(ld, ip, "method \"%s\" is not implemented yet (available: %s)",
				  cm_method_name(m), avail);
			continue;
		}
		cfg->mapping.methods[n++] = m; /* n <= CM_METHOD_COUNT: no duplicates */
	}
	if (n > 0) /* otherwise errors were reported and the load fails */
		cfg->mapping.n_methods = n;
}

static void parse_mapping(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	json_t *o;
	int mode;

	if (key_object(ld, root, "$", "mapping", 0, mapping_keys, path, &o) <= 0)
		return;
	parse_methods(ld, o, path);
	if (key_enum(ld, o, path, "on_ambiguous", ambiguous_modes, &mode) == 1)
		cfg->mapping.on_ambiguous = (enum cm_on_ambiguous)mode;
}

static void parse_authorization(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	json_t *o;
	int mode;

	if (key_object(ld, root, "$", "authorization", 0, authorization_keys, path, &o) <= 0)
		return;
	key_strlist(ld, o, path, "required_groups", 0, LIST_DNS, false,
		    &cfg->authorization.required_groups);
	key_bool(ld, o, path, "check_account_state", &cfg->authorization.check_account_state);
	if (key_enum(ld, o, path, "basic_user_binding", basic_bindings, &mode) == 1)
		cfg->authorization.basic_user_binding = (enum cm_basic_binding)mode;
}

static void parse_upstream(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX], up[JPATH_MAX];
	long long t;
	json_t *o;
	int mode;

	if (key_object(ld, root, "$", "upstream", ld->daemon ? F_REQUIRED : 0, upstream_keys, path,
		       &o) <= 0)
		return;
	cfg->upstream.present = true;
	if (key_string(ld, o, path, "url", F_REQUIRED, &cfg->upstream.url) == 1 &&
	    !valid_http_url(cfg->upstream.url)) {
		path_key(up, path, "url", strlen("url"));
		add_error(ld, up, "expected an http:// or https:// URL");
	}
	key_file(ld, o, path, "ca_file", F_NULLABLE | daemon_check(ld), &cfg->upstream.ca_file);
	key_bool(ld, o, path, "verify", &cfg->upstream.verify);
	if (key_enum(ld, o, path, "identity", identities, &mode) == 1)
		cfg->upstream.identity = (enum cm_identity)mode;
	if (key_int(ld, o, path, "timeout_s", 0, 1, 86400, &t) == 1)
		cfg->upstream.timeout_s = (long)t;
}

static void parse_cache(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	long long x;
	json_t *o;

	if (key_object(ld, root, "$", "cache", 0, cache_keys, path, &o) <= 0)
		return;
	if (key_int(ld, o, path, "ttl_s", 0, 0, 86400, &x) == 1)
		cfg->cache.ttl_s = (int)x;
	if (key_int(ld, o, path, "negative_ttl_s", 0, 0, 86400, &x) == 1)
		cfg->cache.negative_ttl_s = (int)x;
	if (key_int(ld, o, path, "max_entries", 0, 0, 10000000, &x) == 1)
		cfg->cache.max_entries = (long)x;
}

static void parse_logging(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	json_t *o;

	if (key_object(ld, root, "$", "logging", 0, logging_keys, path, &o) <= 0)
		return;
	/* Resolved only: the log writer creates them. */
	key_file(ld, o, path, "access_log", F_NULLABLE, &cfg->logging.access_log);
	key_file(ld, o, path, "audit_log", F_NULLABLE, &cfg->logging.audit_log);
}

static void parse_server(struct loader *ld, json_t *root)
{
	struct cm_config *cfg = ld->cfg;
	char path[JPATH_MAX];
	long long x;
	json_t *o;

	if (key_object(ld, root, "$", "server", 0, server_keys, path, &o) <= 0)
		return;
	if (key_int(ld, o, path, "threads", 0, 0, 256, &x) == 1)
		cfg->server.threads = (int)x;
	if (key_int(ld, o, path, "decision_threads", 0, 1, 256, &x) == 1)
		cfg->server.decision_threads = (int)x;
	if (key_int(ld, o, path, "max_connections", 0, 1, 1000000, &x) == 1)
		cfg->server.max_connections = (int)x;
	if (key_int(ld, o, path, "connection_memory_bytes", 0, 4096, 1048576, &x) == 1)
		cfg->server.connection_memory_bytes = (int)x;
	if (key_int(ld, o, path, "client_timeout_s", 0, 1, 86400, &x) == 1)
		cfg->server.client_timeout_s = (int)x;
	if (key_int(ld, o, path, "handshake_timeout_s", 0, 1, 600, &x) == 1)
		cfg->server.handshake_timeout_s = (int)x;
	if (key_int(ld, o, path, "request_header_timeout_s", 0, 1, 3600, &x) == 1)
		cfg->server.request_header_timeout_s = (int)x;
	if (key_int(ld, o, path, "shutdown_timeout_s", 0, 0, 86400, &x) == 1)
		cfg->server.shutdown_timeout_s = (int)x;
	if (key_int(ld, o, path, "max_request_head_bytes", 0, 1024, 1048576, &x) == 1)
		cfg->server.max_request_head_bytes = (int)x;
	key_bool(ld, o, path, "tls_session_tickets", &cfg->server.tls_session_tickets);
	key_file(ld, o, path, "tls_ticket_key_file", F_NULLABLE | F_SECRET | daemon_check(ld),
		 &cfg->server.tls_ticket_key_file);
}

static int set_defaults(struct cm_config *cfg, const char *file)
{
	cfg->file = strdup(file);
	cfg->admin.address = strdup("127.0.0.1");
	cfg->admin.port = 9090;
	cfg->client_certificates.require_client_auth_eku = true;
	cfg->client_certificates.revocation.mode = CM_REVOCATION_OFF;
	cfg->client_certificates.revocation.timeout_ms = 3000;
	cfg->client_certificates.revocation.cdp_timeout_ms = 3000;
	cfg->client_certificates.revocation.ocsp_timeout_ms = 3000;
	cfg->directory.dialect = CM_DIALECT_AD;
	cfg->directory.timeout_ms = 3000;
	cfg->mapping.methods[0] = CM_METHOD_USER_CERTIFICATE;
	cfg->mapping.n_methods = 1;
	cfg->mapping.on_ambiguous = CM_AMBIGUOUS_DENY;
	cfg->authorization.check_account_state = true;
	cfg->authorization.basic_user_binding = CM_BASIC_OFF;
	cfg->upstream.verify = true;
	cfg->upstream.identity = CM_IDENTITY_BASIC;
	cfg->upstream.timeout_s = 10800;
	cfg->cache.ttl_s = 300;
	cfg->cache.negative_ttl_s = 30;
	cfg->cache.max_entries = 100000;
	cfg->errors = CM_ERRORS_CUSTOM;
	cfg->server.threads = 0;
	cfg->server.decision_threads = 4;
	cfg->server.max_connections = 10000;
	cfg->server.connection_memory_bytes = 16384;
	cfg->server.client_timeout_s = 10800;
	cfg->server.handshake_timeout_s = 10;
	cfg->server.request_header_timeout_s = 30;
	cfg->server.shutdown_timeout_s = 30;
	cfg->server.max_request_head_bytes = 16384;
	cfg->server.tls_session_tickets = true;
	return cfg->file != NULL && cfg->admin.address != NULL ? 0 : -1;
}

/* The absolute directory of file (symlinks in it resolved, the file's own
 * name kept), so relative paths survive a later chdir. */
static char *config_dir(const char *file)
{
	const char *slash = strrchr(file, '/');
	char *dir, *abs;

	if (slash == NULL)
		dir = strdup(".");
	else
		dir = strndup(file, slash == file ? 1 : (size_t)(slash - file));
	if (dir == NULL)
		return NULL;
	abs = realpath(dir, NULL);
	free(dir);
	return abs;
}

static void parse_root(struct loader *ld, json_t *root)
{
	int mode;

	val_object(ld, "$", root, top_keys);
	parse_listen(ld, root);
	parse_admin(ld, root);
	parse_client_certificates(ld, root);
	parse_locations(ld, root);
	parse_directory(ld, root);
	parse_mapping(ld, root);
	parse_authorization(ld, root);
	parse_upstream(ld, root);
	parse_cache(ld, root);
	parse_logging(ld, root);
	parse_server(ld, root);
	if (key_enum(ld, root, "$", "errors", errors_modes, &mode) == 1)
		ld->cfg->errors = (enum cm_errors_mode)mode;
	key_string(ld, root, "$", "user", 0, &ld->cfg->user);
}

/* The file's bytes, bounded by CM_CONFIG_MAX_BYTES; 0 or an error line. */
static int read_config(struct loader *ld, unsigned char **buf, size_t *len)
{
	struct cm_err err;
	struct stat st;

	if (stat(ld->file, &st) != 0) {
		add_error(ld, NULL, "cannot read: %s", strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		add_error(ld, NULL, "not a regular file");
		return -1;
	}
	if (st.st_size > (off_t)CM_CONFIG_MAX_BYTES) {
		add_error(ld, NULL, "larger than %u bytes", CM_CONFIG_MAX_BYTES);
		return -1;
	}
	/* The file may change between stat and read: the read is bounded too. */
	if (cm_file_read(ld->file, CM_CONFIG_MAX_BYTES, buf, len, &err) != 0) {
		add_line(ld, cm_strdup_printf("%s", err.msg));
		return -1;
	}
	return 0;
}

int cm_config_load(const char *file, enum cm_config_purpose purpose, struct cm_config **out,
		   struct cm_config_errors *errs)
{
	struct cm_config_errors local = {NULL, 0};
	struct loader ld = {0};
	struct cm_config *cfg = NULL;
	unsigned char *buf = NULL;
	json_t *root = NULL;
	json_error_t jerr;
	size_t len = 0;
	int rc = -1;

	if (out != NULL)
		*out = NULL;
	if (errs == NULL)
		errs = &local;
	errs->lines = calloc(CM_CONFIG_MAX_ERRORS, sizeof(*errs->lines));
	errs->n = 0;
	if (errs->lines == NULL)
		goto cleanup;
	ld.file = file != NULL ? file : "(null)";
	ld.errs = errs;
	ld.daemon = purpose == CM_CONFIG_FOR_DAEMON;
	if (file == NULL || out == NULL) {
		add_error(&ld, NULL, "no configuration file or result given");
		goto cleanup;
	}
	if (read_config(&ld, &buf, &len) != 0)
		goto cleanup;
	/* JSON_ALLOW_NUL: a "\u0000" is then reported with its JSON path. */
	root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (root == NULL) {
		if (jerr.line > 0)
			add_line(&ld, cm_strdup_printf("%s:%d:%d: invalid JSON: %s", file,
						       jerr.line, jerr.column, jerr.text));
		else
			add_error(&ld, NULL, "invalid JSON: %s", jerr.text);
		goto cleanup;
	}
	if (!json_is_object(root)) {
		add_error(&ld, "$", "expected an object, got %s", type_name(root));
		goto cleanup;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL || set_defaults(cfg, file) != 0) {
		add_oom(&ld, NULL);
		goto cleanup;
	}
	cfg->dir = config_dir(file);
	if (cfg->dir == NULL) {
		add_error(&ld, NULL, "cannot resolve the file's directory: %s", strerror(errno));
		goto cleanup;
	}
	ld.cfg = cfg;
	parse_root(&ld, root);
	if (ld.oom && errs->n == 0)
		add_oom(&ld, NULL);
	if (errs->n > 0)
		goto cleanup;
	*out = cfg;
	cfg = NULL;
	rc = 0;
cleanup:
	json_decref(root);
	free(buf);
	cm_config_free(cfg);
	if (errs == &local || rc == 0)
		cm_config_errors_free(errs);
	return rc;
}

void cm_config_free(struct cm_config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->file);
	free(cfg->dir);
	for (size_t i = 0; i < cfg->n_listen; i++) {
		free(cfg->listen[i].address);
		free(cfg->listen[i].certificate);
		free(cfg->listen[i].key);
	}
	free(cfg->listen);
	free(cfg->admin.address);
	strlist_free(&cfg->client_certificates.trusted_issuers);
	strlist_free(&cfg->client_certificates.revocation.crl_files);
	free(cfg->client_certificates.revocation.ocsp_responder);
	for (size_t i = 0; i < cfg->n_locations; i++)
		free(cfg->locations[i].path);
	free(cfg->locations);
	strlist_free(&cfg->directory.uris);
	free(cfg->directory.base_dn);
	free(cfg->directory.bind_dn);
	free(cfg->directory.bind_password_file);
	cm_secret_free(cfg->directory.bind_password);
	free(cfg->directory.ca_file);
	free(cfg->directory.netbios_domain);
	free(cfg->directory.dns_domain);
	strlist_free(&cfg->authorization.required_groups);
	free(cfg->upstream.url);
	free(cfg->upstream.ca_file);
	free(cfg->server.tls_ticket_key_file);
	free(cfg->logging.access_log);
	free(cfg->logging.audit_log);
	free(cfg->user);
	free(cfg);
}

void cm_config_errors_free(struct cm_config_errors *errs)
{
	if (errs == NULL)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->lines[i]);
	free(errs->lines);
	errs->lines = NULL;
	errs->n = 0;
}

const struct cm_location *cm_config_location(const struct cm_config *cfg, const char *path)
{
	const struct cm_location *best = NULL;
	size_t best_len = 0;

	if (cfg == NULL || path == NULL || path[0] != '/')
		return NULL;
	for (size_t i = 0; i < cfg->n_locations; i++) {
		const char *lp = cfg->locations[i].path;
		size_t n;

		if (lp == NULL)
			continue;
		n = strlen(lp);
		/* "/" matches everything; otherwise whole segments only. */
		if (n > 1 && (strncasecmp(path, lp, n) != 0 || (path[n] != '\0' && path[n] != '/')))
			continue;
		if (best == NULL || n > best_len) {
			best = &cfg->locations[i];
			best_len = n;
		}
	}
	return best;
}

const char *cm_dialect_name(enum cm_dialect d)
{
	switch (d) {
	case CM_DIALECT_AD:
		return "ad";
	case CM_DIALECT_RFC4523:
		return "rfc4523";
	}
	return "unknown";
}

const char *cm_revocation_mode_name(enum cm_revocation_mode m)
{
	switch (m) {
	case CM_REVOCATION_OFF:
		return "off";
	case CM_REVOCATION_SOFT:
		return "soft";
	case CM_REVOCATION_HARD:
		return "hard";
	}
	return "unknown";
}
