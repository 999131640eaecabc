// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include <causeway/log.h>
#include "kvstore.h"
#include "loop.h"

struct cw_kv {
	struct cw_kv_config cfg;
	char *strings[CW_KV_MAX_ENDPOINTS + 5]; /* owned copies behind cfg */
	CURL *curl;
	size_t current;          /* endpoint in use; failover moves it on */
	char token[512];
	char error[512];
	int error_code;
	/*
	 * With a loop (cw_kv_set_loop), streams get their token from an
	 * authentication on it instead of a blocking call: @auth is that
	 * request, @auth_rc and @auth_why its last failure, until a stream
	 * has reported it.
	 */
	struct cw_loop *loop;
	struct cw_kv_req *auth;
	int auth_rc;
	char auth_why[512];
	struct cw_kv_waiter *waiters; /* streams waiting for @auth to end */
};

struct buf {
	char *data;
	size_t len;
};

static size_t collect(char *ptr, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;
	size_t add = size * n;
	char *nd;

	if (b->len + add > (16u << 20))
		return 0; /* a response this large is not one of ours: abort */
	nd = realloc(b->data, b->len + add + 1);
	if (!nd)
		return 0;
	memcpy(nd + b->len, ptr, add);
	b->data = nd;
	b->len += add;
	b->data[b->len] = '\0';
	return add;
}

__attribute__((format(printf, 3, 4)))
static int set_error(struct cw_kv *kv, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(kv->error, sizeof(kv->error), fmt, ap);
	va_end(ap);
	pr_debug("kvstore: %s", kv->error);
	return rc;
}

const char *cw_kv_error(const struct cw_kv *kv)
{
	return kv->error;
}

int cw_kv_error_code(const struct cw_kv *kv)
{
	return kv->error_code;
}

static const char *dup_into(struct cw_kv *kv, size_t *slot, const char *s)
{
	if (!s)
		return NULL;
	kv->strings[*slot] = strdup(s);
	return kv->strings[(*slot)++];
}

int cw_kv_new(const struct cw_kv_config *cfg, struct cw_kv **out)
{
	struct cw_kv *kv;
	size_t slot = 0;

	if (cfg->n_endpoints == 0 || cfg->n_endpoints > CW_KV_MAX_ENDPOINTS)
		return -EINVAL;
	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	kv->cfg.n_endpoints = cfg->n_endpoints;
	for (size_t i = 0; i < cfg->n_endpoints; i++)
		kv->cfg.endpoints[i] = dup_into(kv, &slot, cfg->endpoints[i]);
	kv->cfg.ca_file = dup_into(kv, &slot, cfg->ca_file);
	kv->cfg.cert_file = dup_into(kv, &slot, cfg->cert_file);
	kv->cfg.key_file = dup_into(kv, &slot, cfg->key_file);
	kv->cfg.username = dup_into(kv, &slot, cfg->username);
	kv->cfg.password = dup_into(kv, &slot, cfg->password);
	kv->cfg.timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 5000;
	kv->curl = curl_easy_init();
	if (!kv->curl) {
		cw_kv_free(kv);
		return -ENOMEM;
	}
	*out = kv;
	return 0;
}

void cw_kv_free(struct cw_kv *kv)
{
	if (!kv)
		return;
	cw_kv_req_free(kv->auth);
	if (kv->curl)
		curl_easy_cleanup(kv->curl);
	for (size_t i = 0; i < sizeof(kv->strings) / sizeof(kv->strings[0]); i++)
		free(kv->strings[i]);
	free(kv);
}

/*
 * One POST to one endpoint.  Returns 0 with the body for HTTP 200, -EPROTO
 * with the body for an HTTP error (an etcd error document), -EHOSTUNREACH
 * for a transport failure (try the next endpoint).
 */
/*
 * The options every request to @endpoint shares, unary or stream: URL, TLS
 * with the client certificate, the token.  Returns the header list the
 * caller frees after the transfer, NULL when out of memory.
 */
static struct curl_slist *setup_request(struct cw_kv *kv, CURL *c, const char *endpoint,
					const char *path, const char *body)
{
	char url[512], auth[600];
	struct curl_slist *hdrs = NULL;

	snprintf(url, sizeof(url), "%s%s", endpoint, path);
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	if (hdrs && kv->token[0] && strcmp(path, "/v3/auth/authenticate") != 0) {
		/* the gateway takes the bare token, no "Bearer" scheme */
		snprintf(auth, sizeof(auth), "Authorization: %s", kv->token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	if (!hdrs)
		return NULL;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, kv->cfg.timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (kv->cfg.ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, kv->cfg.ca_file);
	if (kv->cfg.cert_file)
		curl_easy_setopt(c, CURLOPT_SSLCERT, kv->cfg.cert_file);
	if (kv->cfg.key_file)
		curl_easy_setopt(c, CURLOPT_SSLKEY, kv->cfg.key_file);
	return hdrs;
}

/*
 * One POST to one endpoint.  Returns 0 with the body for HTTP 200, -EPROTO
 * with the body for an HTTP error (an etcd error document), -EHOSTUNREACH
 * for a transport failure (try the next endpoint).
 */
static int post_once(struct cw_kv *kv, const char *endpoint, const char *path, const char *body,
		     struct buf *resp)
{
	struct curl_slist *hdrs;
	long status = 0;
	CURLcode cc;
	CURL *c = kv->curl;

	curl_easy_reset(c);
	hdrs = setup_request(kv, c, endpoint, path, body);
	if (!hdrs)
		return set_error(kv, -ENOMEM, "out of memory");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, kv->cfg.timeout_ms);
	cc = curl_easy_perform(c);
	curl_slist_free_all(hdrs);
	if (cc != CURLE_OK)
		return set_error(kv, -EHOSTUNREACH, "%s: %s", endpoint, curl_easy_strerror(cc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	return status == 200 ? 0 : -EPROTO;
}

/* What an /v3/auth/authenticate answer (@rc as post_once says) means: the token, or why not. */
static int auth_answer(struct cw_kv *kv, const char *endpoint, int rc, const struct buf *resp)
{
	struct cw_kv_error e;
	char err[256];

	if (rc == -EPROTO && resp->data && cw_kvp_parse_error(resp->data, resp->len, &e)) {
		kv->error_code = e.code;
		rc = set_error(kv, -EACCES, "%s: authentication as %s refused: %s", endpoint,
			       kv->cfg.username, e.message);
	} else if (rc == -EPROTO) {
		rc = set_error(kv, -EPROTO, "%s: authentication answered with an HTTP error",
			       endpoint);
	} else if (rc == 0 &&
		   cw_kvp_parse_auth(resp->data, resp->len, kv->token, sizeof(kv->token), err,
				     sizeof(err))) {
		rc = set_error(kv, -EPROTO, "%s: %s", endpoint, err);
	}
	return rc;
}

static int authenticate(struct cw_kv *kv, const char *endpoint)
{
	char *body = cw_kvp_auth_req(kv->cfg.username, kv->cfg.password);
	struct buf resp = { 0 };
	int rc;

	if (!body)
		return -ENOMEM;
	kv->token[0] = '\0';
	rc = post_once(kv, endpoint, "/v3/auth/authenticate", body, &resp);
	free(body);
	rc = auth_answer(kv, endpoint, rc, &resp);
	free(resp.data);
	return rc;
}

bool cw_kv_token_refused(const struct cw_kv_error *e)
{
	return e->code == CW_GRPC_UNAUTHENTICATED || strstr(e->message, "invalid auth token") ||
	       strstr(e->message, "user name is empty");
}

/*
 * POST @body to @path on the current endpoint, failing over to the next on a
 * transport error, authenticating first and again when the token is refused
 * (simple tokens expire after --auth-token-ttl of idleness).
 */
static int call(struct cw_kv *kv, const char *path, const char *body, struct buf *resp)
{
	size_t n = kv->cfg.n_endpoints;
	int rc = -EHOSTUNREACH;

	kv->error_code = 0;
	for (size_t attempt = 0; attempt < n; attempt++) {
		const char *ep = kv->cfg.endpoints[kv->current];
		bool reauthed = false;
		struct cw_kv_error e;

		if (kv->cfg.username && !kv->token[0]) {
			rc = authenticate(kv, ep);
			if (rc == -EHOSTUNREACH)
				goto next;
			if (rc)
				return rc;
		}
again:
		free(resp->data);
		resp->data = NULL;
		resp->len = 0;
		rc = post_once(kv, ep, path, body, resp);
		if (rc == -EHOSTUNREACH)
			goto next;
		if (rc == -EPROTO) {
			if (!resp->data || !cw_kvp_parse_error(resp->data, resp->len, &e))
				return set_error(kv, -EPROTO, "%s%s: HTTP error without an etcd status",
						 ep, path);
			if (kv->cfg.username && !reauthed && cw_kv_token_refused(&e)) {
				reauthed = true;
				rc = authenticate(kv, ep);
				if (rc)
					return rc;
				goto again;
			}
			kv->error_code = e.code;
			return set_error(kv, e.code == CW_GRPC_PERMISSION_DENIED ? -EACCES : -EPROTO,
					 "%s%s: etcd: %s (code %d)", ep, path, e.message, e.code);
		}
		return 0;
next:
		pr_info("kvstore: %s unreachable (%s), trying the next endpoint", ep, kv->error);
		kv->current = (kv->current + 1) % n;
		kv->token[0] = '\0';
	}
	return rc;
}

/* call() with a request built by the caller; the request is freed here. */
static int call_owned(struct cw_kv *kv, const char *path, char *body, struct buf *resp)
{
	int rc;

	if (!body)
		return set_error(kv, -ENOMEM, "out of memory building %s", path);
	rc = call(kv, path, body, resp);
	free(body);
	return rc;
}

void cw_kv_pair_clear(struct cw_kv_pair *p)
{
	free(p->key);
	free(p->value);
	memset(p, 0, sizeof(*p));
}

/* Move a pair out of a response that is about to be cleared. */
static void swap_out(struct cw_kv_pair *from, struct cw_kv_pair *to)
{
	*to = *from;
	memset(from, 0, sizeof(*from));
}

int cw_kv_get(struct cw_kv *kv, const char *key, struct cw_kv_pair *out)
{
	struct cw_kv_range_resp r;
	struct buf resp = { 0 };
	char err[256];
	int rc;

	rc = call_owned(kv, "/v3/kv/range", cw_kvp_range_req(key, NULL, 1, 0, false), &resp);
	if (rc == 0)
		rc = cw_kvp_parse_range(resp.data, resp.len, &r, err, sizeof(err));
	free(resp.data);
	if (rc == -EINVAL)
		return set_error(kv, rc, "range %s: %s", key, err);
	if (rc)
		return rc;
	if (r.n == 0)
		rc = -ENOENT;
	else
		swap_out(&r.kvs[0], out);
	cw_kvp_range_clear(&r);
	return rc;
}

/*
 * Where the page after one ending at @last starts: the smallest text key
 * after it, key + "\x01" (key + "\0" cannot be a C string).  Malloc'd.
 */
static char *next_page(const char *last)
{
	char *from = malloc(strlen(last) + 2);

	if (from)
		sprintf(from, "%s%c", last, 1);
	return from;
}

int cw_kv_list(struct cw_kv *kv, const char *prefix, int64_t page, cw_kv_pair_fn fn, void *arg,
	       int64_t *revision)
{
	char end[1024], *from = NULL, err[256];
	int64_t rev = 0;
	int rc;

	rc = cw_kvp_prefix_end(prefix, end, sizeof(end));
	if (rc)
		return rc;
	from = strdup(prefix);
	if (!from)
		return -ENOMEM;
	for (;;) {
		struct cw_kv_range_resp r;
		struct buf resp = { 0 };
		size_t i;

		rc = call_owned(kv, "/v3/kv/range", cw_kvp_range_req(from, end, page, rev, false), &resp);
		if (rc == 0) {
			rc = cw_kvp_parse_range(resp.data, resp.len, &r, err, sizeof(err));
			if (rc)
				set_error(kv, rc, "range %s: %s", prefix, err);
		}
		free(resp.data);
		if (rc)
			break;
		if (!rev)
			rev = r.revision;
		for (i = 0; i < r.n && rc == 0; i++)
			rc = fn(&r.kvs[i], arg);
		if (rc == 0 && r.more && r.n > 0) {
			free(from);
			from = next_page(r.kvs[r.n - 1].key);
			if (!from)
				rc = -ENOMEM;
		}
		bool more = r.more && r.n > 0;

		cw_kvp_range_clear(&r);
		if (rc || !more)
			break;
	}
	free(from);
	if (rc == 0 && revision)
		*revision = rev;
	return rc;
}

static int simple(struct cw_kv *kv, const char *path, char *body, const char *what)
{
	struct buf resp = { 0 };
	int64_t rev;
	char err[256];
	int rc = call_owned(kv, path, body, &resp);

	if (rc == 0 && cw_kvp_parse_revision(resp.data, resp.len, &rev, err, sizeof(err)))
		rc = set_error(kv, -EPROTO, "%s: %s", what, err);
	free(resp.data);
	return rc;
}

int cw_kv_put(struct cw_kv *kv, const char *key, const void *val, size_t len, int64_t lease)
{
	return simple(kv, "/v3/kv/put", cw_kvp_put_req(key, val, len, lease), key);
}

int cw_kv_delete(struct cw_kv *kv, const char *key, bool prefix)
{
	char end[1024];

	if (prefix && cw_kvp_prefix_end(key, end, sizeof(end)))
		return -ENAMETOOLONG;
	return simple(kv, "/v3/kv/deleterange", cw_kvp_delete_req(key, prefix ? end : NULL), key);
}

static int txn(struct cw_kv *kv, char *body, const char *key, int lost)
{
	struct buf resp = { 0 };
	bool ok = false;
	int64_t rev;
	char err[256];
	int rc = call_owned(kv, "/v3/kv/txn", body, &resp);

	if (rc == 0 && cw_kvp_parse_txn(resp.data, resp.len, &ok, &rev, err, sizeof(err)))
		rc = set_error(kv, -EPROTO, "txn %s: %s", key, err);
	free(resp.data);
	return rc ? rc : ok ? 0 : lost;
}

int cw_kv_create(struct cw_kv *kv, const char *key, const void *val, size_t len, int64_t lease)
{
	return txn(kv, cw_kvp_create_req(key, val, len, lease), key, -EEXIST);
}

int cw_kv_cas(struct cw_kv *kv, const char *key, int64_t mod_revision, const void *val,
	      size_t len, int64_t lease)
{
	return txn(kv, cw_kvp_cas_req(key, mod_revision, val, len, lease), key, -ESTALE);
}

static int lease_call(struct cw_kv *kv, const char *path, char *body, int64_t *id, int64_t *ttl)
{
	struct buf resp = { 0 };
	int64_t got_id = 0, got_ttl = 0;
	char err[256];
	int rc = call_owned(kv, path, body, &resp);

	if (rc == 0 && cw_kvp_parse_lease(resp.data, resp.len, &got_id, &got_ttl, err, sizeof(err)))
		rc = set_error(kv, -EPROTO, "%s: %s", path, err);
	free(resp.data);
	if (id)
		*id = got_id;
	if (ttl)
		*ttl = got_ttl;
	return rc;
}

int cw_kv_lease_grant(struct cw_kv *kv, int64_t ttl, int64_t *id)
{
	return lease_call(kv, "/v3/lease/grant", cw_kvp_lease_grant_req(ttl), id, NULL);
}

int cw_kv_lease_keepalive(struct cw_kv *kv, int64_t id, int64_t *ttl)
{
	int64_t left = 0;
	int rc = lease_call(kv, "/v3/lease/keepalive", cw_kvp_lease_id_req(id), NULL, &left);

	if (rc)
		return rc;
	if (ttl)
		*ttl = left;
	return left > 0 ? 0 : set_error(kv, -ENOENT, "lease %" PRId64 " has expired", id);
}

int cw_kv_lease_revoke(struct cw_kv *kv, int64_t id)
{
	return lease_call(kv, "/v3/lease/revoke", cw_kvp_lease_id_req(id), NULL, NULL);
}

static int req_auth_only(struct cw_kv_req *r, cw_kv_req_fn fn, void *arg);

static void on_token(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct cw_kv *kv = arg;
	struct cw_kv_waiter *w = kv->waiters;

	(void)body;
	(void)len;
	kv->auth_rc = rc;
	snprintf(kv->auth_why, sizeof(kv->auth_why), "%s", rc ? why : "");
	kv->waiters = NULL;
	while (w) {
		struct cw_kv_waiter *next = w->next;

		w->next = NULL;
		w->queued = false;
		w->fn(w->arg);
		w = next;
	}
}

void cw_kv_token_wait(struct cw_kv *kv, struct cw_kv_waiter *w)
{
	if (w->queued)
		return;
	if (!cw_kv_req_busy(kv->auth)) {
		w->fn(w->arg); /* it ended already: nothing to wait for */
		return;
	}
	w->next = kv->waiters;
	w->queued = true;
	kv->waiters = w;
}

void cw_kv_token_unwait(struct cw_kv *kv, struct cw_kv_waiter *w)
{
	for (struct cw_kv_waiter **p = &kv->waiters; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	w->next = NULL;
	w->queued = false;
}

/*
 * A stream's token, fetched on the loop: -EAGAIN while it is on its way
 * (the stream waits for it, cw_kv_token_wait), the last attempt's failure once (the
 * stream backs off, and its next try starts another), 0 never: a token
 * that arrived is in kv->token and the caller does not get here.
 */
static int token_on_loop(struct cw_kv *kv)
{
	int rc;

	if (cw_kv_req_busy(kv->auth))
		return set_error(kv, -EAGAIN, "%s: waiting for a token", kv->cfg.endpoints[kv->current]);
	if (kv->auth_rc) {
		rc = kv->auth_rc;
		kv->auth_rc = 0;
		return set_error(kv, rc, "%s", kv->auth_why);
	}
	if (!kv->auth && (rc = cw_kv_req_new(kv->loop, kv, &kv->auth)))
		return set_error(kv, rc, "out of memory");
	rc = req_auth_only(kv->auth, on_token, kv);
	if (rc)
		return rc;
	return set_error(kv, -EAGAIN, "%s: waiting for a token", kv->cfg.endpoints[kv->current]);
}

void cw_kv_set_loop(struct cw_kv *kv, struct cw_loop *loop)
{
	if (!kv->loop)
		kv->loop = loop;
}

int cw_kv_stream_setup(struct cw_kv *kv, CURL *easy, const char *path, const char *body,
		       struct curl_slist **hdrs)
{
	const char *ep = kv->cfg.endpoints[kv->current];
	int rc;

	if (kv->cfg.username && !kv->token[0]) {
		rc = kv->loop ? token_on_loop(kv) : authenticate(kv, ep);
		if (rc == -EHOSTUNREACH)
			cw_kv_stream_failed(kv, false);
		if (rc)
			return rc;
	}
	*hdrs = setup_request(kv, easy, ep, path, body);
	return *hdrs ? 0 : set_error(kv, -ENOMEM, "out of memory");
}

void cw_kv_stream_failed(struct cw_kv *kv, bool token_refused)
{
	/*
	 * The token stays after a transport failure: against an etcd that
	 * stopped answering, authenticating again would only wait out its
	 * timeout as well.  Where the token is no good
	 * (another member, a restarted one) etcd says so, and then it goes.
	 */
	if (token_refused)
		kv->token[0] = '\0';
	else
		kv->current = (kv->current + 1) % kv->cfg.n_endpoints;
}

const char *cw_kv_endpoint(const struct cw_kv *kv)
{
	return kv->cfg.endpoints[kv->current];
}

/* --- requests on the loop ------------------------------------------------------------ */

struct cw_kv_req {
	struct cw_loop *loop;
	struct cw_kv *kv;
	CURL *easy;
	struct curl_slist *hdrs;
	struct buf resp;
	char *path, *body;           /* kept for the one retry after a refused token */
	long timeout_ms;
	bool busy, retried;
	bool authing;                /* what is out is the authentication the request needs first */
	bool auth_only;              /* ... and all the request is (a stream's token) */
	/* cw_kv_req_list: the listing under way */
	char *list_end;
	int64_t list_page, list_rev;
	cw_kv_pair_fn list_each;
	cw_kv_req_fn list_done;
	void *list_arg;
	cw_kv_req_fn fn;
	void *arg;
};

int cw_kv_req_new(struct cw_loop *loop, struct cw_kv *kv, struct cw_kv_req **out)
{
	struct cw_kv_req *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->easy = curl_easy_init();
	if (!r->easy) {
		free(r);
		return -ENOMEM;
	}
	r->loop = loop;
	r->kv = kv;
	cw_kv_set_loop(kv, loop);
	*out = r;
	return 0;
}

static void req_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg);

static int req_send(struct cw_kv_req *r)
{
	int rc;

	curl_easy_reset(r->easy);
	free(r->resp.data);
	r->resp.data = NULL;
	r->resp.len = 0;
	/*
	 * A token first, when the store wants one and we have none: on the
	 * loop too, so an etcd that stopped answering holds nothing up.
	 */
	r->authing = r->auth_only || (r->kv->cfg.username && !r->kv->token[0]);
	if (r->authing) {
		char *auth = cw_kvp_auth_req(r->kv->cfg.username, r->kv->cfg.password);

		if (!auth)
			return -ENOMEM;
		r->hdrs = setup_request(r->kv, r->easy, cw_kv_endpoint(r->kv),
					"/v3/auth/authenticate", auth);
		free(auth);
		if (!r->hdrs)
			return set_error(r->kv, -ENOMEM, "out of memory");
	} else {
		rc = cw_kv_stream_setup(r->kv, r->easy, r->path, r->body, &r->hdrs);
		if (rc)
			return rc;
	}
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, &r->resp);
	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, r->timeout_ms);
	rc = cw_loop_curl_add(r->loop, r->easy, req_done, r);
	if (rc) {
		curl_slist_free_all(r->hdrs);
		r->hdrs = NULL;
		return rc;
	}
	r->busy = true;
	return 0;
}

static void req_done(struct cw_loop *loop, CURL *easy, CURLcode res, void *arg)
{
	struct cw_kv_req *r = arg;
	const char *ep = cw_kv_endpoint(r->kv);
	char why[512] = "";
	struct cw_kv_error e;
	long status = 0;
	int rc = 0;

	(void)loop;
	r->busy = false;
	curl_slist_free_all(r->hdrs);
	r->hdrs = NULL;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	if (res != CURLE_OK) {
		rc = res == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
		snprintf(why, sizeof(why), "%s%s: %s", ep,
			 r->authing ? "/v3/auth/authenticate" : r->path, curl_easy_strerror(res));
		r->authing = r->auth_only = false;
		/* the next request tries the next endpoint */
		cw_kv_stream_failed(r->kv, false);
	} else if (r->authing) {
		/* the token is in: now the request itself */
		r->authing = false;
		rc = auth_answer(r->kv, ep, status == 200 ? 0 : -EPROTO, &r->resp);
		if (!rc && r->auth_only)
			r->auth_only = false; /* the token was all it was for */
		else if (!rc && !(rc = req_send(r)))
			return;
		if (rc)
			snprintf(why, sizeof(why), "%.300s", r->kv->error);
	} else if (status != 200) {
		if (r->resp.data && cw_kvp_parse_error(r->resp.data, r->resp.len, &e)) {
			if (r->kv->cfg.username && cw_kv_token_refused(&e) && !r->retried) {
				/* an expired token: authenticate again and ask once more */
				cw_kv_stream_failed(r->kv, true);
				r->retried = true;
				rc = req_send(r);
				if (!rc)
					return;
				snprintf(why, sizeof(why), "%.300s", r->kv->error);
			} else {
				rc = e.code == CW_GRPC_PERMISSION_DENIED ? -EACCES : -EPROTO;
				snprintf(why, sizeof(why), "%s%s: etcd: %s (code %d)", ep, r->path,
					 e.message, e.code);
			}
		} else {
			rc = -EPROTO;
			snprintf(why, sizeof(why), "%s%s: HTTP %ld", ep, r->path, status);
		}
	}
	{
		/* the callback may start the next request on @r, which reuses the buffer */
		struct buf resp = r->resp;

		r->resp = (struct buf){ 0 };
		r->fn(rc, rc ? NULL : resp.data ? resp.data : "", rc ? 0 : resp.len, why, r->arg);
		free(resp.data);
	}
}

/* Sends @body to @path on @r, or (@auth_only) just gets its client a token. */
static int req_begin(struct cw_kv_req *r, const char *path, const char *body, long timeout_ms,
		     bool auth_only, cw_kv_req_fn fn, void *arg)
{
	char *p, *b;

	if (r->busy)
		return -EBUSY;
	p = strdup(path);
	b = strdup(body);
	if (!p || !b) {
		free(p);
		free(b);
		return -ENOMEM;
	}
	free(r->path);
	free(r->body);
	r->path = p;
	r->body = b;
	r->timeout_ms = timeout_ms;
	r->retried = false;
	r->auth_only = auth_only;
	r->fn = fn;
	r->arg = arg;
	return req_send(r);
}

int cw_kv_req_start(struct cw_kv_req *r, const char *path, const char *body, long timeout_ms,
		    cw_kv_req_fn fn, void *arg)
{
	return req_begin(r, path, body, timeout_ms, false, fn, arg);
}

int cw_kv_req_send(struct cw_kv_req *r, const char *path, char *body, long timeout_ms,
		   cw_kv_req_fn fn, void *arg)
{
	int rc = body ? cw_kv_req_start(r, path, body, timeout_ms, fn, arg) : -ENOMEM;

	free(body);
	return rc;
}

/* Just a token for @r's client, as the first half of any request gets one. */
static int req_auth_only(struct cw_kv_req *r, cw_kv_req_fn fn, void *arg)
{
	return req_begin(r, "/v3/auth/authenticate", "", r->kv->cfg.timeout_ms, true, fn, arg);
}

static int list_send(struct cw_kv_req *r, const char *from);

static void list_page(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct cw_kv_req *r = arg;
	struct cw_kv_range_resp resp = { 0 };
	char err[256], *from = NULL;
	bool more = false;

	if (!rc && cw_kvp_parse_range(body, len, &resp, err, sizeof(err))) {
		rc = -EPROTO;
		why = err;
	}
	if (!rc) {
		if (!r->list_rev)
			r->list_rev = resp.revision;
		for (size_t i = 0; i < resp.n && !rc; i++)
			rc = r->list_each(&resp.kvs[i], r->list_arg);
		if (rc)
			why = "stopped";
		more = !rc && resp.more && resp.n > 0;
		if (more && !(from = next_page(resp.kvs[resp.n - 1].key))) {
			rc = -ENOMEM;
			why = "out of memory";
		}
	}
	cw_kvp_range_clear(&resp);
	if (!rc && more) {
		rc = list_send(r, from);
		free(from);
		if (!rc)
			return;
		why = r->kv->error;
	}
	free(r->list_end);
	r->list_end = NULL;
	r->list_done(rc, NULL, 0, rc ? why : "", r->list_arg);
}

static int list_send(struct cw_kv_req *r, const char *from)
{
	return cw_kv_req_send(r, "/v3/kv/range",
			      cw_kvp_range_req(from, r->list_end, r->list_page, r->list_rev, false),
			      r->timeout_ms, list_page, r);
}

int cw_kv_req_list(struct cw_kv_req *r, const char *prefix, int64_t page, long timeout_ms,
		   cw_kv_pair_fn each, cw_kv_req_fn done, void *arg)
{
	char end[1024];
	int rc;

	if (r->busy)
		return -EBUSY;
	rc = cw_kvp_prefix_end(prefix, end, sizeof(end));
	if (rc)
		return rc;
	free(r->list_end);
	r->list_end = strdup(end);
	if (!r->list_end)
		return -ENOMEM;
	r->list_page = page;
	r->list_rev = 0;
	r->list_each = each;
	r->list_done = done;
	r->list_arg = arg;
	r->timeout_ms = timeout_ms;
	rc = list_send(r, prefix);
	if (rc) {
		free(r->list_end);
		r->list_end = NULL;
	}
	return rc;
}

bool cw_kv_req_busy(const struct cw_kv_req *r)
{
	return r && r->busy;
}

void cw_kv_req_free(struct cw_kv_req *r)
{
	if (!r)
		return;
	if (r->busy)
		cw_loop_curl_remove(r->loop, r->easy);
	curl_slist_free_all(r->hdrs);
	curl_easy_cleanup(r->easy);
	free(r->resp.data);
	free(r->path);
	free(r->body);
	free(r->list_end);
	free(r);
}
