/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CW_BPF_ETH_H
#define CW_BPF_ETH_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

static __always_inline void cw_mac_copy(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, ETH_ALEN);
}

/*
 * Give the frame new MAC addresses in place (no bpf_skb_store_bytes() call,
 * see cw_ipv4_dec_ttl()).  Packet pointers stay valid.  -1: no Ethernet
 * header in the linear data, which the callers have already ruled out.
 */
static __always_inline int cw_eth_set_macs(struct __sk_buff *skb, const __u8 *dst,
					   const __u8 *src)
{
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = (void *)(long)skb->data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	cw_mac_copy(eth->h_dest, dst);
	cw_mac_copy(eth->h_source, src);
	return 0;
}

#endif
