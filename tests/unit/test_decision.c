#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

#include "certmap/decision.h"

struct row {
	const char *name;
	int status;
	int substatus;
	const char *text;
};

/* DESIGN §4, row by row. */
static const struct row rows[] = {
	{"allowed", 200, 0, "OK"},
	{"no_certificate", 403, 7, "Client certificate required."},
	{"untrusted", 403, 16, "Client certificate is untrusted or invalid."},
	{"expired", 403, 17, "Client certificate has expired or is not yet valid."},
	{"not_yet_valid", 403, 17, "Client certificate has expired or is not yet valid."},
	{"revoked", 403, 13, "Client certificate revoked."},
	{"revocation_unknown", 403, 13, "Client certificate revoked."},
	{"not_mapped", 401, 2, "Logon failed due to server configuration."},
	{"ambiguous", 403, 12, "Mapper denied access."},
	{"rule_denied", 403, 12, "Mapper denied access."},
	{"account_disabled", 401, 1, "Logon failed."},
	{"account_locked", 401, 1, "Logon failed."},
	{"account_expired", 401, 1, "Logon failed."},
	{"basic_user_mismatch", 401, 1, "Logon failed."},
	{"not_in_group", 401, 3, "Unauthorized due to ACL on resource."},
	{"directory_unavailable", 503, 0, "Service Unavailable"},
	{"upstream_unavailable", 502, 3, "Bad Gateway: forwarder connection error."},
	{"upstream_timeout", 504, 0, "Gateway Timeout"},
	{"bad_request", 400, 0, "Bad Request"},
};

Test(decision, every_reason_has_its_iis_status)
{
	cr_assert_eq(sizeof(rows) / sizeof(rows[0]), CM_REASON_COUNT, "table covers every reason");
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		enum cm_reason r;

		cr_assert_eq(cm_reason_from_name(rows[i].name, &r), 0, "%s known", rows[i].name);
		cr_assert_str_eq(cm_reason_name(r), rows[i].name);
		cr_assert_eq(cm_reason_status(r), rows[i].status, "%s status", rows[i].name);
		cr_assert_eq(cm_reason_substatus(r), rows[i].substatus, "%s substatus",
			     rows[i].name);
		cr_assert_str_eq(cm_status_text(rows[i].status, rows[i].substatus), rows[i].text);
	}
}

Test(decision, unknown_names_and_values)
{
	enum cm_reason r = CM_REASON_ALLOWED;
	enum cm_method m = CM_METHOD_NONE;

	cr_assert_eq(cm_reason_from_name("Allowed", &r), -1);
	cr_assert_eq(cm_reason_from_name("", &r), -1);
	cr_assert_str_eq(cm_reason_name((enum cm_reason)999), "unknown");
	cr_assert_eq(cm_reason_status((enum cm_reason) - 5), 500);
	cr_assert_str_eq(cm_status_text(401, 99), "Unauthorized");
	cr_assert_str_eq(cm_status_text(403, 99), "Forbidden");
	cr_assert_str_eq(cm_status_text(431, 0), "Request Header Fields Too Large");
	cr_assert_eq(cm_method_from_name("upn", &m), 0);
	cr_assert_eq(m, CM_METHOD_UPN);
	cr_assert_eq(cm_method_from_name("UPN", &m), -1);
	cr_assert_null(cm_method_name(CM_METHOD_NONE));
	cr_assert_str_eq(cm_method_name(CM_METHOD_USER_CERTIFICATE), "user_certificate");
}
