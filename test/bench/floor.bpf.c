/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The floor of the tunnel benchmark (test/bench/cross_node.py): the least
 * any datapath built on a collect-metadata VXLAN device does per packet,
 * with nothing else.  No map, no check, no counter, no TTL:
 *
 *   floor_tx  (tc ingress of a pod's host veth): a packet for the other
 *             node's pod subnet gets the tunnel key (remote node, VNI) and
 *             is redirected to the VXLAN device's egress, as Causeway's
 *             from_container does;
 *   floor_rx  (tc ingress of the VXLAN device): the decapsulated frame
 *             gets the pod's and its gateway's MACs and is redirected to
 *             the pod's host veth, as Causeway's from_overlay does.
 *
 * Causeway against this floor is what Causeway's own programs cost; this
 * floor against a plain VXLAN device routed by the stack is what the
 * collect-metadata design costs on this kernel.  Not part of the datapath.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Set by floor-attach before load (network byte order for addresses). */
volatile const __be32 remote_ip;    /* floor_tx: the other node's underlay address */
volatile const __be32 dst_net;      /* floor_tx: the other node's pod subnet ... */
volatile const __be32 dst_mask;     /* ... and its mask */
volatile const __u32 vni;           /* floor_tx */
volatile const __u32 out_ifindex;   /* floor_tx: the VXLAN device; floor_rx: the host veth */
volatile const __u8 macs[2 * ETH_ALEN]; /* floor_rx: pod MAC, then its gateway's */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int floor_tx(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	struct bpf_tunnel_key key = {};

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    (ip->daddr & dst_mask) != dst_net)
		return TC_ACT_OK; /* ARP to the gateway and the like */
	key.remote_ipv4 = bpf_ntohl(remote_ip);
	key.tunnel_id = vni;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(out_ifindex, 0);
}

SEC("tc")
int floor_rx(struct __sk_buff *skb)
{
	__u8 m[2 * ETH_ALEN];
	int i;

	for (i = 0; i < 2 * ETH_ALEN; i++)
		m[i] = macs[i]; /* volatile reads: the loader's values, not 0 */
	if (bpf_skb_store_bytes(skb, 0, m, sizeof(m), 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(out_ifindex, 0);
}
