/*
 * fuzz_der_list — the PEM/DER certificate file reader cm_der_list_read()
 * (x509.c), as certmapctl check uses it on a user-supplied file, followed by
 * cm_cert_parse() on what it returns.
 * Input: the file's bytes (written to a memfd read back by path).
 * Invariants checked: success gives 1..CM_X509_MAX_CHAIN+1 non-NULL blobs;
 * a file without "-----BEGIN" comes back as one blob equal to the file.
 */
#include <stdbool.h>

#include "certmap/x509.h"
#include "fuzz_util.h"

static struct fuzz_file input;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_memfd_open(&input, "fuzz_der_list");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cm_der_list list;
	struct cm_err err = {{0}};
	struct cm_cert *cert = NULL;
	bool pem = memmem(data, size, "-----BEGIN", 10) != NULL;

	fuzz_fd_write(input.fd, data, size);
	if (cm_der_list_read(input.path, &list, &err) != 0) {
		if (err.msg[0] == '\0')
			fuzz_fail("cm_der_list_read failed without a message");
		if (list.n != 0 || list.der != NULL || list.len != NULL)
			fuzz_fail("cm_der_list_read failed but left a list behind");
		return 0;
	}
	if (list.n == 0 || list.n > CM_X509_MAX_CHAIN + 1)
		fuzz_fail("cm_der_list_read returned %zu blobs", list.n);
	for (size_t i = 0; i < list.n; i++)
		if (list.der[i] == NULL)
			fuzz_fail("blob %zu is NULL", i);
	if (!pem && (list.n != 1 || list.len[0] != size ||
		     (size > 0 && memcmp(list.der[0], data, size) != 0)))
		fuzz_fail("a non-PEM file did not come back as one blob equal to the file");

	if (cm_cert_parse((const unsigned char *const *)list.der, list.len, list.n, &cert, &err) ==
	    0) {
		char *s = cm_cert_serial_decimal(cert);

		free(s);
		cm_cert_free(cert);
	} else if (cert != NULL) {
		fuzz_fail("cm_cert_parse failed but set *out");
	}
	cm_der_list_free(&list);
	return 0;
}
