// SPDX-License-Identifier: Apache-2.0
/*
 * floor-attach: put test/bench/floor.bpf.c on a device of a bare node.
 *
 *   floor-attach tx NETNS DEV VXLAN_DEV REMOTE_IP DST_CIDR VNI
 *       floor_tx on DEV's tc ingress: packets for DST_CIDR go to REMOTE_IP
 *       with VNI over VXLAN_DEV (a collect-metadata device)
 *   floor-attach rx NETNS VXLAN_DEV HOST_DEV POD_MAC
 *       floor_rx on VXLAN_DEV's tc ingress: every frame goes to HOST_DEV's
 *       egress, addressed to POD_MAC from HOST_DEV's MAC
 *
 * NETNS is a path (/run/netns/NAME).  Each call loads its own copy of the
 * program with these values compiled in as constants and exits; the tc
 * filter keeps the program, and goes with the device or the namespace.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>

#include <causeway/addr.h>
#include <causeway/netlink.h>

/* bpftool's generated code drops a const */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#include "floor.skel.h"
#pragma GCC diagnostic pop

static int die(const char *what, const char *arg)
{
	fprintf(stderr, "floor-attach: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
	return 1;
}

/* @dev's ifindex (and MAC, when @mac is given) in the current namespace; 0: none. */
static int link_of(struct nl_sock *sk, const char *dev, const char *role, uint8_t *mac)
{
	int idx = 0;

	if (cw_link_get(sk, dev, &idx, mac, NULL, NULL) < 0) {
		fprintf(stderr, "floor-attach: %s %s: no such device in the namespace\n", role,
			dev);
		return 0;
	}
	return idx;
}

int main(int argc, char **argv)
{
	struct nl_sock *sk = NULL;
	struct floor_bpf *skel;
	struct bpf_program *prog;
	int nsfd, ifindex, err;
	bool tx;

	if (argc < 2 || (strcmp(argv[1], "tx") && strcmp(argv[1], "rx")) ||
	    (!strcmp(argv[1], "tx") && argc != 8) || (!strcmp(argv[1], "rx") && argc != 6)) {
		fprintf(stderr, "usage: floor-attach tx NETNS DEV VXLAN_DEV REMOTE_IP DST_CIDR VNI\n"
				"       floor-attach rx NETNS VXLAN_DEV HOST_DEV POD_MAC\n");
		return 2;
	}
	tx = !strcmp(argv[1], "tx");
	if (cw_netns_open(argv[2], &nsfd) < 0 || cw_netns_enter(nsfd) < 0)
		return die("cannot enter network namespace", argv[2]);
	close(nsfd);
	if (cw_nl_open(&sk) < 0)
		return die("cannot open a netlink socket", NULL);

	skel = floor_bpf__open();
	if (!skel)
		return die("cannot open the program", NULL);
	ifindex = link_of(sk, argv[3], "attach device", NULL);
	if (!ifindex)
		return 1;
	if (tx) {
		struct cw_prefix4 dst;
		struct in_addr remote;

		if (!cw_addr4_parse(argv[5], &remote) || !cw_prefix4_parse(argv[6], &dst) ||
		    dst.len < 1)
			return die("bad REMOTE_IP or DST_CIDR", argv[5]);
		skel->rodata->remote_ip = remote.s_addr;
		skel->rodata->dst_mask = htonl(~0u << (32 - dst.len));
		skel->rodata->dst_net = dst.addr.s_addr;
		skel->rodata->vni = (unsigned)strtoul(argv[7], NULL, 10);
		skel->rodata->out_ifindex = link_of(sk, argv[4], "VXLAN device", NULL);
		prog = skel->progs.floor_tx;
	} else {
		uint8_t macs[2 * 6]; /* the pod's, then its gateway's (HOST_DEV's) */

		if (!cw_mac_parse(argv[5], macs))
			return die("bad POD_MAC", argv[5]);
		skel->rodata->out_ifindex = link_of(sk, argv[4], "host device", macs + 6);
		memcpy((void *)skel->rodata->macs, macs, sizeof(macs));
		prog = skel->progs.floor_rx;
	}
	cw_nl_close(sk);
	if (!skel->rodata->out_ifindex)
		return 1;
	bpf_program__set_autoload(tx ? skel->progs.floor_rx : skel->progs.floor_tx, false);
	err = floor_bpf__load(skel);
	if (err)
		return die("cannot load the program", strerror(-err));

	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = bpf_program__fd(prog));
	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST)
		return die("cannot add clsact", strerror(-err));
	err = bpf_tc_attach(&hook, &opts);
	if (err)
		return die("cannot attach", strerror(-err));
	floor_bpf__destroy(skel); /* the filter holds the program */
	return 0;
}
