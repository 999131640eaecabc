/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Flows the host stack owns (cw_stack_flows, <causeway/datapath.h>): the
 * fast paths ask before they redirect, the programs on the way out learn a
 * flow when they see the stack forwarded or NATed it.
 */
#ifndef CW_BPF_STACKFLOW_H
#define CW_BPF_STACKFLOW_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "ipv4.h"

/*
 * Whether this packet belongs to a flow whose replies the stack must see:
 * 1 yes, 0 no, -1 the L4 header is cut.
 */
static __always_inline int cw_stack_flow(struct __sk_buff *skb, const struct iphdr *ip)
{
	struct cw_flow_key t = {};

	if (cw_ipv4_tuple(skb, ip, &t) < 0)
		return -1;
	return bpf_map_lookup_elem(&cw_stack_flows, &t) != NULL;
}

/*
 * Remember that the replies to this packet go through the stack: its tuple
 * reversed, as the reply will arrive at a fast path.
 */
static __always_inline void cw_stack_flow_learn(struct __sk_buff *skb, const struct iphdr *ip)
{
	struct cw_flow_key t = {}, reply = {};
	__u8 one = 1;

	if (cw_ipv4_tuple(skb, ip, &t) < 0)
		return;
	reply.saddr = t.daddr;
	reply.daddr = t.saddr;
	reply.sport = t.dport;
	reply.dport = t.sport;
	reply.proto = t.proto;
	bpf_map_update_elem(&cw_stack_flows, &reply, &one, BPF_ANY);
}

/*
 * On the way out of the node (or into a pod): a packet the stack NATed has
 * CW_MARK_STACK_NAT from the helper's iptables rule.  The bit is cleared
 * so it means nothing further along (an encapsulated copy, another hop).
 */
static __always_inline void cw_stack_nat_learn(struct __sk_buff *skb, const struct iphdr *ip)
{
	if (!(skb->mark & CW_MARK_STACK_NAT))
		return;
	skb->mark &= ~CW_MARK_STACK_NAT;
	cw_stack_flow_learn(skb, ip);
}

#endif
