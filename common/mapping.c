/*
 * mapping — certificate → directory account (include/certmap/mapping.h).
 *
 * user_certificate: one subtree search at directory.base_dn, then a byte-for-
 * byte comparison of every returned userCertificate value with the presented
 * leaf DER. The directory's own matching is only a pre-filter: in rfc4523 it
 * compares serial + issuer name (a rogue CA with the same name and serial
 * would match), so only exact DER equality maps. Zero exact matches is
 * not_mapped, one is the account, more than one (or a search that hit the
 * size limit, where more might exist) is ambiguous — unless on_ambiguous is
 * basic_user and the Basic-auth user names exactly one of the exact matches.
 * Other methods are not implemented yet and are skipped with a trace line.
 * Threading: stateless; the caller's struct cm_dir serializes LDAP access.
 */
#include "certmap/mapping.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "certmap/policy.h"
#include "certmap/util.h"

#define TRACE_MAX_DNS 8 /* ambiguous matches named one by one in the trace */

#define UAC_COMPUTED_ATTR "msDS-User-Account-Control-Computed"

void cm_account_free(struct cm_account *acct)
{
	if (acct == NULL)
		return;
	free(acct->dn);
	free(acct->name);
	free(acct->sam);
	free(acct->upn);
	free(acct->mail);
	free(acct);
}

/* "\30\82\05…": every byte escaped, as AD wants for octet-string filters. */
static char *escape_every_byte(const unsigned char *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	char *out;

	if (len > (SIZE_MAX - 1) / 3)
		return NULL;
	out = malloc(3 * len + 1);
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		out[3 * i] = '\\';
		out[3 * i + 1] = digits[data[i] >> 4];
		out[3 * i + 2] = digits[data[i] & 0xf];
	}
	out[3 * len] = '\0';
	return out;
}

/* s with every '"' doubled (a GSER string value); malloc'd. */
static char *gser_quote(const char *s)
{
	size_t n = 0;
	char *out, *p;

	for (const char *q = s; *q != '\0'; q++)
		n += *q == '"' ? 2 : 1;
	out = malloc(n + 1);
	if (out == NULL)
		return NULL;
	p = out;
	for (const char *q = s; *q != '\0'; q++) {
		*p++ = *q;
		if (*q == '"')
			*p++ = '"';
	}
	*p = '\0';
	return out;
}

/* The user_certificate filter for the configured dialect; malloc'd. */
static char *cert_filter(const struct cm_config *cfg, const struct cm_cert *cert,
			 const unsigned char *der, size_t der_len, const char **why)
{
	char *serial = NULL, *issuer = NULL, *quoted = NULL, *gser = NULL, *esc = NULL;
	char *filter = NULL;
	X509 *leaf;

	if (cfg->directory.dialect == CM_DIALECT_AD) {
		esc = escape_every_byte(der, der_len);
		if (esc != NULL)
			filter = cm_strdup_printf("(&(objectClass=user)(userCertificate=%s))", esc);
		free(esc);
		if (filter == NULL)
			*why = "out of memory";
		return filter;
	}
	leaf = cm_cert_leaf(cert);
	serial = cm_cert_serial_decimal(cert);
	issuer = leaf != NULL ? cm_x509_name_string(X509_get_issuer_name(leaf)) : NULL;
	if (serial == NULL || issuer == NULL) {
		*why = "cannot read the certificate's serial number or issuer";
		goto done;
	}
	quoted = gser_quote(issuer);
	if (quoted != NULL)
		gser = cm_strdup_printf("{ serialNumber %s, issuer rdnSequence:\"%s\" }", serial,
					quoted);
	if (gser != NULL)
		esc = cm_dir_escape_value(gser, strlen(gser));
	if (esc != NULL)
		filter = cm_strdup_printf("(userCertificate;binary=%s)", esc);
	if (filter == NULL)
		*why = "out of memory";
done:
	free(serial);
	free(issuer);
	free(quoted);
	free(gser);
	free(esc);
	return filter;
}

/* Does one of the entry's userCertificate values equal der? */
static bool holds_cert(const struct cm_dir_entry *e, const unsigned char *der, size_t len)
{
	const struct cm_dir_attr *a = cm_dir_entry_attr(e, "userCertificate");

	if (a == NULL)
		return false;
	for (size_t i = 0; i < a->n_values; i++)
		if (a->values[i].len == len && memcmp(a->values[i].data, der, len) == 0)
			return true;
	return false;
}

static bool parse_i64(const char *s, long long *out)
{
	char *end = NULL;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno == 0 && end != s && *end == '\0';
}

/* A 32-bit flags attribute; AD sends it as a signed decimal. */
static bool parse_flags(const char *s, uint32_t *out)
{
	long long v;

	if (!parse_i64(s, &v) || v < INT32_MIN || v > (long long)UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

/* The account as mapping and policy see it; NULL on allocation failure.
 * Unparseable state attributes fail closed: a bad userAccountControl is
 * treated as absent (disabled), a bad accountExpires as long expired. */
static struct cm_account *account_from_entry(const struct cm_config *cfg,
					     const struct cm_dir_entry *e, struct cm_trace *trace)
{
	struct cm_account *acct = calloc(1, sizeof(*acct));
	const char *s;
	long long v;

	if (acct == NULL)
		return NULL;
	acct->dn = strdup(e->dn);
	if (acct->dn == NULL)
		goto oom;
	if (cfg->directory.dialect == CM_DIALECT_AD) {
		s = cm_dir_entry_str(e, "sAMAccountName");
		acct->sam = dup_or_null(s);
		acct->name = dup_or_null(s);
		if (s != NULL && (acct->sam == NULL || acct->name == NULL))
			goto oom;
		s = cm_dir_entry_str(e, "userPrincipalName");
		if (s != NULL && (acct->upn = strdup(s)) == NULL)
			goto oom;
		s = cm_dir_entry_str(e, "userAccountControl");
		if (s != NULL) {
			acct->has_uac = parse_flags(s, &acct->uac);
			if (!acct->has_uac)
				cm_trace_add(trace,
					     "mapping: %s: unreadable userAccountControl \"%s\"",
					     e->dn, s);
		}
		s = cm_dir_entry_str(e, "accountExpires");
		if (s != NULL) {
			acct->has_account_expires = true;
			if (parse_i64(s, &v)) {
				acct->account_expires = v;
			} else {
				acct->account_expires = 1; /* 1601: expired */
				cm_trace_add(trace, "mapping: %s: unreadable accountExpires \"%s\"",
					     e->dn, s);
			}
		}
	} else {
		s = cm_dir_entry_str(e, "uid");
		if (s != NULL && (acct->name = strdup(s)) == NULL)
			goto oom;
	}
	s = cm_dir_entry_str(e, "mail");
	if (s != NULL && (acct->mail = strdup(s)) == NULL)
		goto oom;
	return acct;
oom:
	cm_account_free(acct);
	return NULL;
}

/* Reads constructed attributes (not returned by subtree searches) with a
 * base-scope search on the account. */
static enum cm_reason read_constructed(struct cm_dir *dir, struct cm_account *acct,
				       struct cm_trace *trace, char **detail)
{
	static const char *const attrs[] = {UAC_COMPUTED_ATTR, NULL};
	struct cm_dir_result res;
	struct cm_err err = {""};
	enum cm_dir_status st;
	const char *s;

	st = cm_dir_search(dir, acct->dn, CM_DIR_SCOPE_BASE, "(objectClass=*)", attrs, 1, &res,
			   trace, &err);
	if (st == CM_DIR_UNAVAILABLE) {
		*detail = strdup(err.msg);
		return CM_REASON_DIRECTORY_UNAVAILABLE;
	}
	if (st == CM_DIR_NO_SUCH_OBJECT || res.n_entries == 0) {
		cm_dir_result_free(&res);
		cm_trace_add(trace, "mapping: account %s vanished before its state was read",
			     acct->dn);
		*detail = cm_strdup_printf("account %s no longer exists", acct->dn);
		return CM_REASON_NOT_MAPPED;
	}
	s = cm_dir_entry_str(&res.entries[0], UAC_COMPUTED_ATTR);
	if (s != NULL) {
		acct->has_uac_computed = parse_flags(s, &acct->uac_computed);
		if (!acct->has_uac_computed)
			cm_trace_add(trace, "mapping: %s: unreadable %s \"%s\"", acct->dn,
				     UAC_COMPUTED_ATTR, s);
	}
	cm_dir_result_free(&res);
	return CM_REASON_ALLOWED;
}

/* Picks among several exact matches the one the Basic-auth user names;
 * -1 unless exactly one does. */
static long pick_by_basic_user(const struct cm_config *cfg, const struct cm_dir_result *res,
			       const size_t *exact, size_t n_exact, const char *basic_user,
			       struct cm_trace *trace)
{
	long picked = -1;
	size_t named = 0;

	for (size_t i = 0; i < n_exact; i++) {
		struct cm_account *acct = account_from_entry(cfg, &res->entries[exact[i]], NULL);

		if (acct == NULL)
			return -1;
		if (cm_policy_basic_user_matches(cfg, acct, basic_user)) {
			named++;
			picked = (long)exact[i];
		}
		cm_account_free(acct);
	}
	if (named != 1) {
		cm_trace_add(
			trace,
			"mapping: on_ambiguous basic_user: Basic user \"%s\" names %zu of the %zu "
			"accounts",
			basic_user, named, n_exact);
		return -1;
	}
	return picked;
}

static enum cm_reason map_user_certificate(const struct cm_config *cfg, struct cm_dir *dir,
					   const struct cm_cert *cert, const char *basic_user,
					   struct cm_account **out, struct cm_trace *trace,
					   char **detail)
{
	static const char *const ad_attrs[] = {
		"userCertificate",    "sAMAccountName", "userPrincipalName", "mail",
		"userAccountControl", "accountExpires", "objectSid",         NULL};
	static const char *const rfc_attrs[] = {"userCertificate;binary", "uid", "mail", NULL};
	bool ad = cfg->directory.dialect == CM_DIALECT_AD;
	struct cm_dir_result res = {NULL, 0, false};
	struct cm_err err = {""};
	struct cm_account *acct = NULL;
	const unsigned char *der;
	size_t der_len = 0, n_exact = 0, *exact = NULL;
	const char *why = NULL;
	char *filter = NULL;
	enum cm_dir_status st;
	enum cm_reason reason;
	long chosen = -1;

	der = cm_cert_der(cert, &der_len);
	if (der == NULL || der_len == 0) {
		cm_trace_add(trace, "mapping: user_certificate: no certificate DER");
		return CM_REASON_NOT_MAPPED;
	}
	filter = cert_filter(cfg, cert, der, der_len, &why);
	if (filter == NULL) {
		cm_trace_add(trace, "mapping: user_certificate: %s", why);
		*detail = strdup(why);
		return CM_REASON_NOT_MAPPED;
	}
	st = cm_dir_search(dir, cfg->directory.base_dn, CM_DIR_SCOPE_SUBTREE, filter,
			   ad ? ad_attrs : rfc_attrs, 0, &res, trace, &err);
	free(filter);
	if (st == CM_DIR_UNAVAILABLE) {
		*detail = strdup(err.msg);
		return CM_REASON_DIRECTORY_UNAVAILABLE;
	}
	if (st == CM_DIR_NO_SUCH_OBJECT) {
		cm_trace_add(trace, "mapping: base DN %s does not exist", cfg->directory.base_dn);
		*detail = cm_strdup_printf("directory base DN %s does not exist",
					   cfg->directory.base_dn);
		cm_dir_result_free(&res);
		return CM_REASON_DIRECTORY_UNAVAILABLE;
	}

	if (res.n_entries > 0) {
		exact = calloc(res.n_entries, sizeof(*exact));
		if (exact == NULL) {
			reason = CM_REASON_DIRECTORY_UNAVAILABLE;
			*detail = strdup("out of memory");
			goto done;
		}
	}
	for (size_t i = 0; i < res.n_entries; i++)
		if (holds_cert(&res.entries[i], der, der_len))
			exact[n_exact++] = i;
	cm_trace_add(trace,
		     "mapping: user_certificate: the directory returned %zu entr%s%s, %zu hold%s "
		     "this certificate byte for byte",
		     res.n_entries, res.n_entries == 1 ? "y" : "ies",
		     res.truncated ? " (size limit reached, more exist)" : "", n_exact,
		     n_exact == 1 ? "s" : "");

	if (n_exact == 0 && !res.truncated) {
		reason = CM_REASON_NOT_MAPPED;
		goto done;
	}
	if (n_exact == 1 && !res.truncated) {
		chosen = (long)exact[0];
	} else {
		for (size_t i = 0; i < n_exact && i < TRACE_MAX_DNS; i++)
			cm_trace_add(trace, "mapping: holds the certificate: %s",
				     res.entries[exact[i]].dn);
		if (res.truncated) {
			/* unseen entries may hold it too: never pick among a partial set */
			cm_trace_add(trace, "mapping: search truncated; refusing to choose");
		} else if (cfg->mapping.on_ambiguous == CM_AMBIGUOUS_BASIC_USER) {
			if (basic_user == NULL)
				cm_trace_add(trace,
					     "mapping: on_ambiguous basic_user: no Basic user");
			else
				chosen = pick_by_basic_user(cfg, &res, exact, n_exact, basic_user,
							    trace);
			if (chosen >= 0)
				cm_trace_add(trace,
					     "mapping: on_ambiguous basic_user: Basic user \"%s\" "
					     "picks %s",
					     basic_user, res.entries[chosen].dn);
		}
		if (chosen < 0) {
			reason = CM_REASON_AMBIGUOUS;
			*detail = res.truncated
					  ? strdup("the certificate is held by too many accounts")
					  : cm_strdup_printf(
						    "the certificate is held by %zu accounts",
						    n_exact);
			goto done;
		}
	}

	acct = account_from_entry(cfg, &res.entries[chosen], trace);
	if (acct == NULL) {
		reason = CM_REASON_DIRECTORY_UNAVAILABLE;
		*detail = strdup("out of memory");
		goto done;
	}
	if (acct->name == NULL) {
		cm_trace_add(trace, "mapping: %s holds the certificate but has no %s", acct->dn,
			     ad ? "sAMAccountName" : "uid");
		*detail = cm_strdup_printf("account %s has no %s", acct->dn,
					   ad ? "sAMAccountName" : "uid");
		reason = CM_REASON_NOT_MAPPED;
		goto done;
	}
	if (ad && cfg->authorization.check_account_state) {
		reason = read_constructed(dir, acct, trace, detail);
		if (reason != CM_REASON_ALLOWED)
			goto done;
	}
	cm_trace_add(trace, "mapping: user_certificate: mapped to %s (%s)", acct->dn, acct->name);
	*out = acct;
	acct = NULL;
	reason = CM_REASON_ALLOWED;
done:
	cm_account_free(acct);
	free(exact);
	cm_dir_result_free(&res);
	return reason;
}

enum cm_reason cm_mapping_map(const struct cm_config *cfg, struct cm_dir *dir,
			      const struct cm_cert *cert, const char *basic_user,
			      struct cm_account **out, enum cm_method *method,
			      struct cm_trace *trace, char **detail)
{
	*out = NULL;
	*method = CM_METHOD_NONE;
	*detail = NULL;
	if (cfg == NULL || cert == NULL) {
		*detail = strdup("no certificate to map");
		return CM_REASON_NOT_MAPPED;
	}
	for (size_t i = 0; i < cfg->mapping.n_methods; i++) {
		enum cm_method m = cfg->mapping.methods[i];
		const char *name = cm_method_name(m);
		enum cm_reason r;

		if (m != CM_METHOD_USER_CERTIFICATE) {
			cm_trace_add(trace, "mapping: method %s is not implemented yet; skipped",
				     name != NULL ? name : "?");
			continue;
		}
		free(*detail);
		*detail = NULL;
		r = map_user_certificate(cfg, dir, cert, basic_user, out, trace, detail);
		if (r == CM_REASON_ALLOWED) {
			*method = m;
			return r;
		}
		if (r != CM_REASON_NOT_MAPPED)
			return r; /* ambiguous or an outage decides; later methods do not */
	}
	if (*detail == NULL)
		*detail = strdup("no directory account holds this certificate");
	return CM_REASON_NOT_MAPPED;
}
