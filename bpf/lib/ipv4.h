/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CW_BPF_IPV4_H
#define CW_BPF_IPV4_H

#include <linux/ip.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define CW_IP_OFF   ETH_HLEN
#define CW_TTL_OFF  (CW_IP_OFF + __builtin_offsetof(struct iphdr, ttl))
#define CW_CSUM_OFF (CW_IP_OFF + __builtin_offsetof(struct iphdr, check))

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

#endif
