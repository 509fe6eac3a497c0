/*
 * certmapctl check — decide one certificate with the same engine certmapd
 * uses (DESIGN §5). Exit 0 allow, 1 deny, 2 usage or config error.
 * Keeps no state between runs.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "certmap/config.h"
#include "certmap/engine.h"
#include "certmap/x509.h"
#include "certmapctl.h"

#define DEFAULT_PATH "/Microsoft-Server-ActiveSync"

static void check_usage(FILE *f)
{
	fprintf(f,
		"usage: certmapctl check --config FILE --cert CERT.pem|.der [--chain CHAIN.pem]\n"
		"                        [--basic-user NAME] [--path PATH] [--at TIME] [--json] [--trace]\n"
		"\n"
		"Decides the certificate as certmapd would: chain and EKU, validity, revocation,\n"
		"the directory mapping and the access policy of the config. Revocation data\n"
		"(CRL files, CDP CRLs, OCSP answers) is read or fetched for this run only.\n"
		"\n"
		"  --config FILE      certmap JSON config (needs client_certificates, directory,\n"
		"                     mapping, authorization)\n"
		"  --cert FILE        client certificate, PEM or DER (with PEM, more certificates\n"
		"                     after the first are taken as its chain)\n"
		"  --chain FILE       intermediate certificates the client would send (PEM)\n"
		"  --basic-user NAME  user of the request's Authorization: Basic header\n"
		"                     (sam, DOMAIN\\sam or UPN)\n"
		"  --path PATH        request path, matched against config locations\n"
		"                     (default " DEFAULT_PATH ")\n"
		"  --at TIME          evaluate at TIME (ISO 8601 UTC, 2030-01-01T00:00:00Z)\n"
		"                     instead of now\n"
		"  --json             one JSON object on stdout\n"
		"  --trace            show every step and source consulted (each CRL file, CDP\n"
		"                     and OCSP URL with its answer)\n"
		"\n"
		"exit status: 0 allow, 1 deny, 2 usage or configuration error\n");
}

static void print_human(const struct cm_decision *d, const char *config, bool trace)
{
	const char *name = d->user && d->user->name ? d->user->name : NULL;
	const char *method = cm_method_name(d->method);

	printf("%s %d.%d %s - %s\n", d->reason == CM_REASON_ALLOWED ? "ALLOW" : "DENY ", d->status,
	       d->substatus, cm_reason_name(d->reason), cm_status_text(d->status, d->substatus));
	if (d->detail)
		printf("  detail:   %s\n", d->detail);
	if (d->has_cert) {
		printf("  cert:     %s\n", d->cert.subject ? d->cert.subject : "(unparseable)");
		if (d->cert.issuer)
			printf("  issuer:   %s\n", d->cert.issuer);
		if (d->cert.serial)
			printf("  serial:   %s   valid %s .. %s\n", d->cert.serial,
			       d->cert.not_before, d->cert.not_after);
		printf("  sha256:   %s\n", d->cert.sha256);
	}
	if (d->revocation_status != NULL)
		printf("  revocation: %s%s%s\n", d->revocation_status,
		       d->revocation_source ? " via " : "",
		       d->revocation_source ? d->revocation_source : "");
	if (d->user) {
		printf("  user:     %s  (%s)%s%s\n", name ? name : "?",
		       d->user->dn ? d->user->dn : "?", method ? "  via " : "",
		       method ? method : "");
		if (d->user->upn)
			printf("  upn:      %s\n", d->user->upn);
	}
	if (trace) {
		printf("  trace:\n");
		for (size_t i = 0; i < d->trace.n; i++)
			printf("    %s\n", d->trace.lines[i]);
		if (d->trace.dropped)
			printf("    (%zu more lines dropped)\n", d->trace.dropped);
	}
	(void)config;
}

static int read_chain(const char *cert_file, const char *chain_file, struct cm_der_list *all)
{
	struct cm_der_list chain = {0};
	struct cm_err err = {{0}};

	if (cm_der_list_read(cert_file, all, &err) != 0) {
		fprintf(stderr, "certmapctl check: --cert: %s\n", err.msg);
		return -1;
	}
	if (chain_file == NULL)
		return 0;
	if (cm_der_list_read(chain_file, &chain, &err) != 0) {
		fprintf(stderr, "certmapctl check: --chain: %s\n", err.msg);
		cm_der_list_free(all);
		return -1;
	}
	for (size_t i = 0; i < chain.n; i++) {
		unsigned char **d = realloc(all->der, (all->n + 1) * sizeof(*d));
		size_t *l = d ? realloc(all->len, (all->n + 1) * sizeof(*l)) : NULL;

		if (d)
			all->der = d;
		if (l == NULL) {
			fprintf(stderr, "certmapctl check: out of memory\n");
			cm_der_list_free(&chain);
			cm_der_list_free(all);
			return -1;
		}
		all->len = l;
		all->der[all->n] = chain.der[i];
		all->len[all->n++] = chain.len[i];
		chain.der[i] = NULL;
	}
	cm_der_list_free(&chain);
	return 0;
}

int ctl_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"cert", required_argument, NULL, 'C'},
		{"chain", required_argument, NULL, 'n'},
		{"basic-user", required_argument, NULL, 'u'},
		{"path", required_argument, NULL, 'p'},
		{"at", required_argument, NULL, 'a'},
		{"json", no_argument, NULL, 'j'},
		{"trace", no_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *config = NULL, *cert = NULL, *chain = NULL, *basic = NULL, *path = DEFAULT_PATH;
	bool json = false, trace = false;
	time_t now = time(NULL);
	struct cm_config *cfg = NULL;
	struct cm_config_errors errs = {0};
	struct cm_engine *engine = NULL;
	struct cm_der_list ders = {0};
	struct cm_decision d;
	struct cm_err err = {{0}};
	const struct cm_location *loc;
	int c, rc = CTL_EXIT_USAGE;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'C':
			cert = optarg;
			break;
		case 'n':
			chain = optarg;
			break;
		case 'u':
			basic = optarg;
			break;
		case 'p':
			path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 't':
			trace = true;
			break;
		case 'a':
			if (ctl_opt_at("certmapctl check", optarg, &now) != 0)
				return CTL_EXIT_USAGE;
			break;
		case 'h':
			check_usage(stdout);
			return 0;
		default:
			check_usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (ctl_no_operands("certmapctl check", optind, argc, argv) != 0)
		return CTL_EXIT_USAGE;
	if (config == NULL || cert == NULL) {
		fprintf(stderr, "certmapctl check: --config and --cert are required\n");
		check_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (path[0] != '/') {
		fprintf(stderr, "certmapctl check: --path must start with '/'\n");
		return CTL_EXIT_USAGE;
	}
	if (cm_config_load(config, CM_CONFIG_FOR_CHECK, &cfg, &errs) != 0) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.lines[i]);
		cm_config_errors_free(&errs);
		return CTL_EXIT_USAGE;
	}
	if (read_chain(cert, chain, &ders) != 0)
		goto out;
	if (cm_engine_new(cfg, &engine, &err) != 0) {
		fprintf(stderr, "%s\n", err.msg);
		goto out;
	}
	loc = cm_config_location(cfg, path);
	if (loc != NULL && loc->client_certificate == CM_CERT_IGNORE) {
		/* certmapd makes no decision there and sends no identity. */
		memset(&d, 0, sizeof(d));
		d.reason = CM_REASON_ALLOWED;
		d.status = 200;
		d.method = CM_METHOD_NONE;
		d.detail = cm_strdup_printf(
			"location %s ignores client certificates: no decision, no identity",
			loc->path);
	} else {
		struct cm_request req = {
			.chain_der = (const unsigned char *const *)ders.der,
			.chain_len = ders.len,
			.chain_n = ders.n,
			.basic_user = basic,
			.now = now,
		};

		cm_engine_decide(engine, &req, &d);
	}
	if (json) {
		json_t *o = cm_decision_to_json(&d);

		json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
		fputc('\n', stdout);
		json_decref(o);
	} else {
		print_human(&d, config, trace);
	}
	rc = d.reason == CM_REASON_ALLOWED ? CTL_EXIT_ALLOW : CTL_EXIT_DENY;
	cm_decision_free(&d);
out:
	cm_der_list_free(&ders);
	cm_engine_free(engine);
	cm_config_free(cfg);
	return rc;
}
