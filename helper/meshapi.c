// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <causeway/log.h>
#include "etcdconf.h"
#include "k8s.h"
#include "kvstore.h"
#include "loop.h"
#include "meshapi.h"
#include "records.h"
#include "services.h"

/* Retries of etcd writes: 0.5 s doubling up to 30 s, jittered. */
#define RETRY_BASE_MS 500
#define RETRY_CAP_MS 30000
/* The published set is checked against etcd this often (keys removed by hand, a restored etcd). */
#define RESYNC_MS (5 * 60 * 1000)
/* a periodic put must be answered within this, or it is tried at its next turn */
#define KV_REQ_TIMEOUT_MS 5000

/* One key this process wants in, or knows to be in, etcd. */
struct rec {
	char *key, *val;
};

/* One write of a publication pass: a put (val), a delete (val NULL), or a canary put. */
struct kvop {
	char *key, *val;
	const char *canary;       /* the kind a canary put says is synced; NULL otherwise */
};

/* Sorted by key. */
struct recs {
	struct rec *v;
	size_t n, cap;
};

struct meshapi {
	const struct cw_meshapi_opts *o;
	struct cw_kv *kv;
	struct cw_loop *loop;
	struct cw_timer *t_config, *t_heartbeat, *t_gc, *t_publish, *t_resync;
	struct cw_kv_req *req_config, *req_heartbeat;
	bool config_written;

	struct cw_k8s *k8s;
	struct cw_k8s_informer *i_services, *i_slices, *i_namespaces;
	/*
	 * What etcd holds under our services/v1 prefix, as far as we know: read
	 * from etcd after the first sync (stale keys of an earlier run included)
	 * and updated by every write that succeeded, so a write is made only
	 * where the wanted value differs and a failed one is simply tried again.
	 */
	struct recs published;
	bool published_known;     /* false: list etcd before the next diff */
	bool services_synced;     /* the services canary is written */
	bool mesh_synced;         /* the nodes, ip and identities canaries are written */
	bool retrying;            /* t_publish holds a backoff, not a 0 ms turn */
	unsigned int attempt;
	/*
	 * A publication pass: its writes (puts, deletes, canaries) go one at a
	 * time on req_pub, on the loop; a pass asked for meanwhile runs after.
	 */
	struct cw_kv_req *req_pub;
	struct kvop *ops;
	size_t n_ops, next_op;
	unsigned int n_put, n_del;
	bool again;
	/* identities seen unreferenced by the previous scan: removed if still so */
	uint32_t *suspects;
	size_t n_suspects;
	/* the identity scan under way (req_gc): its listings, then its deletes */
	struct cw_kv_req *req_gc;
	struct gc_scan *gc;
	uint32_t *gc_del;
	size_t n_gc_del, next_gc_del;
	struct recs listing;      /* our prefix as the listing under way reads it */
};

static void publish_soon(struct meshapi *m);

/*
 * cluster-config and the heartbeat are periodic single puts: they go out on
 * the loop (cw_kv_req), so an etcd that stopped answering holds nothing up.
 */
static void config_kv(const struct meshapi *m, char *key, size_t klen, char *val, size_t vlen)
{
	snprintf(key, klen, CW_KEY_CLUSTER_CONFIG "%s", m->o->cluster);
	snprintf(val, vlen,
		 "{\"id\":%u,\"capabilities\":{\"syncedCanaries\":true,\"maxConnectedClusters\":255}}",
		 m->o->cluster_id);
}

/* Starts a put of @key on *@req (made on first use); 0, -EBUSY while one is out, or the error. */
static int put_async(struct meshapi *m, struct cw_kv_req **req, const char *key, const char *val,
		     cw_kv_req_fn fn)
{
	int rc;

	if (!*req && cw_kv_req_new(m->loop, m->kv, req))
		return -ENOMEM;
	rc = cw_kv_req_send(*req, "/v3/kv/put", cw_kvp_put_req(key, val, strlen(val), 0),
			    KV_REQ_TIMEOUT_MS, fn, m);
	if (rc && rc != -EBUSY)
		pr_warn("mesh-apiserver: cannot write %s: %s", key,
			cw_kv_error(m->kv)[0] ? cw_kv_error(m->kv) : strerror(-rc));
	return rc;
}

static void on_config_written(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct meshapi *m = arg;
	char key[128], val[160];

	(void)body;
	(void)len;
	config_kv(m, key, sizeof(key), val, sizeof(val));
	if (rc) {
		pr_warn("mesh-apiserver: cannot write %s: %s", key, why);
		return; /* periodic: tried again */
	}
	pr_info("mesh-apiserver: wrote %s = %s", key, val);
	m->config_written = true;
	cw_timer_disarm(m->t_config);
	publish_soon(m); /* the nodes, ip and identities canaries may go now */
}

static void on_config(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	char key[128], val[160];

	(void)loop;
	config_kv(m, key, sizeof(key), val, sizeof(val));
	put_async(m, &m->req_config, key, val, on_config_written);
}

static void on_heartbeat_written(int rc, const char *body, size_t len, const char *why, void *arg)
{
	(void)body;
	(void)len;
	(void)arg;
	if (rc)
		pr_warn("mesh-apiserver: heartbeat: %s", why);
}

/* The time now as Go's time.RFC3339 in UTC, as Cilium writes heartbeats and canaries. */
static void rfc3339_now(char *buf, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void on_heartbeat(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	char now[64];

	(void)loop;
	rfc3339_now(now, sizeof(now));
	put_async(m, &m->req_heartbeat, CW_KEY_HEARTBEAT, now, on_heartbeat_written);
}

struct gc_scan {
	struct meshapi *m;
	uint32_t *ids;
	char **labels;
	size_t n, cap;
	char **refs;          /* the labels of every value/ reference */
	size_t n_refs, cap_refs;
	int err;
};

static int collect_id(const struct cw_kv_pair *kv, void *arg)
{
	struct gc_scan *s = arg;
	uint32_t id;

	if (cw_identity_key_parse(kv->key, &id) || !cw_identity_in_cluster(id, s->m->o->cluster_id))
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		uint32_t *ni = realloc(s->ids, cap * sizeof(*ni));
		char **nl;

		if (!ni)
			return -ENOMEM;
		s->ids = ni;
		nl = realloc(s->labels, cap * sizeof(*nl));
		if (!nl)
			return -ENOMEM;
		s->labels = nl;
		s->cap = cap;
	}
	s->labels[s->n] = strdup(kv->value);
	if (!s->labels[s->n])
		return -ENOMEM;
	s->ids[s->n++] = id;
	return 0;
}

static int collect_ref(const struct cw_kv_pair *kv, void *arg)
{
	struct gc_scan *s = arg;
	const char *labels = kv->key + strlen(CW_KEY_VALUE);
	const char *slash = strrchr(labels, '/');

	if (!slash)
		return 0;
	if (s->n_refs == s->cap_refs) {
		size_t cap = s->cap_refs ? s->cap_refs * 2 : 64;
		char **nr = realloc(s->refs, cap * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		s->refs = nr;
		s->cap_refs = cap;
	}
	s->refs[s->n_refs] = strndup(labels, (size_t)(slash - labels));
	return s->refs[s->n_refs++] ? 0 : -ENOMEM;
}

static void gc_end(struct meshapi *m)
{
	struct gc_scan *s = m->gc;

	if (s) {
		for (size_t i = 0; i < s->n; i++)
			free(s->labels[i]);
		for (size_t i = 0; i < s->n_refs; i++)
			free(s->refs[i]);
		free(s->ids);
		free(s->labels);
		free(s->refs);
		free(s);
	}
	m->gc = NULL;
	free(m->gc_del);
	m->gc_del = NULL;
	m->n_gc_del = m->next_gc_del = 0;
}

static int gc_collect_id(const struct cw_kv_pair *kv, void *arg)
{
	return collect_id(kv, ((struct meshapi *)arg)->gc);
}

static int gc_collect_ref(const struct cw_kv_pair *kv, void *arg)
{
	return collect_ref(kv, ((struct meshapi *)arg)->gc);
}

static void gc_delete_next(struct meshapi *m);

static void on_gc_deleted(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct meshapi *m = arg;
	uint32_t id = m->gc_del[m->next_gc_del];

	(void)body;
	(void)len;
	if (rc) {
		pr_warn("mesh-apiserver: identity gc: cannot remove identity %" PRIu32 ": %s", id,
			why);
		gc_end(m);
		return;
	}
	pr_info("mesh-apiserver: identity %" PRIu32 " unreferenced, removed", id);
	m->next_gc_del++;
	gc_delete_next(m);
}

static void gc_delete_next(struct meshapi *m)
{
	char key[64];
	int rc;

	if (m->next_gc_del == m->n_gc_del) {
		gc_end(m);
		return;
	}
	snprintf(key, sizeof(key), CW_KEY_ID "%" PRIu32, m->gc_del[m->next_gc_del]);
	rc = cw_kv_req_send(m->req_gc, "/v3/kv/deleterange", cw_kvp_delete_req(key, NULL),
			    KV_REQ_TIMEOUT_MS, on_gc_deleted, m);
	if (rc) {
		pr_warn("mesh-apiserver: identity gc: cannot remove %s: %s", key, strerror(-rc));
		gc_end(m);
	}
}

/* Both listings in: which ids are unreferenced, which of them were already last time. */
static void on_gc_refs(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct meshapi *m = arg;
	struct gc_scan *s = m->gc;
	uint32_t *next;
	size_t n_next = 0;

	(void)body;
	(void)len;
	if (rc) {
		pr_warn("mesh-apiserver: identity gc: %s", why);
		gc_end(m);
		return;
	}
	next = calloc(s->n ? s->n : 1, sizeof(*next));
	m->gc_del = calloc(s->n ? s->n : 1, sizeof(*m->gc_del));
	if (!next || !m->gc_del) {
		free(next);
		gc_end(m);
		return;
	}
	for (size_t i = 0; i < s->n; i++) {
		bool referenced = false, suspect = false;

		for (size_t j = 0; j < s->n_refs && !referenced; j++)
			referenced = strcmp(s->refs[j], s->labels[i]) == 0;
		if (referenced)
			continue;
		for (size_t j = 0; j < m->n_suspects && !suspect; j++)
			suspect = m->suspects[j] == s->ids[i];
		if (suspect)
			m->gc_del[m->n_gc_del++] = s->ids[i];
		else
			next[n_next++] = s->ids[i];
	}
	free(m->suspects);
	m->suspects = next;
	m->n_suspects = n_next;
	gc_delete_next(m);
}

static void on_gc_ids(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct meshapi *m = arg;

	(void)body;
	(void)len;
	if (!rc)
		rc = cw_kv_req_list(m->req_gc, CW_KEY_VALUE, 1000, KV_REQ_TIMEOUT_MS,
				    gc_collect_ref, on_gc_refs, m);
	if (rc) {
		pr_warn("mesh-apiserver: identity gc: %s", why && why[0] ? why : strerror(-rc));
		gc_end(m);
	}
}

/*
 * An id/<n> key lives as long as some node references its labels.  One
 * unreferenced scan is not enough (a node may be between allocating the id
 * and writing its reference, or re-publishing after a lost lease): the id
 * goes only when two scans a period apart both found it unreferenced.  The
 * scan (two paged listings, then the deletes) runs on the loop, one
 * request at a time; a scan still out when the next is due makes that one
 * skip its turn.
 */
static void on_gc(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	int rc;

	(void)loop;
	if (m->gc)
		return;
	if (!m->req_gc && cw_kv_req_new(m->loop, m->kv, &m->req_gc))
		return;
	m->gc = calloc(1, sizeof(*m->gc));
	if (!m->gc)
		return;
	m->gc->m = m;
	rc = cw_kv_req_list(m->req_gc, CW_KEY_ID, 1000, KV_REQ_TIMEOUT_MS, gc_collect_id, on_gc_ids,
			    m);
	if (rc) {
		pr_warn("mesh-apiserver: identity gc: %s", cw_kv_error(m->kv)[0] ?
			cw_kv_error(m->kv) : strerror(-rc));
		gc_end(m);
	}
}

/* --- global services ---------------------------------------------------------------- */

static void recs_clear(struct recs *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->v[i].key);
		free(r->v[i].val);
	}
	free(r->v);
	*r = (struct recs){ 0 };
}

/* Takes @key and @val, also on failure. */
/* Room for one more record. */
static int recs_reserve(struct recs *r)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct rec *v = realloc(r->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		r->v = v;
		r->cap = cap;
	}
	return 0;
}

static int recs_add(struct recs *r, char *key, char *val)
{
	if (!key || !val || recs_reserve(r))
		goto nomem;
	r->v[r->n++] = (struct rec){ key, val };
	return 0;
nomem:
	free(key);
	free(val);
	return -ENOMEM;
}

static int cmp_rec(const void *a, const void *b)
{
	return strcmp(((const struct rec *)a)->key, ((const struct rec *)b)->key);
}

static void services_prefix(const struct meshapi *m, char *buf, size_t len)
{
	snprintf(buf, len, CW_KEY_SERVICES "%s/", m->o->cluster);
}

static int collect_published(const struct cw_kv_pair *kv, void *arg)
{
	return recs_add(arg, strdup(kv->key), strndup(kv->value, kv->value_len));
}

/* The ready tuples of every EndpointSlice, grouped by their service. */
struct slice_ent {
	char key[2 * CW_SVC_NAME_MAX + 2];  /* "ns/name" */
	size_t start, n;
};

struct desired {
	struct meshapi *m;
	struct cw_svc_bes bes;      /* of all slices, each slice's a run of it */
	struct slice_ent *slices;
	size_t n_slices, cap_slices;
	struct cw_svc_bes one;      /* the service being formatted */
	struct recs want;
};

static int cmp_slice(const void *a, const void *b)
{
	return strcmp(((const struct slice_ent *)a)->key, ((const struct slice_ent *)b)->key);
}

static int collect_slice(const cJSON *obj, void *arg)
{
	struct desired *d = arg;
	char ns[CW_SVC_NAME_MAX + 1], svc[CW_SVC_NAME_MAX + 1], err[256];
	size_t before = d->bes.n;

	/* one that does not parse was logged by the handler when it came */
	if (cw_epslice_parse(obj, ns, sizeof(ns), svc, sizeof(svc), (uint16_t)d->m->o->cluster_id,
			     &d->bes, err, sizeof(err)) || !svc[0])
		return 0;
	if (d->n_slices == d->cap_slices) {
		size_t cap = d->cap_slices ? d->cap_slices * 2 : 64;
		struct slice_ent *v = realloc(d->slices, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		d->slices = v;
		d->cap_slices = cap;
	}
	snprintf(d->slices[d->n_slices].key, sizeof(d->slices[0].key), "%s/%s", ns, svc);
	d->slices[d->n_slices].start = before;
	d->slices[d->n_slices].n = d->bes.n - before;
	d->n_slices++;
	return 0;
}

/* A namespace gone, or going: its Services go with it and no new one can be made in it. */
static bool namespace_live(const struct meshapi *m, const char *ns)
{
	const cJSON *o = cw_k8s_informer_get(m->i_namespaces, NULL, ns);
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");

	return o && !cJSON_GetObjectItemCaseSensitive(md, "deletionTimestamp");
}

/*
 * A Service is published when it is global, shared (the default) and has a
 * ClusterIP: remote clusters balance their own ClusterIP of the same
 * ns/name over these backends.  One that is global but not shared is
 * withdrawn: this cluster still balances over remote backends, but offers
 * none of its own.
 */
static int want_service(const cJSON *obj, void *arg)
{
	struct desired *d = arg;
	struct slice_ent probe, *e;
	struct cw_svc svc;
	char err[256], *key = NULL;

	if (cw_svc_from_k8s(obj, &svc, err, sizeof(err)) || !svc.global || !svc.shared ||
	    !svc.cluster_ip.s_addr || !namespace_live(d->m, svc.ns))
		return 0;
	d->one.n = 0;
	snprintf(probe.key, sizeof(probe.key), "%s/%s", svc.ns, svc.name);
	e = d->n_slices ? bsearch(&probe, d->slices, d->n_slices, sizeof(*e), cmp_slice) : NULL;
	while (e && e > d->slices && strcmp(e[-1].key, probe.key) == 0)
		e--;
	for (; e && e < d->slices + d->n_slices && strcmp(e->key, probe.key) == 0; e++)
		for (size_t i = 0; i < e->n; i++)
			if (cw_svc_bes_add(&d->one, &d->bes.v[e->start + i]))
				return -ENOMEM;
	if (asprintf(&key, CW_KEY_SERVICES "%s/%s/%s", d->m->o->cluster, svc.ns, svc.name) < 0)
		return -ENOMEM;
	return recs_add(&d->want, key,
			cw_svc_rec_format(&svc, d->m->o->cluster, d->m->o->cluster_id, &d->one));
}

static int build_desired(struct meshapi *m, struct desired *d)
{
	int rc;

	rc = cw_k8s_informer_foreach(m->i_slices, collect_slice, d);
	if (rc)
		return rc;
	if (d->n_slices)
		qsort(d->slices, d->n_slices, sizeof(*d->slices), cmp_slice);
	rc = cw_k8s_informer_foreach(m->i_services, want_service, d);
	if (rc)
		return rc;
	if (d->want.n)
		qsort(d->want.v, d->want.n, sizeof(*d->want.v), cmp_rec);
	return 0;
}

static void ops_clear(struct meshapi *m)
{
	for (size_t i = 0; i < m->n_ops; i++) {
		free(m->ops[i].key);
		free(m->ops[i].val);
	}
	free(m->ops);
	m->ops = NULL;
	m->n_ops = m->next_op = 0;
}

/* Takes @key and @val (NULL: a delete), also on failure. */
static int ops_add(struct meshapi *m, char *key, char *val, const char *canary)
{
	struct kvop *v = key ? realloc(m->ops, (m->n_ops + 1) * sizeof(*v)) : NULL;

	if (!v) {
		free(key);
		free(val);
		return -ENOMEM;
	}
	m->ops = v;
	m->ops[m->n_ops++] = (struct kvop){ key, val, canary };
	return 0;
}

/*
 * cilium/synced/<cluster>/cilium/state/<kind>/v1: the initial publication of
 * that kind is complete.  Cilium's kvstore sync store writes the time, in
 * Go's time.RFC3339; readers only look at the key's presence.
 */
static int add_canary(struct meshapi *m, const char *kind)
{
	char *key = NULL, now[64];

	rfc3339_now(now, sizeof(now));
	if (asprintf(&key, CW_KEY_SYNCED "%s/cilium/state/%s/v1", m->o->cluster, kind) < 0)
		return -ENOMEM;
	return ops_add(m, key, strdup(now), kind);
}

/*
 * The writes that make etcd hold @want under our prefix: puts of what is
 * missing or differs, deletes of what is not wanted.
 */
static int add_diff(struct meshapi *m, const struct recs *want)
{
	const struct recs *pub = &m->published;
	size_t i = 0, j = 0;
	int rc = 0;

	while (!rc && (i < want->n || j < pub->n)) {
		const struct rec *w = i < want->n ? &want->v[i] : NULL;
		const struct rec *p = j < pub->n ? &pub->v[j] : NULL;
		int c = !w ? 1 : !p ? -1 : strcmp(w->key, p->key);

		if (c >= 0)
			j++;
		if (c <= 0)
			i++;
		if (c > 0)
			rc = ops_add(m, strdup(p->key), NULL, NULL);
		else if (c < 0 || strcmp(w->val, p->val) != 0)
			rc = ops_add(m, strdup(w->key), strdup(w->val), NULL);
	}
	return rc;
}

/* Where @key is in @r, or would go (*found says which). */
static size_t recs_pos(const struct recs *r, const char *key, bool *found)
{
	size_t lo = 0, hi = r->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(r->v[mid].key, key);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

/* What etcd holds after @op succeeded.  Takes the op's key and value. */
static int recs_apply(struct recs *r, struct kvop *op)
{
	bool found;
	size_t at = recs_pos(r, op->key, &found);

	if (!op->val) {
		if (found) {
			free(r->v[at].key);
			free(r->v[at].val);
			memmove(&r->v[at], &r->v[at + 1], (r->n - at - 1) * sizeof(*r->v));
			r->n--;
		}
		return 0;
	}
	if (found) {
		free(r->v[at].val);
		r->v[at].val = op->val;
		op->val = NULL;
		return 0;
	}
	if (recs_reserve(r))
		return -ENOMEM;
	memmove(&r->v[at + 1], &r->v[at], (r->n - at) * sizeof(*r->v));
	r->v[at] = (struct rec){ op->key, op->val };
	r->n++;
	op->key = op->val = NULL;
	return 0;
}

/* etcd down or refusing: everything is recomputed on the next pass, nothing is lost. */
static void publish_failed(struct meshapi *m)
{
	int64_t delay = cw_backoff_ms(m->attempt++, RETRY_BASE_MS, RETRY_CAP_MS);

	ops_clear(m);
	m->again = false;
	pr_warn("mesh-apiserver: publishing failed, retrying in %" PRId64 " ms", delay);
	m->retrying = true;
	cw_timer_arm(m->t_publish, delay);
}

static void on_written(int rc, const char *body, size_t len, const char *why, void *arg);

/* The pass's next write, or its end. */
static int ops_next(struct meshapi *m)
{
	struct kvop *op;
	char *body;
	int rc;

	if (m->next_op == m->n_ops) {
		if (m->n_put || m->n_del)
			pr_info("mesh-apiserver: services: %u published, %u withdrawn, %zu in etcd",
				m->n_put, m->n_del, m->published.n);
		ops_clear(m);
		m->attempt = 0;
		if (m->again) {
			m->again = false;
			publish_soon(m);
		}
		return 0;
	}
	op = &m->ops[m->next_op];
	body = op->val ? cw_kvp_put_req(op->key, op->val, strlen(op->val), 0) :
			 cw_kvp_delete_req(op->key, NULL);
	rc = cw_kv_req_send(m->req_pub, op->val ? "/v3/kv/put" : "/v3/kv/deleterange", body,
			    KV_REQ_TIMEOUT_MS, on_written, m);
	if (rc)
		pr_warn("mesh-apiserver: cannot write %s: %s", op->key,
			cw_kv_error(m->kv)[0] ? cw_kv_error(m->kv) : strerror(-rc));
	return rc;
}

static void on_written(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct meshapi *m = arg;
	struct kvop *op = &m->ops[m->next_op];

	(void)body;
	(void)len;
	if (rc) {
		pr_warn("mesh-apiserver: cannot %s %s: %s", op->val ? "write" : "withdraw", op->key,
			why);
		publish_failed(m);
		return;
	}
	if (op->canary) {
		pr_info("mesh-apiserver: wrote %s = %s", op->key, op->val);
		if (strcmp(op->canary, "services") == 0)
			m->services_synced = true;
		else if (strcmp(op->canary, "identities") == 0)
			m->mesh_synced = true; /* the last of nodes, ip, identities */
	} else {
		pr_debug("mesh-apiserver: %s %s", op->val ? "published" : "withdrew", op->key);
		if (op->val)
			m->n_put++;
		else
			m->n_del++;
		if (recs_apply(&m->published, op)) {
			publish_failed(m);
			return;
		}
	}
	m->next_op++;
	if (ops_next(m))
		publish_failed(m);
}

static bool k8s_synced(const struct meshapi *m)
{
	return cw_k8s_informer_synced(m->i_services) && cw_k8s_informer_synced(m->i_slices) &&
	       cw_k8s_informer_synced(m->i_namespaces);
}

static int collect_listing(const struct cw_kv_pair *kv, void *arg)
{
	return collect_published(kv, &((struct meshapi *)arg)->listing);
}

/* What etcd holds under our prefix (stale keys of an earlier run included), read once. */
static void on_listed(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct meshapi *m = arg;
	struct recs now = m->listing;

	(void)body;
	(void)len;
	m->listing = (struct recs){ 0 };
	if (rc) {
		pr_warn("mesh-apiserver: cannot list our services: %s", why);
		recs_clear(&now);
		publish_failed(m);
		return;
	}
	if (now.n)
		qsort(now.v, now.n, sizeof(*now.v), cmp_rec);
	recs_clear(&m->published);
	m->published = now;
	m->published_known = true;
	m->retrying = false;
	publish_soon(m);
}

/*
 * One publication pass, on the loop: the canaries due, then (once the
 * informers are synced, and our prefix has been read) the writes that make
 * etcd hold what the Services and EndpointSlices say, then the services
 * canary.  The first failed write ends the pass (etcd down: the rest would
 * fail the same way, each after a timeout); m->published keeps saying what
 * etcd holds, so the next pass resumes where this one stopped.
 */
static int publish(struct meshapi *m)
{
	static const char *const node_kinds[] = { "nodes", "ip", "identities" };
	struct desired d = { .m = m };
	char prefix[128];
	int rc = 0;

	if (!m->req_pub && cw_kv_req_new(m->loop, m->kv, &m->req_pub))
		return -ENOMEM;
	if (cw_kv_req_busy(m->req_pub)) {
		m->again = true; /* the pass out runs this one after it */
		return 0;
	}
	ops_clear(m);
	m->n_put = m->n_del = 0;
	if (k8s_synced(m) && !m->published_known) {
		services_prefix(m, prefix, sizeof(prefix));
		recs_clear(&m->listing);
		rc = cw_kv_req_list(m->req_pub, prefix, 1000, KV_REQ_TIMEOUT_MS, collect_listing,
				    on_listed, m);
		if (rc)
			pr_warn("mesh-apiserver: cannot list %s: %s", prefix, cw_kv_error(m->kv));
		return rc;
	}
	/* Nodes publish their own records: the cluster's word is its cluster-config. */
	for (size_t i = 0; !rc && m->config_written && !m->mesh_synced && i < 3; i++)
		rc = add_canary(m, node_kinds[i]);
	if (!rc && k8s_synced(m)) {
		rc = build_desired(m, &d);
		if (!rc)
			rc = add_diff(m, &d.want);
		/* once every stale key of an earlier run is gone and every wanted one written */
		if (!rc && !m->services_synced)
			rc = add_canary(m, "services");
	}
	cw_svc_bes_clear(&d.bes);
	cw_svc_bes_clear(&d.one);
	free(d.slices);
	recs_clear(&d.want);
	if (!rc)
		rc = ops_next(m);
	if (rc)
		ops_clear(m);
	return rc;
}

static void on_publish(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;

	(void)loop;
	m->retrying = false;
	if (publish(m))
		publish_failed(m);
}

/* Coalesces: many events in one loop turn make one pass; a pending retry is not hurried. */
static void publish_soon(struct meshapi *m)
{
	if (m->t_publish && !m->retrying)
		cw_timer_arm(m->t_publish, 0);
}

static void on_resync(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;

	(void)loop;
	m->published_known = false;
	publish_soon(m);
}

/* Checked here, once per change, so a broken object is logged once; the pass skips it. */
static void on_k8s(struct cw_k8s_informer *inf, enum cw_k8s_event_type type, const cJSON *obj,
		   const cJSON *old, void *arg)
{
	struct meshapi *m = arg;
	char err[256] = "", ns[CW_SVC_NAME_MAX + 1], name[CW_SVC_NAME_MAX + 1];
	int rc = 0;

	(void)old;
	if (type != CW_K8S_DELETED && inf == m->i_services) {
		struct cw_svc svc;

		rc = cw_svc_from_k8s(obj, &svc, err, sizeof(err));
	} else if (type != CW_K8S_DELETED && inf == m->i_slices) {
		struct cw_svc_bes bes = { 0 };

		rc = cw_epslice_parse(obj, ns, sizeof(ns), name, sizeof(name),
				      (uint16_t)m->o->cluster_id, &bes, err, sizeof(err));
		cw_svc_bes_clear(&bes);
	}
	if (rc) {
		char key[CW_K8S_KEY_MAX] = "?";

		cw_k8s_object_key(obj, key, sizeof(key), NULL, 0);
		pr_warn("kubernetes: ignoring %s %s: %s", cw_k8s_informer_path(inf), key, err);
	}
	publish_soon(m);
}

static void on_k8s_synced(struct cw_k8s_informer *inf, void *arg)
{
	(void)inf;
	publish_soon(arg);
}

/* A Namespace matters only while it is not being deleted. */
static const char *const ns_keep[] = { "metadata.deletionTimestamp", NULL };

static int k8s_start(struct meshapi *m)
{
	struct cw_k8s_config cfg = { .url = m->o->k8s_api, .token_file = m->o->k8s_token_file,
				     .ca_file = m->o->k8s_ca_file };
	struct cw_k8s_informer_opts io;
	char err[512];
	int rc;

	rc = cw_k8s_new(m->loop, &cfg, &m->k8s, err, sizeof(err));
	if (rc) {
		pr_err("mesh-apiserver: kubernetes: %s", err);
		return rc;
	}
	io = (struct cw_k8s_informer_opts){ "/api/v1/namespaces", NULL, NULL, on_k8s, on_k8s_synced, m,
					    ns_keep };
	rc = cw_k8s_informer_new(m->k8s, &io, &m->i_namespaces);
	if (rc)
		return rc;
	io = (struct cw_k8s_informer_opts){ "/api/v1/services", NULL, NULL, on_k8s, on_k8s_synced, m,
					    cw_svc_k8s_keep };
	rc = cw_k8s_informer_new(m->k8s, &io, &m->i_services);
	if (rc)
		return rc;
	io = (struct cw_k8s_informer_opts){ "/apis/discovery.k8s.io/v1/endpointslices", NULL, NULL,
					    on_k8s, on_k8s_synced, m, cw_epslice_k8s_keep };
	return cw_k8s_informer_new(m->k8s, &io, &m->i_slices);
}

static void on_signal(struct cw_loop *loop, int signo, void *arg)
{
	(void)signo;
	(void)arg;
	cw_loop_stop(loop);
}

int cw_meshapi_main(const struct cw_meshapi_opts *o)
{
	struct meshapi m = { .o = o };
	struct cw_etcd_conf conf = { 0 };
	struct cw_loop *loop = NULL;
	struct cw_kv_config kc;
	char err[512];
	int rc;

	rc = cw_etcd_conf_load(o->etcd_config, &conf, err, sizeof(err));
	if (rc) {
		pr_err("etcd config %s", err);
		return 1;
	}
	cw_etcd_conf_to_kv(&conf, &kc);
	kc.timeout_ms = 2000;
	rc = cw_kv_new(&kc, &m.kv);
	if (!rc)
		rc = cw_loop_new(&loop);
	m.loop = loop;
	if (!rc)
		rc = cw_timer_add(loop, 0, 10000, on_config, &m, &m.t_config);
	if (!rc)
		rc = cw_timer_add(loop, -1, 0, on_publish, &m, &m.t_publish);
	if (!rc)
		rc = cw_timer_add(loop, RESYNC_MS, RESYNC_MS, on_resync, &m, &m.t_resync);
	if (!rc)
		rc = k8s_start(&m);
	if (!rc)
		rc = cw_timer_add(loop, 0, (int64_t)o->heartbeat_s * 1000, on_heartbeat, &m,
				  &m.t_heartbeat);
	if (!rc)
		rc = cw_timer_add(loop, (int64_t)o->identity_gc_s * 1000,
				  (int64_t)o->identity_gc_s * 1000, on_gc, &m, &m.t_gc);
	if (!rc) {
		cw_loop_signal(loop, SIGTERM, on_signal, NULL);
		cw_loop_signal(loop, SIGINT, on_signal, NULL);
		pr_info("mesh-apiserver for cluster %s (id %u) running", o->cluster, o->cluster_id);
		rc = cw_loop_run(loop);
	}
	cw_timer_del(m.t_config);
	cw_timer_del(m.t_heartbeat);
	cw_timer_del(m.t_gc);
	cw_timer_del(m.t_publish);
	cw_timer_del(m.t_resync);
	cw_k8s_free(m.k8s);
	recs_clear(&m.published);
	ops_clear(&m);
	cw_kv_req_free(m.req_gc);
	gc_end(&m);
	recs_clear(&m.listing);
	free(m.suspects);
	cw_kv_req_free(m.req_pub);
	cw_kv_req_free(m.req_config);
	cw_kv_req_free(m.req_heartbeat);
	cw_loop_free(loop);
	cw_kv_free(m.kv);
	cw_etcd_conf_clear(&conf);
	return rc ? 1 : 0;
}
