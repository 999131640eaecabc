// SPDX-License-Identifier: Apache-2.0
/*
 * GC (SPEC.md 1.1.0): remove every attachment of this network that the
 * runtime no longer lists, continuing past errors so one stuck attachment
 * does not keep the rest from being collected.
 */
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>

#include <causeway/dp.h>
#include <causeway/endpoint.h>
#include <causeway/log.h>
#include <causeway/util.h>
#include "delegate.h"
#include "ipam.h"
#include "plugin.h"

#define GC_MAX_STALE 4096

struct gc_ctx {
	struct cw_plugin *p;
	struct cw_attachment stale[GC_MAX_STALE];
	size_t n_stale;
	int errors;
};

static int collect_stale(const struct cw_endpoint_state *ep, void *arg)
{
	struct gc_ctx *g = arg;
	struct cw_attachment *a = &g->stale[g->n_stale];

	if (strcmp(ep->network, g->p->conf->name) != 0 ||
	    cw_conf_has_attachment(g->p->conf, ep->container_id, ep->ifname))
		return 0;
	if (g->n_stale == GC_MAX_STALE)
		return 1; /* the next GC takes the rest */
	snprintf(a->container_id, sizeof(a->container_id), "%s", ep->container_id);
	snprintf(a->ifname, sizeof(a->ifname), "%s", ep->ifname);
	g->n_stale++;
	return 0;
}

struct ep_owner {
	__be32 ip;
	int ifindex;
	bool owned;
};

static int find_owner(const struct cw_endpoint_state *ep, void *arg)
{
	struct ep_owner *o = arg;

	if (ep->ip.s_addr == o->ip && ep->host_ifindex == o->ifindex)
		o->owned = true;
	return o->owned;
}

/*
 * A map entry nobody's state file accounts for, on an interface that no
 * longer exists, is the leftover of a crash between steps.  An entry on a
 * live interface may belong to an ADD still in progress, so it stays.
 */
static void gc_orphan_map_entries(struct gc_ctx *g)
{
	struct cw_endpoint_key key, next, *prev = NULL;
	struct cw_endpoint_info info;
	struct cw_dp *dp = NULL;
	char name[IF_NAMESIZE];

	if (cw_dp_open(g->p->conf->bpf_root, g->p->conf->state_dir, false, &dp))
		return;
	while (bpf_map_get_next_key(dp->map_endpoints, prev, &next) == 0) {
		struct ep_owner o = { .ip = next.ip4 };

		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(dp->map_endpoints, &key, &info))
			continue;
		/* a live interface keeps its entry: no need to read the state */
		if (if_indextoname(info.ifindex, name))
			continue;
		o.ifindex = (int)info.ifindex;
		cw_endpoint_foreach(g->p->conf->state_dir, find_owner, &o);
		if (o.owned)
			continue;
		if (cw_ep_delete(dp, key.ip4) == 0)
			pr_info("GC: removed orphan endpoint map entry (ifindex %u)", info.ifindex);
	}
	cw_dp_free(dp);
}

/* Every stale attachment, then IPAM, then orphan map entries; past errors. */
static int gc(struct gc_ctx *g)
{
	struct cw_plugin *p = g->p;
	struct cw_ipam *ipam = NULL;
	unsigned int released = 0;

	cw_endpoint_foreach(p->conf->state_dir, collect_stale, g);
	for (size_t i = 0; i < g->n_stale; i++) {
		struct cw_error e = { 0 };

		/* The IPAM plugin gets one GC below rather than a DEL each. */
		if (cw_teardown(p->conf, &p->args, g->stale[i].container_id, g->stale[i].ifname, false,
				false, &e) < 0) {
			pr_warn("GC: %s/%s: %s", g->stale[i].container_id, g->stale[i].ifname, e.msg);
			g->errors++;
			if (!p->err.code)
				p->err = e;
		} else {
			pr_info("GC: removed %s/%s", g->stale[i].container_id, g->stale[i].ifname);
		}
	}

	if (p->conf->has_ipam) {
		struct cw_error e = { 0 };

		if (cw_delegate_gc(p->conf, &p->args, g->stale, g->n_stale, &e) < 0) {
			g->errors++;
			if (!p->err.code)
				p->err = e;
		}
	} else if (cw_ipam_open(p->conf->state_dir, p->conf->name, NULL, CW_LOCK_TIMEOUT_MS, &ipam) == 0) {
		if (cw_ipam_gc(ipam, p->conf, &released))
			g->errors++;
		cw_ipam_close(ipam);
	}
	gc_orphan_map_entries(g);
	pr_info("GC: %zu attachment(s) and %u address(es) collected, %d error(s)", g->n_stale,
		released, g->errors);
	return g->errors ? -1 : 0;
}

int cw_cmd_gc(struct cw_plugin *p)
{
	struct gc_ctx *gp;
	int rc;

	if (!p->conf->has_valid)
		return cw_error_set(&p->err, CW_ERR_INVALID_CONFIG,
				    "GC needs \"cni.dev/valid-attachments\" in the config");
	/* ~1 MiB for 4096 stale attachments: on the heap, not the stack */
	gp = calloc(1, sizeof(*gp));
	if (!gp)
		return cw_error_set(&p->err, CW_ERR_IO, "GC: out of memory");
	gp->p = p;
	rc = gc(gp);
	free(gp);
	return rc;
}
