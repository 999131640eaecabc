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
#define CW_CSUM_OFF (CW_IP_OFF + __builtin_offsetof(struct iphdr, check))
#define CW_IP_MF    0x2000 /* frag_off: more fragments follow */

/*
 * Decrement the TTL as a router would (the pod's next hop is the node) and
 * fix the header checksum incrementally (RFC 1624): the 16-bit word TTL
 * shares with the protocol byte goes down by 0x0100, so the checksum goes
 * up by as much, with the end-around carry (the kernel's ip_decrease_ttl()
 * does the same).  Written in place, not by bpf_l3_csum_replace() and
 * bpf_skb_store_bytes(): two helper calls cost more per packet than the
 * rest of a forwarding decision.  @ip must be a checked packet pointer;
 * the verifier makes the header writable (unclones it) on entry to any
 * program that writes the packet directly.
 */
static __always_inline void cw_ipv4_dec_ttl(struct iphdr *ip)
{
	__u32 check = (__u32)ip->check + (__u32)bpf_htons(0x0100);

	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

/* The header checksum of a 20-byte IPv4 header (RFC 1071), its check field 0. */
static __always_inline __sum16 cw_ipv4_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/*
 * Read @len bytes at @off: in place when the linear data holds them (the
 * usual case: every header Causeway reads is there in a packet the stack
 * built), by bpf_skb_load_bytes() otherwise.  -1 when the packet is
 * shorter.
 */
static __always_inline int cw_load(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* The bound gives the verifier a range for the variable offset. */
	if (off <= 128 && data + off + len <= data_end) {
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len) < 0 ? -1 : 0;
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
	if (cw_load(skb, l4, ports, sizeof(ports)) < 0)
		return -1;
	t->sport = ports[0];
	t->dport = ports[1];
	return 0;
}

#endif
