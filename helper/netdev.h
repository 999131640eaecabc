/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's kernel network state outside BPF: the collect-metadata VXLAN
 * device, and the routes of native routing (remote PodCIDR via the remote
 * node), all over libnl-route.  Routes the helper owns carry their own
 * protocol number, so a restarted helper finds and prunes exactly its own.
 */
#ifndef CW_HELPER_NETDEV_H
#define CW_HELPER_NETDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netlink/netlink.h>
#include <causeway/addr.h>

/* rtnetlink protocol of Causeway's routes (iproute2 shows "proto 193"). */
#define CW_RTPROT 193

/*
 * Creates (or adopts) the VXLAN device: external (collect metadata), UDP
 * @port, no learning, @mtu, up, no ARP (routes through it need no
 * neighbour: to_overlay sets where each packet goes).  *ifindex is its
 * index.
 */
int cw_vxlan_ensure(struct nl_sock *sk, const char *name, unsigned int port, unsigned int mtu,
		    int *ifindex);

/* The interface holding @ip, and its MTU. */
int cw_underlay_find(struct nl_sock *sk, struct in_addr ip, char name[16], int *ifindex,
		     unsigned int *mtu);
/* Whether @ip is on a subnet directly attached to @ifindex (same L2 segment). */
bool cw_onlink(struct nl_sock *sk, int ifindex, struct in_addr ip);

/*
 * A route the helper owns: @dst via gateway @via on @ifindex (native
 * routing), or, @via 0, straight out of @ifindex with source address @src
 * (the node's own traffic into the tunnel device).
 */
struct cw_route {
	struct cw_prefix4 dst;
	struct in_addr via;
	int ifindex;
	struct in_addr src;
};

/*
 * Make the CW_RTPROT routes of the main table @want: add or replace what
 * differs and, with @prune, delete the rest.  Counts changes.
 */
int cw_routes_sync(struct nl_sock *sk, const struct cw_route *want, size_t n, bool prune,
		   unsigned int *added, unsigned int *deleted);

#endif
