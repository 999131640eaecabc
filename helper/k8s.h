/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kubernetes API client: informers that list, then watch, one resource
 * path each, on the helper's event loop (libcurl multi, never blocking),
 * keeping a local cache of the objects and telling a handler about every
 * change after the cache has taken it.
 *
 * Two layers, as kvproto.c/kvstore.c are split for etcd:
 *  - the protocol: a splitter from watch-stream bytes to JSON documents, a
 *    parser from a document to a watch event, the list parser, the URL
 *    builders and the cache with its relist diff.  No I/O, so they are
 *    unit-tested and fuzzed on their own;
 *  - the transport: configuration (explicit or in-cluster), the bearer
 *    token (re-read when the file changes: projected tokens rotate), and
 *    the list/watch state machine with its retries.
 *
 * Kubernetes conventions honoured (api-concepts, "Efficient detection of
 * changes" and "Retrieving large results sets in chunks"): resourceVersions
 * are opaque strings, only ever compared for equality and handed back; a
 * watch starts from the list's resourceVersion and restarts from the last
 * one seen (events and BOOKMARKs); "410 Gone"/"Expired" means the history
 * is gone and only a new list can resync; an expired continue token (410 on
 * a later page) means the paginated list restarts from its first page.
 */
#ifndef CW_HELPER_K8S_H
#define CW_HELPER_K8S_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cjson/cJSON.h>

struct cw_loop;

enum cw_k8s_event_type {
	CW_K8S_ADDED,
	CW_K8S_MODIFIED,
	CW_K8S_DELETED,
	CW_K8S_BOOKMARK,
	CW_K8S_ERROR,
};

/* "ADDED", "MODIFIED", …: the wire names. */
const char *cw_k8s_event_name(enum cw_k8s_event_type type);

/* ===== protocol: bytes in, events out; no I/O ======================== */

/* One watch event (an object of up to 1.5 MB in etcd, plus its envelope). */
#define CW_K8S_MAX_EVENT (16u << 20)
/* "namespace/name": 63 + 1 + 253 and the NUL. */
#define CW_K8S_KEY_MAX 320

/*
 * Splits a watch response body into its JSON documents.  The API server
 * writes one compact object per line, but the splitter follows the JSON
 * structure (braces outside strings), not the newlines, so a document may
 * arrive in any number of pieces, several may share a piece, and a server
 * that pretty-prints or omits the newlines is read the same.
 */
struct cw_k8s_stream {
	char *buf;
	size_t len, cap;
	size_t start;     /* first byte of the document being assembled */
	size_t pos;       /* next byte to scan */
	unsigned int depth;
	bool in_str, esc;
	uint64_t base;    /* stream offset of buf[0], for messages */
	int error;        /* sticky: a stream that failed once stays failed */
};

void cw_k8s_stream_init(struct cw_k8s_stream *s);
void cw_k8s_stream_clear(struct cw_k8s_stream *s);
/* Appends @len bytes; -E2BIG when one document would exceed CW_K8S_MAX_EVENT. */
int cw_k8s_stream_feed(struct cw_k8s_stream *s, const void *data, size_t len, char *err,
		       size_t errlen);
/*
 * 1 with the next complete document in *doc and *len (valid until the next
 * feed or clear), 0 when none is complete yet, -EINVAL when the stream holds
 * something that is not a JSON object (the message names the byte offset).
 */
int cw_k8s_stream_next(struct cw_k8s_stream *s, const char **doc, size_t *len, char *err,
		       size_t errlen);
/* Bytes of an unfinished document: a stream that ends with some was cut. */
size_t cw_k8s_stream_pending(const struct cw_k8s_stream *s);

/* A Status document (the body of an HTTP error, the object of an ERROR event). */
struct cw_k8s_apistatus {
	int code;           /* HTTP code it stands for: 410 Gone, 403, 500, … */
	char reason[64];    /* "Expired", "Gone", "Forbidden", … */
	char message[256];
};

/* true if @buf is a Status document; fills @st. */
bool cw_k8s_parse_status(const char *buf, size_t len, struct cw_k8s_apistatus *st);

struct cw_k8s_event {
	enum cw_k8s_event_type type;
	cJSON *object;                /* owned; the Status for ERROR */
	char key[CW_K8S_KEY_MAX];     /* ADDED/MODIFIED/DELETED: "ns/name" or "name" */
	const char *rv;               /* metadata.resourceVersion, into @object ("" for ERROR) */
	struct cw_k8s_apistatus status; /* ERROR only */
};

/*
 * One document of a watch stream: {"type":…,"object":{…}}.  ADDED, MODIFIED
 * and DELETED need an object with a valid name and a resourceVersion, a
 * BOOKMARK a resourceVersion; anything else is refused with a message.
 */
int cw_k8s_parse_event(const char *buf, size_t len, struct cw_k8s_event *ev, char *err,
		       size_t errlen);
void cw_k8s_event_clear(struct cw_k8s_event *ev);
/* The ERROR that says the watch's resourceVersion left the history: relist. */
bool cw_k8s_event_expired(const struct cw_k8s_event *ev);

struct cw_k8s_list {
	cJSON *items;       /* owned array of objects, each given kind/apiVersion */
	char *rv;           /* metadata.resourceVersion: where the watch starts */
	char *cont;         /* metadata.continue; NULL on the last page */
};

/* A list (one page of it): every item must have a valid key and a resourceVersion. */
int cw_k8s_parse_list(const char *buf, size_t len, struct cw_k8s_list *out, char *err,
		      size_t errlen);
void cw_k8s_list_clear(struct cw_k8s_list *l);

/* The cache key of @obj: "namespace/name", or "name" for a cluster-scoped object. */
int cw_k8s_object_key(const cJSON *obj, char *buf, size_t len, char *err, size_t errlen);
/* metadata.resourceVersion, or "" when absent. */
const char *cw_k8s_object_rv(const cJSON *obj);

/*
 * Request URLs (malloc'd; NULL on a bad @path or no memory).  @path is the
 * collection, "/api/v1/pods"; selectors are percent-encoded here.
 */
char *cw_k8s_list_url(const char *base, const char *path, const char *field_selector,
		      const char *label_selector, int limit, const char *cont);
char *cw_k8s_watch_url(const char *base, const char *path, const char *field_selector,
		       const char *label_selector, const char *rv, int timeout_s);

/*
 * The cache: objects by key, each owned by the cache.  The callbacks run
 * after the cache holds the change; @old (and, for DELETED, @obj) are
 * freed when the callback returns, so a callback that wants to keep them
 * duplicates them.  A callback returning non-zero stops the operation and
 * its value is returned.
 *
 * ADDED: @obj, @old NULL.  MODIFIED: @obj the new state, @old the cached
 * one.  DELETED: @obj the last state (the server's, or the cache's when a
 * relist found it gone), @old the cached one.
 */
struct cw_k8s_cache;

typedef int (*cw_k8s_event_fn)(enum cw_k8s_event_type type, const cJSON *obj,
			       const cJSON *old, void *arg);
typedef int (*cw_k8s_object_fn)(const cJSON *obj, void *arg);

int cw_k8s_cache_new(struct cw_k8s_cache **out);
void cw_k8s_cache_free(struct cw_k8s_cache *c);
size_t cw_k8s_cache_count(const struct cw_k8s_cache *c);
/* @ns NULL or "" for a cluster-scoped object.  Borrowed. */
const cJSON *cw_k8s_cache_get(const struct cw_k8s_cache *c, const char *ns, const char *name);
/* In no particular order; @fn must not change the cache. */
int cw_k8s_cache_foreach(const struct cw_k8s_cache *c, cw_k8s_object_fn fn, void *arg);
/*
 * Applies a watch event, consuming @obj.  ADDED of a cached key is told as
 * MODIFIED, MODIFIED of an unknown key as ADDED, DELETED of an unknown key
 * not at all, and an object whose resourceVersion equals the cached one
 * not at all: what the handler hears is what changed in the cache.
 */
int cw_k8s_cache_apply(struct cw_k8s_cache *c, enum cw_k8s_event_type type, cJSON *obj,
		       cw_k8s_event_fn fn, void *arg);
/*
 * Makes the cache equal to a fresh list, consuming @items (an array), and
 * tells the difference as events: DELETED for cached keys the list lacks
 * (first, in key order), then ADDED and MODIFIED in list order; objects
 * whose resourceVersion did not change are not told.
 */
int cw_k8s_cache_replace(struct cw_k8s_cache *c, cJSON *items, cw_k8s_event_fn fn, void *arg);

/* ===== transport: the client and its informers ======================== */

#define CW_K8S_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

struct cw_k8s_config {
	/*
	 * "https://host:port".  NULL: in-cluster, from KUBERNETES_SERVICE_HOST
	 * and KUBERNETES_SERVICE_PORT, with the service account's token and CA
	 * (under @sa_dir) unless @token_file/@ca_file say otherwise.
	 */
	const char *url;
	const char *token_file;   /* explicit: NULL sends no token */
	const char *ca_file;      /* explicit: NULL trusts the system's CAs */
	const char *sa_dir;       /* NULL: CW_K8S_SA_DIR */
	int watch_timeout_s;      /* a watch lasts [t, 2t) s, spread by jitter; 0: 300 */
	int page_limit;           /* list page size; 0: 500 */
	long connect_timeout_ms;  /* 0: 10000 */
	long list_timeout_ms;     /* one list page; 0: 60000 */
	int64_t backoff_base_ms;  /* retries after failures; 0: 500 */
	int64_t backoff_cap_ms;   /* 0: 30000 */
};

struct cw_k8s;
struct cw_k8s_informer;

/*
 * Resolves and checks the configuration (the token and CA files must be
 * readable now); on failure @err says what is missing.
 */
int cw_k8s_new(struct cw_loop *loop, const struct cw_k8s_config *cfg, struct cw_k8s **out,
	       char *err, size_t errlen);
/* Frees the client and any informer still open.  NULL-safe. */
void cw_k8s_free(struct cw_k8s *k);
const char *cw_k8s_url(const struct cw_k8s *k);

typedef void (*cw_k8s_handler_fn)(struct cw_k8s_informer *inf, enum cw_k8s_event_type type,
				  const cJSON *obj, const cJSON *old, void *arg);
typedef void (*cw_k8s_synced_fn)(struct cw_k8s_informer *inf, void *arg);

struct cw_k8s_informer_opts {
	const char *path;            /* the collection: "/api/v1/pods" */
	const char *field_selector;  /* NULL or e.g. "spec.nodeName=node1" */
	const char *label_selector;  /* NULL or e.g. "app=x" */
	cw_k8s_handler_fn handler;   /* ADDED/MODIFIED/DELETED, as the cache tells them */
	cw_k8s_synced_fn synced;     /* once, after the first list has been delivered */
	void *arg;
	/*
	 * What of each object to cache and hand to @handler (client-go's
	 * transform, Cilium's slim objects): dotted paths whose subtrees are
	 * kept ("metadata.labels", "spec.ports"; a path through a list applies
	 * to each element: "endpoints.conditions"), NULL-terminated, in static
	 * storage, at most CW_K8S_KEEP_MAX.  metadata.name, .namespace and
	 * .resourceVersion are always kept, managedFields and kubectl's
	 * last-applied annotation never.  NULL: the whole object.
	 */
	const char *const *keep;
};

#define CW_K8S_KEEP_MAX 16

/*
 * Prunes @obj to the paths of @keep (as the informer option above), in
 * place.  A value where @keep asks for something inside it but which is
 * not an object or list is left as it is, for the parser to refuse.
 */
void cw_k8s_slim(cJSON *obj, const char *const *keep);

/*
 * Starts listing (on the loop's next turn) and then watching @o->path.
 * Handlers run on the loop, never inside libcurl's callbacks, and may free
 * this informer or any other (not the client).
 */
int cw_k8s_informer_new(struct cw_k8s *k, const struct cw_k8s_informer_opts *o,
			struct cw_k8s_informer **out);
/* NULL-safe; stops the transfer. */
void cw_k8s_informer_free(struct cw_k8s_informer *inf);

const char *cw_k8s_informer_path(const struct cw_k8s_informer *inf);
bool cw_k8s_informer_synced(const struct cw_k8s_informer *inf);
/* Borrowed, valid until the loop next runs the informer. */
const cJSON *cw_k8s_informer_get(const struct cw_k8s_informer *inf, const char *ns,
				 const char *name);
int cw_k8s_informer_foreach(const struct cw_k8s_informer *inf, cw_k8s_object_fn fn, void *arg);

/* For the helper's status command. */
struct cw_k8s_informer_status {
	const char *name;          /* the path and its selectors */
	bool connected;            /* the last request was answered 200 and nothing failed since */
	bool synced;               /* the first list has been delivered */
	size_t objects;
	time_t last_sync;          /* wall clock of the last complete list; 0: never */
	time_t last_event;         /* of the last watch event or bookmark; 0: never */
	unsigned long events;      /* watch events applied */
	unsigned long relists;     /* lists after the first */
	unsigned long reconnects;  /* requests retried after a failure */
	char resource_version[64]; /* where the next watch starts (truncated) */
	char last_error[512];      /* the last failure, naming the URL; "" if none */
};

void cw_k8s_informer_status(const struct cw_k8s_informer *inf,
			    struct cw_k8s_informer_status *out);

#endif
