/*
 * http — request-path normalization and header classification
 * (include/certmap/http.h). Pure functions.
 */
#include "certmap/http.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "certmap/util.h"

static bool unreserved(int c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

int cm_http_normalize_path(const char *path, size_t len, char *out, size_t outlen, const char **why)
{
	/* Pass 1: decode into out (segments still raw); pass 2 in place:
	 * resolve dot segments and merge slashes. */
	size_t o = 0;
	const char *dummy;

	if (why == NULL)
		why = &dummy;
	if (len == 0 || path[0] != '/') {
		*why = "path does not start with '/'";
		return -1;
	}
	if (outlen < 2 || len > CM_HTTP_MAX_PATH_BYTES) {
		*why = "path too long";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)path[i];

		if (o + 4 > outlen) {
			*why = "path too long";
			return -1;
		}
		if (c == '%') {
			int h, l, v;

			if (i + 2 >= len) {
				*why = "truncated percent-escape";
				return -1;
			}
			h = cm_hex_value((unsigned char)path[i + 1]);
			l = cm_hex_value((unsigned char)path[i + 2]);
			if (h < 0 || l < 0) {
				*why = "bad percent-escape";
				return -1;
			}
			v = h * 16 + l;
			if (v == '/' || v == '\\' || v == 0) {
				*why = "encoded '/', '\\' or NUL in the path";
				return -1;
			}
			if (unreserved(v)) {
				out[o++] = (char)v;
			} else {
				static const char digits[] = "0123456789ABCDEF";

				out[o++] = '%';
				out[o++] = digits[v >> 4];
				out[o++] = digits[v & 15];
			}
			i += 2;
			continue;
		}
		if (c == '\\') {
			*why = "backslash in the path";
			return -1;
		}
		if (c < 0x21 || c == 0x7f) {
			*why = "control byte or space in the path";
			return -1;
		}
		out[o++] = (char)c;
	}
	out[o] = '\0';

	/* Dot segments and repeated slashes, in place (the output never
	 * grows). Segments are copied from r to w. */
	{
		size_t r = 0, w = 0;
		size_t n = o;

		while (r < n) {
			size_t seg_start, seg_len;

			/* skip slashes */
			while (r < n && out[r] == '/')
				r++;
			seg_start = r;
			while (r < n && out[r] != '/')
				r++;
			seg_len = r - seg_start;
			if (seg_len == 0)
				break;
			if (seg_len == 1 && out[seg_start] == '.')
				continue;
			if (seg_len == 2 && out[seg_start] == '.' && out[seg_start + 1] == '.') {
				if (w == 0) {
					*why = "'..' above the root";
					return -1;
				}
				while (w > 0 && out[w - 1] != '/')
					w--;
				if (w > 0)
					w--; /* drop the slash before the segment */
				continue;
			}
			out[w++] = '/';
			memmove(out + w, out + seg_start, seg_len);
			w += seg_len;
		}
		/* a trailing slash (or "/." / "/..") keeps the directory form */
		if (w == 0 ||
		    (n > 0 &&
		     (out[n - 1] == '/' || (n >= 2 && out[n - 1] == '.' && out[n - 2] == '/') ||
		      (n >= 3 && out[n - 1] == '.' && out[n - 2] == '.' && out[n - 3] == '/'))))
			out[w++] = '/';
		out[w] = '\0';
	}
	return 0;
}

static bool has_prefix_ci(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

bool cm_http_is_identity_header(const char *name)
{
	return has_prefix_ci(name, "X-Certmap-") || strcasecmp(name, "Client-Cert") == 0 ||
	       strcasecmp(name, "Client-Cert-Chain") == 0 ||
	       has_prefix_ci(name, "X-Forwarded-Tls-Client-Cert") ||
	       has_prefix_ci(name, "X-SSL-") || has_prefix_ci(name, "X-Client-Cert");
}

bool cm_http_is_hop_header(const char *name)
{
	static const char *const hop[] = {
		"Connection",        "Keep-Alive",        "Proxy-Connection", "TE",
		"Trailer",           "Transfer-Encoding", "Upgrade",          "Proxy-Authorization",
		"Proxy-Authenticate"};

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (strcasecmp(name, hop[i]) == 0)
			return true;
	return false;
}

bool cm_http_connection_lists(const char *value, const char *name)
{
	size_t nlen = strlen(name);

	while (value != NULL && *value != '\0') {
		const char *end;
		size_t len;

		while (*value == ' ' || *value == '\t' || *value == ',')
			value++;
		end = value;
		while (*end != '\0' && *end != ',')
			end++;
		len = (size_t)(end - value);
		while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
			len--;
		if (len == nlen && len > 0 && strncasecmp(value, name, len) == 0)
			return true;
		value = end;
	}
	return false;
}

bool cm_http_valid_header_name(const char *name)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (name == NULL || *name == '\0')
		return false;
	for (const char *p = name; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && strchr(extra, *p) == NULL)
			return false;
	return true;
}
