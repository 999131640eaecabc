// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>

#include <causeway/addr.h>
#include <causeway/log.h>
#include <causeway/util.h>
#include "k8s.h"
#include "loop.h"

/* ===== protocol ====================================================== */

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

#define ERR(...) fail(err, errlen, __VA_ARGS__)

static const char *const event_names[] = {
	[CW_K8S_ADDED] = "ADDED",
	[CW_K8S_MODIFIED] = "MODIFIED",
	[CW_K8S_DELETED] = "DELETED",
	[CW_K8S_BOOKMARK] = "BOOKMARK",
	[CW_K8S_ERROR] = "ERROR",
};

const char *cw_k8s_event_name(enum cw_k8s_event_type type)
{
	if ((unsigned int)type < ARRAY_SIZE(event_names))
		return event_names[type];
	return "?";
}

/*
 * A copy of @s (up to @n bytes) fit for a log line: what the peer sent may
 * hold anything, so control and non-ASCII bytes become '?'.
 */
static const char *printable(const char *s, size_t n, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; i < n && s[i] && i + 1 < outlen; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	out[i] = '\0';
	return out;
}

void cw_k8s_stream_init(struct cw_k8s_stream *s)
{
	memset(s, 0, sizeof(*s));
}

void cw_k8s_stream_clear(struct cw_k8s_stream *s)
{
	if (!s)
		return;
	free(s->buf);
	cw_k8s_stream_init(s);
}

int cw_k8s_stream_feed(struct cw_k8s_stream *s, const void *data, size_t len, char *err,
		       size_t errlen)
{
	size_t need;

	if (s->error)
		return s->error;
	/* Documents before @start were handed out: keep only the unfinished one. */
	if (s->start > 0) {
		memmove(s->buf, s->buf + s->start, s->len - s->start);
		s->len -= s->start;
		s->pos -= s->start;
		s->base += s->start;
		s->start = 0;
	}
	if (len > CW_K8S_MAX_EVENT || s->len + len > CW_K8S_MAX_EVENT) {
		s->error = -E2BIG;
		fail(err, errlen, "watch event at byte %" PRIu64 " is larger than %u MiB",
		     s->base, CW_K8S_MAX_EVENT >> 20);
		return -E2BIG;
	}
	need = s->len + len;
	if (need > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		char *nb;

		while (cap < need)
			cap *= 2;
		nb = realloc(s->buf, cap);
		if (!nb)
			return -ENOMEM;
		s->buf = nb;
		s->cap = cap;
	}
	if (len)
		memcpy(s->buf + s->len, data, len);
	s->len = need;
	return 0;
}

int cw_k8s_stream_next(struct cw_k8s_stream *s, const char **doc, size_t *len, char *err,
		       size_t errlen)
{
	if (s->error)
		return fail(err, errlen, "the watch stream failed before"), s->error;
	while (s->pos < s->len) {
		unsigned char c = (unsigned char)s->buf[s->pos];

		if (s->depth == 0) {
			if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
				s->start = ++s->pos;
				continue;
			}
			if (c != '{') {
				char what[16];

				if (c >= 0x20 && c < 0x7f)
					snprintf(what, sizeof(what), "'%c'", c);
				else
					snprintf(what, sizeof(what), "byte 0x%02x", c);
				s->error = -EINVAL;
				return ERR("unexpected %s at byte %" PRIu64
					   " of the watch stream: events are JSON objects",
					   what, s->base + s->pos);
			}
			s->depth = 1;
			s->pos++;
			continue;
		}
		s->pos++;
		if (s->in_str) {
			if (s->esc)
				s->esc = false;
			else if (c == '\\')
				s->esc = true;
			else if (c == '"')
				s->in_str = false;
			continue;
		}
		if (c == '"') {
			s->in_str = true;
		} else if (c == '{' || c == '[') {
			s->depth++;
		} else if ((c == '}' || c == ']') && --s->depth == 0) {
			/* Mismatched brackets are cJSON's to refuse, not ours. */
			*doc = s->buf + s->start;
			*len = s->pos - s->start;
			s->start = s->pos;
			return 1;
		}
	}
	return 0;
}

size_t cw_k8s_stream_pending(const struct cw_k8s_stream *s)
{
	return s->len - s->start;
}

static const cJSON *get(const cJSON *o, const char *name)
{
	return cJSON_GetObjectItemCaseSensitive(o, name);
}

static const char *get_str(const cJSON *o, const char *name)
{
	const cJSON *v = get(o, name);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/*
 * Parses exactly @len bytes as one JSON value: cJSON stops after the value,
 * so what follows it must be whitespace.
 */
static cJSON *parse_json(const char *buf, size_t len, const char *what, char *err, size_t errlen)
{
	const char *end = NULL;
	char near[40];
	cJSON *root;

	if (!buf || !len) {
		ERR("%s is empty", what);
		return NULL;
	}
	root = cJSON_ParseWithLengthOpts(buf, len, &end, false);
	if (!root) {
		size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;

		ERR("%s is not valid JSON: error at byte %zu of %zu near \"%s\"", what, at, len,
		    printable(buf + at, len - at, near, 24));
		return NULL;
	}
	for (size_t at = (size_t)(end - buf); at < len; at++) {
		char c = buf[at];

		if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\0') {
			ERR("%s has bytes after its JSON value, at byte %zu: \"%s\"", what, at,
			    printable(buf + at, len - at, near, 24));
			cJSON_Delete(root);
			return NULL;
		}
	}
	return root;
}

static bool status_from(const cJSON *o, struct cw_k8s_apistatus *st)
{
	const char *kind = get_str(o, "kind"), *s;
	const cJSON *code = get(o, "code");

	memset(st, 0, sizeof(*st));
	if (!cJSON_IsObject(o) || !((kind && strcmp(kind, "Status") == 0) || cJSON_IsNumber(code)))
		return false;
	if (cJSON_IsNumber(code) && code->valuedouble >= 0 && code->valuedouble < 1000)
		st->code = (int)code->valuedouble;
	if ((s = get_str(o, "reason")))
		printable(s, strlen(s), st->reason, sizeof(st->reason));
	if ((s = get_str(o, "message")))
		printable(s, strlen(s), st->message, sizeof(st->message));
	return true;
}

bool cw_k8s_parse_status(const char *buf, size_t len, struct cw_k8s_apistatus *st)
{
	cJSON *o = parse_json(buf, len, "status", NULL, 0);
	bool ok = o && status_from(o, st);

	cJSON_Delete(o);
	if (!ok)
		memset(st, 0, sizeof(*st));
	return ok;
}

/*
 * Names must not break the "namespace/name" key or a log line; the API
 * server holds them to DNS rules already, this only guards the client.
 */
static bool valid_name(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f || s[i] == '/')
			return false;
	return true;
}

int cw_k8s_object_key(const cJSON *obj, char *buf, size_t len, char *err, size_t errlen)
{
	const cJSON *md = cJSON_IsObject(obj) ? get(obj, "metadata") : NULL;
	const char *name, *ns;
	char p[80];
	int n;

	if (!cJSON_IsObject(md))
		return ERR("object without metadata");
	name = get_str(md, "name");
	ns = get_str(md, "namespace");
	if (!name)
		return ERR("object without metadata.name");
	if (!valid_name(name, 253))
		return ERR("metadata.name \"%s\" is not a valid object name",
			   printable(name, strlen(name), p, sizeof(p)));
	if (ns && ns[0] && !valid_name(ns, 63))
		return ERR("metadata.namespace \"%s\" of %s is not a valid namespace name",
			   printable(ns, strlen(ns), p, sizeof(p)), name);
	if (ns && ns[0])
		n = snprintf(buf, len, "%s/%s", ns, name);
	else
		n = snprintf(buf, len, "%s", name);
	if (n < 0 || (size_t)n >= len)
		return ERR("key of %s does not fit %zu bytes", name, len), -ENAMETOOLONG;
	return 0;
}

const char *cw_k8s_object_rv(const cJSON *obj)
{
	const cJSON *md = cJSON_IsObject(obj) ? get(obj, "metadata") : NULL;
	const char *rv = md ? get_str(md, "resourceVersion") : NULL;

	return rv ? rv : "";
}

void cw_k8s_event_clear(struct cw_k8s_event *ev)
{
	if (!ev)
		return;
	cJSON_Delete(ev->object);
	memset(ev, 0, sizeof(*ev));
	ev->rv = "";
}

bool cw_k8s_event_expired(const struct cw_k8s_event *ev)
{
	/*
	 * 410 with reason "Expired" ("too old resource version") is what the
	 * API server sends; "Gone" is the older spelling of the same thing.
	 */
	return ev->type == CW_K8S_ERROR &&
	       (ev->status.code == 410 || strcmp(ev->status.reason, "Expired") == 0 ||
		strcmp(ev->status.reason, "Gone") == 0);
}

int cw_k8s_parse_event(const char *buf, size_t len, struct cw_k8s_event *ev, char *err,
		       size_t errlen)
{
	static const enum cw_k8s_event_type types[] = { CW_K8S_ADDED, CW_K8S_MODIFIED,
							CW_K8S_DELETED, CW_K8S_BOOKMARK,
							CW_K8S_ERROR };
	char why[256], p[40];
	const char *type;
	cJSON *root, *obj;
	size_t i;

	memset(ev, 0, sizeof(*ev));
	ev->rv = "";
	root = parse_json(buf, len, "watch event", err, errlen);
	if (!root)
		return -EINVAL;
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return ERR("watch event is not a JSON object");
	}
	type = get_str(root, "type");
	if (!type) {
		cJSON_Delete(root);
		return ERR("watch event without a \"type\"");
	}
	for (i = 0; i < ARRAY_SIZE(types); i++)
		if (strcmp(type, event_names[types[i]]) == 0)
			break;
	if (i == ARRAY_SIZE(types)) {
		ERR("unknown watch event type \"%s\"", printable(type, strlen(type), p, sizeof(p)));
		cJSON_Delete(root);
		return -EINVAL;
	}
	ev->type = types[i];
	obj = cJSON_DetachItemFromObjectCaseSensitive(root, "object");
	cJSON_Delete(root);
	if (!cJSON_IsObject(obj)) {
		cJSON_Delete(obj);
		return ERR("%s event without an object", event_names[ev->type]);
	}
	ev->object = obj;
	switch (ev->type) {
	case CW_K8S_ADDED:
	case CW_K8S_MODIFIED:
	case CW_K8S_DELETED:
		if (cw_k8s_object_key(obj, ev->key, sizeof(ev->key), why, sizeof(why))) {
			ERR("%s event: %s", event_names[ev->type], why);
			goto bad;
		}
		ev->rv = cw_k8s_object_rv(obj);
		if (!ev->rv[0]) {
			ERR("%s event for %s without metadata.resourceVersion",
			    event_names[ev->type], ev->key);
			goto bad;
		}
		break;
	case CW_K8S_BOOKMARK:
		ev->rv = cw_k8s_object_rv(obj);
		if (!ev->rv[0]) {
			ERR("BOOKMARK event without metadata.resourceVersion");
			goto bad;
		}
		break;
	case CW_K8S_ERROR:
		if (!status_from(obj, &ev->status))
			snprintf(ev->status.message, sizeof(ev->status.message),
				 "ERROR event without a Status object");
		break;
	}
	return 0;
bad:
	cw_k8s_event_clear(ev);
	return -EINVAL;
}

void cw_k8s_list_clear(struct cw_k8s_list *l)
{
	if (!l)
		return;
	cJSON_Delete(l->items);
	free(l->rv);
	free(l->cont);
	memset(l, 0, sizeof(*l));
}

int cw_k8s_parse_list(const char *buf, size_t len, struct cw_k8s_list *out, char *err,
		      size_t errlen)
{
	const char *rv, *cont, *kind, *api;
	char why[256], item_kind[64] = "";
	cJSON *root, *items = NULL, *it;
	const cJSON *md;
	size_t i = 0;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	root = parse_json(buf, len, "list", err, errlen);
	if (!root)
		return -EINVAL;
	md = get(root, "metadata");
	if (!cJSON_IsObject(root) || !cJSON_IsObject(md)) {
		ERR("list without metadata");
		goto out;
	}
	rv = get_str(md, "resourceVersion");
	cont = get_str(md, "continue");
	if (!rv || !rv[0]) {
		/* without it no watch could start where the list ends */
		ERR("list without metadata.resourceVersion");
		goto out;
	}
	items = cJSON_DetachItemFromObjectCaseSensitive(root, "items");
	/* Go writes an empty slice as null */
	if (!items || cJSON_IsNull(items)) {
		cJSON_Delete(items);
		items = cJSON_CreateArray();
		if (!items) {
			rc = -ENOMEM;
			goto out;
		}
	}
	if (!cJSON_IsArray(items)) {
		ERR("list \"items\" is not an array");
		goto out;
	}
	/*
	 * Items of a list carry no kind of their own (the list's kind is
	 * "PodList"); watch events' objects do.  Give them one, so a handler
	 * sees the same object whichever way it came.
	 */
	kind = get_str(root, "kind");
	api = get_str(root, "apiVersion");
	if (kind && strlen(kind) > 4 && strlen(kind) < sizeof(item_kind) + 4 &&
	    strcmp(kind + strlen(kind) - 4, "List") == 0)
		snprintf(item_kind, sizeof(item_kind), "%.*s", (int)(strlen(kind) - 4), kind);
	cJSON_ArrayForEach(it, items) {
		char key[CW_K8S_KEY_MAX];

		if (cw_k8s_object_key(it, key, sizeof(key), why, sizeof(why))) {
			ERR("list items[%zu]: %s", i, why);
			goto out;
		}
		if (!cw_k8s_object_rv(it)[0]) {
			ERR("list items[%zu] (%s) without metadata.resourceVersion", i, key);
			goto out;
		}
		if (item_kind[0] && !get(it, "kind") &&
		    !cJSON_AddStringToObject(it, "kind", item_kind)) {
			rc = -ENOMEM;
			goto out;
		}
		if (api && !get(it, "apiVersion") && !cJSON_AddStringToObject(it, "apiVersion", api)) {
			rc = -ENOMEM;
			goto out;
		}
		i++;
	}
	out->rv = strdup(rv);
	out->cont = cont && cont[0] ? strdup(cont) : NULL;
	if (!out->rv || (cont && cont[0] && !out->cont)) {
		rc = -ENOMEM;
		goto out;
	}
	out->items = items;
	items = NULL;
	rc = 0;
out:
	cJSON_Delete(items);
	cJSON_Delete(root);
	if (rc)
		cw_k8s_list_clear(out);
	return rc;
}

/* ----- URLs ----- */

struct sbuf {
	char *s;
	size_t len, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (cw_buf_append(&b->s, &b->len, &b->cap, 256, s, n))
		b->oom = true;
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

/* A query parameter, "&name=value" with the value percent-encoded (RFC 3986 unreserved kept). */
static void sb_param(struct sbuf *b, const char *name, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";

	sb_str(b, b->s && strchr(b->s, '?') ? "&" : "?");
	sb_str(b, name);
	sb_add(b, "=", 1);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		char enc[3] = { '%', hex[*p >> 4], hex[*p & 15] };

		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~')
			sb_add(b, (const char *)p, 1);
		else
			sb_add(b, enc, 3);
	}
}

/*
 * A collection path, "/api/v1/pods" or "/apis/GROUP/VERSION/namespaces/NS/
 * RESOURCE": RFC 3986 unreserved characters and '/', so it goes into the
 * URL as is and nothing (a query, a fragment, a header) rides along.
 */
static bool valid_path(const char *path)
{
	if (!path || path[0] != '/')
		return false;
	for (const char *p = path; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '/' || *p == '-' || *p == '.' || *p == '_' || *p == '~'))
			return false;
	return true;
}

static char *sb_finish(struct sbuf *b)
{
	if (b->oom) {
		free(b->s);
		return NULL;
	}
	return b->s;
}

static void sb_collection(struct sbuf *b, const char *base, const char *path)
{
	size_t n = strlen(base);

	while (n > 0 && base[n - 1] == '/')
		n--;
	sb_add(b, base, n);
	sb_str(b, path);
}

char *cw_k8s_list_url(const char *base, const char *path, const char *field_selector,
		      const char *label_selector, int limit, const char *cont)
{
	struct sbuf b = { 0 };
	char num[16];

	if (!base || !valid_path(path))
		return NULL;
	sb_collection(&b, base, path);
	if (limit > 0) {
		snprintf(num, sizeof(num), "%d", limit);
		sb_param(&b, "limit", num);
	}
	if (cont && cont[0])
		sb_param(&b, "continue", cont);
	if (field_selector && field_selector[0])
		sb_param(&b, "fieldSelector", field_selector);
	if (label_selector && label_selector[0])
		sb_param(&b, "labelSelector", label_selector);
	return sb_finish(&b);
}

char *cw_k8s_watch_url(const char *base, const char *path, const char *field_selector,
		       const char *label_selector, const char *rv, int timeout_s)
{
	struct sbuf b = { 0 };
	char num[16];

	if (!base || !valid_path(path))
		return NULL;
	sb_collection(&b, base, path);
	sb_param(&b, "watch", "1");
	if (rv && rv[0])
		sb_param(&b, "resourceVersion", rv);
	/* Bookmarks move our resourceVersion on while nothing we select changes,
	 * so a re-watch after a quiet spell does not fall out of the history. */
	sb_param(&b, "allowWatchBookmarks", "true");
	if (timeout_s > 0) {
		snprintf(num, sizeof(num), "%d", timeout_s);
		sb_param(&b, "timeoutSeconds", num);
	}
	if (field_selector && field_selector[0])
		sb_param(&b, "fieldSelector", field_selector);
	if (label_selector && label_selector[0])
		sb_param(&b, "labelSelector", label_selector);
	return sb_finish(&b);
}

/* ----- the cache ----- */

struct entry {
	struct entry *next;
	uint64_t hash;
	cJSON *obj;
	bool seen;         /* in the list being applied by cw_k8s_cache_replace() */
	char key[];
};

struct cw_k8s_cache {
	struct entry **b;
	size_t nb;         /* a power of two */
	size_t n;
};

static uint64_t key_hash(const char *key)
{
	return cw_fnv1a64(key, strlen(key), CW_FNV1A64_SEED);
}

int cw_k8s_cache_new(struct cw_k8s_cache **out)
{
	struct cw_k8s_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->nb = 64;
	c->b = calloc(c->nb, sizeof(*c->b));
	if (!c->b) {
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void cw_k8s_cache_free(struct cw_k8s_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nb; i++) {
		while (c->b[i]) {
			struct entry *e = c->b[i];

			c->b[i] = e->next;
			cJSON_Delete(e->obj);
			free(e);
		}
	}
	free(c->b);
	free(c);
}

size_t cw_k8s_cache_count(const struct cw_k8s_cache *c)
{
	return c ? c->n : 0;
}

static struct entry **find(const struct cw_k8s_cache *c, const char *key, uint64_t h)
{
	struct entry **p;

	for (p = &c->b[h & (c->nb - 1)]; *p; p = &(*p)->next)
		if ((*p)->hash == h && strcmp((*p)->key, key) == 0)
			break;
	return p;
}

static void grow(struct cw_k8s_cache *c)
{
	size_t nb = c->nb * 2;
	struct entry **b = calloc(nb, sizeof(*b));

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < c->nb; i++) {
		while (c->b[i]) {
			struct entry *e = c->b[i];

			c->b[i] = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(c->b);
	c->b = b;
	c->nb = nb;
}

static int insert(struct cw_k8s_cache *c, const char *key, uint64_t h, cJSON *obj)
{
	size_t klen = strlen(key);
	struct entry *e = malloc(sizeof(*e) + klen + 1), **p;

	if (!e)
		return -ENOMEM;
	e->hash = h;
	e->obj = obj;
	e->seen = false;
	memcpy(e->key, key, klen + 1);
	if (c->n >= c->nb)
		grow(c);
	p = &c->b[h & (c->nb - 1)];
	e->next = *p;
	*p = e;
	c->n++;
	return 0;
}

const cJSON *cw_k8s_cache_get(const struct cw_k8s_cache *c, const char *ns, const char *name)
{
	char key[CW_K8S_KEY_MAX];
	struct entry *e;
	int n;

	if (!c || !name)
		return NULL;
	n = ns && ns[0] ? snprintf(key, sizeof(key), "%s/%s", ns, name) :
			  snprintf(key, sizeof(key), "%s", name);
	if (n < 0 || (size_t)n >= sizeof(key))
		return NULL;
	e = *find(c, key, key_hash(key));
	return e ? e->obj : NULL;
}

int cw_k8s_cache_foreach(const struct cw_k8s_cache *c, cw_k8s_object_fn fn, void *arg)
{
	if (!c)
		return 0;
	for (size_t i = 0; i < c->nb; i++)
		for (struct entry *e = c->b[i]; e; e = e->next) {
			int rc = fn(e->obj, arg);

			if (rc)
				return rc;
		}
	return 0;
}

static bool same_rv(const cJSON *a, const cJSON *b)
{
	const char *ra = cw_k8s_object_rv(a), *rb = cw_k8s_object_rv(b);

	return ra[0] && strcmp(ra, rb) == 0;
}

/* ADDED or MODIFIED of @obj under @key: insert or replace, then tell. */
static int upsert(struct cw_k8s_cache *c, const char *key, cJSON *obj, cw_k8s_event_fn fn,
		  void *arg)
{
	uint64_t h = key_hash(key);
	struct entry *e = *find(c, key, h);
	cJSON *old;
	int rc;

	if (e) {
		if (same_rv(e->obj, obj)) {
			/* the same version again (a replayed event, an unchanged
			 * object in a relist): nothing changed, nothing to tell */
			cJSON_Delete(obj);
			return 0;
		}
		old = e->obj;
		e->obj = obj;
		rc = fn ? fn(CW_K8S_MODIFIED, obj, old, arg) : 0;
		cJSON_Delete(old);
		return rc;
	}
	rc = insert(c, key, h, obj);
	if (rc) {
		cJSON_Delete(obj);
		return rc;
	}
	return fn ? fn(CW_K8S_ADDED, obj, NULL, arg) : 0;
}

int cw_k8s_cache_apply(struct cw_k8s_cache *c, enum cw_k8s_event_type type, cJSON *obj,
		       cw_k8s_event_fn fn, void *arg)
{
	char key[CW_K8S_KEY_MAX];
	struct entry **p, *e;
	int rc;

	if (cw_k8s_object_key(obj, key, sizeof(key), NULL, 0)) {
		cJSON_Delete(obj);
		return -EINVAL;
	}
	switch (type) {
	case CW_K8S_ADDED:
	case CW_K8S_MODIFIED:
		return upsert(c, key, obj, fn, arg);
	case CW_K8S_DELETED:
		p = find(c, key, key_hash(key));
		e = *p;
		if (!e) {
			cJSON_Delete(obj);
			return 0;
		}
		*p = e->next;
		c->n--;
		rc = fn ? fn(CW_K8S_DELETED, obj, e->obj, arg) : 0;
		cJSON_Delete(obj);
		cJSON_Delete(e->obj);
		free(e);
		return rc;
	default:
		cJSON_Delete(obj);
		return -EINVAL;
	}
}

static int cmp_entry_key(const void *a, const void *b)
{
	const struct entry *const *ea = a, *const *eb = b;

	return strcmp((*ea)->key, (*eb)->key);
}

int cw_k8s_cache_replace(struct cw_k8s_cache *c, cJSON *items, cw_k8s_event_fn fn, void *arg)
{
	struct entry **gone = NULL;
	size_t n_gone = 0, k = 0;
	char key[CW_K8S_KEY_MAX];
	cJSON *it;
	int rc = 0;

	if (!cJSON_IsArray(items)) {
		cJSON_Delete(items);
		return -EINVAL;
	}
	for (size_t i = 0; i < c->nb; i++)
		for (struct entry *e = c->b[i]; e; e = e->next)
			e->seen = false;
	cJSON_ArrayForEach(it, items) {
		struct entry *e;

		if (cw_k8s_object_key(it, key, sizeof(key), NULL, 0))
			continue;
		e = *find(c, key, key_hash(key));
		if (e)
			e->seen = true;
	}
	/*
	 * Deletions first: a consumer keyed by something other than the name
	 * (an IP that moved from a deleted pod to a new one) then sees the old
	 * owner leave before the new one arrives.
	 */
	n_gone = c->n;
	if (n_gone) {
		gone = malloc(n_gone * sizeof(*gone));
		if (!gone) {
			cJSON_Delete(items);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < c->nb; i++)
		for (struct entry **p = &c->b[i]; *p;) {
			struct entry *e = *p;

			if (e->seen) {
				p = &e->next;
				continue;
			}
			*p = e->next;
			c->n--;
			gone[k++] = e;
		}
	n_gone = k;
	if (n_gone > 1)
		qsort(gone, n_gone, sizeof(*gone), cmp_entry_key);
	for (k = 0; k < n_gone; k++) {
		if (rc == 0 && fn)
			rc = fn(CW_K8S_DELETED, gone[k]->obj, gone[k]->obj, arg);
		cJSON_Delete(gone[k]->obj);
		free(gone[k]);
	}
	free(gone);
	while (rc == 0 && items->child) {
		it = cJSON_DetachItemViaPointer(items, items->child);
		if (cw_k8s_object_key(it, key, sizeof(key), NULL, 0)) {
			cJSON_Delete(it);
			continue;
		}
		rc = upsert(c, key, it, fn, arg);
	}
	cJSON_Delete(items);
	return rc;
}

/* ===== transport ===================================================== */

#define LIST_BODY_MAX (256u << 20)  /* one list page */
#define ERROR_BODY_MAX (64u << 10)  /* the Status document of an HTTP error */
#define MAX_ATTEMPT 32

struct cw_k8s {
	struct cw_loop *loop;
	char *url;                   /* no trailing '/' */
	char *token_file;            /* NULL: no Authorization header */
	char *ca_file;
	char *token;
	struct stat token_st;        /* of the file @token was read from */
	bool token_stale;            /* a 401 came back: read the file again */
	int watch_timeout_s;
	int page_limit;
	long connect_timeout_ms, list_timeout_ms;
	int64_t backoff_base_ms, backoff_cap_ms;
	struct cw_k8s_informer *informers;
};

struct body {
	char *data;
	size_t len;
};

/* --- slim objects ------------------------------------------------------------ */

static void slim(cJSON *obj, const char *const *keep, size_t n)
{
	cJSON *c, *next;

	for (c = obj->child; c; c = next) {
		const char *sub[CW_K8S_KEEP_MAX + 3];
		size_t len, m = 0;
		bool whole = false;

		next = c->next;
		len = c->string ? strlen(c->string) : 0;
		for (size_t i = 0; c->string && i < n; i++) {
			if (strncmp(keep[i], c->string, len) != 0)
				continue;
			if (keep[i][len] == '\0')
				whole = true;
			else if (keep[i][len] == '.')
				sub[m++] = keep[i] + len + 1;
		}
		if (whole)
			continue;
		if (!m) {
			cJSON_Delete(cJSON_DetachItemViaPointer(obj, c));
		} else if (cJSON_IsArray(c)) {
			cJSON *e;

			cJSON_ArrayForEach(e, c)
				if (cJSON_IsObject(e))
					slim(e, sub, m);
		} else if (cJSON_IsObject(c)) {
			slim(c, sub, m);
		}
	}
}

void cw_k8s_slim(cJSON *obj, const char *const *keep)
{
	static const char *const always[] = { "metadata.name", "metadata.namespace",
					      "metadata.resourceVersion" };
	const char *all[CW_K8S_KEEP_MAX + 3];
	size_t n = 0;
	cJSON *ann;

	if (!cJSON_IsObject(obj) || !keep)
		return;
	for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
		all[n++] = always[i];
	for (size_t i = 0; keep[i] && i < CW_K8S_KEEP_MAX; i++)
		all[n++] = keep[i];
	slim(obj, all, n);
	/* kept annotations never include kubectl's copy of the whole object */
	ann = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"),
					       "annotations");
	if (cJSON_IsObject(ann))
		cJSON_DeleteItemFromObjectCaseSensitive(
			ann, "kubectl.kubernetes.io/last-applied-configuration");
}

struct cw_k8s_informer {
	struct cw_k8s *k;
	struct cw_k8s_informer *next;
	char *path, *fsel, *lsel;
	char *name;                  /* path and selectors, for log lines */
	cw_k8s_handler_fn handler;
	cw_k8s_synced_fn synced_fn;
	void *arg;
	const char *const *keep;
	struct cw_k8s_cache *cache;

	/* the one request in flight */
	CURL *easy;
	bool busy;                   /* @easy is on the loop */
	bool watching;               /* ... and it is a watch */
	struct curl_slist *hdrs;
	char *req_url;               /* for messages */
	char curl_err[CURL_ERROR_SIZE];
	long http_status;            /* from the header callback */
	struct body body;            /* a list page, or an error document */
	struct cw_k8s_stream stream; /* a watch body */
	char write_err[256];         /* why a write callback stopped the transfer */
	int64_t watch_started;
	unsigned long watch_docs;
	long event_code;             /* code of the ERROR event that ended the watch */

	/* list and watch state */
	cJSON *pending;              /* items of the pages listed so far */
	char *cont;                  /* continue token of the next page */
	char *list_rv;               /* resourceVersion of the list's first page */
	char *rv;                    /* resourceVersion the next watch starts from */
	bool need_list;
	struct cw_timer *retry;      /* starts the next request, now or after a backoff */
	struct cw_timer *kick;       /* applies buffered watch events, outside libcurl */
	unsigned int attempt;

	/* freeing from a handler is deferred until the dispatch unwinds */
	unsigned int depth;
	bool dead;

	bool connected, synced;
	time_t last_sync, last_event;
	unsigned long lists, events, reconnects;
	char error[512];
};

__attribute__((format(printf, 2, 3)))
static void set_error(struct cw_k8s_informer *inf, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(inf->error, sizeof(inf->error), fmt, ap);
	va_end(ap);
	pr_warn("k8s: %s", inf->error);
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/*
 * (Re-)reads the bearer token when its file changed.  Projected service
 * account tokens are rotated by the kubelet, which swaps the file behind a
 * symlink: stat() follows it, so a new inode or mtime means a new token.
 */
static int load_token(struct cw_k8s *k, char *err, size_t errlen)
{
	char *data = NULL, *s, *e, *tok;
	struct stat st;
	size_t len = 0;
	int rc;

	if (!k->token_file)
		return 0;
	if (stat(k->token_file, &st) < 0) {
		rc = -errno;
		fail(err, errlen, "token file %s: %s", k->token_file, strerror(-rc));
		return rc;
	}
	if (k->token && !k->token_stale && same_file(&st, &k->token_st))
		return 0;
	rc = cw_read_file(k->token_file, &data, &len);
	if (rc) {
		fail(err, errlen, "token file %s: %s", k->token_file, strerror(-rc));
		return rc;
	}
	s = data;
	e = data + len;
	while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
		s++;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		e--;
	if (s == e) {
		free(data);
		return ERR("token file %s is empty", k->token_file);
	}
	for (const char *p = s; p < e; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			/* it goes into an HTTP header: no line break may pass */
			ERR("token file %s: byte 0x%02x at offset %zu cannot be in a bearer token",
			    k->token_file, (unsigned char)*p, (size_t)(p - data));
			free(data);
			return -EINVAL;
		}
	*e = '\0';
	tok = strdup(s);
	free(data);
	if (!tok)
		return -ENOMEM;
	if (k->token && strcmp(k->token, tok) != 0)
		pr_info("k8s: token file %s changed, using the new token", k->token_file);
	free(k->token);
	k->token = tok;
	k->token_st = st;
	k->token_stale = false;
	return 0;
}

static char *path_join(const char *dir, const char *file)
{
	char *s = NULL;

	return asprintf(&s, "%s/%s", dir, file) < 0 ? NULL : s;
}

static int in_cluster(struct cw_k8s *k, const struct cw_k8s_config *cfg, char *err,
		      size_t errlen)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	const char *dir = cfg->sa_dir ? cfg->sa_dir : CW_K8S_SA_DIR;
	char p[80], *end;
	long n;

	if (!host || !host[0])
		return ERR("in-cluster config: KUBERNETES_SERVICE_HOST is not set (not running in "
			   "a pod?); give the API server URL explicitly");
	if (!port || !port[0])
		return ERR("in-cluster config: KUBERNETES_SERVICE_PORT is not set");
	errno = 0;
	n = strtol(port, &end, 10);
	if (errno || *end || n < 1 || n > 65535)
		return ERR("in-cluster config: KUBERNETES_SERVICE_PORT \"%s\" is not a port number",
			   printable(port, strlen(port), p, sizeof(p)));
	for (const char *c = host; *c; c++)
		if ((unsigned char)*c <= 0x20 || *c == '/' || *c == '@' || *c == '[' || *c == ']' ||
		    (unsigned char)*c >= 0x7f)
			return ERR("in-cluster config: KUBERNETES_SERVICE_HOST \"%s\" is not a host "
				   "name or address", printable(host, strlen(host), p, sizeof(p)));
	/* an IPv6 service address goes in brackets (RFC 3986 section 3.2.2) */
	if (asprintf(&k->url, strchr(host, ':') ? "https://[%s]:%ld" : "https://%s:%ld", host,
		     n) < 0) {
		k->url = NULL;
		return -ENOMEM;
	}
	k->token_file = cfg->token_file ? strdup(cfg->token_file) : path_join(dir, "token");
	k->ca_file = cfg->ca_file ? strdup(cfg->ca_file) : path_join(dir, "ca.crt");
	return k->token_file && k->ca_file ? 0 : -ENOMEM;
}

int cw_k8s_new(struct cw_loop *loop, const struct cw_k8s_config *cfg, struct cw_k8s **out,
	       char *err, size_t errlen)
{
	struct cw_k8s *k = calloc(1, sizeof(*k));
	bool explicit = cfg->url && cfg->url[0];
	char why[384], p[80];
	int rc;

	if (!k)
		return -ENOMEM;
	if (explicit) {
		size_t n = strlen(cfg->url);

		if (strncmp(cfg->url, "https://", 8) != 0 && strncmp(cfg->url, "http://", 7) != 0) {
			rc = ERR("API server URL \"%s\" must start with https:// or http://",
				 printable(cfg->url, n, p, sizeof(p)));
			goto fail;
		}
		while (n > 0 && cfg->url[n - 1] == '/')
			n--;
		k->url = strndup(cfg->url, n);
		k->token_file = cfg->token_file ? strdup(cfg->token_file) : NULL;
		k->ca_file = cfg->ca_file ? strdup(cfg->ca_file) : NULL;
		rc = !k->url || (cfg->token_file && !k->token_file) || (cfg->ca_file && !k->ca_file) ?
			     -ENOMEM : 0;
	} else {
		rc = in_cluster(k, cfg, err, errlen);
	}
	if (rc)
		goto fail;
	if (k->ca_file && access(k->ca_file, R_OK) < 0) {
		rc = -errno;
		fail(err, errlen, "%sCA file %s: %s", explicit ? "" : "in-cluster config: ",
		     k->ca_file, strerror(-rc));
		goto fail;
	}
	rc = load_token(k, why, sizeof(why));
	if (rc) {
		fail(err, errlen, "%s%s", explicit ? "" : "in-cluster config: ", why);
		goto fail;
	}
	k->loop = loop;
	k->watch_timeout_s = cfg->watch_timeout_s > 0 ? cfg->watch_timeout_s : 300;
	k->page_limit = cfg->page_limit > 0 ? cfg->page_limit : 500;
	k->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000;
	k->list_timeout_ms = cfg->list_timeout_ms > 0 ? cfg->list_timeout_ms : 60000;
	k->backoff_base_ms = cfg->backoff_base_ms > 0 ? cfg->backoff_base_ms : 500;
	k->backoff_cap_ms = cfg->backoff_cap_ms > 0 ? cfg->backoff_cap_ms : 30000;
	if (k->backoff_cap_ms < k->backoff_base_ms)
		k->backoff_cap_ms = k->backoff_base_ms;
	*out = k;
	return 0;
fail:
	cw_k8s_free(k);
	return rc;
}

const char *cw_k8s_url(const struct cw_k8s *k)
{
	return k->url;
}

void cw_k8s_free(struct cw_k8s *k)
{
	if (!k)
		return;
	while (k->informers)
		cw_k8s_informer_free(k->informers);
	free(k->url);
	free(k->token_file);
	free(k->ca_file);
	if (k->token)
		explicit_bzero(k->token, strlen(k->token));
	free(k->token);
	free(k);
}

/* ----- one informer ----- */

static void destroy(struct cw_k8s_informer *inf)
{
	cw_timer_del(inf->retry);
	cw_timer_del(inf->kick);
	if (inf->easy)
		curl_easy_cleanup(inf->easy);
	curl_slist_free_all(inf->hdrs);
	free(inf->req_url);
	free(inf->body.data);
	cw_k8s_stream_clear(&inf->stream);
	cJSON_Delete(inf->pending);
	free(inf->cont);
	free(inf->list_rv);
	free(inf->rv);
	free(inf->path);
	free(inf->name);
	free(inf->fsel);
	free(inf->lsel);
	cw_k8s_cache_free(inf->cache);
	free(inf);
}

/*
 * Every loop callback of an informer runs between enter() and leave(), so
 * a handler that frees the informer only marks it; the memory goes when
 * the callback unwinds.
 */
static void enter(struct cw_k8s_informer *inf)
{
	inf->depth++;
}

static void leave(struct cw_k8s_informer *inf)
{
	if (--inf->depth == 0 && inf->dead)
		destroy(inf);
}

void cw_k8s_informer_free(struct cw_k8s_informer *inf)
{
	struct cw_k8s_informer **p;

	if (!inf || inf->dead)
		return;
	for (p = &inf->k->informers; *p; p = &(*p)->next)
		if (*p == inf) {
			*p = inf->next;
			break;
		}
	if (inf->busy)
		cw_loop_curl_remove(inf->k->loop, inf->easy);
	inf->busy = false;
	cw_timer_disarm(inf->retry);
	cw_timer_disarm(inf->kick);
	inf->dead = true;
	if (inf->depth == 0)
		destroy(inf);
}

static int set_rv(struct cw_k8s_informer *inf, const char *rv)
{
	char *s;

	if (inf->rv && strcmp(inf->rv, rv) == 0)
		return 0;
	s = strdup(rv);
	if (!s)
		return -ENOMEM;
	free(inf->rv);
	inf->rv = s;
	return 0;
}

static void retry_later(struct cw_k8s_informer *inf)
{
	int64_t ms = cw_backoff_ms(inf->attempt, inf->k->backoff_base_ms, inf->k->backoff_cap_ms);

	if (inf->attempt < MAX_ATTEMPT)
		inf->attempt++;
	pr_info("k8s: %s: %s again in %" PRId64 " ms", inf->name,
		inf->need_list ? "listing" : "watching", ms);
	cw_timer_arm(inf->retry, ms);
}

/* The next request, on the loop's next turn: never recursively from a callback. */
static void next_now(struct cw_k8s_informer *inf)
{
	cw_timer_arm(inf->retry, 0);
}

static void drop_pending(struct cw_k8s_informer *inf)
{
	cJSON_Delete(inf->pending);
	inf->pending = NULL;
	free(inf->cont);
	inf->cont = NULL;
	free(inf->list_rv);
	inf->list_rv = NULL;
}

static int dispatch(enum cw_k8s_event_type type, const cJSON *obj, const cJSON *old, void *arg)
{
	struct cw_k8s_informer *inf = arg;

	if (inf->handler)
		inf->handler(inf, type, obj, old, inf->arg);
	return inf->dead ? -ECANCELED : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct cw_k8s_informer *inf = arg;
	size_t len = size * n;

	/* an empty line ends a header block: the status is known */
	if (len == 2 && p[0] == '\r' && p[1] == '\n') {
		curl_easy_getinfo(inf->easy, CURLINFO_RESPONSE_CODE, &inf->http_status);
		if (inf->http_status == 200)
			inf->connected = true;
	}
	return len;
}

static bool body_add(struct body *b, const char *p, size_t n)
{
	char *nd = realloc(b->data, b->len + n + 1);

	if (!nd)
		return false;
	memcpy(nd + b->len, p, n);
	b->data = nd;
	b->len += n;
	b->data[b->len] = '\0';
	return true;
}

static size_t on_list_data(char *p, size_t size, size_t n, void *arg)
{
	struct cw_k8s_informer *inf = arg;
	size_t len = size * n;

	if (inf->http_status != 200) {
		/* the start of an error document says enough */
		if (inf->body.len + len <= ERROR_BODY_MAX)
			body_add(&inf->body, p, len);
		return len;
	}
	if (inf->body.len + len > LIST_BODY_MAX) {
		snprintf(inf->write_err, sizeof(inf->write_err),
			 "list page larger than %u MiB (lower the page limit)", LIST_BODY_MAX >> 20);
		return 0;
	}
	if (!body_add(&inf->body, p, len)) {
		snprintf(inf->write_err, sizeof(inf->write_err), "out of memory reading a list page");
		return 0;
	}
	return len;
}

static size_t on_watch_data(char *p, size_t size, size_t n, void *arg)
{
	struct cw_k8s_informer *inf = arg;
	size_t len = size * n;
	int rc;

	if (inf->http_status != 200) {
		if (inf->body.len + len <= ERROR_BODY_MAX)
			body_add(&inf->body, p, len);
		return len;
	}
	rc = cw_k8s_stream_feed(&inf->stream, p, len, inf->write_err, sizeof(inf->write_err));
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(inf->write_err, sizeof(inf->write_err),
				 "out of memory reading the watch stream");
		return 0;
	}
	/*
	 * Events are applied from the loop, not here: a handler may free
	 * informers, i.e. remove transfers, which libcurl forbids inside its
	 * own callbacks.  The timer runs in this same loop turn.
	 */
	if (!cw_timer_armed(inf->kick))
		cw_timer_arm(inf->kick, 0);
	return len;
}

static bool add_header(struct curl_slist **list, const char *h)
{
	struct curl_slist *n = curl_slist_append(*list, h);

	if (!n)
		return false;
	*list = n;
	return true;
}

static void list_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg);
static void watch_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg);

/* Starts the request the state asks for: the next list page, or a watch. */
static int start(struct cw_k8s_informer *inf)
{
	struct cw_k8s *k = inf->k;
	bool watch = !inf->need_list;
	int timeout_s = 0, rc;
	char why[384], *auth = NULL;
	CURL *e;

	free(inf->req_url);
	if (watch) {
		/*
		 * [t, 2t): spread, so the watches of a thousand nodes do not all
		 * end in the same second (client-go spreads its own the same way).
		 */
		timeout_s = (int)cw_backoff_ms(1, k->watch_timeout_s, 2 * (int64_t)k->watch_timeout_s);
		inf->req_url = cw_k8s_watch_url(k->url, inf->path, inf->fsel, inf->lsel, inf->rv,
						timeout_s);
	} else {
		inf->req_url = cw_k8s_list_url(k->url, inf->path, inf->fsel, inf->lsel, k->page_limit,
					       inf->cont);
	}
	if (!inf->req_url) {
		set_error(inf, "%s: out of memory building the request URL", inf->name);
		return -ENOMEM;
	}
	rc = load_token(k, why, sizeof(why));
	if (rc) {
		inf->connected = false;
		set_error(inf, "GET %s: %s", inf->req_url, why);
		return rc;
	}
	if (!inf->easy && !(inf->easy = curl_easy_init())) {
		set_error(inf, "GET %s: out of memory for a curl handle", inf->req_url);
		return -ENOMEM;
	}
	e = inf->easy;
	curl_easy_reset(e);
	curl_slist_free_all(inf->hdrs);
	inf->hdrs = NULL;
	if (k->token && asprintf(&auth, "Authorization: Bearer %s", k->token) < 0)
		auth = NULL;
	if (!add_header(&inf->hdrs, "Accept: application/json") || (k->token && !auth) ||
	    (auth && !add_header(&inf->hdrs, auth))) {
		if (auth)
			explicit_bzero(auth, strlen(auth));
		free(auth);
		set_error(inf, "GET %s: out of memory for the request headers", inf->req_url);
		return -ENOMEM;
	}
	if (auth)
		explicit_bzero(auth, strlen(auth));
	free(auth);
	free(inf->body.data);
	inf->body.data = NULL;
	inf->body.len = 0;
	cw_k8s_stream_clear(&inf->stream);
	inf->http_status = 0;
	inf->curl_err[0] = '\0';
	inf->write_err[0] = '\0';

	curl_easy_setopt(e, CURLOPT_URL, inf->req_url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, inf->hdrs);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "causeway-helper");
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, inf->curl_err);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, k->connect_timeout_ms);
	/* a peer that vanished without a FIN/RST is found by keepalive probes */
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, inf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, watch ? on_watch_data : on_list_data);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, inf);
	if (k->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, k->ca_file);
	if (watch) {
		/* the server ends a watch after timeoutSeconds: one that outlives
		 * it by far runs over a dead connection */
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (timeout_s + 30) * 1000L);
	} else {
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, k->list_timeout_ms);
		curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	}
	rc = cw_loop_curl_add(k->loop, e, watch ? watch_done : list_done, inf);
	if (rc) {
		set_error(inf, "GET %s: cannot start the transfer: %s", inf->req_url, strerror(-rc));
		return rc;
	}
	inf->busy = true;
	inf->watching = watch;
	if (watch) {
		inf->watch_started = cw_loop_now_ms();
		inf->watch_docs = 0;
		inf->event_code = 0;
	}
	pr_debug("k8s: GET %s", inf->req_url);
	return 0;
}

static void on_retry(struct cw_loop *loop, void *arg)
{
	struct cw_k8s_informer *inf = arg;

	(void)loop;
	enter(inf);
	if (!inf->busy && start(inf) < 0) {
		inf->reconnects++;
		retry_later(inf);
	}
	leave(inf);
}

static void transport_failed(struct cw_k8s_informer *inf, CURLcode res)
{
	inf->connected = false;
	if (inf->write_err[0])
		set_error(inf, "GET %s: %s", inf->req_url, inf->write_err);
	else
		set_error(inf, "GET %s: %s (curl error %d)", inf->req_url,
			  inf->curl_err[0] ? inf->curl_err : curl_easy_strerror(res), (int)res);
	inf->reconnects++;
	retry_later(inf);
}

/* An HTTP error: the message names the status and the server's own words. */
static void http_failed(struct cw_k8s_informer *inf, long status)
{
	struct cw_k8s_apistatus st;
	char snippet[120];

	inf->connected = false;
	if (inf->body.len && cw_k8s_parse_status(inf->body.data, inf->body.len, &st) &&
	    st.message[0])
		set_error(inf, "GET %s: HTTP %ld%s%s: %s", inf->req_url, status, st.reason[0] ? " " : "",
			  st.reason, st.message);
	else
		set_error(inf, "GET %s: HTTP %ld%s%s", inf->req_url, status, inf->body.len ? ": " : "",
			  inf->body.len ? printable(inf->body.data, inf->body.len, snippet,
						    sizeof(snippet)) : "");
	/* the token may have been rotated under us: read the file again */
	if (status == 401)
		inf->k->token_stale = true;
	inf->reconnects++;
	retry_later(inf);
}

static void list_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg)
{
	struct cw_k8s_informer *inf = arg;
	struct cw_k8s_list l;
	long status = 0;
	char why[256];
	cJSON *items;
	int rc;

	(void)loop;
	inf->busy = false;
	enter(inf);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	if (res != CURLE_OK) {
		transport_failed(inf, res);
		goto out;
	}
	if (status == 410 && inf->cont) {
		/* The continue token expired; the pages so far are of an older
		 * snapshot, so a consistent list starts again from the first. */
		pr_info("k8s: GET %s: continue token expired (HTTP 410), listing %s from the start",
			inf->req_url, inf->name);
		drop_pending(inf);
		next_now(inf);
		goto out;
	}
	if (status != 200) {
		http_failed(inf, status);
		goto out;
	}
	if (cw_k8s_parse_list(inf->body.data, inf->body.len, &l, why, sizeof(why))) {
		set_error(inf, "GET %s: %s", inf->req_url, why);
		drop_pending(inf);
		inf->reconnects++;
		retry_later(inf);
		goto out;
	}
	if (inf->keep) {
		cJSON *it;

		cJSON_ArrayForEach(it, l.items)
			cw_k8s_slim(it, inf->keep);
	}
	inf->connected = true;
	/*
	 * The watch starts from the first page's version.  A server serves
	 * every page from that page's snapshot, so they all carry it; one that
	 * did not would make a later page's version skip changes to objects on
	 * earlier pages, while the first's replays them (harmlessly: what the
	 * cache has already is not told again).
	 */
	if (!inf->cont) {
		free(inf->list_rv);
		inf->list_rv = l.rv;
		l.rv = NULL;
	}
	if (!inf->pending) {
		inf->pending = l.items;
		l.items = NULL;
	} else {
		while (l.items->child)
			cJSON_AddItemToArray(inf->pending,
					     cJSON_DetachItemViaPointer(l.items, l.items->child));
	}
	free(inf->cont);
	inf->cont = l.cont;
	l.cont = NULL;
	if (inf->cont) {
		cw_k8s_list_clear(&l);
		next_now(inf);
		goto out;
	}
	free(inf->rv);
	inf->rv = inf->list_rv;
	inf->list_rv = NULL;
	cw_k8s_list_clear(&l);
	items = inf->pending;
	inf->pending = NULL;
	inf->need_list = false;
	inf->lists++;
	rc = cw_k8s_cache_replace(inf->cache, items, dispatch, inf);
	if (inf->dead)
		goto out;
	if (rc) {
		set_error(inf, "%s: applying the list: %s", inf->name, strerror(-rc));
		inf->need_list = true;
		retry_later(inf);
		goto out;
	}
	inf->last_sync = time(NULL);
	pr_info("k8s: %s: %s %zu objects at resourceVersion %s", inf->name,
		inf->synced ? "relisted" : "listed", cw_k8s_cache_count(inf->cache), inf->rv);
	if (!inf->synced) {
		inf->synced = true;
		if (inf->synced_fn) {
			inf->synced_fn(inf, inf->arg);
			if (inf->dead)
				goto out;
		}
	}
	next_now(inf);
out:
	leave(inf);
}

static int on_event(struct cw_k8s_informer *inf, struct cw_k8s_event *ev)
{
	cJSON *obj;
	int rc;

	switch (ev->type) {
	case CW_K8S_ERROR:
		if (cw_k8s_event_expired(ev)) {
			pr_info("k8s: %s: resourceVersion %s has left the history (%d %s: %s), "
				"relisting", inf->name, inf->rv ? inf->rv : "", ev->status.code,
				ev->status.reason, ev->status.message);
			return -ESTALE;
		}
		set_error(inf, "GET %s: watch ERROR %d %s: %s", inf->req_url, ev->status.code,
			  ev->status.reason, ev->status.message);
		inf->event_code = ev->status.code;
		return -EREMOTEIO;
	case CW_K8S_BOOKMARK:
		inf->last_event = time(NULL);
		return set_rv(inf, ev->rv);
	default:
		/* copy the version first: ev->rv points into the object the cache takes */
		rc = set_rv(inf, ev->rv);
		if (rc)
			return rc;
		inf->events++;
		inf->last_event = time(NULL);
		/* a watch that delivers is healthy: the next failure backs off afresh */
		inf->attempt = 0;
		obj = ev->object;
		ev->object = NULL;
		ev->rv = "";
		if (inf->keep)
			cw_k8s_slim(obj, inf->keep);
		rc = cw_k8s_cache_apply(inf->cache, ev->type, obj, dispatch, inf);
		return inf->dead ? -ECANCELED : rc;
	}
}

/*
 * Applies the complete events buffered so far.  0 to go on watching; -ESTALE
 * to relist now; -ECANCELED when the informer was freed; -EREMOTEIO for an
 * ERROR event (its code in event_code), -EPROTO for a malformed stream,
 * another -errno when the watch must end.
 */
static int drain(struct cw_k8s_informer *inf)
{
	const char *doc;
	char why[256];
	size_t len;
	int rc;

	while (!inf->dead) {
		struct cw_k8s_event ev;

		rc = cw_k8s_stream_next(&inf->stream, &doc, &len, why, sizeof(why));
		if (rc == 0)
			return 0;
		if (rc < 0) {
			set_error(inf, "GET %s: %s", inf->req_url, why);
			return -EPROTO;
		}
		inf->watch_docs++;
		if (cw_k8s_parse_event(doc, len, &ev, why, sizeof(why))) {
			set_error(inf, "GET %s: %s", inf->req_url, why);
			return -EPROTO;
		}
		rc = on_event(inf, &ev);
		cw_k8s_event_clear(&ev);
		if (rc)
			return rc;
	}
	return -ECANCELED;
}

/*
 * After an HTTP error on a watch, or an ERROR event with that code: which
 * ones say our resourceVersion is of no use (410 Gone; 504 is the API
 * server's "Too large resource version"; 400 one it cannot parse), so only
 * a list can go on, and which are about the server or us (401, 403, 429,
 * 5xx), so the watch is retried from where it was.
 */
static bool needs_list(long status)
{
	return status == 410 || status == 504 || (status >= 400 && status < 500 && status != 401 &&
						  status != 403 && status != 429);
}

static void watch_ended(struct cw_k8s_informer *inf, CURLcode res, long status, int rc)
{
	int64_t ran = cw_loop_now_ms() - inf->watch_started;

	if (rc == -ECANCELED)
		return;
	/* a watch that held for a while was healthy: back off afresh */
	if (ran >= 10000)
		inf->attempt = 0;
	if (cw_k8s_stream_pending(&inf->stream))
		pr_debug("k8s: %s: %zu bytes of a cut watch event dropped", inf->name,
			 cw_k8s_stream_pending(&inf->stream));
	if (rc == -ESTALE || (status == 410 && rc == 0)) {
		if (status == 410)
			pr_info("k8s: GET %s: HTTP 410, relisting %s", inf->req_url, inf->name);
		inf->need_list = true;
		drop_pending(inf);
		next_now(inf);
		return;
	}
	if (rc < 0) {
		/*
		 * A malformed event was skipped, so the cache may have missed a
		 * change: only a list is sure.  An ERROR event is judged by its
		 * code; one without a code is taken as the worst case.
		 */
		if (rc != -EREMOTEIO || inf->event_code == 0 || needs_list(inf->event_code))
			inf->need_list = true;
		inf->connected = false;
		inf->reconnects++;
		retry_later(inf);
		return;
	}
	if (status != 0 && status != 200) {
		if (needs_list(status))
			inf->need_list = true;
		http_failed(inf, status);
		return;
	}
	if (res != CURLE_OK) {
		/* resume from the last resourceVersion; if the server lost it,
		 * it answers 410 and we relist then */
		if (res == CURLE_WRITE_ERROR && inf->write_err[0])
			inf->need_list = true;
		transport_failed(inf, res);
		return;
	}
	if (ran < 1000 && inf->watch_docs == 0) {
		/* ended at once, not by its timeout: do not spin on it */
		set_error(inf, "GET %s: the watch ended after %" PRId64 " ms without an event",
			  inf->req_url, ran);
		inf->reconnects++;
		retry_later(inf);
		return;
	}
	/* the server's timeoutSeconds ran out: carry on from the last resourceVersion */
	next_now(inf);
}

static void watch_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg)
{
	struct cw_k8s_informer *inf = arg;
	long status = 0;
	int rc = 0;

	(void)loop;
	inf->busy = false;
	enter(inf);
	cw_timer_disarm(inf->kick);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	/* what arrived complete stands, whatever ended the stream */
	if (status == 200)
		rc = drain(inf);
	if (!inf->dead)
		watch_ended(inf, res, status, rc);
	leave(inf);
}

static void on_kick(struct cw_loop *loop, void *arg)
{
	struct cw_k8s_informer *inf = arg;
	int rc;

	(void)loop;
	enter(inf);
	if (inf->busy && inf->watching) {
		rc = drain(inf);
		if (rc && !inf->dead) {
			/* this watch cannot go on: end it here (its done callback
			 * will not run) */
			cw_loop_curl_remove(inf->k->loop, inf->easy);
			inf->busy = false;
			watch_ended(inf, CURLE_OK, 200, rc);
		}
	}
	leave(inf);
}

int cw_k8s_informer_new(struct cw_k8s *k, const struct cw_k8s_informer_opts *o,
			struct cw_k8s_informer **out)
{
	struct cw_k8s_informer *inf;
	char p[80];
	int rc;

	if (!k || !o || !valid_path(o->path)) {
		pr_err("k8s: informer path \"%s\" is not an API collection path like /api/v1/pods",
		       o && o->path ? printable(o->path, strlen(o->path), p, sizeof(p)) : "(null)");
		return -EINVAL;
	}
	inf = calloc(1, sizeof(*inf));
	if (!inf)
		return -ENOMEM;
	inf->k = k;
	inf->handler = o->handler;
	inf->synced_fn = o->synced;
	inf->arg = o->arg;
	inf->keep = o->keep;
	inf->need_list = true;
	cw_k8s_stream_init(&inf->stream);
	inf->path = strdup(o->path);
	inf->fsel = o->field_selector ? strdup(o->field_selector) : NULL;
	inf->lsel = o->label_selector ? strdup(o->label_selector) : NULL;
	if (asprintf(&inf->name, "%s%s%s%s%s", o->path, inf->fsel ? " fieldSelector=" : "",
		     inf->fsel ? inf->fsel : "", inf->lsel ? " labelSelector=" : "",
		     inf->lsel ? inf->lsel : "") < 0)
		inf->name = NULL;
	if (!inf->path || !inf->name || (o->field_selector && !inf->fsel) ||
	    (o->label_selector && !inf->lsel)) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = cw_k8s_cache_new(&inf->cache);
	if (!rc)
		rc = cw_timer_add(k->loop, 0, 0, on_retry, inf, &inf->retry);
	if (!rc)
		rc = cw_timer_add(k->loop, -1, 0, on_kick, inf, &inf->kick);
	if (rc)
		goto fail;
	inf->next = k->informers;
	k->informers = inf;
	*out = inf;
	return 0;
fail:
	destroy(inf);
	return rc;
}

const char *cw_k8s_informer_path(const struct cw_k8s_informer *inf)
{
	return inf->path;
}

bool cw_k8s_informer_synced(const struct cw_k8s_informer *inf)
{
	return inf && inf->synced;
}

const cJSON *cw_k8s_informer_get(const struct cw_k8s_informer *inf, const char *ns,
				 const char *name)
{
	return inf ? cw_k8s_cache_get(inf->cache, ns, name) : NULL;
}

int cw_k8s_informer_foreach(const struct cw_k8s_informer *inf, cw_k8s_object_fn fn, void *arg)
{
	return inf ? cw_k8s_cache_foreach(inf->cache, fn, arg) : 0;
}

void cw_k8s_informer_status(const struct cw_k8s_informer *inf,
			    struct cw_k8s_informer_status *out)
{
	memset(out, 0, sizeof(*out));
	out->name = inf->name;
	out->connected = inf->connected;
	out->synced = inf->synced;
	out->objects = cw_k8s_cache_count(inf->cache);
	out->last_sync = inf->last_sync;
	out->last_event = inf->last_event;
	out->events = inf->events;
	out->relists = inf->lists > 0 ? inf->lists - 1 : 0;
	out->reconnects = inf->reconnects;
	snprintf(out->resource_version, sizeof(out->resource_version), "%s",
		 inf->rv ? inf->rv : "");
	snprintf(out->last_error, sizeof(out->last_error), "%s", inf->error);
}
