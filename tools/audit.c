/*
 * certmapctl audit — what is wrong with the certificates in the directory
 * (DESIGN §11): read-only. Reads the group's members and, directory-wide,
 * every account holding a certificate (paged), classifies every value
 * against the config's trust and CRLs, and lists the findings of
 * common/audit.c. Exit 1 when a finding at or above --fail-on (default
 * critical) exists, else 0; 2 usage or configuration error; a directory
 * failure is 1 as well (the audit could not be done).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "certmap/audit.h"
#include "certmap/inventory.h"
#include "certmap/util.h"
#include "certmapctl.h"

#define PROG "certmapctl audit"
#define SHOWN_MAX 2048 /* bytes of one untrusted field on a human line */

static void audit_usage(FILE *f)
{
	fprintf(f,
		"usage: certmapctl audit --config FILE [--group DN|NAME] [--json]\n"
		"                        [--fail-on critical|warning|info] [--chain FILE] [--at TIME]\n"
		"\n"
		"Lists what is wrong with the user certificates in the directory:\n"
		"  critical  shared_certificate          one certificate on several accounts\n"
		"  warning   expired, not_yet_valid, untrusted_issuer, revoked,\n"
		"            duplicate_value             a member's certificate\n"
		"  warning   member_without_usable_cert  no certificate certmapd would map to it\n"
		"  warning   holder_outside_group        a managed certificate outside the group\n"
		"\n"
		"  --config FILE   certmap JSON config\n"
		"  --group DN|NAME the group (default: the first authorization.required_groups)\n"
		"  --json          one JSON object on stdout\n"
		"  --fail-on LVL   exit 1 when a finding at or above LVL exists (default critical)\n"
		"  --chain FILE    intermediate CA certificates (PEM) for chain building, as a\n"
		"                  device would send them\n"
		"  --at TIME       judge validity at TIME (ISO 8601 UTC) instead of now\n"
		"\n"
		"exit status: 0 no finding at or above --fail-on, 1 such a finding (or the\n"
		"directory failed), 2 usage or configuration error\n");
}

static void print_human(const struct ctl_session *s, const struct cm_audit_report *rep,
			struct cm_dir *dir)
{
	char ops[160];

	for (size_t i = 0; i < rep->n; i++) {
		const struct cm_audit_finding *f = &rep->v[i];
		char *detail = cm_sanitize(f->detail ? f->detail : "", SHOWN_MAX);
		char *subject = f->subject ? cm_sanitize(f->subject, SHOWN_MAX) : NULL;

		printf("%-8s %s",
		       f->level == CM_AUDIT_CRITICAL  ? "CRITICAL"
		       : f->level == CM_AUDIT_WARNING ? "WARNING"
						      : "INFO",
		       cm_audit_kind_name(f->kind));
		if (f->sha256[0] != '\0')
			printf("  sha256 %s", f->sha256);
		printf("\n");
		for (size_t j = 0; j < f->n_dns; j++) {
			char *dn = cm_sanitize(f->dns[j], SHOWN_MAX);

			printf("    account  %s\n", dn ? dn : "");
			free(dn);
		}
		if (subject != NULL)
			printf("    subject  %s\n", subject);
		printf("    %s\n", detail ? detail : "");
		free(detail);
		free(subject);
	}
	ctl_ldap_stats_text(dir, ops, sizeof(ops));
	printf("audit of %s: %zu critical, %zu warning, %zu info; %zu members, %zu accounts with "
	       "certificates or in the group, %zu certificate values; %s\n",
	       s->group_dn, rep->counts[CM_AUDIT_CRITICAL], rep->counts[CM_AUDIT_WARNING],
	       rep->counts[CM_AUDIT_INFO], rep->members, rep->accounts, rep->values, ops);
}

static void print_json(const struct ctl_session *s, const struct cm_audit_report *rep,
		       struct cm_dir *dir)
{
	json_t *o = json_object(), *findings = json_array();

	for (size_t i = 0; i < rep->n; i++) {
		const struct cm_audit_finding *f = &rep->v[i];
		json_t *j = json_object(), *dns = json_array();

		for (size_t k = 0; k < f->n_dns; k++)
			json_array_append_new(dns, ctl_json_str(f->dns[k]));
		json_object_set_new(j, "level", json_string(cm_audit_level_name(f->level)));
		json_object_set_new(j, "kind", json_string(cm_audit_kind_name(f->kind)));
		json_object_set_new(j, "sha256",
				    f->sha256[0] != '\0' ? json_string(f->sha256) : json_null());
		json_object_set_new(j, "accounts", dns);
		json_object_set_new(j, "subject", ctl_json_str(f->subject));
		json_object_set_new(j, "detail", ctl_json_str(f->detail));
		json_array_append_new(findings, j);
	}
	json_object_set_new(o, "group", ctl_json_str(s->group_dn));
	json_object_set_new(o, "findings", findings);
	json_object_set_new(o, "counts",
			    json_pack("{s:I,s:I,s:I}", "critical",
				      (json_int_t)rep->counts[CM_AUDIT_CRITICAL], "warning",
				      (json_int_t)rep->counts[CM_AUDIT_WARNING], "info",
				      (json_int_t)rep->counts[CM_AUDIT_INFO]));
	json_object_set_new(o, "scanned",
			    json_pack("{s:I,s:I,s:I}", "members", (json_int_t)rep->members,
				      "accounts", (json_int_t)rep->accounts, "certificates",
				      (json_int_t)rep->values));
	json_object_set_new(o, "ldap", ctl_ldap_stats_json(dir));
	json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
	fputc('\n', stdout);
	json_decref(o);
}

int ctl_audit(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'}, {"group", required_argument, NULL, 'g'},
		{"json", no_argument, NULL, 'j'},         {"fail-on", required_argument, NULL, 'f'},
		{"chain", required_argument, NULL, 'k'},  {"at", required_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	const char *config = NULL, *group = NULL, *chain = NULL;
	enum cm_audit_level fail_on = CM_AUDIT_CRITICAL;
	struct ctl_session s;
	struct cm_inventory inv;
	struct cm_audit_report rep;
	struct cm_err err = {""};
	time_t now = time(NULL);
	bool json = false;
	int c, rc;

	memset(&inv, 0, sizeof(inv));
	memset(&rep, 0, sizeof(rep));
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'g':
			group = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'k':
			chain = optarg;
			break;
		case 'f':
			if (cm_audit_level_parse(optarg, &fail_on) != 0) {
				fprintf(stderr,
					"%s: --fail-on: expected critical, warning or info, "
					"got '%s'\n",
					PROG, optarg);
				return CTL_EXIT_USAGE;
			}
			break;
		case 'a':
			if (ctl_opt_at(PROG, optarg, &now) != 0)
				return CTL_EXIT_USAGE;
			break;
		case 'h':
			audit_usage(stdout);
			return 0;
		default:
			audit_usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (ctl_no_operands(PROG, optind, argc, argv) != 0)
		return CTL_EXIT_USAGE;
	if (config == NULL) {
		fprintf(stderr, "%s: --config is required\n", PROG);
		audit_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	rc = ctl_session_open(&s, PROG, config, group, chain, now);
	if (rc != 0)
		goto out;
	if (cm_inventory_load(s.cfg, s.dir, s.group_dn, CM_INVENTORY_ALL_HOLDERS, &inv, NULL,
			      &err) != CM_DIR_OK) {
		fprintf(stderr, "%s: %s\n", PROG, err.msg);
		rc = CTL_EXIT_DENY;
		goto out;
	}
	if (cm_inventory_classify(&inv, s.classifier) != 0 ||
	    cm_audit_run(&inv, s.cfg->mapping.on_ambiguous, &rep) != 0) {
		fprintf(stderr, "%s: out of memory\n", PROG);
		rc = CTL_EXIT_DENY;
		goto out;
	}
	if (json)
		print_json(&s, &rep, s.dir);
	else
		print_human(&s, &rep, s.dir);
	rc = 0;
	for (int lvl = (int)fail_on; lvl <= (int)CM_AUDIT_CRITICAL; lvl++)
		if (rep.counts[lvl] > 0)
			rc = CTL_EXIT_DENY;
out:
	cm_audit_report_free(&rep);
	cm_inventory_free(&inv);
	ctl_session_close(&s);
	return rc;
}
