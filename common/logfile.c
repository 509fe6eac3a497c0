/*
 * logfile — buffered, reopenable line file shared by accesslog.c and
 * auditlog.c (common/logfile.h).
 * Owns: the fd, two CM_LOGFILE_BUFFER_BYTES buffers (pending lines, and the
 * snapshot being written) and the flusher thread.
 * Invariants: buf holds only whole lines; pending_since is set iff used > 0;
 * every write(2) happens with io held, so lines keep their order and a
 * reopen never interleaves with a flush.
 */
#include "logfile.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HEADER_MAX_BYTES 1024
#define WRITE_STALL_MS 1000 /* a non-blocking fd that stays full this long loses the data */

struct cm_logfile {
	char *path;
	cm_logfile_header_fn header;

	pthread_mutex_t io; /* fd, snap; taken before buf */
	int fd;
	char *snap;

	pthread_mutex_t buf; /* the fields below */
	pthread_cond_t cond; /* flusher: new pending data, or stop */
	char *data;
	size_t used;
	struct timespec pending_since; /* CLOCK_MONOTONIC */
	bool stop;

	pthread_t thread;
	atomic_uint_fast64_t write_errors;
};

static int open_fd(const char *path, struct cm_err *err)
{
	int fd =
		open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0640);

	if (fd < 0)
		cm_err_set(err, "%s: %s", path, strerror(errno));
	return fd;
}

/* Writes all of p or counts one error; never waits more than WRITE_STALL_MS
 * at a time on a full pipe. Called with io held. */
static void write_all(struct cm_logfile *lf, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(lf->fd, p, n);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = {.fd = lf->fd, .events = POLLOUT};

			if (poll(&pfd, 1, WRITE_STALL_MS) > 0)
				continue;
		}
		atomic_fetch_add(&lf->write_errors, 1);
		return;
	}
}

/* The header block, if the file is empty. Called with io held. */
static void header_if_empty(struct cm_logfile *lf)
{
	struct stat st;
	char hdr[HEADER_MAX_BYTES];
	size_t n;

	if (lf->header == NULL || fstat(lf->fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size != 0)
		return;
	n = lf->header(hdr, sizeof(hdr));
	if (n > 0 && n <= sizeof(hdr))
		write_all(lf, hdr, n);
}

/* Writes what is pending, then extra (a line too big for the buffer, with
 * its newline), in that order. Takes io, then buf. */
static void flush_with(struct cm_logfile *lf, const char *extra, size_t extra_len)
{
	size_t n;

	pthread_mutex_lock(&lf->io);
	pthread_mutex_lock(&lf->buf);
	n = lf->used;
	memcpy(lf->snap, lf->data, n);
	lf->used = 0;
	pthread_mutex_unlock(&lf->buf);
	if (n > 0 || extra_len > 0) {
		header_if_empty(lf);
		if (n > 0)
			write_all(lf, lf->snap, n);
		if (extra_len > 0)
			write_all(lf, extra, extra_len);
	}
	pthread_mutex_unlock(&lf->io);
}

static struct timespec deadline_of(struct timespec t)
{
	t.tv_sec += CM_LOGFILE_FLUSH_MS / 1000;
	t.tv_nsec += (long)(CM_LOGFILE_FLUSH_MS % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static bool reached(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static void *flusher(void *arg)
{
	struct cm_logfile *lf = arg;

	pthread_mutex_lock(&lf->buf);
	while (!lf->stop) {
		struct timespec deadline;

		if (lf->used == 0) {
			pthread_cond_wait(&lf->cond, &lf->buf);
			continue;
		}
		deadline = deadline_of(lf->pending_since);
		if (!reached(&deadline)) {
			pthread_cond_timedwait(&lf->cond, &lf->buf, &deadline);
			continue; /* re-check: stop, or flushed meanwhile by a writer */
		}
		pthread_mutex_unlock(&lf->buf);
		flush_with(lf, NULL, 0);
		pthread_mutex_lock(&lf->buf);
	}
	pthread_mutex_unlock(&lf->buf);
	return NULL;
}

int cm_logfile_open(const char *path, cm_logfile_header_fn header, struct cm_logfile **out,
		    struct cm_err *err)
{
	struct cm_logfile *lf = calloc(1, sizeof(*lf));
	pthread_condattr_t ca;
	int rc, stage = 0;

	*out = NULL;
	if (lf == NULL)
		goto nomem;
	lf->fd = -1;
	lf->header = header;
	atomic_init(&lf->write_errors, 0);
	lf->path = strdup(path);
	lf->snap = malloc(CM_LOGFILE_BUFFER_BYTES);
	lf->data = malloc(CM_LOGFILE_BUFFER_BYTES);
	if (lf->path == NULL || lf->snap == NULL || lf->data == NULL)
		goto nomem;
	lf->fd = open_fd(path, err);
	if (lf->fd < 0)
		goto cleanup;

	if ((rc = pthread_mutex_init(&lf->io, NULL)) != 0)
		goto pthread_fail;
	stage = 1;
	if ((rc = pthread_mutex_init(&lf->buf, NULL)) != 0)
		goto pthread_fail;
	stage = 2;
	if ((rc = pthread_condattr_init(&ca)) != 0)
		goto pthread_fail;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(&lf->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (rc != 0)
		goto pthread_fail;
	stage = 3;

	pthread_mutex_lock(&lf->io);
	header_if_empty(lf);
	pthread_mutex_unlock(&lf->io);

	if ((rc = pthread_create(&lf->thread, NULL, flusher, lf)) != 0)
		goto pthread_fail;
	*out = lf;
	return 0;

pthread_fail:
	cm_err_set(err, "%s: cannot start log writer: %s", path, strerror(rc));
	goto cleanup;
nomem:
	cm_err_set(err, "%s: out of memory", path);
cleanup:
	if (lf != NULL) {
		if (stage >= 3)
			pthread_cond_destroy(&lf->cond);
		if (stage >= 2)
			pthread_mutex_destroy(&lf->buf);
		if (stage >= 1)
			pthread_mutex_destroy(&lf->io);
		if (lf->fd >= 0)
			close(lf->fd);
		free(lf->data);
		free(lf->snap);
		free(lf->path);
		free(lf);
	}
	return -1;
}

void cm_logfile_write(struct cm_logfile *lf, const char *line, size_t len)
{
	if (lf == NULL)
		return;
	if (len + 1 > CM_LOGFILE_BUFFER_BYTES) {
		/* Larger than the buffer: write it directly, after what is pending. */
		char *copy = malloc(len + 1);

		if (copy == NULL) {
			atomic_fetch_add(&lf->write_errors, 1);
			return;
		}
		memcpy(copy, line, len);
		copy[len] = '\n';
		flush_with(lf, copy, len + 1);
		free(copy);
		return;
	}
	for (;;) {
		pthread_mutex_lock(&lf->buf);
		if (lf->used + len + 1 <= CM_LOGFILE_BUFFER_BYTES) {
			if (lf->used == 0) {
				clock_gettime(CLOCK_MONOTONIC, &lf->pending_since);
				pthread_cond_signal(&lf->cond);
			}
			memcpy(lf->data + lf->used, line, len);
			lf->data[lf->used + len] = '\n';
			lf->used += len + 1;
			pthread_mutex_unlock(&lf->buf);
			return;
		}
		pthread_mutex_unlock(&lf->buf);
		/* Full: write synchronously, then retry (other writers may race
		 * us for the space; each round frees a whole buffer). */
		flush_with(lf, NULL, 0);
	}
}

void cm_logfile_flush(struct cm_logfile *lf)
{
	if (lf != NULL)
		flush_with(lf, NULL, 0);
}

int cm_logfile_reopen(struct cm_logfile *lf, struct cm_err *err)
{
	int fd, old;

	if (lf == NULL) {
		cm_err_set(err, "no log file");
		return -1;
	}
	fd = open_fd(lf->path, err);
	if (fd < 0)
		return -1;
	/* Lines logged before the reopen belong to the old (rotated) file. */
	flush_with(lf, NULL, 0);
	pthread_mutex_lock(&lf->io);
	old = lf->fd;
	lf->fd = fd;
	header_if_empty(lf);
	pthread_mutex_unlock(&lf->io);
	close(old);
	return 0;
}

uint64_t cm_logfile_write_errors(struct cm_logfile *lf)
{
	return lf == NULL ? 0 : (uint64_t)atomic_load(&lf->write_errors);
}

void cm_logfile_close(struct cm_logfile *lf)
{
	if (lf == NULL)
		return;
	pthread_mutex_lock(&lf->buf);
	lf->stop = true;
	pthread_cond_signal(&lf->cond);
	pthread_mutex_unlock(&lf->buf);
	pthread_join(lf->thread, NULL);
	flush_with(lf, NULL, 0);
	close(lf->fd);
	pthread_cond_destroy(&lf->cond);
	pthread_mutex_destroy(&lf->buf);
	pthread_mutex_destroy(&lf->io);
	free(lf->data);
	free(lf->snap);
	free(lf->path);
	free(lf);
}
