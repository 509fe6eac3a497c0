/*
 * engine — one request → one decision (include/certmap/engine.h).
 * The order is DESIGN §3's: x509 (trust → validity → EKU/KU) → revocation →
 * directory lookup → exactly-one → account state → groups → Basic binding;
 * the first failure decides. Owns the trust store, the CRL set and the
 * directory handle built from one immutable config.
 */
#include "certmap/engine.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "certmap/directory.h"
#include "certmap/mapping.h"
#include "certmap/policy.h"
#include "certmap/revocation.h"
#include "certmap/util.h"

struct cm_engine {
	const struct cm_config *cfg;
	struct cm_trust *trust;
	struct cm_revstore *rev;
	bool own_rev;
	struct cm_dir *dir;
};

int cm_engine_new(const struct cm_config *cfg, struct cm_engine **out, struct cm_err *err)
{
	return cm_engine_new_shared(cfg, NULL, out, err);
}

int cm_engine_new_shared(const struct cm_config *cfg, struct cm_revstore *rev,
			 struct cm_engine **out, struct cm_err *err)
{
	struct cm_engine *e = calloc(1, sizeof(*e));
	struct cm_err sub = {{0}};

	*out = NULL;
	if (e == NULL) {
		cm_err_set(err, "out of memory");
		return -1;
	}
	e->cfg = cfg;
	if (cm_trust_load(cfg->client_certificates.trusted_issuers.v,
			  cfg->client_certificates.trusted_issuers.n, &e->trust, &sub) != 0) {
		cm_err_set(err, "%s: $.client_certificates.trusted_issuers: %s", cfg->file,
			   sub.msg);
		goto fail;
	}
	if (rev != NULL) {
		e->rev = rev;
	} else if (cm_revstore_new(cfg, &e->rev, &sub) == 0) {
		e->own_rev = true;
	} else {
		cm_err_set(err, "%s: $.client_certificates.revocation.crl_files: %s", cfg->file,
			   sub.msg);
		goto fail;
	}
	if (cm_dir_open(cfg, &e->dir, &sub) != 0) {
		cm_err_set(err, "%s: $.directory: %s", cfg->file, sub.msg);
		goto fail;
	}
	*out = e;
	return 0;
fail:
	cm_engine_free(e);
	return -1;
}

void cm_engine_free(struct cm_engine *engine)
{
	if (engine == NULL)
		return;
	cm_trust_free(engine->trust);
	if (engine->own_rev)
		cm_revstore_free(engine->rev);
	cm_dir_free(engine->dir);
	free(engine);
}

static void finish(struct cm_decision *d, enum cm_reason reason)
{
	d->reason = reason;
	d->status = cm_reason_status(reason);
	d->substatus = cm_reason_substatus(reason);
}

static void copy_summary(struct cm_decision *d, const struct cm_cert_summary *s)
{
	d->has_cert = true;
	memcpy(d->cert.sha256, s->sha256, sizeof(d->cert.sha256));
	d->cert.subject = s->subject ? strdup(s->subject) : NULL;
	d->cert.issuer = s->issuer ? strdup(s->issuer) : NULL;
	d->cert.serial = s->serial ? strdup(s->serial) : NULL;
	memcpy(d->cert.not_before, s->not_before, sizeof(d->cert.not_before));
	memcpy(d->cert.not_after, s->not_after, sizeof(d->cert.not_after));
}

static struct cm_user *user_from_account(const struct cm_account *a)
{
	struct cm_user *u = calloc(1, sizeof(*u));

	if (u == NULL)
		return NULL;
	u->dn = a->dn ? strdup(a->dn) : NULL;
	u->name = a->name ? strdup(a->name) : NULL;
	u->sam = a->sam ? strdup(a->sam) : NULL;
	u->upn = a->upn ? strdup(a->upn) : NULL;
	return u;
}

void cm_engine_decide(struct cm_engine *engine, const struct cm_request *req, struct cm_decision *d)
{
	const struct cm_config *cfg = engine->cfg;
	struct cm_cert *cert = NULL;
	struct cm_account *acct = NULL;
	struct cm_err err = {{0}};
	enum cm_method method = CM_METHOD_NONE;
	enum cm_reason r;

	memset(d, 0, sizeof(*d));
	d->method = CM_METHOD_NONE;
	if (req->chain_n == 0) {
		cm_trace_add(&d->trace, "x509: no client certificate");
		finish(d, CM_REASON_NO_CERTIFICATE);
		return;
	}
	if (cm_cert_parse(req->chain_der, req->chain_len, req->chain_n, &cert, &err) != 0) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int md_len = 0;

		/* Still fingerprint the bytes, so the audit log can name them. */
		if (req->chain_len[0] > 0 && EVP_Digest(req->chain_der[0], req->chain_len[0], md,
							&md_len, EVP_sha256(), NULL) == 1) {
			d->has_cert = true;
			cm_hex_lower(md, md_len, d->cert.sha256);
		}
		cm_trace_add(&d->trace, "x509: malformed: %s", err.msg);
		d->detail = cm_strdup_printf("malformed certificate: %s", err.msg);
		finish(d, CM_REASON_UNTRUSTED);
		return;
	}
	copy_summary(d, cm_cert_summary(cert));

	r = cm_cert_verify(cert, engine->trust, req->now,
			   cfg->client_certificates.require_client_auth_eku, &d->trace, &d->detail);
	d->rev_epoch = cm_revstore_epoch(engine->rev);
	if (r == CM_REASON_ALLOWED) {
		struct cm_rev_result rr;

		r = cm_revstore_check(engine->rev, engine->dir, engine->trust, cert,
				      cfg->client_certificates.revocation.mode, req->now, &d->trace,
				      &d->detail, &rr);
		d->revocation_status = rr.status;
		d->revocation_source = rr.source[0] != '\0' ? strdup(rr.source) : NULL;
	}
	if (r == CM_REASON_ALLOWED) {
		(void)cm_dir_take_elapsed_ms(engine->dir);
		r = cm_mapping_map(cfg, engine->dir, cert, req->basic_user, &acct, &method,
				   &d->trace, &d->detail);
		if (r == CM_REASON_ALLOWED) {
			d->method = method;
			d->user = user_from_account(acct);
			r = cm_policy_check(cfg, engine->dir, acct, req->basic_user, req->now,
					    &d->trace, &d->detail);
		}
		d->directory_ms = cm_dir_take_elapsed_ms(engine->dir);
	}
	finish(d, r);
	cm_account_free(acct);
	cm_cert_free(cert);
}

void cm_decision_free(struct cm_decision *d)
{
	if (d == NULL)
		return;
	free(d->detail);
	free(d->revocation_source);
	if (d->user != NULL) {
		free(d->user->dn);
		free(d->user->name);
		free(d->user->sam);
		free(d->user->upn);
		free(d->user);
	}
	free(d->cert.subject);
	free(d->cert.issuer);
	free(d->cert.serial);
	cm_trace_free(&d->trace);
	memset(d, 0, sizeof(*d));
}

static json_t *str_or_null(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

json_t *cm_decision_to_json(const struct cm_decision *d)
{
	json_t *o = json_object(), *trace = json_array();
	const char *method = cm_method_name(d->method);

	json_object_set_new(o, "decision",
			    json_string(d->reason == CM_REASON_ALLOWED ? "allow" : "deny"));
	json_object_set_new(o, "status", json_integer(d->status));
	json_object_set_new(o, "substatus", json_integer(d->substatus));
	json_object_set_new(o, "reason", json_string(cm_reason_name(d->reason)));
	json_object_set_new(o, "detail", str_or_null(d->detail));
	json_object_set_new(o, "method", str_or_null(method));
	if (d->user != NULL) {
		json_t *u = json_object();

		json_object_set_new(u, "dn", str_or_null(d->user->dn));
		json_object_set_new(u, "name", str_or_null(d->user->name));
		json_object_set_new(u, "sAMAccountName", str_or_null(d->user->sam));
		json_object_set_new(u, "userPrincipalName", str_or_null(d->user->upn));
		json_object_set_new(o, "user", u);
	} else {
		json_object_set_new(o, "user", json_null());
	}
	if (d->has_cert) {
		json_t *c = json_object();

		json_object_set_new(c, "sha256", json_string(d->cert.sha256));
		json_object_set_new(c, "subject", str_or_null(d->cert.subject));
		json_object_set_new(c, "issuer", str_or_null(d->cert.issuer));
		json_object_set_new(c, "serial", str_or_null(d->cert.serial));
		json_object_set_new(c, "not_before",
				    d->cert.not_before[0] ? json_string(d->cert.not_before)
							  : json_null());
		json_object_set_new(c, "not_after",
				    d->cert.not_after[0] ? json_string(d->cert.not_after)
							 : json_null());
		json_object_set_new(o, "certificate", c);
	} else {
		json_object_set_new(o, "certificate", json_null());
	}
	for (size_t i = 0; i < d->trace.n; i++)
		json_array_append_new(trace, json_string(d->trace.lines[i]));
	if (d->trace.dropped > 0)
		json_array_append_new(
			trace, json_sprintf("(%zu more trace lines dropped)", d->trace.dropped));
	json_object_set_new(o, "trace", trace);
	json_object_set_new(o, "directory_ms", json_real(d->directory_ms));
	if (d->revocation_status != NULL) {
		json_t *rv = json_object();

		json_object_set_new(rv, "status", json_string(d->revocation_status));
		json_object_set_new(rv, "source", str_or_null(d->revocation_source));
		json_object_set_new(o, "revocation", rv);
	} else {
		json_object_set_new(o, "revocation", json_null());
	}
	return o;
}
