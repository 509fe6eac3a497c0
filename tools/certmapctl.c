/*
 * certmapctl — administration and policy testing for certmap.
 * Subcommands live in their own files; this one dispatches.
 */
#include "certmapctl.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: certmapctl <command> [options]\n"
		"\n"
		"commands:\n"
		"  check    decide one client certificate as certmapd would (policy test harness)\n"
		"  publish  put user certificates on a group's members (and prune them elsewhere)\n"
		"  audit    list shared, expired, untrusted, revoked or misplaced certificates\n"
		"\n"
		"Run 'certmapctl <command> --help' for the command's options.\n"
		"  --version   print the version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("certmapctl %s\n", CERTMAP_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "check") == 0)
		return ctl_check(argc - 1, argv + 1);
	if (strcmp(argv[1], "publish") == 0)
		return ctl_publish(argc - 1, argv + 1);
	if (strcmp(argv[1], "audit") == 0)
		return ctl_audit(argc - 1, argv + 1);
	fprintf(stderr, "certmapctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return CTL_EXIT_USAGE;
}
