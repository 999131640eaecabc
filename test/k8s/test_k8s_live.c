// SPDX-License-Identifier: Apache-2.0
/*
 * helper/k8s.c on a real event loop against an API server (test/lab/kapi.py,
 * started by test/k8s/run).  The runner changes the server's state and
 * restarts it; this program keeps informers running and, on request, checks
 * that every informer's cache equals what the server lists now and that
 * the handler heard exactly the changes the cache went through.
 *
 *   k8s_live --url URL [--token-file F] [--watch-timeout S] [--page-limit N]
 *            SPEC...        SPEC is PATH[|FIELD_SELECTOR[|LABEL_SELECTOR]]
 *
 * Commands on stdin, one per line; answers on stdout, one line each:
 *   check    "ok N objects" once all caches equal the server (polled for
 *            up to 20 s), else "FAIL what differs"
 *   status   one "status PATH key=value ..." line per informer, then "end"
 *   drop     the last informer's handler frees that informer when it is next
 *            called ("dropped SPEC"): freeing from inside a handler
 *   quit
 * Unprompted lines: "synced PATH N" when an informer's first list is in,
 * "VIOLATION what" when the handler hears something the cache contradicts.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>

#include <causeway/log.h>
#include <causeway/util.h>
#include "k8s.h"
#include "loop.h"

#define MAX_INF 16

/* What the handler has heard: key -> a copy of the object it was told last. */
struct shadow {
	char spec[256];
	char *path, *fsel, *lsel;
	struct cw_k8s_informer *inf;
	cJSON *seen;        /* object keyed by "ns/name" */
	int synced_calls;
};

struct ctx {
	struct cw_loop *loop;
	struct cw_k8s *k;
	const char *url, *token_file;
	struct shadow sh[MAX_INF];
	size_t n;           /* informers still running */
	size_t made;        /* informers made (their shadows are freed at exit) */
	bool drop;
	struct cw_timer *poll;
	struct cw_io *input;
	int64_t check_deadline;
	char last_diff[1024];
	unsigned long violations;
	char line[4096];
	size_t line_len;
};

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void violation(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(struct ctx *c, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->violations++;
	out("VIOLATION %s", msg);
}

static struct ctx *the_ctx;

static void on_event(struct cw_k8s_informer *inf, enum cw_k8s_event_type type, const cJSON *obj,
		     const cJSON *old, void *arg)
{
	struct shadow *s = arg;
	struct ctx *c = the_ctx;
	char key[CW_K8S_KEY_MAX];
	cJSON *prev;
	const cJSON *cached;

	if (cw_k8s_object_key(obj, key, sizeof(key), NULL, 0)) {
		violation(c, "%s: %s event for an object without a key", s->path, cw_k8s_event_name(type));
		return;
	}
	prev = cJSON_GetObjectItemCaseSensitive(s->seen, key);
	cached = cw_k8s_informer_get(inf, cJSON_GetStringValue(cJSON_GetObjectItem(
							 cJSON_GetObjectItem(obj, "metadata"), "namespace")),
				     cJSON_GetStringValue(cJSON_GetObjectItem(
					     cJSON_GetObjectItem(obj, "metadata"), "name")));
	switch (type) {
	case CW_K8S_ADDED:
		if (prev)
			violation(c, "%s: ADDED %s, which the handler already had", s->path, key);
		if (old)
			violation(c, "%s: ADDED %s with an old object", s->path, key);
		if (cached != obj)
			violation(c, "%s: ADDED %s is not what the cache holds", s->path, key);
		break;
	case CW_K8S_MODIFIED:
		if (!prev || !old)
			violation(c, "%s: MODIFIED %s, which the handler never had", s->path, key);
		else if (strcmp(cw_k8s_object_rv(prev), cw_k8s_object_rv(old)) != 0)
			violation(c, "%s: MODIFIED %s: old version %s, the handler had %s", s->path, key,
				  cw_k8s_object_rv(old), cw_k8s_object_rv(prev));
		if (cached != obj)
			violation(c, "%s: MODIFIED %s is not what the cache holds", s->path, key);
		break;
	case CW_K8S_DELETED:
		if (!prev || !old)
			violation(c, "%s: DELETED %s, which the handler never had", s->path, key);
		else if (strcmp(cw_k8s_object_rv(prev), cw_k8s_object_rv(old)) != 0)
			violation(c, "%s: DELETED %s: old version %s, the handler had %s", s->path, key,
				  cw_k8s_object_rv(old), cw_k8s_object_rv(prev));
		if (cached)
			violation(c, "%s: DELETED %s is still in the cache", s->path, key);
		break;
	default:
		violation(c, "%s: handler got a %s event", s->path, cw_k8s_event_name(type));
		return;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(s->seen, key);
	if (type != CW_K8S_DELETED)
		cJSON_AddItemToObject(s->seen, key, cJSON_Duplicate(obj, true));
	if (c->drop && c->n > 0 && s == &c->sh[c->n - 1]) {
		/* @obj and @old belong to the informer: nothing of them is used after this */
		c->drop = false;
		cw_k8s_informer_free(inf);
		s->inf = NULL;
		c->n--;
		out("dropped %s", s->spec);
	}
}

static void on_synced(struct cw_k8s_informer *inf, void *arg)
{
	struct shadow *s = arg;
	struct cw_k8s_informer_status st;

	s->synced_calls++;
	cw_k8s_informer_status(inf, &st);
	out("synced %s %zu", s->spec, st.objects);
}

/* ----- the server's view, read with a plain blocking GET ----- */

struct buf {
	char *data;
	size_t len;
};

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;
	char *nd = realloc(b->data, b->len + size * n + 1);

	if (!nd)
		return 0;
	memcpy(nd + b->len, p, size * n);
	b->data = nd;
	b->len += size * n;
	b->data[b->len] = '\0';
	return size * n;
}

static int server_list(struct ctx *c, const struct shadow *s, struct cw_k8s_list *l, char *err,
		       size_t errlen)
{
	char *url = cw_k8s_list_url(c->url, s->path, s->fsel, s->lsel, 0, NULL), *tok = NULL, *auth = NULL;
	struct curl_slist *h = NULL;
	struct buf b = { 0 };
	CURL *e = curl_easy_init();
	long status = 0;
	size_t toklen;
	int rc = -EIO;

	if (c->token_file && cw_read_file(c->token_file, &tok, &toklen) == 0) {
		while (toklen && (tok[toklen - 1] == '\n' || tok[toklen - 1] == ' '))
			tok[--toklen] = '\0';
		if (asprintf(&auth, "Authorization: Bearer %s", tok) < 0)
			auth = NULL;
		h = curl_slist_append(h, auth);
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 3000L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	if (curl_easy_perform(e) == CURLE_OK) {
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
		if (status == 200)
			rc = cw_k8s_parse_list(b.data, b.len, l, err, errlen);
		else
			snprintf(err, errlen, "GET %s: HTTP %ld", url, status);
	} else {
		snprintf(err, errlen, "GET %s failed", url);
	}
	curl_easy_cleanup(e);
	curl_slist_free_all(h);
	free(b.data);
	free(url);
	free(tok);
	free(auth);
	return rc;
}

/* A copy without kind/apiVersion: the server's list may spell them or not. */
static cJSON *bare(const cJSON *o)
{
	cJSON *d = cJSON_Duplicate(o, true);

	cJSON_DeleteItemFromObjectCaseSensitive(d, "kind");
	cJSON_DeleteItemFromObjectCaseSensitive(d, "apiVersion");
	return d;
}

static bool same_object(const cJSON *a, const cJSON *b)
{
	cJSON *x = bare(a), *y = bare(b);
	bool eq = cJSON_Compare(x, y, true);

	cJSON_Delete(x);
	cJSON_Delete(y);
	return eq;
}

static int count_obj(const cJSON *o, void *arg)
{
	(void)o;
	(*(size_t *)arg)++;
	return 0;
}

/* 0 and the number of objects if cache == server == what the handler heard. */
static int compare_all(struct ctx *c, size_t *total, char *diff, size_t len)
{
	*total = 0;
	for (size_t i = 0; i < c->n; i++) {
		struct shadow *s = &c->sh[i];
		struct cw_k8s_list l;
		size_t n_cache = 0, n_server = 0, n_seen = (size_t)cJSON_GetArraySize(s->seen);
		char err[512], key[CW_K8S_KEY_MAX];
		const cJSON *it;

		if (!cw_k8s_informer_synced(s->inf)) {
			snprintf(diff, len, "%s: not synced yet", s->spec);
			return -EAGAIN;
		}
		if (server_list(c, s, &l, err, sizeof(err))) {
			snprintf(diff, len, "%s: cannot list the server: %s", s->spec, err);
			return -EIO;
		}
		cw_k8s_informer_foreach(s->inf, count_obj, &n_cache);
		cJSON_ArrayForEach(it, l.items) {
			const cJSON *md = cJSON_GetObjectItem(it, "metadata");
			const char *ns = cJSON_GetStringValue(cJSON_GetObjectItem(md, "namespace"));
			const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(md, "name"));
			const cJSON *cached = cw_k8s_informer_get(s->inf, ns, name), *seen;

			n_server++;
			cw_k8s_object_key(it, key, sizeof(key), NULL, 0);
			seen = cJSON_GetObjectItemCaseSensitive(s->seen, key);
			if (!cached || !same_object(cached, it)) {
				snprintf(diff, len, "%s: %s is %s in the cache (server has version %s)",
					 s->spec, key, cached ? "different" : "missing",
					 cw_k8s_object_rv(it));
				cw_k8s_list_clear(&l);
				return -EAGAIN;
			}
			if (!seen || !same_object(seen, it)) {
				snprintf(diff, len, "%s: the handler %s %s", s->spec,
					 seen ? "was not told the last change of" : "never heard of", key);
				cw_k8s_list_clear(&l);
				return -EAGAIN;
			}
		}
		cw_k8s_list_clear(&l);
		if (n_cache != n_server || n_seen != n_server) {
			snprintf(diff, len, "%s: the server has %zu objects, the cache %zu, the handler %zu",
				 s->spec, n_server, n_cache, n_seen);
			return -EAGAIN;
		}
		if (s->synced_calls != 1) {
			snprintf(diff, len, "%s: synced was called %d times", s->spec, s->synced_calls);
			return -EPROTO;
		}
		*total += n_server;
	}
	return 0;
}

static void on_poll(struct cw_loop *loop, void *arg)
{
	struct ctx *c = arg;
	size_t total;

	(void)loop;
	if (compare_all(c, &total, c->last_diff, sizeof(c->last_diff)) == 0) {
		cw_timer_disarm(c->poll);
		if (c->violations)
			out("FAIL %lu handler violations", c->violations);
		else
			out("ok %zu objects", total);
		return;
	}
	if (cw_loop_now_ms() > c->check_deadline) {
		cw_timer_disarm(c->poll);
		out("FAIL %s", c->last_diff);
	}
}

static void print_status(struct ctx *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct cw_k8s_informer_status st;

		cw_k8s_informer_status(c->sh[i].inf, &st);
		out("status %s connected=%d synced=%d objects=%zu events=%lu relists=%lu "
		    "reconnects=%lu rv=%s last_sync=%lld last_event=%lld error=%s",
		    c->sh[i].spec, st.connected, st.synced, st.objects, st.events, st.relists,
		    st.reconnects, st.resource_version, (long long)st.last_sync,
		    (long long)st.last_event, st.last_error);
	}
	out("end");
}

static void command(struct ctx *c, const char *cmd)
{
	if (strcmp(cmd, "check") == 0) {
		c->check_deadline = cw_loop_now_ms() + 20000;
		c->last_diff[0] = '\0';
		cw_timer_arm(c->poll, 0);
	} else if (strcmp(cmd, "status") == 0) {
		print_status(c);
	} else if (strcmp(cmd, "drop") == 0) {
		c->drop = true;
	} else if (strcmp(cmd, "quit") == 0) {
		cw_loop_stop(c->loop);
	} else if (cmd[0]) {
		out("FAIL unknown command \"%s\"", cmd);
	}
}

static void on_stdin(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	struct ctx *c = arg;
	char buf[512];
	ssize_t n = read(fd, buf, sizeof(buf));

	(void)events;
	if (n <= 0) {
		cw_loop_stop(loop); /* the runner went away */
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] == '\n') {
			c->line[c->line_len] = '\0';
			command(c, c->line);
			c->line_len = 0;
		} else if (c->line_len + 1 < sizeof(c->line)) {
			c->line[c->line_len++] = buf[i];
		}
	}
}

static void on_signal(struct cw_loop *loop, int signo, void *arg)
{
	(void)signo;
	(void)arg;
	cw_loop_stop(loop);
}

static char *dup_part(const char *s, size_t n)
{
	return n ? strndup(s, n) : NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "token-file", required_argument, NULL, 't' },
		{ "watch-timeout", required_argument, NULL, 'w' },
		{ "page-limit", required_argument, NULL, 'p' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct cw_k8s_config cfg = { .backoff_base_ms = 100, .backoff_cap_ms = 1000,
				     .connect_timeout_ms = 2000 };
	static struct ctx c;
	char err[512];
	int o, rc = 1;

	cw_log_set_level(CW_LOG_INFO);
	while ((o = getopt_long(argc, argv, "u:t:w:p:v", opts, NULL)) != -1) {
		switch (o) {
		case 'u': cfg.url = c.url = optarg; break;
		case 't': cfg.token_file = c.token_file = optarg; break;
		case 'w': cfg.watch_timeout_s = atoi(optarg); break;
		case 'p': cfg.page_limit = atoi(optarg); break;
		case 'v': cw_log_set_level(CW_LOG_DEBUG); break;
		default: return 2;
		}
	}
	if (!c.url || optind >= argc || argc - optind > MAX_INF) {
		fprintf(stderr, "usage: k8s_live --url URL [--token-file F] [--watch-timeout S] "
				"[--page-limit N] PATH[|FIELD[|LABEL]]...\n");
		return 2;
	}
	the_ctx = &c;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (cw_loop_new(&c.loop) || cw_timer_add(c.loop, -1, 100, on_poll, &c, &c.poll) ||
	    cw_loop_signal(c.loop, SIGTERM, on_signal, NULL) ||
	    cw_loop_signal(c.loop, SIGINT, on_signal, NULL) ||
	    cw_io_add(c.loop, 0, EPOLLIN, on_stdin, &c, &c.input)) {
		fprintf(stderr, "k8s_live: cannot set up the loop\n");
		return 1;
	}
	if (cw_k8s_new(c.loop, &cfg, &c.k, err, sizeof(err))) {
		fprintf(stderr, "k8s_live: %s\n", err);
		return 1;
	}
	for (int i = optind; i < argc; i++) {
		struct shadow *s = &c.sh[c.n++];

		c.made++;
		const char *spec = argv[i], *p1 = strchr(spec, '|'), *p2 = p1 ? strchr(p1 + 1, '|') : NULL;
		struct cw_k8s_informer_opts io = { .handler = on_event, .synced = on_synced, .arg = s };

		snprintf(s->spec, sizeof(s->spec), "%s", spec);
		s->path = dup_part(spec, p1 ? (size_t)(p1 - spec) : strlen(spec));
		if (p1)
			s->fsel = dup_part(p1 + 1, p2 ? (size_t)(p2 - p1 - 1) : strlen(p1 + 1));
		if (p2)
			s->lsel = dup_part(p2 + 1, strlen(p2 + 1));
		s->seen = cJSON_CreateObject();
		io.path = s->path;
		io.field_selector = s->fsel;
		io.label_selector = s->lsel;
		if (cw_k8s_informer_new(c.k, &io, &s->inf)) {
			fprintf(stderr, "k8s_live: cannot watch %s\n", spec);
			return 1;
		}
	}
	out("running %zu informers", c.n);
	if (cw_loop_run(c.loop) == 0)
		rc = c.violations ? 1 : 0;
	/* free in an order that exercises both paths: one informer alone, the rest with the client */
	cw_k8s_informer_free(c.sh[0].inf);
	cw_k8s_free(c.k);
	for (size_t i = 0; i < c.made; i++) {
		cJSON_Delete(c.sh[i].seen);
		free(c.sh[i].path);
		free(c.sh[i].fsel);
		free(c.sh[i].lsel);
	}
	cw_timer_del(c.poll);
	cw_io_del(c.input);
	cw_loop_free(c.loop);
	curl_global_cleanup();
	return rc;
}
