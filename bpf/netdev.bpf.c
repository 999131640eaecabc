// SPDX-License-Identifier: Apache-2.0
/*
 * Programs on the node's underlay device (the interface holding the node
 * IP, eth0 on a kind node).
 *
 *   from_netdev: tc ingress.  A packet for a local endpoint (a pod of
 *                another node routed natively, or anything else the
 *                underlay delivers to a pod IP) is redirected to the egress
 *                of the pod's host veth, as from_overlay does for tunnelled
 *                ones, past the host's forwarding path and its netfilter
 *                hooks.  Everything else, and the replies of flows the
 *                stack NATed, go up the stack untouched.
 *   to_netdev:   tc egress.  Learns the flows the stack destination-NATed
 *                on their way out (CW_MARK_STACK_NAT, lib/stackflow.h), so
 *                that their replies coming back through from_netdev, or
 *                leaving a local pod through from_container, are left to
 *                the stack.
 *
 * With from_container's FIB redirect (lib/fib.h) this is native routing
 * without the stack in the path, both ways: DESIGN.md's from-netdev.  Its
 * own object for the same reason as overlay.bpf.c; the maps are the same
 * pinned instances.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/deliver.h"
#include "lib/stackflow.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct cw_endpoint_key key = {};
	struct cw_endpoint_info *dst;
	struct iphdr *ip;

	/*
	 * The node's own interface: whatever is not plainly a pod's IPv4
	 * packet addressed to this host is the stack's to judge, malformed
	 * or not, so nothing here is dropped or counted.  A frame for another
	 * host's MAC (a flooding switch) is not this node's to forward.
	 */
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return TC_ACT_OK;
	key.ip4 = ip->daddr;
	dst = bpf_map_lookup_elem(&cw_endpoints, &key);
	if (!dst)
		return TC_ACT_OK;
	/*
	 * The source's identity (ipcache) is ingress policy's input, which
	 * to_container will look up itself; nothing consumes it here.
	 */
	if (cw_stack_flow(skb, ip) != 0)
		return TC_ACT_OK;
	return cw_deliver_local(skb, ip, dst, CW_DIR_INGRESS);
}

SEC("tc")
int to_netdev(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;

	if (!(skb->mark & CW_MARK_STACK_NAT))
		return TC_ACT_OK;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = data + ETH_HLEN;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    (void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return TC_ACT_OK;
	cw_stack_nat_learn(skb, ip);
	return TC_ACT_OK;
}
