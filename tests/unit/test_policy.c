/*
 * Unit tests for common/policy.c: account state (bit tests, lockout from the
 * computed attribute only, accountExpires), the accepted Basic-user forms, and
 * the order of checks in cm_policy_check where no directory is needed.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "certmap/policy.h"

/* FILETIME (100 ns since 1601) of a Unix time. */
#define FT(unix_s) (((int64_t)(unix_s) + 11644473600LL) * 10000000LL)

#define NOW ((time_t)1795341600) /* 2026-11-22T10:00:00Z */
#define Y2020 ((time_t)1577836800)
#define Y2100 ((time_t)4102444800)

#define NO_VALUE (-1) /* has_… false */

struct state_row {
	const char *what;
	int64_t uac;          /* NO_VALUE: attribute absent */
	int64_t uac_computed; /* NO_VALUE: attribute absent */
	bool has_expires;
	int64_t expires;
	enum cm_reason want;
};

static struct cm_account make_account(const struct state_row *r)
{
	struct cm_account a;

	memset(&a, 0, sizeof(a));
	a.dn = "CN=dave,CN=Users,DC=lab,DC=test";
	a.name = a.sam = "dave";
	a.has_uac = r->uac != NO_VALUE;
	a.uac = a.has_uac ? (uint32_t)r->uac : 0;
	a.has_uac_computed = r->uac_computed != NO_VALUE;
	a.uac_computed = a.has_uac_computed ? (uint32_t)r->uac_computed : 0;
	a.has_account_expires = r->has_expires;
	a.account_expires = r->expires;
	return a;
}

Test(account_state, table)
{
	static const struct state_row rows[] = {
		{"normal 512", 512, 0, false, 0, CM_REASON_ALLOWED},
		{"disabled 514", 514, 0, false, 0, CM_REASON_ACCOUNT_DISABLED},
		{"normal, password never expires 66048", 66048, 0, false, 0, CM_REASON_ALLOWED},
		{"disabled, password never expires 66050", 66050, 0, false, 0,
		 CM_REASON_ACCOUNT_DISABLED},
		{"disabled with other bits (0x2|0x20|0x200|0x10000)", 0x10222, 0, false, 0,
		 CM_REASON_ACCOUNT_DISABLED},
		{"computer account 4096", 4096, 0, false, 0, CM_REASON_ALLOWED},
		{"every bit but disable", 0xFFFFFFFD, 0, false, 0, CM_REASON_ALLOWED},
		{"only the disable bit", 0x2, 0, false, 0, CM_REASON_ACCOUNT_DISABLED},
		{"no userAccountControl: fail closed", NO_VALUE, 0, false, 0,
		 CM_REASON_ACCOUNT_DISABLED},
		{"locked: computed 0x10", 512, 0x10, false, 0, CM_REASON_ACCOUNT_LOCKED},
		{"locked with other computed bits", 66048, 0x800010, false, 0,
		 CM_REASON_ACCOUNT_LOCKED},
		{"stale lockout: legacy uAC bit 0x10, computed clear", 512 | 0x10, 0, false, 0,
		 CM_REASON_ALLOWED},
		{"password expired only (computed 0x800000)", 512, 0x800000, false, 0,
		 CM_REASON_ALLOWED},
		{"computed absent (pure function: not locked)", 512, NO_VALUE, false, 0,
		 CM_REASON_ALLOWED},
		{"disabled and locked: disabled first", 514, 0x10, false, 0,
		 CM_REASON_ACCOUNT_DISABLED},
		{"accountExpires 0: never", 512, 0, true, 0, CM_REASON_ALLOWED},
		{"accountExpires 0x7FFFFFFFFFFFFFFF: never", 512, 0, true, INT64_MAX,
		 CM_REASON_ALLOWED},
		{"accountExpires in 2020", 512, 0, true, FT(Y2020), CM_REASON_ACCOUNT_EXPIRED},
		{"accountExpires in 2100", 512, 0, true, FT(Y2100), CM_REASON_ALLOWED},
		{"accountExpires exactly now", 512, 0, true, FT(NOW), CM_REASON_ACCOUNT_EXPIRED},
		{"accountExpires one tick after now", 512, 0, true, FT(NOW) + 1, CM_REASON_ALLOWED},
		{"accountExpires 1 (1601)", 512, 0, true, 1, CM_REASON_ACCOUNT_EXPIRED},
		{"accountExpires negative", 512, 0, true, -5, CM_REASON_ACCOUNT_EXPIRED},
		{"accountExpires 0x7FFFFFFFFFFFFFFE: year 30828", 512, 0, true, INT64_MAX - 1,
		 CM_REASON_ALLOWED},
		{"accountExpires absent", 512, 0, false, FT(Y2020), CM_REASON_ALLOWED},
		{"expired and locked: locked first", 512, 0x10, true, FT(Y2020),
		 CM_REASON_ACCOUNT_LOCKED},
		{"expired and disabled: disabled first", 66050, 0, true, FT(Y2020),
		 CM_REASON_ACCOUNT_DISABLED},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct cm_account a = make_account(&rows[i]);
		enum cm_reason got = cm_policy_account_state(&a, NOW);

		cr_assert_eq(got, rows[i].want, "%s: got %s, want %s", rows[i].what,
			     cm_reason_name(got), cm_reason_name(rows[i].want));
	}
	cr_assert_eq(cm_policy_account_state(NULL, NOW), CM_REASON_ACCOUNT_DISABLED);
}

static struct cm_config ad_config(void)
{
	struct cm_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.directory.dialect = CM_DIALECT_AD;
	cfg.directory.base_dn = "DC=lab,DC=test";
	cfg.directory.dns_domain = "lab.test";
	cfg.directory.netbios_domain = "LAB";
	cfg.directory.timeout_ms = 300;
	cfg.authorization.check_account_state = true;
	return cfg;
}

static struct cm_account ad_alice(void)
{
	struct cm_account a;

	memset(&a, 0, sizeof(a));
	a.dn = "CN=alice,CN=Users,DC=lab,DC=test";
	a.name = a.sam = "alice";
	a.upn = "alice.smith@corp.example"; /* differs from the implicit UPN on purpose */
	a.mail = "alice@mail.example";
	a.has_uac = true;
	a.uac = 66048;
	a.has_uac_computed = true;
	a.has_account_expires = true;
	return a;
}

struct basic_row {
	const char *user;
	bool want;
};

static void check_basic_rows(const struct cm_config *cfg, const struct cm_account *a,
			     const struct basic_row *rows, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(cm_policy_basic_user_matches(cfg, a, rows[i].user), rows[i].want,
			     "%s: \"%s\" should %smatch", what,
			     rows[i].user ? rows[i].user : "(null)", rows[i].want ? "" : "not ");
}

#define CHECK_ROWS(cfg, acct, rows, what) \
	check_basic_rows(cfg, acct, rows, sizeof(rows) / sizeof(rows[0]), what)

Test(basic_user, ad_forms_with_netbios_domain)
{
	static const struct basic_row rows[] = {
		{"alice", true},
		{"ALICE", true},
		{"LAB\\alice", true},
		{"lab\\ALICE", true},
		{"Lab\\Alice", true},
		{"OTHER\\alice", false}, /* wrong domain when netbios_domain is set */
		{"LABX\\alice", false},
		{"LA\\alice", false},
		{"LAB.TEST\\alice", false},
		{"LAB\\", false},
		{"\\alice", false},
		{"\\", false},
		{"LAB\\\\alice", false},
		{"LAB\\alice\\", false},
		{"LAB\\alice@lab.test", false},
		{"alice.smith@corp.example", true}, /* userPrincipalName */
		{"ALICE.SMITH@CORP.EXAMPLE", true},
		{"alice@lab.test", true}, /* implicit UPN sam@<dns domain> */
		{"Alice@LAB.Test", true},
		{"alice@other.test", false},
		{"alice@lab.test.", false},
		{"alice@lab.testx", false},
		{"alice@", false},
		{"@lab.test", false},
		{"alice@mail.example", false}, /* mail is not a logon name in ad */
		{"alice.smith", false},
		{"alic", false},
		{"alicex", false},
		{" alice", false},
		{"alice ", false},
		{"bob", false},
		{"LAB\\bob", false},
		{"", false},
		{NULL, false},
	};
	struct cm_config cfg = ad_config();
	struct cm_account a = ad_alice();

	CHECK_ROWS(&cfg, &a, rows, "ad, netbios LAB");
}

Test(basic_user, ad_without_netbios_domain_accepts_any_domain)
{
	static const struct basic_row rows[] = {
		{"LAB\\alice", true}, {"ANY\\alice", true}, {"\\alice", false},
		{"LAB\\", false},     {"ANY\\bob", false},
	};
	struct cm_config cfg = ad_config();
	struct cm_account a = ad_alice();

	cfg.directory.netbios_domain = NULL;
	CHECK_ROWS(&cfg, &a, rows, "ad, no netbios");
}

Test(basic_user, ad_without_dns_domain_or_upn)
{
	static const struct basic_row no_dns[] = {
		{"alice@lab.test", false},
		{"alice.smith@corp.example", true},
		{"alice", true},
	};
	static const struct basic_row no_upn[] = {
		{"alice@lab.test", true},
		{"alice.smith@corp.example", false},
		{"@", false},
	};
	struct cm_config cfg = ad_config();
	struct cm_account a = ad_alice();

	cfg.directory.dns_domain = NULL;
	CHECK_ROWS(&cfg, &a, no_dns, "ad, no dns domain");
	cfg = ad_config();
	a.upn = NULL;
	CHECK_ROWS(&cfg, &a, no_upn, "ad, no upn");
}

Test(basic_user, ad_account_without_names_matches_nothing)
{
	struct cm_config cfg = ad_config();
	struct cm_account a = ad_alice();

	a.sam = a.name = NULL;
	a.upn = NULL;
	cr_assert_not(cm_policy_basic_user_matches(&cfg, &a, "alice"));
	cr_assert_not(cm_policy_basic_user_matches(&cfg, &a, "LAB\\"));
	cr_assert_not(cm_policy_basic_user_matches(&cfg, &a, "@lab.test"));
	a.sam = a.name = "";
	cr_assert_not(cm_policy_basic_user_matches(&cfg, &a, ""));
	cr_assert_not(cm_policy_basic_user_matches(&cfg, &a, "LAB\\"));
	cr_assert_not(cm_policy_basic_user_matches(&cfg, &a, "@lab.test"));
	cr_assert_not(cm_policy_basic_user_matches(NULL, &a, "alice"));
	cr_assert_not(cm_policy_basic_user_matches(&cfg, NULL, "alice"));
}

Test(basic_user, rfc4523_uid_mail_and_implicit)
{
	static const struct basic_row rows[] = {
		{"alice", true},
		{"ALICE", true},
		{"alice@mail.example", true}, /* mail */
		{"Alice@Mail.Example", true},
		{"alice@lab.test", true}, /* uid@<dns domain> */
		{"alice@other.test", false},
		{"LAB\\alice", false}, /* no NETBIOS form outside AD */
		{"alice.smith@corp.example", false},
		{"alic", false},
		{"LAB\\", false},
		{"", false},
		{NULL, false},
	};
	struct cm_config cfg = ad_config();
	struct cm_account a;

	cfg.directory.dialect = CM_DIALECT_RFC4523;
	cfg.directory.base_dn = "dc=lab,dc=test";
	memset(&a, 0, sizeof(a));
	a.dn = "uid=alice,ou=people,dc=lab,dc=test";
	a.name = "alice";
	a.mail = "alice@mail.example";
	CHECK_ROWS(&cfg, &a, rows, "rfc4523");
}

struct check_row {
	const char *what;
	enum cm_dialect dialect;
	bool check_state;
	enum cm_basic_binding binding;
	uint32_t uac;
	bool has_computed;
	uint32_t computed;
	const char *basic_user;
	enum cm_reason want;
	const char *detail_has; /* substring of the detail, or NULL */
};

Test(check, order_and_basic_binding_without_groups)
{
	static const struct check_row rows[] = {
		{"all fine, binding off", CM_DIALECT_AD, true, CM_BASIC_OFF, 66048, true, 0,
		 "mallory", CM_REASON_ALLOWED, NULL},
		{"disabled", CM_DIALECT_AD, true, CM_BASIC_OFF, 66050, true, 0, NULL,
		 CM_REASON_ACCOUNT_DISABLED, "is disabled"},
		{"locked", CM_DIALECT_AD, true, CM_BASIC_OFF, 66048, true, 0x10, NULL,
		 CM_REASON_ACCOUNT_LOCKED, "locked"},
		{"state before binding", CM_DIALECT_AD, true, CM_BASIC_REQUIRED, 514, true, 0,
		 "mallory", CM_REASON_ACCOUNT_DISABLED, "CN=alice"},
		{"lockout state unreadable: fail closed", CM_DIALECT_AD, true, CM_BASIC_OFF, 512,
		 false, 0, NULL, CM_REASON_DIRECTORY_UNAVAILABLE, "lockout"},
		{"state check off", CM_DIALECT_AD, false, CM_BASIC_OFF, 514, true, 0x10, NULL,
		 CM_REASON_ALLOWED, NULL},
		{"rfc4523 has no account state", CM_DIALECT_RFC4523, true, CM_BASIC_OFF, 514, false,
		 0x10, NULL, CM_REASON_ALLOWED, NULL},
		{"required, no Basic user", CM_DIALECT_AD, true, CM_BASIC_REQUIRED, 512, true, 0,
		 NULL, CM_REASON_BASIC_USER_MISMATCH, "no Basic"},
		{"required, right user", CM_DIALECT_AD, true, CM_BASIC_REQUIRED, 512, true, 0,
		 "LAB\\alice", CM_REASON_ALLOWED, NULL},
		{"required, wrong user", CM_DIALECT_AD, true, CM_BASIC_REQUIRED, 512, true, 0,
		 "LAB\\bob", CM_REASON_BASIC_USER_MISMATCH, "LAB\\bob"},
		{"required, empty user", CM_DIALECT_AD, true, CM_BASIC_REQUIRED, 512, true, 0, "",
		 CM_REASON_BASIC_USER_MISMATCH, NULL},
		{"if_present, none", CM_DIALECT_AD, true, CM_BASIC_IF_PRESENT, 512, true, 0, NULL,
		 CM_REASON_ALLOWED, NULL},
		{"if_present, right", CM_DIALECT_AD, true, CM_BASIC_IF_PRESENT, 512, true, 0,
		 "alice@lab.test", CM_REASON_ALLOWED, NULL},
		{"if_present, wrong", CM_DIALECT_AD, true, CM_BASIC_IF_PRESENT, 512, true, 0, "bob",
		 CM_REASON_BASIC_USER_MISMATCH, "bob"},
		{"if_present, empty", CM_DIALECT_AD, true, CM_BASIC_IF_PRESENT, 512, true, 0, "",
		 CM_REASON_BASIC_USER_MISMATCH, NULL},
		{"off ignores a wrong user", CM_DIALECT_AD, true, CM_BASIC_OFF, 512, true, 0, "bob",
		 CM_REASON_ALLOWED, NULL},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct check_row *r = &rows[i];
		struct cm_config cfg = ad_config();
		struct cm_account a = ad_alice();
		struct cm_trace trace = {NULL, 0, 0};
		char *detail = (char *)"unset";
		enum cm_reason got;

		cfg.directory.dialect = r->dialect;
		cfg.authorization.check_account_state = r->check_state;
		cfg.authorization.basic_user_binding = r->binding;
		a.uac = r->uac;
		a.has_uac_computed = r->has_computed;
		a.uac_computed = r->computed;
		got = cm_policy_check(&cfg, NULL, &a, r->basic_user, NOW, &trace, &detail);
		cr_assert_eq(got, r->want, "%s: got %s, want %s", r->what, cm_reason_name(got),
			     cm_reason_name(r->want));
		if (r->want != CM_REASON_ALLOWED)
			cr_assert_not_null(detail, "%s: a denial has a detail", r->what);
		if (r->detail_has != NULL)
			cr_assert_not_null(strstr(detail, r->detail_has), "%s: detail \"%s\"",
					   r->what, detail);
		free(detail);
		cm_trace_free(&trace);
	}
}

Test(check, account_expired_detail_names_the_date)
{
	struct cm_config cfg = ad_config();
	struct cm_account a = ad_alice();
	char *detail = NULL;

	a.account_expires = FT(Y2020);
	cr_assert_eq(cm_policy_check(&cfg, NULL, &a, NULL, NOW, NULL, &detail),
		     CM_REASON_ACCOUNT_EXPIRED);
	cr_assert_not_null(strstr(detail, "2020-01-01T00:00:00Z"), "%s", detail);
	free(detail);
}

/* Groups need the directory: with every server down, deny as unavailable. */
Test(check, groups_with_directory_down_fail_closed)
{
	static const enum cm_dialect dialects[] = {CM_DIALECT_AD, CM_DIALECT_RFC4523};
	char uri[64];
	char *uris[1] = {uri}, *groups[1] = {"CN=ActiveSync Users,CN=Users,DC=lab,DC=test"};
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int s = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&sa, &len), 0);
	snprintf(uri, sizeof(uri), "ldap://127.0.0.1:%d", ntohs(sa.sin_port));
	close(s); /* now refuses connections */

	for (size_t i = 0; i < 2; i++) {
		struct cm_config cfg = ad_config();
		struct cm_account a = ad_alice();
		struct cm_dir *dir = NULL;
		struct cm_err err = {""};
		char *detail = NULL;

		cfg.directory.dialect = dialects[i];
		cfg.directory.uris.v = uris;
		cfg.directory.uris.n = 1;
		cfg.authorization.required_groups.v = groups;
		cfg.authorization.required_groups.n = 1;
		cr_assert_eq(cm_dir_open(&cfg, &dir, &err), 0);
		cr_assert_eq(cm_policy_check(&cfg, dir, &a, NULL, NOW, NULL, &detail),
			     CM_REASON_DIRECTORY_UNAVAILABLE);
		cr_assert_not_null(detail);
		cr_assert_not_null(strstr(detail, uri), "%s", detail);
		free(detail);
		detail = NULL;
		cr_assert_eq(cm_policy_check(&cfg, NULL, &a, NULL, NOW, NULL, &detail),
			     CM_REASON_DIRECTORY_UNAVAILABLE);
		free(detail);
		cm_dir_free(dir);
	}
}
