// SPDX-License-Identifier: Apache-2.0
/*
 * The service maps: every ClusterIP service of the local Kubernetes API,
 * load-balanced in BPF by from_container on this node.
 *
 * A reconcile computes every frontend (ClusterIP, port, protocol) and its
 * slots from the sources: the local EndpointSlices and, for a global
 * service, the record of the same namespace and name in every usable
 * remote cluster (services.h chooses per affinity).  It then compares
 * with what the maps hold (n->lb, read back from the maps once after a
 * start so a restarted helper adopts the frontends, their ids and slots)
 * and writes only the frontends that changed.
 *
 * What is not known yet is not withdrawn: nothing is written before the
 * Service and EndpointSlice informers have listed; the slots of a remote
 * cluster that is configured but not yet settled (listed, synced canary
 * seen) and not evicted are carried over from the maps as they are.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <causeway/log.h>
#include "node.h"
#include "services.h"

const char *cw_cluster_name_of(struct cw_node *n, unsigned int id)
{
	struct cw_remote *r;

	if (id == n->o.cluster_id)
		return n->o.cluster;
	r = cw_remote_by_id(n, id);
	return r ? r->name : "";
}

static void fe_clear(struct cw_lb_fe *f)
{
	free(f->slots);
	f->slots = NULL;
	f->n = 0;
}

void cw_lb_clear(struct cw_lb_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		fe_clear(&t->v[i]);
	free(t->v);
	*t = (struct cw_lb_table){ 0 };
}

static struct cw_lb_fe *table_add(struct cw_lb_table *t)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct cw_lb_fe *v = realloc(t->v, cap * sizeof(*v));

		if (!v)
			return NULL;
		t->v = v;
		t->cap = cap;
	}
	t->v[t->n] = (struct cw_lb_fe){ 0 };
	return &t->v[t->n++];
}

static int cmp_lbkey(const struct cw_lb4_key *a, const struct cw_lb4_key *b)
{
	if (a->address != b->address)
		return a->address < b->address ? -1 : 1;
	if (a->port != b->port)
		return a->port < b->port ? -1 : 1;
	return (a->proto > b->proto) - (a->proto < b->proto);
}

static int cmp_fe(const void *a, const void *b)
{
	return cmp_lbkey(&((const struct cw_lb_fe *)a)->key, &((const struct cw_lb_fe *)b)->key);
}

static struct cw_lb_fe *table_find(const struct cw_lb_table *t, const struct cw_lb4_key *k)
{
	struct cw_lb_fe probe = { .key = *k };

	return t->n ? bsearch(&probe, t->v, t->n, sizeof(*t->v), cmp_fe) : NULL;
}

/*
 * Read the maps back: every frontend with its id and slots.  Slots and
 * reverse NAT entries no frontend names (a writer that died half-way)
 * are deleted.
 */
static int lb_load(struct cw_node *n)
{
	struct cw_lb4_key *keys = NULL;
	struct cw_lb4_slot_key *slots = NULL;
	__u16 *ids = NULL;
	uint32_t *count = NULL;
	size_t nk = 0, ns = 0, ni = 0;
	int rc;

	cw_lb_clear(&n->lb);
	rc = cw_lb4_service_keys(n->dp, &keys, &nk);
	for (size_t i = 0; !rc && i < nk; i++) {
		struct cw_lb4_service svc;
		struct cw_lb_fe *f;

		if (cw_lb4_service_get(n->dp, &keys[i], &svc))
			continue; /* gone meanwhile */
		f = table_add(&n->lb);
		if (!f) {
			rc = -ENOMEM;
			break;
		}
		f->key = keys[i];
		f->id = svc.rev_nat_id;
		f->flags = svc.flags;
		f->shared = true;
		f->slots = calloc(svc.count ? svc.count : 1, sizeof(*f->slots));
		if (!f->slots) {
			rc = -ENOMEM;
			break;
		}
		for (__u16 s = 1; s <= svc.count; s++)
			if (cw_lb4_backend_get(n->dp, svc.rev_nat_id, s, &f->slots[f->n]) == 0)
				f->n++;
	}
	if (rc)
		goto out;
	if (n->lb.n)
		qsort(n->lb.v, n->lb.n, sizeof(*n->lb.v), cmp_fe);
	/* Slot count per id, so an orphan is found in one look, not a scan per key. */
	count = calloc(65536, sizeof(*count));
	if (!count) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t j = 0; j < n->lb.n; j++)
		count[n->lb.v[j].id] = (uint32_t)n->lb.v[j].n + 1; /* +1: the id is in use */
	if (cw_lb4_backend_keys(n->dp, &slots, &ns) == 0)
		for (size_t i = 0; i < ns; i++)
			if (slots[i].slot >= count[slots[i].rev_nat_id] &&
			    cw_lb4_backend_delete(n->dp, slots[i].rev_nat_id, slots[i].slot) == 0)
				n->c.lb_removes++;
	if (cw_lb4_revnat_keys(n->dp, &ids, &ni) == 0)
		for (size_t i = 0; i < ni; i++)
			if (!count[ids[i]] && cw_lb4_revnat_delete(n->dp, ids[i]) == 0)
				n->c.lb_removes++;
	n->lb_loaded = true;
	pr_info("services: adopted %zu frontends from the maps", n->lb.n);
out:
	free(keys);
	free(slots);
	free(ids);
	free(count);
	return rc;
}

/* --- desired state -------------------------------------------------------------- */

/* The ready tuples of every local EndpointSlice, grouped by their service. */
struct slice_ent {
	char key[2 * CW_SVC_NAME_MAX + 2];  /* "ns/name" */
	size_t start, n;
};

struct slices {
	struct cw_node *n;
	struct cw_svc_bes bes;
	struct slice_ent *v;
	size_t count, cap;
	int err;
};

static int collect_slice(const cJSON *obj, void *arg)
{
	struct slices *s = arg;
	char ns[CW_SVC_NAME_MAX + 1], svc[CW_SVC_NAME_MAX + 1], err[256];
	size_t before = s->bes.n;

	if (cw_epslice_parse(obj, ns, sizeof(ns), svc, sizeof(svc), (uint16_t)s->n->o.cluster_id,
			     &s->bes, err, sizeof(err)) || !svc[0])
		return 0; /* logged by the informer's handler */
	if (s->count == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct slice_ent *v = realloc(s->v, cap * sizeof(*v));

		if (!v) {
			s->err = -ENOMEM;
			return s->err;
		}
		s->v = v;
		s->cap = cap;
	}
	snprintf(s->v[s->count].key, sizeof(s->v[s->count].key), "%s/%s", ns, svc);
	s->v[s->count].start = before;
	s->v[s->count].n = s->bes.n - before;
	s->count++;
	return 0;
}

static int cmp_slice(const void *a, const void *b)
{
	return strcmp(((const struct slice_ent *)a)->key, ((const struct slice_ent *)b)->key);
}

struct desired {
	struct cw_node *n;
	struct slices *slices;
	struct cw_lb_table t;
	struct cw_svc_bes cands;
	int err;
};

static int add_local(struct desired *d, const struct cw_svc *svc)
{
	char key[sizeof(((struct slice_ent *)0)->key)];
	struct slice_ent probe, *e;
	struct slices *s = d->slices;

	if (!s->count)
		return 0;
	snprintf(key, sizeof(key), "%s/%s", svc->ns, svc->name);
	memcpy(probe.key, key, sizeof(key));
	e = bsearch(&probe, s->v, s->count, sizeof(*s->v), cmp_slice);
	if (!e)
		return 0;
	while (e > s->v && strcmp(e[-1].key, key) == 0)
		e--;
	for (; e < s->v + s->count && strcmp(e->key, key) == 0; e++)
		for (size_t i = 0; i < e->n; i++) {
			int rc = cw_svc_bes_add(&d->cands, &s->bes.v[e->start + i]);

			if (rc)
				return rc;
		}
	return 0;
}

static int add_remote(struct desired *d, const struct cw_svc *svc)
{
	for (struct cw_remote *r = d->n->remotes; r; r = r->next) {
		char key[256], err[256];
		const struct cw_kv_pair *kv;
		struct cw_svc_rec rec;
		int rc = 0;

		if (!cw_remote_usable(r) || !r->w_svcs)
			continue;
		snprintf(key, sizeof(key), CW_KEY_SERVICES "%s/%s/%s", r->name, svc->ns, svc->name);
		kv = cw_kv_watch_lookup(r->w_svcs, key);
		if (!kv || cw_svc_rec_parse(kv->key, kv->value, kv->value_len, r->name, r->id, &rec,
					    err, sizeof(err)))
			continue; /* absent, or logged and counted when it arrived */
		for (size_t i = 0; rec.shared && !rc && i < rec.backends.n; i++)
			rc = cw_svc_bes_add(&d->cands, &rec.backends.v[i]);
		cw_svc_rec_clear(&rec);
		if (rc)
			return rc;
	}
	return 0;
}

/*
 * A remote cluster configured but not settled yet keeps, in this
 * frontend, the slots the maps give it: a restarted helper does not drop
 * a cluster's backends before it has read them again.
 */
static int carry_over(struct desired *d, const struct cw_lb_fe *old, const struct cw_svc_port *p)
{
	for (size_t i = 0; old && i < old->n; i++) {
		const struct cw_lb4_backend *b = &old->slots[i];
		struct cw_svc_be be;

		if (!cw_cluster_pending(d->n, b->cluster_id, CW_KEY_SERVICES))
			continue;
		be = (struct cw_svc_be){ .ip.s_addr = b->address, .port = ntohs(b->port),
					 .proto = p->proto, .cluster_id = b->cluster_id };
		snprintf(be.port_name, sizeof(be.port_name), "%s", p->name);
		if (cw_svc_bes_add(&d->cands, &be))
			return -ENOMEM;
	}
	return 0;
}

static int want_service(const cJSON *obj, void *arg)
{
	struct desired *d = arg;
	struct cw_node *n = d->n;
	struct cw_svc svc;
	char err[256];
	int rc;

	if (cw_svc_from_k8s(obj, &svc, err, sizeof(err)) || !svc.cluster_ip.s_addr || !svc.n_ports)
		return 0; /* invalid ones were logged by the handler */
	d->cands.n = 0;
	rc = add_local(d, &svc);
	if (!rc && svc.global)
		rc = add_remote(d, &svc);
	for (size_t i = 0; !rc && i < svc.n_ports; i++) {
		const struct cw_svc_port *p = &svc.ports[i];
		struct cw_lb4_key key = { .address = svc.cluster_ip.s_addr, .port = htons(p->port),
					  .proto = p->proto };
		size_t base = d->cands.n;
		struct cw_lb_fe *f;

		if (svc.global)
			rc = carry_over(d, table_find(&n->lb, &key), p);
		f = rc ? NULL : table_add(&d->t);
		if (!f) {
			rc = rc ? rc : -ENOMEM;
			break;
		}
		f->key = key;
		f->flags = svc.global ? CW_LB_F_GLOBAL : 0;
		snprintf(f->ns, sizeof(f->ns), "%s", svc.ns);
		snprintf(f->name, sizeof(f->name), "%s", svc.name);
		snprintf(f->port_name, sizeof(f->port_name), "%s", p->name);
		f->affinity = (uint8_t)svc.affinity;
		f->shared = svc.shared;
		rc = cw_svc_select(p, svc.affinity, n->o.cluster_id, d->cands.v, d->cands.n, &f->slots,
				   &f->n);
		d->cands.n = base; /* carried-over slots belong to this port only */
	}
	if (rc)
		d->err = rc;
	return rc;
}

/* --- writing -------------------------------------------------------------------- */

static bool same_slots(const struct cw_lb_fe *a, const struct cw_lb_fe *b)
{
	return a->flags == b->flags && a->n == b->n &&
	       (!a->n || memcmp(a->slots, b->slots, a->n * sizeof(*a->slots)) == 0);
}

static uint16_t alloc_id(struct cw_node *n, const uint8_t *used)
{
	for (unsigned int i = 0; i < 65535; i++) {
		uint16_t id = (uint16_t)(n->lb_next_id + i);

		if (!id)
			continue;
		if (!(used[id / 8] & (1u << (id % 8)))) {
			/* Not reused at once: stale conntrack may still name a freed id. */
			n->lb_next_id = (uint16_t)(id + 1);
			return id;
		}
	}
	return 0;
}

int cw_lb_reconcile(struct cw_node *n)
{
	struct slices s = { .n = n };
	struct desired d = { .n = n, .slices = &s };
	uint8_t *used = NULL;
	unsigned int writes = 0, removes = 0;
	int rc = 0;

	if (!n->i_services || !n->i_slices || !cw_k8s_informer_synced(n->i_services) ||
	    !cw_k8s_informer_synced(n->i_slices))
		return 0; /* their synced callbacks ask again */
	if (!n->lb_loaded) {
		rc = lb_load(n);
		if (rc) {
			cw_node_error(n, "services: cannot read the service maps: %s", strerror(-rc));
			return rc;
		}
	}
	rc = cw_k8s_informer_foreach(n->i_slices, collect_slice, &s);
	if (!rc && s.err)
		rc = s.err;
	if (rc)
		goto out;
	if (s.count) /* qsort's and bsearch's arrays must not be NULL, even when empty */
		qsort(s.v, s.count, sizeof(*s.v), cmp_slice);
	rc = cw_k8s_informer_foreach(n->i_services, want_service, &d);
	if (!rc && d.err)
		rc = d.err;
	if (rc)
		goto out;
	if (d.t.n)
		qsort(d.t.v, d.t.n, sizeof(*d.t.v), cmp_fe);
	/* Two Services claiming one ClusterIP:port: the API forbids it; keep the first. */
	for (size_t i = 1; i < d.t.n; i++)
		if (cmp_lbkey(&d.t.v[i - 1].key, &d.t.v[i].key) == 0) {
			pr_warn("services: %s/%s and %s/%s share a frontend; using the first",
				d.t.v[i - 1].ns, d.t.v[i - 1].name, d.t.v[i].ns, d.t.v[i].name);
			fe_clear(&d.t.v[i]);
			memmove(&d.t.v[i], &d.t.v[i + 1], (d.t.n - i - 1) * sizeof(*d.t.v));
			d.t.n--;
			i--;
		}

	used = calloc(65536 / 8, 1);
	if (!used) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n->lb.n; i++)
		used[n->lb.v[i].id / 8] |= (uint8_t)(1u << (n->lb.v[i].id % 8));
	for (size_t i = 0; i < d.t.n; i++) {
		struct cw_lb_fe *f = &d.t.v[i], *old = table_find(&n->lb, &f->key);
		int wrc;

		if (old) {
			f->id = old->id;
			if (same_slots(f, old))
				continue;
		} else {
			f->id = alloc_id(n, used);
			if (!f->id) {
				cw_node_error(n, "services: no free reverse NAT id for %s/%s",
					      f->ns, f->name);
				continue;
			}
			used[f->id / 8] |= (uint8_t)(1u << (f->id % 8));
		}
		wrc = cw_lb4_service_set(n->dp, &f->key, f->id, f->flags, f->slots, f->n);
		if (wrc) {
			cw_node_error(n, "services: cannot write %s/%s: %s", f->ns, f->name,
				      strerror(-wrc));
			n->lb_loaded = false; /* read the maps again next time */
			rc = wrc;
			continue;
		}
		writes++;
	}
	for (size_t i = 0; i < n->lb.n; i++) {
		struct cw_lb_fe *old = &n->lb.v[i];
		int wrc;

		if (table_find(&d.t, &old->key))
			continue;
		wrc = cw_lb4_service_remove(n->dp, &old->key);
		if (wrc) {
			cw_node_error(n, "services: cannot remove a frontend of %s/%s: %s", old->ns,
				      old->name, strerror(-wrc));
			n->lb_loaded = false;
			rc = wrc;
			continue;
		}
		removes++;
	}
	cw_lb_clear(&n->lb);
	n->lb = d.t;
	d.t = (struct cw_lb_table){ 0 };
	n->c.lb_writes += writes;
	n->c.lb_removes += removes;
	if (writes || removes)
		pr_debug("services: %u frontends written, %u removed", writes, removes);
out:
	free(used);
	cw_lb_clear(&d.t);
	cw_svc_bes_clear(&d.cands);
	cw_svc_bes_clear(&s.bes);
	free(s.v);
	return rc;
}
