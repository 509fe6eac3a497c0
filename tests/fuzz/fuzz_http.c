/*
 * fuzz_http — request-path normalization and header classification
 * (common/http.c), the first code that sees a client's request line.
 * Input: bytes; the first byte selects a Connection-header split point, the
 * rest is the path.
 * Invariants checked: an accepted path starts with '/', has no "//", no
 * "." or ".." segment, no '\\', no control byte, no %2F/%5C/%00, and
 * normalizing it again gives the same string (idempotent).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "certmap/http.h"

static void fail(void)
{
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[CM_HTTP_MAX_PATH_BYTES + 16], again[CM_HTTP_MAX_PATH_BYTES + 16];
	const char *why = NULL;
	char *copy;

	if (size == 0)
		return 0;
	copy = malloc(size);
	if (copy == NULL)
		return 0;
	memcpy(copy, data + 1, size - 1);
	if (cm_http_normalize_path(copy, size - 1, out, sizeof(out), &why) == 0) {
		size_t n = strlen(out);

		if (out[0] != '/' || strstr(out, "//") || strstr(out, "/./") ||
		    strstr(out, "/../") || strchr(out, '\\') || strcasestr(out, "%2f") ||
		    strcasestr(out, "%5c") || strstr(out, "%00") ||
		    (n >= 2 && strcmp(out + n - 2, "/.") == 0) ||
		    (n >= 3 && strcmp(out + n - 3, "/..") == 0))
			fail();
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)out[i] < 0x21 || out[i] == 0x7f)
				fail();
		if (cm_http_normalize_path(out, n, again, sizeof(again), &why) != 0 ||
		    strcmp(out, again) != 0)
			fail();
	} else if (why == NULL) {
		fail();
	}
	/* header helpers on NUL-terminated copies */
	{
		char *s = malloc(size + 1);
		size_t split = data[0] % (size + 1);

		if (s != NULL) {
			memcpy(s, data, size);
			s[size] = '\0';
			(void)cm_http_is_identity_header(s);
			(void)cm_http_is_hop_header(s);
			(void)cm_http_valid_header_name(s);
			if (split < size) {
				s[split] = '\0';
				(void)cm_http_connection_lists(s, s + split + 1);
			}
			free(s);
		}
	}
	free(copy);
	return 0;
}
