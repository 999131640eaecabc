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
#include <fcntl.h>
#include <net/if.h>
#include <netinet/ether.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <bpf/libbpf.h>

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

static int ifindex_of(const char *dev, const char *role)
{
	int idx = (int)if_nametoindex(dev);

	if (!idx)
		fprintf(stderr, "floor-attach: %s %s: no such device in the namespace\n", role,
			dev);
	return idx;
}

static int mac_of(const char *dev, unsigned char mac[ETH_ALEN])
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc;

	if (fd < 0)
		return -1;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
	rc = ioctl(fd, SIOCGIFHWADDR, &ifr);
	close(fd);
	if (rc < 0)
		return -1;
	memcpy(mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
	return 0;
}

int main(int argc, char **argv)
{
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
	nsfd = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0)
		return die("cannot enter network namespace", argv[2]);
	close(nsfd);

	skel = floor_bpf__open();
	if (!skel)
		return die("cannot open the program", NULL);
	ifindex = ifindex_of(argv[3], "attach device");
	if (!ifindex)
		return 1;
	if (tx) {
		struct in_addr remote, net;
		char cidr[32], *slash;
		long plen;

		snprintf(cidr, sizeof(cidr), "%s", argv[6]);
		slash = strchr(cidr, '/');
		if (!slash)
			return die("DST_CIDR needs a prefix length", argv[6]);
		*slash = '\0';
		plen = strtol(slash + 1, NULL, 10);
		if (inet_pton(AF_INET, argv[5], &remote) != 1 ||
		    inet_pton(AF_INET, cidr, &net) != 1 || plen < 1 || plen > 32)
			return die("bad REMOTE_IP or DST_CIDR", argv[5]);
		skel->rodata->remote_ip = remote.s_addr;
		skel->rodata->dst_mask = htonl(~0u << (32 - plen));
		skel->rodata->dst_net = net.s_addr & skel->rodata->dst_mask;
		skel->rodata->vni = (unsigned)strtoul(argv[7], NULL, 10);
		skel->rodata->out_ifindex = ifindex_of(argv[4], "VXLAN device");
		prog = skel->progs.floor_tx;
	} else {
		struct ether_addr *pod = ether_aton(argv[5]);
		unsigned char gw[ETH_ALEN];

		skel->rodata->out_ifindex = ifindex_of(argv[4], "host device");
		if (!pod || mac_of(argv[4], gw) < 0)
			return die("bad POD_MAC, or no MAC on HOST_DEV", argv[5]);
		memcpy((void *)skel->rodata->macs, pod->ether_addr_octet, ETH_ALEN);
		memcpy((void *)(skel->rodata->macs + ETH_ALEN), gw, ETH_ALEN);
		prog = skel->progs.floor_rx;
	}
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
