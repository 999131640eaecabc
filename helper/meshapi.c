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
	/* identities seen unreferenced by the previous scan: removed if still so */
	uint32_t *suspects;
	size_t n_suspects;
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
	char *body;
	int rc;

	if (!*req && cw_kv_req_new(m->loop, m->kv, req))
		return -ENOMEM;
	body = cw_kvp_put_req(key, val, strlen(val), 0);
	rc = body ? cw_kv_req_start(*req, "/v3/kv/put", body, KV_REQ_TIMEOUT_MS, fn, m) : -ENOMEM;
	free(body);
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

static void on_heartbeat(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	char now[64];
	time_t t = time(NULL);
	struct tm tm;

	(void)loop;
	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
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

/*
 * An id/<n> key lives as long as some node references its labels.  One
 * unreferenced scan is not enough (a node may be between allocating the id
 * and writing its reference, or re-publishing after a lost lease): the id
 * goes only when two scans a period apart both found it unreferenced.
 */
static void on_gc(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	struct gc_scan s = { .m = m };
	uint32_t *next = NULL;
	size_t n_next = 0;
	int rc;

	(void)loop;
	rc = cw_kv_list(m->kv, CW_KEY_ID, 1000, collect_id, &s, NULL);
	if (!rc)
		rc = cw_kv_list(m->kv, CW_KEY_VALUE, 1000, collect_ref, &s, NULL);
	if (rc) {
		pr_warn("mesh-apiserver: identity gc: %s", cw_kv_error(m->kv));
		goto out;
	}
	next = calloc(s.n ? s.n : 1, sizeof(*next));
	if (!next)
		goto out;
	for (size_t i = 0; i < s.n; i++) {
		bool referenced = false, suspect = false;
		char key[64];

		for (size_t j = 0; j < s.n_refs && !referenced; j++)
			referenced = strcmp(s.refs[j], s.labels[i]) == 0;
		if (referenced)
			continue;
		for (size_t j = 0; j < m->n_suspects && !suspect; j++)
			suspect = m->suspects[j] == s.ids[i];
		if (!suspect) {
			next[n_next++] = s.ids[i];
			continue;
		}
		snprintf(key, sizeof(key), CW_KEY_ID "%" PRIu32, s.ids[i]);
		if (cw_kv_delete(m->kv, key, false) == 0)
			pr_info("mesh-apiserver: identity %" PRIu32 " (%s) unreferenced, removed",
				s.ids[i], s.labels[i]);
	}
	free(m->suspects);
	m->suspects = next;
	m->n_suspects = n_next;
	next = NULL;
out:
	free(next);
	for (size_t i = 0; i < s.n; i++)
		free(s.labels[i]);
	for (size_t i = 0; i < s.n_refs; i++)
		free(s.refs[i]);
	free(s.ids);
	free(s.labels);
	free(s.refs);
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
static int recs_add(struct recs *r, char *key, char *val)
{
	if (!key || !val)
		goto nomem;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct rec *v = realloc(r->v, cap * sizeof(*v));

		if (!v)
			goto nomem;
		r->v = v;
		r->cap = cap;
	}
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

/*
 * Makes etcd hold @want under our prefix: puts what is missing or differs,
 * deletes what is not wanted.  Stops at the first failed write (etcd down:
 * the rest would fail the same way, each after a timeout); m->published
 * keeps saying what etcd holds, so the next pass resumes where this one
 * stopped.
 */
static int apply(struct meshapi *m, struct recs *want, unsigned int *n_put, unsigned int *n_del)
{
	struct recs next = { 0 }, *pub = &m->published;
	size_t i = 0, j = 0;
	int rc = 0;

	next.cap = want->n + pub->n;
	next.v = calloc(next.cap ? next.cap : 1, sizeof(*next.v));
	if (!next.v)
		return -ENOMEM;
	while (i < want->n || j < pub->n) {
		struct rec *w = i < want->n ? &want->v[i] : NULL;
		struct rec *p = j < pub->n ? &pub->v[j] : NULL;
		int c = !w ? 1 : !p ? -1 : strcmp(w->key, p->key);
		struct rec *keep = p;   /* what etcd holds for this key after this step */

		if (c >= 0)
			j++;
		if (c <= 0)
			i++;
		if (rc) {
			/* an earlier write failed: only carry over what etcd holds */
			if (c < 0)
				keep = NULL;
		} else if (c > 0) {    /* in etcd, not wanted */
			rc = cw_kv_delete(m->kv, p->key, false);
			if (!rc) {
				pr_debug("mesh-apiserver: withdrew %s", p->key);
				(*n_del)++;
				keep = NULL;
			} else {
				pr_warn("mesh-apiserver: cannot withdraw %s: %s", p->key,
					cw_kv_error(m->kv));
			}
		} else if (c < 0 || strcmp(w->val, p->val) != 0) {  /* missing, or differs */
			rc = cw_kv_put(m->kv, w->key, w->val, strlen(w->val), 0);
			if (!rc) {
				pr_debug("mesh-apiserver: published %s = %s", w->key, w->val);
				(*n_put)++;
				keep = w;
			} else {
				pr_warn("mesh-apiserver: cannot publish %s: %s", w->key,
					cw_kv_error(m->kv));
				if (c < 0)
					keep = NULL;
			}
		}
		if (keep) {
			next.v[next.n++] = *keep;
			keep->key = keep->val = NULL;
		}
	}
	recs_clear(pub);
	*pub = next;
	return rc;
}

/*
 * cilium/synced/<cluster>/cilium/state/<kind>/v1: the initial publication of
 * that kind is complete.  Cilium's kvstore sync store writes the time, in
 * Go's time.RFC3339; readers only look at the key's presence.
 */
static int write_canary(struct meshapi *m, const char *kind)
{
	char key[192], now[64];
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(key, sizeof(key), CW_KEY_SYNCED "%s/cilium/state/%s/v1", m->o->cluster, kind);
	if (cw_kv_put(m->kv, key, now, strlen(now), 0)) {
		pr_warn("mesh-apiserver: cannot write %s: %s", key, cw_kv_error(m->kv));
		return -EIO;
	}
	pr_info("mesh-apiserver: wrote %s = %s", key, now);
	return 0;
}

static bool k8s_synced(const struct meshapi *m)
{
	return cw_k8s_informer_synced(m->i_services) && cw_k8s_informer_synced(m->i_slices) &&
	       cw_k8s_informer_synced(m->i_namespaces);
}

static int publish(struct meshapi *m)
{
	static const char *const node_kinds[] = { "nodes", "ip", "identities" };
	struct desired d = { .m = m };
	unsigned int n_put = 0, n_del = 0;
	char prefix[128];
	int rc = 0;

	/* Nodes publish their own records: the cluster's word is its cluster-config. */
	for (size_t i = 0; m->config_written && !m->mesh_synced && i < 3; i++)
		if (write_canary(m, node_kinds[i]))
			return -EIO;
	m->mesh_synced = m->config_written;

	if (!k8s_synced(m))
		return 0; /* the informers' synced callbacks call again */
	if (!m->published_known) {
		struct recs now = { 0 };

		services_prefix(m, prefix, sizeof(prefix));
		rc = cw_kv_list(m->kv, prefix, 1000, collect_published, &now, NULL);
		if (rc) {
			pr_warn("mesh-apiserver: cannot list %s: %s", prefix, cw_kv_error(m->kv));
			recs_clear(&now);
			return rc;
		}
		if (now.n)
			qsort(now.v, now.n, sizeof(*now.v), cmp_rec);
		recs_clear(&m->published);
		m->published = now;
		m->published_known = true;
	}
	rc = build_desired(m, &d);
	if (!rc)
		rc = apply(m, &d.want, &n_put, &n_del);
	if (n_put || n_del)
		pr_info("mesh-apiserver: services: %u published, %u withdrawn, %zu in etcd", n_put,
			n_del, m->published.n);
	if (!rc && !m->services_synced) {
		/* every stale key of an earlier run is gone and every wanted one written */
		rc = write_canary(m, "services");
		m->services_synced = rc == 0;
	}
	cw_svc_bes_clear(&d.bes);
	cw_svc_bes_clear(&d.one);
	free(d.slices);
	recs_clear(&d.want);
	return rc;
}

static void on_publish(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	int64_t delay;

	(void)loop;
	m->retrying = false;
	if (!publish(m)) {
		m->attempt = 0;
		return;
	}
	/* etcd down or refusing: everything is recomputed on the next pass, nothing is lost */
	delay = cw_backoff_ms(m->attempt++, RETRY_BASE_MS, RETRY_CAP_MS);
	pr_warn("mesh-apiserver: publishing failed, retrying in %" PRId64 " ms", delay);
	m->retrying = true;
	cw_timer_arm(m->t_publish, delay);
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
	free(m.suspects);
	cw_kv_req_free(m.req_config);
	cw_kv_req_free(m.req_heartbeat);
	cw_loop_free(loop);
	cw_kv_free(m.kv);
	cw_etcd_conf_clear(&conf);
	return rc ? 1 : 0;
}
