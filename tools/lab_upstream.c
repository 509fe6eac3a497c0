/*
 * certmap-lab-upstream — a stand-in for the HTTP surface of Exchange ActiveSync, for the lab,
 * the integration tests and the proxy benchmark.
 *
 * What it owns: one libmicrohttpd daemon (internal thread pool, epoll, suspend/resume), one
 * timer thread that resumes held requests, and the request objects.
 *
 * Threading: MHD pool threads run every callback; the timer thread only pops its heap and calls
 * MHD_resume_connection(). Shared state is the heap + held counters (one mutex) and the request
 * counter (atomic). A request object is allocated in the URI log callback (the first callback
 * MHD makes for a request, and the only one that sees the raw request-target) and freed in the
 * completion callback; while its connection is suspended only the timer thread refers to it.
 *
 * Invariants: a body is never buffered (hashed as it streams); every suspended connection is in
 * the heap, so shutdown can resume them all before MHD_stop_daemon() (MHD panics otherwise).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#define LAB_MAX_CONNECTIONS 20000
#define LAB_MAX_FILE_BYTES (1024 * 1024)
#define LAB_CONN_MEMORY_BYTES (64 * 1024) /* fits a 23 KB Client-Cert header (nina-large) */
#define LAB_DEFAULT_HOLD_S 5.0
#define LAB_DOWNLOAD_BLOCK_BYTES (64 * 1024)
#define LAB_METHOD_MAX_BYTES 16
#define LAB_DRAIN_MAX_MS 3000 /* at shutdown, wait this long for released held responses */

static const char eas_path[] = "/Microsoft-Server-ActiveSync";
static const char eas_versions[] = "2.5,12.0,12.1,14.0,14.1,16.0,16.1";
static const char eas_commands[] =
	"Sync,SendMail,SmartForward,SmartReply,GetAttachment,GetHierarchy,CreateCollection,"
	"DeleteCollection,MoveCollection,FolderSync,FolderCreate,FolderDelete,FolderUpdate,"
	"MoveItems,GetItemEstimate,MeetingResponse,Search,Settings,Ping,ItemOperations,Provision,"
	"ResolveRecipients,ValidateCert,Find";
/* MS-ASHTTP 2.2.1.1.1.1.2: command code of Ping in the base64-encoded query form */
#define EAS_B64_CMD_PING 18

enum phase { PHASE_NEW, PHASE_BENCH, PHASE_BODY, PHASE_HELD, PHASE_DONE };

struct lab;

struct req {
	struct lab *lab;
	struct MHD_Connection *conn;
	uint64_t no;
	char *raw_uri;
	double t0_ms;                       /* monotonic, when MHD parsed the request line */
	double first_body_ms, last_body_ms; /* relative to t0_ms; < 0: no body */
	uint64_t body_bytes;
	EVP_MD_CTX *sha;
	json_t *headers;
	enum phase phase;
	double hold_s, hold_start_ms, held_ms, deadline_ms;
	unsigned status;
	bool draining; /* resumed by shutdown: main waits for its response to go out */
	char method[LAB_METHOD_MAX_BYTES];
};

struct lab {
	double max_hold_s;
	bool quiet;
	struct MHD_Response *bench_resp;
	atomic_uint_fast64_t requests;
	atomic_int draining; /* held requests released by shutdown and not yet completed */
	pthread_mutex_t mu;  /* guards everything below */
	pthread_cond_t cv;
	struct req **heap; /* min-heap on deadline_ms */
	size_t heap_len, heap_cap;
	size_t held_now, max_held;
	bool stopping;
};

struct download {
	uint64_t remaining;
	uint64_t x; /* xorshift64* state */
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void __attribute__((noreturn, format(printf, 1, 2))) fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("certmap-lab-upstream: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void __attribute__((format(printf, 2, 0))) mhd_logger(void *cls, const char *fmt, va_list ap)
{
	const struct lab *lab = cls;

	if (lab->quiet)
		return;
	fputs("certmap-lab-upstream: mhd: ", stderr);
	vfprintf(stderr, fmt, ap);
}

/* --- held requests: a min-heap of deadlines, one timer thread ---------------------------- */

static void heap_swap(struct req **h, size_t a, size_t b)
{
	struct req *t = h[a];

	h[a] = h[b];
	h[b] = t;
}

/* Caller holds lab->mu. Returns -1 when out of memory. */
static int heap_push(struct lab *lab, struct req *r)
{
	size_t i;

	if (lab->heap_len == lab->heap_cap) {
		size_t cap = lab->heap_cap ? lab->heap_cap * 2 : 256;
		struct req **h = realloc(lab->heap, cap * sizeof(*h));

		if (h == NULL)
			return -1;
		lab->heap = h;
		lab->heap_cap = cap;
	}
	i = lab->heap_len++;
	lab->heap[i] = r;
	while (i > 0 && lab->heap[(i - 1) / 2]->deadline_ms > lab->heap[i]->deadline_ms) {
		heap_swap(lab->heap, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	return 0;
}

/* Caller holds lab->mu and checked heap_len > 0. */
static struct req *heap_pop(struct lab *lab)
{
	struct req *top = lab->heap[0];
	size_t i = 0;

	lab->heap[0] = lab->heap[--lab->heap_len];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < lab->heap_len && lab->heap[l]->deadline_ms < lab->heap[m]->deadline_ms)
			m = l;
		if (r < lab->heap_len && lab->heap[r]->deadline_ms < lab->heap[m]->deadline_ms)
			m = r;
		if (m == i)
			break;
		heap_swap(lab->heap, i, m);
		i = m;
	}
	return top;
}

/* Caller holds lab->mu. */
static void release(struct lab *lab, struct req *r)
{
	lab->held_now--;
	MHD_resume_connection(r->conn);
}

static void *timer_main(void *arg)
{
	struct lab *lab = arg;

	pthread_mutex_lock(&lab->mu);
	while (!lab->stopping) {
		double now = now_ms();

		if (lab->heap_len == 0) {
			pthread_cond_wait(&lab->cv, &lab->mu);
		} else if (lab->heap[0]->deadline_ms <= now) {
			release(lab, heap_pop(lab));
		} else {
			struct timespec ts;
			double d = lab->heap[0]->deadline_ms;

			ts.tv_sec = (time_t)(d / 1e3);
			ts.tv_nsec = (long)((d - (double)ts.tv_sec * 1e3) * 1e6);
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&lab->cv, &lab->mu, &ts);
		}
	}
	/* Shutting down: answer every held request now. */
	while (lab->heap_len > 0) {
		struct req *r = heap_pop(lab);

		r->draining = true;
		atomic_fetch_add(&lab->draining, 1);
		release(lab, r);
	}
	pthread_mutex_unlock(&lab->mu);
	return NULL;
}

/* --- request objects ---------------------------------------------------------------------- */

static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct lab *lab = cls;
	struct req *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->lab = lab;
	r->conn = conn;
	r->t0_ms = now_ms();
	r->first_body_ms = r->last_body_ms = -1;
	r->no = atomic_fetch_add(&lab->requests, 1) + 1;
	r->raw_uri = strdup(uri);
	r->sha = EVP_MD_CTX_new();
	r->headers = json_object();
	if (r->raw_uri == NULL || r->sha == NULL || r->headers == NULL ||
	    EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL) != 1) {
		free(r->raw_uri);
		EVP_MD_CTX_free(r->sha);
		json_decref(r->headers);
		free(r);
		return NULL;
	}
	return r;
}

/* Printable ASCII copy for a log line (untrusted text). */
static void log_escape(char *out, size_t outsz, const char *in)
{
	size_t o = 0;

	for (; *in != '\0' && o + 5 < outsz; in++) {
		unsigned char c = (unsigned char)*in;

		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", c);
	}
	out[o] = '\0';
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct lab *lab = cls;
	struct req *r = *con_cls;

	(void)conn;
	if (r == NULL)
		return;
	if (!lab->quiet) {
		char uri[512];

		log_escape(uri, sizeof(uri), r->raw_uri);
		fprintf(stderr,
			"certmap-lab-upstream: #%llu %s %s -> %u body=%llu held_ms=%.0f%s\n",
			(unsigned long long)r->no, r->method[0] ? r->method : "-", uri, r->status,
			(unsigned long long)r->body_bytes, r->held_ms,
			toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (aborted)");
	}
	if (r->draining)
		atomic_fetch_sub(&lab->draining, 1);
	free(r->raw_uri);
	EVP_MD_CTX_free(r->sha);
	json_decref(r->headers);
	free(r);
	*con_cls = NULL;
}

/* A JSON string for bytes that may not be UTF-8: invalid bytes become %XX. */
static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	size_t len, o = 0;
	char *buf;

	if (j != NULL)
		return j;
	len = strlen(s);
	buf = malloc(len * 3 + 1);
	if (buf == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x80)
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, 4, "%%%02X", c);
	}
	buf[o] = '\0';
	j = json_string(buf);
	free(buf);
	return j;
}

static enum MHD_Result header_cb(void *cls, enum MHD_ValueKind kind, const char *key,
				 const char *value)
{
	json_t *headers = cls;
	json_t *old;

	(void)kind;
	if (key == NULL)
		return MHD_YES;
	if (value == NULL)
		value = "";
	old = json_object_get(headers, key);
	if (old != NULL) {
		/* Repeated field: combine as RFC 9110 §5.3 allows. */
		const char *ov = json_string_value(old);
		size_t n = strlen(ov) + strlen(value) + 3;
		char *both = malloc(n);

		if (both == NULL)
			return MHD_YES;
		snprintf(both, n, "%s, %s", ov, value);
		json_object_set_new(headers, key, jstr(both));
		free(both);
	} else {
		json_t *v = jstr(value);

		if (v != NULL)
			json_object_set_new(headers, key, v);
	}
	return MHD_YES;
}

/* --- responses ------------------------------------------------------------------------------ */

static json_t *ms_value(double ms)
{
	if (ms < 0)
		return json_null();
	return json_real(round(ms * 1000.0) / 1000.0);
}

static struct MHD_Response *json_response(json_t *doc)
{
	char *text = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15));
	struct MHD_Response *resp;

	json_decref(doc);
	if (text == NULL)
		return NULL;
	/* jansson allocates with malloc by default; MHD frees with free(). */
	resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(text);
		return NULL;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	return resp;
}

static struct MHD_Response *echo_response(struct req *r)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	const char *q = strchr(r->raw_uri, '?');
	char *path;
	json_t *doc;
	struct MHD_Response *resp;
	char no[24];

	if (EVP_DigestFinal_ex(r->sha, md, &mdlen) != 1)
		return NULL;
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	hex[2 * mdlen] = '\0';
	path = strndup(r->raw_uri, q ? (size_t)(q - r->raw_uri) : strlen(r->raw_uri));
	if (path == NULL)
		return NULL;
	doc = json_object();
	if (doc == NULL) {
		free(path);
		return NULL;
	}
	json_object_set_new(doc, "method", jstr(r->method));
	json_object_set_new(doc, "path", jstr(path));
	json_object_set_new(doc, "query", q ? jstr(q + 1) : json_null());
	json_object_set(doc, "headers", r->headers);
	json_object_set_new(doc, "body_bytes", json_integer((json_int_t)r->body_bytes));
	json_object_set_new(doc, "body_sha256", json_string(hex));
	json_object_set_new(doc, "first_body_byte_ms", ms_value(r->first_body_ms));
	json_object_set_new(doc, "last_body_byte_ms", ms_value(r->last_body_ms));
	json_object_set_new(doc, "held_ms", json_real(round(r->held_ms * 1000.0) / 1000.0));
	json_object_set_new(doc, "request_no", json_integer((json_int_t)r->no));
	free(path);
	resp = json_response(doc);
	if (resp != NULL) {
		snprintf(no, sizeof(no), "%llu", (unsigned long long)r->no);
		MHD_add_response_header(resp, "X-Lab-Request-No", no);
	}
	return resp;
}

static ssize_t download_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct download *d = cls;
	size_t n;

	(void)pos;
	if (d->remaining == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	n = max < d->remaining ? max : (size_t)d->remaining;
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v;

		d->x ^= d->x >> 12;
		d->x ^= d->x << 25;
		d->x ^= d->x >> 27;
		v = d->x * 0x2545F4914F6CDD1DULL;
		memcpy(buf + i, &v, n - i < 8 ? n - i : 8);
	}
	d->remaining -= n;
	return (ssize_t)n;
}

static struct MHD_Response *download_response(struct MHD_Connection *conn)
{
	const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "bytes");
	struct download *d;
	unsigned long long n;
	char *end;

	if (v == NULL || *v < '0' || *v > '9')
		return NULL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || *end != '\0')
		return NULL;
	d = malloc(sizeof(*d));
	if (d == NULL)
		return NULL;
	d->remaining = n;
	d->x = 0x9E3779B97F4A7C15ULL; /* fixed seed: the same N gives the same bytes */
	return MHD_create_response_from_callback(n, LAB_DOWNLOAD_BLOCK_BYTES, download_reader, d,
						 free);
}

static struct MHD_Response *stats_response(struct lab *lab)
{
	json_t *doc;
	size_t held, max;

	pthread_mutex_lock(&lab->mu);
	held = lab->held_now;
	max = lab->max_held;
	pthread_mutex_unlock(&lab->mu);
	doc = json_pack("{s:I,s:I,s:I}", "requests", (json_int_t)atomic_load(&lab->requests),
			"held_now", (json_int_t)held, "max_held", (json_int_t)max);
	return doc ? json_response(doc) : NULL;
}

static enum MHD_Result queue(struct req *r, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result ret;

	if (resp == NULL)
		return MHD_NO; /* out of memory: MHD closes the connection */
	r->status = status;
	r->phase = PHASE_DONE;
	ret = MHD_queue_response(r->conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Ping in either query form: "Cmd=Ping" (plain) or byte 1 == 18 (base64, MS-ASHTTP). */
static bool is_ping(const char *raw_uri)
{
	const char *q = strchr(raw_uri, '?');
	unsigned char dec[8];
	char b64[13];
	size_t qlen;

	if (q == NULL)
		return false;
	q++;
	for (const char *p = q; (p = strstr(p, "Cmd=")) != NULL; p += 4)
		if ((p == q || p[-1] == '&') && strncasecmp(p + 4, "Ping", 4) == 0 &&
		    (p[8] == '\0' || p[8] == '&'))
			return true;
	if (strchr(q, '=') != NULL && strchr(q, '&') != NULL)
		return false;
	/* base64 form: decode the first 12 characters (9 bytes) to read the command code */
	qlen = strlen(q);
	if (qlen < 4)
		return false;
	qlen = qlen < 12 ? qlen - qlen % 4 : 12;
	memcpy(b64, q, qlen);
	b64[qlen] = '\0';
	/* %2B / %2F / %3D may appear percent-encoded: only decode the unencoded prefix */
	for (size_t i = 0; i < qlen; i++)
		if (b64[i] == '%')
			return false;
	{
		unsigned char tmp[9];

		if (EVP_DecodeBlock(tmp, (const unsigned char *)b64, (int)qlen) < 2)
			return false;
		memcpy(dec, tmp, sizeof(dec));
	}
	return dec[1] == EAS_B64_CMD_PING;
}

/* Seconds to hold: X-Lab-Hold-Seconds if given (any request), else 5 s for a Ping; < 0: no. */
static double hold_seconds(struct lab *lab, struct req *r, const char *url)
{
	const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Lab-Hold-Seconds");
	double s = -1;

	if (v != NULL) {
		char *end;

		s = strtod(v, &end);
		if (end == v || !isfinite(s))
			s = LAB_DEFAULT_HOLD_S;
	} else if (strcmp(r->method, "POST") == 0 && strcmp(url, eas_path) == 0 &&
		   is_ping(r->raw_uri)) {
		s = LAB_DEFAULT_HOLD_S;
	}
	if (s > lab->max_hold_s)
		s = lab->max_hold_s;
	return s;
}

static unsigned forced_status(struct req *r)
{
	const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Lab-Status");
	unsigned long s;

	if (v == NULL)
		return MHD_HTTP_OK;
	s = strtoul(v, NULL, 10);
	return s >= 200 && s <= 599 ? (unsigned)s : MHD_HTTP_OK;
}

static enum MHD_Result respond(struct lab *lab, struct req *r, const char *url)
{
	struct MHD_Response *resp;
	bool get = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;

	if (get && strcmp(url, "/lab/stats") == 0)
		return queue(r, MHD_HTTP_OK, stats_response(lab));
	if (get && strcmp(url, "/lab/download") == 0) {
		resp = download_response(r->conn);
		if (resp != NULL)
			return queue(r, MHD_HTTP_OK, resp);
		return queue(r, MHD_HTTP_BAD_REQUEST, echo_response(r));
	}
	resp = echo_response(r);
	if (resp != NULL && strcmp(r->method, "OPTIONS") == 0 && strcmp(url, eas_path) == 0) {
		MHD_add_response_header(resp, "MS-ASProtocolVersions", eas_versions);
		MHD_add_response_header(resp, "MS-ASProtocolCommands", eas_commands);
		MHD_add_response_header(resp, "MS-Server-ActiveSync", "15.1");
		MHD_add_response_header(resp, "Allow", "OPTIONS,POST");
		MHD_add_response_header(resp, "Public", "OPTIONS,POST");
	}
	return queue(r, forced_status(r), resp);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
				 const char *method, const char *version, const char *upload_data,
				 size_t *upload_data_size, void **con_cls)
{
	struct lab *lab = cls;
	struct req *r = *con_cls;

	(void)version;
	if (r == NULL)
		return MHD_NO; /* the URI callback ran out of memory */
	switch (r->phase) {
	case PHASE_BENCH:
		if (*upload_data_size > 0) {
			*upload_data_size = 0;
			return MHD_YES;
		}
		r->phase = PHASE_DONE;
		return MHD_queue_response(conn, MHD_HTTP_OK, lab->bench_resp);
	case PHASE_NEW:
		snprintf(r->method, sizeof(r->method), "%s", method);
		if (strcmp(url, "/bench") == 0 &&
		    (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) {
			/* Answer on the final call: a response queued on the first
			 * one makes MHD close the connection (no keep-alive). */
			r->status = MHD_HTTP_OK;
			r->phase = PHASE_BENCH;
			return MHD_YES;
		}
		MHD_get_connection_values(conn, MHD_HEADER_KIND, header_cb, r->headers);
		r->phase = PHASE_BODY;
		return MHD_YES;
	case PHASE_BODY:
		if (*upload_data_size > 0) {
			double t = now_ms() - r->t0_ms;

			if (r->first_body_ms < 0)
				r->first_body_ms = t;
			r->last_body_ms = t;
			r->body_bytes += *upload_data_size;
			if (EVP_DigestUpdate(r->sha, upload_data, *upload_data_size) != 1)
				return MHD_NO;
			*upload_data_size = 0;
			return MHD_YES;
		}
		r->hold_s = hold_seconds(lab, r, url);
		if (r->hold_s > 0) {
			bool held = false;

			pthread_mutex_lock(&lab->mu);
			if (!lab->stopping) {
				r->hold_start_ms = now_ms();
				r->deadline_ms = r->hold_start_ms + r->hold_s * 1e3;
				/* suspend before the timer can see it, so resume never precedes it */
				MHD_suspend_connection(conn);
				if (heap_push(lab, r) == 0) {
					held = true;
					r->phase = PHASE_HELD;
					if (++lab->held_now > lab->max_held)
						lab->max_held = lab->held_now;
					if (lab->heap[0] == r)
						pthread_cond_signal(&lab->cv);
				} else {
					MHD_resume_connection(conn);
				}
			}
			pthread_mutex_unlock(&lab->mu);
			if (held)
				return MHD_YES;
		}
		return respond(lab, r, url);
	case PHASE_HELD:
		r->held_ms = now_ms() - r->hold_start_ms;
		return respond(lab, r, url);
	case PHASE_DONE:
		break;
	}
	return MHD_YES;
}

/* --- start-up ------------------------------------------------------------------------------- */

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (f == NULL)
		fatal("%s: %s", path, strerror(errno));
	buf = malloc(LAB_MAX_FILE_BYTES + 1);
	if (buf == NULL)
		fatal("out of memory");
	n = fread(buf, 1, LAB_MAX_FILE_BYTES + 1, f);
	if (ferror(f) || n > LAB_MAX_FILE_BYTES)
		fatal("%s: unreadable or larger than %d bytes", path, LAB_MAX_FILE_BYTES);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

/* "127.0.0.1:8080", "[::1]:0", "localhost:8080" */
static void parse_listen(const char *arg, struct sockaddr_storage *ss, socklen_t *sslen)
{
	char host[256];
	const char *port;
	struct addrinfo hints = {0}, *ai;
	int rc;

	if (arg[0] == '[') {
		const char *e = strchr(arg, ']');

		if (e == NULL || e[1] != ':' || (size_t)(e - arg - 1) >= sizeof(host))
			fatal("--listen %s: expected [ADDR]:PORT", arg);
		memcpy(host, arg + 1, (size_t)(e - arg - 1));
		host[e - arg - 1] = '\0';
		port = e + 2;
	} else {
		const char *c = strrchr(arg, ':');

		if (c == NULL || (size_t)(c - arg) >= sizeof(host))
			fatal("--listen %s: expected ADDR:PORT", arg);
		memcpy(host, arg, (size_t)(c - arg));
		host[c - arg] = '\0';
		port = c + 1;
	}
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (rc != 0)
		fatal("--listen %s: %s", arg, gai_strerror(rc));
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sslen = ai->ai_addrlen;
	freeaddrinfo(ai);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: certmap-lab-upstream --listen ADDR:PORT [--tls-cert F --tls-key F]\n"
		"                            [--max-hold SECONDS] [--threads N] [--quiet]\n"
		"\n"
		"A stand-in for Exchange ActiveSync's HTTP surface (lab, integration tests, bench).\n"
		"Prints 'listening on ADDR:PORT' when ready (PORT 0 picks a free port).\n"
		"\n"
		"  --listen ADDR:PORT   address to bind ([::1]:PORT for IPv6)\n"
		"  --tls-cert F, --tls-key F  serve HTTPS with this PEM chain and key\n"
		"  --max-hold S         cap on any hold, seconds (default 3600)\n"
		"  --threads N          MHD pool threads (default: number of CPUs)\n"
		"  --quiet              no per-request log lines on stderr\n"
		"\n"
		"Routes:\n"
		"  OPTIONS /Microsoft-Server-ActiveSync   200 + MS-ASProtocolVersions/-Commands,\n"
		"                                         MS-Server-ActiveSync, Allow, Public\n"
		"  POST /Microsoft-Server-ActiveSync?Cmd=Ping&...  (or base64 query, command 18)\n"
		"      held for X-Lab-Hold-Seconds (default 5, fractions allowed), then 200 echo\n"
		"  GET /lab/download?bytes=N   N pseudo-random bytes (xorshift64*, fixed seed)\n"
		"  GET /lab/stats              {\"requests\",\"held_now\",\"max_held\"}\n"
		"  GET /bench                  200 \"ok\\n\"\n"
		"  anything else               JSON echo: method, path, query (raw), headers,\n"
		"      body_bytes, body_sha256, first_body_byte_ms, last_body_byte_ms, held_ms,\n"
		"      request_no\n"
		"Request headers: X-Lab-Hold-Seconds: S holds any request S seconds;\n"
		"X-Lab-Status: CODE answers the echo with that status (200..599).\n"
		"SIGTERM/SIGINT: held requests are answered, then the daemon stops.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"tls-cert", required_argument, NULL, 'c'},
		{"tls-key", required_argument, NULL, 'k'},
		{"max-hold", required_argument, NULL, 'm'},
		{"threads", required_argument, NULL, 't'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static struct lab lab;
	const char *listen_arg = NULL, *cert_path = NULL, *key_path = NULL;
	char *cert_pem = NULL, *key_pem = NULL;
	long threads = sysconf(_SC_NPROCESSORS_ONLN);
	struct sockaddr_storage ss;
	socklen_t sslen;
	unsigned int flags;
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	pthread_t timer;
	pthread_condattr_t ca;
	sigset_t sigs;
	struct rlimit rl;
	struct MHD_OptionItem tls_opts[3] = {{MHD_OPTION_END, 0, NULL}};
	char host[NI_MAXHOST];
	int c, sig, rc;

	lab.max_hold_s = 3600;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end;

		switch (c) {
		case 'l':
			listen_arg = optarg;
			break;
		case 'c':
			cert_path = optarg;
			break;
		case 'k':
			key_path = optarg;
			break;
		case 'm':
			lab.max_hold_s = strtod(optarg, &end);
			if (*end != '\0' || !(lab.max_hold_s >= 0) || lab.max_hold_s > 86400 * 7)
				fatal("--max-hold %s: expected seconds (0..604800)", optarg);
			break;
		case 't':
			threads = strtol(optarg, &end, 10);
			if (*end != '\0' || threads < 1 || threads > 256)
				fatal("--threads %s: expected 1..256", optarg);
			break;
		case 'q':
			lab.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (listen_arg == NULL || optind != argc || (cert_path == NULL) != (key_path == NULL)) {
		usage(stderr);
		return 2;
	}
	if (threads < 1)
		threads = 1;
	parse_listen(listen_arg, &ss, &sslen);
	if (cert_path != NULL) {
		cert_pem = read_file(cert_path);
		key_pem = read_file(key_path);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* Signals: handled by sigwait() in main only; no thread gets them asynchronously. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	atomic_init(&lab.requests, 0);
	atomic_init(&lab.draining, 0);
	pthread_mutex_init(&lab.mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lab.cv, &ca);
	pthread_condattr_destroy(&ca);
	lab.bench_resp = MHD_create_response_from_buffer(3, (void *)"ok\n", MHD_RESPMEM_PERSISTENT);
	if (lab.bench_resp == NULL)
		fatal("out of memory");
	MHD_add_response_header(lab.bench_resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
	rc = pthread_create(&timer, NULL, timer_main, &lab);
	if (rc != 0)
		fatal("pthread_create: %s", strerror(rc));

	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
		MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (cert_pem != NULL) {
		/* only on a TLS daemon: MHD warns about HTTPS options on a plain one */
		flags |= MHD_USE_TLS;
		tls_opts[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, cert_pem};
		tls_opts[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, key_pem};
		tls_opts[2] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
	}
	d = MHD_start_daemon(
		flags, 0, NULL, NULL, access_cb, &lab, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, &lab,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_URI_LOG_CALLBACK, uri_cb,
		&lab, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, &lab, MHD_OPTION_THREAD_POOL_SIZE,
		(unsigned int)threads, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned int)LAB_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
		(size_t)LAB_CONN_MEMORY_BYTES, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096U,
		MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned int)(lab.max_hold_s + 3 * 3600), /* idle keep-alive, as EAS proxies */
		MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
	if (d == NULL)
		fatal("cannot start the HTTP daemon on %s", listen_arg);
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	if (getnameinfo((struct sockaddr *)&ss, sslen, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "?");
	printf(ss.ss_family == AF_INET6 ? "listening on [%s]:%u\n" : "listening on %s:%u\n", host,
	       info ? (unsigned)info->port : 0U);
	fflush(stdout);

	for (;;) {
		if (sigwait(&sigs, &sig) == 0 && (sig == SIGINT || sig == SIGTERM))
			break;
	}
	if (!lab.quiet)
		fprintf(stderr, "certmap-lab-upstream: signal %d, stopping\n", sig);

	pthread_mutex_lock(&lab.mu);
	lab.stopping = true; /* no new holds; the timer resumes every held request and exits */
	pthread_cond_signal(&lab.cv);
	pthread_mutex_unlock(&lab.mu);
	pthread_join(timer, NULL);
	{
		MHD_socket lfd = MHD_quiesce_daemon(d);
		double until = now_ms() + LAB_DRAIN_MAX_MS;

		if (lfd != MHD_INVALID_SOCKET)
			close(lfd);
		while (atomic_load(&lab.draining) > 0 && now_ms() < until)
			nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
	}
	MHD_stop_daemon(d);

	MHD_destroy_response(lab.bench_resp);
	free(lab.heap);
	pthread_cond_destroy(&lab.cv);
	pthread_mutex_destroy(&lab.mu);
	free(cert_pem);
	free(key_pem);
	return 0;
}
