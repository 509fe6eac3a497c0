#include <criterion/criterion.h>
#include <string.h>

#include "certmap/http.h"

static const struct {
	const char *in;
	const char *out; /* NULL = refused */
} paths[] = {
	{"/", "/"},
	{"/Microsoft-Server-ActiveSync", "/Microsoft-Server-ActiveSync"},
	{"//Microsoft-Server-ActiveSync", "/Microsoft-Server-ActiveSync"},
	{"/owa/", "/owa/"},
	{"/owa//x///y", "/owa/x/y"},
	{"/owa/./x", "/owa/x"},
	{"/owa/a/../x", "/owa/x"},
	{"/owa/a/..", "/owa/"},
	{"/owa/.", "/owa/"},
	{"/a/b/../../c", "/c"},
	{"/..", NULL},
	{"/a/../..", NULL},
	{"/a/../../etc/passwd", NULL},
	{"/%2e%2e/etc", NULL},
	{"/%2E/x", "/x"},
	{"/Microsoft%2DServer%2dActiveSync", "/Microsoft-Server-ActiveSync"},
	{"/o%77a", "/owa"},
	{"/a%2fb", NULL},
	{"/a%2Fb", NULL},
	{"/a%5cb", NULL},
	{"/a%00b", NULL},
	{"/a\\b", NULL},
	{"/a b", NULL},
	{"/a%20b", "/a%20b"},
	{"/a%e2%82%ac", "/a%E2%82%AC"},
	{"/a%zz", NULL},
	{"/a%4", NULL},
	{"/a%", NULL},
	{"relative", NULL},
	{"", NULL},
	{"/a\x01", NULL},
};

Test(http, normalize_table)
{
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		char out[256];
		const char *why = NULL;
		int rc = cm_http_normalize_path(paths[i].in, strlen(paths[i].in), out, sizeof(out),
						&why);

		if (paths[i].out == NULL) {
			cr_expect_eq(rc, -1, "row %zu %s: accepted as %s", i, paths[i].in,
				     rc == 0 ? out : "");
			if (rc == -1)
				cr_expect_not_null(why);
		} else {
			cr_expect_eq(rc, 0, "row %zu %s refused: %s", i, paths[i].in,
				     why ? why : "");
			if (rc == 0)
				cr_expect_str_eq(out, paths[i].out, "row %zu %s", i, paths[i].in);
		}
	}
}

Test(http, normalize_is_bounded)
{
	char big[CM_HTTP_MAX_PATH_BYTES + 10];
	char out[64];
	const char *why;

	memset(big, 'a', sizeof(big));
	big[0] = '/';
	cr_assert_eq(cm_http_normalize_path(big, sizeof(big), out, sizeof(out), &why), -1);
	cr_assert_eq(cm_http_normalize_path(big, 100, out, sizeof(out), &why), -1,
		     "output too small");
}

Test(http, identity_headers)
{
	const char *strip[] = {"X-Certmap-User",
			       "x-certmap-dn",
			       "Client-Cert",
			       "client-cert-chain",
			       "X-Forwarded-Tls-Client-Cert",
			       "X-Forwarded-Tls-Client-Cert-Info",
			       "X-SSL-Client-Cert",
			       "x-ssl-cert",
			       "X-Client-Cert",
			       "X-Client-Certificate"};
	const char *keep[] = {"Authorization",        "X-Certmap",      "Client-Certs",
			      "MS-ASProtocolVersion", "X-MS-PolicyKey", "User-Agent"};

	for (size_t i = 0; i < sizeof(strip) / sizeof(strip[0]); i++)
		cr_expect(cm_http_is_identity_header(strip[i]), "%s", strip[i]);
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		cr_expect(!cm_http_is_identity_header(keep[i]), "%s", keep[i]);
}

Test(http, hop_by_hop)
{
	cr_expect(cm_http_is_hop_header("connection"));
	cr_expect(cm_http_is_hop_header("Proxy-Authorization"));
	cr_expect(cm_http_is_hop_header("te"));
	cr_expect(!cm_http_is_hop_header("Authorization"));
	cr_expect(cm_http_connection_lists("keep-alive, X-Secret", "x-secret"));
	cr_expect(cm_http_connection_lists("close,X-A ,  X-B", "X-B"));
	cr_expect(!cm_http_connection_lists("close", "X-B"));
	cr_expect(!cm_http_connection_lists("X-Bb", "X-B"));
	cr_expect(!cm_http_connection_lists("", "X-B"));
}

Test(http, header_names)
{
	cr_expect(cm_http_valid_header_name("MS-ASProtocolVersion"));
	cr_expect(cm_http_valid_header_name("X_Certmap_User"));
	cr_expect(!cm_http_valid_header_name("Bad Name"));
	cr_expect(!cm_http_valid_header_name(""));
	cr_expect(!cm_http_valid_header_name("a:b"));
}
