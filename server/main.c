/*
 * certmapd — TLS front end that maps client certificates to directory
 * accounts and reverse-proxies permitted requests (see certmapd.h).
 * main: flags, config test (-t), listeners, privilege drop, signals
 * (SIGHUP reload, SIGUSR1 reopen logs, SIGTERM/SIGINT drain), shutdown.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "certmapd.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: certmapd --config FILE [-t]\n"
		   "\n"
		   "Terminates TLS, requires and validates client certificates, maps them to\n"
		   "directory accounts, applies the access policy and reverse-proxies permitted\n"
		   "requests (IIS-style answers and logs).\n"
		   "\n"
		   "  -c, --config FILE   JSON configuration\n"
		   "  -t, --test          check the configuration (and TLS files) and exit:\n"
		   "                      0 valid, 2 invalid (one line per error)\n"
		   "  -h, --help          this text\n"
		   "  -V, --version       print the version\n"
		   "\n"
		   "signals: SIGHUP reload (held requests continue; a failed reload keeps the old\n"
		   "config), SIGUSR1 reopen log files, SIGTERM/SIGINT drain and stop.\n");
}

static char *read_pem(const char *path, bool secret, char **error)
{
	struct cm_err err = {{0}};
	unsigned char *buf = NULL;
	size_t len = 0;

	if (secret) {
		char *s = NULL;

		if (cm_secret_read(path, &s, &err) != 0) {
			*error = strdup(err.msg);
			return NULL;
		}
		return s;
	}
	if (cm_file_read(path, 1024 * 1024, &buf, &len, &err) != 0) {
		*error = strdup(err.msg);
		return NULL;
	}
	return (char *)buf;
}

/* The trusted issuers, concatenated: MHD asks clients for certificates
 * from these CAs (and does nothing else with them). */
static char *trust_pem(const struct cm_config *cfg, char **error)
{
	char *all = strdup("");

	for (size_t i = 0; all != NULL && i < cfg->client_certificates.trusted_issuers.n; i++) {
		char *one = read_pem(cfg->client_certificates.trusted_issuers.v[i], false, error);
		char *joined;

		if (one == NULL) {
			free(all);
			return NULL;
		}
		joined = cm_strdup_printf("%s%s\n", all, one);
		free(all);
		free(one);
		all = joined;
	}
	if (all == NULL && *error == NULL)
		*error = strdup("out of memory");
	return all;
}

/* Checks that every listener's certificate and key load in GnuTLS. */
static int check_tls_files(const struct cm_config *cfg)
{
	int bad = 0;

	for (size_t i = 0; i < cfg->n_listen; i++) {
		char *error = NULL;
		char *cert = read_pem(cfg->listen[i].certificate, false, &error);
		char *key = cert ? read_pem(cfg->listen[i].key, true, &error) : NULL;
		gnutls_certificate_credentials_t cred = NULL;

		if (cert != NULL && key != NULL &&
		    gnutls_certificate_allocate_credentials(&cred) == GNUTLS_E_SUCCESS) {
			gnutls_datum_t c = {(unsigned char *)cert, (unsigned)strlen(cert)};
			gnutls_datum_t k = {(unsigned char *)key, (unsigned)strlen(key)};
			int rc = gnutls_certificate_set_x509_key_mem(cred, &c, &k,
								     GNUTLS_X509_FMT_PEM);

			if (rc < 0)
				error = cm_strdup_printf(
					"certificate %s and key %s do not load as a pair: %s",
					cfg->listen[i].certificate, cfg->listen[i].key,
					gnutls_strerror(rc));
			gnutls_certificate_free_credentials(cred);
		}
		if (error != NULL) {
			fprintf(stderr, "%s: $.listen[%zu]: %s\n", cfg->file, i, error);
			bad = 1;
		}
		free(error);
		free(cert);
		cm_secret_free(key);
	}
	return bad;
}

static int open_listener(struct listener *li, const struct cm_listen *l, char **error)
{
	struct sockaddr_in *a4 = (struct sockaddr_in *)&li->addr;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&li->addr;
	int one = 1;

	memset(&li->addr, 0, sizeof(li->addr));
	if (inet_pton(AF_INET, l->address, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)l->port);
		li->addrlen = sizeof(*a4);
	} else if (inet_pton(AF_INET6, l->address, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)l->port);
		li->addrlen = sizeof(*a6);
	} else {
		*error = cm_strdup_printf("listen address \"%s\" is not an IPv4 or IPv6 address",
					  l->address);
		return -1;
	}
	li->fd = socket(li->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (li->fd < 0) {
		*error = cm_strdup_printf("socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(li->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(li->fd, (struct sockaddr *)&li->addr, li->addrlen) != 0 ||
	    listen(li->fd, 4096) != 0) {
		*error = cm_strdup_printf("%s:%d: %s", l->address, l->port, strerror(errno));
		close(li->fd);
		li->fd = -1;
		return -1;
	}
	li->addrlen = sizeof(li->addr);
	getsockname(li->fd, (struct sockaddr *)&li->addr, &li->addrlen);
	snprintf(li->ip, sizeof(li->ip), "%s", l->address);
	li->port = ntohs(li->addr.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int drop_privileges(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (pw == NULL) {
		logmsg("error", "user \"%s\" does not exist", user);
		return -1;
	}
	if (geteuid() != 0) {
		if (geteuid() == pw->pw_uid)
			return 0;
		logmsg("error", "cannot switch to user \"%s\": not running as root", user);
		return -1;
	}
	if (setgroups(0, NULL) != 0 || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) != 0 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) != 0) {
		logmsg("error", "cannot switch to user \"%s\": %s", user, strerror(errno));
		return -1;
	}
	if (setresuid(0, 0, 0) == 0) {
		logmsg("error", "privileges could be regained after the switch: refusing to run");
		return -1;
	}
	return 0;
}

static void reload(struct server *srv)
{
	char *error = NULL;
	struct gen *old, *g;
	unsigned long id = atomic_fetch_add(&srv->next_gen_id, 1);

	pthread_mutex_lock(&srv->gen_lock);
	old = srv->gen;
	pthread_mutex_unlock(&srv->gen_lock);
	g = gen_new(srv->config_file, old->n_engines, id, &error);
	if (g == NULL) {
		logmsg("error", "reload failed, keeping the running configuration:\n%s",
		       error ? error : "?");
		free(error);
		cm_metrics_reload(srv->metrics, false);
		return;
	}
	pthread_mutex_lock(&srv->gen_lock);
	srv->gen = g;
	pthread_mutex_unlock(&srv->gen_lock);
	gen_unref(old);
	cm_metrics_reload(srv->metrics, true);
	logmsg("info", "configuration reloaded (generation %lu); decision cache emptied", id);
}

static void reopen_logs(struct server *srv)
{
	struct cm_err err = {{0}};

	if (srv->access != NULL && cm_accesslog_reopen(srv->access, &err) != 0)
		logmsg("error", "access log: %s", err.msg);
	if (srv->audit != NULL && cm_auditlog_reopen(srv->audit, &err) != 0)
		logmsg("error", "audit log: %s", err.msg);
	logmsg("info", "log files reopened");
}

static void free_listeners(struct server *srv)
{
	for (size_t i = 0; i < srv->n_listeners; i++) {
		struct listener *li = &srv->listeners[i];

		if (li->fd >= 0)
			close(li->fd);
		free(li->cert_pem);
		cm_secret_free(li->key_pem);
		free(li->trust_pem);
	}
	free(srv->listeners);
}

static int serve(struct server *srv)
{
	struct gen *g = srv->gen;
	const struct cm_config *cfg = g->cfg;
	sigset_t set;
	char *error = NULL;
	int n_loops, rc = 1;
	struct cm_err err = {{0}};

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads inherit the mask */
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	srv->metrics = cm_metrics_new();
	if (cfg->logging.access_log != NULL &&
	    cm_accesslog_open(cfg->logging.access_log, &srv->access, &err) != 0) {
		logmsg("error", "access log: %s", err.msg);
		return 1;
	}
	if (cfg->logging.audit_log != NULL &&
	    cm_auditlog_open(cfg->logging.audit_log, &srv->audit, &err) != 0) {
		logmsg("error", "audit log: %s", err.msg);
		return 1;
	}
	srv->tickets = cfg->server.tls_session_tickets;
	if (srv->tickets) {
		if (cfg->server.tls_ticket_key_file != NULL) {
			unsigned char *key = NULL;
			size_t len = 0;

			if (cm_file_read(cfg->server.tls_ticket_key_file, 4096, &key, &len, &err) !=
				    0 ||
			    len < 64) {
				logmsg("error", "%s: $.server.tls_ticket_key_file: %s", cfg->file,
				       key ? "expected at least 64 bytes" : err.msg);
				free(key);
				return 1;
			}
			srv->ticket_key.data = gnutls_malloc(64);
			memcpy(srv->ticket_key.data, key, 64);
			srv->ticket_key.size = 64;
			explicit_bzero(key, len);
			free(key);
		} else if (gnutls_session_ticket_key_generate(&srv->ticket_key) !=
			   GNUTLS_E_SUCCESS) {
			logmsg("error", "cannot generate a TLS session ticket key");
			return 1;
		}
	}
	srv->listeners = calloc(cfg->n_listen, sizeof(*srv->listeners));
	if (srv->listeners == NULL)
		return 1;
	srv->n_listeners = cfg->n_listen;
	for (size_t i = 0; i < cfg->n_listen; i++)
		srv->listeners[i].fd = -1;
	for (size_t i = 0; i < cfg->n_listen; i++) {
		struct listener *li = &srv->listeners[i];

		if (open_listener(li, &cfg->listen[i], &error) != 0 ||
		    (li->cert_pem = read_pem(cfg->listen[i].certificate, false, &error)) == NULL ||
		    (li->key_pem = read_pem(cfg->listen[i].key, true, &error)) == NULL ||
		    (li->trust_pem = trust_pem(cfg, &error)) == NULL) {
			logmsg("error", "%s: $.listen[%zu]: %s", cfg->file, i, error ? error : "?");
			free(error);
			return 1;
		}
	}
	srv->decider = decider_new(srv, cfg->server.decision_threads);
	if (srv->decider == NULL) {
		logmsg("error", "cannot start the decision threads");
		return 1;
	}
	n_loops =
		cfg->server.threads > 0 ? cfg->server.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (n_loops < 1)
		n_loops = 1;
	if (n_loops > CMD_MAX_LOOPS)
		n_loops = CMD_MAX_LOOPS;
	srv->n_loops = n_loops;
	for (int i = 0; i < n_loops; i++) {
		srv->loops[i] = loop_new(srv, i, &error);
		if (srv->loops[i] == NULL) {
			logmsg("error", "%s", error ? error : "cannot create an event loop");
			free(error);
			return 1;
		}
	}
	srv->admin = admin_start(srv, &error);
	if (error != NULL) {
		logmsg("error", "%s", error);
		free(error);
		return 1;
	}
	if (cfg->user != NULL && drop_privileges(cfg->user) != 0)
		return 1;
	for (int i = 0; i < n_loops; i++)
		if (loop_start(srv->loops[i]) != 0) {
			logmsg("error", "cannot start event loop %d", i);
			return 1;
		}
	for (size_t i = 0; i < srv->n_listeners; i++)
		logmsg("info", "listening on https://%s:%d (%d event loops, %d decision threads)",
		       srv->listeners[i].ip, srv->listeners[i].port, n_loops,
		       cfg->server.decision_threads);
	if (srv->admin != NULL) {
		const union MHD_DaemonInfo *di =
			MHD_get_daemon_info(srv->admin, MHD_DAEMON_INFO_BIND_PORT);

		logmsg("info", "admin listener on http://%s:%u", cfg->admin.address,
		       di ? di->port : (unsigned)cfg->admin.port);
	}
	logmsg("info", "certmapd %s ready", CERTMAP_VERSION);

	for (;;) {
		siginfo_t si;
		struct timespec one = {1, 0};
		int sig = sigtimedwait(&set, &si, &one);

		if (sig == SIGHUP)
			reload(srv);
		else if (sig == SIGUSR1)
			reopen_logs(srv);
		else if (sig == SIGTERM || sig == SIGINT)
			break;
	}

	/* Drain: no new connections; running requests get shutdown_timeout_s. */
	{
		struct gen *cur = server_gen(srv);
		double deadline = cm_now_ms() + cur->cfg->server.shutdown_timeout_s * 1000.0;

		gen_unref(cur);
		atomic_store(&srv->draining, true);
		for (int i = 0; i < srv->n_loops; i++)
			loop_stop_accepting(srv->loops[i]);
		/* New clients are refused at once instead of waiting in the backlog. */
		for (size_t i = 0; i < srv->n_listeners; i++) {
			if (srv->listeners[i].fd >= 0) {
				close(srv->listeners[i].fd);
				srv->listeners[i].fd = -1;
			}
		}
		logmsg("info", "draining %ld requests", atomic_load(&srv->requests_in_flight));
		while (atomic_load(&srv->requests_in_flight) > 0 && cm_now_ms() < deadline) {
			struct timespec ts = {0, 50 * 1000 * 1000};

			nanosleep(&ts, NULL);
		}
		if (atomic_load(&srv->requests_in_flight) > 0)
			logmsg("warning", "shutdown deadline: closing %ld requests",
			       atomic_load(&srv->requests_in_flight));
	}
	rc = 0;
	return rc;
}

static void shutdown_server(struct server *srv)
{
	if (srv->admin != NULL)
		MHD_stop_daemon(srv->admin);
	for (int i = 0; i < srv->n_loops; i++)
		loop_stop(srv->loops[i]);
	decider_free(srv->decider); /* finishes queued decisions first */
	for (int i = 0; i < srv->n_loops; i++)
		loop_free(srv->loops[i]);
	free_listeners(srv);
	gen_unref(srv->gen);
	cm_accesslog_close(srv->access);
	cm_auditlog_close(srv->audit);
	cm_metrics_free(srv->metrics);
	if (srv->ticket_key.data != NULL) {
		explicit_bzero(srv->ticket_key.data, srv->ticket_key.size);
		gnutls_free(srv->ticket_key.data);
	}
	pthread_mutex_destroy(&srv->gen_lock);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"test", no_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct server srv;
	const char *config = NULL;
	bool test = false;
	char *error = NULL;
	int c, rc;

	while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 't':
			test = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("certmapd %s\n", CERTMAP_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "certmapd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (config == NULL) {
		fprintf(stderr, "certmapd: --config FILE is required\n");
		usage(stderr);
		return 2;
	}
	memset(&srv, 0, sizeof(srv));
	srv.config_file = config;
	pthread_mutex_init(&srv.gen_lock, NULL);
	atomic_init(&srv.next_gen_id, 2);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "certmapd: libcurl initialization failed\n");
		return 1;
	}
	srv.gen = gen_new(config, 4, 1, &error);
	if (srv.gen != NULL && srv.gen->cfg->server.decision_threads != 4) {
		/* one engine per decision thread */
		struct gen *g = gen_new(config, srv.gen->cfg->server.decision_threads, 1, &error);

		gen_unref(srv.gen);
		srv.gen = g;
	}
	if (srv.gen == NULL) {
		fprintf(stderr, "%s\n", error ? error : "certmapd: cannot load the configuration");
		free(error);
		curl_global_cleanup();
		return 2;
	}
	if (test) {
		rc = check_tls_files(srv.gen->cfg) ? 2 : 0;
		if (rc == 0)
			printf("%s: configuration OK\n", config);
		gen_unref(srv.gen);
		pthread_mutex_destroy(&srv.gen_lock);
		curl_global_cleanup();
		return rc;
	}
	rc = serve(&srv);
	shutdown_server(&srv);
	curl_global_cleanup();
	if (rc == 0)
		logmsg("info", "stopped");
	return rc;
}
