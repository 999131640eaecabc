// SPDX-License-Identifier: Apache-2.0
/*
 * bpf/lxc.bpf.c and bpf/overlay.bpf.c under BPF_PROG_RUN: crafted frames
 * through from_container, to_container and from_overlay, asserting the
 * verdict, the rewritten frame, skb->mark, the per-reason counters, the
 * stack-flow map and the tunnel decision; and the ipcache, tunnel and config
 * accessors of lib/dp.c.  Runs in a private network namespace (lo is ifindex
 * 1 there, and a veth pair gives a second device), with the maps unpinned,
 * so it leaves nothing behind on the host.
 *
 * BPF_PROG_RUN does not perform a redirect, and a packet it runs carries no
 * tunnel metadata, so what the VXLAN device does with the key and what
 * from_overlay does past bpf_skb_get_tunnel_key is tested on real devices by
 * test/bpf/tunnel_netns.py.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <causeway/netlink.h>

#include "bpftest.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#include "overlay.skel.h"
#include "netdev.skel.h"
#pragma GCC diagnostic pop

#define VETH "cwtestveth0"
#define VETH_PEER "cwtestveth1"

struct pkt {
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;
	char payload[6];
} __attribute__((packed));

struct pod {
	const char *ip;
	struct cw_endpoint_info info;
};

/* The test's one fixture: the loaded object and two local pods. */
static struct {
	struct lxc *skel;
	struct overlay *overlay;
	struct netdev *netdev;
	struct cw_dp dp;
	int from_fd, to_fd, flows_fd, overlay_fd;
	int veth_ifindex;
	struct pod a, b;
} t;

/* @obj (opened, not loaded) uses lxc's map instances, unpinned, as a node's pins make it. */
static int share_maps(struct bpf_object *obj)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, obj) {
		struct bpf_map *own = bpf_object__find_map_by_name(t.skel->obj, bpf_map__name(map));

		if (!own || bpf_map__reuse_fd(map, bpf_map__fd(own)) ||
		    bpf_map__set_pin_path(map, NULL))
			return -1;
	}
	return 0;
}

static int group_setup(void **state)
{
	struct cw_endpoint_info got;
	struct bt_pins pins;

	(void)state;
	if (bt_setup("test_lxc", VETH, VETH_PEER, &t.skel, &pins, &t.dp, &t.veth_ifindex))
		return -1;

	/* from_overlay shares lxc's maps, as the pins make it share them on a node */
	t.overlay = overlay__open();
	if (!t.overlay || share_maps(t.overlay->obj))
		return -1;
	if (overlay__load(t.overlay)) {
		fprintf(stderr, "test_lxc: loading from_overlay failed\n");
		return -1;
	}
	if (bt_check_pins("test_lxc", "loading from_overlay", t.skel->obj, &pins))
		return -1;
	/* and so do the underlay device's programs */
	t.netdev = netdev__open();
	if (!t.netdev || share_maps(t.netdev->obj))
		return -1;
	if (netdev__load(t.netdev)) {
		fprintf(stderr, "test_lxc: loading from_netdev failed\n");
		return -1;
	}
	if (bt_check_pins("test_lxc", "loading from_netdev", t.skel->obj, &pins))
		return -1;

	t.from_fd = t.dp.prog_from_container;
	t.to_fd = t.dp.prog_to_container;
	t.overlay_fd = bpf_program__fd(t.overlay->progs.from_overlay);
	t.flows_fd = bpf_map__fd(t.skel->maps.cw_stack_flows);

	/* pod A's host veth is lo (ifindex 1), pod B's the test veth */
	t.a.ip = "10.1.0.2";
	t.a.info = bt_endpoint(1, 1, mac_a_pod, mac_a_host);
	t.b.ip = "10.1.0.3";
	t.b.info = bt_endpoint((__u32)t.veth_ifindex, (__u16)t.veth_ifindex, mac_b_pod, mac_b_host);
	if (cw_ep_put(&t.dp, ip4(t.a.ip), &t.a.info) || cw_ep_put(&t.dp, ip4(t.b.ip), &t.b.info))
		return -1;
	/* read back through lib/dp.c as the CLI would */
	if (cw_ep_get(&t.dp, ip4(t.b.ip), &got) || memcmp(&got, &t.b.info, sizeof(got)))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	netdev__destroy(t.netdev);
	overlay__destroy(t.overlay);
	lxc__destroy(t.skel);
	return bt_teardown(VETH, t.veth_ifindex);
}

static void build(struct pkt *p, const uint8_t *src_mac, const uint8_t *dst_mac, const char *src,
		  const char *dst, uint8_t ttl)
{
	memset(p, 0, sizeof(*p));
	memcpy(p->eth.h_source, src_mac, 6);
	memcpy(p->eth.h_dest, dst_mac, 6);
	p->eth.h_proto = htons(ETH_P_IP);
	p->ip.version = 4;
	p->ip.ihl = 5;
	p->ip.tos = 0x10;
	p->ip.tot_len = htons(sizeof(*p) - sizeof(p->eth));
	p->ip.id = htons(0x1234);
	p->ip.frag_off = htons(0x4000);
	p->ip.ttl = ttl;
	p->ip.protocol = IPPROTO_TCP;
	p->ip.saddr = ip4(src);
	p->ip.daddr = ip4(dst);
	p->ip.check = htons((uint16_t)~csum_fold(&p->ip, sizeof(p->ip)));
	p->tcp.source = htons(40000);
	p->tcp.dest = htons(80);
	p->tcp.seq = htonl(1);
	p->tcp.doff = 5;
	p->tcp.syn = 1;
	p->tcp.window = htons(64240);
	memcpy(p->payload, "hello!", 6);
}

struct run {
	int err;
	__u32 retval;
	uint8_t out[512];
	__u32 out_len;
	__u32 mark;	/* skb->mark after the program */
};

static struct run run_mark(int prog_fd, const void *data, __u32 len, __u32 ifindex, __u32 mark)
{
	struct run r = { .out_len = sizeof(r.out), .mark = mark };

	r.err = bt_prog_run(prog_fd, data, len, ifindex, r.out, &r.out_len, &r.mark, &r.retval);
	return r;
}

static struct run run_prog(int prog_fd, const void *data, __u32 len, __u32 ifindex)
{
	return run_mark(prog_fd, data, len, ifindex, 0);
}

static void test_redirect_to_local_pod(void **state)
{
	struct snapshot before;
	struct pkt in, want, *out;
	struct run r;

	(void)state;
	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_int_equal(r.out_len, sizeof(in));
	out = (struct pkt *)r.out;

	/* L2 rewritten as the destination's gateway would send it */
	assert_memory_equal(out->eth.h_dest, mac_b_pod, 6);
	assert_memory_equal(out->eth.h_source, mac_b_host, 6);
	assert_int_equal(out->eth.h_proto, htons(ETH_P_IP));
	/* one routing hop: TTL - 1, header checksum still valid */
	assert_int_equal(out->ip.ttl, 63);
	assert_int_equal(csum_fold(&out->ip, sizeof(out->ip)), 0xffff);
	/* nothing else changed */
	want = in;
	want.ip.ttl = 63;
	want.ip.check = out->ip.check;
	assert_memory_equal(&out->ip, &want.ip, sizeof(want.ip));
	assert_memory_equal(&out->tcp, &in.tcp, sizeof(in.tcp) + sizeof(in.payload));
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(in));
}

/* The other way, sent from the veth (ifindex > 1): the source check uses the
 * skb's real ifindex, not a constant. */
static void test_redirect_from_second_device(void **state)
{
	struct snapshot before;
	struct pkt in, *out;
	struct run r;

	(void)state;
	build(&in, mac_b_pod, mac_b_host, t.b.ip, t.a.ip, 2);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.b.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	out = (struct pkt *)r.out;
	assert_memory_equal(out->eth.h_dest, mac_a_pod, 6);
	assert_memory_equal(out->eth.h_source, mac_a_host, 6);
	assert_int_equal(out->ip.ttl, 1);
	assert_int_equal(csum_fold(&out->ip, sizeof(out->ip)), 0xffff);
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(in));
}

/* The incremental checksum update across every TTL and a spread of headers
 * (RFC 1624 is easy to get wrong at the 0x0000/0xffff edges). */
static void test_ttl_checksum_all_values(void **state)
{
	(void)state;
	for (int ttl = 2; ttl <= 255; ttl++) {
		for (int id = 0; id < 4; id++) {
			struct pkt in, *out;
			struct run r;

			build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, (uint8_t)ttl);
			in.ip.id = htons((uint16_t)(id * 0x5555 + ttl));
			in.ip.check = 0;
			in.ip.check = htons((uint16_t)~csum_fold(&in.ip, sizeof(in.ip)));
			r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
			assert_int_equal(r.retval, TC_ACT_REDIRECT);
			out = (struct pkt *)r.out;
			assert_int_equal(out->ip.ttl, ttl - 1);
			if (csum_fold(&out->ip, sizeof(out->ip)) != 0xffff)
				fail_msg("ttl %d id 0x%04x: bad checksum 0x%04x after decrement", ttl,
					 ntohs(in.ip.id), ntohs(out->ip.check));
		}
	}
}

static void test_non_local_passes_unchanged(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	build(&in, mac_a_pod, mac_a_host, t.a.ip, "8.8.8.8", 64);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_int_equal(r.out_len, sizeof(in));
	assert_memory_equal(r.out, &in, sizeof(in));
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(in));

	/* an address of the pod CIDR that is not a local endpoint: the host routes it */
	build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.1.0.77", 64);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, &in, sizeof(in));
}

static void test_spoofed_source(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	/* an address no endpoint has */
	build(&in, mac_a_pod, mac_a_host, "10.1.0.99", t.b.ip, 64);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_INVALID_SOURCE, CW_DIR_EGRESS, sizeof(in));

	/* another pod's address, sent from A's interface */
	build(&in, mac_a_pod, mac_a_host, t.b.ip, "8.8.8.8", 64);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_INVALID_SOURCE, CW_DIR_EGRESS, sizeof(in));

	/* A's address sent from B's interface */
	build(&in, mac_b_pod, mac_b_host, t.a.ip, "8.8.8.8", 64);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.b.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_INVALID_SOURCE, CW_DIR_EGRESS, sizeof(in));
}

/* 0.0.0.0 (DHCP-style probes) is left to the host stack. */
static void test_unspecified_source(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	build(&in, mac_a_pod, mac_a_host, "0.0.0.0", "255.255.255.255", 64);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, &in, sizeof(in));
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(in));
}

/*
 * A frame cut short inside the IPv4 header, or (for TCP/UDP to a local pod)
 * inside the ports, must be dropped as invalid.  Newer kernels (6.18 here)
 * refuse a frame with an incomplete IPv4 header in BPF_PROG_RUN itself
 * (-EINVAL, the program never runs); older ones hand it to the program.
 * Below a complete IP header accept either, but never a verdict other than
 * SHOT or an uncounted drop.
 */
static void truncated_ipv4(int prog_fd, __u32 ifindex, __u32 len, enum cw_dir dir)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	snap(&t.dp, &before);
	r = run_prog(prog_fd, &in, len, ifindex);
	if (r.err == -EINVAL && len < ETH_HLEN + sizeof(struct iphdr)) {
		/* nothing ran, so nothing may be counted */
		assert_counted(&before, -1, dir, 0);
		return;
	}
	assert_int_equal(r.err, 0);
	if (r.retval != TC_ACT_SHOT)
		fail_msg("%u-byte IPv4 frame: verdict %u, expected SHOT", len, r.retval);
	assert_counted(&before, CW_DROP_INVALID_PACKET, dir, len);
}

static void test_truncated(void **state)
{
	struct pkt in;
	struct run r;

	(void)state;
	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);

	/*
	 * Shorter than an Ethernet header: BPF_PROG_RUN refuses it on every
	 * kernel (bpf_test_init: size < ETH_HLEN), so the program's own
	 * Ethernet check cannot be reached from here.
	 */
	r = run_prog(t.from_fd, &in, 13, t.a.info.ifindex);
	assert_int_equal(r.err, -EINVAL);

	truncated_ipv4(t.from_fd, t.a.info.ifindex, ETH_HLEN + 10, CW_DIR_EGRESS);
	truncated_ipv4(t.from_fd, t.a.info.ifindex, ETH_HLEN, CW_DIR_EGRESS);
	truncated_ipv4(t.from_fd, t.a.info.ifindex, ETH_HLEN + 19, CW_DIR_EGRESS);

	/* TCP to a local pod with the ports cut off: its flow cannot be looked up */
	truncated_ipv4(t.from_fd, t.a.info.ifindex, ETH_HLEN + 20, CW_DIR_EGRESS);
	truncated_ipv4(t.from_fd, t.a.info.ifindex, ETH_HLEN + 23, CW_DIR_EGRESS);
	/* the two ports are all it needs */
	r = run_prog(t.from_fd, &in, ETH_HLEN + 24, t.a.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	/* a portless protocol needs only the 20-byte IP header */
	in.ip.protocol = IPPROTO_ICMP;
	r = run_prog(t.from_fd, &in, ETH_HLEN + 20, t.a.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
}

static void test_malformed_ipv4(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	in.ip.version = 6;
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_INVALID_PACKET, CW_DIR_EGRESS, sizeof(in));

	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	in.ip.ihl = 4;
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_INVALID_PACKET, CW_DIR_EGRESS, sizeof(in));
}

static void test_unknown_ethertype(void **state)
{
	static const __u16 types[] = { 0x88cc /* LLDP */, 0x8100 /* VLAN */, 0x0000, 0xffff };
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
		in.eth.h_proto = htons(types[i]);
		snap(&t.dp, &before);
		r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
		assert_int_equal(r.err, 0);
		if (r.retval != TC_ACT_SHOT)
			fail_msg("ethertype 0x%04x: verdict %u", types[i], r.retval);
		assert_counted(&before, CW_DROP_UNKNOWN_L3, CW_DIR_EGRESS, sizeof(in));
	}
}

static void test_arp_and_ipv6_pass(void **state)
{
	uint8_t frame[ETH_HLEN + 40];
	struct snapshot before;
	struct ethhdr *eth = (struct ethhdr *)frame;
	struct run r;

	(void)state;
	/* ARP who-has 10.1.0.1 from pod A */
	memset(frame, 0, sizeof(frame));
	memset(eth->h_dest, 0xff, 6);
	memcpy(eth->h_source, mac_a_pod, 6);
	eth->h_proto = htons(ETH_P_ARP);
	memcpy(frame + ETH_HLEN, "\x00\x01\x08\x00\x06\x04\x00\x01", 8);
	memcpy(frame + ETH_HLEN + 8, mac_a_pod, 6);
	memcpy(frame + ETH_HLEN + 14, "\x0a\x01\x00\x02", 4);
	memcpy(frame + ETH_HLEN + 24, "\x0a\x01\x00\x01", 4);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, frame, ETH_HLEN + 28, t.a.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, frame, ETH_HLEN + 28);
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, ETH_HLEN + 28);

	/* IPv6 is not Causeway's yet: the host stack decides */
	eth->h_proto = htons(ETH_P_IPV6);
	memset(frame + ETH_HLEN, 0, 40);
	frame[ETH_HLEN] = 0x60;
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, frame, sizeof(frame), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(frame));
}

static void test_ttl_exceeded(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	for (int ttl = 0; ttl <= 1; ttl++) {
		build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, (uint8_t)ttl);
		snap(&t.dp, &before);
		r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
		assert_int_equal(r.err, 0);
		assert_int_equal(r.retval, TC_ACT_SHOT);
		assert_counted(&before, CW_DROP_TTL_EXCEEDED, CW_DIR_EGRESS, sizeof(in));
	}
	/* off-node, the host stack does its own TTL handling (and ICMP) */
	build(&in, mac_a_pod, mac_a_host, t.a.ip, "8.8.8.8", 1);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, &in, sizeof(in));
}

/* An endpoint removed from the map is no longer a redirect target. */
static void test_endpoint_removed(void **state)
{
	struct pkt in;
	struct run r;

	(void)state;
	assert_int_equal(cw_ep_delete(&t.dp, ip4(t.b.ip)), 0);
	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_int_equal(cw_ep_delete(&t.dp, ip4(t.b.ip)), 0);
	assert_int_equal(cw_ep_put(&t.dp, ip4(t.b.ip), &t.b.info), 0);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
}

static void test_to_container(void **state)
{
	struct snapshot before;
	uint8_t arp[ETH_HLEN + 28] = { 0 };
	struct pkt in;
	struct run r;

	(void)state;
	/* anything IPv4 towards the pod passes, untouched */
	build(&in, mac_b_host, mac_b_pod, "192.0.2.1", t.b.ip, 60);
	snap(&t.dp, &before);
	r = run_prog(t.to_fd, &in, sizeof(in), t.b.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, &in, sizeof(in));
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_INGRESS, sizeof(in));

	truncated_ipv4(t.to_fd, t.b.info.ifindex, ETH_HLEN + 10, CW_DIR_INGRESS);

	/* bad version */
	in.ip.version = 5;
	snap(&t.dp, &before);
	r = run_prog(t.to_fd, &in, sizeof(in), t.b.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_INVALID_PACKET, CW_DIR_INGRESS, sizeof(in));

	/* ARP towards the pod */
	memset(arp, 0xff, 6);
	memcpy(arp + 6, mac_b_host, 6);
	arp[12] = 0x08;
	arp[13] = 0x06;
	snap(&t.dp, &before);
	r = run_prog(t.to_fd, arp, sizeof(arp), t.b.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_INGRESS, sizeof(arp));
}

/* --- skb->mark and the stack-flow map (NATed same-node flows) --- */

static struct cw_flow_key flow(const char *saddr, const char *daddr, __u16 sport, __u16 dport, __u8 proto)
{
	struct cw_flow_key k;

	memset(&k, 0, sizeof(k));
	k.saddr = ip4(saddr);
	k.daddr = ip4(daddr);
	k.sport = htons(sport);
	k.dport = htons(dport);
	k.proto = proto;
	return k;
}

static int flows_count(void)
{
	struct cw_flow_key key, next, *prev = NULL;
	int n = 0;

	while (bpf_map_get_next_key(t.flows_fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		n++;
	}
	return n;
}

static void flows_clear(void)
{
	struct cw_flow_key key;

	while (bpf_map_get_next_key(t.flows_fd, NULL, &key) == 0)
		assert_int_equal(bpf_map_delete_elem(t.flows_fd, &key), 0);
}

static bool flow_present(struct cw_flow_key k)
{
	__u8 v;

	return bpf_map_lookup_elem(t.flows_fd, &k, &v) == 0;
}

static void set_ports(struct pkt *p, __u16 sport, __u16 dport)
{
	p->tcp.source = htons(sport);
	p->tcp.dest = htons(dport);
}

/* from_container marks what it redirects and leaves other mark bits alone. */
static void test_redirect_sets_mark(void **state)
{
	struct pkt in;
	struct run r;

	(void)state;
	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	r = run_mark(t.from_fd, &in, sizeof(in), t.a.info.ifindex, 0x4001);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_int_equal(r.mark, 0x4001 | CW_MARK_REDIRECTED);

	/* what goes to the stack is not marked */
	build(&in, mac_a_pod, mac_a_host, t.a.ip, "8.8.8.8", 64);
	r = run_mark(t.from_fd, &in, sizeof(in), t.a.info.ifindex, 0x4001);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_int_equal(r.mark, 0x4001);
}

/* A redirected packet reaching the pod: mark bit consumed, nothing learned. */
static void test_to_container_redirected(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	flows_clear();
	build(&in, mac_a_host, mac_a_pod, t.b.ip, t.a.ip, 63);
	snap(&t.dp, &before);
	r = run_mark(t.to_fd, &in, sizeof(in), t.a.info.ifindex, CW_MARK_REDIRECTED | 0x8000);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_int_equal(r.mark, 0x8000);
	assert_memory_equal(r.out, &in, sizeof(in));
	assert_int_equal(flows_count(), 0);
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_INGRESS, sizeof(in));
}

/*
 * B -> A arrives at A without the mark: the host stack forwarded it (and may
 * have NATed it).  to_container records the reply tuple, and A's reply then
 * goes to the stack instead of being redirected to B.
 */
static void test_stack_flow_reply_goes_to_stack(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	flows_clear();
	build(&in, mac_a_host, mac_a_pod, t.b.ip, t.a.ip, 63);
	set_ports(&in, 40000, 8080);
	r = run_mark(t.to_fd, &in, sizeof(in), t.a.info.ifindex, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_int_equal(flows_count(), 1);
	assert_true(flow_present(flow(t.a.ip, t.b.ip, 8080, 40000, IPPROTO_TCP)));

	/* A's reply on that flow: to the stack, untouched and unmarked */
	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	set_ports(&in, 8080, 40000);
	snap(&t.dp, &before);
	r = run_mark(t.from_fd, &in, sizeof(in), t.a.info.ifindex, 0);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_int_equal(r.mark, 0);
	assert_memory_equal(r.out, &in, sizeof(in));
	assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(in));

	/* any other flow between the same pods is still redirected */
	set_ports(&in, 8080, 40001);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	in.ip.protocol = IPPROTO_UDP;
	set_ports(&in, 8080, 40000);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	flows_clear();
}

static void test_stack_flow_portless_and_fragments(void **state)
{
	struct pkt in;
	struct run r;

	(void)state;
	flows_clear();
	/* ICMP: learned with ports 0 */
	build(&in, mac_a_host, mac_a_pod, t.b.ip, t.a.ip, 63);
	in.ip.protocol = IPPROTO_ICMP;
	r = run_mark(t.to_fd, &in, sizeof(in), t.a.info.ifindex, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_true(flow_present(flow(t.a.ip, t.b.ip, 0, 0, IPPROTO_ICMP)));
	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	in.ip.protocol = IPPROTO_ICMP;
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_OK);
	flows_clear();

	/* a non-first TCP fragment carries no ports: learned as ports 0 */
	build(&in, mac_a_host, mac_a_pod, t.b.ip, t.a.ip, 63);
	in.ip.frag_off = htons(0x2000 | 185);
	r = run_mark(t.to_fd, &in, sizeof(in), t.a.info.ifindex, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_true(flow_present(flow(t.a.ip, t.b.ip, 0, 0, IPPROTO_TCP)));
	flows_clear();
}

/* Unmarked traffic from outside the node teaches nothing. */
static void test_stack_flow_only_local_sources(void **state)
{
	struct pkt in;
	struct run r;

	(void)state;
	flows_clear();
	build(&in, mac_a_host, mac_a_pod, "192.0.2.1", t.a.ip, 63);
	r = run_mark(t.to_fd, &in, sizeof(in), t.a.info.ifindex, 0);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_int_equal(flows_count(), 0);
}

/* --- cross-node: ipcache, tunnel map, config --- */

/*
 * from_netdev (the underlay device's ingress): a packet for a local pod,
 * addressed to this host's MAC, goes to the pod's veth as from_overlay's
 * do; a frame for another MAC, a packet for no local pod, and a flow the
 * stack NATed go up the stack unchanged.  The test runs on lo, whose
 * address is all zeros: a zero destination MAC is "this host".
 */
static void test_netdev_delivers_to_local_pod(void **state)
{
	static const uint8_t lo_mac[6] = { 0 };
	struct pkt in, *out;
	struct run r;

	(void)state;
	flows_clear();
	build(&in, mac_a_pod, lo_mac, "10.9.9.9", t.b.ip, 64);
	r = run_prog(bpf_program__fd(t.netdev->progs.from_netdev), &in, sizeof(in), 1);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	out = (struct pkt *)r.out;
	assert_memory_equal(out->eth.h_dest, mac_b_pod, 6);
	assert_memory_equal(out->eth.h_source, mac_b_host, 6);
	assert_int_equal(out->ip.ttl, 63);
	assert_int_equal(csum_fold(&out->ip, sizeof(out->ip)), 0xffff);
	assert_int_equal(r.mark & CW_MARK_REDIRECTED, CW_MARK_REDIRECTED);

	/* another host's frame on a flooding segment */
	build(&in, mac_a_pod, mac_b_host, "10.9.9.9", t.b.ip, 64);
	r = run_prog(bpf_program__fd(t.netdev->progs.from_netdev), &in, sizeof(in), 1);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, &in, sizeof(in));
	/* no local pod */
	build(&in, mac_a_pod, lo_mac, "10.9.9.9", "10.1.0.99", 64);
	r = run_prog(bpf_program__fd(t.netdev->progs.from_netdev), &in, sizeof(in), 1);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, &in, sizeof(in));
	/* the reply of a flow the stack NATed on its way out */
	build(&in, mac_a_pod, lo_mac, "10.9.9.9", t.b.ip, 64);
	{
		struct cw_flow_key k = flow("10.9.9.9", t.b.ip, 40000, 80, IPPROTO_TCP);
		__u8 one = 1;

		assert_int_equal(bpf_map_update_elem(t.flows_fd, &k, &one, BPF_ANY), 0);
	}
	r = run_prog(bpf_program__fd(t.netdev->progs.from_netdev), &in, sizeof(in), 1);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, &in, sizeof(in));
	flows_clear();
}

/*
 * The packets the stack destination-NATed carry CW_MARK_STACK_NAT (the
 * helper's mangle rule): to_netdev, to_overlay and to_container learn the
 * reply's tuple and clear the bit; unmarked packets teach nothing.
 */
static void test_stack_nat_mark_learnt(void **state)
{
	int progs[] = { bpf_program__fd(t.netdev->progs.to_netdev),
			bpf_program__fd(t.overlay->progs.to_overlay), t.to_fd };
	struct pkt in;
	struct run r;

	(void)state;
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
		flows_clear();
		/* a pod's flow to a "ClusterIP", DNATed to 10.9.9.9:8080 by the stack */
		build(&in, mac_a_host, mac_a_pod, "10.9.9.9", t.b.ip, 64);
		set_ports(&in, 8080, 40000);
		r = run_mark(progs[i], &in, sizeof(in), 1, 0x4000);
		assert_int_equal(r.err, 0);
		assert_int_equal(flows_count(), 0);
		r = run_mark(progs[i], &in, sizeof(in), 1, 0x4000 | CW_MARK_STACK_NAT);
		assert_int_equal(r.err, 0);
		assert_int_equal(r.mark & CW_MARK_STACK_NAT, 0);
		assert_int_equal(r.mark & 0x4000, 0x4000);
		assert_true(flow_present(flow(t.b.ip, "10.9.9.9", 40000, 8080, IPPROTO_TCP)));
		assert_int_equal(flows_count(), 1);
	}
	flows_clear();
}

static void ipcache_put(const char *ip, __u8 plen, __u32 identity, const char *tunnel_ip)
{
	struct cw_ipcache_info info = { .identity = identity, .tunnel_ip = tunnel_ip ? ip4(tunnel_ip) : 0 };

	assert_int_equal(cw_ipcache_put(&t.dp, ip4(ip), plen, &info), 0);
}

static void tunnel_put(const char *cidr_ip, __u8 plen, const char *node_ip)
{
	struct cw_tunnel_info info = { .node_ip = ip4(node_ip) };

	assert_int_equal(cw_tunnel_put(&t.dp, ip4(cidr_ip), plen, &info), 0);
}

/* vxlan_ifindex 0 is "no tunnel device"; any other value is where a tunnelled
 * packet is redirected (BPF_PROG_RUN only reports the verdict). */
static void config_set(__u32 vxlan_ifindex)
{
	struct cw_config cfg = { .vxlan_ifindex = vxlan_ifindex, .node_ip = ip4(NODE_IP) };

	assert_int_equal(cw_config_put(&t.dp, &cfg), 0);
}

static size_t lpm_count(int (*keys)(const struct cw_dp *, struct cw_lpm_key **, size_t *))
{
	struct cw_lpm_key *k = NULL;
	size_t n = 0;

	assert_int_equal(keys(&t.dp, &k, &n), 0);
	free(k);
	return n;
}

/* Every cross-node test leaves the maps as it found them: empty, no device. */
static int tunnel_teardown(void **state)
{
	struct cw_lpm_key *k = NULL;
	size_t n = 0;

	(void)state;
	if (cw_ipcache_keys(&t.dp, &k, &n))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (cw_ipcache_delete(&t.dp, k[i].ip4, (__u8)k[i].prefixlen))
			return -1;
	free(k);
	k = NULL;
	if (cw_tunnel_keys(&t.dp, &k, &n))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (cw_tunnel_delete(&t.dp, k[i].ip4, (__u8)k[i].prefixlen))
			return -1;
	free(k);
	config_set(0);
	return 0;
}

/* A tunnel route and no VXLAN device: dropped and counted, not leaked to the stack. */
static void test_tunnel_without_device(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	config_set(0);
	ipcache_put("10.2.0.5", 32, 4242, REMOTE_IP);
	build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.2.0.5", 64);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_NO_TUNNEL_DEV, CW_DIR_EGRESS, sizeof(in));

	/* the same through the tunnel map alone */
	assert_int_equal(cw_ipcache_delete(&t.dp, ip4("10.2.0.5"), 32), 0);
	tunnel_put("10.2.0.0", 24, REMOTE_IP);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_NO_TUNNEL_DEV, CW_DIR_EGRESS, sizeof(in));
}

/* Known to the ipcache but not tunnelled (native routing): the host stack's,
 * untouched, TTL included. */
static void test_native_goes_to_stack(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	config_set((__u32)t.veth_ifindex);
	ipcache_put("10.3.0.5", 32, 4242, NULL);
	tunnel_put("10.2.0.0", 24, REMOTE_IP); /* another CIDR's route */
	for (int ttl = 64; ttl >= 1; ttl -= 63) {
		build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.3.0.5", (uint8_t)ttl);
		snap(&t.dp, &before);
		r = run_mark(t.from_fd, &in, sizeof(in), t.a.info.ifindex, 0x4001);
		assert_int_equal(r.err, 0);
		assert_int_equal(r.retval, TC_ACT_OK);
		assert_int_equal(r.out_len, sizeof(in));
		assert_memory_equal(r.out, &in, sizeof(in));
		assert_int_equal(r.mark, 0x4001);
		assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(in));
	}
}

/* With a device: one routing hop (TTL - 1, valid checksum), L2 and mark kept
 * (the VXLAN device encapsulates the frame as it is), redirected. */
static void test_tunnel_redirect(void **state)
{
	struct snapshot before;
	struct pkt in, want;
	struct run r;

	(void)state;
	config_set((__u32)t.veth_ifindex);
	ipcache_put("10.2.0.5", 32, 4242, REMOTE_IP);
	for (int ttl = 2; ttl <= 255; ttl += 31) {
		build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.2.0.5", (uint8_t)ttl);
		snap(&t.dp, &before);
		r = run_mark(t.from_fd, &in, sizeof(in), t.a.info.ifindex, 0x4001);
		assert_int_equal(r.err, 0);
		assert_int_equal(r.retval, TC_ACT_REDIRECT);
		assert_int_equal(r.out_len, sizeof(in));
		want = in;
		want.ip.ttl = (uint8_t)(ttl - 1);
		want.ip.check = ((struct pkt *)r.out)->ip.check;
		assert_memory_equal(r.out, &want, sizeof(want));
		assert_int_equal(csum_fold(r.out + ETH_HLEN, sizeof(struct iphdr)), 0xffff);
		assert_int_equal(r.mark, 0x4001);
		assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(in));
	}

	/* the node is a hop: a TTL that would reach zero is dropped here */
	for (int ttl = 0; ttl <= 1; ttl++) {
		build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.2.0.5", (uint8_t)ttl);
		snap(&t.dp, &before);
		r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
		assert_int_equal(r.retval, TC_ACT_SHOT);
		assert_counted(&before, CW_DROP_TTL_EXCEEDED, CW_DIR_EGRESS, sizeof(in));
	}

	/* 0.0.0.0 has no identity to put in the VNI: the stack's, as before */
	build(&in, mac_a_pod, mac_a_host, "0.0.0.0", "10.2.0.5", 64);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_OK);
	assert_memory_equal(r.out, &in, sizeof(in));

	/* a spoofed source is still refused before any tunnel decision */
	build(&in, mac_a_pod, mac_a_host, "10.1.0.99", "10.2.0.5", 64);
	snap(&t.dp, &before);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_INVALID_SOURCE, CW_DIR_EGRESS, sizeof(in));

	/* a local destination is never tunnelled, whatever the ipcache says */
	ipcache_put(t.b.ip, 32, 4242, REMOTE_IP);
	build(&in, mac_a_pod, mac_a_host, t.a.ip, t.b.ip, 64);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_memory_equal(((struct pkt *)r.out)->eth.h_dest, mac_b_pod, 6);
	assert_int_equal(r.mark, CW_MARK_REDIRECTED);
}

/*
 * The datapath's own encapsulation (cw_config.underlay_ifindex set): the
 * test veth's peer plays the underlay, holding NODE_IP/24 with REMOTE_IP's
 * MAC in its neighbour table, so the FIB sends the node's VXLAN packets to
 * REMOTE_IP out of it.
 */
static const uint8_t mac_remote_node[6] = { 0x02, 0, 0, 0, 0x77, 0x02 };

static void underlay_config(int underlay_ifindex)
{
	struct cw_config cfg = { .vxlan_ifindex = (__u32)t.veth_ifindex, .node_ip = ip4(NODE_IP),
				 .underlay_ifindex = (__u32)underlay_ifindex };

	assert_int_equal(cw_config_put(&t.dp, &cfg), 0);
}

static void sh_ok(const char *cmd)
{
	if (system(cmd) != 0)
		fail_msg("%s failed", cmd);
}

struct vxlan_frame {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	__be32 vx_flags, vx_vni;
	struct pkt inner;
} __attribute__((packed));

/* @out is @in in VXLAN to REMOTE_IP from NODE_IP, VNI @vni: every outer
 * field as the kernel's VXLAN device writes it, the inner frame @in one hop
 * on.  The outer MACs are the caller's to check. */
static void assert_vxlan_of(const uint8_t *out, __u32 out_len, const struct pkt *in, __u32 vni,
			    uint8_t outer_tos)
{
	const struct vxlan_frame *f = (const struct vxlan_frame *)out;
	struct pkt want = *in;
	__u16 sport;

	assert_int_equal(out_len, sizeof(*in) + CW_VXLAN_OVERHEAD);
	assert_int_equal(ntohs(f->eth.h_proto), ETH_P_IP);
	assert_int_equal(f->ip.version, 4);
	assert_int_equal(f->ip.ihl, 5);
	assert_int_equal(f->ip.tos, outer_tos);
	assert_int_equal(ntohs(f->ip.tot_len), out_len - ETH_HLEN);
	assert_int_equal(ntohs(f->ip.frag_off), 0); /* DF clear, as the device sends */
	assert_int_equal(f->ip.ttl, 64);
	assert_int_equal(f->ip.protocol, IPPROTO_UDP);
	assert_int_equal(f->ip.saddr, ip4(NODE_IP));
	assert_int_equal(f->ip.daddr, ip4(REMOTE_IP));
	assert_int_equal(csum_fold(&f->ip, sizeof(f->ip)), 0xffff);
	sport = ntohs(f->udp.source);
	assert_true(sport >= 32768 && sport <= 60999);
	assert_int_equal(ntohs(f->udp.dest), CW_VXLAN_PORT);
	assert_int_equal(ntohs(f->udp.len), out_len - ETH_HLEN - sizeof(struct iphdr));
	assert_int_equal(f->udp.check, 0);
	assert_int_equal(ntohl(f->vx_flags), 0x08000000);
	assert_int_equal(ntohl(f->vx_vni), vni << 8);
	want.ip.ttl = (uint8_t)(in->ip.ttl - 1);
	want.ip.check = f->inner.ip.check;
	assert_memory_equal(&f->inner, &want, sizeof(want));
	assert_int_equal(csum_fold(&f->inner.ip, sizeof(f->inner.ip)), 0xffff);
}

static void set_tos(struct pkt *p, uint8_t tos)
{
	p->ip.tos = tos;
	p->ip.check = 0;
	p->ip.check = htons((uint16_t)~csum_fold(&p->ip, sizeof(p->ip)));
}

static void test_tunnel_encapsulated_by_datapath(void **state)
{
	int underlay = (int)if_nametoindex(VETH_PEER);
	uint8_t underlay_mac[6];
	struct snapshot before;
	struct vxlan_frame *f;
	struct pkt in;
	struct run r;
	struct nl_sock *sk = NULL;
	char cmd[256];
	int idx = 0;

	(void)state;
	assert_true(underlay > 1);
	sh_ok("ip link set " VETH " up && ip link set " VETH_PEER " up && "
	      "ip addr replace " NODE_IP "/24 dev " VETH_PEER);
	snprintf(cmd, sizeof(cmd), "ip neigh replace " REMOTE_IP " lladdr "
		 "%02x:%02x:%02x:%02x:%02x:%02x dev " VETH_PEER " nud permanent",
		 mac_remote_node[0], mac_remote_node[1], mac_remote_node[2], mac_remote_node[3],
		 mac_remote_node[4], mac_remote_node[5]);
	sh_ok(cmd);
	assert_int_equal(cw_nl_open(&sk), 0);
	assert_int_equal(cw_link_get(sk, VETH_PEER, &idx, underlay_mac, NULL, NULL), 0);
	cw_nl_close(sk);
	assert_int_equal(idx, underlay);
	underlay_config(underlay);
	ipcache_put("10.2.0.5", 32, 4242, REMOTE_IP);

	/* out of the underlay, addressed to the remote node's MAC from the underlay's */
	for (int ttl = 2; ttl <= 255; ttl += 51) {
		build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.2.0.5", (uint8_t)ttl);
		snap(&t.dp, &before);
		r = run_mark(t.from_fd, &in, sizeof(in), t.a.info.ifindex, 0x4001);
		assert_int_equal(r.err, 0);
		assert_int_equal(r.retval, TC_ACT_REDIRECT);
		assert_vxlan_of(r.out, r.out_len, &in, t.a.info.identity, 0);
		f = (struct vxlan_frame *)r.out;
		assert_memory_equal(f->eth.h_dest, mac_remote_node, 6);
		assert_memory_equal(f->eth.h_source, underlay_mac, 6);
		assert_int_equal(r.mark, 0x4001);
		assert_counted(&before, CW_REASON_FORWARDED, CW_DIR_EGRESS, sizeof(in));
	}

	/* the outer ECN follows the inner one; congestion experienced is sent as ECT(0) */
	for (uint8_t ecn = 0; ecn < 4; ecn++) {
		build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.2.0.5", 64);
		set_tos(&in, (uint8_t)(0xb8 | ecn));
		r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
		assert_int_equal(r.retval, TC_ACT_REDIRECT);
		assert_vxlan_of(r.out, r.out_len, &in, t.a.info.identity, ecn == 3 ? 2 : ecn);
	}

	/* the next hop not resolved yet: encapsulated, and the kernel resolves it */
	sh_ok("ip neigh flush dev " VETH_PEER);
	build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.2.0.5", 64);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_vxlan_of(r.out, r.out_len, &in, t.a.info.identity, 0);
	sh_ok(cmd);

	/* too big for the underlay with 50 more bytes: the device's path, which
	 * fragments the outer packet; so is a remote node no route leads to */
	snprintf(cmd, sizeof(cmd), "ip link set " VETH_PEER " mtu %zu",
		 sizeof(in) - ETH_HLEN + CW_VXLAN_OVERHEAD - 1);
	sh_ok(cmd);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_int_equal(r.out_len, sizeof(in));
	snprintf(cmd, sizeof(cmd), "ip link set " VETH_PEER " mtu %zu",
		 sizeof(in) - ETH_HLEN + CW_VXLAN_OVERHEAD);
	sh_ok(cmd);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.out_len, sizeof(in) + CW_VXLAN_OVERHEAD);
	sh_ok("ip link set " VETH_PEER " mtu 1500");

	ipcache_put("10.2.0.6", 32, 4243, "203.0.113.9");
	build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.2.0.6", 64);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_int_equal(r.out_len, sizeof(in));

	/* underlay_ifindex 0 (a config an older helper wrote): the device's path */
	underlay_config(0);
	build(&in, mac_a_pod, mac_a_host, t.a.ip, "10.2.0.5", 64);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.retval, TC_ACT_REDIRECT);
	assert_int_equal(r.out_len, sizeof(in));
	sh_ok("ip addr flush dev " VETH_PEER " && ip neigh flush dev " VETH_PEER);
}

/* from_container's verdict for @dst from pod A (TTL 64). */
static __u32 verdict_for(const char *dst)
{
	struct pkt in;
	struct run r;

	build(&in, mac_a_pod, mac_a_host, t.a.ip, dst, 64);
	r = run_prog(t.from_fd, &in, sizeof(in), t.a.info.ifindex);
	assert_int_equal(r.err, 0);
	return r.retval;
}

/*
 * Which entry decides.  Without a device a tunnel target shows as SHOT
 * (NO_TUNNEL_DEV) and no target as OK, which tells the cases apart.  Which
 * of two targets won (ipcache /32 over a tunnel /24 pointing elsewhere)
 * shows only on the wire: tunnel_netns.py checks that.
 */
static void test_lpm_precedence(void **state)
{
	(void)state;
	config_set(0);

	/* tunnel /24 alone: tunnelled; outside it: the stack's */
	tunnel_put("10.4.0.0", 24, REMOTE_IP);
	assert_int_equal(verdict_for("10.4.0.9"), TC_ACT_SHOT);
	assert_int_equal(verdict_for("10.4.1.9"), TC_ACT_OK);

	/* an ipcache /32 without a tunnel endpoint does not hide the CIDR route */
	ipcache_put("10.4.0.9", 32, 4242, NULL);
	assert_int_equal(verdict_for("10.4.0.9"), TC_ACT_SHOT);

	/* a /32 ipcache entry with one tunnels although no tunnel route covers it */
	ipcache_put("10.4.1.9", 32, 4242, REMOTE_IP);
	assert_int_equal(verdict_for("10.4.1.9"), TC_ACT_SHOT);
	assert_int_equal(verdict_for("10.4.1.10"), TC_ACT_OK);

	/* within the ipcache the longest prefix wins, both ways */
	ipcache_put("10.5.0.0", 24, 4243, REMOTE_IP);
	ipcache_put("10.5.0.9", 32, 4244, NULL);
	assert_int_equal(verdict_for("10.5.0.9"), TC_ACT_OK);
	assert_int_equal(verdict_for("10.5.0.10"), TC_ACT_SHOT);
	ipcache_put("10.6.0.0", 16, 4243, NULL);
	ipcache_put("10.6.7.0", 24, 4244, REMOTE_IP);
	assert_int_equal(verdict_for("10.6.7.1"), TC_ACT_SHOT);
	assert_int_equal(verdict_for("10.6.8.1"), TC_ACT_OK);

	/* and within the tunnel map */
	tunnel_put("10.7.0.0", 16, REMOTE_IP);
	assert_int_equal(verdict_for("10.7.200.1"), TC_ACT_SHOT);
	tunnel_put("10.8.0.0", 16, REMOTE_IP);
	assert_int_equal(cw_tunnel_delete(&t.dp, ip4("10.8.0.0"), 16), 0);
	assert_int_equal(verdict_for("10.8.0.1"), TC_ACT_OK);

	/* a default route in the tunnel map catches everything else */
	tunnel_put("0.0.0.0", 0, REMOTE_IP);
	assert_int_equal(verdict_for("8.8.8.8"), TC_ACT_SHOT);
	assert_int_equal(cw_tunnel_delete(&t.dp, 0, 0), 0);
	assert_int_equal(verdict_for("8.8.8.8"), TC_ACT_OK);
}

/* Whatever reaches from_overlay without tunnel metadata did not come through
 * the VXLAN device: dropped and counted. */
static void test_overlay_needs_tunnel_key(void **state)
{
	struct snapshot before;
	struct pkt in;
	struct run r;

	(void)state;
	build(&in, mac_a_host, mac_a_pod, "10.2.0.5", t.a.ip, 63);
	snap(&t.dp, &before);
	r = run_prog(t.overlay_fd, &in, sizeof(in), t.veth_ifindex);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.retval, TC_ACT_SHOT);
	assert_counted(&before, CW_DROP_NO_TUNNEL_KEY, CW_DIR_INGRESS, sizeof(in));
}

static int cmp_key(const void *a, const void *b)
{
	const struct cw_lpm_key *x = a, *y = b;

	if (x->prefixlen != y->prefixlen)
		return x->prefixlen < y->prefixlen ? -1 : 1;
	return memcmp(&x->ip4, &y->ip4, sizeof(x->ip4));
}

/* The listing holds exactly @want (any order). */
static void assert_keys(int (*keys)(const struct cw_dp *, struct cw_lpm_key **, size_t *),
			const struct cw_lpm_key *want, size_t n_want)
{
	struct cw_lpm_key *got = NULL, sorted[16];
	size_t n = 0;

	assert_int_equal(keys(&t.dp, &got, &n), 0);
	assert_int_equal(n, n_want);
	assert_true(n_want <= 16);
	memcpy(sorted, want, n_want * sizeof(*want));
	qsort(sorted, n_want, sizeof(*sorted), cmp_key);
	if (n)
		qsort(got, n, sizeof(*got), cmp_key);
	for (size_t i = 0; i < n; i++)
		if (cmp_key(&got[i], &sorted[i]))
			fail_msg("key %zu: listed %08x/%u, expected %08x/%u", i, ntohl(got[i].ip4),
				 got[i].prefixlen, ntohl(sorted[i].ip4), sorted[i].prefixlen);
	free(got);
}

static struct cw_lpm_key lpm(const char *ip, __u32 plen)
{
	struct cw_lpm_key k = { .prefixlen = plen, .ip4 = ip4(ip) };

	return k;
}

static void test_ipcache_accessors(void **state)
{
	struct cw_ipcache_info in = { .identity = 0x123456, .tunnel_ip = ip4(REMOTE_IP),
				      .cluster_id = 7, .flags = 0x3 }, out;
	const struct cw_lpm_key want[] = { lpm("10.9.0.0", 16), lpm("10.9.1.0", 24),
					   lpm("10.9.1.5", 32), lpm("0.0.0.0", 0) };

	(void)state;
	assert_int_equal(lpm_count(cw_ipcache_keys), 0);
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.5"), 32, &out), -ENOENT);

	/* host bits are cleared on the way in: one entry, listed canonically */
	assert_int_equal(cw_ipcache_put(&t.dp, ip4("10.9.1.77"), 24, &in), 0);
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.0"), 24, &out), 0);
	assert_memory_equal(&out, &in, sizeof(in));
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.200"), 24, &out), 0);
	in.identity = 99;
	assert_int_equal(cw_ipcache_put(&t.dp, ip4("10.9.1.0"), 24, &in), 0);
	assert_keys(cw_ipcache_keys, want + 1, 1);

	/* get is exact: a covering /24 does not answer for a missing /32 or /25 */
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.5"), 32, &out), -ENOENT);
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.0"), 25, &out), -ENOENT);
	/* nor a more specific entry for a shorter prefix */
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.0.0"), 16, &out), -ENOENT);

	in.identity = 1;
	assert_int_equal(cw_ipcache_put(&t.dp, ip4("10.9.1.5"), 32, &in), 0);
	in.identity = 2;
	assert_int_equal(cw_ipcache_put(&t.dp, ip4("10.9.0.0"), 16, &in), 0);
	in.identity = 3;
	assert_int_equal(cw_ipcache_put(&t.dp, 0, 0, &in), 0);
	assert_keys(cw_ipcache_keys, want, 4);
	/* each exact, whichever place it has in the listing */
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.5"), 32, &out), 0);
	assert_int_equal(out.identity, 1);
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.0.0"), 16, &out), 0);
	assert_int_equal(out.identity, 2);
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.0"), 24, &out), 0);
	assert_int_equal(out.identity, 99);
	assert_int_equal(cw_ipcache_get(&t.dp, 0, 0, &out), 0);
	assert_int_equal(out.identity, 3);
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.6"), 32, &out), -ENOENT);
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.2.0"), 24, &out), -ENOENT);

	assert_int_equal(cw_ipcache_put(&t.dp, ip4("10.9.1.5"), 33, &in), -EINVAL);
	assert_int_equal(cw_ipcache_get(&t.dp, ip4("10.9.1.5"), 33, &out), -EINVAL);
	assert_int_equal(cw_ipcache_delete(&t.dp, ip4("10.9.1.5"), 33), -EINVAL);

	/* delete is exact too, and deleting what is absent is not an error */
	assert_int_equal(cw_ipcache_delete(&t.dp, ip4("10.9.1.6"), 32), 0);
	assert_int_equal(cw_ipcache_delete(&t.dp, ip4("10.9.1.5"), 32), 0);
	assert_int_equal(cw_ipcache_delete(&t.dp, ip4("10.9.1.5"), 32), 0);
	assert_keys(cw_ipcache_keys, (const struct cw_lpm_key[]){ want[0], want[1], want[3] }, 3);
	assert_int_equal(cw_ipcache_delete(&t.dp, ip4("10.9.1.9"), 24), 0);
	assert_int_equal(cw_ipcache_delete(&t.dp, ip4("10.9.0.0"), 16), 0);
	assert_int_equal(cw_ipcache_delete(&t.dp, 0, 0), 0);
	assert_int_equal(lpm_count(cw_ipcache_keys), 0);
}

static void test_tunnel_and_config_accessors(void **state)
{
	struct cw_tunnel_info in = { .node_ip = ip4(REMOTE_IP), .flags = 1 }, out;
	struct cw_config cfg = { .vxlan_ifindex = 7, .node_ip = ip4(NODE_IP), .cluster_id = 3,
				 .flags = 2 }, got;
	struct cw_lpm_key want[8];

	(void)state;
	for (int i = 0; i < 8; i++) {
		char cidr[16];

		snprintf(cidr, sizeof(cidr), "10.%d.0.0", 100 + i);
		want[i] = lpm(cidr, 16);
		in.flags = (__u32)i;
		assert_int_equal(cw_tunnel_put(&t.dp, want[i].ip4, 16, &in), 0);
	}
	assert_keys(cw_tunnel_keys, want, 8);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(cw_tunnel_get(&t.dp, want[i].ip4, 16, &out), 0);
		assert_int_equal(out.flags, i);
		assert_int_equal(out.node_ip, ip4(REMOTE_IP));
		assert_int_equal(cw_tunnel_get(&t.dp, want[i].ip4, 24, &out), -ENOENT);
	}
	/* a resync deleting every listed key empties the map */
	for (int i = 0; i < 8; i++)
		assert_int_equal(cw_tunnel_delete(&t.dp, want[i].ip4, 16), 0);
	assert_int_equal(lpm_count(cw_tunnel_keys), 0);
	assert_int_equal(cw_tunnel_get(&t.dp, want[0].ip4, 16, &out), -ENOENT);

	/* config: one entry, all zero until written */
	assert_int_equal(cw_config_get(&t.dp, &got), 0);
	assert_int_equal(got.vxlan_ifindex, 0);
	assert_int_equal(cw_config_put(&t.dp, &cfg), 0);
	assert_int_equal(cw_config_get(&t.dp, &got), 0);
	assert_memory_equal(&got, &cfg, sizeof(cfg));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_redirect_to_local_pod),
		cmocka_unit_test(test_redirect_from_second_device),
		cmocka_unit_test(test_ttl_checksum_all_values),
		cmocka_unit_test(test_non_local_passes_unchanged),
		cmocka_unit_test(test_spoofed_source),
		cmocka_unit_test(test_unspecified_source),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_malformed_ipv4),
		cmocka_unit_test(test_unknown_ethertype),
		cmocka_unit_test(test_arp_and_ipv6_pass),
		cmocka_unit_test(test_ttl_exceeded),
		cmocka_unit_test(test_endpoint_removed),
		cmocka_unit_test(test_to_container),
		cmocka_unit_test(test_redirect_sets_mark),
		cmocka_unit_test(test_to_container_redirected),
		cmocka_unit_test(test_stack_flow_reply_goes_to_stack),
		cmocka_unit_test(test_stack_flow_portless_and_fragments),
		cmocka_unit_test(test_stack_flow_only_local_sources),
		cmocka_unit_test(test_netdev_delivers_to_local_pod),
		cmocka_unit_test(test_stack_nat_mark_learnt),
		cmocka_unit_test_teardown(test_tunnel_without_device, tunnel_teardown),
		cmocka_unit_test_teardown(test_native_goes_to_stack, tunnel_teardown),
		cmocka_unit_test_teardown(test_tunnel_redirect, tunnel_teardown),
		cmocka_unit_test_teardown(test_tunnel_encapsulated_by_datapath, tunnel_teardown),
		cmocka_unit_test_teardown(test_lpm_precedence, tunnel_teardown),
		cmocka_unit_test(test_overlay_needs_tunnel_key),
		cmocka_unit_test_teardown(test_ipcache_accessors, tunnel_teardown),
		cmocka_unit_test_teardown(test_tunnel_and_config_accessors, tunnel_teardown),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test_lxc: skipped, needs root (BPF_PROG_RUN, unshare)\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
