// SPDX-License-Identifier: Apache-2.0
/*
 * helper/k8s.c, its pure half: the watch-stream splitter, the event, list
 * and Status parsers, the request URLs, the cache and its relist diff, and
 * the configuration checks.  The list/watch transport runs against an API
 * stand-in in test/k8s/.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "k8s.h"

/* ----- the stream splitter ----- */

struct docs {
	char *d[64];
	size_t n;
};

static void docs_clear(struct docs *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->d[i]);
	d->n = 0;
}

/* Feeds @s in pieces of @chunk bytes, collecting every document. */
static int split(const char *s, size_t chunk, struct docs *out, char *err, size_t errlen)
{
	struct cw_k8s_stream st;
	size_t len = strlen(s), off = 0;
	int rc = 0;

	cw_k8s_stream_init(&st);
	while (off < len && rc >= 0) {
		size_t n = len - off < chunk ? len - off : chunk;
		const char *doc;
		size_t dlen;

		rc = cw_k8s_stream_feed(&st, s + off, n, err, errlen);
		off += n;
		while (rc >= 0 && (rc = cw_k8s_stream_next(&st, &doc, &dlen, err, errlen)) == 1) {
			assert_true(out->n < 64);
			out->d[out->n++] = strndup(doc, dlen);
		}
	}
	if (rc >= 0 && cw_k8s_stream_pending(&st))
		rc = 2; /* a cut document remains */
	cw_k8s_stream_clear(&st);
	return rc;
}

static const char stream3[] =
	"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"1\"}}}\n"
	/* braces and quotes inside strings are not structure */
	"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"b\",\"resourceVersion\":\"2\","
	"\"annotations\":{\"x\":\"}{\\\"]\\\\\"}}}}\r\n"
	"\n"
	"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"3\"}}}\n";

static void test_stream_chunk_boundaries(void **state)
{
	struct docs d = { 0 };
	char err[256] = "";

	(void)state;
	/* every piece size from a byte at a time to all at once */
	for (size_t chunk = 1; chunk <= sizeof(stream3); chunk++) {
		assert_int_equal(split(stream3, chunk, &d, err, sizeof(err)), 0);
		assert_int_equal(d.n, 3);
		assert_true(strncmp(d.d[0], "{\"type\":\"ADDED\"", 15) == 0);
		assert_true(d.d[0][strlen(d.d[0]) - 1] == '}');
		assert_non_null(strstr(d.d[1], "}{\\\"]\\\\"));
		assert_true(strncmp(d.d[2], "{\"type\":\"BOOKMARK\"", 18) == 0);
		for (size_t i = 0; i < d.n; i++) {
			struct cw_k8s_event ev;

			assert_int_equal(cw_k8s_parse_event(d.d[i], strlen(d.d[i]), &ev, err, sizeof(err)), 0);
			cw_k8s_event_clear(&ev);
		}
		docs_clear(&d);
	}
}

static void test_stream_without_newlines(void **state)
{
	struct docs d = { 0 };
	char err[256] = "";

	(void)state;
	/* pretty-printed, and two documents back to back without a separator */
	assert_int_equal(split("{\n  \"type\": \"ADDED\",\n  \"object\": {}\n}{\"a\":[1,{\"b\":2}]}",
			       5, &d, err, sizeof(err)), 0);
	assert_int_equal(d.n, 2);
	assert_string_equal(d.d[1], "{\"a\":[1,{\"b\":2}]}");
	docs_clear(&d);

	/* a stream cut inside a document leaves it pending, not delivered */
	assert_int_equal(split("{\"type\":\"ADDED\"}\n{\"type\":\"MODI", 7, &d, err, sizeof(err)), 2);
	assert_int_equal(d.n, 1);
	docs_clear(&d);
}

static void test_stream_garbage(void **state)
{
	struct cw_k8s_stream st;
	struct docs d = { 0 };
	const char *doc;
	size_t len;
	char err[256] = "";

	(void)state;
	assert_int_equal(split("{\"type\":\"ADDED\"}\nnot json\n", 4, &d, err, sizeof(err)), -EINVAL);
	assert_int_equal(d.n, 1); /* what came before stands */
	assert_non_null(strstr(err, "unexpected 'n' at byte 17"));
	docs_clear(&d);

	assert_int_equal(split("\x01{}", 1, &d, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "byte 0x01 at byte 0"));

	/* failure is sticky: nothing more comes out of a broken stream */
	cw_k8s_stream_init(&st);
	assert_int_equal(cw_k8s_stream_feed(&st, "]{}", 3, err, sizeof(err)), 0);
	assert_int_equal(cw_k8s_stream_next(&st, &doc, &len, err, sizeof(err)), -EINVAL);
	assert_int_equal(cw_k8s_stream_next(&st, &doc, &len, err, sizeof(err)), -EINVAL);
	assert_int_equal(cw_k8s_stream_feed(&st, "{}", 2, err, sizeof(err)), -EINVAL);
	cw_k8s_stream_clear(&st);
	cw_k8s_stream_clear(NULL);
}

static void test_stream_too_large(void **state)
{
	struct cw_k8s_stream st;
	size_t chunk = 1 << 20;
	char *big = malloc(chunk), err[256] = "";
	const char *doc;
	size_t len, fed = 0;
	int rc = 0;

	(void)state;
	assert_non_null(big);
	memset(big, 'x', chunk);
	big[0] = '{';
	big[1] = '"';
	cw_k8s_stream_init(&st);
	while (fed <= CW_K8S_MAX_EVENT && rc == 0) {
		rc = cw_k8s_stream_feed(&st, big, chunk, err, sizeof(err));
		if (rc == 0)
			assert_int_equal(cw_k8s_stream_next(&st, &doc, &len, err, sizeof(err)), 0);
		fed += chunk;
		big[0] = big[1] = 'x';
	}
	assert_int_equal(rc, -E2BIG);
	assert_non_null(strstr(err, "larger than 16 MiB"));
	cw_k8s_stream_clear(&st);
	free(big);
}

/* ----- events ----- */

static int parse_ok(const char *s, struct cw_k8s_event *ev)
{
	char err[256] = "";
	int rc = cw_k8s_parse_event(s, strlen(s), ev, err, sizeof(err));

	if (rc)
		fail_msg("expected %s to parse, got %d: %s", s, rc, err);
	return rc;
}

static void parse_fails(const char *s, const char *needle)
{
	struct cw_k8s_event ev;
	char err[256] = "";

	assert_int_equal(cw_k8s_parse_event(s, strlen(s), &ev, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("for %s: expected \"%s\" in \"%s\"", s, needle, err);
	assert_null(ev.object);
}

static void test_event_types(void **state)
{
	struct cw_k8s_event ev;

	(void)state;
	parse_ok("{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p1\","
		 "\"namespace\":\"default\",\"resourceVersion\":\"101\"}}}", &ev);
	assert_int_equal(ev.type, CW_K8S_ADDED);
	assert_string_equal(ev.key, "default/p1");
	assert_string_equal(ev.rv, "101");
	assert_non_null(ev.object);
	assert_string_equal(cJSON_GetObjectItem(ev.object, "kind")->valuestring, "Pod");
	assert_false(cw_k8s_event_expired(&ev));
	cw_k8s_event_clear(&ev);
	cw_k8s_event_clear(NULL);

	/* cluster-scoped: the key is the bare name */
	parse_ok("{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"node1\","
		 "\"resourceVersion\":\"7\"}}}", &ev);
	assert_int_equal(ev.type, CW_K8S_DELETED);
	assert_string_equal(ev.key, "node1");
	cw_k8s_event_clear(&ev);

	parse_ok("{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"n\",\"namespace\":\"\","
		 "\"resourceVersion\":\"8\"}}}", &ev);
	assert_string_equal(ev.key, "n");
	cw_k8s_event_clear(&ev);
}

static void test_event_bookmark(void **state)
{
	struct cw_k8s_event ev;

	(void)state;
	/* a bookmark carries only the kind and the resourceVersion */
	parse_ok("{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\","
		 "\"metadata\":{\"resourceVersion\":\"12345\",\"annotations\":"
		 "{\"k8s.io/initial-events-end\":\"true\"}}}}", &ev);
	assert_int_equal(ev.type, CW_K8S_BOOKMARK);
	assert_string_equal(ev.rv, "12345");
	assert_string_equal(ev.key, "");
	cw_k8s_event_clear(&ev);

	parse_fails("{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{}}}",
		    "BOOKMARK event without metadata.resourceVersion");
}

static void test_event_error_410(void **state)
{
	struct cw_k8s_event ev;

	(void)state;
	parse_ok("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\","
		 "\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource version: "
		 "5 (77)\",\"reason\":\"Expired\",\"code\":410}}", &ev);
	assert_int_equal(ev.type, CW_K8S_ERROR);
	assert_int_equal(ev.status.code, 410);
	assert_string_equal(ev.status.reason, "Expired");
	assert_string_equal(ev.status.message, "too old resource version: 5 (77)");
	assert_true(cw_k8s_event_expired(&ev));
	cw_k8s_event_clear(&ev);

	/* older servers: reason Gone, and the code alone */
	parse_ok("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"reason\":\"Gone\"}}", &ev);
	assert_true(cw_k8s_event_expired(&ev));
	cw_k8s_event_clear(&ev);
	parse_ok("{\"type\":\"ERROR\",\"object\":{\"code\":410}}", &ev);
	assert_true(cw_k8s_event_expired(&ev));
	cw_k8s_event_clear(&ev);

	/* other errors do not mean "relist" */
	parse_ok("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":500,"
		 "\"reason\":\"InternalError\",\"message\":\"etcd is sad\"}}", &ev);
	assert_false(cw_k8s_event_expired(&ev));
	assert_int_equal(ev.status.code, 500);
	cw_k8s_event_clear(&ev);

	parse_ok("{\"type\":\"ERROR\",\"object\":{\"hello\":1}}", &ev);
	assert_false(cw_k8s_event_expired(&ev));
	assert_string_equal(ev.status.message, "ERROR event without a Status object");
	cw_k8s_event_clear(&ev);
}

static void test_event_malformed(void **state)
{
	(void)state;
	parse_fails("", "watch event is empty");
	parse_fails("{\"type\":\"ADDED\",", "not valid JSON");
	parse_fails("{\"type\":\"ADDED\",\"object\":{}} trailing", "bytes after its JSON value, at byte 29: \"trailing\"");
	parse_fails("[1,2]", "not a JSON object");
	parse_fails("{\"object\":{}}", "without a \"type\"");
	parse_fails("{\"type\":7,\"object\":{}}", "without a \"type\"");
	parse_fails("{\"type\":\"UPSERTED\",\"object\":{}}", "unknown watch event type \"UPSERTED\"");
	parse_fails("{\"type\":\"ADDED\"}", "ADDED event without an object");
	parse_fails("{\"type\":\"ADDED\",\"object\":\"pod\"}", "ADDED event without an object");
	parse_fails("{\"type\":\"ADDED\",\"object\":{}}", "ADDED event: object without metadata");
	parse_fails("{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}}",
		    "MODIFIED event: object without metadata.name");
	parse_fails("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a/b\","
		    "\"resourceVersion\":\"1\"}}}", "metadata.name \"a/b\" is not a valid object name");
	parse_fails("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\\nb\","
		    "\"resourceVersion\":\"1\"}}}", "metadata.name \"a?b\"");
	parse_fails("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"namespace\":"
		    "\"x y\",\"resourceVersion\":\"1\"}}}", "metadata.namespace \"x y\" of a");
	parse_fails("{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"a\","
		    "\"namespace\":\"ns\"}}}", "DELETED event for ns/a without metadata.resourceVersion");
	/* a control byte from the peer never reaches the log as is */
	parse_fails("{\"type\":\"AD\\u001bDED\",\"object\":{}}", "unknown watch event type \"AD?DED\"");
}

static void test_status(void **state)
{
	struct cw_k8s_apistatus st;
	const char *s = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\","
			"\"message\":\"pods is forbidden: User \\\"x\\\" cannot list\","
			"\"reason\":\"Forbidden\",\"code\":403}";

	(void)state;
	assert_true(cw_k8s_parse_status(s, strlen(s), &st));
	assert_int_equal(st.code, 403);
	assert_string_equal(st.reason, "Forbidden");
	assert_string_equal(st.message, "pods is forbidden: User \"x\" cannot list");
	assert_false(cw_k8s_parse_status("<html>", 6, &st));
	assert_false(cw_k8s_parse_status("{\"kind\":\"Pod\"}", 14, &st));
	assert_false(cw_k8s_parse_status(NULL, 0, &st));
}

/* ----- lists ----- */

static void test_list(void **state)
{
	const char *s = "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":"
			"\"900\",\"continue\":\"tok==\"},\"items\":[{\"metadata\":{\"name\":\"a\","
			"\"namespace\":\"ns\",\"resourceVersion\":\"5\"}},{\"kind\":\"Pod\",\"metadata\":"
			"{\"name\":\"b\",\"namespace\":\"ns\",\"resourceVersion\":\"6\"}}]}";
	struct cw_k8s_list l;
	char err[256] = "";
	cJSON *a;

	(void)state;
	assert_int_equal(cw_k8s_parse_list(s, strlen(s), &l, err, sizeof(err)), 0);
	assert_string_equal(l.rv, "900");
	assert_string_equal(l.cont, "tok==");
	assert_int_equal(cJSON_GetArraySize(l.items), 2);
	/* items get the kind a watch event's object has */
	a = cJSON_GetArrayItem(l.items, 0);
	assert_string_equal(cJSON_GetObjectItem(a, "kind")->valuestring, "Pod");
	assert_string_equal(cJSON_GetObjectItem(a, "apiVersion")->valuestring, "v1");
	cw_k8s_list_clear(&l);
	cw_k8s_list_clear(NULL);

	s = "{\"kind\":\"NamespaceList\",\"metadata\":{\"resourceVersion\":\"3\",\"continue\":\"\"},"
	    "\"items\":null}";
	assert_int_equal(cw_k8s_parse_list(s, strlen(s), &l, err, sizeof(err)), 0);
	assert_null(l.cont);
	assert_int_equal(cJSON_GetArraySize(l.items), 0);
	cw_k8s_list_clear(&l);
}

static void list_fails(const char *s, const char *needle)
{
	struct cw_k8s_list l;
	char err[256] = "";

	assert_int_equal(cw_k8s_parse_list(s, strlen(s), &l, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("for %s: expected \"%s\" in \"%s\"", s, needle, err);
	assert_null(l.items);
	assert_null(l.rv);
}

static void test_list_malformed(void **state)
{
	(void)state;
	list_fails("{\"items\":[]}", "list without metadata");
	list_fails("{\"metadata\":{},\"items\":[]}", "list without metadata.resourceVersion");
	list_fails("{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":{}}", "\"items\" is not an array");
	list_fails("{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[{\"metadata\":{\"name\":\"a\","
		   "\"resourceVersion\":\"1\"}},{\"metadata\":{}}]}",
		   "list items[1]: object without metadata.name");
	list_fails("{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[{\"metadata\":{\"name\":\"a\"}}]}",
		   "list items[0] (a) without metadata.resourceVersion");
	list_fails("{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[]", "not valid JSON");
}

/* ----- URLs ----- */

static void test_urls(void **state)
{
	char *u;

	(void)state;
	u = cw_k8s_list_url("https://10.96.0.1:443/", "/api/v1/pods", "spec.nodeName=node-1",
			    "app in (a,b)", 500, NULL);
	assert_string_equal(u, "https://10.96.0.1:443/api/v1/pods?limit=500&fieldSelector="
			       "spec.nodeName%3Dnode-1&labelSelector=app%20in%20%28a%2Cb%29");
	free(u);
	u = cw_k8s_list_url("http://127.0.0.1:8080", "/api/v1/nodes", NULL, "", 0, "eyJ2/+=");
	assert_string_equal(u, "http://127.0.0.1:8080/api/v1/nodes?continue=eyJ2%2F%2B%3D");
	free(u);
	u = cw_k8s_watch_url("http://h:1", "/apis/discovery.k8s.io/v1/endpointslices", NULL, NULL,
			     "4711", 300);
	assert_string_equal(u, "http://h:1/apis/discovery.k8s.io/v1/endpointslices?watch=1&"
			       "resourceVersion=4711&allowWatchBookmarks=true&timeoutSeconds=300");
	free(u);
	u = cw_k8s_watch_url("http://h:1", "/api/v1/nodes", "metadata.name=n1", NULL, NULL, 0);
	assert_string_equal(u, "http://h:1/api/v1/nodes?watch=1&allowWatchBookmarks=true&"
			       "fieldSelector=metadata.name%3Dn1");
	free(u);
	/* a path is a collection path, nothing to smuggle a query through */
	assert_null(cw_k8s_list_url("http://h", "api/v1/pods", NULL, NULL, 1, NULL));
	assert_null(cw_k8s_list_url("http://h", "/api/v1/pods?watch=1", NULL, NULL, 1, NULL));
	assert_null(cw_k8s_watch_url("http://h", "/api/v1/pods\r\nX: y", NULL, NULL, "1", 1));
	assert_null(cw_k8s_watch_url("http://h", NULL, NULL, NULL, "1", 1));
}

/* ----- the cache ----- */

static cJSON *obj(const char *ns, const char *name, const char *rv, const char *label)
{
	cJSON *o = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(o, "metadata");

	cJSON_AddStringToObject(o, "kind", "Pod");
	cJSON_AddStringToObject(md, "name", name);
	if (ns)
		cJSON_AddStringToObject(md, "namespace", ns);
	cJSON_AddStringToObject(md, "resourceVersion", rv);
	if (label)
		cJSON_AddStringToObject(cJSON_AddObjectToObject(md, "labels"), "app", label);
	return o;
}

/* What the handler heard, one line per event: "ADDED ns/a 1 (old -)". */
struct heard {
	struct cw_k8s_cache *c;
	char log[4096];
	int stop_after;   /* > 0: return -EINTR from the n-th event */
	int n;
};

static int on_event(enum cw_k8s_event_type type, const cJSON *o, const cJSON *old, void *arg)
{
	struct heard *h = arg;
	const cJSON *md = cJSON_GetObjectItem(o, "metadata");
	const cJSON *ns = cJSON_GetObjectItem(md, "namespace");
	const char *name = cJSON_GetObjectItem(md, "name")->valuestring;
	const cJSON *cached = cw_k8s_cache_get(h->c, ns ? ns->valuestring : NULL, name);
	size_t len = strlen(h->log);

	/* the handler runs after the cache took the change */
	if (type == CW_K8S_DELETED)
		assert_null(cached);
	else
		assert_ptr_equal(cached, o);
	if (type == CW_K8S_ADDED)
		assert_null(old);
	else
		assert_non_null(old);
	snprintf(h->log + len, sizeof(h->log) - len, "%s %s%s%s %s (old %s)\n",
		 cw_k8s_event_name(type), ns ? ns->valuestring : "", ns ? "/" : "", name,
		 cw_k8s_object_rv(o), old ? cw_k8s_object_rv(old) : "-");
	if (h->stop_after && ++h->n == h->stop_after)
		return -EINTR;
	return 0;
}

static void test_cache_apply(void **state)
{
	struct heard h = { 0 };

	(void)state;
	assert_int_equal(cw_k8s_cache_new(&h.c), 0);
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_ADDED, obj("ns", "a", "1", NULL), on_event, &h), 0);
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_ADDED, obj(NULL, "node", "2", NULL), on_event, &h), 0);
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_MODIFIED, obj("ns", "a", "3", NULL), on_event, &h), 0);
	/* replayed: same version, nothing changed, nothing told */
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_MODIFIED, obj("ns", "a", "3", NULL), on_event, &h), 0);
	/* ADDED of a known key is a change of it; MODIFIED of an unknown one an addition */
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_ADDED, obj("ns", "a", "4", NULL), on_event, &h), 0);
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_MODIFIED, obj("ns", "b", "5", NULL), on_event, &h), 0);
	assert_int_equal(cw_k8s_cache_count(h.c), 3);
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_DELETED, obj("ns", "a", "6", NULL), on_event, &h), 0);
	/* deleting what the cache never had tells nothing */
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_DELETED, obj("ns", "zz", "7", NULL), on_event, &h), 0);
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_BOOKMARK, obj("ns", "zz", "7", NULL), on_event, &h), -EINVAL);
	assert_int_equal(cw_k8s_cache_apply(h.c, CW_K8S_ADDED, cJSON_CreateObject(), on_event, &h), -EINVAL);
	assert_string_equal(h.log,
			    "ADDED ns/a 1 (old -)\n"
			    "ADDED node 2 (old -)\n"
			    "MODIFIED ns/a 3 (old 1)\n"
			    "MODIFIED ns/a 4 (old 3)\n"
			    "ADDED ns/b 5 (old -)\n"
			    "DELETED ns/a 6 (old 4)\n");
	assert_int_equal(cw_k8s_cache_count(h.c), 2);
	assert_null(cw_k8s_cache_get(h.c, "ns", "a"));
	assert_non_null(cw_k8s_cache_get(h.c, "", "node"));
	assert_non_null(cw_k8s_cache_get(h.c, NULL, "node"));
	assert_null(cw_k8s_cache_get(h.c, "ns", "node"));
	cw_k8s_cache_free(h.c);
	cw_k8s_cache_free(NULL);
}

static void test_cache_replace_diff(void **state)
{
	struct heard h = { 0 };
	cJSON *items;

	(void)state;
	assert_int_equal(cw_k8s_cache_new(&h.c), 0);
	items = cJSON_CreateArray();
	cJSON_AddItemToArray(items, obj("ns", "keep", "1", "x"));
	cJSON_AddItemToArray(items, obj("ns", "change", "2", "x"));
	cJSON_AddItemToArray(items, obj("ns", "gone2", "3", NULL));
	cJSON_AddItemToArray(items, obj("ns", "gone1", "4", NULL));
	assert_int_equal(cw_k8s_cache_replace(h.c, items, on_event, &h), 0);
	assert_string_equal(h.log, "ADDED ns/keep 1 (old -)\nADDED ns/change 2 (old -)\n"
				   "ADDED ns/gone2 3 (old -)\nADDED ns/gone1 4 (old -)\n");
	h.log[0] = '\0';

	/* the relist after a 410: the difference, deletions first in key order */
	items = cJSON_CreateArray();
	cJSON_AddItemToArray(items, obj("ns", "new", "9", NULL));
	cJSON_AddItemToArray(items, obj("ns", "change", "8", "y"));
	cJSON_AddItemToArray(items, obj("ns", "keep", "1", "x"));
	assert_int_equal(cw_k8s_cache_replace(h.c, items, on_event, &h), 0);
	assert_string_equal(h.log, "DELETED ns/gone1 4 (old 4)\nDELETED ns/gone2 3 (old 3)\n"
				   "ADDED ns/new 9 (old -)\nMODIFIED ns/change 8 (old 2)\n");
	assert_int_equal(cw_k8s_cache_count(h.c), 3);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(
				cw_k8s_cache_get(h.c, "ns", "change"), "metadata"), "labels"), "app")->valuestring,
			    "y");
	h.log[0] = '\0';

	/* an empty list empties the cache; not an array is refused */
	assert_int_equal(cw_k8s_cache_replace(h.c, cJSON_CreateArray(), on_event, &h), 0);
	assert_int_equal(cw_k8s_cache_count(h.c), 0);
	assert_int_equal(cw_k8s_cache_replace(h.c, cJSON_CreateObject(), on_event, &h), -EINVAL);
	cw_k8s_cache_free(h.c);
}

static void test_cache_replace_stops(void **state)
{
	struct heard h = { .stop_after = 2 };
	cJSON *items = cJSON_CreateArray();

	(void)state;
	assert_int_equal(cw_k8s_cache_new(&h.c), 0);
	for (int i = 0; i < 5; i++) {
		char name[8];

		snprintf(name, sizeof(name), "p%d", i);
		cJSON_AddItemToArray(items, obj("ns", name, "1", NULL));
	}
	/* a handler's non-zero return stops the delivery and is returned; nothing leaks */
	assert_int_equal(cw_k8s_cache_replace(h.c, items, on_event, &h), -EINTR);
	assert_int_equal(cw_k8s_cache_count(h.c), 2);
	cw_k8s_cache_free(h.c);
}

static int count_fn(const cJSON *o, void *arg)
{
	(void)o;
	(*(size_t *)arg)++;
	return 0;
}

static void test_cache_many(void **state)
{
	struct cw_k8s_cache *c;
	size_t n = 0;
	char name[16];

	(void)state;
	assert_int_equal(cw_k8s_cache_new(&c), 0);
	/* past several doublings of the table */
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "pod-%d", i);
		assert_int_equal(cw_k8s_cache_apply(c, CW_K8S_ADDED, obj(i % 2 ? "a" : "b", name, "1", NULL),
						    NULL, NULL), 0);
	}
	assert_int_equal(cw_k8s_cache_count(c), 5000);
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "pod-%d", i);
		assert_non_null(cw_k8s_cache_get(c, i % 2 ? "a" : "b", name));
		assert_null(cw_k8s_cache_get(c, i % 2 ? "b" : "a", name));
	}
	assert_int_equal(cw_k8s_cache_foreach(c, count_fn, &n), 0);
	assert_int_equal(n, 5000);
	cw_k8s_cache_free(c);
}

/* ----- configuration ----- */

static char tmpdir[64];

static void write_file(const char *dir, const char *name, const char *data)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(data, f);
	fclose(f);
}

static int config_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/cw-k8s-unit.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int config_teardown(void **state)
{
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/token", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/ca.crt", tmpdir);
	unlink(path);
	return rmdir(tmpdir);
}

static int new_client(const struct cw_k8s_config *cfg, char *err, size_t errlen)
{
	struct cw_k8s *k = NULL;
	int rc = cw_k8s_new(NULL, cfg, &k, err, errlen);

	if (rc == 0) {
		snprintf(err, errlen, "%s", cw_k8s_url(k));
		cw_k8s_free(k);
	}
	return rc;
}

static void test_config_in_cluster(void **state)
{
	struct cw_k8s_config cfg = { .sa_dir = tmpdir };
	char err[512];

	(void)state;
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST is not set"));

	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_PORT is not set"));
	setenv("KUBERNETES_SERVICE_PORT", "https", 1);
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_PORT \"https\" is not a port number"));
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);

	/* the service account's files, named */
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "in-cluster config: CA file "));
	assert_non_null(strstr(err, "/ca.crt: No such file or directory"));
	write_file(tmpdir, "ca.crt", "-----BEGIN CERTIFICATE-----\n");
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "in-cluster config: token file "));
	assert_non_null(strstr(err, "/token: No such file or directory"));
	write_file(tmpdir, "token", " \n");
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "/token is empty"));
	write_file(tmpdir, "token", "abc\r\nX-Evil: 1\n");
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "byte 0x0d at offset 3 cannot be in a bearer token"));
	write_file(tmpdir, "token", "eyJhbGciOi.payload.sig\n");
	assert_int_equal(new_client(&cfg, err, sizeof(err)), 0);
	assert_string_equal(err, "https://10.96.0.1:443");

	/* an IPv6 service address goes in brackets */
	setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1", 1);
	assert_int_equal(new_client(&cfg, err, sizeof(err)), 0);
	assert_string_equal(err, "https://[fd00:10:96::1]:443");
	setenv("KUBERNETES_SERVICE_HOST", "evil/path", 1);
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST \"evil/path\" is not a host"));
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
}

static void test_config_explicit(void **state)
{
	struct cw_k8s_config cfg = { .url = "127.0.0.1:6443" };
	char err[512], tok[128];

	(void)state;
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "API server URL \"127.0.0.1:6443\" must start with https://"));
	cfg.url = "http://127.0.0.1:8080//";
	assert_int_equal(new_client(&cfg, err, sizeof(err)), 0);
	assert_string_equal(err, "http://127.0.0.1:8080");
	cfg.url = "https://api.example:6443";
	cfg.ca_file = "/nonexistent/ca.pem";
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "CA file /nonexistent/ca.pem: No such file or directory");
	cfg.ca_file = NULL;
	snprintf(tok, sizeof(tok), "%s/missing-token", tmpdir);
	cfg.token_file = tok;
	assert_int_equal(new_client(&cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "missing-token: No such file or directory"));
}

/*
 * cw_k8s_slim: keeps the listed subtrees and the object's identity, walks
 * into every element of a list, drops managedFields and kubectl's copy of
 * the object, and leaves a malformed value where a path leads through it.
 */
static void test_slim(void **state)
{
	static const char *const keep[] = { "metadata.labels", "spec.ports.port", "status.conditions",
					    "spec.nothing.here", NULL };
	cJSON *o = cJSON_Parse(
		"{\"apiVersion\":\"v1\",\"kind\":\"Thing\",\"metadata\":{\"name\":\"a\",\"namespace\":\"ns\","
		"\"resourceVersion\":\"7\",\"uid\":\"u\",\"labels\":{\"app\":\"x\"},"
		"\"annotations\":{\"kubectl.kubernetes.io/last-applied-configuration\":\"{}\",\"k\":\"v\"},"
		"\"managedFields\":[{\"manager\":\"kubectl\"}]},"
		"\"spec\":{\"ports\":[{\"port\":80,\"name\":\"http\"},{\"port\":53},7],\"selector\":{\"a\":\"b\"}},"
		"\"status\":{\"conditions\":[{\"type\":\"Ready\"}],\"phase\":\"Running\"}}");
	char *txt;

	(void)state;
	assert_non_null(o);
	cw_k8s_slim(o, keep);
	txt = cJSON_PrintUnformatted(o);
	assert_non_null(txt);
	assert_string_equal(txt,
			    "{\"metadata\":{\"name\":\"a\",\"namespace\":\"ns\",\"resourceVersion\":\"7\","
			    "\"labels\":{\"app\":\"x\"}},\"spec\":{\"ports\":[{\"port\":80},{\"port\":53},7]},"
			    "\"status\":{\"conditions\":[{\"type\":\"Ready\"}]}}");
	free(txt);
	cJSON_Delete(o);

	/* annotations kept, kubectl's copy of the object not */
	o = cJSON_Parse("{\"metadata\":{\"name\":\"a\",\"annotations\":{\"k\":\"v\","
			"\"kubectl.kubernetes.io/last-applied-configuration\":\"{}\"}}}");
	cw_k8s_slim(o, (const char *const[]){ "metadata.annotations", NULL });
	txt = cJSON_PrintUnformatted(o);
	assert_string_equal(txt, "{\"metadata\":{\"name\":\"a\",\"annotations\":{\"k\":\"v\"}}}");
	free(txt);
	cJSON_Delete(o);

	/* a path through a scalar or a missing field changes nothing there; NULL keeps all */
	o = cJSON_Parse("{\"metadata\":\"oops\",\"spec\":{\"x\":1}}");
	cw_k8s_slim(o, (const char *const[]){ "spec.x.y", NULL });
	txt = cJSON_PrintUnformatted(o);
	assert_string_equal(txt, "{\"metadata\":\"oops\",\"spec\":{\"x\":1}}");
	free(txt);
	cw_k8s_slim(o, NULL);
	txt = cJSON_PrintUnformatted(o);
	assert_string_equal(txt, "{\"metadata\":\"oops\",\"spec\":{\"x\":1}}");
	free(txt);
	cJSON_Delete(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_chunk_boundaries),
		cmocka_unit_test(test_stream_without_newlines),
		cmocka_unit_test(test_stream_garbage),
		cmocka_unit_test(test_stream_too_large),
		cmocka_unit_test(test_event_types),
		cmocka_unit_test(test_event_bookmark),
		cmocka_unit_test(test_event_error_410),
		cmocka_unit_test(test_event_malformed),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_list_malformed),
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_cache_apply),
		cmocka_unit_test(test_cache_replace_diff),
		cmocka_unit_test(test_cache_replace_stops),
		cmocka_unit_test(test_cache_many),
		cmocka_unit_test(test_slim),
		cmocka_unit_test_setup_teardown(test_config_in_cluster, config_setup, config_teardown),
		cmocka_unit_test_setup_teardown(test_config_explicit, config_setup, config_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
