// SPDX-License-Identifier: Apache-2.0
/*
 * Service load balancing of bpf/lxc.bpf.c (bpf/lib/lb.h) under
 * BPF_PROG_RUN: from_container's DNAT of flows to a frontend, conntrack
 * (a flow keeps its backend, TCP state, lifetimes), drops, to_container's
 * reverse NAT of replies; every rewritten frame's IPv4 and TCP/UDP
 * checksums are recomputed here from scratch.  And the service, slot,
 * reverse NAT and conntrack accessors of lib/dp.c.
 *
 * Same fixture as test_lxc.c: a private network namespace (lo is ifindex 1,
 * a veth pair gives a second device), the object loaded with its maps
 * unpinned, so nothing is left on the host.  What the real kernel does with
 * the rewritten packets (sockets that see the frontend as their peer,
 * backends on another node) is test/bpf/lb_netns.py's.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "bpftest.h"

#define VETH "cwlbveth0"
#define VETH_PEER "cwlbveth1"

#define CLIENT    "10.1.0.2"  /* pod A, host veth lo */
#define LOCAL_BE  "10.1.0.3"  /* pod B, host veth VETH: a backend on this node */
#define REMOTE_BE "10.2.0.5"  /* backends behind another node's tunnel endpoint */
#define FRONTEND  "10.96.0.10"
#define FE_PORT   80
#define BE_PORT   8080
#define SVC_ID    7

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

static struct {
	struct lxc *skel;
	struct cw_dp dp;
	int from_fd, to_fd, flows_fd;
	int veth_ifindex;
	struct cw_endpoint_info a, b;
} t;

static int group_setup(void **state)
{
	struct cw_ipcache_info ipc = { .identity = 4242 };
	struct cw_config cfg = { 0 };
	struct bt_pins pins;

	(void)state;
	if (bt_setup("test_lb", VETH, VETH_PEER, &t.skel, &pins, &t.dp, &t.veth_ifindex))
		return -1;
	t.from_fd = t.dp.prog_from_container;
	t.to_fd = t.dp.prog_to_container;
	t.flows_fd = bpf_map__fd(t.skel->maps.cw_stack_flows);

	t.a = bt_endpoint(1, 1, mac_a_pod, mac_a_host);
	t.b = bt_endpoint((__u32)t.veth_ifindex, 2, mac_b_pod, mac_b_host);
	if (cw_ep_put(&t.dp, ip4(CLIENT), &t.a) || cw_ep_put(&t.dp, ip4(LOCAL_BE), &t.b))
		return -1;

	/* Remote backends: 10.2.0.0/24 behind REMOTE_IP, the "VXLAN device" is the veth. */
	ipc.tunnel_ip = ip4(REMOTE_IP);
	cfg.vxlan_ifindex = (__u32)t.veth_ifindex;
	cfg.node_ip = ip4(NODE_IP);
	if (cw_ipcache_put(&t.dp, ip4("10.2.0.0"), 24, &ipc) || cw_config_put(&t.dp, &cfg))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	lxc__destroy(t.skel);
	return bt_teardown(VETH, t.veth_ifindex);
}

/* --- frames ---------------------------------------------------------- */

/* b + ETH_HLEN, the IPv4 header, lands on a 4-byte boundary. */
struct frame {
	__u32 len;
	uint8_t align[2];
	uint8_t b[128];
};

static struct iphdr *ip_of(struct frame *f)
{
	return (struct iphdr *)(f->b + ETH_HLEN);
}

static uint8_t *l4_of(struct frame *f)
{
	return f->b + ETH_HLEN + ip_of(f)->ihl * 4;
}

static struct tcphdr *tcp_of(struct frame *f)
{
	return (struct tcphdr *)l4_of(f);
}

static struct udphdr *udp_of(struct frame *f)
{
	return (struct udphdr *)l4_of(f);
}

/* RFC 793/768 checksum over the pseudo-header and the L4 segment: a
 * segment with a correct checksum folds to 0xffff. */
static uint16_t l4_fold(struct frame *f)
{
	struct iphdr *ip = ip_of(f);
	size_t l4len = ntohs(ip->tot_len) - ip->ihl * 4;
	uint8_t pseudo[12];
	uint16_t len16 = htons((uint16_t)l4len);

	memcpy(pseudo, &ip->saddr, 4);
	memcpy(pseudo + 4, &ip->daddr, 4);
	pseudo[8] = 0;
	pseudo[9] = ip->protocol;
	memcpy(pseudo + 10, &len16, 2);
	return fold(sum16(l4_of(f), l4len, sum16(pseudo, sizeof(pseudo), 0)));
}

static void set_checksums(struct frame *f)
{
	struct iphdr *ip = ip_of(f);

	ip->check = 0;
	ip->check = htons((uint16_t)~csum_fold(ip, ip->ihl * 4));
	if (ip->protocol == IPPROTO_TCP) {
		tcp_of(f)->check = 0;
		tcp_of(f)->check = htons((uint16_t)~l4_fold(f));
	} else if (ip->protocol == IPPROTO_UDP) {
		uint16_t c;

		udp_of(f)->check = 0;
		c = (uint16_t)~l4_fold(f);
		udp_of(f)->check = htons(c ? c : 0xffff); /* RFC 768: 0 means none */
	}
}

/* A TCP segment (6 bytes of payload) or a UDP datagram (7: an odd length). */
static struct frame build(uint8_t proto, const char *src, uint16_t sport, const char *dst,
			  uint16_t dport, uint8_t tcp_flags)
{
	struct frame f;
	struct ethhdr *eth = (struct ethhdr *)f.b;
	struct iphdr *ip = ip_of(&f);
	size_t l4len = proto == IPPROTO_TCP ? sizeof(struct tcphdr) + 6 : sizeof(struct udphdr) + 7;

	memset(&f, 0, sizeof(f));
	memcpy(eth->h_source, mac_a_pod, 6);
	memcpy(eth->h_dest, mac_a_host, 6);
	eth->h_proto = htons(ETH_P_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = htons((uint16_t)(sizeof(*ip) + l4len));
	ip->id = htons(0x4321);
	ip->frag_off = htons(0x4000);
	ip->ttl = 64;
	ip->protocol = proto;
	ip->saddr = ip4(src);
	ip->daddr = ip4(dst);
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = tcp_of(&f);

		th->source = htons(sport);
		th->dest = htons(dport);
		th->seq = htonl(1000);
		th->ack_seq = htonl(tcp_flags & TCP_ACK ? 2000 : 0);
		th->doff = 5;
		((uint8_t *)th)[13] = tcp_flags;
		th->window = htons(64240);
		memcpy(th + 1, "hello!", 6);
	} else {
		struct udphdr *uh = udp_of(&f);

		uh->source = htons(sport);
		uh->dest = htons(dport);
		uh->len = htons((uint16_t)l4len);
		memcpy(uh + 1, "odd-len", 7);
	}
	set_checksums(&f);
	f.len = (__u32)(ETH_HLEN + sizeof(*ip) + l4len);
	return f;
}

static struct frame tcp(const char *src, uint16_t sport, const char *dst, uint16_t dport,
			uint8_t flags)
{
	return build(IPPROTO_TCP, src, sport, dst, dport, flags);
}

static struct frame udp(const char *src, uint16_t sport, const char *dst, uint16_t dport)
{
	return build(IPPROTO_UDP, src, sport, dst, dport, 0);
}

struct run {
	int err;
	__u32 retval;
	struct frame out;
	__u32 mark;
};

static struct run run_mark(int prog_fd, const struct frame *in, __u32 ifindex, __u32 mark)
{
	struct run r;

	memset(&r, 0, sizeof(r));
	r.out.len = sizeof(r.out.b);
	r.mark = mark;
	r.err = bt_prog_run(prog_fd, in->b, in->len, ifindex, r.out.b, &r.out.len, &r.mark, &r.retval);
	return r;
}

/* from pod A (the client), as its host veth receives it */
static struct run egress(const struct frame *in)
{
	return run_mark(t.from_fd, in, t.a.ifindex, 0);
}

/* towards pod A, as its host veth sends it; redirected (marked) unless @via_stack */
static struct run ingress(const struct frame *in, bool via_stack)
{
	return run_mark(t.to_fd, in, t.a.ifindex, via_stack ? 0 : CW_MARK_REDIRECTED);
}

/*
 * @out is @in with its addresses and ports replaced by these and, when
 * @hop, the TTL one lower: everything else byte for byte, and both
 * checksums valid as recomputed here.  L2 is the delivery's business,
 * asserted by the callers that care.
 */
static void assert_nat(struct frame *out, const struct frame *in, const char *saddr,
		       uint16_t sport, const char *daddr, uint16_t dport, bool hop)
{
	struct frame want = *in;
	struct iphdr *wip = ip_of(&want), *oip = ip_of(out);

	assert_int_equal(out->len, in->len);
	wip->saddr = ip4(saddr);
	wip->daddr = ip4(daddr);
	if (wip->protocol == IPPROTO_TCP) {
		tcp_of(&want)->source = htons(sport);
		tcp_of(&want)->dest = htons(dport);
	} else {
		udp_of(&want)->source = htons(sport);
		udp_of(&want)->dest = htons(dport);
	}
	if (hop)
		wip->ttl--;

	if (csum_fold(oip, oip->ihl * 4) != 0xffff)
		fail_msg("IPv4 header checksum 0x%04x is wrong", ntohs(oip->check));
	if (oip->protocol == IPPROTO_TCP) {
		if (l4_fold(out) != 0xffff)
			fail_msg("TCP checksum 0x%04x is wrong", ntohs(tcp_of(out)->check));
		tcp_of(&want)->check = tcp_of(out)->check;
	} else if (udp_of(&want)->check) {
		if (l4_fold(out) != 0xffff || !udp_of(out)->check)
			fail_msg("UDP checksum 0x%04x is wrong", ntohs(udp_of(out)->check));
		udp_of(&want)->check = udp_of(out)->check;
	} else {
		assert_int_equal(udp_of(out)->check, 0); /* "no checksum" stays so */
	}
	wip->check = oip->check;
	memcpy(want.b, out->b, ETH_HLEN);
	assert_memory_equal(out->b, want.b, in->len);
}

/* @in with (saddr, sport) (@src) or (daddr, dport) rewritten to @addr:@port. */
static void assert_rewritten(struct frame *out, const struct frame *in, bool src, const char *addr,
			     uint16_t port, bool hop)
{
	const struct iphdr *ip = (const struct iphdr *)(in->b + ETH_HLEN);
	char s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN];
	uint16_t ports[2]; /* TCP and UDP alike */

	memcpy(ports, in->b + ETH_HLEN + ip->ihl * 4, sizeof(ports));
	inet_ntop(AF_INET, &ip->saddr, s, sizeof(s));
	inet_ntop(AF_INET, &ip->daddr, d, sizeof(d));
	if (src)
		assert_nat(out, in, addr, port, d, ntohs(ports[1]), hop);
	else
		assert_nat(out, in, s, ntohs(ports[0]), addr, port, hop);
}

/* --- services -------------------------------------------------------- */

static struct cw_lb4_key fe_key(const char *addr, uint16_t port, uint8_t proto)
{
	struct cw_lb4_key k = { .address = ip4(addr), .port = htons(port), .proto = proto };

	return k;
}

static struct cw_lb4_backend backend(const char *addr, uint16_t port)
{
	struct cw_lb4_backend be = { .address = ip4(addr), .port = htons(port), .cluster_id = 1 };

	return be;
}

/* FRONTEND:FE_PORT/@proto balanced over @n backends "addr" on BE_PORT. */
static void service(uint8_t proto, const char *const *addrs, size_t n)
{
	struct cw_lb4_key k = fe_key(FRONTEND, FE_PORT, proto);
	struct cw_lb4_backend slots[16];

	assert_true(n <= 16);
	for (size_t i = 0; i < n; i++)
		slots[i] = backend(addrs[i], BE_PORT);
	assert_int_equal(cw_lb4_service_set(&t.dp, &k, proto == IPPROTO_TCP ? SVC_ID : SVC_ID + 1, 0,
					    slots, n), 0);
}

static void service1(uint8_t proto, const char *addr)
{
	service(proto, &addr, 1);
}

static struct cw_ct4_key ct_key(uint8_t proto, const char *s, uint16_t sport, const char *d,
				uint16_t dport, enum cw_ct_kind kind)
{
	struct cw_ct4_key k = { .saddr = ip4(s), .daddr = ip4(d), .sport = htons(sport),
				.dport = htons(dport), .proto = proto, .kind = (__u8)kind };

	return k;
}

/* The service entry of CLIENT:@sport -> FRONTEND:FE_PORT; fails when absent. */
static struct cw_ct4_entry flow_entry(uint8_t proto, uint16_t sport)
{
	struct cw_lb4_key fe = fe_key(FRONTEND, FE_PORT, proto);
	struct cw_ct4_entry e;
	int err = cw_lb4_ct_flow(&t.dp, ip4(CLIENT), htons(sport), &fe, &e);

	if (err)
		fail_msg("no conntrack entry for %s:%u -> " FRONTEND ":%u: %s", CLIENT, sport, FE_PORT,
			 strerror(-err));
	return e;
}

static bool flow_exists(uint8_t proto, uint16_t sport)
{
	struct cw_lb4_key fe = fe_key(FRONTEND, FE_PORT, proto);
	struct cw_ct4_entry e;

	return cw_lb4_ct_flow(&t.dp, ip4(CLIENT), htons(sport), &fe, &e) == 0;
}

static void flow_write(uint8_t proto, uint16_t sport, const struct cw_ct4_entry *e)
{
	struct cw_ct4_key k = ct_key(proto, CLIENT, sport, FRONTEND, FE_PORT, CW_CT_SERVICE);

	assert_int_equal(bpf_map_update_elem(t.dp.map_lb4_ct, &k, e, BPF_EXIST), 0);
}

static size_t ct_count(void)
{
	struct cw_ct4_key *k = NULL;
	size_t n = 0;

	assert_int_equal(cw_lb4_ct_keys(&t.dp, &k, &n), 0);
	free(k);
	return n;
}

/* The backend a client's packet was sent to, read off from_container's output. */
static const char *sent_to(const struct run *r, char *buf)
{
	struct frame out = r->out;

	return inet_ntop(AF_INET, &ip_of(&out)->daddr, buf, INET_ADDRSTRLEN);
}

/* Every test leaves the service maps and conntrack empty. */
static int lb_reset(void **state)
{
	struct cw_lb4_key *sk = NULL;
	struct cw_lb4_slot_key *bk = NULL;
	struct cw_ct4_key *ck = NULL;
	__u16 *ids = NULL;
	size_t n = 0;
	int err = 0;

	(void)state;
	if (cw_lb4_service_keys(&t.dp, &sk, &n))
		return -1;
	for (size_t i = 0; i < n; i++)
		err |= cw_lb4_service_remove(&t.dp, &sk[i]);
	free(sk);
	if (cw_lb4_backend_keys(&t.dp, &bk, &n))
		return -1;
	for (size_t i = 0; i < n; i++)
		err |= cw_lb4_backend_delete(&t.dp, bk[i].rev_nat_id, bk[i].slot);
	free(bk);
	if (cw_lb4_revnat_keys(&t.dp, &ids, &n))
		return -1;
	for (size_t i = 0; i < n; i++)
		err |= cw_lb4_revnat_delete(&t.dp, ids[i]);
	free(ids);
	if (cw_lb4_ct_keys(&t.dp, &ck, &n))
		return -1;
	for (size_t i = 0; i < n; i++)
		err |= bpf_map_delete_elem(t.dp.map_lb4_ct, &ck[i]);
	free(ck);
	for (struct cw_flow_key fk; bpf_map_get_next_key(t.flows_fd, NULL, &fk) == 0;)
		if (bpf_map_delete_elem(t.flows_fd, &fk))
			return -1;
	return err ? -1 : 0;
}

/* --- from_container: DNAT ------------------------------------------- */

/* To a backend on this node: DNAT, then the local delivery (redirect, one
 * hop, the backend's MACs), checksums valid, conntrack written both ways. */
static void test_dnat_local_backend(void **state)
{
	struct frame in = tcp(CLIENT, 40000, FRONTEND, FE_PORT, TCP_SYN);
	struct cw_ct4_key rk = ct_key(IPPROTO_TCP, LOCAL_BE, BE_PORT, CLIENT, 40000, CW_CT_REPLY);
	struct cw_ct4_entry e, re;
	struct snapshot before;
	struct run r;
	__u32 now;

	(void)state;
	service1(IPPROTO_TCP, LOCAL_BE);
	snap(&t.dp, &before);
	now = cw_lb4_ct_clock();
	r = egress(&in);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_rewritten(&r.out, &in, false, LOCAL_BE, BE_PORT, true);
	assert_memory_equal(r.out.b, mac_b_pod, 6);
	assert_memory_equal(r.out.b + 6, mac_b_host, 6);
	assert_int_equal(r.mark, CW_MARK_REDIRECTED);
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, in.len);

	e = flow_entry(IPPROTO_TCP, 40000);
	assert_int_equal(e.backend_addr, ip4(LOCAL_BE));
	assert_int_equal(e.backend_port, htons(BE_PORT));
	assert_int_equal(e.rev_nat_id, SVC_ID);
	assert_int_equal(e.slot, 1);
	assert_int_equal(e.flags, 0); /* a SYN: not established yet */
	assert_in_range(e.expires, now + CW_CT_LIFETIME_TCP_SYN, now + CW_CT_LIFETIME_TCP_SYN + 1);
	assert_int_equal(cw_lb4_ct_lookup(&t.dp, &rk, &re), 0);
	assert_int_equal(re.rev_nat_id, SVC_ID);
	assert_int_equal(re.backend_addr, 0);
	assert_int_equal(ct_count(), 2);
}

/* To a backend behind another node: DNAT, then the tunnel. */
static void test_dnat_remote_backend(void **state)
{
	struct frame in = tcp(CLIENT, 40001, FRONTEND, FE_PORT, TCP_SYN);
	struct snapshot before;
	struct run r;

	(void)state;
	service1(IPPROTO_TCP, REMOTE_BE);
	snap(&t.dp, &before);
	r = egress(&in);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_REDIRECT); /* to the "VXLAN device" */
	assert_rewritten(&r.out, &in, false, REMOTE_BE, BE_PORT, true);
	assert_memory_equal(r.out.b, in.b, ETH_HLEN); /* the tunnel keeps L2 */
	assert_int_equal(r.mark, 0);
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, in.len);
	assert_int_equal(flow_entry(IPPROTO_TCP, 40001).backend_addr, ip4(REMOTE_BE));
}

/* A backend the host stack routes (outside the ipcache): DNAT, then the stack, TTL kept. */
static void test_dnat_to_stack(void **state)
{
	struct frame in = udp(CLIENT, 40002, FRONTEND, FE_PORT);
	struct run r;

	(void)state;
	service1(IPPROTO_UDP, "10.3.0.9");
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_rewritten(&r.out, &in, false, "10.3.0.9", BE_PORT, false);
}

/* UDP: the checksum follows the rewrite, and a datagram without one stays without. */
static void test_dnat_udp_checksums(void **state)
{
	(void)state;
	service1(IPPROTO_UDP, REMOTE_BE);
	for (uint16_t sport = 1; sport < 2000; sport += 37) {
		struct frame in = udp(CLIENT, sport, FRONTEND, FE_PORT);
		struct run r;

		/* a spread of payloads, to meet the 0x0000/0xffff edges */
		memcpy(udp_of(&in) + 1, &sport, 2);
		set_checksums(&in);
		r = egress(&in);
		assert_int_equal(r.retval, TC_ACT_REDIRECT);
		assert_rewritten(&r.out, &in, false, REMOTE_BE, BE_PORT, true);

		udp_of(&in)->check = 0;
		r = egress(&in);
		assert_int_equal(r.retval, TC_ACT_REDIRECT);
		assert_rewritten(&r.out, &in, false, REMOTE_BE, BE_PORT, true);
	}
}

/* A new flow's slot is cw_lb4_hash(tuple) % count + 1, and the hash spreads. */
static void test_slot_is_tuple_hash(void **state)
{
	static const char *const be[] = { "10.2.0.5", "10.2.0.6", "10.2.0.7", "10.2.0.8", "10.2.0.9" };
	unsigned int used[5] = { 0 };

	(void)state;
	service(IPPROTO_TCP, be, 5);
	for (uint16_t sport = 30000; sport < 30200; sport++) {
		struct frame in = tcp(CLIENT, sport, FRONTEND, FE_PORT, TCP_SYN);
		__u32 slot = cw_lb4_hash(ip4(CLIENT), ip4(FRONTEND), htons(sport), htons(FE_PORT),
					 IPPROTO_TCP) % 5;
		char got[INET_ADDRSTRLEN];
		struct run r = egress(&in);

		assert_int_equal(r.retval, TC_ACT_REDIRECT);
		assert_string_equal(sent_to(&r, got), be[slot]);
		assert_int_equal(flow_entry(IPPROTO_TCP, sport).slot, slot + 1);
		used[slot]++;
	}
	/* 200 flows over 5 slots: each gets a fair share (binomial, p = 1/5) */
	for (int i = 0; i < 5; i++)
		assert_in_range(used[i], 20, 60);
}

/*
 * The product rule: a flow keeps its backend whatever happens to the
 * slots, even when its backend left them or the service has none left;
 * new flows take the slots as they are now.
 */
static void test_flow_keeps_backend(void **state)
{
	static const char *const before_be[] = { "10.2.0.5", "10.2.0.6" };
	static const char *const after_be[] = { "10.2.0.7", "10.2.0.8", "10.2.0.9" };
	char got[INET_ADDRSTRLEN], first[INET_ADDRSTRLEN];
	struct frame in;
	struct run r;

	(void)state;
	service(IPPROTO_TCP, before_be, 2);
	in = tcp(CLIENT, 41000, FRONTEND, FE_PORT, TCP_SYN);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	sent_to(&r, first);

	/* the backends are replaced: the flow stays where it was */
	service(IPPROTO_TCP, after_be, 3);
	for (int i = 0; i < 3; i++) {
		in = tcp(CLIENT, 41000, FRONTEND, FE_PORT, i == 0 ? TCP_SYN : TCP_ACK);
		r = egress(&in);
		assert_int_equal(r.retval, TC_ACT_REDIRECT);
		assert_string_equal(sent_to(&r, got), first);
		assert_rewritten(&r.out, &in, false, first, BE_PORT, true);
	}
	assert_int_equal(flow_entry(IPPROTO_TCP, 41000).flags, CW_CT_F_ESTABLISHED);

	/* a new flow takes the new slots */
	for (uint16_t sport = 41001; sport < 41021; sport++) {
		in = tcp(CLIENT, sport, FRONTEND, FE_PORT, TCP_SYN);
		r = egress(&in);
		sent_to(&r, got);
		assert_true(!strcmp(got, after_be[0]) || !strcmp(got, after_be[1]) ||
			    !strcmp(got, after_be[2]));
	}

	/* no backend at all: the established flow still reaches its own */
	service(IPPROTO_TCP, NULL, 0);
	in = tcp(CLIENT, 41000, FRONTEND, FE_PORT, TCP_ACK);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_string_equal(sent_to(&r, got), first);
}

/* A service without backends: new flows dropped and counted, nothing tracked. */
static void test_no_backend_drops(void **state)
{
	struct snapshot before;
	struct frame in;
	struct run r;

	(void)state;
	service(IPPROTO_TCP, NULL, 0);
	service(IPPROTO_UDP, NULL, 0);
	for (int proto = 0; proto < 2; proto++) {
		in = proto ? udp(CLIENT, 42000, FRONTEND, FE_PORT)
			   : tcp(CLIENT, 42000, FRONTEND, FE_PORT, TCP_SYN);
		snap(&t.dp, &before);
		r = egress(&in);
		assert_int_equal(r.err, 0);
		assert_int_equal(r.retval, TC_ACT_SHOT);
		assert_counted(&before, CW_DROP_NO_SERVICE_BACKEND, CW_DIR_EGRESS, in.len);
	}
	assert_int_equal(ct_count(), 0);

	/* a count whose slot is missing (the helper mid-update) is the same drop */
	{
		struct cw_lb4_key k = fe_key(FRONTEND, FE_PORT, IPPROTO_TCP);
		struct cw_lb4_service svc = { .count = 1, .rev_nat_id = 99 };

		assert_int_equal(cw_lb4_service_put(&t.dp, &k, &svc), 0);
		in = tcp(CLIENT, 42001, FRONTEND, FE_PORT, TCP_SYN);
		snap(&t.dp, &before);
		r = egress(&in);
		assert_int_equal(r.retval, TC_ACT_SHOT);
		assert_counted(&before, CW_DROP_NO_SERVICE_BACKEND, CW_DIR_EGRESS, in.len);
	}
}

/* Traffic that is not to a frontend (address, port and protocol) passes untouched. */
static void test_non_service_untouched(void **state)
{
	struct frame in;
	struct run r;

	(void)state;
	service1(IPPROTO_TCP, REMOTE_BE);

	/* the frontend address, another port or protocol: the stack's, as is */
	in = tcp(CLIENT, 43000, FRONTEND, 443, TCP_SYN);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out.b, in.b, in.len);
	in = udp(CLIENT, 43000, FRONTEND, FE_PORT);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out.b, in.b, in.len);
	in = tcp(CLIENT, 43000, FRONTEND, FE_PORT, TCP_SYN);
	ip_of(&in)->protocol = IPPROTO_ICMP;
	set_checksums(&in);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out.b, in.b, in.len);

	/* a backend's own address and port, directly: not rewritten, not tracked */
	in = tcp(CLIENT, 43001, LOCAL_BE, BE_PORT, TCP_SYN);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_memory_equal(r.out.b + ETH_HLEN + 12, in.b + ETH_HLEN + 12, in.len - ETH_HLEN - 12);
	assert_int_equal(ct_count(), 0);

	/* and towards the pod, a packet of no balanced flow passes as it is */
	in = tcp(LOCAL_BE, BE_PORT, CLIENT, 43001, TCP_SYN | TCP_ACK);
	r = ingress(&in, false);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out.b, in.b, in.len);
}

/* Anti-spoofing comes first: a forged source never creates conntrack state. */
static void test_spoofed_source_not_balanced(void **state)
{
	struct frame in = tcp("10.1.0.99", 44000, FRONTEND, FE_PORT, TCP_SYN);
	struct snapshot before;
	struct run r;

	(void)state;
	service1(IPPROTO_TCP, REMOTE_BE);
	snap(&t.dp, &before);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_INVALID_SOURCE, CW_DIR_EGRESS, in.len);
	assert_int_equal(ct_count(), 0);
}

/* A first fragment of a balanced flow is dropped (counted); a later one carries no ports. */
static void test_fragments(void **state)
{
	struct snapshot before;
	struct frame in;
	struct run r;

	(void)state;
	service1(IPPROTO_UDP, REMOTE_BE);
	in = udp(CLIENT, 45000, FRONTEND, FE_PORT);
	ip_of(&in)->frag_off = htons(0x2000); /* MF, offset 0 */
	set_checksums(&in);
	snap(&t.dp, &before);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_FRAG_UNSUPPORTED, CW_DIR_EGRESS, in.len);

	ip_of(&in)->frag_off = htons(185);
	set_checksums(&in);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out.b, in.b, in.len);
	assert_int_equal(ct_count(), 0);
}

/* A segment to a frontend too short for the fields the rewrite needs is invalid. */
static void test_truncated_service_packet(void **state)
{
	struct snapshot before;
	struct frame in;
	struct run r;

	(void)state;
	service1(IPPROTO_TCP, REMOTE_BE);
	in = tcp(CLIENT, 46000, FRONTEND, FE_PORT, TCP_SYN);
	/* ports and flags there, the checksum not: the L4 rewrite fails */
	for (__u32 cut = 4; cut <= 16; cut += 12) {
		in.len = ETH_HLEN + 20 + cut;
		snap(&t.dp, &before);
		r = egress(&in);
		assert_int_equal(r.err, 0);
		assert_int_equal(r.retval, TC_ACT_SHOT);
		assert_counted(&before, CW_DROP_INVALID_PACKET, CW_DIR_EGRESS, in.len);
	}
	/* ports cut off: not classifiable as a service's, the delivery's to judge
	 * (the frontend is no endpoint: the host stack's, untouched) */
	in.len = ETH_HLEN + 22;
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out.b, in.b, in.len);
	assert_int_equal(ct_count(), 0);
}

/* --- conntrack: TCP state and lifetimes -------------------------------- */

static void test_tcp_lifetimes(void **state)
{
	static const char *const one[] = { "10.2.0.5" }, *const other[] = { "10.2.0.6" };
	char got[INET_ADDRSTRLEN];
	struct cw_ct4_entry e;
	struct frame in;
	struct run r;
	__u32 now = cw_lb4_ct_clock();

	(void)state;
	service(IPPROTO_TCP, one, 1);
	in = tcp(CLIENT, 47000, FRONTEND, FE_PORT, TCP_SYN);
	egress(&in);
	e = flow_entry(IPPROTO_TCP, 47000);
	assert_in_range(e.expires, now + CW_CT_LIFETIME_TCP_SYN, now + CW_CT_LIFETIME_TCP_SYN + 1);

	/* the SYN is retransmitted after the slots changed: same backend */
	service(IPPROTO_TCP, other, 1);
	r = egress(&in);
	assert_string_equal(sent_to(&r, got), one[0]);

	/* the backend's SYN-ACK, then the client's ACK: established */
	in = tcp(one[0], BE_PORT, CLIENT, 47000, TCP_SYN | TCP_ACK);
	r = ingress(&in, true);
	assert_int_equal(ip_of(&r.out)->saddr, ip4(FRONTEND));
	assert_int_equal(flow_entry(IPPROTO_TCP, 47000).flags, 0);
	in = tcp(CLIENT, 47000, FRONTEND, FE_PORT, TCP_ACK);
	egress(&in);
	e = flow_entry(IPPROTO_TCP, 47000);
	assert_int_equal(e.flags, CW_CT_F_ESTABLISHED);
	assert_in_range(e.expires, now + CW_CT_LIFETIME_TCP, now + CW_CT_LIFETIME_TCP + 2);

	/* the client half-closes: still the established lifetime (it may read for long) */
	in = tcp(CLIENT, 47000, FRONTEND, FE_PORT, TCP_FIN | TCP_ACK);
	egress(&in);
	e = flow_entry(IPPROTO_TCP, 47000);
	assert_int_equal(e.flags, CW_CT_F_ESTABLISHED | CW_CT_F_FIN_CLIENT);
	assert_in_range(e.expires, now + CW_CT_LIFETIME_TCP, now + CW_CT_LIFETIME_TCP + 2);

	/* the backend closes too: closing */
	in = tcp(one[0], BE_PORT, CLIENT, 47000, TCP_FIN | TCP_ACK);
	r = ingress(&in, false);
	assert_rewritten(&r.out, &in, true, FRONTEND, FE_PORT, false);
	e = flow_entry(IPPROTO_TCP, 47000);
	assert_int_equal(e.flags, CW_CT_F_ESTABLISHED | CW_CT_F_FIN_CLIENT | CW_CT_F_FIN_BACKEND);
	assert_in_range(e.expires, now + CW_CT_LIFETIME_TCP_CLOSE, now + CW_CT_LIFETIME_TCP_CLOSE + 2);

	/* the last ACK still goes to the old backend; a new SYN on the tuple is a new flow */
	in = tcp(CLIENT, 47000, FRONTEND, FE_PORT, TCP_ACK);
	r = egress(&in);
	assert_string_equal(sent_to(&r, got), one[0]);
	in = tcp(CLIENT, 47000, FRONTEND, FE_PORT, TCP_SYN);
	r = egress(&in);
	assert_string_equal(sent_to(&r, got), other[0]);
	e = flow_entry(IPPROTO_TCP, 47000);
	assert_int_equal(e.flags, 0);
	assert_int_equal(e.backend_addr, ip4(other[0]));

	/* a RST closes at once, from either side */
	in = tcp(other[0], BE_PORT, CLIENT, 47000, TCP_RST | TCP_ACK);
	ingress(&in, false);
	e = flow_entry(IPPROTO_TCP, 47000);
	assert_true(e.flags & CW_CT_F_RST);
	assert_in_range(e.expires, now + CW_CT_LIFETIME_TCP_CLOSE, now + CW_CT_LIFETIME_TCP_CLOSE + 2);

	/* UDP has one lifetime */
	service(IPPROTO_UDP, one, 1);
	in = udp(CLIENT, 47001, FRONTEND, FE_PORT);
	egress(&in);
	e = flow_entry(IPPROTO_UDP, 47001);
	assert_int_equal(e.flags, 0);
	assert_in_range(e.expires, now + CW_CT_LIFETIME_NONTCP, now + CW_CT_LIFETIME_NONTCP + 2);
}

/* An expired entry is no entry: the next packet, whatever it is, chooses anew. */
static void test_expired_flow_rebalanced(void **state)
{
	static const char *const one[] = { "10.2.0.5" }, *const other[] = { "10.2.0.6" };
	char got[INET_ADDRSTRLEN];
	struct cw_ct4_entry e;
	struct frame in;
	struct run r;

	(void)state;
	service(IPPROTO_TCP, one, 1);
	in = tcp(CLIENT, 48000, FRONTEND, FE_PORT, TCP_ACK);
	egress(&in);
	service(IPPROTO_TCP, other, 1);
	e = flow_entry(IPPROTO_TCP, 48000);
	e.expires = cw_lb4_ct_clock() - 1;
	flow_write(IPPROTO_TCP, 48000, &e);

	/* the backend's late reply is not rewritten: the flow is over */
	in = tcp(one[0], BE_PORT, CLIENT, 48000, TCP_ACK);
	r = ingress(&in, false);
	assert_memory_equal(r.out.b, in.b, in.len);

	in = tcp(CLIENT, 48000, FRONTEND, FE_PORT, TCP_ACK);
	r = egress(&in);
	assert_string_equal(sent_to(&r, got), other[0]);
	assert_int_equal(flow_entry(IPPROTO_TCP, 48000).backend_addr, ip4(other[0]));
}

/* The reply index lost alone (LRU) comes back with the flow's next packet. */
static void test_reply_index_restored(void **state)
{
	struct cw_ct4_key rk = ct_key(IPPROTO_TCP, REMOTE_BE, BE_PORT, CLIENT, 49000, CW_CT_REPLY);
	struct cw_ct4_entry re;
	struct frame in;
	struct run r;

	(void)state;
	service1(IPPROTO_TCP, REMOTE_BE);
	in = tcp(CLIENT, 49000, FRONTEND, FE_PORT, TCP_SYN);
	egress(&in);
	assert_int_equal(bpf_map_delete_elem(t.dp.map_lb4_ct, &rk), 0);
	in = tcp(REMOTE_BE, BE_PORT, CLIENT, 49000, TCP_SYN | TCP_ACK);
	r = ingress(&in, false);
	assert_memory_equal(r.out.b, in.b, in.len); /* nothing leads back now */

	in = tcp(CLIENT, 49000, FRONTEND, FE_PORT, TCP_SYN);
	egress(&in);
	assert_int_equal(cw_lb4_ct_lookup(&t.dp, &rk, &re), 0);
	assert_int_equal(re.rev_nat_id, SVC_ID);
	in = tcp(REMOTE_BE, BE_PORT, CLIENT, 49000, TCP_SYN | TCP_ACK);
	r = ingress(&in, false);
	assert_rewritten(&r.out, &in, true, FRONTEND, FE_PORT, false);
}

/* --- to_container: reverse NAT ---------------------------------------- */

static void test_reverse_nat(void **state)
{
	struct snapshot before;
	struct frame in;
	struct run r;

	(void)state;
	/* TCP from the local backend (redirected) and UDP from a remote one (overlay or stack) */
	service1(IPPROTO_TCP, LOCAL_BE);
	service1(IPPROTO_UDP, REMOTE_BE);
	in = tcp(CLIENT, 50000, FRONTEND, FE_PORT, TCP_SYN);
	egress(&in);
	in = udp(CLIENT, 50000, FRONTEND, FE_PORT);
	egress(&in);

	for (uint32_t seq = 0; seq < 4000; seq += 97) {
		in = tcp(LOCAL_BE, BE_PORT, CLIENT, 50000, TCP_SYN | TCP_ACK);
		tcp_of(&in)->seq = htonl(seq * 0x01010101u);
		set_checksums(&in);
		snap(&t.dp, &before);
		r = ingress(&in, false);
		assert_int_equal(r.err, 0);
		assert_int_equal(r.retval, TC_ACT_OK);
		assert_rewritten(&r.out, &in, true, FRONTEND, FE_PORT, false);
		assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_INGRESS, in.len);
	}
	in = udp(REMOTE_BE, BE_PORT, CLIENT, 50000);
	r = ingress(&in, true);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_rewritten(&r.out, &in, true, FRONTEND, FE_PORT, false);
	udp_of(&in)->check = 0;
	r = ingress(&in, true);
	assert_rewritten(&r.out, &in, true, FRONTEND, FE_PORT, false);

	/* redirected or not, the mark is consumed as before */
	in = tcp(LOCAL_BE, BE_PORT, CLIENT, 50000, TCP_ACK);
	r = run_mark(t.to_fd, &in, t.a.ifindex, CW_MARK_REDIRECTED | 0x4000);
	assert_int_equal(r.mark, 0x4000);
	assert_rewritten(&r.out, &in, true, FRONTEND, FE_PORT, false);
}

/*
 * Only the flow's backend, on the flow's tuple, gets the frontend back:
 * another backend or port, another client port, or a flow of another
 * service leave a packet alone.
 */
static void test_reverse_nat_only_the_flow(void **state)
{
	static const char *const two[] = { "10.2.0.5", "10.2.0.6" };
	char chosen[INET_ADDRSTRLEN];
	const char *other;
	struct frame in;
	struct run r;

	(void)state;
	service(IPPROTO_TCP, two, 2);
	in = tcp(CLIENT, 51000, FRONTEND, FE_PORT, TCP_SYN);
	r = egress(&in);
	sent_to(&r, chosen);
	other = strcmp(chosen, two[0]) ? two[0] : two[1];

	in = tcp(other, BE_PORT, CLIENT, 51000, TCP_SYN | TCP_ACK);
	r = ingress(&in, false);
	assert_memory_equal(r.out.b, in.b, in.len);
	in = tcp(chosen, BE_PORT + 1, CLIENT, 51000, TCP_SYN | TCP_ACK);
	r = ingress(&in, false);
	assert_memory_equal(r.out.b, in.b, in.len);
	in = tcp(chosen, BE_PORT, CLIENT, 51001, TCP_SYN | TCP_ACK);
	r = ingress(&in, false);
	assert_memory_equal(r.out.b, in.b, in.len);
	in = udp(chosen, BE_PORT, CLIENT, 51000);
	r = ingress(&in, false);
	assert_memory_equal(r.out.b, in.b, in.len);

	/*
	 * A stale index: the flow moved to the other backend (its entry was
	 * rewritten), the old backend's index is still there; its packets on
	 * the tuple are a direct connection's now, not the service's.
	 */
	{
		struct cw_ct4_entry e = flow_entry(IPPROTO_TCP, 51000);

		e.backend_addr = ip4(other);
		flow_write(IPPROTO_TCP, 51000, &e);
		in = tcp(chosen, BE_PORT, CLIENT, 51000, TCP_ACK);
		r = ingress(&in, false);
		assert_memory_equal(r.out.b, in.b, in.len);
	}

	/* the service withdrawn: its reverse NAT entry goes, replies are left alone */
	in = tcp(CLIENT, 51002, FRONTEND, FE_PORT, TCP_SYN);
	r = egress(&in);
	sent_to(&r, chosen);
	{
		struct cw_lb4_key k = fe_key(FRONTEND, FE_PORT, IPPROTO_TCP);

		assert_int_equal(cw_lb4_service_remove(&t.dp, &k), 0);
	}
	in = tcp(chosen, BE_PORT, CLIENT, 51002, TCP_SYN | TCP_ACK);
	r = ingress(&in, false);
	assert_memory_equal(r.out.b, in.b, in.len);
}

/*
 * A balanced flow to a local backend whose replies reach the client
 * unmarked (through the stack) is not taken for a stack-forwarded flow:
 * to_container learns from the rewritten packet, whose source (the
 * frontend) is no local endpoint.
 */
static void test_reverse_nat_before_learning(void **state)
{
	struct cw_flow_key k;
	struct frame in;
	struct run r;

	(void)state;
	service1(IPPROTO_TCP, LOCAL_BE);
	in = tcp(CLIENT, 52000, FRONTEND, FE_PORT, TCP_SYN);
	egress(&in);
	in = tcp(LOCAL_BE, BE_PORT, CLIENT, 52000, TCP_SYN | TCP_ACK);
	r = ingress(&in, true);
	assert_rewritten(&r.out, &in, true, FRONTEND, FE_PORT, false);
	assert_int_not_equal(bpf_map_get_next_key(t.flows_fd, NULL, &k), 0);
}

/*
 * A client balanced to itself: its packets come from the service loopback
 * address (its stack would drop a packet from its own address), its
 * replies to that address go back to it from the frontend, both through
 * from_container and straight back into the pod.
 */
static void test_hairpin(void **state)
{
	struct cw_ct4_key rk = ct_key(IPPROTO_TCP, CLIENT, BE_PORT, "169.254.42.1", 54000, CW_CT_REPLY);
	struct cw_ct4_entry re;
	struct snapshot before;
	struct frame in, fwd;
	struct run r;
	size_t deleted;

	(void)state;
	service1(IPPROTO_TCP, CLIENT);
	for (int i = 0; i < 2; i++) {
		in = tcp(CLIENT, 54000, FRONTEND, FE_PORT, i ? TCP_ACK : TCP_SYN);
		r = egress(&in);
		assert_int_equal(r.retval, TC_ACT_REDIRECT);
		assert_nat(&r.out, &in, "169.254.42.1", 54000, CLIENT, BE_PORT, true);
		assert_memory_equal(r.out.b, mac_a_pod, 6);
		assert_memory_equal(r.out.b + 6, mac_a_host, 6);
	}
	assert_int_equal(cw_lb4_ct_lookup(&t.dp, &rk, &re), 0);
	assert_int_equal(re.rev_nat_id, SVC_ID);
	/* on its way into the pod it is no reply of anything */
	fwd = r.out;
	r = ingress(&fwd, false);
	assert_memory_equal(r.out.b, fwd.b, fwd.len);

	/* the pod answers itself through its gateway */
	in = tcp(CLIENT, BE_PORT, "169.254.42.1", 54000, TCP_SYN | TCP_ACK);
	snap(&t.dp, &before);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_nat(&r.out, &in, FRONTEND, FE_PORT, CLIENT, 54000, true);
	assert_memory_equal(r.out.b, mac_a_pod, 6);
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, in.len);
	fwd = r.out;
	r = ingress(&fwd, false);
	assert_memory_equal(r.out.b, fwd.b, fwd.len);

	/* UDP too */
	service1(IPPROTO_UDP, CLIENT);
	in = udp(CLIENT, 54001, FRONTEND, FE_PORT);
	r = egress(&in);
	assert_nat(&r.out, &in, "169.254.42.1", 54001, CLIENT, BE_PORT, true);
	in = udp(CLIENT, BE_PORT, "169.254.42.1", 54001);
	r = egress(&in);
	assert_nat(&r.out, &in, FRONTEND, FE_PORT, CLIENT, 54001, true);

	/* GC keeps a live hairpin flow's index */
	assert_int_equal(cw_lb4_ct_gc(&t.dp, cw_lb4_ct_clock(), &deleted), 0);
	assert_int_equal(deleted, 0);

	/* to the loopback address on no flow's tuple: the stack's, untouched */
	in = tcp(CLIENT, BE_PORT, "169.254.42.1", 54002, TCP_SYN | TCP_ACK);
	r = egress(&in);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out.b, in.b, in.len);
}

/* --- lib/dp.c accessors ------------------------------------------------ */

static void test_service_accessors(void **state)
{
	struct cw_lb4_key k = fe_key(FRONTEND, FE_PORT, IPPROTO_TCP), bad = k, *keys = NULL;
	struct cw_lb4_backend be[3] = { backend("10.2.0.5", 1), backend("10.2.0.6", 2),
					backend("10.2.0.7", 3) }, got;
	struct cw_lb4_slot_key *slots = NULL;
	struct cw_lb4_reverse_nat nat;
	struct cw_lb4_service svc;
	__u16 *ids = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(cw_lb4_service_get(&t.dp, &k, &svc), -ENOENT);
	assert_int_equal(cw_lb4_service_remove(&t.dp, &k), 0);

	/* three slots, then one: the two past the count are deleted */
	assert_int_equal(cw_lb4_service_set(&t.dp, &k, 11, CW_LB_F_GLOBAL, be, 3), 0);
	assert_int_equal(cw_lb4_service_get(&t.dp, &k, &svc), 0);
	assert_int_equal(svc.count, 3);
	assert_int_equal(svc.rev_nat_id, 11);
	assert_int_equal(svc.flags, CW_LB_F_GLOBAL);
	for (__u16 s = 1; s <= 3; s++) {
		assert_int_equal(cw_lb4_backend_get(&t.dp, 11, s, &got), 0);
		assert_memory_equal(&got, &be[s - 1], sizeof(got));
	}
	assert_int_equal(cw_lb4_revnat_get(&t.dp, 11, &nat), 0);
	assert_int_equal(nat.address, ip4(FRONTEND));
	assert_int_equal(nat.port, htons(FE_PORT));
	assert_int_equal(cw_lb4_service_set(&t.dp, &k, 11, 0, be + 2, 1), 0);
	assert_int_equal(cw_lb4_backend_get(&t.dp, 11, 1, &got), 0);
	assert_int_equal(got.address, be[2].address);
	assert_int_equal(cw_lb4_backend_get(&t.dp, 11, 2, &got), -ENOENT);
	assert_int_equal(cw_lb4_backend_keys(&t.dp, &slots, &n), 0);
	assert_int_equal(n, 1);
	free(slots);

	/* a new id: the old id's slots go once the entry names the new one */
	assert_int_equal(cw_lb4_service_set(&t.dp, &k, 12, 0, be, 2), 0);
	assert_int_equal(cw_lb4_backend_get(&t.dp, 11, 1, &got), -ENOENT);
	assert_int_equal(cw_lb4_backend_get(&t.dp, 12, 2, &got), 0);
	assert_int_equal(cw_lb4_revnat_keys(&t.dp, &ids, &n), 0);
	assert_int_equal(n, 2); /* 11 is the caller's to drop */
	free(ids);
	assert_int_equal(cw_lb4_revnat_delete(&t.dp, 11), 0);
	assert_int_equal(cw_lb4_revnat_delete(&t.dp, 11), 0);

	/* listing */
	assert_int_equal(cw_lb4_service_keys(&t.dp, &keys, &n), 0);
	assert_int_equal(n, 1);
	assert_memory_equal(&keys[0], &k, sizeof(k));
	free(keys);

	/* refusals */
	bad.proto = IPPROTO_ICMP;
	assert_int_equal(cw_lb4_service_set(&t.dp, &bad, 12, 0, be, 1), -EINVAL);
	assert_int_equal(cw_lb4_service_get(&t.dp, &bad, &svc), -EINVAL);
	assert_int_equal(cw_lb4_service_set(&t.dp, &k, 0, 0, be, 1), -EINVAL);
	svc.rev_nat_id = 0;
	assert_int_equal(cw_lb4_service_put(&t.dp, &k, &svc), -EINVAL);
	assert_int_equal(cw_lb4_backend_put(&t.dp, 12, 0, be), -EINVAL);
	assert_int_equal(cw_lb4_backend_put(&t.dp, 0, 1, be), -EINVAL);
	assert_int_equal(cw_lb4_revnat_put(&t.dp, 0, &nat), -EINVAL);

	/* withdrawn: entry, slots and reverse NAT */
	assert_int_equal(cw_lb4_service_remove(&t.dp, &k), 0);
	assert_int_equal(cw_lb4_service_get(&t.dp, &k, &svc), -ENOENT);
	assert_int_equal(cw_lb4_backend_keys(&t.dp, &slots, &n), 0);
	assert_int_equal(n, 0);
	free(slots);
	assert_int_equal(cw_lb4_revnat_get(&t.dp, 12, &nat), -ENOENT);
}

/* GC: expired flows and indexes leading nowhere go, live flows stay. */
static void test_ct_gc(void **state)
{
	struct cw_ct4_key rk = ct_key(IPPROTO_TCP, REMOTE_BE, BE_PORT, CLIENT, 53001, CW_CT_REPLY);
	struct cw_ct4_entry e, re;
	struct frame in;
	size_t deleted = 99;

	(void)state;
	service1(IPPROTO_TCP, REMOTE_BE);
	for (uint16_t sport = 53000; sport < 53003; sport++) {
		in = tcp(CLIENT, sport, FRONTEND, FE_PORT, TCP_SYN);
		egress(&in);
	}
	assert_int_equal(ct_count(), 6);
	assert_int_equal(cw_lb4_ct_gc(&t.dp, cw_lb4_ct_clock(), &deleted), 0);
	assert_int_equal(deleted, 0);

	/* 53001 expired: both its entries go */
	e = flow_entry(IPPROTO_TCP, 53001);
	e.expires = cw_lb4_ct_clock() - 1;
	flow_write(IPPROTO_TCP, 53001, &e);
	/* 53002's index points at a flow that moved elsewhere */
	e = flow_entry(IPPROTO_TCP, 53002);
	e.backend_addr = ip4("10.2.0.77");
	flow_write(IPPROTO_TCP, 53002, &e);
	assert_int_equal(cw_lb4_ct_gc(&t.dp, cw_lb4_ct_clock(), &deleted), 0);
	assert_int_equal(deleted, 3);
	assert_false(flow_exists(IPPROTO_TCP, 53001));
	assert_int_equal(cw_lb4_ct_lookup(&t.dp, &rk, &re), -ENOENT);
	assert_true(flow_exists(IPPROTO_TCP, 53000));
	assert_true(flow_exists(IPPROTO_TCP, 53002));
	assert_int_equal(ct_count(), 3);

	/* everything is over an hour later */
	assert_int_equal(cw_lb4_ct_gc(&t.dp, cw_lb4_ct_clock() + 3600, &deleted), 0);
	assert_int_equal(deleted, 3);
	assert_int_equal(ct_count(), 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_teardown(f, lb_reset)
	const struct CMUnitTest tests[] = {
		T(test_dnat_local_backend),
		T(test_dnat_remote_backend),
		T(test_dnat_to_stack),
		T(test_dnat_udp_checksums),
		T(test_slot_is_tuple_hash),
		T(test_flow_keeps_backend),
		T(test_no_backend_drops),
		T(test_non_service_untouched),
		T(test_spoofed_source_not_balanced),
		T(test_fragments),
		T(test_truncated_service_packet),
		T(test_tcp_lifetimes),
		T(test_expired_flow_rebalanced),
		T(test_reply_index_restored),
		T(test_reverse_nat),
		T(test_reverse_nat_only_the_flow),
		T(test_reverse_nat_before_learning),
		T(test_hairpin),
		T(test_service_accessors),
		T(test_ct_gc),
	};
#undef T

	if (geteuid() != 0) {
		fprintf(stderr, "test_lb: skipped, needs root (BPF_PROG_RUN, unshare)\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
