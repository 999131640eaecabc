// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/if.h>
#include <linux/rtnetlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/route.h>

#include <causeway/log.h>
#include <causeway/netlink.h>
#include "netdev.h"

int cw_vxlan_ensure(struct nl_sock *sk, const char *name, unsigned int port, unsigned int mtu,
		    int *ifindex)
{
	struct rtnl_link *link = NULL;
	int err;

	if (rtnl_link_get_kernel(sk, 0, name, &link) == 0) {
		const char *type = rtnl_link_get_type(link);
		bool ok = type && strcmp(type, "vxlan") == 0 &&
			  rtnl_link_vxlan_get_collect_metadata(link) == 1;

		*ifindex = rtnl_link_get_ifindex(link);
		rtnl_link_put(link);
		if (!ok) {
			pr_err("netdev: %s exists but is not a collect-metadata VXLAN device", name);
			return -EEXIST;
		}
		goto up;
	}
	link = rtnl_link_vxlan_alloc();
	if (!link)
		return -ENOMEM;
	rtnl_link_set_name(link, name);
	rtnl_link_set_mtu(link, mtu);
	rtnl_link_vxlan_set_collect_metadata(link, 1);
	rtnl_link_vxlan_set_port(link, port);
	rtnl_link_vxlan_set_learning(link, 0);
	err = cw_nl_errno(rtnl_link_add(sk, link, NLM_F_CREATE | NLM_F_EXCL));
	rtnl_link_put(link);
	if (err && err != -EEXIST) {
		pr_err("netdev: cannot create VXLAN device %s (port %u): %s", name, port,
		       strerror(-err));
		return err;
	}
	err = cw_link_ifindex(sk, name, ifindex);
	if (err)
		return err;
	pr_info("netdev: created %s (VXLAN, collect metadata, UDP %u, MTU %u)", name, port, mtu);
up:
	{
		struct rtnl_link *orig = rtnl_link_alloc(), *change = rtnl_link_alloc();

		err = -ENOMEM;
		if (orig && change) {
			rtnl_link_set_ifindex(orig, *ifindex);
			rtnl_link_set_flags(change, IFF_UP | IFF_NOARP);
			err = cw_nl_errno(rtnl_link_change(sk, orig, change, 0));
		}
		if (orig)
			rtnl_link_put(orig);
		if (change)
			rtnl_link_put(change);
	}
	return err;
}

struct find_ctx {
	struct in_addr ip;
	int ifindex;
	bool onlink;
	int want_ifindex;
};

static void match_addr(struct nl_object *obj, void *arg)
{
	struct rtnl_addr *a = (struct rtnl_addr *)obj;
	struct find_ctx *f = arg;
	struct nl_addr *local = rtnl_addr_get_local(a);
	struct in_addr addr;
	uint8_t len;
	uint32_t mask;

	if (!local || rtnl_addr_get_family(a) != AF_INET)
		return;
	memcpy(&addr, nl_addr_get_binary_addr(local), 4);
	len = (uint8_t)rtnl_addr_get_prefixlen(a);
	if (f->want_ifindex) {
		if (rtnl_addr_get_ifindex(a) != f->want_ifindex || len == 0 || len >= 32)
			return;
		mask = htonl(~0u << (32 - len));
		if ((addr.s_addr & mask) == (f->ip.s_addr & mask))
			f->onlink = true;
	} else if (addr.s_addr == f->ip.s_addr) {
		f->ifindex = rtnl_addr_get_ifindex(a);
	}
}

static int scan_addrs(struct nl_sock *sk, struct find_ctx *f)
{
	struct nl_cache *cache = NULL;
	int err = cw_nl_errno(rtnl_addr_alloc_cache(sk, &cache));

	if (err)
		return err;
	nl_cache_foreach(cache, match_addr, f);
	nl_cache_free(cache);
	return 0;
}

int cw_underlay_find(struct nl_sock *sk, struct in_addr ip, char name[16], int *ifindex,
		     unsigned int *mtu)
{
	struct find_ctx f = { .ip = ip };
	struct rtnl_link *link = NULL;
	int err = scan_addrs(sk, &f);

	if (err)
		return err;
	if (!f.ifindex)
		return -EADDRNOTAVAIL;
	err = cw_nl_errno(rtnl_link_get_kernel(sk, f.ifindex, NULL, &link));
	if (err)
		return err;
	snprintf(name, 16, "%s", rtnl_link_get_name(link));
	*mtu = rtnl_link_get_mtu(link);
	*ifindex = f.ifindex;
	rtnl_link_put(link);
	return 0;
}

bool cw_onlink(struct nl_sock *sk, int ifindex, struct in_addr ip)
{
	struct find_ctx f = { .ip = ip, .want_ifindex = ifindex };

	return scan_addrs(sk, &f) == 0 && f.onlink;
}

static struct nl_addr *ip4(struct in_addr a, uint8_t len)
{
	struct nl_addr *n = nl_addr_build(AF_INET, &a, 4);

	if (n)
		nl_addr_set_prefixlen(n, len);
	return n;
}

static int route_op(struct nl_sock *sk, const struct cw_route *r, bool add)
{
	struct rtnl_route *rt = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	struct nl_addr *d = ip4(r->dst.addr, r->dst.len), *g = ip4(r->via, 32);
	struct nl_addr *s = ip4(r->src, 32);
	int err = -ENOMEM;

	if (!rt || !nh || !d || !g || !s)
		goto cleanup;
	rtnl_route_set_family(rt, AF_INET);
	rtnl_route_set_table(rt, RT_TABLE_MAIN);
	rtnl_route_set_protocol(rt, CW_RTPROT);
	rtnl_route_set_scope(rt, r->via.s_addr ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
	rtnl_route_set_dst(rt, d);
	if (add) {
		rtnl_route_nh_set_ifindex(nh, r->ifindex);
		if (r->via.s_addr)
			rtnl_route_nh_set_gateway(nh, g);
		if (r->src.s_addr)
			rtnl_route_set_pref_src(rt, s);
		rtnl_route_add_nexthop(rt, nh);
		nh = NULL;
		/* replace: a route to this PodCIDR moves with its node */
		err = cw_nl_errno(rtnl_route_add(sk, rt, NLM_F_CREATE | NLM_F_REPLACE));
	} else {
		err = cw_nl_errno(rtnl_route_delete(sk, rt, 0));
		if (err == -ENODEV || err == -ESRCH)
			err = 0;
	}
cleanup:
	if (nh)
		rtnl_route_nh_free(nh);
	if (rt)
		rtnl_route_put(rt);
	nl_addr_put(d);
	nl_addr_put(g);
	nl_addr_put(s);
	return err;
}

struct have {
	struct cw_route *r;
	size_t n, cap;
	int err;
};

static void collect_route(struct nl_object *obj, void *arg)
{
	struct rtnl_route *rt = (struct rtnl_route *)obj;
	struct have *h = arg;
	struct nl_addr *dst = rtnl_route_get_dst(rt);
	struct rtnl_nexthop *nh;
	struct nl_addr *gw, *src = rtnl_route_get_pref_src(rt);
	struct cw_route r = { 0 };

	if (rtnl_route_get_protocol(rt) != CW_RTPROT || rtnl_route_get_family(rt) != AF_INET ||
	    rtnl_route_get_table(rt) != RT_TABLE_MAIN || !dst)
		return;
	memcpy(&r.dst.addr, nl_addr_get_binary_addr(dst), 4);
	r.dst.len = (uint8_t)nl_addr_get_prefixlen(dst);
	nh = rtnl_route_nexthop_n(rt, 0);
	gw = nh ? rtnl_route_nh_get_gateway(nh) : NULL;
	if (gw)
		memcpy(&r.via, nl_addr_get_binary_addr(gw), 4);
	if (nh)
		r.ifindex = rtnl_route_nh_get_ifindex(nh);
	if (src)
		memcpy(&r.src, nl_addr_get_binary_addr(src), 4);
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		struct cw_route *nr = realloc(h->r, cap * sizeof(*nr));

		if (!nr) {
			h->err = -ENOMEM;
			return;
		}
		h->r = nr;
		h->cap = cap;
	}
	h->r[h->n++] = r;
}

int cw_routes_sync(struct nl_sock *sk, const struct cw_route *want, size_t n, bool prune,
		   unsigned int *added, unsigned int *deleted)
{
	struct nl_cache *cache = NULL;
	struct have h = { 0 };
	int err = cw_nl_errno(rtnl_route_alloc_cache(sk, AF_INET, 0, &cache)), first = 0;

	*added = *deleted = 0;
	if (err)
		return err;
	nl_cache_foreach(cache, collect_route, &h);
	nl_cache_free(cache);
	if (h.err) {
		free(h.r);
		return h.err;
	}
	for (size_t i = 0; i < n; i++) {
		bool present = false;

		for (size_t j = 0; j < h.n; j++)
			if (h.r[j].dst.addr.s_addr == want[i].dst.addr.s_addr &&
			    h.r[j].dst.len == want[i].dst.len && h.r[j].via.s_addr == want[i].via.s_addr &&
			    h.r[j].ifindex == want[i].ifindex && h.r[j].src.s_addr == want[i].src.s_addr)
				present = true;
		if (present)
			continue;
		err = route_op(sk, &want[i], true);
		if (err && !first)
			first = err;
		else if (!err)
			(*added)++;
	}
	for (size_t j = 0; prune && j < h.n; j++) {
		bool wanted = false;

		for (size_t i = 0; i < n; i++)
			if (h.r[j].dst.addr.s_addr == want[i].dst.addr.s_addr &&
			    h.r[j].dst.len == want[i].dst.len)
				wanted = true;
		if (wanted)
			continue;
		err = route_op(sk, &h.r[j], false);
		if (err && !first)
			first = err;
		else if (!err)
			(*deleted)++;
	}
	free(h.r);
	return first;
}
