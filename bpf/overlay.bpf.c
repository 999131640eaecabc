// SPDX-License-Identifier: Apache-2.0
/*
 * from_overlay: tc ingress of the node's collect-metadata VXLAN device
 * (CW_VXLAN_DEV).  The device has already stripped the outer headers and
 * left them as tunnel metadata; the VNI is the sending pod's security
 * identity (set by from_container on the other node, lib/tunnel.h).
 *
 * A packet for a local endpoint is redirected to the egress of its host
 * veth, as from_container does on the same node, so to_container still
 * sees every packet a pod receives.  Anything else goes up the host stack,
 * and so do the replies of flows the stack NATed (lib/stackflow.h).
 *
 * to_overlay: tc egress of the same device.  from_container's packets come
 * with their tunnel key already set and pass untouched.  Packets the host
 * stack routed here (the node's own traffic to a pod on another node: the
 * helper routes every tunnelled PodCIDR through this device, "src" the
 * node IP) get the key here, from the same lookup from_container makes,
 * with the host's identity as the VNI.  Without it a host-network process
 * (kube-apiserver calling a webhook, a health check) could not reach pods
 * on other nodes in tunnel mode.
 *
 * Its own object, as one top-level file per attach point keeps each
 * program's verifier load and dependencies apart; the maps are the same
 * pinned instances as lxc.bpf.c's (pinned by name, lib/maps.h).
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
#include "lib/tunnel.h"
#include "lib/stackflow.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int handle_ipv4_from_overlay(struct __sk_buff *skb, __u32 src_identity)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct cw_endpoint_key key = {};
	struct cw_endpoint_info *dst;
	int rc;

	if ((void *)(ip + 1) > data_end)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_INGRESS);
	if (ip->version != 4 || ip->ihl < 5)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_INGRESS);

	/*
	 * src_identity is the input of ingress policy.  Policy is enforced in
	 * to_container, for local and remote senders alike, so the identity
	 * will travel with the redirected skb to be looked up there against
	 * (endpoint, identity, port, protocol).  Nothing consumes it yet.
	 */
	(void)src_identity;

	key.ip4 = ip->daddr;
	dst = bpf_map_lookup_elem(&cw_endpoints, &key);
	/* The reply of a flow the stack NATed on its way out goes back through it. */
	rc = dst ? cw_stack_flow(skb, ip) : 1;
	if (rc < 0)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_INGRESS);
	if (rc) {
		/*
		 * The node itself, a pod whose endpoint entry is not written
		 * yet, or a flow of the stack's: the host stack routes it.
		 * The inner destination MAC is the sending pod's gateway, not
		 * this device's, so the frame arrived as PACKET_OTHERHOST,
		 * which IP input discards.
		 */
		bpf_skb_change_type(skb, PACKET_HOST);
		cw_count(skb, CW_REASON_FORWARDED, CW_DIR_INGRESS);
		return TC_ACT_OK;
	}
	return cw_deliver_local(skb, ip, dst, CW_DIR_INGRESS);
}

SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct bpf_tunnel_key tkey = {};
	struct ethhdr *eth;

	/*
	 * Only an IPv4 underlay is set up (the device is created without
	 * "remote"/"local" IPv6), so the key is read as IPv4; a packet
	 * without metadata did not come through the device's receive path.
	 */
	if (bpf_skb_get_tunnel_key(skb, &tkey, sizeof(tkey), 0) < 0)
		return cw_drop(skb, -CW_DROP_NO_TUNNEL_KEY, CW_DIR_INGRESS);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_INGRESS);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return handle_ipv4_from_overlay(skb, tkey.tunnel_id);

	/* from_container tunnels only IPv4; whatever else came is the stack's. */
	cw_count(skb, CW_REASON_FORWARDED, CW_DIR_INGRESS);
	return TC_ACT_OK;
}

SEC("tc")
int to_overlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_tunnel_key tkey = {};
	const struct cw_config *cfg;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__be32 remote;

	/* from_container (or anything else) already said where it goes */
	if (bpf_skb_get_tunnel_key(skb, &tkey, sizeof(tkey), 0) == 0)
		return TC_ACT_OK;

	if ((void *)(eth + 1) > data_end)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_EGRESS);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		/* IPv6 neighbour discovery and the like: nowhere to send them */
		return cw_drop(skb, -CW_DROP_NO_TUNNEL_KEY, CW_DIR_EGRESS);
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_EGRESS);

	/* A flow the stack DNATed towards a pod over there (kube-proxy). */
	cw_stack_nat_learn(skb, ip);
	remote = cw_tunnel_endpoint(ip->daddr, NULL);
	cfg = cw_node_config();
	if (!remote || !cfg)
		return cw_drop(skb, -CW_DROP_NO_TUNNEL_KEY, CW_DIR_EGRESS);
	if (cw_tunnel_set_key(skb, remote, cfg->node_ip, CW_IDENTITY_HOST) < 0)
		return cw_drop(skb, -CW_DROP_TUNNEL_FAILED, CW_DIR_EGRESS);
	cw_count(skb, CW_REASON_FORWARDED, CW_DIR_EGRESS);
	return TC_ACT_OK;
}
