/* Shared helpers for unit tests: paths of the committed lab fixtures. */
#ifndef CERTMAP_TEST_FIXTURES_H
#define CERTMAP_TEST_FIXTURES_H

#include <stdio.h>

#define FIXTURE(name) (CERTMAP_FIXTURES "/" name)

/* Buffer-backed fixture path for table rows. */
static inline char *fixture_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", CERTMAP_FIXTURES, name);
	return buf;
}

#endif
