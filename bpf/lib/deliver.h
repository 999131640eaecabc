/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hand a packet straight to a local endpoint's host veth: TTL down by one,
 * MACs rewritten to what the pod expects from its gateway, the redirect
 * mark set so to_container can tell it from a flow the host stack
 * forwarded.  Shared by from_container (pod to pod) and from_overlay
 * (remote pod to local pod).
 */
#ifndef CW_BPF_DELIVER_H
#define CW_BPF_DELIVER_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <causeway/datapath.h>

#include "eth.h"
#include "ipv4.h"
#include "metrics.h"

static __always_inline int cw_deliver_local(struct __sk_buff *skb, struct iphdr *ip,
					    const struct cw_endpoint_info *dst, __u8 dir)
{
	__u8 macs[2 * ETH_ALEN]; /* the Ethernet header's destination, then source */
	__u32 ifindex;

	if (ip->ttl <= 1)
		return cw_drop(skb, -CW_DROP_TTL_EXCEEDED, dir);

	/* Copy out before skb helpers invalidate packet and map pointers. */
	ifindex = dst->ifindex;
	cw_mac_copy(macs, dst->pod_mac);
	cw_mac_copy(macs + ETH_ALEN, dst->host_mac);

	if (cw_ipv4_dec_ttl(skb, ip) < 0)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, dir);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) < 0)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, dir);

	skb->mark |= CW_MARK_REDIRECTED;
	cw_count(skb, CW_REASON_FORWARDED, dir);
	return bpf_redirect(ifindex, 0);
}

#endif
