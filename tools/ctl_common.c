/*
 * certmapctl — what publish and audit share: one run's config, directory
 * handle, classifier and group; time and JSON helpers.
 */
#include "certmapctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certmap/groups.h"
#include "certmap/util.h"

#define JSON_TEXT_MAX 8192 /* bytes of one untrusted string in JSON output */

void ctl_time_iso(time_t t, char out[21])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		out[0] = '\0';
}

int ctl_parse_time(const char *s, time_t *out)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	*out = timegm(&tm);
	return 0;
}

int ctl_opt_at(const char *prog, const char *arg, time_t *out)
{
	if (ctl_parse_time(arg, out) == 0)
		return 0;
	fprintf(stderr, "%s: --at: expected ISO 8601 UTC like 2030-01-01T00:00:00Z, got '%s'\n",
		prog, arg);
	return -1;
}

int ctl_no_operands(const char *prog, int optind_, int argc, char **argv)
{
	if (optind_ >= argc)
		return 0;
	fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind_]);
	return -1;
}

json_t *ctl_json_str(const char *s)
{
	char *clean;
	json_t *j;

	if (s == NULL)
		return json_null();
	clean = cm_sanitize(s, JSON_TEXT_MAX);
	j = clean != NULL ? json_string(clean) : NULL;
	free(clean);
	return j != NULL ? j : json_null();
}

json_t *ctl_ldap_stats_json(struct cm_dir *dir)
{
	struct cm_dir_stats st;

	cm_dir_get_stats(dir, &st);
	return json_pack("{s:I,s:I,s:I,s:I}", "binds", (json_int_t)st.binds, "searches",
			 (json_int_t)st.searches, "modifies", (json_int_t)st.modifies, "operations",
			 (json_int_t)(st.binds + st.searches + st.modifies));
}

void ctl_ldap_stats_text(struct cm_dir *dir, char *buf, size_t size)
{
	struct cm_dir_stats st;

	cm_dir_get_stats(dir, &st);
	snprintf(buf, size, "%lu LDAP operations (%lu bind%s, %lu search%s, %lu modif%s)",
		 st.binds + st.searches + st.modifies, st.binds, st.binds == 1 ? "" : "s",
		 st.searches, st.searches == 1 ? "" : "es", st.modifies,
		 st.modifies == 1 ? "y" : "ies");
}

int ctl_session_open(struct ctl_session *s, const char *prog, const char *config, const char *group,
		     const char *intermediates, time_t now)
{
	struct cm_config_errors errs = {NULL, 0};
	struct cm_err err = {""};
	enum cm_groups_status gs;

	memset(s, 0, sizeof(*s));
	s->prog = prog;
	s->now = now;
	if (cm_config_load(config, CM_CONFIG_FOR_CHECK, &s->cfg, &errs) != 0) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.lines[i]);
		cm_config_errors_free(&errs);
		return CTL_EXIT_USAGE;
	}
	if (group == NULL) {
		if (s->cfg->authorization.required_groups.n == 0) {
			fprintf(stderr,
				"%s: no --group, and %s has no "
				"authorization.required_groups\n",
				prog, config);
			return CTL_EXIT_USAGE;
		}
		group = s->cfg->authorization.required_groups.v[0];
	}
	if (cm_classifier_new(s->cfg, intermediates, now, &s->classifier, &err) != 0) {
		fprintf(stderr, "%s: %s\n", prog, err.msg);
		return CTL_EXIT_USAGE;
	}
	if (cm_dir_open(s->cfg, &s->dir, &err) != 0) {
		fprintf(stderr, "%s: %s: $.directory: %s\n", prog, config, err.msg);
		return CTL_EXIT_USAGE;
	}
	gs = cm_groups_resolve(s->cfg, s->dir, group, &s->group_dn, NULL, &err);
	if (gs == CM_GROUPS_UNAVAILABLE) {
		fprintf(stderr, "%s: %s\n", prog, err.msg);
		return CTL_EXIT_DENY;
	}
	if (gs != CM_GROUPS_OK) {
		fprintf(stderr, "%s: --group: %s\n", prog, err.msg);
		return CTL_EXIT_USAGE;
	}
	return 0;
}

void ctl_session_close(struct ctl_session *s)
{
	free(s->group_dn);
	cm_classifier_free(s->classifier);
	cm_dir_free(s->dir);
	cm_config_free(s->cfg);
	memset(s, 0, sizeof(*s));
}
