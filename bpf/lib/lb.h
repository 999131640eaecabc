/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Service load balancing on the client's node, in tc, without sockets:
 * from_container rewrites the destination of a flow to a service frontend
 * to one backend (DNAT), to_container rewrites the source of that
 * backend's replies back to the frontend (reverse NAT).  Whatever delivers
 * the packet afterwards (redirect, tunnel, host stack) sees only pod
 * addresses, and the client only the frontend.  Maps and rules:
 * <causeway/datapath.h>.
 */
#ifndef CW_BPF_LB_H
#define CW_BPF_LB_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "ipv4.h"
#include "nat.h"
#include "conntrack.h"

/*
 * The TCP flags of a segment (0 for UDP), once the L4 header is known to
 * hold every field the rewrite touches, up to the checksum: a packet
 * refused here leaves no conntrack state behind.
 */
static __always_inline int cw_tcp_flags(struct __sk_buff *skb, __u32 l4, __u8 proto, __u8 *flags)
{
	__u32 need = l4 + (proto == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, urg_ptr)
						 : sizeof(struct udphdr));

	*flags = 0;
	if (skb->len < need)
		return -1;
	if (proto != IPPROTO_TCP)
		return 0;
	return cw_load(skb, l4 + CW_TCP_FLAGS_OFF, flags, 1);
}

/*
 * The reply index of a flow to @backend: written when absent or leading
 * elsewhere (the LRU may have dropped it alone, or an older flow of the
 * same tuple left it), otherwise only looked up, which keeps it recent in
 * the LRU for flows whose backend is silent.
 */
static __always_inline int cw_ct_reply_ensure(const struct cw_flow_key *t, __be32 backend_addr,
					      __be16 backend_port, __be32 reply_daddr,
					      __u16 rev_nat_id)
{
	struct cw_ct4_key rk = {
		.saddr = backend_addr,
		.daddr = reply_daddr,
		.sport = backend_port,
		.dport = t->sport,
		.proto = t->proto,
		.kind = CW_CT_REPLY,
	};
	struct cw_ct4_entry re = { .rev_nat_id = rev_nat_id };
	const struct cw_ct4_entry *r;

	r = bpf_map_lookup_elem(&cw_lb4_ct, &rk);
	if (r && r->rev_nat_id == rev_nat_id)
		return 0;
	return bpf_map_update_elem(&cw_lb4_ct, &rk, &re, BPF_ANY) ? -1 : 0;
}

/*
 * A reply of a balanced flow, as its backend sent it (@t): the frontend
 * becomes its source again.  @hairpin: the client is its own backend, the
 * reply went to CW_LB_LOOPBACK4 and goes to the client.  Returns 0
 * (rewritten, or no flow's) or a negated drop reason.
 *
 * The reply index only leads to the flow: the rewrite happens while the
 * flow's service entry is alive and still names the sender, so a stale
 * index (the flow ended and the tuple now carries a direct connection to
 * the pod) leaves the packet alone.
 */
static __always_inline int cw_lb4_reply(struct __sk_buff *skb, const struct cw_flow_key *t,
					__u32 l4, bool fragment, bool hairpin)
{
	const struct cw_lb4_reverse_nat *nat;
	const struct cw_ct4_entry *r;
	struct cw_ct4_entry *e;
	struct cw_ct4_key rk = {}, ck = {};
	__be32 fe_addr, client;
	__be16 fe_port;
	__u16 rev_nat_id;
	__u8 tcp_flags;
	__u32 now;

	rk.saddr = t->saddr;
	rk.daddr = t->daddr;
	rk.sport = t->sport;
	rk.dport = t->dport;
	rk.proto = t->proto;
	rk.kind = CW_CT_REPLY;
	r = bpf_map_lookup_elem(&cw_lb4_ct, &rk);
	if (!r)
		return 0;
	rev_nat_id = r->rev_nat_id;
	nat = bpf_map_lookup_elem(&cw_lb4_revnat, &rev_nat_id);
	if (!nat)
		return 0;
	fe_addr = nat->address;
	fe_port = nat->port;

	client = hairpin ? t->saddr : t->daddr;
	ck.saddr = client;
	ck.daddr = fe_addr;
	ck.sport = t->dport;
	ck.dport = fe_port;
	ck.proto = t->proto;
	ck.kind = CW_CT_SERVICE;
	now = cw_ct_now();
	e = bpf_map_lookup_elem(&cw_lb4_ct, &ck);
	if (!e || cw_ct_expired(e, now) || e->backend_addr != t->saddr ||
	    e->backend_port != t->sport || e->rev_nat_id != rev_nat_id)
		return 0;
	if (fragment)
		return -CW_DROP_FRAG_UNSUPPORTED;

	if (cw_tcp_flags(skb, l4, t->proto, &tcp_flags) < 0)
		return -CW_DROP_INVALID_PACKET;
	cw_ct_touch(e, t->proto, tcp_flags, false, now);

	if (cw_ipv4_nat(skb, l4, t->proto, true, t->saddr, fe_addr, t->sport, fe_port) < 0)
		return -CW_DROP_INVALID_PACKET;
	if (hairpin &&
	    cw_ipv4_nat(skb, l4, t->proto, false, t->daddr, client, t->dport, t->dport) < 0)
		return -CW_DROP_INVALID_PACKET;
	return 0;
}

/*
 * from_container, for a packet of a local endpoint: DNAT when it goes to a
 * service frontend.  Returns 0 (rewritten, or not a service's) or a
 * negated drop reason.  Packet pointers are invalid afterwards.
 *
 * Only TCP and UDP with ports are balanced: a non-first fragment carries no
 * ports and goes on to the frontend address untouched (and is lost there).
 */
static __always_inline int cw_lb4_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct cw_lb4_key fkey = {};
	struct cw_lb4_slot_key skey = {};
	struct cw_ct4_key ck = {};
	struct cw_ct4_entry *e, ne = {};
	const struct cw_lb4_service *svc;
	const struct cw_lb4_backend *be;
	struct cw_flow_key t = {};
	__be32 backend_addr, reply_daddr;
	__be16 backend_port;
	__u16 rev_nat_id, count;
	__u8 tcp_flags;
	__u32 l4, now;
	bool fragment, hairpin;

	if ((void *)(ip + 1) > data_end)
		return -CW_DROP_INVALID_PACKET;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	l4 = cw_ipv4_l4_off(ip);
	fragment = ip->frag_off & bpf_htons(CW_IP_MF);
	/* Ports cut off: not classifiable; the delivery path judges it. */
	if (cw_ipv4_tuple(skb, ip, &t) < 0 || !t.dport)
		return 0;
	if (t.daddr == bpf_htonl(CW_LB_LOOPBACK4))
		return cw_lb4_reply(skb, &t, l4, fragment, true);

	fkey.address = t.daddr;
	fkey.port = t.dport;
	fkey.proto = t.proto;
	svc = bpf_map_lookup_elem(&cw_lb4_services, &fkey);
	if (!svc) {
		/*
		 * A new direct TCP connection on the tuple an ended service flow
		 * used (same client port, same backend) must not have its replies
		 * taken for that flow's while its entries age: its SYN drops the
		 * flow's reply index.  (A service flow still open on that very
		 * tuple could not coexist with it at the backend anyway.)
		 */
		if (t.proto == IPPROTO_TCP && !fragment &&
		    cw_tcp_flags(skb, l4, t.proto, &tcp_flags) == 0 &&
		    (tcp_flags & (CW_TCP_SYN | CW_TCP_ACK)) == CW_TCP_SYN) {
			ck.saddr = t.daddr;
			ck.daddr = t.saddr;
			ck.sport = t.dport;
			ck.dport = t.sport;
			ck.proto = t.proto;
			ck.kind = CW_CT_REPLY;
			bpf_map_delete_elem(&cw_lb4_ct, &ck);
		}
		return 0;
	}
	count = svc->count;
	rev_nat_id = svc->rev_nat_id;

	/*
	 * The fragments after this one carry no ports to be balanced by, and
	 * would reach the frontend address, not the backend: without fragment
	 * tracking the datagram cannot arrive whole, so it stops here, counted.
	 */
	if (fragment)
		return -CW_DROP_FRAG_UNSUPPORTED;

	if (cw_tcp_flags(skb, l4, t.proto, &tcp_flags) < 0)
		return -CW_DROP_INVALID_PACKET;

	ck.saddr = t.saddr;
	ck.daddr = t.daddr;
	ck.sport = t.sport;
	ck.dport = t.dport;
	ck.proto = t.proto;
	ck.kind = CW_CT_SERVICE;
	now = cw_ct_now();
	e = bpf_map_lookup_elem(&cw_lb4_ct, &ck);
	if (e && cw_ct_same_flow(e, t.proto, tcp_flags, now)) {
		/* The flow's backend, even if it has left the slots since. */
		backend_addr = e->backend_addr;
		backend_port = e->backend_port;
		rev_nat_id = e->rev_nat_id;
		cw_ct_touch(e, t.proto, tcp_flags, true, now);
	} else {
		if (!count)
			return -CW_DROP_NO_SERVICE_BACKEND;
		skey.rev_nat_id = rev_nat_id;
		skey.slot = (__u16)(cw_lb4_hash(t.saddr, t.daddr, t.sport, t.dport, t.proto) % count + 1);
		be = bpf_map_lookup_elem(&cw_lb4_backends, &skey);
		/* Only while the helper shrinks a service between our two reads. */
		if (!be)
			return -CW_DROP_NO_SERVICE_BACKEND;
		backend_addr = be->address;
		backend_port = be->port;
		ne.backend_addr = backend_addr;
		ne.backend_port = backend_port;
		ne.rev_nat_id = rev_nat_id;
		ne.slot = skey.slot;
		cw_ct_touch(&ne, t.proto, tcp_flags, true, now);
		if (bpf_map_update_elem(&cw_lb4_ct, &ck, &ne, BPF_ANY))
			return -CW_DROP_CT_CREATE_FAILED;
	}
	/* A client balanced to itself must not see its own address as the source. */
	hairpin = backend_addr == t.saddr;
	reply_daddr = hairpin ? bpf_htonl(CW_LB_LOOPBACK4) : t.saddr;
	if (cw_ct_reply_ensure(&t, backend_addr, backend_port, reply_daddr, rev_nat_id) < 0)
		return -CW_DROP_CT_CREATE_FAILED;

	if (cw_ipv4_nat(skb, l4, t.proto, false, t.daddr, backend_addr, t.dport, backend_port) < 0)
		return -CW_DROP_INVALID_PACKET;
	if (hairpin && cw_ipv4_nat(skb, l4, t.proto, true, t.saddr, reply_daddr, t.sport, t.sport) < 0)
		return -CW_DROP_INVALID_PACKET;
	return 0;
}

/*
 * to_container: a reply of a balanced flow gets the frontend back as its
 * source, whichever way it came.  Returns 0 or a negated drop reason;
 * packet pointers are invalid afterwards.
 */
static __always_inline int cw_lb4_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct cw_flow_key t = {};
	bool fragment;
	__u32 l4;

	if ((void *)(ip + 1) > data_end)
		return -CW_DROP_INVALID_PACKET;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	l4 = cw_ipv4_l4_off(ip);
	fragment = ip->frag_off & bpf_htons(CW_IP_MF);
	if (cw_ipv4_tuple(skb, ip, &t) < 0 || !t.sport)
		return 0;
	return cw_lb4_reply(skb, &t, l4, fragment, false);
}

#endif
