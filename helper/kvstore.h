/* SPDX-License-Identifier: Apache-2.0 */
/*
 * etcd client over the v3 JSON gateway with libcurl: TLS with a client
 * certificate, user/password authentication (the gateway maps no
 * certificate to a user, see DESIGN.md), several endpoints with failover.
 *
 * This is the unary half, blocking with a bounded timeout; it is what the
 * helper uses at start-up and from the CLI.  Watch streams run on the event
 * loop's curl multi handle with the same messages (kvproto.h).
 */
#ifndef CW_HELPER_KVSTORE_H
#define CW_HELPER_KVSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include "kvproto.h"

#define CW_KV_MAX_ENDPOINTS 8

struct cw_kv_config {
	const char *endpoints[CW_KV_MAX_ENDPOINTS]; /* https://host:port */
	size_t n_endpoints;
	const char *ca_file, *cert_file, *key_file;
	const char *username, *password;            /* NULL: auth disabled */
	long timeout_ms;                            /* per request; 0 = 5000 */
};

struct cw_kv;

int cw_kv_new(const struct cw_kv_config *cfg, struct cw_kv **out);
void cw_kv_free(struct cw_kv *kv);
/* The last failure, naming the endpoint and etcd's own message. */
const char *cw_kv_error(const struct cw_kv *kv);
/* gRPC code of the last etcd error (0 if the failure was not etcd's). */
int cw_kv_error_code(const struct cw_kv *kv);

/* -ENOENT when absent. */
int cw_kv_get(struct cw_kv *kv, const char *key, struct cw_kv_pair *out);
void cw_kv_pair_clear(struct cw_kv_pair *kv);

typedef int (*cw_kv_pair_fn)(const struct cw_kv_pair *kv, void *arg);
/*
 * Every key under @prefix at one revision, @page keys per request: the
 * pages after the first are read at the first page's revision, so the
 * listing is a consistent snapshot.  *revision is that revision: the one to
 * start a watch from (+1).
 */
int cw_kv_list(struct cw_kv *kv, const char *prefix, int64_t page, cw_kv_pair_fn fn, void *arg,
	       int64_t *revision);

int cw_kv_put(struct cw_kv *kv, const char *key, const void *val, size_t len, int64_t lease);
/* Deletes @key, or every key under it with @prefix. */
int cw_kv_delete(struct cw_kv *kv, const char *key, bool prefix);
/* 0 if created, -EEXIST if the key exists. */
int cw_kv_create(struct cw_kv *kv, const char *key, const void *val, size_t len, int64_t lease);
/* 0 if swapped, -ESTALE if the key changed since @mod_revision. */
int cw_kv_cas(struct cw_kv *kv, const char *key, int64_t mod_revision, const void *val,
	      size_t len, int64_t lease);

int cw_kv_lease_grant(struct cw_kv *kv, int64_t ttl, int64_t *id);
/* -ENOENT once the lease has expired (TTL <= 0 in the answer). */
int cw_kv_lease_keepalive(struct cw_kv *kv, int64_t id, int64_t *ttl);
int cw_kv_lease_revoke(struct cw_kv *kv, int64_t id);

/*
 * Streams (watches) run on the event loop, not here: this prepares @easy
 * for a POST of @body to @path on the current endpoint (authenticating
 * first, blocking, when there is no token yet); the caller frees *hdrs
 * after the transfer.  After a failed stream, cw_kv_stream_failed() moves
 * to the next endpoint (keeping the token: etcd refuses it if it is no
 * good there), or only drops the token when etcd refused it.
 */
int cw_kv_stream_setup(struct cw_kv *kv, CURL *easy, const char *path, const char *body,
		       struct curl_slist **hdrs);
void cw_kv_stream_failed(struct cw_kv *kv, bool token_refused);
/* Whether etcd's error says the token is no good (expired, another member's, none). */
bool cw_kv_token_refused(const struct cw_kv_error *e);
const char *cw_kv_endpoint(const struct cw_kv *kv);

/*
 * One request at a time on the loop's curl multi handle, not blocking it:
 * POST @body to @path on the current endpoint within @timeout_ms.  @fn
 * gets 0 with the answer (HTTP 200), -EPROTO or -EACCES (etcd's error, in
 * @why), -ETIMEDOUT or -EHOSTUNREACH (transport; the client moves to its
 * next endpoint for what follows).  A refused token is renewed and the
 * request sent once more; when there is no token yet, the authentication
 * goes first, on the loop too.  -EBUSY while one is out.
 *
 * A read of a key this way (cw_kvp_range_req, count only) is the store's
 * liveness probe: an etcd that accepts connections but never answers
 * (stopped, wedged, without quorum) keeps its watch streams open and
 * silent, which only such a read shows.
 */
struct cw_loop;
struct cw_kv_req;
typedef void (*cw_kv_req_fn)(int rc, const char *body, size_t len, const char *why, void *arg);

int cw_kv_req_new(struct cw_loop *loop, struct cw_kv *kv, struct cw_kv_req **out);
/*
 * The loop @kv's streams run on (set by the first cw_kv_req_new or
 * cw_kv_watch_start): from then on a stream that starts without a token
 * gets one from an authentication on the loop, cw_kv_stream_setup saying
 * -EAGAIN meanwhile, instead of a blocking call.
 */
void cw_kv_set_loop(struct cw_kv *kv, struct cw_loop *loop);
/*
 * A stream that cw_kv_stream_setup told -EAGAIN (its client's token on its
 * way) queues a waiter: @fn(@arg) runs once that authentication ends, with
 * a token or without (the stream's next try then learns why), so it tries
 * again then, not on a timer.  A waiter is on the list at most once;
 * unwait it before freeing it.
 */
struct cw_kv_waiter {
	void (*fn)(void *arg);
	void *arg;
	struct cw_kv_waiter *next;
	bool queued;
};
void cw_kv_token_wait(struct cw_kv *kv, struct cw_kv_waiter *w);
void cw_kv_token_unwait(struct cw_kv *kv, struct cw_kv_waiter *w);
int cw_kv_req_start(struct cw_kv_req *r, const char *path, const char *body, long timeout_ms,
		    cw_kv_req_fn fn, void *arg);
/* The same with @body taken (freed here); NULL, as a request builder out of memory says: -ENOMEM. */
int cw_kv_req_send(struct cw_kv_req *r, const char *path, char *body, long timeout_ms,
		   cw_kv_req_fn fn, void *arg);
/*
 * Every key under @prefix, @page at a time, on the loop (each page a
 * request on @r, all read at the first page's revision): @each for every
 * pair (a nonzero return ends the listing with it), then @done with 0 (its
 * body NULL), or the failure as cw_kv_req_start's callback gets it.
 */
int cw_kv_req_list(struct cw_kv_req *r, const char *prefix, int64_t page, long timeout_ms,
		   cw_kv_pair_fn each, cw_kv_req_fn done, void *arg);
bool cw_kv_req_busy(const struct cw_kv_req *r);
/* Aborts a request in flight (its callback is not called).  NULL-safe. */
void cw_kv_req_free(struct cw_kv_req *r);

#endif
