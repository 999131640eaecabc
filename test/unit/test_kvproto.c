// SPDX-License-Identifier: Apache-2.0
/* helper/kvproto.c: etcd v3 gateway messages, built and parsed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "kvproto.h"

static cJSON *parse_req(char *s)
{
	cJSON *o;

	assert_non_null(s);
	o = cJSON_Parse(s);
	free(s);
	assert_non_null(o);
	return o;
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_prefix_end(void **state)
{
	char out[32];

	(void)state;
	assert_int_equal(cw_kvp_prefix_end("cilium/state/nodes/v1/", out, sizeof(out)), 0);
	assert_string_equal(out, "cilium/state/nodes/v10");
	assert_int_equal(cw_kvp_prefix_end("a\xff\xff", out, sizeof(out)), 0);
	assert_string_equal(out, "b");
	assert_int_equal(cw_kvp_prefix_end("\xff", out, sizeof(out)), 0);
	assert_string_equal(out, ""); /* to the end of the keyspace */
	assert_int_equal(cw_kvp_prefix_end("abc", out, 3), -ENAMETOOLONG);
}

static void test_range_req(void **state)
{
	cJSON *o;

	(void)state;
	/* keys in base64, int64 as strings, as the gateway's JSON mapping wants */
	o = parse_req(cw_kvp_range_req("cilium/state/nodes/v1/", "cilium/state/nodes/v10", 500, 42, false));
	assert_string_equal(str(o, "key"), "Y2lsaXVtL3N0YXRlL25vZGVzL3YxLw==");
	assert_string_equal(str(o, "range_end"), "Y2lsaXVtL3N0YXRlL25vZGVzL3YxMA==");
	assert_string_equal(str(o, "limit"), "500");
	assert_string_equal(str(o, "revision"), "42");
	assert_null(cJSON_GetObjectItem(o, "count_only"));
	cJSON_Delete(o);

	o = parse_req(cw_kvp_range_req("a", NULL, 0, 0, true));
	assert_string_equal(str(o, "key"), "YQ==");
	assert_null(str(o, "range_end"));
	assert_null(str(o, "limit"));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "count_only")));
	cJSON_Delete(o);

	/* "" range_end: everything from key on, sent as the single byte 0 */
	o = parse_req(cw_kvp_range_req("a", "", 0, 0, false));
	assert_string_equal(str(o, "range_end"), "AA==");
	cJSON_Delete(o);
}

static void test_put_and_txn_req(void **state)
{
	cJSON *o, *c, *put;

	(void)state;
	o = parse_req(cw_kvp_put_req("v", "a", 1, 7));
	assert_string_equal(str(o, "key"), "dg==");
	assert_string_equal(str(o, "value"), "YQ==");
	assert_string_equal(str(o, "lease"), "7");
	cJSON_Delete(o);

	o = parse_req(cw_kvp_create_req("v", "a", 1, 0));
	c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "compare"), 0);
	assert_string_equal(str(c, "target"), "CREATE");
	assert_string_equal(str(c, "result"), "EQUAL");
	assert_string_equal(str(c, "create_revision"), "0");
	put = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "success"), 0), "request_put");
	assert_string_equal(str(put, "key"), "dg==");
	assert_null(str(put, "lease"));
	cJSON_Delete(o);

	o = parse_req(cw_kvp_cas_req("v", 99, "a", 1, 3));
	c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "compare"), 0);
	assert_string_equal(str(c, "target"), "MOD");
	assert_string_equal(str(c, "mod_revision"), "99");
	put = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "success"), 0), "request_put");
	assert_string_equal(str(put, "lease"), "3");
	cJSON_Delete(o);

	o = parse_req(cw_kvp_watch_create_req("v", "w", 12, true));
	c = cJSON_GetObjectItem(o, "create_request");
	assert_string_equal(str(c, "key"), "dg==");
	assert_string_equal(str(c, "start_revision"), "12");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(c, "progress_notify")));
	cJSON_Delete(o);
}

static void test_parse_range(void **state)
{
	/* as etcd 3.4's gateway answers: zero values omitted, int64 as strings */
	static const char resp[] =
		"{\"header\":{\"cluster_id\":\"1\",\"member_id\":\"2\",\"revision\":\"57\",\"raft_term\":\"2\"},"
		"\"kvs\":[{\"key\":\"dg==\",\"create_revision\":\"5\",\"mod_revision\":\"56\",\"version\":\"3\","
		"\"value\":\"YQ==\",\"lease\":\"694d7a1b2c3d4e5f\"},"
		"{\"key\":\"dw==\",\"create_revision\":\"6\",\"mod_revision\":\"6\",\"version\":\"1\"}],"
		"\"more\":true,\"count\":\"10\"}";
	struct cw_kv_range_resp r;
	char err[128];

	(void)state;
	/* lease ids are decimal int64 on the wire; hex is malformed */
	assert_int_equal(cw_kvp_parse_range(resp, strlen(resp), &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "malformed"));
}

static void test_parse_range_ok(void **state)
{
	static const char resp[] =
		"{\"header\":{\"revision\":\"57\"},"
		"\"kvs\":[{\"key\":\"dg==\",\"create_revision\":\"5\",\"mod_revision\":\"56\",\"version\":\"3\","
		"\"value\":\"YQ==\",\"lease\":\"7587862347\"},"
		"{\"key\":\"dw==\",\"create_revision\":\"6\",\"mod_revision\":\"6\",\"version\":\"1\"}],"
		"\"more\":true,\"count\":\"10\"}";
	struct cw_kv_range_resp r;
	char err[128];

	(void)state;
	assert_int_equal(cw_kvp_parse_range(resp, strlen(resp), &r, err, sizeof(err)), 0);
	assert_int_equal(r.revision, 57);
	assert_int_equal(r.count, 10);
	assert_true(r.more);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.kvs[0].key, "v");
	assert_string_equal(r.kvs[0].value, "a");
	assert_int_equal(r.kvs[0].value_len, 1);
	assert_int_equal(r.kvs[0].mod_revision, 56);
	assert_int_equal(r.kvs[0].lease, 7587862347LL);
	assert_string_equal(r.kvs[1].key, "w");
	assert_int_equal(r.kvs[1].value_len, 0); /* empty value omitted on the wire */
	cw_kvp_range_clear(&r);

	/* an empty range: no kvs, no count */
	assert_int_equal(cw_kvp_parse_range("{\"header\":{\"revision\":\"3\"}}", 30, &r, err, sizeof(err)), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.revision, 3);
	cw_kvp_range_clear(&r);
}

static void test_parse_errors(void **state)
{
	static const char denied[] =
		"{\"error\":\"etcdserver: permission denied\",\"code\":7,\"message\":\"etcdserver: permission denied\"}";
	static const char bad_b64[] = "{\"header\":{\"revision\":\"1\"},\"kvs\":[{\"key\":\"!!!\"}]}";
	struct cw_kv_range_resp r;
	struct cw_kv_error e;
	char err[128];

	(void)state;
	assert_true(cw_kvp_parse_error(denied, strlen(denied), &e));
	assert_int_equal(e.code, CW_GRPC_PERMISSION_DENIED);
	assert_string_equal(e.message, "etcdserver: permission denied");
	assert_int_equal(cw_kvp_parse_range(denied, strlen(denied), &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "permission denied"));
	assert_int_equal(cw_kvp_parse_range(bad_b64, strlen(bad_b64), &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "base64"));
	assert_int_equal(cw_kvp_parse_range("[1]", 3, &r, err, sizeof(err)), -EINVAL);
	assert_int_equal(cw_kvp_parse_range("{", 1, &r, err, sizeof(err)), -EINVAL);
	assert_false(cw_kvp_parse_error("{\"header\":{}}", 13, &e));
}

static void test_parse_txn_lease_auth(void **state)
{
	static const char txn[] = "{\"header\":{\"revision\":\"9\"},\"succeeded\":true}";
	static const char lost[] = "{\"header\":{\"revision\":\"9\"}}";
	static const char grant[] = "{\"header\":{\"revision\":\"9\"},\"ID\":\"7587862347\",\"TTL\":\"10\"}";
	static const char ka[] = "{\"result\":{\"header\":{\"revision\":\"9\"},\"ID\":\"7587862347\",\"TTL\":\"10\"}}";
	static const char expired[] = "{\"result\":{\"header\":{\"revision\":\"9\"},\"ID\":\"7587862347\"}}";
	static const char auth[] = "{\"header\":{\"revision\":\"9\"},\"token\":\"abc.123\"}";
	int64_t rev, id, ttl;
	char err[128], tok[64];
	bool ok;

	(void)state;
	assert_int_equal(cw_kvp_parse_txn(txn, strlen(txn), &ok, &rev, err, sizeof(err)), 0);
	assert_true(ok);
	assert_int_equal(rev, 9);
	assert_int_equal(cw_kvp_parse_txn(lost, strlen(lost), &ok, &rev, err, sizeof(err)), 0);
	assert_false(ok); /* false is the zero value: omitted */
	assert_int_equal(cw_kvp_parse_lease(grant, strlen(grant), &id, &ttl, err, sizeof(err)), 0);
	assert_int_equal(id, 7587862347LL);
	assert_int_equal(ttl, 10);
	assert_int_equal(cw_kvp_parse_lease(ka, strlen(ka), &id, &ttl, err, sizeof(err)), 0);
	assert_int_equal(ttl, 10);
	assert_int_equal(cw_kvp_parse_lease(expired, strlen(expired), &id, &ttl, err, sizeof(err)), 0);
	assert_int_equal(ttl, 0);
	assert_int_equal(cw_kvp_parse_auth(auth, strlen(auth), tok, sizeof(tok), err, sizeof(err)), 0);
	assert_string_equal(tok, "abc.123");
	assert_int_equal(cw_kvp_parse_auth(auth, strlen(auth), tok, 4, err, sizeof(err)), -EINVAL);
}

static void test_parse_watch(void **state)
{
	static const char created[] =
		"{\"result\":{\"header\":{\"revision\":\"20\"},\"created\":true}}";
	static const char events[] =
		"{\"result\":{\"header\":{\"revision\":\"22\"},\"events\":["
		"{\"kv\":{\"key\":\"dg==\",\"create_revision\":\"21\",\"mod_revision\":\"21\",\"version\":\"1\",\"value\":\"YQ==\"}},"
		"{\"type\":\"DELETE\",\"kv\":{\"key\":\"dw==\",\"mod_revision\":\"22\"}}]}}";
	static const char compacted[] =
		"{\"result\":{\"header\":{\"revision\":\"30\"},\"canceled\":true,\"compact_revision\":\"25\","
		"\"cancel_reason\":\"etcdserver: mvcc: required revision has been compacted\"}}";
	static const char stream_err[] =
		"{\"error\":{\"grpc_code\":16,\"http_code\":401,\"message\":\"etcdserver: invalid auth token\"}}";
	struct cw_kv_watch_resp w;
	struct cw_kv_error e;
	char err[128];

	(void)state;
	assert_int_equal(cw_kvp_parse_watch(created, strlen(created), &w, err, sizeof(err)), 0);
	assert_true(w.created);
	assert_int_equal(w.n, 0);
	cw_kvp_watch_clear(&w);

	assert_int_equal(cw_kvp_parse_watch(events, strlen(events), &w, err, sizeof(err)), 0);
	assert_int_equal(w.revision, 22);
	assert_int_equal(w.n, 2);
	assert_int_equal(w.events[0].type, CW_KV_PUT); /* PUT = 0: type omitted */
	assert_string_equal(w.events[0].kv.key, "v");
	assert_string_equal(w.events[0].kv.value, "a");
	assert_int_equal(w.events[1].type, CW_KV_DELETE);
	assert_string_equal(w.events[1].kv.key, "w");
	assert_int_equal(w.events[1].kv.mod_revision, 22);
	cw_kvp_watch_clear(&w);

	assert_int_equal(cw_kvp_parse_watch(compacted, strlen(compacted), &w, err, sizeof(err)), 0);
	assert_true(w.canceled);
	assert_int_equal(w.compact_revision, 25);
	assert_non_null(strstr(w.cancel_reason, "compacted"));
	cw_kvp_watch_clear(&w);

	assert_true(cw_kvp_parse_error(stream_err, strlen(stream_err), &e));
	assert_int_equal(e.code, CW_GRPC_UNAUTHENTICATED);
	assert_int_equal(cw_kvp_parse_watch(stream_err, strlen(stream_err), &w, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "invalid auth token"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefix_end),
		cmocka_unit_test(test_range_req),
		cmocka_unit_test(test_put_and_txn_req),
		cmocka_unit_test(test_parse_range),
		cmocka_unit_test(test_parse_range_ok),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_txn_lease_auth),
		cmocka_unit_test(test_parse_watch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
