/*
 * fuzz_config — cm_config_load() (config.c) on arbitrary bytes, for both
 * purposes: every input is loaded as CM_CONFIG_FOR_CHECK and then as
 * CM_CONFIG_FOR_DAEMON (both, rather than alternating, so that a crash
 * reproduces from its input alone).
 * The input is written to config.json in a scratch directory made at start
 * ($CERTMAP_FUZZ_SCRATCH or /tmp, "certmap-fuzz-config-XXXXXX", removed at
 * exit) that holds a copy of tests/unit/data/config at mode 0600, so the
 * relative file names of the seeds resolve, plus a few odd files: a 0644
 * secret, an empty secret and a FIFO (opening a path must never hang).
 * Paths in the input are otherwise arbitrary; the loader only opens and
 * stats them, except the bind password file, which it reads (bounded).
 * Invariants checked: failure gives 1..CM_CONFIG_MAX_ERRORS lines that all
 * start with the file name and no config; success gives no error lines and
 * the documented "required / at least one" fields.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/stat.h>

#include "certmap/config.h"
#include "fuzz_util.h"

static char scratch[PATH_MAX];
static char config_path[PATH_MAX];
static int config_fd = -1;

static void copy_file(const char *src, const char *dst)
{
	unsigned char buf[8192];
	int in = open(src, O_RDONLY | O_CLOEXEC);
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ssize_t r;

	if (in < 0 || out < 0)
		fuzz_setup_fail("copy %s to %s: %s", src, dst, strerror(errno));
	while ((r = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)r) != r)
			fuzz_setup_fail("write %s: %s", dst, strerror(errno));
	if (r < 0)
		fuzz_setup_fail("read %s: %s", src, strerror(errno));
	close(in);
	close(out);
}

static void copy_tree(const char *src, const char *dst)
{
	DIR *d = opendir(src);
	struct dirent *e;

	if (d == NULL)
		fuzz_setup_fail("%s: %s", src, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		char s[PATH_MAX], t[PATH_MAX];
		struct stat st;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(s, sizeof(s), "%s/%s", src, e->d_name);
		snprintf(t, sizeof(t), "%s/%s", dst, e->d_name);
		if (lstat(s, &st) != 0)
			fuzz_setup_fail("%s: %s", s, strerror(errno));
		if (S_ISDIR(st.st_mode)) {
			if (mkdir(t, 0700) != 0)
				fuzz_setup_fail("mkdir %s: %s", t, strerror(errno));
			copy_tree(s, t);
		} else if (S_ISREG(st.st_mode)) {
			copy_file(s, t);
		}
	}
	closedir(d);
}

static void write_file(const char *name, const char *content, mode_t mode)
{
	char p[PATH_MAX];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", scratch, name);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0 || fchmod(fd, mode) != 0)
		fuzz_setup_fail("%s: %s", p, strerror(errno));
	fuzz_fd_write(fd, (const uint8_t *)content, strlen(content));
	close(fd);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void remove_scratch(void)
{
	if (config_fd >= 0)
		close(config_fd);
	if (scratch[0] != '\0')
		nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("CERTMAP_FUZZ_SCRATCH");
	char p[PATH_MAX];

	(void)argc;
	(void)argv;
	snprintf(scratch, sizeof(scratch), "%s/certmap-fuzz-config-XXXXXX",
		 base != NULL && base[0] != '\0' ? base : "/tmp");
	if (mkdtemp(scratch) == NULL)
		fuzz_setup_fail("mkdtemp %s: %s", scratch, strerror(errno));
	atexit(remove_scratch);
	copy_tree(CERTMAP_FUZZ_CONFIG_DATA, scratch);
	write_file("public.pw", "secret\n", 0644);
	write_file("empty.pw", "", 0600);
	snprintf(p, sizeof(p), "%s/fifo", scratch);
	if (mkfifo(p, 0600) != 0)
		fuzz_setup_fail("mkfifo %s: %s", p, strerror(errno));
	snprintf(config_path, sizeof(config_path), "%s/config.json", scratch);
	config_fd = open(config_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (config_fd < 0)
		fuzz_setup_fail("%s: %s", config_path, strerror(errno));
	return 0;
}

static bool is_ldap_uri(const char *s)
{
	return strncasecmp(s, "ldap://", 7) == 0 || strncasecmp(s, "ldaps://", 8) == 0;
}

static void check_config(const struct cm_config *cfg, enum cm_config_purpose purpose)
{
	if (cfg->file == NULL || strcmp(cfg->file, config_path) != 0)
		fuzz_fail("cfg->file is not the file loaded");
	if (cfg->client_certificates.trusted_issuers.n < 1)
		fuzz_fail("loaded without a trusted issuer");
	for (size_t i = 0; i < cfg->client_certificates.trusted_issuers.n; i++)
		if (cfg->client_certificates.trusted_issuers.v[i] == NULL)
			fuzz_fail("trusted_issuers[%zu] is NULL", i);
	if (cfg->directory.uris.n < 1)
		fuzz_fail("loaded without a directory URI");
	for (size_t i = 0; i < cfg->directory.uris.n; i++)
		if (cfg->directory.uris.v[i] == NULL || !is_ldap_uri(cfg->directory.uris.v[i]))
			fuzz_fail("directory.uris[%zu] is not an ldap(s) URI", i);
	if (cfg->directory.base_dn == NULL)
		fuzz_fail("loaded without directory.base_dn");
	if (cfg->directory.bind_dn != NULL &&
	    (cfg->directory.bind_password == NULL || cfg->directory.bind_password[0] == '\0'))
		fuzz_fail("bind_dn without a (non-empty) bind password");
	for (size_t i = 0; i < cfg->n_locations; i++)
		if (cfg->locations[i].path == NULL || cfg->locations[i].path[0] != '/')
			fuzz_fail("locations[%zu].path does not start with '/'", i);
	if (purpose == CM_CONFIG_FOR_DAEMON) {
		if (cfg->n_listen < 1 || !cfg->upstream.present || cfg->upstream.url == NULL)
			fuzz_fail("daemon config without listen or upstream");
		for (size_t i = 0; i < cfg->n_listen; i++) {
			const struct cm_listen *l = &cfg->listen[i];

			if (l->address == NULL || l->certificate == NULL || l->key == NULL ||
			    l->port < 1 || l->port > 65535)
				fuzz_fail("listen[%zu] incomplete", i);
		}
	}
	(void)cm_config_location(cfg, "/");
	(void)cm_config_location(cfg, "/Microsoft-Server-ActiveSync/x");
	(void)cm_config_location(cfg, "/owa");
	(void)cm_dialect_name(cfg->directory.dialect);
	(void)cm_revocation_mode_name(cfg->client_certificates.revocation.mode);
}

static void load(enum cm_config_purpose purpose)
{
	struct cm_config_errors errs = {NULL, 0};
	struct cm_config *cfg = NULL;
	size_t flen = strlen(config_path);

	if (cm_config_load(config_path, purpose, &cfg, &errs) == 0) {
		if (cfg == NULL)
			fuzz_fail("success without a config");
		if (errs.n != 0)
			fuzz_fail("success with %zu error lines", errs.n);
		check_config(cfg, purpose);
		cm_config_free(cfg);
		return;
	}
	if (cfg != NULL)
		fuzz_fail("failure with a config");
	if (errs.n < 1 || errs.n > CM_CONFIG_MAX_ERRORS)
		fuzz_fail("failure with %zu error lines", errs.n);
	for (size_t i = 0; i < errs.n; i++)
		if (errs.lines[i] == NULL || strncmp(errs.lines[i], config_path, flen) != 0 ||
		    errs.lines[i][flen] != ':')
			fuzz_fail("error line %zu does not start with \"FILE:\": %s", i,
				  errs.lines[i] != NULL ? errs.lines[i] : "(null)");
	cm_config_errors_free(&errs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > CM_CONFIG_MAX_BYTES + 1)
		return 0; /* the limit itself is checked; larger says nothing new */
	fuzz_fd_write(config_fd, data, size);
	load(CM_CONFIG_FOR_CHECK);
	load(CM_CONFIG_FOR_DAEMON);
	return 0;
}
