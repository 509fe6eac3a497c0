/*
 * fuzz_filter_escape — LDAP filter value escaping and DN comparison
 * (directory.c): cm_dir_escape_value() on the whole input, cm_dir_dn_equal()
 * on its two halves (each a NUL-terminated copy).
 * Invariants checked: the escaped value has no '*', '(', ')', '\\' or NUL
 * except as "\xx" (two hex digits) escapes, and unescaping it gives back the
 * input byte for byte (binary-safe, RFC 4515); DN equality is symmetric.
 */
#include <stdbool.h>

#include "certmap/directory.h"
#include "fuzz_util.h"

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void check_escape(const uint8_t *data, size_t size)
{
	char *esc = cm_dir_escape_value(data, size);
	size_t n, o = 0;

	if (esc == NULL)
		fuzz_fail("cm_dir_escape_value returned NULL for %zu bytes", size);
	n = strlen(esc);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)esc[i];
		int byte;

		if (c == '*' || c == '(' || c == ')')
			fuzz_fail("unescaped '%c' at %zu of the escaped value", c, i);
		if (c == '\\') {
			int h = i + 1 < n ? hex_value((unsigned char)esc[i + 1]) : -1;
			int l = i + 2 < n ? hex_value((unsigned char)esc[i + 2]) : -1;

			if (h < 0 || l < 0)
				fuzz_fail("'\\' at %zu is not followed by two hex digits", i);
			byte = h * 16 + l;
			i += 2;
		} else {
			byte = c;
		}
		if (o >= size || (uint8_t)byte != data[o])
			fuzz_fail("escaped value does not decode to the input (at input byte %zu)",
				  o);
		o++;
	}
	if (o != size)
		fuzz_fail("escaped value decodes to %zu bytes, input has %zu (NUL left unescaped?)",
			  o, size);
	free(esc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t half = size / 2;
	char *a = malloc(half + 1), *b = malloc(size - half + 1);
	bool ab, ba;

	check_escape(data, size);
	if (a == NULL || b == NULL) {
		free(a);
		free(b);
		return 0;
	}
	memcpy(a, data, half);
	a[half] = '\0';
	memcpy(b, data + half, size - half);
	b[size - half] = '\0';
	ab = cm_dir_dn_equal(a, b);
	ba = cm_dir_dn_equal(b, a);
	if (ab != ba)
		fuzz_fail("cm_dir_dn_equal is not symmetric: (\"%s\", \"%s\") = %d, reversed = %d",
			  a, b, ab, ba);
	(void)cm_dir_dn_equal(a, NULL);
	free(a);
	free(b);
	return 0;
}
