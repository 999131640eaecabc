// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer harness for the Kubernetes client's parsers of what an API
 * server sends (STYLE.md practice 11): the watch-stream splitter, watch
 * events, lists, Status documents, and the cache they feed.  The .c files
 * are included directly (as fuzz_conf.c does), loop.c only because k8s.c's
 * transport half refers to it; nothing here runs a loop or opens a socket.
 *
 * Invariants checked beyond "no crash, no leak, no UB":
 *  - splitting does not depend on how the bytes are cut into pieces;
 *  - every refusal carries a message, and leaves nothing allocated;
 *  - what the cache tells a handler agrees with what it holds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "../../helper/k8s.c"
#include "../../helper/loop.c"
#include "../../lib/addr.c"
#include "../../lib/log.c"
#include "../../lib/util.c"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	cw_log_set_level(CW_LOG_ERROR);
	return 0;
}

struct fuzz_state {
	struct cw_k8s_cache *c;
};

static int check_event(enum cw_k8s_event_type type, const cJSON *obj, const cJSON *old, void *arg)
{
	struct fuzz_state *st = arg;
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	const char *ns = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "namespace"));
	const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
	const cJSON *cached = cw_k8s_cache_get(st->c, ns, name);

	if (!name)
		abort();
	switch (type) {
	case CW_K8S_ADDED:
		if (old || cached != obj)
			abort();
		break;
	case CW_K8S_MODIFIED:
		if (!old || cached != obj || old == obj)
			abort();
		break;
	case CW_K8S_DELETED:
		if (!old || cached)
			abort();
		break;
	default:
		abort();
	}
	return 0;
}

/* Splits @buf cut into pieces of @chunk bytes; returns the documents' lengths, summed with their order. */
static uint64_t split(const char *buf, size_t len, size_t chunk, struct fuzz_state *st)
{
	struct cw_k8s_stream s;
	uint64_t sig = 0, n = 0;
	size_t off = 0;
	char err[256];
	int rc = 0;

	cw_k8s_stream_init(&s);
	while (off < len && rc >= 0) {
		size_t piece = len - off < chunk ? len - off : chunk;
		const char *doc;
		size_t dlen;

		err[0] = '\0';
		rc = cw_k8s_stream_feed(&s, buf + off, piece, err, sizeof(err));
		if (rc < 0 && rc != -ENOMEM && !err[0])
			abort();
		off += piece;
		while (rc >= 0 && (rc = cw_k8s_stream_next(&s, &doc, &dlen, err, sizeof(err))) == 1) {
			struct cw_k8s_event ev;

			if (dlen < 2 || doc[0] != '{' || (doc[dlen - 1] != '}' && doc[dlen - 1] != ']'))
				abort();
			sig = sig * 1000003u + dlen + (++n);
			err[0] = '\0';
			if (cw_k8s_parse_event(doc, dlen, &ev, err, sizeof(err)) < 0) {
				if (!err[0] || ev.object)
					abort();
				continue;
			}
			if (!ev.object)
				abort();
			if (ev.type <= CW_K8S_DELETED) {
				if (!ev.key[0] || !ev.rv[0])
					abort();
				if (st) {
					cJSON *o = ev.object;

					ev.object = NULL;
					cw_k8s_cache_apply(st->c, ev.type, o, check_event, st);
				}
			} else if (ev.type == CW_K8S_BOOKMARK && !ev.rv[0]) {
				abort();
			}
			cw_k8s_event_clear(&ev);
		}
		if (rc < 0 && rc != -ENOMEM && !err[0])
			abort();
	}
	if (rc < 0)
		sig ^= 0xdeadbeef;
	cw_k8s_stream_clear(&s);
	return sig;
}

static void fuzz_list(const char *buf, size_t len, struct fuzz_state *st)
{
	struct cw_k8s_list l;
	char err[256] = "";
	const cJSON *it;

	if (cw_k8s_parse_list(buf, len, &l, err, sizeof(err)) < 0) {
		if (!err[0] || l.items || l.rv || l.cont)
			abort();
		return;
	}
	if (!l.rv || !l.rv[0] || !cJSON_IsArray(l.items))
		abort();
	cJSON_ArrayForEach(it, l.items) {
		char key[CW_K8S_KEY_MAX];

		if (cw_k8s_object_key(it, key, sizeof(key), NULL, 0) || !cw_k8s_object_rv(it)[0])
			abort();
	}
	/* the relist diff over whatever the events left in the cache */
	cw_k8s_cache_replace(st->c, l.items, check_event, st);
	l.items = NULL;
	cw_k8s_list_clear(&l);
}

static void fuzz_urls(const char *buf, size_t len)
{
	char *s = malloc(len + 1), *u;

	if (!s)
		return;
	memcpy(s, buf, len);
	s[len] = '\0';
	/* whatever a selector or a resourceVersion holds, the URL stays one token */
	u = cw_k8s_watch_url("http://h:1", "/api/v1/pods", s, s, s, 5);
	for (const char *p = u; p && *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#')
			abort();
	free(u);
	u = cw_k8s_list_url("http://h:1", s, NULL, NULL, 10, s);
	for (const char *p = u; p && *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			abort();
	free(u);
	free(s);
}

/*
 * Model mode: the input is a program, two bytes an operation, that builds
 * well-formed watch events and lists (raw bytes seldom become one), sends
 * them through the splitter and the parsers in pieces, and checks the
 * cache against a plain model after every step, and that the handler,
 * replaying what it was told, arrives at the same state.
 */
#define MODEL_KEYS 8

struct model {
	unsigned int rv[MODEL_KEYS];   /* 0: absent */
	unsigned int told[MODEL_KEYS]; /* what the handler's replay holds */
	struct cw_k8s_cache *c;
};

static const char *const model_ns[MODEL_KEYS] = { "a", "b", "a", "b", "a", "b", "", "" };
static const char *const model_name[MODEL_KEYS] = { "x", "x", "y", "y", "z.z", "z-1", "n1", "n2" };

static int model_key(const cJSON *obj)
{
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	const char *ns = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "namespace"));
	const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));

	for (int i = 0; i < MODEL_KEYS; i++)
		if (name && strcmp(name, model_name[i]) == 0 && strcmp(ns ? ns : "", model_ns[i]) == 0)
			return i;
	abort();
}

static int model_told(enum cw_k8s_event_type type, const cJSON *obj, const cJSON *old, void *arg)
{
	struct model *m = arg;
	int i = model_key(obj);
	unsigned int rv = (unsigned int)strtoul(cw_k8s_object_rv(obj), NULL, 10);

	switch (type) {
	case CW_K8S_ADDED:
		if (m->told[i] || old)
			abort();
		m->told[i] = rv;
		break;
	case CW_K8S_MODIFIED:
		if (!m->told[i] || !old || m->told[i] == rv ||
		    m->told[i] != strtoul(cw_k8s_object_rv(old), NULL, 10))
			abort();
		m->told[i] = rv;
		break;
	case CW_K8S_DELETED:
		if (!m->told[i] || !old)
			abort();
		m->told[i] = 0;
		break;
	default:
		abort();
	}
	return 0;
}

static void model_verify(const struct model *m)
{
	size_t n = 0;

	for (int i = 0; i < MODEL_KEYS; i++) {
		const cJSON *o = cw_k8s_cache_get(m->c, model_ns[i], model_name[i]);

		if (m->rv[i]) {
			n++;
			if (!o || strtoul(cw_k8s_object_rv(o), NULL, 10) != m->rv[i])
				abort();
		} else if (o) {
			abort();
		}
		if (m->told[i] != m->rv[i])
			abort();
	}
	if (cw_k8s_cache_count(m->c) != n)
		abort();
}

static cJSON *model_obj(int i, unsigned int rv)
{
	cJSON *o = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(o, "metadata");
	char s[16];

	snprintf(s, sizeof(s), "%u", rv);
	cJSON_AddStringToObject(md, "name", model_name[i]);
	if (model_ns[i][0])
		cJSON_AddStringToObject(md, "namespace", model_ns[i]);
	cJSON_AddStringToObject(md, "resourceVersion", s);
	return o;
}

static void fuzz_model(const uint8_t *data, size_t size)
{
	struct model m = { 0 };
	unsigned int counter = 1;
	struct sbuf wire = { 0 };

	if (cw_k8s_cache_new(&m.c) < 0)
		return;
	/* 32 operations reach every state of 8 keys; more only slow each run */
	for (size_t at = 0; at + 1 < size && at < 64; at += 2) {
		uint8_t op = data[at], arg = data[at + 1];
		int i = (arg >> 2) % MODEL_KEYS;
		cJSON *ev = NULL, *o;
		char *text;

		switch (op % 4) {
		case 0: { /* a watch event for one key */
			static const char *const types[] = { "ADDED", "MODIFIED", "DELETED" };
			int t = arg % 3;
			/* a replay of the current version now and then */
			unsigned int rv = (op & 0x40) && m.rv[i] ? m.rv[i] : ++counter;

			ev = cJSON_CreateObject();
			cJSON_AddStringToObject(ev, "type", types[t]);
			cJSON_AddItemToObject(ev, "object", model_obj(i, rv));
			if (t == 2)
				m.rv[i] = 0;
			else if (!m.rv[i] || m.rv[i] != rv)
				m.rv[i] = rv;
			break;
		}
		case 1: /* a bookmark */
			ev = cJSON_CreateObject();
			cJSON_AddStringToObject(ev, "type", "BOOKMARK");
			o = cJSON_AddObjectToObject(ev, "object");
			cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "metadata"), "resourceVersion", "7");
			break;
		case 2: { /* a relist: the keys of @arg's bits, some changed */
			cJSON *list = cJSON_CreateObject(), *items;
			struct cw_k8s_list l;
			char err[256];

			cJSON_AddStringToObject(list, "kind", "PodList");
			cJSON_AddStringToObject(cJSON_AddObjectToObject(list, "metadata"), "resourceVersion", "9");
			items = cJSON_AddArrayToObject(list, "items");
			for (int k = 0; k < MODEL_KEYS; k++) {
				if (!(arg & (1u << k))) {
					m.rv[k] = 0;
					continue;
				}
				if (!m.rv[k] || (op & 0x80))
					m.rv[k] = ++counter;
				cJSON_AddItemToArray(items, model_obj(k, m.rv[k]));
			}
			text = cJSON_PrintUnformatted(list);
			cJSON_Delete(list);
			if (!text || cw_k8s_parse_list(text, strlen(text), &l, err, sizeof(err)) < 0)
				abort();
			free(text);
			cw_k8s_cache_replace(m.c, l.items, model_told, &m);
			l.items = NULL;
			cw_k8s_list_clear(&l);
			model_verify(&m);
			continue;
		}
		default: /* whitespace between events, as servers may send */
			sb_add(&wire, "\r\n  \n", (size_t)(arg % 5));
			continue;
		}
		text = cJSON_PrintUnformatted(ev);
		cJSON_Delete(ev);
		if (text)
			sb_str(&wire, text);
		free(text);
		sb_add(&wire, "\n", 1);
		/* deliver what is on the wire in pieces of op's size */
		if (!wire.oom && wire.len) {
			struct cw_k8s_stream st;
			size_t off = 0, piece = (op >> 2) % 23 + 1;
			const char *doc;
			size_t dlen;
			char err[256];

			cw_k8s_stream_init(&st);
			while (off < wire.len) {
				size_t n = wire.len - off < piece ? wire.len - off : piece;

				if (cw_k8s_stream_feed(&st, wire.s + off, n, err, sizeof(err)) < 0)
					abort();
				off += n;
				while (cw_k8s_stream_next(&st, &doc, &dlen, err, sizeof(err)) == 1) {
					struct cw_k8s_event e;

					if (cw_k8s_parse_event(doc, dlen, &e, err, sizeof(err)) < 0)
						abort();
					if (e.type <= CW_K8S_DELETED) {
						o = e.object;
						e.object = NULL;
						cw_k8s_cache_apply(m.c, e.type, o, model_told, &m);
					}
					cw_k8s_event_clear(&e);
				}
			}
			if (cw_k8s_stream_pending(&st))
				abort();
			cw_k8s_stream_clear(&st);
			wire.len = 0;
		}
		model_verify(&m);
	}
	free(wire.s);
	cw_k8s_cache_free(m.c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact-size copy, so reading one byte past @size is caught by ASan */
	char *buf = malloc(size ? size : 1);
	struct cw_k8s_apistatus status;
	struct fuzz_state st = { 0 };
	size_t chunk;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (cw_k8s_cache_new(&st.c) < 0) {
		free(buf);
		return 0;
	}
	chunk = size ? (size_t)(unsigned char)buf[0] % 61 + 1 : 1;
	if (split(buf, size, chunk, &st) != split(buf, size, size ? size : 1, NULL))
		abort();
	fuzz_list(buf, size, &st);
	if (cw_k8s_cache_count(st.c) > size)
		abort();
	cw_k8s_parse_status(buf, size, &status);
	fuzz_urls(buf, size);
	fuzz_model(data, size);
	cw_k8s_cache_free(st.c);
	free(buf);
	return 0;
}
