/* SPDX-License-Identifier: Apache-2.0 */
/*
 * etcd v3 JSON gateway messages (etcd's api/etcdserverpb, as grpc-gateway
 * maps them to JSON): requests built as strings, responses parsed into
 * structs.  No I/O here: the transport (kvstore.c) moves the bytes, so this
 * layer is unit-tested and fuzzed on its own.
 *
 * Gateway conventions honoured: keys and values are base64 (bytes fields),
 * 64-bit integers arrive as JSON strings, zero-valued fields are omitted.
 */
#ifndef CW_HELPER_KVPROTO_H
#define CW_HELPER_KVPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cw_kv_pair {
	char *key;            /* NUL-terminated; keys in our schema are text */
	char *value;          /* NUL-terminated copy; value_len excludes the NUL */
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

struct cw_kv_range_resp {
	int64_t revision;     /* header.revision: the store's revision */
	int64_t count;
	bool more;
	struct cw_kv_pair *kvs;
	size_t n;
};

enum cw_kv_event_type { CW_KV_PUT, CW_KV_DELETE };

struct cw_kv_event {
	enum cw_kv_event_type type;
	struct cw_kv_pair kv;
};

struct cw_kv_watch_resp {
	int64_t revision;         /* header.revision */
	int64_t watch_id;
	bool created;
	bool canceled;
	int64_t compact_revision; /* > 0: the start revision was compacted */
	char cancel_reason[256];
	struct cw_kv_event *events;
	size_t n;
};

/* An error body: {"error":…,"code":N,"message":…}; code is a gRPC status. */
struct cw_kv_error {
	int code;
	char message[256];
};

#define CW_GRPC_PERMISSION_DENIED 7
#define CW_GRPC_UNAUTHENTICATED   16
#define CW_GRPC_OUT_OF_RANGE      11
#define CW_GRPC_NOT_FOUND         5
#define CW_GRPC_INVALID_ARGUMENT  3

/* The smallest key greater than every key with @prefix ("" for none). */
int cw_kvp_prefix_end(const char *prefix, char *out, size_t len);

char *cw_kvp_range_req(const char *key, const char *range_end, int64_t limit, int64_t revision,
		       bool count_only);
char *cw_kvp_put_req(const char *key, const void *val, size_t len, int64_t lease);
char *cw_kvp_delete_req(const char *key, const char *range_end);
/* Txn: put @key only if it does not exist (create_revision == 0). */
char *cw_kvp_create_req(const char *key, const void *val, size_t len, int64_t lease);
/* Txn: put @key only if its mod_revision is still @mod_revision. */
char *cw_kvp_cas_req(const char *key, int64_t mod_revision, const void *val, size_t len,
		     int64_t lease);
/*
 * A transaction that applies every put only when none of the keys (or key
 * ranges, with range_end) exists: how identities are allocated without a
 * lock (two nodes racing for one label set cannot both win).
 */
struct cw_kvp_absent {
	const char *key, *range_end;
};
struct cw_kvp_put {
	const char *key;
	const void *value;
	size_t len;
	int64_t lease;
};
char *cw_kvp_txn_req(const struct cw_kvp_absent *absent, size_t n_absent,
		     const struct cw_kvp_put *puts, size_t n_puts);
char *cw_kvp_lease_grant_req(int64_t ttl);
char *cw_kvp_lease_id_req(int64_t id); /* keepalive, revoke, timetolive */
char *cw_kvp_auth_req(const char *user, const char *password);
char *cw_kvp_watch_create_req(const char *key, const char *range_end, int64_t start_revision,
			      bool progress_notify);

int cw_kvp_parse_range(const char *buf, size_t len, struct cw_kv_range_resp *out, char *err,
		       size_t errlen);
void cw_kvp_range_clear(struct cw_kv_range_resp *r);
int cw_kvp_parse_txn(const char *buf, size_t len, bool *succeeded, int64_t *revision, char *err,
		     size_t errlen);
int cw_kvp_parse_revision(const char *buf, size_t len, int64_t *revision, char *err,
			  size_t errlen);
int cw_kvp_parse_lease(const char *buf, size_t len, int64_t *id, int64_t *ttl, char *err,
		       size_t errlen);
int cw_kvp_parse_auth(const char *buf, size_t len, char *token, size_t toklen, char *err,
		      size_t errlen);
/* One message of a watch stream: {"result":{…}} or an error object. */
int cw_kvp_parse_watch(const char *buf, size_t len, struct cw_kv_watch_resp *out, char *err,
		       size_t errlen);
void cw_kvp_watch_clear(struct cw_kv_watch_resp *w);
/* true if @buf is a gateway error body; fills @e. */
bool cw_kvp_parse_error(const char *buf, size_t len, struct cw_kv_error *e);

#endif
