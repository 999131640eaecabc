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
	if (ip->ttl <= 1)
		return cw_drop(skb, -CW_DROP_TTL_EXCEEDED, dir);
	cw_ipv4_dec_ttl(ip);
	if (cw_eth_set_macs(skb, dst->pod_mac, dst->host_mac) < 0)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, dir);
	skb->mark |= CW_MARK_REDIRECTED;
	cw_count(skb, CW_REASON_FORWARDED, dir);
	return bpf_redirect(dst->ifindex, 0);
}

#endif
