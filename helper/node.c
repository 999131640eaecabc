// SPDX-License-Identifier: Apache-2.0
/*
 * The node role's life cycle and its side of the mesh store.
 *
 * Start-up order matters for "a restart never interrupts traffic": the
 * pinned maps are adopted as they are, the watches list the store, and only
 * when every watch has delivered its first listing does datapath.c write
 * the difference and prune what is stale.  Until then the maps keep
 * forwarding with what the previous helper left.
 *
 * Publication: the node record, one ip/v1 record per local pod IP and one
 * identity reference per label set in use, all bound to one lease kept
 * alive at a third of its TTL, so a dead node's records expire by
 * themselves.  A lost lease (etcd down longer than the TTL) is granted
 * anew and everything is published again.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <causeway/log.h>
#include <causeway/netlink.h>
#include <causeway/util.h>
#include "node.h"
#include "services.h"

#define PUBLISH_BACKOFF_BASE_MS 200
/* One publication request's answer; past it the pass starts over after a backoff. */
#define PUBLISH_REQ_TIMEOUT_MS 5000
#define PUBLISH_BACKOFF_CAP_MS 10000
#define CW_CT_GC_PERIOD_MS 30000
/* A full reconcile now and then puts back what someone removed behind our back. */
#define CW_RESYNC_PERIOD_MS 60000

const char *cw_routing_name(enum cw_routing r)
{
	switch (r) {
	case CW_ROUTING_TUNNEL: return "tunnel";
	case CW_ROUTING_NATIVE: return "native";
	case CW_ROUTING_HYBRID: return "hybrid";
	}
	return "?";
}

bool cw_routing_parse(const char *s, enum cw_routing *out)
{
	if (strcmp(s, "tunnel") == 0)
		*out = CW_ROUTING_TUNNEL;
	else if (strcmp(s, "native") == 0)
		*out = CW_ROUTING_NATIVE;
	else if (strcmp(s, "hybrid") == 0)
		*out = CW_ROUTING_HYBRID;
	else
		return false;
	return true;
}

void cw_node_error(struct cw_node *n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(n->last_error, sizeof(n->last_error), fmt, ap);
	va_end(ap);
	pr_warn("%s", n->last_error);
}

void cw_node_reconcile_soon(struct cw_node *n)
{
	if (!cw_timer_armed(n->t_reconcile))
		cw_timer_arm(n->t_reconcile, 0);
}

void cw_node_services_soon(struct cw_node *n)
{
	if (!cw_timer_armed(n->t_lb))
		cw_timer_arm(n->t_lb, 0);
}

static void on_lb(struct cw_loop *loop, void *arg)
{
	struct cw_node *n = arg;

	(void)loop;
	if (!n->dp_synced)
		cw_node_reconcile_soon(n); /* the first full reconcile does the services too */
	else
		cw_lb_reconcile(n);
}

void cw_node_publish_soon(struct cw_node *n)
{
	n->publish_attempt = 0;
	cw_timer_arm(n->t_publish, 0);
}

static void publish_retry(struct cw_node *n)
{
	n->c.publish_errors++;
	cw_timer_arm(n->t_publish, cw_backoff_ms(n->publish_attempt++, PUBLISH_BACKOFF_BASE_MS,
						  PUBLISH_BACKOFF_CAP_MS));
}

/* --- identities ------------------------------------------------------------- */

/*
 * Labels that say nothing about security and change with every rollout;
 * Cilium leaves the same ones out of identities.
 */
static bool label_ignored(const char *key)
{
	return strcmp(key, "pod-template-hash") == 0 ||
	       strcmp(key, "controller-revision-hash") == 0 ||
	       strcmp(key, "pod-template-generation") == 0;
}

/*
 * The pod's security labels: its own labels, its namespace's labels, its
 * namespace and its cluster.  -EAGAIN while Kubernetes has not told us the
 * pod yet (the identity would otherwise flap from a partial set).
 */
static int ep_labels(struct cw_node *n, const struct cw_local_ep *ep, char *out, size_t len)
{
	const char *pairs[2 * 128];
	char keys[128][320];
	size_t np = 0, nk = 0;
	const cJSON *pod = NULL, *ns = NULL, *l;
	const char *nsname = ep->st.pod_namespace[0] ? ep->st.pod_namespace : "default";

	if (n->i_pods) {
		/* Both sets go into the identity: a partial one would flap it. */
		if (!cw_k8s_informer_synced(n->i_pods) ||
		    (n->i_namespaces && !cw_k8s_informer_synced(n->i_namespaces)))
			return -EAGAIN;
		pod = ep->st.pod_name[0] ? cw_k8s_informer_get(n->i_pods, nsname, ep->st.pod_name) : NULL;
		if (ep->st.pod_name[0] && !pod)
			return -EAGAIN;
		if (n->i_namespaces)
			ns = cw_k8s_informer_get(n->i_namespaces, NULL, nsname);
	}
	l = pod ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pod, "metadata"),
						   "labels") : NULL;
	cJSON_ArrayForEach(l, l) {
		if (np >= 120)
			break;
		if (!cJSON_IsString(l) || label_ignored(l->string))
			continue;
		pairs[2 * np] = l->string;
		pairs[2 * np + 1] = l->valuestring;
		np++;
	}
	l = ns ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ns, "metadata"),
						  "labels") : NULL;
	cJSON_ArrayForEach(l, l) {
		if (np >= 124 || nk >= 120)
			break;
		if (!cJSON_IsString(l))
			continue;
		snprintf(keys[nk], sizeof(keys[nk]), "io.cilium.k8s.namespace.labels.%s", l->string);
		pairs[2 * np] = keys[nk++];
		pairs[2 * np + 1] = l->valuestring;
		np++;
	}
	pairs[2 * np] = "io.kubernetes.pod.namespace";
	pairs[2 * np + 1] = nsname;
	np++;
	pairs[2 * np] = "io.cilium.k8s.policy.cluster";
	pairs[2 * np + 1] = n->o.cluster;
	np++;
	return cw_labels_format(pairs, np, out, len);
}

struct id_search {
	const char *labels;
	uint32_t found;
	uint8_t *used;         /* bitmap of local ids taken in our cluster */
	unsigned int cluster_id;
};

static void id_scan(const struct cw_kv_pair *kv, void *arg)
{
	struct id_search *s = arg;
	uint32_t id;

	if (cw_identity_key_parse(kv->key, &id))
		return;
	if (cw_identity_in_cluster(id, s->cluster_id))
		s->used[(id & 0xffff) / 8] |= (uint8_t)(1u << (id & 7));
	if (!s->found && strcmp(kv->value, s->labels) == 0 &&
	    cw_identity_in_cluster(id, s->cluster_id))
		s->found = id;
}

/* A value/<labels>/<node> reference's identity, 0 when it names none of ours. */
static uint32_t value_ref(const struct cw_kv_pair *kv, unsigned int cluster_id)
{
	char *end;
	unsigned long v = strtoul(kv->value, &end, 10);

	if (*end == '\0' && end != kv->value && v <= 0xffffff &&
	    cw_identity_in_cluster((uint32_t)v, cluster_id))
		return (uint32_t)v;
	return 0;
}

/*
 * The cluster-wide number for a label set, resolved on the loop, one
 * request at a time on the publication channel (n->pub_req), so an etcd
 * that stopped answering holds nothing up:
 *
 *   an id/<n> of the mirror already holds these labels  -> REF
 *   else TXN: claim the lowest free local id, putting id/<n> and our
 *        value/<labels>/<node> reference (under the lease) only if
 *        neither id/<n> nor any value/<labels>/ reference exists, so two
 *        nodes racing for one label set cannot both create one -> done
 *   lost: GET id/<n>: ours after all (these labels)      -> REF
 *         LIST value/<labels>/: another node's number    -> REF
 *         neither: the id is someone else's; next free one -> TXN
 *   REF: put our value/<labels>/<node> reference         -> done
 *
 * Done, the endpoint that asked (found again by container and interface)
 * takes the identity if its labels are still these, and its record is
 * published next.  Any failure, or a lease replaced meanwhile, starts over
 * at the next publication pass.
 */
static void id_reset(struct cw_node *n)
{
	free(n->id_op.used);
	memset(&n->id_op, 0, sizeof(n->id_op));
}

static void value_key(struct cw_node *n, const char *labels, char *buf, size_t len)
{
	snprintf(buf, len, CW_KEY_VALUE "%s/%s", labels, n->o.node_name);
}

static void pub_done(int rc, const char *body, size_t len, const char *why, void *arg);

/* @body (taken; NULL: out of memory) to @path on the publication channel; pub_done answers. */
static int pub_start(struct cw_node *n, const char *path, char *body)
{
	return cw_kv_req_send(n->pub_req, path, body, PUBLISH_REQ_TIMEOUT_MS, pub_done, n);
}

static int id_send(struct cw_node *n, enum cw_id_stage stage, const char *path, char *body)
{
	n->id_op.stage = stage;
	n->pub_op.kind = CW_PUB_IDENTITY;
	return pub_start(n, path, body);
}

static int id_ref(struct cw_node *n)
{
	char vkey[CW_LABELS_MAX + 320], idstr[16];

	value_key(n, n->id_op.labels, vkey, sizeof(vkey));
	snprintf(idstr, sizeof(idstr), "%" PRIu32, n->id_op.found);
	return id_send(n, CW_ID_REF, "/v3/kv/put",
		       cw_kvp_put_req(vkey, idstr, strlen(idstr), n->id_op.lease));
}

/* The value/<labels>/ prefix and its range end. */
static int value_prefix(const char *labels, char *prefix, size_t plen, char *end, size_t elen)
{
	snprintf(prefix, plen, CW_KEY_VALUE "%s/", labels);
	return cw_kvp_prefix_end(prefix, end, elen);
}

/* The transaction for the next local id not known to be taken; -ENOSPC (said) when none is left. */
static int id_claim_next(struct cw_node *n)
{
	struct cw_id_op *op = &n->id_op;
	char vprefix[CW_LABELS_MAX + 64], vend[CW_LABELS_MAX + 64], vkey[CW_LABELS_MAX + 320];
	char idkey[64], idstr[16];
	uint32_t local = op->candidate ? (op->candidate & 0xffff) + 1 : CW_IDENTITY_LOCAL_MIN;
	struct cw_kvp_absent absent[2] = { { idkey, NULL }, { vprefix, vend } };
	struct cw_kvp_put puts[2];
	int rc;

	while (local <= CW_IDENTITY_LOCAL_MAX && (op->used[local / 8] & (1u << (local & 7))))
		local++;
	if (local > CW_IDENTITY_LOCAL_MAX) {
		cw_node_error(n, "identity: cluster %u has no free identity left for %s",
			      n->o.cluster_id, op->labels);
		return -ENOSPC;
	}
	op->candidate = (uint32_t)n->o.cluster_id << 16 | local;
	rc = value_prefix(op->labels, vprefix, sizeof(vprefix), vend, sizeof(vend));
	if (rc)
		return rc;
	value_key(n, op->labels, vkey, sizeof(vkey));
	snprintf(idkey, sizeof(idkey), CW_KEY_ID "%" PRIu32, op->candidate);
	snprintf(idstr, sizeof(idstr), "%" PRIu32, op->candidate);
	puts[0] = (struct cw_kvp_put){ idkey, op->labels, strlen(op->labels), 0 };
	puts[1] = (struct cw_kvp_put){ vkey, idstr, strlen(idstr), op->lease };
	return id_send(n, CW_ID_TXN, "/v3/kv/txn", cw_kvp_txn_req(absent, 2, puts, 2));
}

/* Starts resolving @labels for @ep: the first request goes out, or the mirror already says. */
static int id_start(struct cw_node *n, const struct cw_local_ep *ep, const char *labels)
{
	struct cw_id_op *op = &n->id_op;
	struct id_search s = { .labels = labels, .cluster_id = n->o.cluster_id };
	int rc;

	id_reset(n);
	op->used = calloc(1, 65536 / 8);
	if (!op->used)
		return -ENOMEM;
	snprintf(op->labels, sizeof(op->labels), "%s", labels);
	snprintf(op->cid, sizeof(op->cid), "%s", ep->st.container_id);
	snprintf(op->ifname, sizeof(op->ifname), "%s", ep->st.ifname);
	op->lease = n->lease;
	s.used = op->used;
	cw_kv_watch_foreach(n->w_ids, id_scan, &s);
	op->found = s.found;
	rc = op->found ? id_ref(n) : id_claim_next(n);
	if (rc)
		id_reset(n);
	return rc;
}

static struct cw_local_ep *ep_find(struct cw_node *n, const char *cid, const char *ifname);
static void release_labels(struct cw_node *n, const char *labels);
static void unqueue_withdraw(struct cw_node *n, const char *key);

/* The identity is ours (the reference is in): the endpoint takes it. */
static void id_done(struct cw_node *n)
{
	struct cw_id_op *op = &n->id_op;
	struct cw_local_ep *ep = ep_find(n, op->cid, op->ifname);
	char labels[CW_LABELS_MAX], old[CW_LABELS_MAX], vkey[CW_LABELS_MAX + 320];

	/* a release of this very reference queued while it was being put would undo it */
	value_key(n, op->labels, vkey, sizeof(vkey));
	unqueue_withdraw(n, vkey);
	if (ep && ep_labels(n, ep, labels, sizeof(labels)) == 0 && strcmp(labels, op->labels) == 0) {
		snprintf(old, sizeof(old), "%s", ep->labels);
		snprintf(ep->labels, sizeof(ep->labels), "%s", op->labels);
		ep->identity = op->found;
		cw_datapath_update_endpoint(n, ep);
		id_reset(n);
		/* Relabelled: the old set may have lost its last local user. */
		if (old[0] && strcmp(old, ep->labels) != 0)
			release_labels(n, old);
		return;
	}
	/* The pod went or was relabelled meanwhile: the reference may be nobody's. */
	snprintf(labels, sizeof(labels), "%s", op->labels);
	id_reset(n);
	release_labels(n, labels);
}

/* An answer to one of the identity requests: the next step, or done. */
static int id_answer(struct cw_node *n, const char *body, size_t len)
{
	struct cw_id_op *op = &n->id_op;
	struct cw_kv_range_resp r = { 0 };
	char err[256], idkey[64], vprefix[CW_LABELS_MAX + 64], vend[CW_LABELS_MAX + 64];
	bool won = false;
	int64_t rev = 0;
	int rc = 0;

	switch (op->stage) {
	case CW_ID_TXN:
		if (cw_kvp_parse_txn(body, len, &won, &rev, err, sizeof(err)))
			break;
		if (won) {
			op->found = op->candidate;
			n->c.identities_allocated++;
			pr_info("identity: allocated %" PRIu32 " for %s", op->found, op->labels);
			id_done(n);
			return 0;
		}
		/* Lost: id/<n> is someone else's, or another node numbered these labels. */
		snprintf(idkey, sizeof(idkey), CW_KEY_ID "%" PRIu32, op->candidate);
		return id_send(n, CW_ID_GET, "/v3/kv/range",
			       cw_kvp_range_req(idkey, NULL, 0, 0, false));
	case CW_ID_GET:
		if (cw_kvp_parse_range(body, len, &r, err, sizeof(err)))
			break;
		if (r.n && strcmp(r.kvs[0].value, op->labels) == 0)
			op->found = op->candidate;
		cw_kvp_range_clear(&r);
		if (op->found)
			return id_ref(n);
		rc = value_prefix(op->labels, vprefix, sizeof(vprefix), vend, sizeof(vend));
		if (rc)
			return rc;
		return id_send(n, CW_ID_LIST, "/v3/kv/range",
			       cw_kvp_range_req(vprefix, vend, 1, 0, false));
	case CW_ID_LIST:
		if (cw_kvp_parse_range(body, len, &r, err, sizeof(err)))
			break;
		op->found = r.n ? value_ref(&r.kvs[0], n->o.cluster_id) : 0;
		cw_kvp_range_clear(&r);
		if (op->found)
			return id_ref(n);
		op->used[(op->candidate & 0xffff) / 8] |= (uint8_t)(1u << (op->candidate & 7));
		return id_claim_next(n);
	case CW_ID_REF:
		id_done(n);
		return 0;
	case CW_ID_IDLE:
		return 0;
	}
	cw_node_error(n, "etcd: identity for %s: malformed answer: %s", op->labels, err);
	return -EPROTO;
}

/* --- publication ------------------------------------------------------------ */

static void ip_key(struct in_addr ip, char *buf, size_t len)
{
	char a[16];

	cw_addr4_str(ip, a);
	snprintf(buf, len, CW_KEY_IPS "%s", a);
}

/*
 * Publication runs one etcd request at a time on the loop (n->pub_req):
 * each answer records what it achieved and asks for the next step.  What
 * an answer refers to is kept by value in n->pub_op, never as a pointer:
 * meanwhile the pod may have gone, its IP been taken by another pod, or
 * the lease been replaced.  Identity resolution takes the same channel.
 */
static int pub_put(struct cw_node *n, const char *key, const char *val)
{
	snprintf(n->pub_op.key, sizeof(n->pub_op.key), "%s", key);
	n->pub_op.lease = n->lease;
	n->pub_op.gen = n->pub_gen;
	return pub_start(n, "/v3/kv/put", cw_kvp_put_req(key, val, strlen(val), n->lease));
}

static int publish_node(struct cw_node *n)
{
	struct cw_node_rec r = { .cluster_id = n->o.cluster_id, .internal_ip = n->node_ip,
				 .pod_cidr = n->pod_cidr };
	char key[512], *val;
	int rc;

	snprintf(r.name, sizeof(r.name), "%s", n->o.node_name);
	snprintf(r.cluster, sizeof(r.cluster), "%s", n->o.cluster);
	snprintf(r.boot_id, sizeof(r.boot_id), "%s", n->boot_id);
	val = cw_node_rec_format(&r);
	if (!val)
		return -ENOMEM;
	snprintf(key, sizeof(key), CW_KEY_NODES "%s/%s", n->o.cluster, n->o.node_name);
	n->pub_op.kind = CW_PUB_NODE;
	rc = pub_put(n, key, val);
	free(val);
	return rc;
}

static void queue_withdraw_key(struct cw_node *n, const char *key);

/*
 * A label set no local endpoint uses any more: our reference to it goes
 * (on the publication channel, after anything already queued).  Not while
 * an identity for the same set is being resolved: its reference put would
 * race the delete, and its end releases the set itself if nobody took it.
 */
static void release_labels(struct cw_node *n, const char *labels)
{
	char vkey[CW_LABELS_MAX + 320];

	if (!labels[0])
		return;
	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		if (strcmp(e->labels, labels) == 0)
			return;
	if (n->id_op.stage != CW_ID_IDLE && strcmp(n->id_op.labels, labels) == 0)
		return;
	value_key(n, labels, vkey, sizeof(vkey));
	queue_withdraw_key(n, vkey);
}

static int publish_ep(struct cw_node *n, struct cw_local_ep *ep)
{
	struct cw_ip_rec r = { .ip = ep->st.ip, .host_ip = n->node_ip };
	char key[96], *val, labels[CW_LABELS_MAX];
	int rc;

	rc = ep_labels(n, ep, labels, sizeof(labels));
	if (rc)
		return rc;
	/* a new label set: its identity first (its answer asks for the record) */
	if (strcmp(labels, ep->labels) != 0 || !ep->identity)
		return id_start(n, ep, labels);
	r.identity = ep->identity;
	snprintf(r.k8s_namespace, sizeof(r.k8s_namespace), "%s", ep->st.pod_namespace);
	snprintf(r.k8s_pod_name, sizeof(r.k8s_pod_name), "%s", ep->st.pod_name);
	val = cw_ip_rec_format(&r);
	if (!val)
		return -ENOMEM;
	ip_key(ep->st.ip, key, sizeof(key));
	n->pub_op.kind = CW_PUB_EP;
	n->pub_op.ip = ep->st.ip;
	n->pub_op.identity = ep->identity;
	snprintf(n->pub_op.cid, sizeof(n->pub_op.cid), "%s", ep->st.container_id);
	snprintf(n->pub_op.ifname, sizeof(n->pub_op.ifname), "%s", ep->st.ifname);
	rc = pub_put(n, key, val);
	free(val);
	return rc;
}

static bool ip_in_use(struct cw_node *n, struct in_addr ip)
{
	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		if (e->st.ip.s_addr == ip.s_addr)
			return true;
	return false;
}

static void queue_withdraw(struct cw_node *n, struct in_addr ip);

static void pub_done(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct cw_node *n = arg;
	struct cw_pub_op *op = &n->pub_op;
	struct cw_local_ep *ep;
	char a[16];

	if (op->kind == CW_PUB_IDENTITY) {
		if (!rc && n->id_op.lease != n->lease) {
			id_reset(n); /* the reference would die with the old lease */
		} else {
			if (!rc)
				rc = id_answer(n, body, len);
			else
				cw_node_error(n, "etcd: identity for %s: %s", n->id_op.labels, why);
			if (rc) {
				id_reset(n);
				publish_retry(n);
				return;
			}
			if (n->id_op.stage != CW_ID_IDLE)
				return; /* the next step is out */
		}
		cw_timer_arm(n->t_publish, 0);
		return;
	}
	if (rc) {
		switch (op->kind) {
		case CW_PUB_WITHDRAW:
			cw_node_error(n, "etcd: cannot withdraw %s: %s", op->key, why);
			break;
		case CW_PUB_NODE:
			cw_node_error(n, "etcd: cannot publish node: %s", why);
			break;
		case CW_PUB_EP:
			cw_addr4_str(op->ip, a);
			cw_node_error(n, "etcd: cannot publish endpoint %s: %s", a, why);
			break;
		case CW_PUB_IDENTITY:
			break;
		}
		publish_retry(n);
		return;
	}
	switch (op->kind) {
	case CW_PUB_WITHDRAW:
		/* new withdrawals go to the head: this one is wherever it is now */
		unqueue_withdraw(n, op->key);
		break;
	case CW_PUB_NODE:
		/*
		 * Bound to a lease since replaced (republish_all asked again), or
		 * the record changed while this one was out (a PodCIDR learnt):
		 * what landed is not what is wanted, and the next pass puts it.
		 */
		if (op->lease == n->lease && op->gen == n->pub_gen) {
			n->node_published = true;
			pr_info("published node %s (%s)", op->key,
				n->pod_cidr.len ? "with PodCIDR" : "no PodCIDR");
		}
		break;
	case CW_PUB_EP:
		ep = ep_find(n, op->cid, op->ifname);
		if (ep && ep->st.ip.s_addr == op->ip.s_addr) {
			/* a relabel or a new lease meanwhile publishes again */
			if (op->lease == n->lease && op->gen == n->pub_gen &&
			    ep->identity == op->identity)
				ep->published = true;
		} else if (!ip_in_use(n, op->ip)) {
			/* the pod went while its record was on its way: take it back */
			queue_withdraw(n, op->ip);
		}
		break;
	case CW_PUB_IDENTITY:
		break;
	}
	cw_timer_arm(n->t_publish, 0);
}

static void on_publish(struct cw_loop *loop, void *arg)
{
	struct cw_node *n = arg;
	bool waiting = false;
	int rc;

	(void)loop;
	if (!n->lease || !n->node_ip.s_addr)
		return; /* the lease timer or the Node informer calls again */
	if (!n->pub_req && cw_kv_req_new(n->loop, n->kv, &n->pub_req))
		return;
	if (cw_kv_req_busy(n->pub_req))
		return; /* its answer asks for the next step */
	if (n->withdraw) {
		n->pub_op.kind = CW_PUB_WITHDRAW;
		snprintf(n->pub_op.key, sizeof(n->pub_op.key), "%s", n->withdraw->key);
		rc = pub_start(n, "/v3/kv/deleterange", cw_kvp_delete_req(n->withdraw->key, NULL));
		if (rc) {
			cw_node_error(n, "etcd: cannot withdraw %s: %s", n->withdraw->key,
				      cw_kv_error(n->kv));
			publish_retry(n);
		}
		return;
	}
	if (!n->node_published) {
		rc = publish_node(n);
		if (rc) {
			cw_node_error(n, "etcd: cannot publish node: %s", cw_kv_error(n->kv));
			publish_retry(n);
		}
		return;
	}
	for (struct cw_local_ep *ep = n->eps; ep; ep = ep->next) {
		if (ep->published)
			continue;
		rc = publish_ep(n, ep);
		if (rc == -EAGAIN) {
			waiting = true; /* the pod informer will call again */
			continue;
		}
		if (rc) {
			char a[16];

			cw_addr4_str(ep->st.ip, a);
			if (rc != -ENOSPC) /* id_start said which cluster ran out */
				cw_node_error(n, "etcd: cannot publish endpoint %s (%s/%s): %s", a,
					      ep->st.pod_namespace, ep->st.pod_name,
					      cw_kv_error(n->kv)[0] ? cw_kv_error(n->kv) :
					      strerror(-rc));
			publish_retry(n);
		}
		return; /* one request at a time: its answer asks for the next */
	}
	n->publish_attempt = 0;
	n->last_publish_ms = cw_loop_now_ms();
	if (!waiting)
		n->last_error[0] = '\0';
}

static void republish_all(struct cw_node *n)
{
	n->node_published = false;
	n->pub_gen++; /* an answer in flight no longer says all */
	for (struct cw_local_ep *ep = n->eps; ep; ep = ep->next) {
		ep->published = false;
		ep->identity = 0; /* the value/ reference died with the lease */
	}
	cw_node_publish_soon(n);
}

/* --- the lease -------------------------------------------------------------- */

/*
 * Keepalives and grants go out on the loop (cw_kv_req), so an etcd that
 * stopped answering costs the loop nothing; the lease timer fires every
 * third of the TTL and skips a turn while the last request is still out.
 */
static void lease_grant(struct cw_node *n);

/* Answered before the next keepalive is due, and never later than 5 s. */
static long lease_req_timeout(const struct cw_node *n)
{
	long third = (long)n->o.lease_ttl * 1000 / 3;

	return third < 5000 ? third : 5000;
}

/* A lease answer's id and TTL; a malformed one turns into -EPROTO with *@why in @err. */
static int lease_answer(int rc, const char *body, size_t len, const char **why, int64_t *id,
			int64_t *ttl, char *err, size_t errlen)
{
	if (!rc && cw_kvp_parse_lease(body, len, id, ttl, err, errlen)) {
		rc = -EPROTO;
		*why = err;
	}
	return rc;
}

static void on_granted(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct cw_node *n = arg;
	int64_t id = 0, ttl = 0;
	char err[256];

	rc = lease_answer(rc, body, len, &why, &id, &ttl, err, sizeof(err));
	if (!rc && id <= 0) {
		rc = -EPROTO;
		why = "lease grant answered without an id";
	}
	if (rc) {
		cw_node_error(n, "etcd: lease grant: %s", why);
		return;
	}
	n->lease = id;
	pr_info("etcd: lease %" PRId64 " granted (TTL %d s)", n->lease, n->o.lease_ttl);
	republish_all(n);
}

static void on_kept_alive(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct cw_node *n = arg;
	int64_t id = 0, ttl = 0;
	char err[256];

	rc = lease_answer(rc, body, len, &why, &id, &ttl, err, sizeof(err));
	if (rc) {
		cw_node_error(n, "etcd: lease keepalive: %s", why);
		return;
	}
	if (ttl > 0) {
		/* etcd answers again: an error about reaching it is history. */
		if (strncmp(n->last_error, "etcd: lease", 11) == 0)
			n->last_error[0] = '\0';
		return;
	}
	pr_warn("etcd: lease %" PRId64 " expired; granting a new one and republishing", n->lease);
	n->lease = 0;
	lease_grant(n);
}

static void lease_grant(struct cw_node *n)
{
	int rc = cw_kv_req_send(n->lease_req, "/v3/lease/grant",
				cw_kvp_lease_grant_req(n->o.lease_ttl), lease_req_timeout(n),
				on_granted, n);

	if (rc && rc != -EBUSY)
		cw_node_error(n, "etcd: lease grant: %s", cw_kv_error(n->kv)[0] ?
			      cw_kv_error(n->kv) : strerror(-rc));
}

static void on_lease(struct cw_loop *loop, void *arg)
{
	struct cw_node *n = arg;
	int rc;

	(void)loop;
	if (!n->lease_req && cw_kv_req_new(n->loop, n->kv, &n->lease_req))
		return;
	if (cw_kv_req_busy(n->lease_req))
		return; /* the last one has not been answered yet */
	if (!n->lease) {
		lease_grant(n);
		return;
	}
	rc = cw_kv_req_send(n->lease_req, "/v3/lease/keepalive", cw_kvp_lease_id_req(n->lease),
			    lease_req_timeout(n), on_kept_alive, n);
	if (rc)
		cw_node_error(n, "etcd: lease keepalive: %s", cw_kv_error(n->kv)[0] ?
			      cw_kv_error(n->kv) : strerror(-rc));
}

/* --- endpoints (the plugin's state files) ------------------------------------ */

static struct cw_local_ep *ep_find(struct cw_node *n, const char *cid, const char *ifname)
{
	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		if (strcmp(e->st.container_id, cid) == 0 && strcmp(e->st.ifname, ifname) == 0)
			return e;
	return NULL;
}

/*
 * An ADD that opened the pins before the helper replaced them attaches the
 * programs it opened, after the helper's sweep (cw_datapath_setup): its
 * state file, written after the attachment, brings it here.
 */
static void ep_refresh(struct cw_node *n, const struct cw_endpoint_state *st)
{
	int rc;

	if (!n->dp)
		return; /* the sweep, when the datapath opens, sees to it */
	rc = cw_dp_refresh_link(n->o.bpf_root, st->host_ifindex, st->host_ifname);
	if (rc < 0 && rc != -ENODEV)
		cw_node_error(n, "datapath: cannot move %s to the pinned programs: %s",
			      st->host_ifname, strerror(-rc));
}

static int scan_one(const struct cw_endpoint_state *st, void *arg)
{
	struct cw_node *n = arg;
	struct cw_local_ep *e = ep_find(n, st->container_id, st->ifname);

	if (e) {
		e->seen = true;
		if (e->st.ip.s_addr != st->ip.s_addr || e->st.host_ifindex != st->host_ifindex) {
			e->st = *st;
			e->published = false;
			n->pub_gen++;
			ep_refresh(n, st);
		}
		return 0;
	}
	ep_refresh(n, st);
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->st = *st;
	e->seen = true;
	e->next = n->eps;
	n->eps = e;
	pr_info("endpoint %s/%s (%s) appeared", st->pod_namespace, st->pod_name, st->host_ifname);
	return 0;
}

static void queue_withdraw_key(struct cw_node *n, const char *key)
{
	struct cw_withdraw *w;

	for (w = n->withdraw; w; w = w->next)
		if (strcmp(w->key, key) == 0)
			return; /* already on its way */
	w = calloc(1, sizeof(*w));
	if (!w) {
		cw_node_error(n, "out of memory queueing a withdrawal");
		return;
	}
	snprintf(w->key, sizeof(w->key), "%s", key);
	w->next = n->withdraw;
	n->withdraw = w;
	cw_node_publish_soon(n);
}

static void queue_withdraw(struct cw_node *n, struct in_addr ip)
{
	char key[96];

	ip_key(ip, key, sizeof(key));
	queue_withdraw_key(n, key);
}

/* A queued withdrawal of @key no longer wanted (the key was put again). */
static void unqueue_withdraw(struct cw_node *n, const char *key)
{
	for (struct cw_withdraw **p = &n->withdraw; *p; p = &(*p)->next)
		if (strcmp((*p)->key, key) == 0) {
			struct cw_withdraw *w = *p;

			*p = w->next;
			free(w);
			return;
		}
}

static void endpoints_rescan(struct cw_node *n)
{
	struct cw_local_ep **p;

	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		e->seen = false;
	cw_endpoint_foreach(n->o.state_dir, scan_one, n);
	for (p = &n->eps; *p;) {
		struct cw_local_ep *e = *p;

		if (e->seen) {
			p = &e->next;
			continue;
		}
		*p = e->next;
		pr_info("endpoint %s/%s (%s) went away", e->st.pod_namespace, e->st.pod_name,
			e->st.host_ifname);
		/* A new pod may already own the IP: withdraw only what we published. */
		if (e->published)
			queue_withdraw(n, e->st.ip);
		release_labels(n, e->labels);
		free(e);
	}
	cw_node_publish_soon(n);
	cw_node_reconcile_soon(n);
}

static void on_inotify(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));

	(void)loop;
	(void)events;
	/* Drain, then rescan once: a burst of ADDs costs one directory read. */
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	endpoints_rescan(arg);
}

static int endpoints_watch(struct cw_node *n)
{
	char dir[PATH_MAX];
	int rc;

	snprintf(dir, sizeof(dir), "%s/%s", n->o.state_dir, CW_ENDPOINT_DIR);
	rc = cw_mkdir_p(dir, 0700);
	if (rc)
		return rc;
	n->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (n->inotify_fd < 0)
		return -errno;
	/* The plugin writes by rename, removes by unlink. */
	if (inotify_add_watch(n->inotify_fd, dir,
			      IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE) < 0)
		return -errno;
	return cw_io_add(n->loop, n->inotify_fd, EPOLLIN, on_inotify, n, &n->inotify_io);
}

/* --- Kubernetes --------------------------------------------------------------- */

static int write_podcidr(struct cw_node *n)
{
	char path[PATH_MAX], buf[32], a[16];

	cw_addr4_str(n->pod_cidr.addr, a);
	snprintf(buf, sizeof(buf), "%s/%u\n", a, n->pod_cidr.len);
	snprintf(path, sizeof(path), "%s/podcidr", n->o.state_dir);
	return cw_write_file_atomic(path, buf, strlen(buf), true);
}

/* The node's address and PodCIDR are known: the datapath and records can follow. */
static void node_identity_known(struct cw_node *n)
{
	int rc;

	if (!n->node_ip.s_addr)
		return;
	if (!n->dp_ready) {
		rc = cw_datapath_setup(n);
		if (rc)
			cw_node_error(n, "datapath setup failed: %s", strerror(-rc));
	}
	if (n->pod_cidr.len) {
		rc = write_podcidr(n);
		if (rc)
			cw_node_error(n, "cannot write %s/podcidr: %s", n->o.state_dir, strerror(-rc));
	}
	n->node_published = false;
	n->pub_gen++; /* an answer in flight no longer says all */
	cw_node_publish_soon(n);
	cw_node_reconcile_soon(n);
}

static void on_node_obj(struct cw_k8s_informer *inf, enum cw_k8s_event_type type,
			const cJSON *obj, const cJSON *old, void *arg)
{
	struct cw_node *n = arg;
	const cJSON *spec, *status, *addrs, *a, *cidr;
	struct in_addr ip = n->o.node_ip;
	struct cw_prefix4 p = n->o.pod_cidr;

	(void)inf;
	(void)old;
	if (type == CW_K8S_DELETED)
		return; /* keep what we had: a deleted Node is drained by its owner */
	spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
	status = cJSON_GetObjectItemCaseSensitive(obj, "status");
	if (!p.len) {
		cidr = cJSON_GetObjectItemCaseSensitive(spec, "podCIDR");
		if (cJSON_IsString(cidr) && !cw_prefix4_parse(cidr->valuestring, &p))
			cw_node_error(n, "Node %s: spec.podCIDR \"%s\" is not an IPv4 prefix",
				      n->o.node_name, cidr->valuestring);
	}
	if (!ip.s_addr) {
		addrs = cJSON_GetObjectItemCaseSensitive(status, "addresses");
		cJSON_ArrayForEach(a, addrs) {
			const cJSON *t = cJSON_GetObjectItemCaseSensitive(a, "type");
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, "address");

			if (cJSON_IsString(t) && cJSON_IsString(v) &&
			    strcmp(t->valuestring, "InternalIP") == 0 &&
			    cw_addr4_parse(v->valuestring, &ip))
				break;
		}
	}
	if (ip.s_addr == n->node_ip.s_addr && p.len == n->pod_cidr.len &&
	    p.addr.s_addr == n->pod_cidr.addr.s_addr)
		return;
	n->node_ip = ip;
	n->pod_cidr = p;
	node_identity_known(n);
}

/*
 * Whether @e must be published again: never published yet, or its label
 * set (pod and namespace labels) no longer the one its identity is for.
 * Marks it unpublished when so.
 */
static bool ep_needs_publish(struct cw_node *n, struct cw_local_ep *e)
{
	char labels[CW_LABELS_MAX];

	if (e->published && (ep_labels(n, e, labels, sizeof(labels)) != 0 ||
			     strcmp(labels, e->labels) == 0))
		return false;
	e->published = false;
	n->pub_gen++;
	return true;
}

/* A pod changed: its endpoints may need their identity looked at again. */
static void on_pod(struct cw_k8s_informer *inf, enum cw_k8s_event_type type, const cJSON *obj,
		   const cJSON *old, void *arg)
{
	struct cw_node *n = arg;
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(md, "name");
	const cJSON *ns = cJSON_GetObjectItemCaseSensitive(md, "namespace");
	bool any = false;

	(void)inf;
	(void)old;
	if (type == CW_K8S_DELETED || !cJSON_IsString(name) || !cJSON_IsString(ns))
		return;
	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		if (strcmp(e->st.pod_name, name->valuestring) == 0 &&
		    strcmp(e->st.pod_namespace, ns->valuestring) == 0)
			any |= ep_needs_publish(n, e);
	if (any)
		cw_node_publish_soon(n);
}

/* A namespace's labels are part of its pods' identities. */
static void on_namespace(struct cw_k8s_informer *inf, enum cw_k8s_event_type type,
			 const cJSON *obj, const cJSON *old, void *arg)
{
	struct cw_node *n = arg;
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
	bool any = false;

	(void)inf;
	(void)old;
	(void)type;
	if (!cJSON_IsString(name))
		return;
	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		if (strcmp(e->st.pod_namespace, name->valuestring) == 0)
			any |= ep_needs_publish(n, e);
	if (any)
		cw_node_publish_soon(n);
}

/* The pods or the namespaces are fully known: identities can be resolved. */
static void on_pods_synced(struct cw_k8s_informer *inf, void *arg)
{
	(void)inf;
	cw_node_publish_soon(arg);
}

/*
 * Services and EndpointSlices: checked once per change here, so one that
 * does not parse is logged and counted once; lb.c skips it.
 */
static void on_service_obj(struct cw_k8s_informer *inf, enum cw_k8s_event_type type,
			   const cJSON *obj, const cJSON *old, void *arg)
{
	struct cw_node *n = arg;
	char err[256], ns[CW_SVC_NAME_MAX + 1], name[CW_SVC_NAME_MAX + 1];
	int rc = 0;

	(void)old;
	if (type != CW_K8S_DELETED) {
		if (inf == n->i_services) {
			struct cw_svc svc;

			rc = cw_svc_from_k8s(obj, &svc, err, sizeof(err));
		} else {
			struct cw_svc_bes bes = { 0 };

			rc = cw_epslice_parse(obj, ns, sizeof(ns), name, sizeof(name),
					      (uint16_t)n->o.cluster_id, &bes, err, sizeof(err));
			cw_svc_bes_clear(&bes);
		}
	}
	if (rc) {
		char key[CW_K8S_KEY_MAX] = "?";

		cw_k8s_object_key(obj, key, sizeof(key), NULL, 0);
		n->c.invalid_services++;
		pr_warn("kubernetes: ignoring %s %s: %s", cw_k8s_informer_path(inf), key, err);
	}
	cw_node_services_soon(n);
}

static void on_services_synced(struct cw_k8s_informer *inf, void *arg)
{
	(void)inf;
	cw_node_services_soon(arg);
}

/* Pods and Namespaces are read for their labels (identities) alone. */
static const char *const labels_keep[] = { "metadata.labels", NULL };
/* Our Node: its PodCIDR and InternalIP, not its images and conditions. */
static const char *const node_keep[] = { "spec.podCIDR", "status.addresses", NULL };

static int k8s_start(struct cw_node *n)
{
	struct cw_k8s_config cfg = { .url = n->o.k8s_api, .token_file = n->o.k8s_token_file,
				     .ca_file = n->o.k8s_ca_file };
	char err[512], node_sel[320], pod_sel[320];
	struct cw_k8s_informer_opts io = { 0 };
	int rc;

	rc = cw_k8s_new(n->loop, &cfg, &n->k8s, err, sizeof(err));
	if (rc) {
		pr_err("kubernetes: %s", err);
		return rc;
	}
	snprintf(node_sel, sizeof(node_sel), "metadata.name=%s", n->o.node_name);
	snprintf(pod_sel, sizeof(pod_sel), "spec.nodeName=%s", n->o.node_name);
	{
		const struct {
			const char *path, *field_selector;
			cw_k8s_handler_fn handler;
			cw_k8s_synced_fn synced;
			const char *const *keep;
			struct cw_k8s_informer **out;
		} want[] = {
			{ "/api/v1/nodes", node_sel, on_node_obj, NULL, node_keep, &n->i_node },
			{ "/api/v1/namespaces", NULL, on_namespace, on_pods_synced, labels_keep,
			  &n->i_namespaces },
			{ "/api/v1/pods", pod_sel, on_pod, on_pods_synced, labels_keep, &n->i_pods },
			{ "/api/v1/services", NULL, on_service_obj, on_services_synced,
			  cw_svc_k8s_keep, &n->i_services },
			{ "/apis/discovery.k8s.io/v1/endpointslices", NULL, on_service_obj,
			  on_services_synced, cw_epslice_k8s_keep, &n->i_slices },
		};

		for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
			io = (struct cw_k8s_informer_opts){ want[i].path, want[i].field_selector, NULL,
							    want[i].handler, want[i].synced, n,
							    want[i].keep };
			rc = cw_k8s_informer_new(n->k8s, &io, want[i].out);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* --- mesh store watches -------------------------------------------------------- */

/*
 * Validation happens once per change, here, so a bad record is logged and
 * counted once; the reconcile skips whatever does not parse.
 */
bool cw_mesh_record_ok(struct cw_node *n, const char *cluster, unsigned int cluster_id,
		       const struct cw_kv_pair *kv)
{
	char err[256] = "";
	int rc = 0;

	if (strncmp(kv->key, CW_KEY_NODES, strlen(CW_KEY_NODES)) == 0) {
		struct cw_node_rec r;

		rc = cw_node_rec_parse(kv->key, kv->value, kv->value_len, cluster, cluster_id, &r, err,
				       sizeof(err));
		if (!rc && cluster_id != n->o.cluster_id && r.pod_cidr.len &&
		    cw_cidr_is_local(n, &r.pod_cidr)) {
			char a[16];

			cw_addr4_str(r.pod_cidr.addr, a);
			snprintf(err, sizeof(err), "PodCIDR %s/%u overlaps this cluster's (%s): not routed",
				 a, r.pod_cidr.len, n->o.cluster);
			rc = -EPERM;
		}
	} else if (strncmp(kv->key, CW_KEY_IPS, strlen(CW_KEY_IPS)) == 0) {
		struct cw_ip_rec r;

		rc = cw_ip_rec_parse(kv->key, kv->value, kv->value_len, cluster_id, &r, err,
				     sizeof(err));
		if (!rc && cluster_id != n->o.cluster_id && cw_ip_is_local(n, r.ip)) {
			snprintf(err, sizeof(err),
				 "%s is a pod address of this cluster (%s), not cluster %s's",
				 kv->key + strlen(CW_KEY_IPS), n->o.cluster, cluster);
			rc = -EPERM;
		}
	} else if (strncmp(kv->key, CW_KEY_ID, strlen(CW_KEY_ID)) == 0) {
		uint32_t id;

		rc = cw_identity_key_parse(kv->key, &id);
		if (rc)
			snprintf(err, sizeof(err), "key is not id/<number>");
		else if (!cw_identity_in_cluster(id, cluster_id)) {
			snprintf(err, sizeof(err), "identity %u is outside cluster %u's range",
				 (unsigned int)id, cluster_id);
			rc = -EINVAL;
		}
	} else if (strncmp(kv->key, CW_KEY_SERVICES, strlen(CW_KEY_SERVICES)) == 0) {
		struct cw_svc_rec r;

		rc = cw_svc_rec_parse(kv->key, kv->value, kv->value_len, cluster, cluster_id, &r,
				      err, sizeof(err));
		cw_svc_rec_clear(&r);
	}
	if (rc) {
		n->c.invalid_records++;
		pr_warn("mesh store of cluster %s: ignoring %s: %s", cluster, kv->key, err);
	}
	return rc == 0;
}

static void on_mesh_put(void *arg, const struct cw_kv_pair *kv, const struct cw_kv_pair *old)
{
	struct cw_node *n = arg;

	(void)old;
	if (!cw_mesh_record_ok(n, n->o.cluster, n->o.cluster_id, kv))
		return;
	if (strncmp(kv->key, CW_KEY_IPS, strlen(CW_KEY_IPS)) == 0)
		cw_datapath_ip_put(n, n->o.cluster_id, kv);
	else if (strncmp(kv->key, CW_KEY_ID, strlen(CW_KEY_ID)) != 0)
		cw_node_reconcile_soon(n); /* no map holds identity labels: id/ needs nothing */
}

static void on_mesh_del(void *arg, const struct cw_kv_pair *old)
{
	struct cw_node *n = arg;
	char mine[512];

	/* Our own record vanished (an operator, a lost lease): put it back. */
	snprintf(mine, sizeof(mine), CW_KEY_NODES "%s/%s", n->o.cluster, n->o.node_name);
	if (strcmp(old->key, mine) == 0 && n->node_published) {
		n->node_published = false;
		n->pub_gen++; /* an answer in flight no longer says all */
		cw_node_publish_soon(n);
	}
	if (strncmp(old->key, CW_KEY_IPS, strlen(CW_KEY_IPS)) == 0)
		for (struct cw_local_ep *e = n->eps; e; e = e->next) {
			char k[96];

			ip_key(e->st.ip, k, sizeof(k));
			if (e->published && strcmp(k, old->key) == 0) {
				e->published = false;
				n->pub_gen++;
				cw_node_publish_soon(n);
			}
		}
	if (strncmp(old->key, CW_KEY_IPS, strlen(CW_KEY_IPS)) == 0)
		cw_datapath_ip_del(n, n->o.cluster_id, old);
	else if (strncmp(old->key, CW_KEY_ID, strlen(CW_KEY_ID)) != 0)
		cw_node_reconcile_soon(n);
}

static void on_mesh_synced(void *arg)
{
	cw_node_reconcile_soon(arg);
}

static const struct cw_kv_watch_ops mesh_ops = { on_mesh_put, on_mesh_del, on_mesh_synced };

static int etcd_start(struct cw_node *n)
{
	struct cw_kv_config kc;
	char err[512], prefix[256];
	int rc;

	rc = cw_etcd_conf_load(n->o.etcd_config, &n->etcd_conf, err, sizeof(err));
	if (rc) {
		pr_err("etcd config %s", err);
		return rc;
	}
	cw_etcd_conf_to_kv(&n->etcd_conf, &kc);
	/* Short: a unary call blocks the loop while etcd is unreachable. */
	kc.timeout_ms = 2000;
	rc = cw_kv_new(&kc, &n->kv);
	if (rc)
		return rc;
	snprintf(prefix, sizeof(prefix), CW_KEY_NODES "%s/", n->o.cluster);
	rc = cw_kv_watch_start(n->loop, n->kv, prefix, &mesh_ops, n, &n->w_nodes);
	if (!rc)
		rc = cw_kv_watch_start(n->loop, n->kv, CW_KEY_IPS, &mesh_ops, n, &n->w_ips);
	if (!rc)
		rc = cw_kv_watch_start(n->loop, n->kv, CW_KEY_ID, &mesh_ops, n, &n->w_ids);
	return rc;
}

/* --- life cycle ------------------------------------------------------------------- */

static void on_signal(struct cw_loop *loop, int signo, void *arg)
{
	struct cw_node *n = arg;

	pr_info("signal %d: stopping (the datapath keeps forwarding)", signo);
	n->stopping = true;
	cw_loop_stop(loop);
}

static void on_reconcile(struct cw_loop *loop, void *arg)
{
	(void)loop;
	cw_datapath_reconcile(arg);
}

/*
 * Service conntrack: the LRU evicts under pressure anyway; collecting what
 * expired keeps `bpftool map dump` honest and the room free.
 */
static void on_ct_gc(struct cw_loop *loop, void *arg)
{
	struct cw_node *n = arg;
	size_t deleted = 0;
	int rc;

	(void)loop;
	if (!n->dp)
		return;
	rc = cw_lb4_ct_gc(n->dp, cw_lb4_ct_clock(), &deleted);
	n->c.ct_collected += deleted;
	if (rc)
		pr_warn("services: conntrack gc: %s", strerror(-rc));
}

static void on_resync(struct cw_loop *loop, void *arg)
{
	(void)loop;
	cw_node_reconcile_soon(arg);
}

static void read_boot_id(struct cw_node *n)
{
	char *buf = NULL;
	size_t len = 0;

	if (cw_read_file("/proc/sys/kernel/random/boot_id", &buf, &len) == 0) {
		snprintf(n->boot_id, sizeof(n->boot_id), "%.*s", (int)strcspn(buf, "\n"), buf);
		free(buf);
	}
}

static void node_free(struct cw_node *n)
{
	id_reset(n);
	cw_api_stop(n);
	cw_clusters_stop(n);
	cw_masq_clear(&n->masq);
	cw_k8s_informer_free(n->i_pods);
	cw_k8s_informer_free(n->i_namespaces);
	cw_k8s_informer_free(n->i_services);
	cw_k8s_informer_free(n->i_slices);
	cw_k8s_informer_free(n->i_node);
	cw_k8s_free(n->k8s);
	cw_kv_watch_free(n->w_nodes);
	cw_kv_watch_free(n->w_ips);
	cw_kv_watch_free(n->w_ids);
	cw_kv_req_free(n->lease_req);
	cw_kv_req_free(n->pub_req);
	cw_kv_free(n->kv);
	cw_etcd_conf_clear(&n->etcd_conf);
	cw_timer_del(n->t_lease);
	cw_timer_del(n->t_publish);
	cw_timer_del(n->t_reconcile);
	cw_timer_del(n->t_ct_gc);
	cw_timer_del(n->t_resync);
	cw_timer_del(n->t_lb);
	cw_lb_clear(&n->lb);
	free(n->local_cidrs);
	cw_io_del(n->inotify_io);
	cw_close(n->inotify_fd);
	while (n->eps) {
		struct cw_local_ep *e = n->eps;

		n->eps = e->next;
		free(e);
	}
	while (n->withdraw) {
		struct cw_withdraw *w = n->withdraw;

		n->withdraw = w->next;
		free(w);
	}
	cw_dp_free(n->dp);
	if (n->nl)
		cw_nl_close(n->nl);
	cw_loop_free(n->loop);
}

int cw_node_main(const struct cw_node_opts *o)
{
	struct cw_node n = { .o = *o, .inotify_fd = -1, .api_fd = -1, .metrics_fd = -1,
			     .mesh_inotify_fd = -1 };
	int rc;

	/*
	 * Page buffers of the store's listings and Kubernetes lists are large and
	 * short-lived: a fixed mmap threshold gives them back to the system when
	 * freed, instead of growing the heap glibc's adaptive threshold leads to.
	 */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	n.started_ms = cw_loop_now_ms();
	n.node_ip = o->node_ip;
	n.pod_cidr = o->pod_cidr;
	n.masq.enabled = !o->no_masquerade;
	memcpy(n.masq.except, o->masq_except, sizeof(n.masq.except));
	n.masq.n_except = o->n_masq_except;
	if (!n.masq.enabled)
		cw_masq_remove(&n.masq); /* an earlier run's rules */
	read_boot_id(&n);
	rc = cw_loop_new(&n.loop);
	if (rc)
		goto out;
	if ((rc = cw_timer_add(n.loop, -1, (int64_t)o->lease_ttl * 1000 / 3, on_lease, &n,
			       &n.t_lease)) ||
	    (rc = cw_timer_add(n.loop, -1, 0, on_publish, &n, &n.t_publish)) ||
	    (rc = cw_timer_add(n.loop, -1, 0, on_reconcile, &n, &n.t_reconcile)) ||
	    (rc = cw_timer_add(n.loop, -1, 0, on_lb, &n, &n.t_lb)) ||
	    (rc = cw_timer_add(n.loop, CW_CT_GC_PERIOD_MS, CW_CT_GC_PERIOD_MS, on_ct_gc, &n,
			       &n.t_ct_gc)) ||
	    (rc = cw_timer_add(n.loop, CW_RESYNC_PERIOD_MS, CW_RESYNC_PERIOD_MS, on_resync, &n,
			       &n.t_resync)))
		goto out;
	cw_loop_signal(n.loop, SIGTERM, on_signal, &n);
	cw_loop_signal(n.loop, SIGINT, on_signal, &n);
	signal(SIGPIPE, SIG_IGN);

	rc = cw_datapath_setup(&n);
	if (rc && rc != -EAGAIN)
		goto out;
	rc = cw_api_start(&n);
	if (rc)
		goto out;
	rc = endpoints_watch(&n);
	if (rc) {
		pr_err("cannot watch %s/%s: %s", o->state_dir, CW_ENDPOINT_DIR, strerror(-rc));
		goto out;
	}
	rc = etcd_start(&n);
	if (rc)
		goto out;
	if (!o->no_k8s) {
		rc = k8s_start(&n);
		if (rc)
			goto out;
	}
	rc = cw_clusters_start(&n);
	if (rc) {
		pr_err("cannot watch the clustermesh directory %s: %s", o->clustermesh_dir,
		       strerror(-rc));
		goto out;
	}
	endpoints_rescan(&n);
	if (n.node_ip.s_addr)
		node_identity_known(&n);
	/* Lease at once, then keepalives at a third of the TTL. */
	cw_timer_arm(n.t_lease, 0);
	pr_info("node %s of cluster %s (id %u) running, routing %s", o->node_name, o->cluster,
		o->cluster_id, cw_routing_name(o->routing));
	rc = cw_loop_run(n.loop);
out:
	/*
	 * Leaving on purpose: pins, maps, routes and the VXLAN device stay, so
	 * pods keep talking while the next helper starts.  Our records stay
	 * until the lease runs out, which is what a restart wants too.
	 */
	node_free(&n);
	return rc ? 1 : 0;
}
