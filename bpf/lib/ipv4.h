/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CW_BPF_IPV4_H
#define CW_BPF_IPV4_H

#include <linux/ip.h>
#include <linux/in.h>
#include <causeway/datapath.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define CW_IP_OFF   ETH_HLEN
#define CW_TTL_OFF  (CW_IP_OFF + __builtin_offsetof(struct iphdr, ttl))
#define CW_CSUM_OFF (CW_IP_OFF + __builtin_offsetof(struct iphdr, check))
#define CW_IP_MF    0x2000 /* frag_off: more fragments follow */

/*
 * Decrement the TTL as a router would (the pod's next hop is the node) and
 * fix the header checksum incrementally (RFC 1624).  TTL shares a 16-bit
 * word with the protocol byte, so the checksum update covers that word.
 */
static __always_inline int cw_ipv4_dec_ttl(struct __sk_buff *skb, struct iphdr *ip)
{
	__u8 ttl = ip->ttl;
	__be16 old_word = bpf_htons((__u16)ttl << 8 | ip->protocol);
	__be16 new_word = bpf_htons((__u16)(ttl - 1) << 8 | ip->protocol);
	__u8 new_ttl = ttl - 1;

	if (bpf_l3_csum_replace(skb, CW_CSUM_OFF, old_word, new_word, 2) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, CW_TTL_OFF, &new_ttl, 1, 0) < 0)
		return -1;
	return 0;
}

/*
 * The flow tuple of an IPv4 packet.  Ports are read for TCP and UDP first
 * fragments; other packets get ports 0.  Returns -1 if the L4 header is cut.
 */
static __always_inline int cw_ipv4_tuple(struct __sk_buff *skb, const struct iphdr *ip,
					 struct cw_flow_key *t)
{
	__u32 l4 = CW_IP_OFF + ((__u32)ip->ihl << 2);
	__be16 ports[2];

	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	t->sport = 0;
	t->dport = 0;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	if (ip->frag_off & bpf_htons(0x1fff)) /* not the first fragment */
		return 0;
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
		return -1;
	t->sport = ports[0];
	t->dport = ports[1];
	return 0;
}

#endif
