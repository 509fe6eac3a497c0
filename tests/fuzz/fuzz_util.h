/*
 * fuzz_util — helpers shared by the libFuzzer targets in this directory:
 * invariant failures that abort (libFuzzer saves the input), a reusable
 * scratch file for loaders that take a path, and a strict UTF-8 check.
 * Everything is static inline: each target is one translation unit.
 * Threading: libFuzzer calls a target from one thread; no locking here.
 */
#ifndef CERTMAP_FUZZ_UTIL_H
#define CERTMAP_FUZZ_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* libFuzzer entry points (declared for -Wmissing-prototypes). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("certmap-fuzz: invariant violated: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* Set-up failures (missing fixture, no memfd): not a finding, stop at once. */
__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_setup_fail(const char *fmt,
										   ...)
{
	va_list ap;

	fputs("certmap-fuzz: set-up failed: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* A file the target rewrites for every input: a memfd, opened again by the
 * code under test through /proc/self/fd/N (a fresh offset each time). */
struct fuzz_file {
	int fd;
	char path[64];
};

static inline void fuzz_memfd_open(struct fuzz_file *f, const char *name)
{
	f->fd = memfd_create(name, MFD_CLOEXEC);
	if (f->fd < 0)
		fuzz_setup_fail("memfd_create: %s", strerror(errno));
	snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
}

/* Replaces the whole content of fd with data[0..size). */
static inline void fuzz_fd_write(int fd, const uint8_t *data, size_t size)
{
	size_t off = 0;

	if (ftruncate(fd, 0) != 0)
		fuzz_setup_fail("ftruncate: %s", strerror(errno));
	while (off < size) {
		ssize_t w = pwrite(fd, data + off, size - off, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fuzz_setup_fail("pwrite: %s", strerror(errno));
		off += (size_t)w;
	}
}

/* Length (1..4) of the well-formed UTF-8 sequence at s[0..n) per RFC 3629
 * (no overlong forms, no surrogates, nothing above U+10FFFF); 0 if invalid. */
static inline size_t fuzz_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t need;

	if (n == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		need = 2;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		need = 3;
		if (s[0] == 0xe0)
			lo = 0xa0; /* overlong */
		else if (s[0] == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		need = 4;
		if (s[0] == 0xf0)
			lo = 0x90; /* overlong */
		else if (s[0] == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return need;
}

#endif
