// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <linux/if.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>

#include <causeway/log.h>
#include <causeway/netlink.h>

int cw_nl_errno(int nlerr)
{
	switch (nlerr < 0 ? -nlerr : nlerr) {
	case 0: return 0;
	case NLE_EXIST: return -EEXIST;
	case NLE_NOMEM: return -ENOMEM;
	case NLE_OBJ_NOTFOUND:
	case NLE_NODEV: return -ENODEV;
	case NLE_PERM: return -EPERM;
	case NLE_BUSY: return -EBUSY;
	case NLE_RANGE: return -ERANGE;
	case NLE_INVAL: return -EINVAL;
	case NLE_AGAIN: return -EAGAIN;
	case NLE_OPNOTSUPP: return -EOPNOTSUPP;
	case NLE_NOADDR: return -EADDRNOTAVAIL;
	default: return -EIO;
	}
}

int cw_nl_open(struct nl_sock **out)
{
	struct nl_sock *sk = nl_socket_alloc();
	int err;

	if (!sk)
		return -ENOMEM;
	err = nl_connect(sk, NETLINK_ROUTE);
	if (err) {
		nl_socket_free(sk);
		return cw_nl_errno(err);
	}
	*out = sk;
	return 0;
}

void cw_nl_close(struct nl_sock *sk)
{
	if (sk)
		nl_socket_free(sk);
}

int cw_netns_open(const char *path, int *fd)
{
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	return *fd < 0 ? -errno : 0;
}

int cw_netns_enter(int fd)
{
	return setns(fd, CLONE_NEWNET) < 0 ? -errno : 0;
}

static struct nl_addr *mac_addr(const uint8_t mac[6])
{
	return nl_addr_build(AF_LLC, mac, 6);
}

static struct nl_addr *ip4_addr(struct in_addr a, uint8_t prefixlen)
{
	struct nl_addr *n = nl_addr_build(AF_INET, &a, sizeof(a));

	if (n)
		nl_addr_set_prefixlen(n, prefixlen);
	return n;
}

int cw_veth_create(struct nl_sock *sk, const char *host_name, const uint8_t host_mac[6],
		   const char *peer_name, const uint8_t peer_mac[6], int peer_netns_fd,
		   unsigned int mtu)
{
	struct rtnl_link *link = NULL, *peer = NULL;
	struct nl_addr *hmac = NULL, *pmac = NULL;
	int err = -ENOMEM;

	link = rtnl_link_veth_alloc();
	hmac = mac_addr(host_mac);
	pmac = mac_addr(peer_mac);
	if (!link || !hmac || !pmac)
		goto cleanup;
	peer = rtnl_link_veth_get_peer(link);
	rtnl_link_set_name(link, host_name);
	rtnl_link_set_addr(link, hmac);
	rtnl_link_set_mtu(link, mtu);
	/*
	 * The peer is created directly inside the pod's namespace under its
	 * final name: no temporary name, no rename, nothing visible in the
	 * host namespace to collide with or leak.
	 */
	rtnl_link_set_name(peer, peer_name);
	rtnl_link_set_addr(peer, pmac);
	rtnl_link_set_mtu(peer, mtu);
	rtnl_link_set_ns_fd(peer, peer_netns_fd);
	err = cw_nl_errno(rtnl_link_add(sk, link, NLM_F_CREATE | NLM_F_EXCL));
cleanup:
	if (peer)
		rtnl_link_put(peer);
	if (link)
		rtnl_link_veth_release(link);
	nl_addr_put(hmac);
	nl_addr_put(pmac);
	return err;
}

int cw_link_get(struct nl_sock *sk, const char *name, int *ifindex, uint8_t mac[6],
		unsigned int *mtu, bool *up)
{
	struct rtnl_link *link = NULL;
	struct nl_addr *a;
	int err;

	err = cw_nl_errno(rtnl_link_get_kernel(sk, 0, name, &link));
	if (err)
		return err;
	if (ifindex)
		*ifindex = rtnl_link_get_ifindex(link);
	if (mac) {
		a = rtnl_link_get_addr(link);
		if (a && nl_addr_get_len(a) == 6)
			memcpy(mac, nl_addr_get_binary_addr(a), 6);
		else
			memset(mac, 0, 6);
	}
	if (mtu)
		*mtu = rtnl_link_get_mtu(link);
	if (up)
		*up = (rtnl_link_get_flags(link) & IFF_UP) != 0;
	rtnl_link_put(link);
	return 0;
}

int cw_link_ifindex(struct nl_sock *sk, const char *name, int *ifindex)
{
	return cw_link_get(sk, name, ifindex, NULL, NULL, NULL);
}

static int link_set_up_down(struct nl_sock *sk, int ifindex, bool up)
{
	struct rtnl_link *orig = rtnl_link_alloc(), *change = rtnl_link_alloc();
	int err = -ENOMEM;

	if (!orig || !change)
		goto cleanup;
	rtnl_link_set_ifindex(orig, ifindex);
	if (up)
		rtnl_link_set_flags(change, IFF_UP);
	else
		rtnl_link_unset_flags(change, IFF_UP);
	err = cw_nl_errno(rtnl_link_change(sk, orig, change, 0));
cleanup:
	if (orig)
		rtnl_link_put(orig);
	if (change)
		rtnl_link_put(change);
	return err;
}

int cw_link_set_up(struct nl_sock *sk, int ifindex)
{
	return link_set_up_down(sk, ifindex, true);
}

int cw_link_set_down(struct nl_sock *sk, int ifindex)
{
	return link_set_up_down(sk, ifindex, false);
}

int cw_link_del(struct nl_sock *sk, const char *name)
{
	struct rtnl_link *link = rtnl_link_alloc();
	int err;

	if (!link)
		return -ENOMEM;
	rtnl_link_set_name(link, name);
	err = cw_nl_errno(rtnl_link_delete(sk, link));
	rtnl_link_put(link);
	return err == -ENODEV ? 0 : err;
}

int cw_link_del_ifindex(struct nl_sock *sk, int ifindex)
{
	struct rtnl_link *link = rtnl_link_alloc();
	int err;

	if (!link)
		return -ENOMEM;
	rtnl_link_set_ifindex(link, ifindex);
	err = cw_nl_errno(rtnl_link_delete(sk, link));
	rtnl_link_put(link);
	return err == -ENODEV ? 0 : err;
}

int cw_link_del_ifindex_detached(int ifindex)
{
	struct nl_sock *sk = NULL;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid > 0)
		return 0; /* not waited for: reparented to init (or the runtime's
			   * subreaper) when the plugin exits, which reaps it */
	/*
	 * Drop stdio first: the runtime reads our stdout to EOF, and must not
	 * wait for this child's 15-30 ms in the kernel.
	 */
	for (int fd = 0; fd < 3; fd++)
		close(fd);
	setsid();
	if (cw_nl_open(&sk) == 0)
		cw_link_del_ifindex(sk, ifindex);
	_exit(0);
}

int cw_addr4_add(struct nl_sock *sk, int ifindex, struct in_addr addr, uint8_t prefixlen)
{
	struct rtnl_addr *a = rtnl_addr_alloc();
	struct nl_addr *local = ip4_addr(addr, prefixlen);
	int err = -ENOMEM;

	if (!a || !local)
		goto cleanup;
	rtnl_addr_set_ifindex(a, ifindex);
	rtnl_addr_set_family(a, AF_INET);
	rtnl_addr_set_local(a, local);
	rtnl_addr_set_prefixlen(a, prefixlen);
	err = cw_nl_errno(rtnl_addr_add(sk, a, 0));
cleanup:
	if (a)
		rtnl_addr_put(a);
	nl_addr_put(local);
	return err;
}

struct addr_match {
	int ifindex;
	struct in_addr addr;
	uint8_t prefixlen;
	bool found;
};

static void match_addr(struct nl_object *obj, void *arg)
{
	struct rtnl_addr *a = (struct rtnl_addr *)obj;
	struct addr_match *m = arg;
	struct nl_addr *local = rtnl_addr_get_local(a);

	if (rtnl_addr_get_ifindex(a) != m->ifindex || rtnl_addr_get_family(a) != AF_INET ||
	    !local || rtnl_addr_get_prefixlen(a) != m->prefixlen)
		return;
	if (memcmp(nl_addr_get_binary_addr(local), &m->addr, 4) == 0)
		m->found = true;
}

bool cw_addr4_present(struct nl_sock *sk, int ifindex, struct in_addr addr, uint8_t prefixlen)
{
	struct addr_match m = { .ifindex = ifindex, .addr = addr, .prefixlen = prefixlen };
	struct nl_cache *cache = NULL;

	if (rtnl_addr_alloc_cache(sk, &cache))
		return false;
	nl_cache_foreach(cache, match_addr, &m);
	nl_cache_free(cache);
	return m.found;
}

int cw_route4_add(struct nl_sock *sk, int ifindex, struct in_addr dst, uint8_t dst_len,
		  struct in_addr gw)
{
	struct rtnl_route *r = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	struct nl_addr *d = ip4_addr(dst, dst_len), *g = NULL;
	int err = -ENOMEM;

	if (!r || !nh || !d)
		goto cleanup;
	rtnl_route_set_family(r, AF_INET);
	rtnl_route_set_table(r, RT_TABLE_MAIN);
	rtnl_route_set_protocol(r, RTPROT_BOOT);
	rtnl_route_set_dst(r, d);
	rtnl_route_nh_set_ifindex(nh, ifindex);
	if (gw.s_addr) {
		g = ip4_addr(gw, 32);
		if (!g)
			goto cleanup;
		rtnl_route_nh_set_gateway(nh, g);
		rtnl_route_set_scope(r, RT_SCOPE_UNIVERSE);
	} else {
		rtnl_route_set_scope(r, RT_SCOPE_LINK);
	}
	rtnl_route_add_nexthop(r, nh);
	nh = NULL; /* owned by the route now */
	err = cw_nl_errno(rtnl_route_add(sk, r, NLM_F_EXCL));
cleanup:
	if (nh)
		rtnl_route_nh_free(nh);
	if (r)
		rtnl_route_put(r);
	nl_addr_put(d);
	nl_addr_put(g);
	return err;
}

struct route_match {
	int ifindex;
	struct in_addr dst, gw;
	uint8_t dst_len;
	bool found;
};

static void match_route(struct nl_object *obj, void *arg)
{
	struct rtnl_route *r = (struct rtnl_route *)obj;
	struct route_match *m = arg;
	struct nl_addr *d = rtnl_route_get_dst(r), *g;
	struct rtnl_nexthop *nh;
	struct in_addr zero = { 0 };

	if (rtnl_route_get_table(r) != RT_TABLE_MAIN || rtnl_route_get_nnexthops(r) != 1)
		return;
	if (!d || nl_addr_get_prefixlen(d) != m->dst_len)
		return;
	/* libnl reports the default route's dst as a zero-length address. */
	if (memcmp(nl_addr_get_len(d) ? nl_addr_get_binary_addr(d) : &zero, &m->dst, 4) != 0)
		return;
	nh = rtnl_route_nexthop_n(r, 0);
	if (rtnl_route_nh_get_ifindex(nh) != m->ifindex)
		return;
	g = rtnl_route_nh_get_gateway(nh);
	if (m->gw.s_addr == 0 ? g != NULL :
	    !g || memcmp(nl_addr_get_binary_addr(g), &m->gw, 4) != 0)
		return;
	m->found = true;
}

bool cw_route4_present(struct nl_sock *sk, int ifindex, struct in_addr dst, uint8_t dst_len,
		       struct in_addr gw)
{
	struct route_match m = { .ifindex = ifindex, .dst = dst, .gw = gw, .dst_len = dst_len };
	struct nl_cache *cache = NULL;

	if (rtnl_route_alloc_cache(sk, AF_INET, 0, &cache))
		return false;
	nl_cache_foreach(cache, match_route, &m);
	nl_cache_free(cache);
	return m.found;
}

int cw_neigh4_add(struct nl_sock *sk, int ifindex, struct in_addr ip, const uint8_t mac[6])
{
	struct rtnl_neigh *n = rtnl_neigh_alloc();
	struct nl_addr *dst = ip4_addr(ip, 32), *ll = mac_addr(mac);
	int err = -ENOMEM;

	if (!n || !dst || !ll)
		goto cleanup;
	rtnl_neigh_set_ifindex(n, ifindex);
	rtnl_neigh_set_family(n, AF_INET);
	rtnl_neigh_set_dst(n, dst);
	rtnl_neigh_set_lladdr(n, ll);
	rtnl_neigh_set_state(n, NUD_PERMANENT);
	err = cw_nl_errno(rtnl_neigh_add(sk, n, NLM_F_CREATE | NLM_F_REPLACE));
cleanup:
	if (n)
		rtnl_neigh_put(n);
	nl_addr_put(dst);
	nl_addr_put(ll);
	return err;
}

bool cw_neigh4_present(struct nl_sock *sk, int ifindex, struct in_addr ip, const uint8_t mac[6])
{
	struct nl_cache *cache = NULL;
	struct nl_addr *dst = ip4_addr(ip, 32);
	struct rtnl_neigh *n;
	struct nl_addr *ll;
	bool found = false;

	if (!dst || rtnl_neigh_alloc_cache(sk, &cache))
		goto cleanup;
	n = rtnl_neigh_get(cache, ifindex, dst);
	if (n) {
		ll = rtnl_neigh_get_lladdr(n);
		found = ll && nl_addr_get_len(ll) == 6 &&
			memcmp(nl_addr_get_binary_addr(ll), mac, 6) == 0 &&
			(rtnl_neigh_get_state(n) & NUD_PERMANENT);
		rtnl_neigh_put(n);
	}
cleanup:
	if (cache)
		nl_cache_free(cache);
	nl_addr_put(dst);
	return found;
}
