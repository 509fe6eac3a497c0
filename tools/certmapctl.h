/* certmapctl — subcommands (each returns the process exit code). */
#ifndef CERTMAPCTL_H
#define CERTMAPCTL_H

#define CTL_EXIT_ALLOW 0
#define CTL_EXIT_DENY 1
#define CTL_EXIT_USAGE 2

int ctl_check(int argc, char **argv);

#endif
