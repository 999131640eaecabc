/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cross-node delivery in VXLAN: which node a destination lives behind, and
 * two ways of encapsulating for it, with the same packet on the wire (RFC
 * 7348 on UDP 8472, the sender's identity as the VNI, outer TTL 64, no UDP
 * checksum):
 *
 *   cw_tunnel_encap_redirect: from_container writes the outer headers itself
 *       and sends the packet out of the underlay device, found by the FIB,
 *       as Cilium's BPF host routing does for native traffic.  The node's IP
 *       stack never sees the packet, so neither the VXLAN device's route
 *       lookup nor the netfilter hooks of a locally sent UDP packet run; in
 *       the lab it carries 1.05-1.13x the throughput of the device path
 *       below (test/bench/cross_node.py, causeway/stack).
 *   cw_tunnel_set_key + redirect to the collect-metadata device: the device
 *       builds the headers from the key and sends them through the stack.
 *       The fallback whenever the first cannot take a packet (no underlay
 *       in the config, a packet the underlay's MTU cannot carry as it is and
 *       which the stack must fragment, a GSO type the encapsulation helper
 *       refuses, no route), and the path of the node's own traffic.
 *
 * Either way the receiving node's collect-metadata device decapsulates, and
 * from_overlay reads the VNI from its tunnel metadata.
 */
#ifndef CW_BPF_TUNNEL_H
#define CW_BPF_TUNNEL_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "metrics.h"
#include "ipv4.h"
#include "fib.h"

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

/*
 * The outer UDP source port: a hash of the inner flow spread over the
 * kernel's default ephemeral range, as the VXLAN device picks it
 * (udp_flow_src_port), so the underlay's ECMP and the receiver's RSS
 * spread flows and keep each one in order.
 */
#define CW_VXLAN_SPORT_MIN 32768
#define CW_VXLAN_SPORT_MAX 60999

/* bpf_skb_adjust_room() flags: room for IPv4 + UDP + VXLAN + Ethernet after
 * the MAC header, the skb marked as a UDP tunnel of Ethernet frames (its GSO
 * type, inner header offsets and inner protocol, which segmentation and
 * checksum offload on the way out rely on), the segment size kept: the
 * pod's MTU already leaves room for the outer headers. */
#define CW_VXLAN_ENCAP_FLAGS (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | \
			      BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN) | \
			      BPF_F_ADJ_ROOM_FIXED_GSO)

struct cw_vxlan_hdrs {
	struct iphdr ip;
	struct udphdr udp;
	__be32 vx_flags;
	__be32 vx_vni;
};

/* ECN of the outer header from the inner one, RFC 6040's normal mode as
 * the kernel's tunnels do it (INET_ECN_encapsulate): CE becomes ECT(0). */
static __always_inline __u8 cw_ecn_encap(__u8 inner_tos)
{
	__u8 ecn = inner_tos & 3;

	return ecn == 3 ? 2 : ecn;
}

/*
 * Encapsulate @skb (a pod's IPv4 frame, TTL already taken down) for the
 * node @remote, VNI @identity, and redirect it out of the interface the
 * FIB gives for @remote, from the config's underlay: the verdict, or -1
 * (nothing changed) when the packet must take the VXLAN device instead.
 *
 * The MTU is checked before anything is written: a packet the underlay
 * cannot carry with 50 more bytes goes to the device, whose stack path
 * fragments the outer packet as the kernel's VXLAN always has.  A GSO
 * packet is not checked, as the stack does not check one either: its
 * segments were cut to the pod's MTU, which leaves the room.
 */
static __always_inline int cw_tunnel_encap_redirect(struct __sk_buff *skb,
						    const struct cw_config *cfg,
						    __be32 remote, __u32 identity)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct bpf_fib_lookup p = {};
	struct cw_vxlan_hdrs h = {};
	struct cw_vxlan_hdrs *out;
	struct ethhdr *eth, *inner;
	__u32 hash, len;
	long rc;

	if (!cfg->underlay_ifindex || (void *)(ip + 1) > data_end)
		return -1;
	len = skb->len - ETH_HLEN + CW_VXLAN_OVERHEAD; /* the outer IPv4 total length */
	if (len > 0xffff)
		return -1; /* a BIG TCP superpacket: no tot_len to write */

	p.family = CW_AF_INET;
	p.l4_protocol = IPPROTO_UDP;
	p.tot_len = skb->gso_size ? 0 : (__u16)len;
	p.ipv4_src = cfg->node_ip;
	p.ipv4_dst = remote;
	p.ifindex = cfg->underlay_ifindex;
	rc = bpf_fib_lookup(skb, &p, sizeof(p), BPF_FIB_LOOKUP_OUTPUT);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	if (p.ifindex == cfg->vxlan_ifindex)
		return -1;

	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.tos = cw_ecn_encap(ip->tos);
	h.ip.tot_len = bpf_htons((__u16)len);
	h.ip.id = (__be16)bpf_get_prandom_u32(); /* DF clear, as the device sends */
	h.ip.ttl = CW_TUNNEL_TTL;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.saddr = cfg->node_ip;
	h.ip.daddr = remote;
	h.ip.check = cw_ipv4_csum(&h.ip);
	hash = bpf_get_hash_recalc(skb);
	h.udp.source = bpf_htons((__u16)((((__u64)hash * (CW_VXLAN_SPORT_MAX - CW_VXLAN_SPORT_MIN)) >> 32) +
					 CW_VXLAN_SPORT_MIN));
	h.udp.dest = bpf_htons(CW_VXLAN_PORT);
	h.udp.len = bpf_htons((__u16)(len - sizeof(struct iphdr)));
	h.vx_flags = bpf_htonl(0x08000000); /* I: the VNI is valid */
	h.vx_vni = bpf_htonl(identity << 8);

	/* Refused (a GSO type it cannot mark, an skb already encapsulated, no
	 * memory): the skb is as it was, and the device can still take it. */
	if (bpf_skb_adjust_room(skb, CW_VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC, CW_VXLAN_ENCAP_FLAGS))
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	out = data + ETH_HLEN;
	inner = (void *)(out + 1);
	if ((void *)(inner + 1) > data_end) /* the helper made the room: cannot happen */
		return cw_drop(skb, -CW_DROP_TUNNEL_FAILED, CW_DIR_EGRESS);
	/* The pod's frame header goes inside as it was, as the device would
	 * carry it; the receiving from_overlay rewrites it for its pod. */
	__builtin_memcpy(inner, eth, sizeof(*inner));
	*out = h;
	return cw_fib_send(skb, &p, rc);
}

#endif
