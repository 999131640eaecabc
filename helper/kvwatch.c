// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <causeway/log.h>
#include <causeway/util.h>
#include "kvwatch.h"

#define MAX_MESSAGE (32u << 20)
#define BACKOFF_BASE_MS 200
#define BACKOFF_CAP_MS 10000
#define LIST_PAGE 1000
#define LIST_TIMEOUT_MS 15000 /* one page */

/* --- the mirror: key -> pair, chained hash table ------------------------ */

struct entry {
	struct cw_kv_pair kv;
	struct entry *next;
	bool seen;              /* marked during a relist */
};

struct mirror {
	struct entry **slots;
	size_t n_slots, n;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static struct entry *mirror_get(const struct mirror *m, const char *key)
{
	if (!m->n_slots)
		return NULL;
	for (struct entry *e = m->slots[hash_str(key) % m->n_slots]; e; e = e->next)
		if (strcmp(e->kv.key, key) == 0)
			return e;
	return NULL;
}

static struct entry **mirror_find(struct mirror *m, const char *key)
{
	struct entry **p;

	if (!m->n_slots)
		return NULL;
	for (p = &m->slots[hash_str(key) % m->n_slots]; *p; p = &(*p)->next)
		if (strcmp((*p)->kv.key, key) == 0)
			return p;
	return NULL;
}

static int mirror_grow(struct mirror *m)
{
	size_t n = m->n_slots ? m->n_slots * 2 : 64;
	struct entry **slots = calloc(n, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_slots; i++)
		while (m->slots[i]) {
			struct entry *e = m->slots[i];
			size_t h = hash_str(e->kv.key) % n;

			m->slots[i] = e->next;
			e->next = slots[h];
			slots[h] = e;
		}
	free(m->slots);
	m->slots = slots;
	m->n_slots = n;
	return 0;
}

/* Takes ownership of @kv's strings on success. */
static int mirror_insert(struct mirror *m, struct cw_kv_pair *kv)
{
	struct entry *e;
	size_t h;

	if (m->n + 1 > m->n_slots && mirror_grow(m))
		return -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->kv = *kv;
	memset(kv, 0, sizeof(*kv));
	h = hash_str(e->kv.key) % m->n_slots;
	e->next = m->slots[h];
	m->slots[h] = e;
	m->n++;
	return 0;
}

static void mirror_clear(struct mirror *m)
{
	for (size_t i = 0; i < m->n_slots; i++)
		while (m->slots[i]) {
			struct entry *e = m->slots[i];

			m->slots[i] = e->next;
			cw_kv_pair_clear(&e->kv);
			free(e);
		}
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* --- the JSON message splitter ------------------------------------------ */

void cw_json_splitter_clear(struct cw_json_splitter *s)
{
	free(s->data);
	memset(s, 0, sizeof(*s));
}

int cw_json_split(struct cw_json_splitter *s, const char *buf, size_t len, size_t max,
		  cw_json_msg_fn fn, void *arg)
{
	size_t start = 0;
	int rc;

	rc = cw_buf_append(&s->data, &s->len, &s->cap, 4096, buf, len);
	if (rc)
		return rc;

	/* Skip what lies between messages (newlines, spaces). */
	for (size_t i = s->scanned; i < s->len; i++) {
		char c = s->data[i];

		if (s->depth == 0 && c != '{') {
			if (c != ' ' && c != '\n' && c != '\r' && c != '\t')
				return -EINVAL;
			start = i + 1;
			continue;
		}
		if (s->in_string) {
			if (s->escaped)
				s->escaped = false;
			else if (c == '\\')
				s->escaped = true;
			else if (c == '"')
				s->in_string = false;
			continue;
		}
		if (c == '"') {
			s->in_string = true;
		} else if (c == '{' || c == '[') {
			if (s->depth == 0)
				start = i;
			s->depth++;
		} else if (c == '}' || c == ']') {
			if (--s->depth == 0) {
				/* The limit holds however the bytes were cut. */
				if (i + 1 - start > max)
					return -EMSGSIZE;
				rc = fn(s->data + start, i + 1 - start, arg);
				if (rc)
					return rc;
				start = i + 1;
			}
		}
	}
	/* Keep only the unfinished message. */
	if (start > 0) {
		memmove(s->data, s->data + start, s->len - start);
		s->len -= start;
	}
	s->scanned = s->len;
	if (s->len > max)
		return -EMSGSIZE;
	return 0;
}

/* --- the watch ------------------------------------------------------------ */

struct cw_kv_watch {
	struct cw_loop *loop;
	struct cw_kv *kv;
	char *prefix;
	const struct cw_kv_watch_ops *ops;
	void *arg;

	struct mirror mirror;
	int64_t revision;
	bool synced, need_list, streaming;
	unsigned int attempt;
	struct cw_timer *timer;
	struct cw_kv_waiter token;  /* queued while the client's token is on its way */

	CURL *easy;
	struct curl_slist *hdrs;
	struct cw_json_splitter split;
	int stream_rc;          /* why the write callback aborted */

	/* the listing, one page per request on the loop, never blocking it */
	CURL *list_easy;
	struct curl_slist *list_hdrs;
	char *list_buf;
	size_t list_len, list_cap;
	char *list_from;        /* first key of the next page; NULL: no listing under way */
	int64_t list_rev;       /* the revision every page is read at (the first page's) */
	bool list_next;         /* the timer asks for the next page */

	int64_t last_sync_ms;
	uint64_t events, relists, reconnects;
	char error[512];
};

__attribute__((format(printf, 2, 3)))
static void watch_error(struct cw_kv_watch *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
	pr_warn("kvstore: watch %s: %s", w->prefix, w->error);
}

static void apply_put(struct cw_kv_watch *w, struct cw_kv_pair *kv)
{
	struct entry **p = mirror_find(&w->mirror, kv->key);

	if (p) {
		struct cw_kv_pair old = (*p)->kv;

		if (old.mod_revision == kv->mod_revision && old.value_len == kv->value_len &&
		    memcmp(old.value, kv->value, kv->value_len) == 0) {
			(*p)->seen = true;
			return;
		}
		(*p)->kv = *kv;
		(*p)->seen = true;
		memset(kv, 0, sizeof(*kv));
		if (w->ops->put)
			w->ops->put(w->arg, &(*p)->kv, &old);
		cw_kv_pair_clear(&old);
		return;
	}
	const char *key = kv->key; /* moves into the mirror with the pair */

	if (mirror_insert(&w->mirror, kv)) {
		watch_error(w, "out of memory mirroring %s", key);
		return;
	}
	p = mirror_find(&w->mirror, key);
	if (p) {
		(*p)->seen = true;
		if (w->ops->put)
			w->ops->put(w->arg, &(*p)->kv, NULL);
	}
}

static void apply_delete(struct cw_kv_watch *w, const char *key)
{
	struct entry **p = mirror_find(&w->mirror, key), *e;

	if (!p)
		return;
	e = *p;
	*p = e->next;
	w->mirror.n--;
	if (w->ops->del)
		w->ops->del(w->arg, &e->kv);
	cw_kv_pair_clear(&e->kv);
	free(e);
}

static int list_one(const struct cw_kv_pair *kv, void *arg)
{
	struct cw_kv_watch *w = arg;
	struct cw_kv_pair copy = *kv;

	copy.key = strdup(kv->key);
	copy.value = malloc(kv->value_len + 1);
	if (!copy.key || !copy.value) {
		cw_kv_pair_clear(&copy);
		return -ENOMEM;
	}
	memcpy(copy.value, kv->value, kv->value_len + 1);
	apply_put(w, &copy);
	cw_kv_pair_clear(&copy);
	return 0;
}

/*
 * The listing: the prefix read page by page at one revision, each page a
 * request on the loop's curl multi handle, so a large store never holds up
 * the loop.  Puts are delivered as pages arrive (new or changed keys), the
 * deletes for keys the listing lacks once it is complete; then the stream
 * starts from the revision after it.  Any failure starts the listing over
 * after a backoff.
 */
static void list_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg);
static void schedule(struct cw_kv_watch *w, bool now);

static size_t on_list_data(char *ptr, size_t size, size_t n, void *arg)
{
	struct cw_kv_watch *w = arg;
	size_t len = size * n;

	if (w->list_len + len + 1 > MAX_MESSAGE ||
	    cw_buf_append(&w->list_buf, &w->list_len, &w->list_cap, 65536, ptr, len))
		return 0; /* aborts the transfer */
	return len;
}

/*
 * Ends a listing (done, failed, or the watch freed): its handle, its
 * connection and its buffer go, so a synced watch holds one connection
 * (the stream) and no page.  Never called while a page is in flight but
 * from cw_kv_watch_free, which removes the handle from the loop first.
 */
static void list_abort(struct cw_kv_watch *w)
{
	free(w->list_from);
	w->list_from = NULL;
	w->list_next = false;
	curl_slist_free_all(w->list_hdrs);
	w->list_hdrs = NULL;
	if (w->list_easy) {
		cw_loop_curl_remove(w->loop, w->list_easy);
		curl_easy_cleanup(w->list_easy);
		w->list_easy = NULL;
	}
	free(w->list_buf);
	w->list_buf = NULL;
	w->list_len = w->list_cap = 0;
}

static int list_page(struct cw_kv_watch *w)
{
	char end[1024], *body;
	int rc;

	rc = cw_kvp_prefix_end(w->prefix, end, sizeof(end));
	if (rc)
		return rc;
	body = cw_kvp_range_req(w->list_from, end, LIST_PAGE, w->list_rev, false);
	if (!body)
		return -ENOMEM;
	curl_easy_reset(w->list_easy);
	curl_slist_free_all(w->list_hdrs);
	w->list_hdrs = NULL;
	rc = cw_kv_stream_setup(w->kv, w->list_easy, "/v3/kv/range", body, &w->list_hdrs);
	free(body);
	if (rc) {
		if (rc != -EAGAIN) /* a token on its way is no error */
			watch_error(w, "list: %s", cw_kv_error(w->kv));
		return rc;
	}
	w->list_len = 0;
	curl_easy_setopt(w->list_easy, CURLOPT_WRITEFUNCTION, on_list_data);
	curl_easy_setopt(w->list_easy, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(w->list_easy, CURLOPT_TIMEOUT_MS, (long)LIST_TIMEOUT_MS);
	return cw_loop_curl_add(w->loop, w->list_easy, list_done, w);
}

static int list_start(struct cw_kv_watch *w)
{
	for (size_t i = 0; i < w->mirror.n_slots; i++)
		for (struct entry *e = w->mirror.slots[i]; e; e = e->next)
			e->seen = false;
	list_abort(w);
	w->list_rev = 0;
	w->list_from = strdup(w->prefix);
	w->list_easy = curl_easy_init();
	if (!w->list_from || !w->list_easy)
		return -ENOMEM;
	return list_page(w);
}

/* The listing is complete: deletes for what it lacked, then the stream. */
static void list_finish(struct cw_kv_watch *w)
{
	for (size_t i = 0; i < w->mirror.n_slots; i++) {
		struct entry *e = w->mirror.slots[i];

		while (e) {
			struct entry *next = e->next;

			if (!e->seen) {
				char *key = strdup(e->kv.key);

				if (key)
					apply_delete(w, key);
				free(key);
			}
			e = next;
		}
	}
	list_abort(w);
	w->revision = w->list_rev;
	w->need_list = false;
	w->relists++;
	w->last_sync_ms = cw_loop_now_ms();
	w->error[0] = '\0';
	cw_timer_arm(w->timer, 0); /* the stream, from the next turn */
	if (!w->synced) {
		w->synced = true;
		if (w->ops->synced)
			w->ops->synced(w->arg);
	}
}

static void list_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg)
{
	struct cw_kv_watch *w = arg;
	struct cw_kv_range_resp r;
	struct cw_kv_error e;
	long status = 0;
	char err[256];
	bool more;
	int rc = 0;

	(void)loop;
	if (res != CURLE_OK) {
		watch_error(w, "%s: list: %s", cw_kv_endpoint(w->kv), curl_easy_strerror(res));
		cw_kv_stream_failed(w->kv, false);
		goto retry;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		if (w->list_buf && cw_kvp_parse_error(w->list_buf, w->list_len, &e)) {
			watch_error(w, "%s: list: etcd: %s (code %d)", cw_kv_endpoint(w->kv), e.message,
				    e.code);
			if (cw_kv_token_refused(&e))
				cw_kv_stream_failed(w->kv, true);
		} else {
			watch_error(w, "%s: list: HTTP %ld", cw_kv_endpoint(w->kv), status);
			cw_kv_stream_failed(w->kv, false);
		}
		goto retry;
	}
	if (cw_kvp_parse_range(w->list_buf ? w->list_buf : "", w->list_len, &r, err, sizeof(err))) {
		watch_error(w, "list: %s", err);
		goto retry;
	}
	if (!w->list_rev)
		w->list_rev = r.revision;
	for (size_t i = 0; i < r.n && !rc; i++)
		rc = list_one(&r.kvs[i], w);
	more = r.more && r.n > 0;
	if (!rc && more) {
		/* the next page: the smallest text key after the last one */
		char *from = malloc(strlen(r.kvs[r.n - 1].key) + 2);

		if (from) {
			sprintf(from, "%s%c", r.kvs[r.n - 1].key, 1);
			free(w->list_from);
			w->list_from = from;
		} else {
			rc = -ENOMEM;
		}
	}
	cw_kvp_range_clear(&r);
	if (rc)
		goto retry;
	if (more) {
		/* Not from inside curl's completion: from the next loop turn. */
		w->list_next = true;
		cw_timer_arm(w->timer, 0);
		return;
	}
	list_finish(w);
	return;
retry:
	list_abort(w);
	schedule(w, false);
}

static int on_message(const char *msg, size_t len, void *arg)
{
	struct cw_kv_watch *w = arg;
	struct cw_kv_watch_resp r;
	struct cw_kv_error e;
	char err[256];

	if (cw_kvp_parse_watch(msg, len, &r, err, sizeof(err))) {
		if (cw_kvp_parse_error(msg, len, &e)) {
			watch_error(w, "%s: etcd: %s (code %d)", cw_kv_endpoint(w->kv), e.message, e.code);
			/* an expired token: authenticate again before resuming */
			return e.code == 16 || strstr(e.message, "auth token") ||
			       strstr(e.message, "user name is empty") ? -EACCES : -ECONNRESET;
		}
		watch_error(w, "%s: unparsable watch message: %s", cw_kv_endpoint(w->kv), err);
		return -EPROTO;
	}
	if (r.compact_revision > 0) {
		/* Our resume point is gone: only a new listing is exact. */
		watch_error(w, "revision %" PRId64 " compacted (oldest kept %" PRId64 "), relisting",
			    w->revision + 1, r.compact_revision);
		w->need_list = true;
		cw_kvp_watch_clear(&r);
		return -ESTALE;
	}
	if (r.canceled) {
		/* A refused watch comes back "created and canceled" on HTTP 200. */
		int rc = strstr(r.cancel_reason, "auth") || strstr(r.cancel_reason, "permission") ?
			 -EACCES : -ECONNRESET;

		watch_error(w, "%s: watch refused: %s", cw_kv_endpoint(w->kv),
			    r.cancel_reason[0] ? r.cancel_reason : "canceled");
		cw_kvp_watch_clear(&r);
		return rc;
	}
	if (r.created) {
		w->streaming = true;
		w->attempt = 0;
		w->error[0] = '\0';
	}
	for (size_t i = 0; i < r.n; i++) {
		struct cw_kv_event *ev = &r.events[i];

		if (ev->kv.mod_revision > w->revision)
			w->revision = ev->kv.mod_revision;
		w->events++;
		if (ev->type == CW_KV_DELETE)
			apply_delete(w, ev->kv.key);
		else
			apply_put(w, &ev->kv);
	}
	/* A progress notification moves the resume point without events. */
	if (r.n == 0 && !r.created && r.revision > w->revision)
		w->revision = r.revision;
	w->last_sync_ms = cw_loop_now_ms();
	cw_kvp_watch_clear(&r);
	return 0;
}

static size_t on_stream_data(char *ptr, size_t size, size_t n, void *arg)
{
	struct cw_kv_watch *w = arg;
	long status = 0;
	int rc;

	curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		/* An HTTP error: one etcd error document, read when done. */
		rc = cw_json_split(&w->split, ptr, size * n, 64 * 1024, on_message, w);
		w->stream_rc = rc ? rc : -ECONNRESET;
		return rc ? 0 : size * n;
	}
	rc = cw_json_split(&w->split, ptr, size * n, MAX_MESSAGE, on_message, w);
	if (rc) {
		w->stream_rc = rc;
		return 0; /* aborts the transfer: the done callback reconnects */
	}
	return size * n;
}

static void schedule(struct cw_kv_watch *w, bool now)
{
	int64_t delay = now ? 0 : cw_backoff_ms(w->attempt++, BACKOFF_BASE_MS, BACKOFF_CAP_MS);

	cw_timer_arm(w->timer, delay);
}

static void stream_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg)
{
	struct cw_kv_watch *w = arg;
	bool was_streaming = w->streaming;

	(void)loop;
	(void)easy;
	w->streaming = false;
	curl_slist_free_all(w->hdrs);
	w->hdrs = NULL;
	cw_json_splitter_clear(&w->split);
	if (w->stream_rc == -ESTALE) {
		/* compacted: relist at once */
	} else if (w->stream_rc == -EACCES) {
		cw_kv_stream_failed(w->kv, true);
	} else if (res != CURLE_OK && res != CURLE_WRITE_ERROR) {
		watch_error(w, "%s: stream ended: %s", cw_kv_endpoint(w->kv), curl_easy_strerror(res));
		cw_kv_stream_failed(w->kv, false);
	} else if (res == CURLE_OK && !w->stream_rc) {
		watch_error(w, "%s: stream closed by the server", cw_kv_endpoint(w->kv));
		cw_kv_stream_failed(w->kv, false);
	}
	w->reconnects++;
	w->stream_rc = 0;
	/* A stream that had been working resumes at once, the first time. */
	schedule(w, w->need_list || (was_streaming && w->attempt == 0));
}

static int start_stream(struct cw_kv_watch *w)
{
	char end[1024], *body;
	int rc;

	rc = cw_kvp_prefix_end(w->prefix, end, sizeof(end));
	if (rc)
		return rc;
	body = cw_kvp_watch_create_req(w->prefix, end, w->revision + 1, true);
	if (!body)
		return -ENOMEM;
	curl_easy_reset(w->easy);
	rc = cw_kv_stream_setup(w->kv, w->easy, "/v3/watch", body, &w->hdrs);
	free(body);
	if (rc) {
		if (rc != -EAGAIN)
			watch_error(w, "watch: %s", cw_kv_error(w->kv));
		return rc;
	}
	curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, on_stream_data);
	curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
	/*
	 * A stream is idle between events: TCP keepalive notices a peer that
	 * vanished without a FIN (a dead node, a cut link) within ~30 s.
	 */
	curl_easy_setopt(w->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(w->easy, CURLOPT_TCP_KEEPIDLE, 10L);
	curl_easy_setopt(w->easy, CURLOPT_TCP_KEEPINTVL, 5L);
	rc = cw_loop_curl_add(w->loop, w->easy, stream_done, w);
	if (rc) {
		curl_slist_free_all(w->hdrs);
		w->hdrs = NULL;
	}
	return rc;
}

/* A start that failed: again after the backoff, or once the token it waits for is in. */
static void retry(struct cw_kv_watch *w, int rc)
{
	if (rc == -EAGAIN)
		cw_kv_token_wait(w->kv, &w->token);
	else
		schedule(w, false);
}

static void token_ready(void *arg)
{
	struct cw_kv_watch *w = arg;

	cw_timer_arm(w->timer, 0);
}

static void on_timer(struct cw_loop *loop, void *arg)
{
	struct cw_kv_watch *w = arg;
	int rc;

	(void)loop;
	if (w->list_next) {
		w->list_next = false;
		rc = list_page(w);
		if (rc) {
			list_abort(w);
			retry(w, rc);
		}
		return;
	}
	if (w->list_from)
		return; /* a page is on its way */
	if (w->need_list) {
		rc = list_start(w);
		if (rc) {
			list_abort(w);
			retry(w, rc);
		}
		return;
	}
	rc = start_stream(w);
	if (rc)
		retry(w, rc);
}

int cw_kv_watch_start(struct cw_loop *loop, struct cw_kv *kv, const char *prefix,
		      const struct cw_kv_watch_ops *ops, void *arg, struct cw_kv_watch **out)
{
	struct cw_kv_watch *w = calloc(1, sizeof(*w));
	int rc = -ENOMEM;

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	cw_kv_set_loop(kv, loop);
	w->kv = kv;
	w->ops = ops;
	w->arg = arg;
	w->need_list = true;
	w->token.fn = token_ready;
	w->token.arg = w;
	w->prefix = strdup(prefix);
	w->easy = curl_easy_init();
	if (!w->prefix || !w->easy)
		goto fail;
	rc = cw_timer_add(loop, 0, 0, on_timer, w, &w->timer);
	if (rc)
		goto fail;
	*out = w;
	return 0;
fail:
	cw_kv_watch_free(w);
	return rc;
}

void cw_kv_watch_free(struct cw_kv_watch *w)
{
	if (!w)
		return;
	cw_loop_curl_remove(w->loop, w->easy);
	if (w->easy)
		curl_easy_cleanup(w->easy);
	list_abort(w);
	curl_slist_free_all(w->hdrs);
	cw_timer_del(w->timer);
	cw_kv_token_unwait(w->kv, &w->token);
	cw_json_splitter_clear(&w->split);
	mirror_clear(&w->mirror);
	free(w->prefix);
	free(w);
}

void cw_kv_watch_get_status(const struct cw_kv_watch *w, struct cw_kv_watch_status *st)
{
	st->synced = w->synced;
	st->streaming = w->streaming;
	st->revision = w->revision;
	st->last_sync_ms = w->last_sync_ms;
	st->events = w->events;
	st->relists = w->relists;
	st->reconnects = w->reconnects;
	st->keys = w->mirror.n;
	st->error = w->error;
}

const struct cw_kv_pair *cw_kv_watch_lookup(const struct cw_kv_watch *w, const char *key)
{
	const struct entry *e = mirror_get(&w->mirror, key);

	return e ? &e->kv : NULL;
}

void cw_kv_watch_foreach(const struct cw_kv_watch *w, cw_kv_watch_iter_fn fn, void *arg)
{
	for (size_t i = 0; i < w->mirror.n_slots; i++)
		for (const struct entry *e = w->mirror.slots[i]; e; e = e->next)
			fn(&e->kv, arg);
}
