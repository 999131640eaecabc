// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include <sodium.h>

#include "kvproto.h"

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

#define ERR(...) fail(err, errlen, __VA_ARGS__)

static char *b64(const void *data, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	char *out = malloc(cap);

	if (out)
		sodium_bin2base64(out, cap, data, len, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

/* Decoded bytes, NUL-terminated for convenience; NULL on bad base64. */
static char *unb64(const char *s, size_t *out_len)
{
	size_t slen = strlen(s), n = 0;
	char *out = malloc(slen + 1);

	if (!out)
		return NULL;
	if (sodium_base642bin((unsigned char *)out, slen, s, slen, NULL, &n, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0) {
		free(out);
		return NULL;
	}
	out[n] = '\0';
	if (out_len)
		*out_len = n;
	return out;
}

int cw_kvp_prefix_end(const char *prefix, char *out, size_t len)
{
	size_t n = strlen(prefix);

	if (n + 1 > len)
		return -ENAMETOOLONG;
	memcpy(out, prefix, n + 1);
	/* etcd's rule (clientv3.GetPrefixRangeEnd): bump the last byte that
	 * is not 0xff, dropping what follows; all-0xff means "to the end",
	 * spelled as the single byte 0. */
	while (n > 0) {
		if ((unsigned char)out[n - 1] < 0xff) {
			out[n - 1]++;
			out[n] = '\0';
			return 0;
		}
		n--;
	}
	out[0] = '\0';
	return 0;
}

static bool add_b64(cJSON *o, const char *name, const void *data, size_t len)
{
	char *s = b64(data, len);
	bool ok = s && cJSON_AddStringToObject(o, name, s);

	free(s);
	return ok;
}

static bool add_int64(cJSON *o, const char *name, int64_t v)
{
	char buf[24];

	/* int64 as a string, as the gateway's protobuf JSON mapping writes it */
	snprintf(buf, sizeof(buf), "%" PRId64, v);
	return cJSON_AddStringToObject(o, name, buf) != NULL;
}

static char *finish(cJSON *o, bool ok)
{
	char *s = ok ? cJSON_PrintUnformatted(o) : NULL;

	cJSON_Delete(o);
	return s;
}

char *cw_kvp_range_req(const char *key, const char *range_end, int64_t limit, int64_t revision,
		       bool count_only)
{
	cJSON *o = cJSON_CreateObject();
	bool ok = o && add_b64(o, "key", key, strlen(key));

	/* An empty range_end means "to the end of the keyspace": "\0". */
	if (ok && range_end)
		ok = range_end[0] ? add_b64(o, "range_end", range_end, strlen(range_end)) :
				    add_b64(o, "range_end", "", 1);
	if (ok && limit > 0)
		ok = add_int64(o, "limit", limit);
	if (ok && revision > 0)
		ok = add_int64(o, "revision", revision);
	if (ok && count_only)
		ok = cJSON_AddBoolToObject(o, "count_only", true) != NULL;
	return finish(o, ok);
}

char *cw_kvp_put_req(const char *key, const void *val, size_t len, int64_t lease)
{
	cJSON *o = cJSON_CreateObject();
	bool ok = o && add_b64(o, "key", key, strlen(key)) && add_b64(o, "value", val, len);

	if (ok && lease)
		ok = add_int64(o, "lease", lease);
	return finish(o, ok);
}

char *cw_kvp_delete_req(const char *key, const char *range_end)
{
	cJSON *o = cJSON_CreateObject();
	bool ok = o && add_b64(o, "key", key, strlen(key));

	if (ok && range_end)
		ok = range_end[0] ? add_b64(o, "range_end", range_end, strlen(range_end)) :
				    add_b64(o, "range_end", "", 1);
	return finish(o, ok);
}

static char *txn_put_if(const char *key, const char *target, const char *field, int64_t want,
			const void *val, size_t len, int64_t lease)
{
	cJSON *o = cJSON_CreateObject(), *cmp, *c, *succ, *op, *put;
	bool ok = o != NULL;

	cmp = ok ? cJSON_AddArrayToObject(o, "compare") : NULL;
	c = cJSON_CreateObject();
	ok = cmp && c && add_b64(c, "key", key, strlen(key)) &&
	     cJSON_AddStringToObject(c, "target", target) &&
	     cJSON_AddStringToObject(c, "result", "EQUAL") && add_int64(c, field, want);
	if (c)
		cJSON_AddItemToArray(cmp, c);
	succ = ok ? cJSON_AddArrayToObject(o, "success") : NULL;
	op = cJSON_CreateObject();
	put = op ? cJSON_AddObjectToObject(op, "request_put") : NULL;
	ok = ok && succ && put && add_b64(put, "key", key, strlen(key)) &&
	     add_b64(put, "value", val, len) && (!lease || add_int64(put, "lease", lease));
	if (op)
		cJSON_AddItemToArray(succ ? succ : cmp, op);
	return finish(o, ok);
}

char *cw_kvp_create_req(const char *key, const void *val, size_t len, int64_t lease)
{
	return txn_put_if(key, "CREATE", "create_revision", 0, val, len, lease);
}

char *cw_kvp_cas_req(const char *key, int64_t mod_revision, const void *val, size_t len,
		     int64_t lease)
{
	return txn_put_if(key, "MOD", "mod_revision", mod_revision, val, len, lease);
}

char *cw_kvp_txn_req(const struct cw_kvp_absent *absent, size_t n_absent,
		     const struct cw_kvp_put *puts, size_t n_puts)
{
	cJSON *o = cJSON_CreateObject(), *cmp = NULL, *succ = NULL;
	bool ok = o != NULL;

	if (ok)
		cmp = cJSON_AddArrayToObject(o, "compare");
	if (ok)
		succ = cJSON_AddArrayToObject(o, "success");
	ok = cmp && succ;
	for (size_t i = 0; ok && i < n_absent; i++) {
		cJSON *c = cJSON_CreateObject();

		/*
		 * create_revision == 0 over a range holds when no key of the
		 * range exists (etcd compares an empty range as a zero key).
		 */
		ok = c && add_b64(c, "key", absent[i].key, strlen(absent[i].key)) &&
		     (!absent[i].range_end ||
		      add_b64(c, "range_end", absent[i].range_end, strlen(absent[i].range_end))) &&
		     cJSON_AddStringToObject(c, "target", "CREATE") &&
		     cJSON_AddStringToObject(c, "result", "EQUAL") &&
		     add_int64(c, "create_revision", 0);
		if (c)
			cJSON_AddItemToArray(cmp, c);
	}
	for (size_t i = 0; ok && i < n_puts; i++) {
		cJSON *op = cJSON_CreateObject(), *put = op ? cJSON_AddObjectToObject(op, "request_put") : NULL;

		ok = put && add_b64(put, "key", puts[i].key, strlen(puts[i].key)) &&
		     add_b64(put, "value", puts[i].value, puts[i].len) &&
		     (!puts[i].lease || add_int64(put, "lease", puts[i].lease));
		if (op)
			cJSON_AddItemToArray(succ, op);
	}
	return finish(o, ok);
}

char *cw_kvp_lease_grant_req(int64_t ttl)
{
	cJSON *o = cJSON_CreateObject();

	return finish(o, o && add_int64(o, "TTL", ttl));
}

char *cw_kvp_lease_id_req(int64_t id)
{
	cJSON *o = cJSON_CreateObject();

	return finish(o, o && add_int64(o, "ID", id));
}

char *cw_kvp_auth_req(const char *user, const char *password)
{
	cJSON *o = cJSON_CreateObject();

	return finish(o, o && cJSON_AddStringToObject(o, "name", user) &&
			 cJSON_AddStringToObject(o, "password", password));
}

char *cw_kvp_watch_create_req(const char *key, const char *range_end, int64_t start_revision,
			      bool progress_notify)
{
	cJSON *o = cJSON_CreateObject(), *c = cJSON_CreateObject();
	bool ok = o && c && add_b64(c, "key", key, strlen(key));

	if (ok && range_end)
		ok = range_end[0] ? add_b64(c, "range_end", range_end, strlen(range_end)) :
				    add_b64(c, "range_end", "", 1);
	if (ok && start_revision > 0)
		ok = add_int64(c, "start_revision", start_revision);
	if (ok && progress_notify)
		ok = cJSON_AddBoolToObject(c, "progress_notify", true) != NULL;
	if (o && c)
		cJSON_AddItemToObject(o, "create_request", c);
	else
		cJSON_Delete(c);
	return finish(o, ok);
}

/* int64 fields: a string per the JSON mapping, a number tolerated; absent = 0. */
static bool get_int64(const cJSON *o, const char *name, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	char *end;

	*out = 0;
	if (!v)
		return true;
	if (cJSON_IsNumber(v)) {
		*out = (int64_t)v->valuedouble;
		return true;
	}
	if (!cJSON_IsString(v) || !v->valuestring[0])
		return false;
	errno = 0;
	*out = strtoll(v->valuestring, &end, 10);
	return errno == 0 && *end == '\0';
}

static void pair_clear(struct cw_kv_pair *kv)
{
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

static int parse_pair_fields(const cJSON *o, struct cw_kv_pair *kv, char *err, size_t errlen)
{
	const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "key");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "value");

	memset(kv, 0, sizeof(*kv));
	if (!cJSON_IsString(k))
		return ERR("kv without a key");
	kv->key = unb64(k->valuestring, NULL);
	if (!kv->key)
		return ERR("kv key is not base64");
	/* An empty value is omitted by the gateway. */
	kv->value = unb64(cJSON_IsString(v) ? v->valuestring : "", &kv->value_len);
	if (!kv->value)
		return ERR("value of %.64s is not base64", kv->key);
	if (!get_int64(o, "create_revision", &kv->create_revision) ||
	    !get_int64(o, "mod_revision", &kv->mod_revision) ||
	    !get_int64(o, "version", &kv->version) || !get_int64(o, "lease", &kv->lease))
		return ERR("kv %.64s has a malformed revision field", kv->key);
	return 0;
}

/* On failure *kv is left empty: nothing for the caller to clear. */
static int parse_pair(const cJSON *o, struct cw_kv_pair *kv, char *err, size_t errlen)
{
	int rc = parse_pair_fields(o, kv, err, errlen);

	if (rc)
		pair_clear(kv);
	return rc;
}

bool cw_kvp_parse_error(const char *buf, size_t len, struct cw_kv_error *e)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(o, "code");
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(o, "message");
	const cJSON *error = cJSON_GetObjectItemCaseSensitive(o, "error");
	bool is_err = false;

	/* Watch streams wrap errors: {"error":{"grpc_code":…,"message":…}}. */
	if (cJSON_IsObject(error)) {
		code = cJSON_GetObjectItemCaseSensitive(error, "grpc_code");
		msg = cJSON_GetObjectItemCaseSensitive(error, "message");
	}
	if (cJSON_IsNumber(code) && code->valueint != 0) {
		is_err = true;
		e->code = code->valueint;
		snprintf(e->message, sizeof(e->message), "%s",
			 cJSON_IsString(msg) ? msg->valuestring :
			 cJSON_IsString(error) ? error->valuestring : "unknown error");
	}
	cJSON_Delete(o);
	return is_err;
}

static cJSON *parse_root(const char *buf, size_t len, char *err, size_t errlen)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	struct cw_kv_error e;

	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		ERR("response is not a JSON object");
		return NULL;
	}
	if (cw_kvp_parse_error(buf, len, &e)) {
		cJSON_Delete(o);
		ERR("etcd error %d: %s", e.code, e.message);
		return NULL;
	}
	return o;
}

static bool header_revision(const cJSON *o, int64_t *rev)
{
	return get_int64(cJSON_GetObjectItemCaseSensitive(o, "header"), "revision", rev);
}

int cw_kvp_parse_range(const char *buf, size_t len, struct cw_kv_range_resp *out, char *err,
		       size_t errlen)
{
	cJSON *o = parse_root(buf, len, err, errlen);
	const cJSON *kvs, *it;
	size_t n = 0;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!o)
		return -EINVAL;
	if (!header_revision(o, &out->revision) || !get_int64(o, "count", &out->count)) {
		ERR("range response: malformed header or count");
		goto cleanup;
	}
	out->more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "more"));
	kvs = cJSON_GetObjectItemCaseSensitive(o, "kvs");
	if (kvs && !cJSON_IsArray(kvs)) {
		ERR("range response: kvs is not a list");
		goto cleanup;
	}
	n = (size_t)cJSON_GetArraySize(kvs);
	out->kvs = calloc(n ? n : 1, sizeof(*out->kvs));
	if (!out->kvs) {
		rc = -ENOMEM;
		goto cleanup;
	}
	cJSON_ArrayForEach(it, kvs) {
		rc = parse_pair(it, &out->kvs[out->n], err, errlen);
		if (rc)
			goto cleanup;
		out->n++;
	}
	rc = 0;
cleanup:
	if (rc)
		cw_kvp_range_clear(out);
	cJSON_Delete(o);
	return rc;
}

void cw_kvp_range_clear(struct cw_kv_range_resp *r)
{
	for (size_t i = 0; r->kvs && i < r->n; i++)
		pair_clear(&r->kvs[i]);
	free(r->kvs);
	memset(r, 0, sizeof(*r));
}

int cw_kvp_parse_txn(const char *buf, size_t len, bool *succeeded, int64_t *revision, char *err,
		     size_t errlen)
{
	cJSON *o = parse_root(buf, len, err, errlen);
	int rc = 0;

	if (!o)
		return -EINVAL;
	*succeeded = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "succeeded"));
	if (!header_revision(o, revision))
		rc = ERR("txn response: malformed header");
	cJSON_Delete(o);
	return rc;
}

int cw_kvp_parse_revision(const char *buf, size_t len, int64_t *revision, char *err,
			  size_t errlen)
{
	cJSON *o = parse_root(buf, len, err, errlen);
	int rc = 0;

	if (!o)
		return -EINVAL;
	if (!header_revision(o, revision))
		rc = ERR("response: malformed header");
	cJSON_Delete(o);
	return rc;
}

int cw_kvp_parse_lease(const char *buf, size_t len, int64_t *id, int64_t *ttl, char *err,
		       size_t errlen)
{
	cJSON *o = parse_root(buf, len, err, errlen), *r;
	int rc = 0;

	if (!o)
		return -EINVAL;
	/* keepalive answers are {"result":{…}}; grant and revoke are flat */
	r = cJSON_GetObjectItemCaseSensitive(o, "result");
	if (!cJSON_IsObject(r))
		r = o;
	if (!get_int64(r, "ID", id) || !get_int64(r, "TTL", ttl))
		rc = ERR("lease response: malformed ID or TTL");
	cJSON_Delete(o);
	return rc;
}

int cw_kvp_parse_auth(const char *buf, size_t len, char *token, size_t toklen, char *err,
		      size_t errlen)
{
	cJSON *o = parse_root(buf, len, err, errlen);
	const cJSON *t = o ? cJSON_GetObjectItemCaseSensitive(o, "token") : NULL;
	int rc = 0;

	if (!o)
		return -EINVAL;
	if (!cJSON_IsString(t) || !t->valuestring[0] || strlen(t->valuestring) >= toklen)
		rc = ERR("authenticate response has no usable token");
	else
		strcpy(token, t->valuestring);
	cJSON_Delete(o);
	return rc;
}

int cw_kvp_parse_watch(const char *buf, size_t len, struct cw_kv_watch_resp *out, char *err,
		       size_t errlen)
{
	cJSON *o = parse_root(buf, len, err, errlen), *r;
	const cJSON *events, *it, *reason;
	int rc = -EINVAL;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!o)
		return -EINVAL;
	r = cJSON_GetObjectItemCaseSensitive(o, "result");
	if (!cJSON_IsObject(r)) {
		ERR("watch message without a result");
		goto cleanup;
	}
	if (!header_revision(r, &out->revision) || !get_int64(r, "watch_id", &out->watch_id) ||
	    !get_int64(r, "compact_revision", &out->compact_revision)) {
		ERR("watch message: malformed header");
		goto cleanup;
	}
	out->created = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "created"));
	out->canceled = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "canceled"));
	reason = cJSON_GetObjectItemCaseSensitive(r, "cancel_reason");
	if (cJSON_IsString(reason))
		snprintf(out->cancel_reason, sizeof(out->cancel_reason), "%s", reason->valuestring);
	events = cJSON_GetObjectItemCaseSensitive(r, "events");
	n = (size_t)cJSON_GetArraySize(events);
	out->events = calloc(n ? n : 1, sizeof(*out->events));
	if (!out->events) {
		rc = -ENOMEM;
		goto cleanup;
	}
	cJSON_ArrayForEach(it, events) {
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
		struct cw_kv_event *ev = &out->events[out->n];

		/* PUT is the enum's zero value, so the gateway omits it. */
		ev->type = cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0 ?
			   CW_KV_DELETE : CW_KV_PUT;
		rc = parse_pair(cJSON_GetObjectItemCaseSensitive(it, "kv"), &ev->kv, err, errlen);
		if (rc)
			goto cleanup;
		out->n++;
	}
	rc = 0;
cleanup:
	if (rc)
		cw_kvp_watch_clear(out);
	cJSON_Delete(o);
	return rc;
}

void cw_kvp_watch_clear(struct cw_kv_watch_resp *w)
{
	for (size_t i = 0; w->events && i < w->n; i++)
		pair_clear(&w->events[i].kv);
	free(w->events);
	memset(w, 0, sizeof(*w));
}
