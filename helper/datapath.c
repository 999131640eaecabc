// SPDX-License-Identifier: Apache-2.0
/*
 * The BPF map writer and route keeper: makes the ipcache, tunnel and
 * endpoint maps, and the native routes, equal to what the mesh store says
 * (the service maps: lb.c).
 *
 * Every reconcile computes the whole desired state from the mirrors and
 * writes only what differs, then deletes what is not desired.  Nothing is
 * deleted before every watch has delivered its first listing, so a
 * restarting helper never withdraws an entry it simply has not re-read yet.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <causeway/log.h>
#include <causeway/netlink.h>
#include <causeway/util.h>
#include "netdev.h"
#include "node.h"

int cw_datapath_setup(struct cw_node *n)
{
	struct cw_config cfg = { 0 };
	char lockdir[PATH_MAX];
	int rc;

	if (!n->dp) {
		rc = cw_bpffs_ensure(n->o.bpf_root);
		if (rc) {
			pr_err("datapath: %s is not on a bpffs: %s", n->o.bpf_root, strerror(-rc));
			return rc;
		}
		snprintf(lockdir, sizeof(lockdir), "%s/locks", n->o.state_dir);
		/*
		 * This release's programs, always: the pins may be an older
		 * release's (an upgrade) or the plugin's, which adopts whatever
		 * is pinned.  The maps are adopted, so no state is lost.  Should
		 * the kernel refuse them, the pinned programs go on forwarding.
		 */
		rc = cw_dp_load(n->o.bpf_root, lockdir);
		if (rc && cw_dp_pinned(n->o.bpf_root)) {
			snprintf(n->dp_load_error, sizeof(n->dp_load_error),
				 "cannot load this release's programs (%s): the ones pinned before run",
				 strerror(-rc));
			cw_node_error(n, "datapath: %s", n->dp_load_error);
		}
		rc = cw_dp_open(n->o.bpf_root, lockdir, true, &n->dp);
		if (rc) {
			pr_err("datapath: cannot load or adopt the programs in %s: %s", n->o.bpf_root,
			       strerror(-rc));
			return rc;
		}
		/*
		 * Pods' veths (and the devices, attached again below anyway)
		 * still run what was attached before the pins were replaced:
		 * moved to the pinned programs, one atomic replace each.
		 */
		rc = cw_dp_refresh_all(n->o.bpf_root, &n->dp_moved);
		if (rc && !n->dp_load_error[0]) {
			snprintf(n->dp_load_error, sizeof(n->dp_load_error),
				 "not every attachment moved to the pinned programs: %s", strerror(-rc));
			cw_node_error(n, "datapath: %s", n->dp_load_error);
		}
		if (n->dp_moved)
			pr_info("datapath: %u attachment(s) moved to the pinned programs", n->dp_moved);
	}
	if (!n->nl) {
		rc = cw_nl_open(&n->nl);
		if (rc)
			return rc;
	}
	if (!n->node_ip.s_addr)
		return -EAGAIN; /* the Node informer brings it */
	rc = cw_underlay_find(n->nl, n->node_ip, n->underlay_dev, &n->underlay_ifindex,
			      &n->underlay_mtu);
	if (rc) {
		char a[16];

		cw_addr4_str(n->node_ip, a);
		cw_node_error(n, "datapath: no interface holds the node IP %s: %s", a, strerror(-rc));
		return rc;
	}
	rc = cw_vxlan_ensure(n->nl, CW_VXLAN_DEV, CW_VXLAN_PORT,
			     n->underlay_mtu - CW_VXLAN_OVERHEAD, &n->vxlan_ifindex);
	if (rc)
		return rc;
	/*
	 * Overlay packets for the node itself (not a local pod) go up its stack
	 * from cw_vxlan, whose addresses reverse path filtering would not find.
	 */
	rc = cw_write_sysctl("/proc/sys/net/ipv4/conf/" CW_VXLAN_DEV "/rp_filter", "0");
	if (rc)
		pr_warn("datapath: cannot turn rp_filter off on %s: %s", CW_VXLAN_DEV, strerror(-rc));
	/*
	 * Nothing IPv6 is tunnelled yet: without this the kernel's own neighbour
	 * and multicast listener messages on the device would reach to_overlay,
	 * which has nowhere to send them, and show as drops.
	 */
	rc = cw_write_sysctl("/proc/sys/net/ipv6/conf/" CW_VXLAN_DEV "/disable_ipv6", "1");
	if (rc && rc != -ENOENT)
		pr_warn("datapath: cannot turn IPv6 off on %s: %s", CW_VXLAN_DEV, strerror(-rc));
	rc = cw_dp_attach_pinned(n->o.bpf_root, CW_PIN_FROM_OVERLAY, n->vxlan_ifindex, true);
	if (rc) {
		pr_err("datapath: cannot attach from_overlay to %s: %s", CW_VXLAN_DEV, strerror(-rc));
		return rc;
	}
	rc = cw_dp_attach_pinned(n->o.bpf_root, CW_PIN_TO_OVERLAY, n->vxlan_ifindex, false);
	if (rc) {
		pr_err("datapath: cannot attach to_overlay to %s: %s", CW_VXLAN_DEV, strerror(-rc));
		return rc;
	}
	/*
	 * Native routing past the stack (bpf/netdev.bpf.c): pods' packets from
	 * other nodes go straight to their veth, and the flows the stack NATs
	 * on their way out of the underlay are learnt so their replies are
	 * left to it.  Not in tunnel mode, where no pod traffic crosses the
	 * underlay device unencapsulated (NATed flows to other nodes' pods
	 * leave through cw_vxlan, where to_overlay learns them) and the two
	 * programs would only cost every tunnel packet their run (~50-100 ns
	 * each); a node switched to tunnel mode has them taken off.
	 */
	if (n->o.routing == CW_ROUTING_TUNNEL) {
		rc = cw_tc_detach(n->underlay_ifindex, true);
		if (!rc)
			rc = cw_tc_detach(n->underlay_ifindex, false);
	} else {
		rc = cw_dp_attach_pinned(n->o.bpf_root, CW_PIN_FROM_NETDEV, n->underlay_ifindex, true);
		if (!rc)
			rc = cw_dp_attach_pinned(n->o.bpf_root, CW_PIN_TO_NETDEV, n->underlay_ifindex, false);
	}
	if (rc) {
		pr_err("datapath: cannot %s from_netdev/to_netdev on %s: %s",
		       n->o.routing == CW_ROUTING_TUNNEL ? "detach" : "attach", n->underlay_dev,
		       strerror(-rc));
		return rc;
	}
	cfg.vxlan_ifindex = (__u32)n->vxlan_ifindex;
	cfg.node_ip = n->node_ip.s_addr;
	cfg.cluster_id = (__u16)n->o.cluster_id;
	if (!n->o.tunnel_through_stack)
		cfg.underlay_ifindex = (__u32)n->underlay_ifindex;
	rc = cw_config_put(n->dp, &cfg);
	if (rc)
		return rc;
	n->dp_ready = true;
	pr_info("datapath: ready on %s (underlay %s, MTU %u)", n->o.bpf_root, n->underlay_dev,
		n->underlay_mtu);
	return 0;
}

static bool prefixes_overlap(const struct cw_prefix4 *a, const struct cw_prefix4 *b)
{
	return cw_prefix4_first(a) <= cw_prefix4_last(b) && cw_prefix4_first(b) <= cw_prefix4_last(a);
}

bool cw_cidr_is_local(struct cw_node *n, const struct cw_prefix4 *p)
{
	if (n->pod_cidr.len && prefixes_overlap(&n->pod_cidr, p))
		return true;
	for (size_t i = 0; i < n->n_local_cidrs; i++)
		if (prefixes_overlap(&n->local_cidrs[i], p))
			return true;
	return false;
}

bool cw_ip_is_local(struct cw_node *n, struct in_addr ip)
{
	char key[64];

	if (n->pod_cidr.len && cw_prefix4_contains(&n->pod_cidr, ip))
		return true;
	for (size_t i = 0; i < n->n_local_cidrs; i++)
		if (cw_prefix4_contains(&n->local_cidrs[i], ip))
			return true;
	snprintf(key, sizeof(key), CW_KEY_IPS "%s", inet_ntoa(ip));
	return n->w_ips && cw_kv_watch_lookup(n->w_ips, key);
}

void cw_datapath_update_endpoint(struct cw_node *n, const struct cw_local_ep *ep)
{
	struct cw_endpoint_info info;

	if (!n->dp || !ep->identity)
		return;
	/* Only the entry the plugin wrote for this very veth: the IP may have moved on. */
	if (cw_ep_get(n->dp, ep->st.ip.s_addr, &info) ||
	    info.ifindex != (__u32)ep->st.host_ifindex || info.identity == ep->identity)
		return;
	info.identity = ep->identity;
	if (cw_ep_put(n->dp, ep->st.ip.s_addr, &info) == 0)
		n->c.map_writes++;
}

/* --- desired state --------------------------------------------------------------- */

/* A value of either LPM map, so one sync routine serves both. */
union lpm_value {
	struct cw_ipcache_info ip;
	struct cw_tunnel_info tun;
};

struct want_lpm {
	struct cw_lpm_key key;
	union lpm_value v;
};

struct desired {
	struct cw_node *n;
	const char *cluster;    /* the source being read */
	unsigned int cluster_id;
	struct want_lpm *ipc, *tun;
	size_t n_ipc, n_tun, cap_ipc, cap_tun;
	struct cw_route *routes;
	size_t n_routes, cap_routes;
	/* pod IPs whose record is present but invalid: their entries stay as they are */
	__be32 *keep;
	size_t n_keep, cap_keep;
	/* every node's PodCIDR, ours included, to find overlaps between clusters */
	struct cidr_owner *cidrs;
	size_t n_cidrs, cap_cidrs;
	int err;
};

struct cidr_owner {
	struct cw_prefix4 p;
	unsigned int cluster_id;
	char node[64];
};

static void *grow(void *arr, size_t *cap, size_t n, size_t size, int *err)
{
	void *na;

	if (n < *cap)
		return arr;
	na = realloc(arr, (*cap ? *cap * 2 : 64) * size);
	if (!na) {
		*err = -ENOMEM;
		return NULL;
	}
	*cap = *cap ? *cap * 2 : 64;
	return na;
}

/* Adds @ip's /32 with @v to the wanted ipcache. */
static void want_ipc(struct desired *d, struct in_addr ip, struct cw_ipcache_info v)
{
	void *p = grow(d->ipc, &d->cap_ipc, d->n_ipc, sizeof(*d->ipc), &d->err);

	if (!p)
		return;
	d->ipc = p;
	d->ipc[d->n_ipc++] = (struct want_lpm){ .key = { 32, ip.s_addr }, .v.ip = v };
}

/* Whether traffic to @node_ip goes over VXLAN in this routing mode. */
static bool tunnel_to(struct cw_node *n, struct in_addr node_ip)
{
	switch (n->o.routing) {
	case CW_ROUTING_TUNNEL:
		return true;
	case CW_ROUTING_NATIVE:
		return false;
	case CW_ROUTING_HYBRID:
		return !cw_onlink(n->nl, n->underlay_ifindex, node_ip);
	}
	return true;
}

static void want_node(const struct cw_kv_pair *kv, void *arg)
{
	struct desired *d = arg;
	struct cw_node *n = d->n;
	struct cw_node_rec r;
	char err[256];
	void *p;

	if (d->err || cw_node_rec_parse(kv->key, kv->value, kv->value_len, d->cluster,
					 d->cluster_id, &r, err, sizeof(err)))
		return;
	if (!r.pod_cidr.len)
		return;
	p = grow(d->cidrs, &d->cap_cidrs, d->n_cidrs, sizeof(*d->cidrs), &d->err);
	if (!p)
		return;
	d->cidrs = p;
	d->cidrs[d->n_cidrs] = (struct cidr_owner){ r.pod_cidr, d->cluster_id, "" };
	snprintf(d->cidrs[d->n_cidrs++].node, sizeof(d->cidrs[0].node), "%.63s", r.name);
	if (d->cluster_id == n->o.cluster_id && strcmp(r.name, n->o.node_name) == 0)
		return;
	/* A remote node claiming addresses of ours is reported (overlap), never routed to. */
	if (d->cluster_id != n->o.cluster_id && cw_cidr_is_local(n, &r.pod_cidr))
		return;
	p = grow(d->routes, &d->cap_routes, d->n_routes, sizeof(*d->routes), &d->err);
	if (!p)
		return;
	d->routes = p;
	if (!tunnel_to(n, r.internal_ip)) {
		d->routes[d->n_routes++] = (struct cw_route){ r.pod_cidr, r.internal_ip,
							      n->underlay_ifindex, { 0 } };
		return;
	}
	/*
	 * Tunnelled: the PodCIDR in the tunnel map for pods, and a route into
	 * the VXLAN device for the node's own traffic (to_overlay encapsulates
	 * it).  The node's address in the ipcache, behind itself, so what pods
	 * send to it (and answer it) crosses the tunnel too: never the
	 * underlay with a pod source, which nothing routes back, and never
	 * masqueraded, so the node sees who called.
	 */
	d->routes[d->n_routes++] = (struct cw_route){ r.pod_cidr, { 0 }, n->vxlan_ifindex,
						      n->node_ip };
	p = grow(d->tun, &d->cap_tun, d->n_tun, sizeof(*d->tun), &d->err);
	if (!p)
		return;
	d->tun = p;
	d->tun[d->n_tun++] = (struct want_lpm){
		.key = { r.pod_cidr.len, r.pod_cidr.addr.s_addr },
		/* flags: the owning cluster, so a resync keeps what it may not judge */
		.v.tun = { .node_ip = r.internal_ip.s_addr, .flags = d->cluster_id },
	};
	if (r.internal_ip.s_addr == n->node_ip.s_addr || cw_ip_is_local(n, r.internal_ip))
		return;
	want_ipc(d, r.internal_ip, (struct cw_ipcache_info){ .identity = CW_IDENTITY_REMOTE_NODE,
							     .tunnel_ip = r.internal_ip.s_addr,
							     .cluster_id = (__u16)d->cluster_id });
}

/* The ipcache entry of a valid ip/v1 record read from @cluster_id's store. */
static struct cw_ipcache_info ip_entry(struct cw_node *n, const struct cw_ip_rec *r,
				       unsigned int cluster_id)
{
	return (struct cw_ipcache_info){
		.identity = r->identity,
		.tunnel_ip = r->host_ip.s_addr != n->node_ip.s_addr && tunnel_to(n, r->host_ip) ?
			     r->host_ip.s_addr : 0,
		.cluster_id = (__u16)cluster_id,
	};
}

static void want_ip(const struct cw_kv_pair *kv, void *arg)
{
	struct desired *d = arg;
	struct cw_node *n = d->n;
	struct cw_ip_rec r;
	char err[256];
	void *p;

	if (d->err)
		return;
	if (d->cluster_id != n->o.cluster_id) {
		struct in_addr ip;

		/* Refused (and counted) when it arrived: local pods are ours alone. */
		if (cw_addr4_parse(kv->key + strlen(CW_KEY_IPS), &ip) && cw_ip_is_local(n, ip))
			return;
	}
	if (cw_ip_rec_parse(kv->key, kv->value, kv->value_len, d->cluster_id, &r, err,
			    sizeof(err))) {
		/*
		 * A record that was good and then turned bad (already logged and
		 * counted by the watch) must not take a live pod out of the mesh:
		 * whatever the map holds for the key's IP is kept.
		 */
		struct in_addr ip;

		if (!cw_addr4_parse(kv->key + strlen(CW_KEY_IPS), &ip))
			return;
		p = grow(d->keep, &d->cap_keep, d->n_keep, sizeof(*d->keep), &d->err);
		if (p) {
			d->keep = p;
			d->keep[d->n_keep++] = ip.s_addr;
		}
		return;
	}
	want_ipc(d, r.ip, ip_entry(n, &r, d->cluster_id));
}

static int cmp_key(const void *a, const void *b)
{
	const struct cw_lpm_key *x = a, *y = b;

	if (x->prefixlen != y->prefixlen)
		return x->prefixlen < y->prefixlen ? -1 : 1;
	return x->ip4 < y->ip4 ? -1 : x->ip4 > y->ip4;
}

static int cmp_cidr(const void *a, const void *b)
{
	uint32_t x = cw_prefix4_first(&((const struct cidr_owner *)a)->p);
	uint32_t y = cw_prefix4_first(&((const struct cidr_owner *)b)->p);

	return (x > y) - (x < y);
}

/*
 * PodCIDRs of two clusters that overlap make some pods unreachable (the
 * longest prefix wins, or the last writer for equal ones): each remote
 * involved says so in `causeway-helper clusters`, and the log says it once.
 */
static void report_overlaps(struct cw_node *n, struct desired *d)
{
	const struct cidr_owner *widest = NULL;

	for (struct cw_remote *r = n->remotes; r; r = r->next)
		r->overlap_new[0] = '\0';
	if (d->n_cidrs) /* qsort's array must not be NULL, even when empty */
		qsort(d->cidrs, d->n_cidrs, sizeof(*d->cidrs), cmp_cidr);
	for (size_t i = 0; i < d->n_cidrs; i++) {
		const struct cidr_owner *c = &d->cidrs[i];

		if (widest && cw_prefix4_first(&c->p) <= cw_prefix4_last(&widest->p) &&
		    c->cluster_id != widest->cluster_id) {
			const struct cidr_owner *pair[2] = { widest, c };

			for (int k = 0; k < 2; k++) {
				struct cw_remote *r = cw_remote_by_id(n, pair[k]->cluster_id);
				const struct cidr_owner *o = pair[1 - k];
				char a[16], b[16];

				if (!r || r->overlap_new[0])
					continue;
				cw_addr4_str(pair[k]->p.addr, a);
				cw_addr4_str(o->p.addr, b);
				snprintf(r->overlap_new, sizeof(r->overlap_new),
					 "PodCIDR %s/%u of node %s overlaps %s/%u of node %s of cluster %s",
					 a, pair[k]->p.len, pair[k]->node, b, o->p.len, o->node,
					 cw_cluster_name_of(n, o->cluster_id));
			}
		}
		if (!widest || cw_prefix4_last(&c->p) > cw_prefix4_last(&widest->p))
			widest = c;
	}
	for (struct cw_remote *r = n->remotes; r; r = r->next) {
		if (strcmp(r->overlap, r->overlap_new) && r->overlap_new[0])
			pr_warn("cluster %s: %s", r->name, r->overlap_new);
		memcpy(r->overlap, r->overlap_new, sizeof(r->overlap));
	}
}

typedef int (*keys_fn)(const struct cw_dp *dp, struct cw_lpm_key **keys, size_t *n);

/*
 * Whether this reconcile may delete an entry owned by @cluster_id: the
 * local cluster's (its listing is complete), a connected remote's whose
 * listing is complete and whose synced canaries are there, an evicted
 * one's, or one no configured cluster owns any more.  A remote that is
 * configured but unreachable keeps its last state until it is evicted, so
 * its traffic keeps flowing.
 */
static bool may_withdraw(struct cw_node *n, unsigned int cluster_id)
{
	if (cluster_id == n->o.cluster_id)
		return true;
	return !cw_cluster_pending(n, cluster_id, CW_KEY_NODES) &&
	       !cw_cluster_pending(n, cluster_id, CW_KEY_IPS);
}
typedef int (*get_fn)(const struct cw_dp *dp, const struct cw_lpm_key *k, void *v);

/*
 * Exact-prefix reads: a plain lookup in an LPM trie answers for a missing
 * /32 with its covering prefix, which would hide the missing entry.
 */
static int get_ipcache(const struct cw_dp *dp, const struct cw_lpm_key *k, void *v)
{
	return cw_ipcache_get(dp, k->ip4, (__u8)k->prefixlen, v);
}

static int get_tunnel(const struct cw_dp *dp, const struct cw_lpm_key *k, void *v)
{
	return cw_tunnel_get(dp, k->ip4, (__u8)k->prefixlen, v);
}

/*
 * Write @want (sorted here) into the LPM map @fd, values of @vsize bytes,
 * then delete every key of the map that @want lacks.
 */
static bool kept(const struct desired *d, const struct cw_lpm_key *k)
{
	for (size_t i = 0; i < d->n_keep; i++)
		if (k->prefixlen == 32 && k->ip4 == d->keep[i])
			return true;
	return false;
}

static int sync_lpm(struct cw_node *n, const struct desired *d, int fd, struct want_lpm *want,
		    size_t count, size_t vsize, get_fn get, keys_fn keys, bool ipcache)
{
	struct cw_lpm_key *have = NULL;
	size_t nh = 0;
	int rc = 0;

	if (count)
		qsort(want, count, sizeof(*want), cmp_key);
	for (size_t i = 0; i < count; i++) {
		union lpm_value cur;

		if (get(n->dp, &want[i].key, &cur) == 0 &&
		    memcmp(&cur, &want[i].v, vsize) == 0)
			continue;
		if (bpf_map_update_elem(fd, &want[i].key, &want[i].v, BPF_ANY) == 0)
			n->c.map_writes++;
		else
			rc = -errno;
	}
	if (keys(n->dp, &have, &nh) == 0)
		for (size_t j = 0; j < nh; j++) {
			union lpm_value cur;

			if ((count && bsearch(&have[j], want, count, sizeof(*want), cmp_key)) ||
			    (ipcache && kept(d, &have[j])))
				continue;
			if (get(n->dp, &have[j], &cur) == 0 &&
			    !may_withdraw(n, ipcache ? cur.ip.cluster_id : cur.tun.flags & 0xff))
				continue;
			if (bpf_map_delete_elem(fd, &have[j]) == 0)
				n->c.map_deletes++;
		}
	free(have);
	return rc;
}

/*
 * One pod's record changed: its ipcache entry is written at once, without
 * a full reconcile (pod churn is the frequent event; a reconcile reads
 * every record and every entry).  Before the first full reconcile, and
 * for whatever this cannot judge, the full reconcile does it.
 */
void cw_datapath_ip_put(struct cw_node *n, unsigned int cluster_id, const struct cw_kv_pair *kv)
{
	struct cw_ipcache_info want, cur;
	struct cw_ip_rec r;
	char err[256];

	if (!n->dp_synced) {
		cw_node_reconcile_soon(n);
		return;
	}
	if (cw_ip_rec_parse(kv->key, kv->value, kv->value_len, cluster_id, &r, err, sizeof(err)))
		return; /* logged and counted by the watch; the entry stays as it was */
	if (cluster_id != n->o.cluster_id && cw_ip_is_local(n, r.ip))
		return; /* refused and counted by the watch */
	want = ip_entry(n, &r, cluster_id);
	if (cw_ipcache_get(n->dp, r.ip.s_addr, 32, &cur) == 0 && memcmp(&cur, &want, sizeof(cur)) == 0)
		return;
	if (cw_ipcache_put(n->dp, r.ip.s_addr, 32, &want) == 0)
		n->c.map_writes++;
	else
		cw_node_reconcile_soon(n);
}

void cw_datapath_ip_del(struct cw_node *n, unsigned int cluster_id, const struct cw_kv_pair *old)
{
	struct cw_ipcache_info cur;
	struct in_addr ip;

	if (!n->dp_synced) {
		cw_node_reconcile_soon(n);
		return;
	}
	if (!cw_addr4_parse(old->key + strlen(CW_KEY_IPS), &ip) ||
	    cw_ipcache_get(n->dp, ip.s_addr, 32, &cur))
		return;
	/* Another cluster's entry for the same address is not this delete's to take. */
	if (cur.cluster_id != cluster_id || !may_withdraw(n, cluster_id))
		return;
	if (cw_ipcache_delete(n->dp, ip.s_addr, 32) == 0)
		n->c.map_deletes++;
}

int cw_datapath_reconcile(struct cw_node *n)
{
	struct cw_kv_watch_status sn, si, sd;
	struct desired d = { .n = n };
	unsigned int added = 0, deleted = 0;
	int rc = 0;

	if (!n->dp_ready || !n->w_nodes)
		return 0;
	cw_kv_watch_get_status(n->w_nodes, &sn);
	cw_kv_watch_get_status(n->w_ips, &si);
	cw_kv_watch_get_status(n->w_ids, &sd);
	if (!sn.synced || !si.synced || !sd.synced)
		return 0; /* on_mesh_synced calls again */

	d.cluster = n->o.cluster;
	d.cluster_id = n->o.cluster_id;
	cw_kv_watch_foreach(n->w_nodes, want_node, &d);
	if (!d.err) {
		/* The local PodCIDRs, against which remote pod records are checked. */
		struct cw_prefix4 *lc = calloc(d.n_cidrs ? d.n_cidrs : 1, sizeof(*lc));

		if (lc) {
			free(n->local_cidrs);
			n->local_cidrs = lc;
			n->n_local_cidrs = 0;
			for (size_t i = 0; i < d.n_cidrs; i++)
				lc[n->n_local_cidrs++] = d.cidrs[i].p;
		}
	}
	cw_kv_watch_foreach(n->w_ips, want_ip, &d);
	for (struct cw_remote *r = n->remotes; r; r = r->next) {
		if (!cw_remote_usable(r))
			continue;
		d.cluster = r->name;
		d.cluster_id = r->id;
		cw_kv_watch_foreach(r->w_nodes, want_node, &d);
		cw_kv_watch_foreach(r->w_ips, want_ip, &d);
	}
	if (d.err) {
		rc = d.err;
		goto out;
	}
	report_overlaps(n, &d);
	/* cmp_key sorts want_lpm by its first member, the key. */
	rc = sync_lpm(n, &d, n->dp->map_tunnel, d.tun, d.n_tun, sizeof(struct cw_tunnel_info),
		      get_tunnel, cw_tunnel_keys, false);
	if (rc)
		cw_node_error(n, "datapath: tunnel map write failed: %s", strerror(-rc));
	rc = sync_lpm(n, &d, n->dp->map_ipcache, d.ipc, d.n_ipc, sizeof(struct cw_ipcache_info),
		      get_ipcache, cw_ipcache_keys, true);
	if (rc)
		cw_node_error(n, "datapath: ipcache write failed: %s", strerror(-rc));
	/*
	 * Routes carry no owner: while a remote cluster is unreachable its
	 * routes stay, and so, for now, does any other stale route.
	 */
	bool prune = true;

	for (struct cw_remote *r = n->remotes; r; r = r->next)
		if (r->state != CW_REMOTE_REFUSED && !r->evicted && !cw_remote_settled(r, CW_KEY_NODES))
			prune = false;
	rc = cw_routes_sync(n->nl, d.routes, d.n_routes, prune, &added, &deleted);
	n->c.route_adds += added;
	n->c.route_deletes += deleted;
	if (rc)
		cw_node_error(n, "datapath: route sync: %s", strerror(-rc));
	{
		/* pods keep their address towards every PodCIDR the mesh knows */
		struct cw_prefix4 *all = malloc((d.n_cidrs + 1) * sizeof(*all));
		int mrc = all ? 0 : -ENOMEM;

		for (size_t i = 0; all && i < d.n_cidrs; i++)
			all[i] = d.cidrs[i].p;
		if (!mrc)
			mrc = cw_masq_sync(&n->masq, n->pod_cidr, all, d.n_cidrs, cw_loop_now_ms());
		free(all);
		if (mrc) {
			cw_node_error(n, "datapath: %s", n->masq.error[0] ? n->masq.error :
				      strerror(-mrc));
			if (!rc)
				rc = mrc;
		}
	}
	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		cw_datapath_update_endpoint(n, e);
	if (cw_lb_reconcile(n) && !rc)
		rc = -EIO;
	n->c.reconciles++;
	n->dp_synced = true;
	n->last_reconcile_ms = cw_loop_now_ms();
out:
	free(d.ipc);
	free(d.keep);
	free(d.tun);
	free(d.routes);
	free(d.cidrs);
	return rc;
}
