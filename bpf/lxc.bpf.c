// SPDX-License-Identifier: Apache-2.0
/*
 * Programs attached to the host side of every pod veth.
 *
 *   from_container: tc ingress (packets the pod sends)
 *   to_container:   tc egress  (packets on their way into the pod)
 *
 * Same-node pod-to-pod traffic is handed straight to the destination's host
 * veth with bpf_redirect(), skipping the host's routing and neighbour code;
 * traffic to a pod behind another node's tunnel endpoint is encapsulated
 * through the node's VXLAN device (lib/tunnel.h); everything else goes up
 * the host stack, which routes it natively or out of the cluster.
 * Redirecting to the veth's egress (not bpf_redirect_peer) keeps
 * to_container on the path of every packet a pod receives, which is where
 * ingress policy will sit.
 *
 * A flow the host stack forwarded between two local pods may carry NAT
 * (hostPort, kube-proxy ClusterIP): its replies must go back through the
 * stack so conntrack can undo it.  to_container learns such flows from
 * packets that reach a pod without from_container's redirect mark.
 *
 * Services are balanced here too (lib/lb.h): from_container turns a
 * packet for a service frontend into one for a backend before deciding
 * where it goes, and to_container gives the backend's replies the
 * frontend's address back, whichever way they came (redirect, overlay,
 * host stack).
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/tunnel.h"
#include "lib/lb.h"
#include "lib/deliver.h"
#include "lib/fib.h"
#include "lib/stackflow.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * A pod of the mesh that no tunnel carries (native routing, or a hybrid
 * node's same-segment peers): the FIB decides where it goes and the packet
 * is redirected there, past the host's forwarding path.  Anything else is
 * the stack's.
 */
static __always_inline bool mesh_pod(const struct cw_ipcache_info *ipc)
{
	/*
	 * Only pods: traffic to anything else may be masqueraded, and the
	 * stack's NAT is what does that.
	 */
	return ipc && ipc->identity >= CW_IDENTITY_FIRST_ALLOCATED;
}

/*
 * A destination that is not a local endpoint: over the tunnel when a node
 * is known for it, straight out of the underlay for another pod of the
 * mesh, else to the host stack (out of the cluster), which does its own
 * TTL handling and ICMP.
 */
static __always_inline int ipv4_to_remote(struct __sk_buff *skb, struct iphdr *ip,
					  bool src_known, __u32 src_identity)
{
	const struct cw_ipcache_info *ipc;
	const struct cw_config *cfg;
	__be32 remote, local;
	__u32 vxlan_ifindex, len;
	int rc;

	/* 0.0.0.0 is no endpoint, so it has no identity to put in the VNI. */
	if (!src_known) {
		cw_count(skb, CW_REASON_FORWARDED, CW_DIR_EGRESS);
		return TC_ACT_OK;
	}
	/*
	 * The stack NATed this flow's other direction, so it must see this
	 * one; or the L4 header is too short to tell, which is the stack's to
	 * judge too.
	 */
	if (cw_stack_flow(skb, ip) != 0) {
		cw_count(skb, CW_REASON_FORWARDED, CW_DIR_EGRESS);
		return TC_ACT_OK;
	}
	cfg = cw_node_config();
	remote = cw_tunnel_endpoint(ip->daddr, &ipc);
	if (!remote) {
		if (mesh_pod(ipc)) {
			rc = cw_fib_redirect(skb, ip, cfg ? cfg->vxlan_ifindex : 0);
			if (rc >= 0) {
				if (rc != TC_ACT_SHOT)
					cw_count(skb, CW_REASON_FORWARDED, CW_DIR_EGRESS);
				return rc;
			}
		}
		cw_count(skb, CW_REASON_FORWARDED, CW_DIR_EGRESS);
		return TC_ACT_OK;
	}

	if (!cfg || !cfg->vxlan_ifindex)
		return cw_drop(skb, -CW_DROP_NO_TUNNEL_DEV, CW_DIR_EGRESS);
	vxlan_ifindex = cfg->vxlan_ifindex;
	local = cfg->node_ip;

	/* This node is a routing hop, as on the local path. */
	if (ip->ttl <= 1)
		return cw_drop(skb, -CW_DROP_TTL_EXCEEDED, CW_DIR_EGRESS);
	cw_ipv4_dec_ttl(ip);
	len = skb->len; /* counted as the pod sent it, whichever way it is encapsulated */
	rc = cw_tunnel_encap_redirect(skb, cfg, remote, src_identity);
	if (rc >= 0) {
		if (rc != TC_ACT_SHOT)
			cw_count_len(len, CW_REASON_FORWARDED, CW_DIR_EGRESS);
		return rc;
	}
	if (cw_tunnel_set_key(skb, remote, local, src_identity) < 0)
		return cw_drop(skb, -CW_DROP_TUNNEL_FAILED, CW_DIR_EGRESS);

	cw_count(skb, CW_REASON_FORWARDED, CW_DIR_EGRESS);
	return bpf_redirect(vxlan_ifindex, 0);
}

static __always_inline int handle_ipv4_from_container(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct cw_endpoint_key key = {};
	struct cw_endpoint_info *src, *dst;
	__u32 src_identity = CW_IDENTITY_UNKNOWN;
	bool src_known = false;
	int rc;

	if ((void *)(ip + 1) > data_end)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_EGRESS);
	if (ip->version != 4 || ip->ihl < 5)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_EGRESS);

	/*
	 * Anti-spoofing: the source address must be an endpoint of this very
	 * interface.  0.0.0.0 is let through for DHCP-style probes the host
	 * stack handles (and drops) itself.
	 */
	if (ip->saddr != 0) {
		key.ip4 = ip->saddr;
		src = bpf_map_lookup_elem(&cw_endpoints, &key);
		if (!src || src->ifindex != skb->ifindex)
			return cw_drop(skb, -CW_DROP_INVALID_SOURCE, CW_DIR_EGRESS);
		src_identity = src->identity;
		src_known = true;

		/* A service frontend becomes a backend before anything looks at daddr. */
		rc = cw_lb4_egress(skb);
		if (rc < 0)
			return cw_drop(skb, rc, CW_DIR_EGRESS);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > data_end)
			return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_EGRESS);
	}

	key.ip4 = ip->daddr;
	dst = bpf_map_lookup_elem(&cw_endpoints, &key);
	if (!dst)
		return ipv4_to_remote(skb, ip, src_known, src_identity);

	if (ip->ttl <= 1)
		return cw_drop(skb, -CW_DROP_TTL_EXCEEDED, CW_DIR_EGRESS);

	rc = cw_stack_flow(skb, ip);
	if (rc < 0)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_EGRESS);
	if (rc) {
		cw_count(skb, CW_REASON_FORWARDED, CW_DIR_EGRESS);
		return TC_ACT_OK;
	}
	return cw_deliver_local(skb, ip, dst, CW_DIR_EGRESS);
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_EGRESS);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return handle_ipv4_from_container(skb);
	case bpf_htons(ETH_P_ARP):
	case bpf_htons(ETH_P_IPV6):
		/*
		 * The pod has a permanent neighbour entry for its gateway, so
		 * ARP is rare; IPv6 is not configured by Causeway yet.  Both
		 * are left to the host stack.
		 */
		cw_count(skb, CW_REASON_FORWARDED, CW_DIR_EGRESS);
		return TC_ACT_OK;
	default:
		return cw_drop(skb, -CW_DROP_UNKNOWN_L3, CW_DIR_EGRESS);
	}
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_INGRESS);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;
		struct cw_endpoint_key src = {};
		int rc;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_INGRESS);
		/*
		 * A service reply gets its frontend source back first, so the
		 * flow learning below sees what the pod will see: the frontend
		 * is no local endpoint, and a balanced flow is never the stack's.
		 */
		rc = cw_lb4_ingress(skb);
		if (rc < 0)
			return cw_drop(skb, rc, CW_DIR_INGRESS);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > data_end)
			return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_INGRESS);
		if (skb->mark & CW_MARK_REDIRECTED) {
			skb->mark &= ~CW_MARK_REDIRECTED;
		} else {
			/* From a local pod, yet not redirected: the stack forwarded it. */
			src.ip4 = ip->saddr;
			if (bpf_map_lookup_elem(&cw_endpoints, &src))
				cw_stack_flow_learn(skb, ip);
			else
				cw_stack_nat_learn(skb, ip); /* a hostPort from elsewhere */
		}
	}
	cw_count(skb, CW_REASON_FORWARDED, CW_DIR_INGRESS);
	return TC_ACT_OK;
}
