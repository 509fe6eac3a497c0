/*
 * certmapctl publish — put the group's certificates on its members, and
 * only there (DESIGN §11). Reads every source and the directory first,
 * plans value-level adds and deletes (common/publish.c), then applies them
 * one value per LDAP modify with the config's bind account. A change the
 * directory refuses (rights, account gone) is reported and the run goes on;
 * the exit status says whether everything intended was done.
 * Exit 0 all done (warnings allowed), 1 any account or file failed (or the
 * directory failed), 2 usage or configuration error (nothing was written).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "certmap/inventory.h"
#include "certmap/publish.h"
#include "certmap/util.h"
#include "certmapctl.h"

#define PROG "certmapctl publish"
#define LOG_TEXT_MAX 1024 /* bytes of one untrusted field in a log line */

static void publish_usage(FILE *f)
{
	fprintf(f,
		"usage: certmapctl publish --config FILE --group DN|NAME\n"
		"                          (--cert FILE | --cert-dir DIR | --map CSV)\n"
		"                          [--prune] [--replace-expired] [--dry-run] [--json]\n"
		"                          [--log FILE] [--chain FILE] [--at TIME]\n"
		"\n"
		"Publishes user certificates to the members of a group (nested membership\n"
		"counted) with value-level LDAP modifies: a certificate is added only when the\n"
		"same DER is not already on the account; other values are never touched.\n"
		"\n"
		"  --config FILE     certmap JSON config; writes use directory.bind_dn, which\n"
		"                    needs write rights on userCertificate\n"
		"  --group DN|NAME   the group: a DN, or a cn / sAMAccountName under base_dn\n"
		"  --cert FILE       one certificate for every member (maps ambiguously: certmapd\n"
		"                    then needs mapping.on_ambiguous \"basic_user\")\n"
		"  --cert-dir DIR    per-user certificates (*.pem *.cer *.crt *.der): a file\n"
		"                    belongs to the member named by its base name, or whose\n"
		"                    userPrincipalName (ad) / mail equals its UPN or e-mail SAN\n"
		"  --map CSV         lines \"account,certfile\" (paths relative to the CSV)\n"
		"  --prune           remove managed certificates (issued under\n"
		"                    client_certificates.trusted_issuers) from accounts outside\n"
		"                    the group; may run without a source\n"
		"  --replace-expired remove a member's expired managed certificates once its new\n"
		"                    one is in place\n"
		"  --dry-run         change nothing; list the changes that would be made\n"
		"  --json            one JSON object on stdout\n"
		"  --log FILE        append a timestamped line per change (what, where, why)\n"
		"  --chain FILE      intermediate CA certificates (PEM) for chain building\n"
		"  --at TIME         judge expiry at TIME (ISO 8601 UTC) instead of now\n"
		"\n"
		"exit status: 0 all intended changes done (warnings allowed), 1 an account or\n"
		"file failed (the others were still done), 2 usage or configuration error\n");
}

/* Warnings and errors not tied to one change. */
struct notice {
	bool error;
	char *file;
	char *dn;
	char *message;
};

struct notices {
	struct notice *v;
	size_t n, errors, warnings;
};

static void notice_add(struct notices *ns, bool error, const char *file, const char *dn,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void notice_add(struct notices *ns, bool error, const char *file, const char *dn,
		       const char *fmt, ...)
{
	struct notice *v = realloc(ns->v, (ns->n + 1) * sizeof(*v));
	va_list ap;
	char *msg = NULL;

	if (v == NULL)
		return;
	ns->v = v;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	v[ns->n].error = error;
	v[ns->n].file = file != NULL ? strdup(file) : NULL;
	v[ns->n].dn = dn != NULL ? strdup(dn) : NULL;
	v[ns->n].message = msg;
	ns->n++;
	if (error)
		ns->errors++;
	else
		ns->warnings++;
}

static void notices_free(struct notices *ns)
{
	for (size_t i = 0; i < ns->n; i++) {
		free(ns->v[i].file);
		free(ns->v[i].dn);
		free(ns->v[i].message);
	}
	free(ns->v);
}

/* The --log file: one line per event, UTC timestamp first. */
struct runlog {
	FILE *f;
	long pid;
};

static void log_line(struct runlog *lg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_line(struct runlog *lg, const char *fmt, ...)
{
	char ts[21];
	va_list ap;

	if (lg->f == NULL)
		return;
	ctl_time_iso(time(NULL), ts);
	fprintf(lg->f, "%s certmapctl-publish[%ld]: ", ts, lg->pid);
	va_start(ap, fmt);
	vfprintf(lg->f, fmt, ap);
	va_end(ap);
	fputc('\n', lg->f);
	fflush(lg->f);
}

/* Sanitized copy for a log line (DNs, subjects, file names are untrusted). */
static char *clean(const char *s)
{
	return cm_sanitize(s != NULL ? s : "-", LOG_TEXT_MAX);
}

struct run {
	struct ctl_session s;
	struct cm_inventory inv;
	struct cm_pub_source *src;
	size_t n_src;
	struct cm_pub_plan plan;
	struct notices notes;
	struct runlog log;
	bool dry_run, json;
	size_t added, removed, failed, skipped;
};

static int add_source(struct run *r, const char *file, const char *account, size_t line)
{
	struct cm_pub_source *v = realloc(r->src, (r->n_src + 1) * sizeof(*v));

	if (v == NULL)
		return -1;
	r->src = v;
	if (cm_pub_source_load(file, account, line, r->s.classifier, &r->src[r->n_src]) != 0) {
		cm_pub_source_clear(&r->src[r->n_src]);
		return -1;
	}
	r->n_src++;
	return 0;
}

/* Reads the sources; an exit code on a usage error, else 0. */
static int load_sources(struct run *r, const char *cert, const char *cert_dir, const char *map)
{
	struct cm_err err = {""};

	if (cert != NULL) {
		if (add_source(r, cert, NULL, 0) != 0)
			goto oom;
		if (r->src[0].skip != NULL) {
			fprintf(stderr, "%s: --cert %s: %s\n", PROG, cert, r->src[0].skip);
			return CTL_EXIT_USAGE;
		}
	} else if (cert_dir != NULL) {
		char **files = NULL;
		size_t n = 0;

		if (cm_pub_dir_list(cert_dir, &files, &n, &err) != 0) {
			fprintf(stderr, "%s: --cert-dir: %s\n", PROG, err.msg);
			return CTL_EXIT_USAGE;
		}
		for (size_t i = 0; i < n; i++) {
			if (add_source(r, files[i], NULL, 0) != 0) {
				for (size_t j = i; j < n; j++)
					free(files[j]);
				free(files);
				goto oom;
			}
			free(files[i]);
		}
		free(files);
		if (n == 0)
			notice_add(
				&r->notes, false, cert_dir, NULL,
				"no certificate files (*.pem *.cer *.crt *.der) in the directory");
	} else if (map != NULL) {
		struct cm_pub_map m;

		if (cm_pub_map_read(map, &m, &err) != 0) {
			fprintf(stderr, "%s: --map: %s\n", PROG, err.msg);
			return CTL_EXIT_USAGE;
		}
		for (size_t i = 0; i < m.n; i++)
			if (add_source(r, m.rows[i].file, m.rows[i].account, m.rows[i].line) != 0) {
				cm_pub_map_free(&m);
				goto oom;
			}
		if (m.n == 0)
			notice_add(&r->notes, false, map, NULL, "the CSV has no rows");
		cm_pub_map_free(&m);
	}
	return 0;
oom:
	fprintf(stderr, "%s: out of memory\n", PROG);
	return CTL_EXIT_USAGE;
}

/* One change in the log, as it is made (or planned, in a dry run). */
static void log_change(struct run *r, const struct cm_pub_change *c)
{
	const char *attr = cm_inventory_cert_attr(r->s.cfg);
	char *dn = clean(r->inv.accounts[c->account].dn), *subj = clean(c->subject);
	char *why = clean(c->reason), *error = c->error ? clean(c->error) : NULL;

	log_line(&r->log, "%s%s %s sha256=%s dn=\"%s\" subject=\"%s\": %s%s%s; why: %s",
		 r->dry_run ? "would " : "", c->action == CM_PUB_ADD ? "add" : "delete", attr,
		 c->sha256, dn ? dn : "", subj ? subj : "",
		 r->dry_run ? "dry run, not written" : cm_pub_result_name(c->result),
		 error ? ": " : "", error ? error : "", why ? why : "");
	free(dn);
	free(subj);
	free(why);
	free(error);
}

static void log_notices(struct run *r)
{
	for (size_t i = 0; i < r->notes.n; i++) {
		const struct notice *n = &r->notes.v[i];
		char *file = n->file ? clean(n->file) : NULL, *msg = clean(n->message);

		log_line(&r->log, "%s%s%s%s", n->error ? "error: " : "warning: ", file ? file : "",
			 file ? ": " : "", msg ? msg : "");
		free(file);
		free(msg);
	}
}

/* Applies the plan in order; an outage stops the run (the rest is skipped). */
static void apply(struct run *r)
{
	const char *attr = cm_inventory_cert_attr(r->s.cfg);
	size_t add_failed_account = CM_PUB_NONE;
	bool outage = false;

	for (size_t i = 0; i < r->plan.n; i++) {
		struct cm_pub_change *c = &r->plan.v[i];
		const struct cm_inv_account *a = &r->inv.accounts[c->account];
		struct cm_dir_value val = {(unsigned char *)(uintptr_t)c->der, c->len};
		struct cm_err err = {""};
		enum cm_dir_status st;
		int code = 0;

		if (outage) {
			c->result = CM_PUB_SKIPPED;
			c->error = strdup("not attempted: the directory became unavailable");
			log_change(r, c);
			continue;
		}
		if (c->why == CM_PUB_WHY_REPLACED && add_failed_account == c->account) {
			c->result = CM_PUB_SKIPPED;
			c->error = strdup("kept: its replacement could not be added");
			log_change(r, c);
			continue;
		}
		st = cm_dir_modify_values(r->s.dir, a->dn, attr,
					  c->action == CM_PUB_ADD ? CM_DIR_MOD_ADD
								  : CM_DIR_MOD_DELETE,
					  &val, 1, &code, NULL, &err);
		switch (st) {
		case CM_DIR_OK:
			c->result = code == 0 ? CM_PUB_DONE : CM_PUB_ALREADY;
			break;
		case CM_DIR_NO_SUCH_OBJECT:
			c->result = CM_PUB_FAILED;
			c->error = cm_strdup_printf("the account no longer exists (%s)", err.msg);
			break;
		case CM_DIR_REFUSED:
			c->result = CM_PUB_FAILED;
			c->error = strdup(err.msg);
			break;
		default:
			c->result = CM_PUB_FAILED;
			c->error = strdup(err.msg);
			outage = true;
			break;
		}
		if (c->result == CM_PUB_FAILED && c->action == CM_PUB_ADD)
			add_failed_account = c->account;
		log_change(r, c);
	}
}

static void count_results(struct run *r)
{
	for (size_t i = 0; i < r->plan.n; i++) {
		const struct cm_pub_change *c = &r->plan.v[i];

		switch (c->result) {
		case CM_PUB_ALREADY: /* someone was faster: in place all the same */
			r->plan.present++;
			break;
		case CM_PUB_DONE:
		case CM_PUB_PENDING: /* dry run: counted as planned */
			if (c->action == CM_PUB_ADD)
				r->added++;
			else
				r->removed++;
			break;
		case CM_PUB_FAILED:
			r->failed++;
			break;
		default:
			r->skipped++;
			break;
		}
	}
}

static void print_human(struct run *r)
{
	char ops[160];

	printf("%s %s: %zu member%s (nested), %zu certificate source%s\n",
	       r->dry_run ? "dry run for" : "publish to", r->s.group_dn, r->inv.n_members,
	       r->inv.n_members == 1 ? "" : "s", r->n_src, r->n_src == 1 ? "" : "s");
	for (size_t i = 0; i < r->plan.n; i++) {
		const struct cm_pub_change *c = &r->plan.v[i];
		const struct cm_inv_account *a = &r->inv.accounts[c->account];
		const char *verb = c->action == CM_PUB_ADD ? "add   " : "delete";
		char *dn = clean(a->dn), *why = clean(c->reason);

		if (r->dry_run)
			printf("  would %s %s  sha256 %s\n          why: %s\n", verb, dn, c->sha256,
			       why);
		else if (c->result == CM_PUB_FAILED || c->result == CM_PUB_SKIPPED)
			printf("  %-7s %s %s  sha256 %s: %s\n",
			       c->result == CM_PUB_FAILED ? "FAILED" : "SKIPPED", verb, dn,
			       c->sha256, c->error ? c->error : "");
		else
			printf("  %s %s  sha256 %s%s\n          why: %s\n", verb, dn, c->sha256,
			       c->result == CM_PUB_ALREADY ? " (already so)" : "", why);
		free(dn);
		free(why);
	}
	for (size_t i = 0; i < r->notes.n; i++) {
		const struct notice *n = &r->notes.v[i];
		char *file = n->file ? clean(n->file) : NULL;

		printf("%s: %s%s%s\n", n->error ? "error" : "warning", file ? file : "",
		       file ? ": " : "", n->message ? n->message : "");
		free(file);
	}
	ctl_ldap_stats_text(r->s.dir, ops, sizeof(ops));
	if (r->dry_run)
		printf("dry run: %zu to add, %zu to remove, %zu already in place; %zu warning%s, "
		       "%zu error%s; nothing written; %s\n",
		       r->added, r->removed, r->plan.present, r->notes.warnings,
		       r->notes.warnings == 1 ? "" : "s", r->notes.errors,
		       r->notes.errors == 1 ? "" : "s", ops);
	else
		printf("done: %zu added, %zu removed, %zu already in place, %zu failed, %zu "
		       "skipped; %zu warning%s, %zu error%s; %s\n",
		       r->added, r->removed, r->plan.present, r->failed, r->skipped,
		       r->notes.warnings, r->notes.warnings == 1 ? "" : "s", r->notes.errors,
		       r->notes.errors == 1 ? "" : "s", ops);
}

static void print_json(struct run *r)
{
	json_t *o = json_object(), *changes = json_array(), *warnings = json_array(),
	       *errors = json_array();
	const char *attr = cm_inventory_cert_attr(r->s.cfg);

	for (size_t i = 0; i < r->plan.n; i++) {
		const struct cm_pub_change *c = &r->plan.v[i];
		const struct cm_inv_account *a = &r->inv.accounts[c->account];
		json_t *j = json_object();

		json_object_set_new(j, "action",
				    json_string(c->action == CM_PUB_ADD ? "add" : "delete"));
		json_object_set_new(j, "dn", ctl_json_str(a->dn));
		json_object_set_new(j, "account", ctl_json_str(a->name));
		json_object_set_new(j, "attribute", json_string(attr));
		json_object_set_new(j, "sha256", json_string(c->sha256));
		json_object_set_new(j, "subject", ctl_json_str(c->subject));
		json_object_set_new(j, "why", json_string(cm_pub_why_name(c->why)));
		json_object_set_new(j, "reason", ctl_json_str(c->reason));
		json_object_set_new(j, "file",
				    c->source != CM_PUB_NONE ? ctl_json_str(r->src[c->source].file)
							     : json_null());
		json_object_set_new(
			j, "result",
			json_string(r->dry_run ? "planned" : cm_pub_result_name(c->result)));
		json_object_set_new(j, "error", ctl_json_str(c->error));
		json_array_append_new(changes, j);
	}
	for (size_t i = 0; i < r->notes.n; i++) {
		const struct notice *n = &r->notes.v[i];

		json_array_append_new(n->error ? errors : warnings,
				      json_pack("{s:o,s:o,s:o}", "file", ctl_json_str(n->file),
						"dn", ctl_json_str(n->dn), "message",
						ctl_json_str(n->message)));
	}
	json_object_set_new(o, "group", ctl_json_str(r->s.group_dn));
	json_object_set_new(o, "dry_run", json_boolean(r->dry_run));
	json_object_set_new(o, "members", json_integer((json_int_t)r->inv.n_members));
	json_object_set_new(o, "sources", json_integer((json_int_t)r->n_src));
	json_object_set_new(o, "changes", changes);
	json_object_set_new(o, "warnings", warnings);
	json_object_set_new(o, "errors", errors);
	json_object_set_new(o, "summary",
			    json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "added",
				      (json_int_t)r->added, "removed", (json_int_t)r->removed,
				      "already_present", (json_int_t)r->plan.present, "failed",
				      (json_int_t)r->failed, "skipped", (json_int_t)r->skipped,
				      "warnings", (json_int_t)r->notes.warnings, "errors",
				      (json_int_t)r->notes.errors));
	json_object_set_new(o, "ldap", ctl_ldap_stats_json(r->s.dir));
	json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
	fputc('\n', stdout);
	json_decref(o);
}

/* Turns skipped sources and advisories into notices. */
static void source_notices(struct run *r, bool one_for_all)
{
	const struct cm_config *cfg = r->s.cfg;

	for (size_t i = 0; i < r->n_src; i++) {
		const struct cm_pub_source *s = &r->src[i];

		if (s->skip != NULL)
			notice_add(&r->notes, s->error, s->file, NULL, "%s", s->skip);
		else if (s->note != NULL)
			notice_add(&r->notes, false, s->file, NULL, "%s", s->note);
	}
	if (one_for_all && r->inv.n_members > 1)
		notice_add(&r->notes, false, r->src[0].file, NULL,
			   "one certificate for %zu members maps ambiguously (anyone holding its "
			   "key can sign in as any of them); certmapd needs mapping.on_ambiguous "
			   "\"basic_user\" and a Basic-auth user per request (this config: \"%s\")",
			   r->inv.n_members,
			   cfg->mapping.on_ambiguous == CM_AMBIGUOUS_BASIC_USER ? "basic_user"
										: "deny");
}

int ctl_publish(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"group", required_argument, NULL, 'g'},
		{"cert", required_argument, NULL, 'C'},
		{"cert-dir", required_argument, NULL, 'd'},
		{"map", required_argument, NULL, 'm'},
		{"prune", no_argument, NULL, 'p'},
		{"replace-expired", no_argument, NULL, 'r'},
		{"dry-run", no_argument, NULL, 'n'},
		{"json", no_argument, NULL, 'j'},
		{"log", required_argument, NULL, 'l'},
		{"chain", required_argument, NULL, 'k'},
		{"at", required_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *config = NULL, *group = NULL, *cert = NULL, *cert_dir = NULL, *map = NULL;
	const char *log_file = NULL, *chain = NULL;
	struct cm_pub_options popt = {false, false};
	struct run r;
	struct cm_err err = {""};
	enum cm_pub_mode mode = CM_PUB_MODE_CERT;
	time_t now = time(NULL);
	int c, n_sources, rc = CTL_EXIT_USAGE;

	memset(&r, 0, sizeof(r));
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'g':
			group = optarg;
			break;
		case 'C':
			cert = optarg;
			break;
		case 'd':
			cert_dir = optarg;
			break;
		case 'm':
			map = optarg;
			break;
		case 'p':
			popt.prune = true;
			break;
		case 'r':
			popt.replace_expired = true;
			break;
		case 'n':
			r.dry_run = true;
			break;
		case 'j':
			r.json = true;
			break;
		case 'l':
			log_file = optarg;
			break;
		case 'k':
			chain = optarg;
			break;
		case 'a':
			if (ctl_opt_at(PROG, optarg, &now) != 0)
				return CTL_EXIT_USAGE;
			break;
		case 'h':
			publish_usage(stdout);
			return 0;
		default:
			publish_usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (ctl_no_operands(PROG, optind, argc, argv) != 0)
		return CTL_EXIT_USAGE;
	n_sources = (cert != NULL) + (cert_dir != NULL) + (map != NULL);
	if (config == NULL || group == NULL) {
		fprintf(stderr, "%s: --config and --group are required\n", PROG);
		publish_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (n_sources > 1) {
		fprintf(stderr, "%s: give one of --cert, --cert-dir, --map\n", PROG);
		return CTL_EXIT_USAGE;
	}
	if (n_sources == 0 && !popt.prune) {
		fprintf(stderr, "%s: nothing to do: give --cert, --cert-dir or --map, or --prune\n",
			PROG);
		return CTL_EXIT_USAGE;
	}
	if (n_sources == 0 && popt.replace_expired) {
		fprintf(stderr,
			"%s: --replace-expired needs a source (--cert, --cert-dir, --map)\n", PROG);
		return CTL_EXIT_USAGE;
	}
	mode = cert_dir != NULL ? CM_PUB_MODE_DIR
	       : map != NULL    ? CM_PUB_MODE_MAP
				: CM_PUB_MODE_CERT;
	if (log_file != NULL) {
		r.log.f = fopen(log_file, "ae");
		if (r.log.f == NULL) {
			fprintf(stderr, "%s: --log %s: %s\n", PROG, log_file, strerror(errno));
			return CTL_EXIT_USAGE;
		}
		r.log.pid = (long)getpid();
	}

	rc = ctl_session_open(&r.s, PROG, config, group, chain, now);
	if (rc != 0)
		goto out;
	rc = load_sources(&r, cert, cert_dir, map);
	if (rc != 0)
		goto out;
	log_line(&r.log, "start: group \"%s\", %zu source%s%s%s%s", r.s.group_dn, r.n_src,
		 r.n_src == 1 ? "" : "s", popt.prune ? ", --prune" : "",
		 popt.replace_expired ? ", --replace-expired" : "", r.dry_run ? ", --dry-run" : "");
	if (cm_inventory_load(r.s.cfg, r.s.dir, r.s.group_dn,
			      popt.prune ? CM_INVENTORY_ALL_HOLDERS : CM_INVENTORY_MEMBERS, &r.inv,
			      NULL, &err) != CM_DIR_OK) {
		fprintf(stderr, "%s: %s\n", PROG, err.msg);
		log_line(&r.log, "failed: %s", err.msg);
		rc = CTL_EXIT_DENY;
		goto out;
	}
	if (cm_inventory_classify(&r.inv, r.s.classifier) != 0 ||
	    cm_pub_match(&r.inv, r.s.cfg->directory.dialect == CM_DIALECT_AD, mode, r.src,
			 r.n_src) != 0 ||
	    cm_pub_plan_build(&r.inv, r.src, r.n_src, &popt, &r.plan) != 0) {
		fprintf(stderr, "%s: out of memory\n", PROG);
		rc = CTL_EXIT_DENY;
		goto out;
	}
	source_notices(&r, mode == CM_PUB_MODE_CERT && n_sources == 1);
	if (popt.prune && r.inv.n_members == 0)
		notice_add(&r.notes, false, NULL, r.s.group_dn,
			   "the group has no members: --prune removes every managed certificate "
			   "in the directory");
	log_notices(&r);
	if (!r.dry_run)
		apply(&r);
	else
		for (size_t i = 0; i < r.plan.n; i++)
			log_change(&r, &r.plan.v[i]);
	count_results(&r);
	if (r.json)
		print_json(&r);
	else
		print_human(&r);
	{
		char ops[160];

		ctl_ldap_stats_text(r.s.dir, ops, sizeof(ops));
		log_line(&r.log,
			 "end: %zu %s, %zu %s, %zu already in place, %zu failed, %zu "
			 "skipped, %zu errors; %s",
			 r.added, r.dry_run ? "to add" : "added", r.removed,
			 r.dry_run ? "to remove" : "removed", r.plan.present, r.failed, r.skipped,
			 r.notes.errors, ops);
	}
	rc = r.failed > 0 || r.skipped > 0 || r.notes.errors > 0 ? CTL_EXIT_DENY : 0;
out:
	for (size_t i = 0; i < r.n_src; i++)
		cm_pub_source_clear(&r.src[i]);
	free(r.src);
	cm_pub_plan_free(&r.plan);
	cm_inventory_free(&r.inv);
	notices_free(&r.notes);
	ctl_session_close(&r.s);
	if (r.log.f != NULL)
		fclose(r.log.f);
	return rc;
}
