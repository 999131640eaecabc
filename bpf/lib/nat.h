/* SPDX-License-Identifier: Apache-2.0 */
/* Rewriting an IPv4 TCP/UDP packet's address and port, checksums included. */
#ifndef CW_BPF_NAT_H
#define CW_BPF_NAT_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include "ipv4.h"

/* Offset of the L4 header of the IPv4 packet @ip (after Ethernet). */
static __always_inline __u32 cw_ipv4_l4_off(const struct iphdr *ip)
{
	return CW_IP_OFF + ((__u32)ip->ihl << 2);
}

/*
 * Replace the source (@src) or the destination address and port of a TCP
 * or UDP packet whose L4 header starts at @l4.  The IPv4 header checksum
 * covers the address; the L4 checksum covers the port and, through the
 * pseudo-header (RFC 793 section 3.1, RFC 768), the address too, hence
 * BPF_F_PSEUDO_HDR, which also keeps a CHECKSUM_PARTIAL packet's
 * pseudo-header sum and a CHECKSUM_COMPLETE skb->csum right.  A UDP
 * checksum of zero means "none" (RFC 768) and stays zero; a computed zero
 * is sent as 0xffff (BPF_F_MARK_MANGLED_0).  Returns -1 when the packet
 * is too short for a field.
 */
static __always_inline int cw_ipv4_nat(struct __sk_buff *skb, __u32 l4, __u8 proto, bool src,
				       __be32 old_addr, __be32 new_addr, __be16 old_port,
				       __be16 new_port)
{
	__u32 addr_off = CW_IP_OFF + (src ? __builtin_offsetof(struct iphdr, saddr)
					  : __builtin_offsetof(struct iphdr, daddr));
	__u32 port_off = l4 + (src ? __builtin_offsetof(struct tcphdr, source)
				   : __builtin_offsetof(struct tcphdr, dest));
	__u32 csum_off, l4_flags;

	if (proto == IPPROTO_TCP) {
		csum_off = l4 + __builtin_offsetof(struct tcphdr, check);
		l4_flags = 0;
	} else {
		csum_off = l4 + __builtin_offsetof(struct udphdr, check);
		l4_flags = BPF_F_MARK_MANGLED_0;
	}

	if (old_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
					l4_flags | BPF_F_PSEUDO_HDR | sizeof(new_addr)) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, CW_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) < 0)
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port,
					l4_flags | sizeof(new_port)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -1;
	}
	return 0;
}

#endif
