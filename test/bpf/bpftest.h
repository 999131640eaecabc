/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What test_lxc.c and test_lb.c share: the fixture (a private network
 * namespace with a veth pair, bpf/lxc.bpf.c loaded with its maps unpinned,
 * the node's pins checked untouched, a struct cw_dp over it, two local
 * pods), checksums, BPF_PROG_RUN and the per-reason counters.  Header only:
 * every function is static inline, so a test that does not use one is not
 * warned about it.
 */
#ifndef CW_TEST_BPFTEST_H
#define CW_TEST_BPFTEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cmocka.h>

#include <causeway/datapath.h>
#include <causeway/dp.h>

/* bpftool's generated loader casts away const. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#include "lxc.skel.h"
#pragma GCC diagnostic pop

/* The underlay addresses of this node and of a remote one. */
#define NODE_IP   "192.168.77.1"
#define REMOTE_IP "192.168.77.2"

/* Pod A (host veth lo) and pod B (host veth the test veth), as their gateways see them. */
static const uint8_t mac_a_pod[6] __attribute__((unused)) = { 0x0a, 0, 0, 0, 0, 0x02 };
static const uint8_t mac_a_host[6] __attribute__((unused)) = { 0x02, 0, 0, 0, 0x01, 0x02 };
static const uint8_t mac_b_pod[6] __attribute__((unused)) = { 0x0a, 0, 0, 0, 0, 0x03 };
static const uint8_t mac_b_host[6] __attribute__((unused)) = { 0x02, 0, 0, 0, 0x01, 0x03 };

static inline __be32 ip4(const char *s)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		fail_msg("bad test address %s", s);
	return a.s_addr;
}

/* --- fixture --------------------------------------------------------- */

static inline bool pin_exists(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/fs/bpf/%s", name);
	return access(path, F_OK) == 0;
}

/* Which of an object's maps had a pin (under /sys/fs/bpf) before the test loaded it. */
struct bt_pins {
	bool had[16];
	size_t n;
};

/*
 * The object pins its maps by name (under /sys/fs/bpf when no root is
 * given); a test must neither touch the node's pins nor leave any.  Every
 * map, so one added later is covered too: record which pins exist and load
 * none.
 */
static inline int bt_unpin_maps(struct bpf_object *obj, struct bt_pins *p)
{
	struct bpf_map *map;

	p->n = 0;
	bpf_object__for_each_map(map, obj) {
		if (p->n == sizeof(p->had) / sizeof(p->had[0]))
			return -1;
		p->had[p->n++] = pin_exists(bpf_map__name(map));
		if (bpf_map__set_pin_path(map, NULL) || bpf_map__pin_path(map))
			return -1;
	}
	return 0;
}

/* After a load: no map of @obj pinned, no pin under /sys/fs/bpf made or removed. */
static inline int bt_check_pins(const char *who, const char *what, struct bpf_object *obj,
				const struct bt_pins *p)
{
	struct bpf_map *map;
	size_t n = 0;

	bpf_object__for_each_map(map, obj) {
		if (n == p->n || bpf_map__is_pinned(map) || pin_exists(bpf_map__name(map)) != p->had[n]) {
			fprintf(stderr, "%s: %s pinned %s\n", who, what, bpf_map__name(map));
			return -1;
		}
		n++;
	}
	return 0;
}

/* Its maps and the pods' programs. */
static inline void bt_dp_of(struct cw_dp *dp, const struct lxc *skel)
{
	dp->prog_from_container = bpf_program__fd(skel->progs.from_container);
	dp->prog_to_container = bpf_program__fd(skel->progs.to_container);
	dp->map_endpoints = bpf_map__fd(skel->maps.cw_endpoints);
	dp->map_metrics = bpf_map__fd(skel->maps.cw_metrics);
	dp->map_ipcache = bpf_map__fd(skel->maps.cw_ipcache);
	dp->map_tunnel = bpf_map__fd(skel->maps.cw_tunnel);
	dp->map_config = bpf_map__fd(skel->maps.cw_config);
	dp->map_lb4_services = bpf_map__fd(skel->maps.cw_lb4_services);
	dp->map_lb4_backends = bpf_map__fd(skel->maps.cw_lb4_backends);
	dp->map_lb4_revnat = bpf_map__fd(skel->maps.cw_lb4_revnat);
	dp->map_lb4_ct = bpf_map__fd(skel->maps.cw_lb4_ct);
}

/*
 * The group setup both tests begin with: a private network namespace (lo is
 * ifindex 1 there) with the veth pair @veth/@peer (*@veth_ifindex), lxc
 * loaded with its maps unpinned (*@skel, its pins state in @pins), @dp over
 * it.  -1 with a message on stderr, as "@who: ...", on failure.
 */
static inline int bt_setup(const char *who, const char *veth, const char *peer, struct lxc **skel,
			   struct bt_pins *pins, struct cw_dp *dp, int *veth_ifindex)
{
	char cmd[128];

	if (unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "%s: unshare(CLONE_NEWNET): %s\n", who, strerror(errno));
		return -1;
	}
	snprintf(cmd, sizeof(cmd), "ip link add %s type veth peer name %s", veth, peer);
	if (system(cmd) != 0)
		return -1;
	*veth_ifindex = (int)if_nametoindex(veth);
	if (*veth_ifindex <= 1)
		return -1;

	*skel = lxc__open();
	if (!*skel || bt_unpin_maps((*skel)->obj, pins))
		return -1;
	if (lxc__load(*skel)) {
		fprintf(stderr, "%s: loading the programs failed\n", who);
		return -1;
	}
	if (bt_check_pins(who, "loading", (*skel)->obj, pins))
		return -1;
	bt_dp_of(dp, *skel);
	return 0;
}

/* The namespace goes with the process; delete the pair anyway, and check it gone. */
static inline int bt_teardown(const char *veth, int veth_ifindex)
{
	char cmd[64];

	snprintf(cmd, sizeof(cmd), "ip link del %s", veth);
	if (veth_ifindex > 1 && system(cmd) != 0)
		return -1;
	return if_nametoindex(veth) == 0 ? 0 : -1;
}

/* A local pod's endpoint entry. */
static inline struct cw_endpoint_info bt_endpoint(__u32 ifindex, __u16 ep_id, const uint8_t *pod_mac,
						  const uint8_t *host_mac)
{
	struct cw_endpoint_info e = { .ifindex = ifindex, .identity = CW_IDENTITY_INIT, .ep_id = ep_id };

	memcpy(e.pod_mac, pod_mac, 6);
	memcpy(e.host_mac, host_mac, 6);
	return e;
}

/* --- checksums ------------------------------------------------------- */

/* RFC 1071: @sum plus the 16-bit words of @len bytes (an odd one padded). */
static inline uint32_t sum16(const void *data, size_t len, uint32_t sum)
{
	const uint8_t *p = data;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static inline uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* The folded sum over @len bytes; 0xffff over a header with a valid checksum. */
static inline uint16_t csum_fold(const void *data, size_t len)
{
	return fold(sum16(data, len, 0));
}

/* --- BPF_PROG_RUN ---------------------------------------------------- */

/*
 * One run of @prog_fd over @len bytes of @in, as the skb of device @ifindex
 * with skb->mark *@mark: the frame comes back in @out (*@out_len, in: its
 * size), the mark after the program in *@mark, the verdict in *@retval.
 * 0 or -errno.
 */
static inline int bt_prog_run(int prog_fd, const void *in, __u32 len, __u32 ifindex, void *out,
			      __u32 *out_len, __u32 *mark, __u32 *retval)
{
	struct __sk_buff ctx = { .ifindex = ifindex, .mark = *mark }, ctx_out = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in, .data_size_in = len,
		    .data_out = out, .data_size_out = *out_len,
		    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx),
		    .ctx_out = &ctx_out, .ctx_size_out = sizeof(ctx_out), .repeat = 1);
	int err = bpf_prog_test_run_opts(prog_fd, &opts) ? -errno : 0;

	*retval = opts.retval;
	*out_len = opts.data_size_out;
	*mark = ctx_out.mark;
	return err;
}

/* --- counters -------------------------------------------------------- */

static inline struct cw_metrics_value counter(int metrics_fd, enum cw_reason reason, enum cw_dir dir)
{
	struct cw_metrics_value v = { 0 };
	int err = cw_metrics_sum(metrics_fd, (__u8)reason, (__u8)dir, &v);

	if (err && err != -ENOENT)
		fail_msg("cw_metrics_sum: %s", strerror(-err));
	return v;
}

/* All counters of a metrics map, so a test can assert that exactly one of them moved. */
struct snapshot {
	int metrics_fd;
	struct cw_metrics_value v[2][CW_DROP_MAX];
};

static inline void snap_metrics(int metrics_fd, struct snapshot *s)
{
	s->metrics_fd = metrics_fd;
	for (int d = 0; d < 2; d++)
		for (int r = 0; r < CW_DROP_MAX; r++)
			if (r == CW_REASON_FORWARDED || r >= CW_DROP_MIN)
				s->v[d][r] = counter(metrics_fd, (enum cw_reason)r, (enum cw_dir)d);
}

static inline void snap(const struct cw_dp *dp, struct snapshot *s)
{
	snap_metrics(dp->map_metrics, s);
}

/* Exactly one packet of @bytes counted under (@reason, @dir) since @before; @reason -1: none at all. */
static inline void assert_counted(const struct snapshot *before, int reason, enum cw_dir dir,
				  __u64 bytes)
{
	struct snapshot after;
	char moved[512] = "";
	size_t off = 0;
	bool ok = true;

	snap_metrics(before->metrics_fd, &after);
	for (int d = 0; d < 2; d++) {
		for (int r = 0; r < CW_DROP_MAX; r++) {
			__u64 dp = after.v[d][r].packets - before->v[d][r].packets;
			__u64 db = after.v[d][r].bytes - before->v[d][r].bytes;
			bool want = d == (int)dir && r == reason;

			if (r != CW_REASON_FORWARDED && r < CW_DROP_MIN)
				continue;
			if (dp && off < sizeof(moved))
				off += (size_t)snprintf(moved + off, sizeof(moved) - off,
							" [%s, dir %d: +%llu packets, +%llu bytes]",
							cw_reason_name((unsigned int)r), d,
							(unsigned long long)dp, (unsigned long long)db);
			if (dp != (want ? 1u : 0u) || (want && db != bytes))
				ok = false;
		}
	}
	if (!ok)
		fail_msg("expected one packet of %llu bytes under reason %d (\"%s\") dir %d; moved:%s",
			 (unsigned long long)bytes, reason,
			 reason < 0 ? "none" : cw_reason_name((unsigned int)reason), dir,
			 moved[0] ? moved : " nothing");
}

#endif
