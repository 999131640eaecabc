/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The datapath contract: every map name, key, value and constant that the
 * BPF programs and user space both see is defined here and only here.
 *
 * This header is included by bpf/ programs (clang -target bpf, with vmlinux-free
 * <linux/types.h>) and by user space (gcc), so it uses only fixed-width kernel
 * types and explicit padding.  test/bpf/test_layout.c asserts the sizes user
 * space sees; the same _Static_asserts below run under the BPF compiler.
 */
#ifndef CAUSEWAY_DATAPATH_H
#define CAUSEWAY_DATAPATH_H

#include <linux/types.h>

/* Pin names under the node's bpffs root (config "bpfRoot"). */
#define CW_PIN_FROM_CONTAINER "from_container"
#define CW_PIN_TO_CONTAINER   "to_container"
#define CW_MAP_ENDPOINTS      "cw_endpoints"
#define CW_MAP_METRICS        "cw_metrics"
#define CW_MAP_STACK_FLOWS    "cw_stack_flows"

#define CW_DEFAULT_BPF_ROOT  "/sys/fs/bpf/causeway"
#define CW_DEFAULT_STATE_DIR "/var/lib/causeway"

/*
 * tc attachment of the per-endpoint programs: one filter at a fixed
 * handle/priority on each direction of the host-side veth, so CHECK and GC
 * can find exactly what ADD attached and nothing else.
 */
#define CW_TC_HANDLE   0xc5a1
#define CW_TC_PRIORITY 1

#define CW_MAX_ENDPOINTS 65536

/*
 * Reserved security identities (numbering as Cilium's, so a mesh with Cilium
 * clusters agrees on them).  An endpoint starts as "init" until the helper
 * resolves its labels to a real identity.
 */
#define CW_IDENTITY_UNKNOWN 0
#define CW_IDENTITY_HOST    1
#define CW_IDENTITY_WORLD   2
#define CW_IDENTITY_INIT    5

/* Local endpoint: a pod interface on this node, keyed by its IPv4 address. */
struct cw_endpoint_key {
	__be32 ip4;
};

#define CW_EP_F_HOST_NEIGH 0x1 /* host side has a static neighbour entry */

struct cw_endpoint_info {
	__u32 ifindex;       /* host-side veth */
	__u32 identity;      /* security identity of the pod */
	__u16 ep_id;         /* endpoint id (low 16 bits of the host ifindex) */
	__u16 flags;         /* CW_EP_F_* */
	__u8  pod_mac[6];    /* MAC of the pod-side interface */
	__u8  host_mac[6];   /* MAC of the host-side veth (the pod's gateway) */
};

/*
 * Metrics: per-CPU packet and byte counters by reason and direction.  Reason
 * 0 counts forwarded packets; every other reason is a drop.  Drop reasons are
 * positive here and returned negated inside the programs (as Cilium does) so
 * they can never be confused with a TC_ACT_* verdict.
 */
enum cw_reason {
	CW_REASON_FORWARDED      = 0,
	CW_DROP_MIN              = 130,
	CW_DROP_INVALID_PACKET   = 130, /* truncated or malformed L2/L3 header */
	CW_DROP_UNKNOWN_L3       = 131, /* neither IPv4, IPv6 nor ARP */
	CW_DROP_INVALID_SOURCE   = 132, /* pod sent from an IP that is not its own */
	CW_DROP_TTL_EXCEEDED     = 133, /* TTL would reach zero on redirect */
	CW_DROP_REDIRECT_FAILED  = 134, /* bpf_redirect refused the ifindex */
	CW_DROP_FRAG_UNSUPPORTED = 135, /* reserved: fragments needing L4 state */
	CW_DROP_POLICY_DENIED    = 136, /* reserved: network policy */
	CW_DROP_MAX,
};

enum cw_dir {
	CW_DIR_INGRESS = 0, /* towards the pod (to-container) */
	CW_DIR_EGRESS  = 1, /* from the pod (from-container) */
};

struct cw_metrics_key {
	__u8  reason;  /* enum cw_reason */
	__u8  dir;     /* enum cw_dir */
	__u16 pad;
};

struct cw_metrics_value {
	__u64 packets;
	__u64 bytes;
};

#define CW_MAX_METRICS 512

/*
 * Flows between local pods that the host stack forwarded (and so possibly
 * NATed: a hostPort, a kube-proxy ClusterIP).  Keyed by the tuple of the
 * *reply* as the replying pod sends it, so from_container hands replies back
 * to the stack, whose conntrack undoes the NAT, instead of redirecting them
 * straight to the client.  LRU: an idle flow ages out.
 */
struct cw_flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;  /* 0 for protocols without ports */
	__be16 dport;
	__u8   proto;
	__u8   pad[3];
};

#define CW_MAX_STACK_FLOWS 65536

/*
 * skb->mark bit set by from_container on packets it redirects, so
 * to_container can tell them from packets the host stack forwarded.  Chosen
 * clear of kube-proxy's 0x4000/0x8000 and Cilium's 0x0f00 ranges.
 */
#define CW_MARK_REDIRECTED 0x00200000

_Static_assert(sizeof(struct cw_endpoint_key) == 4, "cw_endpoint_key layout");
_Static_assert(sizeof(struct cw_endpoint_info) == 24, "cw_endpoint_info layout");
_Static_assert(sizeof(struct cw_metrics_key) == 4, "cw_metrics_key layout");
_Static_assert(sizeof(struct cw_metrics_value) == 16, "cw_metrics_value layout");
_Static_assert(sizeof(struct cw_flow_key) == 16, "cw_flow_key layout");

#endif /* CAUSEWAY_DATAPATH_H */
