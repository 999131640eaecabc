/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A mirror of one etcd prefix kept by list-then-watch on the event loop:
 * the initial list (a consistent snapshot), then a watch stream from the
 * revision after it, resumed from the last revision seen when the stream
 * breaks (reconnecting with backoff and jitter, failing over endpoints), and
 * a full relist when that revision has been compacted.  The mirror keeps
 * every key and value, so a relist is delivered as the difference against
 * it: consumers see puts and deletes, never "start again".
 */
#ifndef CW_HELPER_KVWATCH_H
#define CW_HELPER_KVWATCH_H

#include <stdbool.h>
#include <stdint.h>
#include "kvstore.h"
#include "loop.h"

struct cw_kv_watch;

struct cw_kv_watch_ops {
	/* A key created or changed; @old is NULL for a new key. */
	void (*put)(void *arg, const struct cw_kv_pair *kv, const struct cw_kv_pair *old);
	void (*del)(void *arg, const struct cw_kv_pair *old);
	/* After the first complete listing has been delivered. */
	void (*synced)(void *arg);
};

struct cw_kv_watch_status {
	bool synced;            /* the first listing has been delivered */
	bool streaming;         /* a watch stream is open and created */
	int64_t revision;       /* last revision applied */
	int64_t last_sync_ms;   /* monotonic time of the last list or event */
	uint64_t events, relists, reconnects;
	size_t keys;
	const char *error;      /* last failure, "" when none */
};

/* @kv is shared, not owned: its unary calls do the listing. */
int cw_kv_watch_start(struct cw_loop *loop, struct cw_kv *kv, const char *prefix,
		      const struct cw_kv_watch_ops *ops, void *arg, struct cw_kv_watch **out);
/* Stops the stream; no callback runs afterwards.  NULL-safe. */
void cw_kv_watch_free(struct cw_kv_watch *w);
void cw_kv_watch_get_status(const struct cw_kv_watch *w, struct cw_kv_watch_status *st);
/* The mirrored value of @key, or NULL. */
const struct cw_kv_pair *cw_kv_watch_lookup(const struct cw_kv_watch *w, const char *key);
typedef void (*cw_kv_watch_iter_fn)(const struct cw_kv_pair *kv, void *arg);
void cw_kv_watch_foreach(const struct cw_kv_watch *w, cw_kv_watch_iter_fn fn, void *arg);

/*
 * The stream splitter, pure for tests: appends @len bytes to @buf and
 * returns through @fn each complete top-level JSON object (the gateway
 * writes one message per object, newline-delimited, but the split must not
 * depend on where the network cut the bytes).  -EMSGSIZE if a single
 * message exceeds @max.
 */
struct cw_json_splitter {
	char *data;
	size_t len, cap, scanned;
	int depth;
	bool in_string, escaped;
};
typedef int (*cw_json_msg_fn)(const char *msg, size_t len, void *arg);
int cw_json_split(struct cw_json_splitter *s, const char *buf, size_t len, size_t max,
		  cw_json_msg_fn fn, void *arg);
void cw_json_splitter_clear(struct cw_json_splitter *s);

#endif
