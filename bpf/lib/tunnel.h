/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cross-node delivery over the node's collect-metadata VXLAN device: which
 * node a destination lives behind, and the encapsulation key for it.  The
 * device builds the outer headers from the key, so the programs never touch
 * an outer header themselves.
 */
#ifndef CW_BPF_TUNNEL_H
#define CW_BPF_TUNNEL_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"

/* Outer TTL: the underlay is routed, so not 1, and the inner TTL is kept. */
#define CW_TUNNEL_TTL 64

static __always_inline const struct cw_config *cw_node_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cw_config, &zero);
}

/*
 * The node behind @daddr, or 0 when the host stack routes it (native
 * routing, or an address outside the mesh).  The pod's own ipcache record
 * wins over its PodCIDR's tunnel route, which covers pods whose record has
 * not arrived yet; an ipcache entry without a tunnel endpoint does not stop
 * that fallback.  *@ipcp (when @ipcp is given) gets @daddr's ipcache entry
 * (NULL: none), for a caller that needs it too, without a second lookup.
 */
static __always_inline __be32 cw_tunnel_endpoint(__be32 daddr,
						 const struct cw_ipcache_info **ipcp)
{
	struct cw_lpm_key key = { .prefixlen = 32, .ip4 = daddr };
	const struct cw_ipcache_info *ipc;
	const struct cw_tunnel_info *tun;

	ipc = bpf_map_lookup_elem(&cw_ipcache, &key);
	if (ipcp)
		*ipcp = ipc;
	if (ipc && ipc->tunnel_ip)
		return ipc->tunnel_ip;
	tun = bpf_map_lookup_elem(&cw_tunnel, &key);
	return tun ? tun->node_ip : 0;
}

/*
 * Attach the encapsulation key for the VXLAN device.  The VNI carries the
 * source's security identity (the receiver's policy input), which is why
 * identities are allocated below 2^24: the device keeps only the low 24
 * bits of tunnel_id.  @local 0 lets the device pick the outer source by
 * route.  The outer UDP checksum is left zero (RFC 7348 section 5 allows it
 * over IPv4); the inner packet keeps its own checksums.
 */
static __always_inline int cw_tunnel_set_key(struct __sk_buff *skb, __be32 remote, __be32 local,
					     __u32 identity)
{
	struct bpf_tunnel_key key = {};

	key.tunnel_id = identity;
	key.remote_ipv4 = bpf_ntohl(remote);
	key.local_ipv4 = bpf_ntohl(local);
	key.tunnel_ttl = CW_TUNNEL_TTL;
	return (int)bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

#endif
