/*
 * Unit tests for the pure parts of certmapctl publish and audit:
 * common/publish.c (the --map CSV, matching sources to members, the change
 * plan), common/audit.c (findings and levels over an inventory) and the
 * classification of the fixture certificates (common/inventory.c).
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certmap/audit.h"
#include "certmap/groups.h"
#include "certmap/inventory.h"
#include "certmap/publish.h"

#define NOW ((time_t)1795341600) /* 2026-11-22T10:00:00Z */
#define GROUP "CN=ActiveSync Users,CN=Users,DC=lab,DC=test"

/* ---- --map CSV ---- */

static struct cm_pub_map parse_ok(const char *text)
{
	struct cm_pub_map m;
	struct cm_err err = {""};

	cr_assert_eq(cm_pub_map_parse(text, strlen(text), "/csv/dir", &m, &err), 0, "%s: %s", text,
		     err.msg);
	return m;
}

static void parse_bad(const char *text, size_t len, const char *want)
{
	struct cm_pub_map m;
	struct cm_err err = {""};

	cr_assert_eq(cm_pub_map_parse(text, len, "/csv/dir", &m, &err), -1, "accepted: %s", text);
	cr_assert_not_null(strstr(err.msg, want), "\"%s\": error \"%s\" lacks \"%s\"", text,
			   err.msg, want);
	cr_assert_eq(m.n, 0);
	cr_assert_null(m.rows);
}

Test(map_csv, rows_header_comments_paths)
{
	struct cm_pub_map m = parse_ok("\xef\xbb\xbf"
				       "Account,CertFile\r\n"
				       "# a comment\n"
				       "\n"
				       "alice,alice.pem\r\n"
				       "  bob , sub/bob.cer  \n"
				       "carol,/abs/carol.der\n"
				       "\"d,ave\",\"with \"\"quotes\"\".pem\"\n"
				       "erin,erin.pem");

	cr_assert_eq(m.n, 5);
	cr_assert_str_eq(m.rows[0].account, "alice");
	cr_assert_str_eq(m.rows[0].file, "/csv/dir/alice.pem");
	cr_assert_eq(m.rows[0].line, 4);
	cr_assert_str_eq(m.rows[1].account, "bob");
	cr_assert_str_eq(m.rows[1].file, "/csv/dir/sub/bob.cer");
	cr_assert_str_eq(m.rows[2].file, "/abs/carol.der");
	cr_assert_str_eq(m.rows[3].account, "d,ave");
	cr_assert_str_eq(m.rows[3].file, "/csv/dir/with \"quotes\".pem");
	cr_assert_str_eq(m.rows[4].account, "erin");
	cr_assert_eq(m.rows[4].line, 8);
	cm_pub_map_free(&m);
	cm_pub_map_free(&m); /* twice is harmless */
}

Test(map_csv, header_only_in_first_row)
{
	struct cm_pub_map m = parse_ok("alice,a.pem\naccount,certfile\n");

	cr_assert_eq(m.n, 2);
	cr_assert_str_eq(m.rows[1].account, "account");
	cm_pub_map_free(&m);
	m = parse_ok("");
	cr_assert_eq(m.n, 0);
	cm_pub_map_free(&m);
}

Test(map_csv, malformed_lines_name_the_line)
{
	parse_bad("alice\n", 6, "line 1: one field");
	parse_bad("alice,a.pem\nbob,b.pem,extra\n", 27, "line 2: more than two fields");
	parse_bad("alice,\n", 7, "line 1: an empty field");
	parse_bad(",a.pem\n", 7, "line 1: an empty field");
	parse_bad("\"alice,a.pem\n", 13, "line 1: unterminated quoted field");
	parse_bad("\"alice\"x,a.pem\n", 15, "line 1: text after a closing quote");
	parse_bad("al\"ice,a.pem\n", 13, "line 1: a quote inside an unquoted field");
	parse_bad("alice,a.pem\0\n", 13, "NUL");
}

/* ---- an inventory by hand ---- */

struct fx {
	struct cm_inventory inv;
};

static unsigned char *bytes(const char *s)
{
	return (unsigned char *)strdup(s);
}

/* Adds an account; values are "name:flags" strings whose bytes are the DER
 * stand-in; flags: m managed, e expired, n not yet valid, r revoked,
 * u usable, p unparsed. */
static size_t add_account(struct cm_inventory *inv, const char *name, bool member,
			  const char *const *values)
{
	struct cm_inv_account *a;
	size_t n = 0;

	while (values != NULL && values[n] != NULL)
		n++;
	inv->accounts = realloc(inv->accounts, (inv->n + 1) * sizeof(*inv->accounts));
	a = &inv->accounts[inv->n];
	memset(a, 0, sizeof(*a));
	a->dn = malloc(128);
	snprintf(a->dn, 128, "CN=%s,CN=Users,DC=lab,DC=test", name);
	a->name = strdup(name);
	a->upn = malloc(64);
	snprintf(a->upn, 64, "%s@lab.test", name);
	a->mail = malloc(64);
	snprintf(a->mail, 64, "%s@mail.lab.test", name);
	a->member = member;
	a->values = calloc(n + 1, sizeof(*a->values));
	for (size_t i = 0; i < n; i++) {
		struct cm_inv_value *v = &a->values[i];
		const char *flags = strchr(values[i], ':');
		char cert[64];

		snprintf(cert, sizeof(cert), "%.*s", (int)(flags - values[i]), values[i]);
		v->der = bytes(cert);
		v->len = strlen(cert);
		cm_sha256_hex(v->der, v->len, v->sha256);
		v->cls.parsed = strchr(flags, 'p') == NULL;
		v->cls.managed = strchr(flags, 'm') != NULL;
		v->cls.expired = strchr(flags, 'e') != NULL;
		v->cls.not_yet_valid = strchr(flags, 'n') != NULL;
		v->cls.revoked = strchr(flags, 'r') != NULL;
		v->cls.usable = strchr(flags, 'u') != NULL;
		v->cls.subject = cm_strdup_printf("CN=%s", cert);
		v->cls.issuer = strdup("CN=Lab Issuing CA");
		v->cls.serial = strdup(cert);
		if (!v->cls.usable)
			v->cls.problem = strdup("not usable");
		strcpy(v->cls.not_after, "2020-01-01T00:00:00Z");
	}
	a->n_values = n;
	inv->n++;
	inv->n_members += member;
	return inv->n - 1;
}

#define V(...) ((const char *const[]){__VA_ARGS__, NULL})

static void inv_init(struct cm_inventory *inv)
{
	memset(inv, 0, sizeof(*inv));
	inv->group_dn = strdup(GROUP);
}

/* A source for a certificate (its bytes are the name), already classified
 * as a managed, usable certificate. */
static struct cm_pub_source source(const char *file, const char *cert, const char *account,
				   const char *upn, const char *email)
{
	struct cm_pub_source s;

	memset(&s, 0, sizeof(s));
	s.target = CM_PUB_NONE;
	s.file = strdup(file);
	s.account = account ? strdup(account) : NULL;
	s.der = bytes(cert);
	s.len = strlen(cert);
	cm_sha256_hex(s.der, s.len, s.sha256);
	s.upn_san = upn ? strdup(upn) : NULL;
	s.email_san = email ? strdup(email) : NULL;
	s.cls.parsed = s.cls.managed = s.cls.usable = true;
	s.cls.subject = cm_strdup_printf("CN=%s", cert);
	return s;
}

static void sources_free(struct cm_pub_source *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cm_pub_source_clear(&s[i]);
}

/* ---- matching ---- */

Test(match, cert_dir_by_name_upn_email_conflicts_and_strangers)
{
	struct cm_inventory inv;
	struct cm_pub_source s[7];
	size_t alice, bob, carol;

	inv_init(&inv);
	alice = add_account(&inv, "alice", true, NULL);
	bob = add_account(&inv, "bob", true, NULL);
	carol = add_account(&inv, "carol", true, NULL);
	add_account(&inv, "mallory", false, NULL);                          /* not a member */
	s[0] = source("/d/ALICE.pem", "a1", NULL, NULL, NULL);              /* by name, any case */
	s[1] = source("/d/phone-17.crt", "b1", NULL, "bob@lab.test", NULL); /* UPN SAN */
	s[2] = source("/d/x.der", "c1", NULL, NULL, "CAROL@mail.lab.test"); /* e-mail SAN */
	s[3] = source("/d/alice.cer", "a2", NULL, "bob@lab.test", NULL);    /* name vs SAN */
	s[4] = source("/d/mallory.pem", "m1", NULL, NULL, NULL);            /* non-member */
	s[5] = source("/d/bob2.pem", "a3", NULL, "alice@lab.test", "bob@mail.lab.test");
	s[6] = source("/d/carol.pem", "c2", NULL, "carol@lab.test", "carol@elsewhere.example");

	cr_assert_eq(cm_pub_match(&inv, true, CM_PUB_MODE_DIR, s, 7), 0);
	cr_assert_null(s[0].skip);
	cr_assert_eq(s[0].target, alice);
	cr_assert_eq(s[0].how, CM_PUB_HOW_NAME);
	cr_assert_eq(s[1].target, bob);
	cr_assert_eq(s[1].how, CM_PUB_HOW_UPN);
	cr_assert_eq(s[2].target, carol);
	cr_assert_eq(s[2].how, CM_PUB_HOW_EMAIL);
	cr_assert_not_null(s[3].skip, "a file named after alice holding bob's certificate");
	cr_assert(s[3].error);
	cr_assert_not_null(strstr(s[3].skip, "names alice"), "%s", s[3].skip);
	cr_assert_not_null(strstr(s[3].skip, "names bob"), "%s", s[3].skip);
	cr_assert_not_null(s[4].skip);
	cr_assert_not(s[4].error, "a non-member's file is a warning");
	cr_assert_not_null(strstr(s[4].skip, "matches no member"));
	cr_assert_not_null(s[5].skip, "SANs naming two members");
	cr_assert(s[5].error);
	cr_assert_null(s[6].skip, "%s", s[6].skip);
	cr_assert_eq(s[6].target, carol);
	sources_free(s, 7);
	cm_inventory_free(&inv);
}

Test(match, rfc4523_ignores_upn_attribute)
{
	struct cm_inventory inv;
	struct cm_pub_source s[2];

	inv_init(&inv);
	add_account(&inv, "alice", true, NULL);
	s[0] = source("/d/one.pem", "a1", NULL, "alice@lab.test", NULL); /* UPN attr: ad only */
	s[1] = source("/d/two.pem", "a2", NULL, "alice@mail.lab.test", NULL); /* UPN SAN = mail */
	cr_assert_eq(cm_pub_match(&inv, false, CM_PUB_MODE_DIR, s, 2), 0);
	cr_assert_not_null(s[0].skip);
	cr_assert_null(s[1].skip);
	cr_assert_eq(s[1].target, 0);
	sources_free(s, 2);
	cm_inventory_free(&inv);
}

Test(match, map_rows_and_cert_for_all)
{
	struct cm_inventory inv;
	struct cm_pub_source s[3], one;

	inv_init(&inv);
	add_account(&inv, "alice", true, NULL);
	add_account(&inv, "bob", false, NULL);
	s[0] = source("/d/a.pem", "a1", "Alice", NULL, NULL);
	s[1] = source("/d/b.pem", "b1", "bob", NULL, NULL);
	s[2] = source("/d/n.pem", "n1", "nobody", NULL, NULL);
	s[1].line = 3;
	cr_assert_eq(cm_pub_match(&inv, true, CM_PUB_MODE_MAP, s, 3), 0);
	cr_assert_eq(s[0].target, 0);
	cr_assert_eq(s[0].how, CM_PUB_HOW_MAP);
	cr_assert_not_null(s[1].skip);
	cr_assert_not(s[1].error);
	cr_assert_not_null(strstr(s[1].skip, "line 3"), "%s", s[1].skip);
	cr_assert_not_null(s[2].skip);
	one = source("/d/shared.pem", "s1", NULL, NULL, NULL);
	cr_assert_eq(cm_pub_match(&inv, true, CM_PUB_MODE_CERT, &one, 1), 0);
	cr_assert_eq(one.how, CM_PUB_HOW_ALL);
	sources_free(s, 3);
	sources_free(&one, 1);
	cm_inventory_free(&inv);
}

/* ---- planning ---- */

static size_t count(const struct cm_pub_plan *p, enum cm_pub_action a, enum cm_pub_why why)
{
	size_t n = 0;

	for (size_t i = 0; i < p->n; i++)
		n += p->v[i].action == a && p->v[i].why == why;
	return n;
}

Test(plan, idempotent_adds_never_touch_foreign_values)
{
	struct cm_inventory inv;
	struct cm_pub_source s[3];
	struct cm_pub_plan plan;
	struct cm_pub_options opt = {false, false};

	inv_init(&inv);
	add_account(&inv, "alice", true, V("a1:mu", "smime:u")); /* a1 already there */
	add_account(&inv, "bob", true, V("old:me"));
	s[0] = source("/d/alice.pem", "a1", NULL, NULL, NULL);
	s[1] = source("/d/bob.pem", "b1", NULL, NULL, NULL);
	s[2] = source("/d/bob-copy.pem", "b1", NULL, NULL, NULL); /* same cert twice */
	s[0].target = 0, s[0].how = CM_PUB_HOW_NAME;
	s[1].target = 1, s[1].how = CM_PUB_HOW_NAME;
	s[2].target = 1, s[2].how = CM_PUB_HOW_NAME;
	cr_assert_eq(cm_pub_plan_build(&inv, s, 3, &opt, &plan), 0);
	cr_assert_eq(plan.n, 1, "only bob's new cert, once");
	cr_assert_eq(plan.v[0].action, CM_PUB_ADD);
	cr_assert_eq(plan.v[0].account, 1);
	cr_assert_str_eq(plan.v[0].sha256, s[1].sha256);
	cr_assert_eq(plan.v[0].source, 1);
	cr_assert_not_null(strstr(plan.v[0].reason, GROUP));
	cr_assert_eq(plan.present, 1);
	cr_assert_eq(plan.targeted, 2);
	cm_pub_plan_free(&plan);
	sources_free(s, 3);
	cm_inventory_free(&inv);
}

Test(plan, replace_expired_only_managed_and_after_the_add)
{
	struct cm_inventory inv;
	struct cm_pub_source s[2];
	struct cm_pub_plan plan;
	struct cm_pub_options opt = {false, true};

	inv_init(&inv);
	/* kim: an expired managed value, an expired foreign one, a valid managed one */
	add_account(&inv, "kim", true, V("kim-old:me", "foreign-old:e", "kim-other:mu"));
	/* leo: expired managed, but no new source: kept */
	add_account(&inv, "leo", true, V("leo-old:me"));
	s[0] = source("/d/kim.pem", "kim-new", NULL, NULL, NULL);
	s[0].target = 0, s[0].how = CM_PUB_HOW_NAME;
	cr_assert_eq(cm_pub_plan_build(&inv, s, 1, &opt, &plan), 0);
	cr_assert_eq(plan.n, 2);
	cr_assert_eq(plan.v[0].action, CM_PUB_ADD, "the add comes first");
	cr_assert_eq(plan.v[1].action, CM_PUB_DELETE);
	cr_assert_eq(plan.v[1].why, CM_PUB_WHY_REPLACED);
	cr_assert_eq(plan.v[1].account, 0);
	cr_assert_eq(plan.v[1].len, strlen("kim-old"));
	cr_assert_eq(memcmp(plan.v[1].der, "kim-old", 7), 0);
	cr_assert_not_null(strstr(plan.v[1].reason, "expired"));
	cm_pub_plan_free(&plan);

	/* the new cert already present: the expired one still goes */
	opt.replace_expired = true;
	s[1] = source("/d/leo.pem", "leo-old", NULL, NULL, NULL); /* a source equal to the old */
	s[1].target = 1, s[1].how = CM_PUB_HOW_NAME;
	cr_assert_eq(cm_pub_plan_build(&inv, s + 1, 1, &opt, &plan), 0);
	cr_assert_eq(plan.n, 0, "a value that is also the source is never replaced");
	cm_pub_plan_free(&plan);
	sources_free(s, 2);
	cm_inventory_free(&inv);
}

Test(plan, prune_removes_only_managed_values_of_non_members)
{
	struct cm_inventory inv;
	struct cm_pub_plan plan;
	struct cm_pub_options opt = {true, false};

	inv_init(&inv);
	add_account(&inv, "alice", true, V("a1:mu"));
	add_account(&inv, "bob", false, V("b1:mu", "smime:u", "b-old:me"));
	add_account(&inv, "svc", false, V("other:pu"));
	cr_assert_eq(cm_pub_plan_build(&inv, NULL, 0, &opt, &plan), 0);
	cr_assert_eq(plan.n, 2, "bob's two managed values, nothing else");
	cr_assert_eq(count(&plan, CM_PUB_DELETE, CM_PUB_WHY_PRUNED), 2);
	for (size_t i = 0; i < plan.n; i++) {
		cr_assert_eq(plan.v[i].account, 1);
		cr_assert_eq(plan.v[i].source, CM_PUB_NONE);
		cr_assert_not_null(strstr(plan.v[i].reason, "not a member of " GROUP));
	}
	cm_pub_plan_free(&plan);
	opt.prune = false;
	cr_assert_eq(cm_pub_plan_build(&inv, NULL, 0, &opt, &plan), 0);
	cr_assert_eq(plan.n, 0);
	cm_pub_plan_free(&plan);
	cm_inventory_free(&inv);
}

Test(plan, one_cert_for_every_member)
{
	struct cm_inventory inv;
	struct cm_pub_source s;
	struct cm_pub_plan plan;
	struct cm_pub_options opt = {true, false};

	inv_init(&inv);
	add_account(&inv, "gina", true, V("shared:mu"));
	add_account(&inv, "hank", true, NULL);
	add_account(&inv, "bob", false, V("shared:mu"));
	s = source("/d/shared.pem", "shared", NULL, NULL, NULL);
	cr_assert_eq(cm_pub_match(&inv, true, CM_PUB_MODE_CERT, &s, 1), 0);
	cr_assert_eq(cm_pub_plan_build(&inv, &s, 1, &opt, &plan), 0);
	cr_assert_eq(plan.n, 2);
	cr_assert_eq(plan.v[0].action, CM_PUB_ADD);
	cr_assert_eq(plan.v[0].account, 1);
	cr_assert_not_null(strstr(plan.v[0].reason, "--cert"));
	cr_assert_eq(plan.v[1].action, CM_PUB_DELETE);
	cr_assert_eq(plan.v[1].account, 2);
	cr_assert_eq(plan.present, 1);
	cm_pub_plan_free(&plan);
	sources_free(&s, 1);
	cm_inventory_free(&inv);
}

/* ---- audit ---- */

static const struct cm_audit_finding *find(const struct cm_audit_report *r, enum cm_audit_kind kind,
					   const char *account)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].kind == kind)
			for (size_t j = 0; j < r->v[i].n_dns; j++)
				if (strstr(r->v[i].dns[j], account) != NULL)
					return &r->v[i];
	return NULL;
}

Test(audit, every_kind_once_and_nothing_else)
{
	struct cm_inventory inv;
	struct cm_audit_report r;
	const struct cm_audit_finding *f;

	inv_init(&inv);
	add_account(&inv, "alice", true, V("alice:mu")); /* fine */
	add_account(&inv, "gina", true, V("shared:mu"));
	add_account(&inv, "hank", true, V("shared:mu"));
	add_account(&inv, "kim", true, V("kim:me"));
	add_account(&inv, "leo", true, V("leo:mn"));
	add_account(&inv, "mallory", true, V("mallory:"));
	add_account(&inv, "judy", true, V("judy:mr"));
	add_account(&inv, "dup", true, V("dup:mu", "dup:mu"));
	add_account(&inv, "nocert", true, NULL);
	add_account(&inv, "bob", false, V("bob:mu", "smime:u")); /* smime: not managed */
	add_account(&inv, "carl", false, V("alice:mu"));         /* alice's cert elsewhere */
	cr_assert_eq(cm_audit_run(&inv, CM_AMBIGUOUS_DENY, &r), 0);

	cr_assert_eq(r.counts[CM_AUDIT_CRITICAL], 2);
	cr_assert_eq(r.v[0].level, CM_AUDIT_CRITICAL, "critical findings come first");
	f = find(&r, CM_AUDIT_SHARED_CERTIFICATE, "gina");
	cr_assert_not_null(f);
	cr_assert_eq(f->n_dns, 2);
	cr_assert_str_eq(f->dns[0], "CN=gina,CN=Users,DC=lab,DC=test");
	cr_assert_str_eq(f->dns[1], "CN=hank,CN=Users,DC=lab,DC=test");
	cr_assert_eq(strlen(f->sha256), 64);
	cr_assert_not_null(find(&r, CM_AUDIT_SHARED_CERTIFICATE, "carl"));
	cr_assert_not_null(find(&r, CM_AUDIT_EXPIRED, "kim"));
	cr_assert_not_null(find(&r, CM_AUDIT_NOT_YET_VALID, "leo"));
	cr_assert_not_null(find(&r, CM_AUDIT_UNTRUSTED_ISSUER, "mallory"));
	cr_assert_not_null(find(&r, CM_AUDIT_REVOKED, "judy"));
	cr_assert_not_null(find(&r, CM_AUDIT_DUPLICATE_VALUE, "dup"));
	cr_assert_not_null(find(&r, CM_AUDIT_HOLDER_OUTSIDE_GROUP, "bob"));
	cr_assert_not_null(find(&r, CM_AUDIT_HOLDER_OUTSIDE_GROUP, "carl"));
	/* members with no usable value: gina, hank (shared under deny), kim, leo, mallory,
	 * judy, nocert; alice's cert is shared with carl too */
	static const char *const unusable[] = {"gina",    "hank", "kim",    "leo",
					       "mallory", "judy", "nocert", "alice"};
	for (size_t i = 0; i < sizeof(unusable) / sizeof(unusable[0]); i++)
		cr_assert_not_null(find(&r, CM_AUDIT_MEMBER_WITHOUT_USABLE_CERT, unusable[i]), "%s",
				   unusable[i]);
	f = find(&r, CM_AUDIT_MEMBER_WITHOUT_USABLE_CERT, "nocert");
	cr_assert_str_eq(f->sha256, "");
	cr_assert_str_eq(f->detail, "holds no certificate");
	cr_assert_null(find(&r, CM_AUDIT_MEMBER_WITHOUT_USABLE_CERT, "dup"));
	/* 2 shared + expired + nyv + untrusted + revoked + duplicate + 2 outside + 8 unusable */
	cr_assert_eq(r.n, 17, "%zu findings", r.n);
	cr_assert_eq(r.counts[CM_AUDIT_WARNING], 15);
	cr_assert_eq(r.counts[CM_AUDIT_INFO], 0);
	cr_assert_eq(r.members, 9);
	cr_assert_eq(r.accounts, 11);
	cm_audit_report_free(&r);

	/* basic_user: a shared value is usable by its holders */
	cr_assert_eq(cm_audit_run(&inv, CM_AMBIGUOUS_BASIC_USER, &r), 0);
	cr_assert_null(find(&r, CM_AUDIT_MEMBER_WITHOUT_USABLE_CERT, "gina"));
	cr_assert_not_null(find(&r, CM_AUDIT_SHARED_CERTIFICATE, "gina"), "still critical");
	cm_audit_report_free(&r);
	cm_inventory_free(&inv);
}

Test(audit, same_issuer_and_serial_is_a_duplicate)
{
	struct cm_inventory inv;
	struct cm_audit_report r;
	const struct cm_audit_finding *f;

	inv_init(&inv);
	add_account(&inv, "alice", true, V("one:mu", "two:mu"));
	free(inv.accounts[0].values[1].cls.serial);
	inv.accounts[0].values[1].cls.serial = strdup("one"); /* same issuer + serial */
	cr_assert_eq(cm_audit_run(&inv, CM_AMBIGUOUS_DENY, &r), 0);
	f = find(&r, CM_AUDIT_DUPLICATE_VALUE, "alice");
	cr_assert_not_null(f);
	cr_assert_str_eq(f->sha256, inv.accounts[0].values[1].sha256);
	cr_assert_not_null(strstr(f->detail, inv.accounts[0].values[0].sha256));
	cr_assert_eq(r.n, 1);
	cm_audit_report_free(&r);
	cm_inventory_free(&inv);
}

Test(audit, levels_parse_and_names)
{
	enum cm_audit_level l;

	cr_assert_eq(cm_audit_level_parse("warning", &l), 0);
	cr_assert_eq(l, CM_AUDIT_WARNING);
	cr_assert_eq(cm_audit_level_parse("critical", &l), 0);
	cr_assert_eq(cm_audit_level_parse("info", &l), 0);
	cr_assert_eq(cm_audit_level_parse("Critical", &l), -1);
	cr_assert_str_eq(cm_audit_kind_name(CM_AUDIT_HOLDER_OUTSIDE_GROUP), "holder_outside_group");
	cr_assert_str_eq(cm_audit_level_name(CM_AUDIT_CRITICAL), "critical");
}

/* ---- classification of the lab fixtures ---- */

static struct cm_config *fixture_config(bool with_crl)
{
	static char *issuers[1], *crls[1];
	struct cm_config *cfg = calloc(1, sizeof(*cfg));

	issuers[0] = CERTMAP_FIXTURES "/issuing-ca.pem";
	crls[0] = CERTMAP_FIXTURES "/issuing-ca.crl.pem";
	cfg->file = "test.json";
	cfg->client_certificates.trusted_issuers.v = issuers;
	cfg->client_certificates.trusted_issuers.n = 1;
	cfg->client_certificates.require_client_auth_eku = true;
	cfg->client_certificates.revocation.mode =
		with_crl ? CM_REVOCATION_SOFT : CM_REVOCATION_OFF;
	cfg->client_certificates.revocation.crl_files.v = crls;
	cfg->client_certificates.revocation.crl_files.n = with_crl ? 1 : 0;
	return cfg;
}

static void classify_file(struct cm_classifier *c, const char *name, struct cm_inv_class *out)
{
	char path[512];
	struct cm_der_list l;
	struct cm_err err = {""};

	snprintf(path, sizeof(path), "%s/%s", CERTMAP_FIXTURES, name);
	cr_assert_eq(cm_der_list_read(path, &l, &err), 0, "%s: %s", name, err.msg);
	cr_assert_eq(cm_classify(c, l.der[0], l.len[0], out), 0);
	cm_der_list_free(&l);
}

Test(classify, fixtures)
{
	static const struct {
		const char *file;
		bool parsed, managed, expired, nyv, revoked, usable;
	} rows[] = {
		{"alice.pem", true, true, false, false, false, true},
		{"kim-expired.pem", true, true, true, false, false, false},
		{"leo-notyet.pem", true, true, false, true, false, false},
		{"judy-revoked.pem", true, true, false, false, true, false},
		{"mike-serverauth.pem", true, true, false, false, false, false}, /* EKU */
		{"mallory-selfsigned.pem", true, false, false, false, false, false},
		{"rogue-alice.pem", true, false, false, false, false, false},
		{"victor-untrusted.pem", true, false, false, false, false, false},
		{"ivan.pem", true, false, false, false, false, false}, /* needs the sub CA */
		{"issuing-ca.pem", true, false, false, false, false, false},
		{"garbage.pem", false, false, false, false, false, false},
		{"serialdup.pem", true, true, false, false, false, true},
	};
	struct cm_config *cfg = fixture_config(true);
	struct cm_classifier *c = NULL, *with_sub = NULL;
	struct cm_err err = {""};
	struct cm_inv_class cls;

	cr_assert_eq(cm_classifier_new(cfg, NULL, NOW, &c, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		classify_file(c, rows[i].file, &cls);
		cr_assert_eq(cls.parsed, rows[i].parsed, "%s parsed", rows[i].file);
		cr_assert_eq(cls.managed, rows[i].managed, "%s managed", rows[i].file);
		cr_assert_eq(cls.expired, rows[i].expired, "%s expired", rows[i].file);
		cr_assert_eq(cls.not_yet_valid, rows[i].nyv, "%s nyv", rows[i].file);
		cr_assert_eq(cls.revoked, rows[i].revoked, "%s revoked", rows[i].file);
		cr_assert_eq(cls.usable, rows[i].usable, "%s usable: %s", rows[i].file,
			     cls.problem ? cls.problem : "");
		cr_assert_eq(cls.problem == NULL, rows[i].usable, "%s problem", rows[i].file);
		/* a second time comes from the cache, the same */
		cm_inv_class_clear(&cls);
		classify_file(c, rows[i].file, &cls);
		cr_assert_eq(cls.usable, rows[i].usable, "%s cached", rows[i].file);
		cm_inv_class_clear(&cls);
	}
	/* the intermediate a device would send makes ivan's one of ours */
	cr_assert_eq(
		cm_classifier_new(cfg, CERTMAP_FIXTURES "/ivan-chain.pem", NOW, &with_sub, &err), 0,
		"%s", err.msg);
	classify_file(with_sub, "ivan.pem", &cls);
	cr_assert(cls.managed && cls.usable, "%s", cls.problem ? cls.problem : "");
	cr_assert_str_eq(cls.subject, "CN=ivan,OU=Users,O=Certmap Lab,C=US");
	cm_inv_class_clear(&cls);
	cm_classifier_free(with_sub);
	cm_classifier_free(c);
	free(cfg);

	/* revocation off and no CRL: judy is usable and not known revoked */
	cfg = fixture_config(false);
	cr_assert_eq(cm_classifier_new(cfg, NULL, NOW, &c, &err), 0, "%s", err.msg);
	classify_file(c, "judy-revoked.pem", &cls);
	cr_assert(cls.usable && !cls.revoked);
	cm_inv_class_clear(&cls);
	cm_classifier_free(c);
	free(cfg);
}

Test(classify, source_loading_refuses_what_prune_could_not_remove)
{
	struct cm_config *cfg = fixture_config(true);
	struct cm_classifier *c = NULL;
	struct cm_err err = {""};
	struct cm_pub_source s;

	cr_assert_eq(cm_classifier_new(cfg, NULL, NOW, &c, &err), 0, "%s", err.msg);
	cr_assert_eq(cm_pub_source_load(CERTMAP_FIXTURES "/alice.pem", NULL, 0, c, &s), 0);
	cr_assert_null(s.skip);
	cr_assert_str_eq(s.upn_san, "alice@lab.test");
	cr_assert_str_eq(s.email_san, "alice@lab.test");
	cm_pub_source_clear(&s);
	cr_assert_eq(cm_pub_source_load(CERTMAP_FIXTURES "/mallory-selfsigned.pem", NULL, 0, c, &s),
		     0);
	cr_assert(s.skip != NULL && s.error);
	cm_pub_source_clear(&s);
	cr_assert_eq(cm_pub_source_load(CERTMAP_FIXTURES "/kim-expired.pem", NULL, 0, c, &s), 0);
	cr_assert(s.skip != NULL && !s.error, "expired: a warning");
	cm_pub_source_clear(&s);
	cr_assert_eq(cm_pub_source_load(CERTMAP_FIXTURES "/leo-notyet.pem", NULL, 0, c, &s), 0);
	cr_assert(s.skip == NULL && s.note != NULL, "not yet valid: published with a note");
	cm_pub_source_clear(&s);
	cr_assert_eq(cm_pub_source_load("/nonexistent/x.pem", "bob", 7, c, &s), 0);
	cr_assert(s.skip != NULL && s.error);
	cr_assert_str_eq(s.account, "bob");
	cm_pub_source_clear(&s);
	cm_classifier_free(c);
	free(cfg);
}

/* ---- DN sets ---- */

Test(dnset, compares_as_the_directory)
{
	struct cm_dnset set = {NULL, 0, 0};
	char dn[64];

	cr_assert_eq(cm_dnset_add(&set, "CN=Alice,CN=Users,DC=lab,DC=test"), 1);
	cr_assert_eq(cm_dnset_add(&set, "cn=alice, cn=users, dc=LAB, dc=test"), 0);
	cr_assert(cm_dnset_has(&set, "CN=ALICE,CN=USERS,DC=LAB,DC=TEST"));
	cr_assert_not(cm_dnset_has(&set, "CN=bob,CN=Users,DC=lab,DC=test"));
	cr_assert_eq(cm_dnset_add(&set, "not a dn"), -1);
	for (int i = 0; i < 1000; i++) {
		snprintf(dn, sizeof(dn), "uid=u%04d,ou=people,dc=lab,dc=test", i);
		cr_assert_eq(cm_dnset_add(&set, dn), 1);
	}
	cr_assert_eq(set.n, 1001);
	cr_assert(cm_dnset_has(&set, "UID=u0999,ou=people,dc=lab,dc=test"));
	cm_dnset_free(&set);
	cm_dnset_free(&set);
}
