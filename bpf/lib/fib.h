/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Native routing without the host stack's forwarding path: the kernel's
 * FIB says which interface and next hop a packet leaves by, and the packet
 * is redirected there from tc, as Cilium's BPF host routing does.  The
 * stack's netfilter hooks (and with them connection tracking) are skipped,
 * which is what makes native routing as fast as plain routes; only traffic
 * that needs none of them comes here (lxc.bpf.c decides).
 */
#ifndef CW_BPF_FIB_H
#define CW_BPF_FIB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "eth.h"
#include "ipv4.h"
#include "metrics.h"

#define CW_AF_INET 2

/*
 * Send @skb where the FIB lookup @p said (@rc: BPF_FIB_LKUP_RET_SUCCESS or
 * _NO_NEIGH): with the lookup's MACs written in, or by bpf_redirect_neigh(),
 * which resolves a next hop whose neighbour is not known yet.
 */
static __always_inline int cw_fib_send(struct __sk_buff *skb, const struct bpf_fib_lookup *p,
				       long rc)
{
	struct bpf_redir_neigh nh = {};

	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		nh.nh_family = CW_AF_INET;
		nh.ipv4_nh = p->ipv4_dst; /* the lookup left the next hop here */
		return (int)bpf_redirect_neigh(p->ifindex, &nh, sizeof(nh), 0);
	}
	if (cw_eth_set_macs(skb, p->dmac, p->smac) < 0)
		return cw_drop(skb, -CW_DROP_INVALID_PACKET, CW_DIR_EGRESS);
	return (int)bpf_redirect(p->ifindex, 0);
}

/*
 * Redirect @skb by the FIB: the verdict (TC_ACT_REDIRECT, or TC_ACT_SHOT
 * when the packet could not be rewritten), or -1 when the
 * stack should take it: no route, a local or unreachable one, the tunnel
 * device (@avoid_ifindex: only the tunnel path sets a key), a packet the
 * egress MTU cannot take as it is (the stack fragments or answers with
 * ICMP), forwarding off.  A next hop whose neighbour is not resolved yet
 * goes by bpf_redirect_neigh(), which resolves it.  The TTL goes down by
 * one only when the packet is redirected.
 */
static __always_inline int cw_fib_redirect(struct __sk_buff *skb, struct iphdr *ip,
					   __u32 avoid_ifindex)
{
	struct bpf_fib_lookup p = {};
	long rc;

	if (ip->ttl <= 1)
		return -1; /* the stack answers with ICMP time exceeded */
	p.family = CW_AF_INET;
	p.tos = ip->tos;
	p.l4_protocol = ip->protocol;
	p.tot_len = 0; /* 0: check the skb itself against the MTU, GSO-aware */
	p.ipv4_src = ip->saddr;
	p.ipv4_dst = ip->daddr;
	p.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	if (p.ifindex == avoid_ifindex || p.ifindex == skb->ingress_ifindex)
		return -1;
	cw_ipv4_dec_ttl(ip);
	return cw_fib_send(skb, &p, rc);
}

#endif
