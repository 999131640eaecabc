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
#define CW_PIN_FROM_OVERLAY   "from_overlay"
#define CW_PIN_TO_OVERLAY     "to_overlay"
#define CW_PIN_FROM_NETDEV    "from_netdev"
#define CW_PIN_TO_NETDEV      "to_netdev"
#define CW_MAP_IPCACHE        "cw_ipcache"
#define CW_MAP_TUNNEL         "cw_tunnel"
#define CW_MAP_CONFIG         "cw_config"
#define CW_MAP_LB4_SERVICES   "cw_lb4_services"
#define CW_MAP_LB4_BACKENDS   "cw_lb4_backends"
#define CW_MAP_LB4_REVNAT     "cw_lb4_revnat"
#define CW_MAP_LB4_CT         "cw_lb4_ct"

/*
 * The node's collect-metadata VXLAN device ("ip link add cw_vxlan type vxlan
 * external dstport 8472"), created by the helper.  8472 is the Linux/Cilium
 * VXLAN port, not IANA's 4789, so a Causeway node and a Cilium node agree.
 */
#define CW_VXLAN_DEV  "cw_vxlan"
#define CW_VXLAN_PORT 8472
/* Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
#define CW_VXLAN_OVERHEAD 50

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
/* Another node of the mesh: its InternalIP's ipcache entry in tunnel mode. */
#define CW_IDENTITY_REMOTE_NODE 6
/* Below this, identities are reserved (DESIGN.md); from here on, pods. */
#define CW_IDENTITY_FIRST_ALLOCATED 256

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
	CW_DROP_FRAG_UNSUPPORTED = 135, /* a fragmented service flow (no fragment tracking) */
	CW_DROP_POLICY_DENIED    = 136, /* reserved: network policy */
	CW_DROP_NO_TUNNEL_KEY    = 137, /* overlay packet without tunnel metadata */
	CW_DROP_TUNNEL_FAILED    = 138, /* bpf_skb_set_tunnel_key refused the key */
	CW_DROP_NO_TUNNEL_DEV    = 139, /* a tunnel route exists, the VXLAN device not */
	CW_DROP_NO_SERVICE_BACKEND = 140, /* a new flow to a service with no backend slot */
	CW_DROP_CT_CREATE_FAILED = 141, /* the conntrack entry of a new service flow not written */
	CW_DROP_MAX,
};

enum cw_dir {
	CW_DIR_INGRESS = 0, /* towards the pod (to-container) */
	CW_DIR_EGRESS  = 1, /* from the pod (from-container) */
};

/*
 * cw_metrics is a per-CPU array (its lookups are inlined by the verifier,
 * a hash's are calls, and every forwarded packet is counted) with one slot
 * per reason and direction.
 */
#define CW_MAX_METRICS 512 /* 256 reasons x 2 directions */

static inline __u32 cw_metrics_index(__u8 reason, __u8 dir)
{
	return (__u32)reason << 1 | (dir & 1);
}

struct cw_metrics_value {
	__u64 packets;
	__u64 bytes;
};

/*
 * Flows whose replies must go through the host stack: flows between local
 * pods that the stack forwarded (and so possibly NATed: a hostPort, a
 * kube-proxy ClusterIP), and any flow the stack destination-NATed
 * (CW_MARK_STACK_NAT).  Keyed by the tuple of the *reply* as it arrives at
 * a fast path (from_container, from_overlay, from_netdev), which then hands
 * it to the stack, whose conntrack undoes the NAT, instead of redirecting it
 * straight to the client.  LRU: an idle flow ages out; a NATed flow's
 * entry is refreshed by every packet of its forward direction.
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

/*
 * skb->mark bit the helper's iptables rule (mangle POSTROUTING, "-m
 * conntrack --ctstate DNAT") sets on every packet of a flow the host stack
 * destination-NATed: a hostPort, a kube-proxy ClusterIP or NodePort, any
 * DNAT rule of the node's own.  The programs on the way out (to_container,
 * to_overlay, to_netdev) learn the flow's reply tuple into cw_stack_flows
 * from it, so the fast paths (from_container's FIB redirect, from_overlay
 * and from_netdev's delivery) leave the replies to the stack, whose
 * conntrack undoes the NAT.
 */
#define CW_MARK_STACK_NAT 0x00400000

/*
 * ipcache: every pod IP of the mesh the helper knows (from the ip/v1 records
 * of the local and remote mesh etcds), longest-prefix match.  tunnel_ip is
 * the node to send the packet to over VXLAN, or 0 when the host stack
 * routes it (native routing, or a local pod).  The source identity of a
 * packet arriving over VXLAN is its VNI; of any other packet, its ipcache
 * entry.
 */
struct cw_lpm_key {
	__u32  prefixlen;  /* 0..32: bits of ip4 that count */
	__be32 ip4;
};

struct cw_ipcache_info {
	__u32  identity;
	__be32 tunnel_ip;   /* 0: not tunnelled */
	__u16  cluster_id;
	__u16  flags;
};

#define CW_MAX_IPCACHE 262144

/*
 * tunnel: remote PodCIDR -> node IP, from the node records.  Consulted when
 * the ipcache has no tunnelled entry for a destination, so a pod whose ip/v1
 * record has not arrived yet is still reachable.  Only nodes the routing
 * mode tunnels to are here (all of them in "tunnel", those on another L2
 * segment in "hybrid", none in "native").
 */
struct cw_tunnel_info {
	__be32 node_ip;
	__u32  flags;
};

#define CW_MAX_TUNNELS 16384

/*
 * Node-wide settings, written by the helper at start-up: one entry, key 0,
 * of an array map.  A zero vxlan_ifindex means "no tunnel device": packets
 * that would be tunnelled are dropped with CW_DROP_NO_TUNNEL_DEV.
 *
 * underlay_ifindex: the interface holding node_ip.  Non-zero, from_container
 * encapsulates a pod's tunnelled packets itself and sends them out of the
 * underlay (bpf/lib/tunnel.h, cw_tunnel_encap_redirect); zero, they go
 * through the VXLAN device and the node's IP stack.  The field was padding
 * before, so a map pinned by an older release reads as zero: the device.
 */
struct cw_config {
	__u32  vxlan_ifindex;
	__be32 node_ip;      /* underlay address: the outer source */
	__u16  cluster_id;
	__u16  flags;
	__u32  underlay_ifindex;
};

/*
 * Service load balancing (ClusterIP), done by from_container on the client's
 * node before the delivery decision, as Cilium's tc datapath does it:
 *
 *   cw_lb4_services  frontend (ClusterIP, port, protocol) -> slot count, id
 *   cw_lb4_backends  (id, slot 1..count) -> backend (pod IP, port, cluster)
 *   cw_lb4_revnat    id -> frontend, to rewrite the source of replies
 *   cw_lb4_ct        conntrack: a flow's backend, and the way back
 *
 * The helper chooses what fills the slots (per affinity and health, a
 * backend repeated for weight); the datapath only hashes a new flow's tuple
 * into a slot (cw_lb4_hash).  The id names one frontend, so each (ClusterIP,
 * port, protocol) has its own.  A flow keeps the backend conntrack recorded
 * for it whatever happens to the slots later, also when that backend has
 * left them: an established connection is never moved to another backend.
 */
struct cw_lb4_key {
	__be32 address;  /* the frontend: ClusterIP */
	__be16 port;     /* the frontend port */
	__u8   proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8   pad;
};

/* Informational for the datapath, for the CLI and the helper's resync. */
#define CW_LB_F_GLOBAL 0x1 /* slots may hold other clusters' backends */

struct cw_lb4_service {
	__u16 count;       /* slots 1..count; 0: new flows are dropped (NO_SERVICE_BACKEND) */
	__u16 rev_nat_id;  /* 1..65535; key of the slots and of the reverse NAT entry */
	__u16 flags;       /* CW_LB_F_* */
	__u16 pad;
};

struct cw_lb4_slot_key {
	__u16 rev_nat_id;
	__u16 slot;        /* 1..count */
};

struct cw_lb4_backend {
	__be32 address;    /* the backend pod */
	__be16 port;       /* its target port */
	__u16  cluster_id; /* the cluster it lives in (informational) */
	__u16  flags;
	__u16  pad;
};

/* What replies of a service's flows carry as their source again. */
struct cw_lb4_reverse_nat {
	__be32 address;
	__be16 port;
	__u16  pad;
};

/*
 * Conntrack of service flows, two entries per flow in one LRU map:
 *
 *   CW_CT_SERVICE  (client, frontend, client port, frontend port) as the
 *                  client sends it -> the backend chosen, the id, state.
 *                  The authority: lifetime and TCP state live here.
 *   CW_CT_REPLY    (backend, client, backend port, client port) as the
 *                  backend answers -> the id.  Only an index: a reply is
 *                  reverse-NATed only while the service entry it leads to
 *                  (through the id's frontend) is alive and names this very
 *                  backend, so a stale index never touches another flow.
 *
 * The entry is created by the flow's first packet, whatever its TCP flags
 * (a flow whose entry was evicted finds the same backend again as long as
 * the slots are unchanged).  A TCP SYN without ACK on a closing entry (RST
 * seen, or FIN from both sides) starts a new flow with a new choice; so
 * does any packet on an expired entry.
 *
 * A client balanced to itself (hairpin) would receive a packet from its own
 * address, which its stack drops as martian; its packets get the source
 * CW_LB_LOOPBACK4 as well, so the reply index of such a flow is (client,
 * CW_LB_LOOPBACK4, backend port, client port), and from_container, which
 * sees that reply, gives it the frontend as source and the client as
 * destination.  The backend socket sees CW_LB_LOOPBACK4 as its peer.
 */
#define CW_LB_LOOPBACK4 0xa9fe2a01 /* 169.254.42.1, host order: Cilium's service loopback */
enum cw_ct_kind {
	CW_CT_SERVICE = 1,
	CW_CT_REPLY   = 2,
};

struct cw_ct4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8   proto;
	__u8   kind;   /* enum cw_ct_kind */
	__u8   pad[2];
};

#define CW_CT_F_ESTABLISHED 0x1 /* TCP: a segment without SYN was seen */
#define CW_CT_F_FIN_CLIENT  0x2 /* TCP: the client sent FIN */
#define CW_CT_F_FIN_BACKEND 0x4 /* TCP: the backend sent FIN */
#define CW_CT_F_RST         0x8 /* TCP: either side sent RST */

/*
 * Lifetimes in seconds after the last packet (Cilium's defaults): an
 * entry past its expiry is gone for the datapath, whatever the LRU keeps.
 * TCP closes when RST is seen or both sides sent FIN; a half-closed
 * connection keeps the established lifetime.
 */
#define CW_CT_LIFETIME_TCP       21600
#define CW_CT_LIFETIME_TCP_SYN   60
#define CW_CT_LIFETIME_TCP_CLOSE 10
#define CW_CT_LIFETIME_NONTCP    60

struct cw_ct4_entry {
	__be32 backend_addr;  /* CW_CT_SERVICE: the chosen backend; 0 in CW_CT_REPLY */
	__be16 backend_port;
	__u16  rev_nat_id;
	__u16  slot;          /* CW_CT_SERVICE: the slot it was chosen from (diagnostics) */
	__u16  flags;         /* CW_CT_F_*, in the service entry */
	__u32  expires;       /* CLOCK_MONOTONIC seconds (bpf_ktime_get_ns() / 1e9) */
};

#define CW_MAX_LB_SERVICES 65536
#define CW_MAX_LB_BACKENDS 262144 /* slots, all services together */
#define CW_MAX_LB_CT       65536  /* entries: two per flow */

/*
 * The slot hash of a new flow, as the client sent it (frontend as the
 * destination): MurmurHash3's 32-bit mixing over the tuple.  Deterministic
 * and seedless, so every node, and a test, maps a tuple to the same slot,
 * and a flow whose entry was lost finds its backend again while the slots
 * stay as they were.  Slot = hash % count + 1.
 */
static inline __attribute__((always_inline)) __u32 cw_lb4_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = (k << 15) | (k >> 17);
	k *= 0x1b873593;
	h ^= k;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64;
}

static inline __attribute__((always_inline)) __u32
cw_lb4_hash(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport, __u8 proto)
{
	__u32 h = proto;

	h = cw_lb4_mix(h, (__u32)saddr);
	h = cw_lb4_mix(h, (__u32)daddr);
	h = cw_lb4_mix(h, (__u32)sport << 16 | (__u32)dport);
	h ^= 12; /* bytes hashed, as MurmurHash3 finishes */
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

_Static_assert(sizeof(struct cw_lb4_key) == 8, "cw_lb4_key layout");
_Static_assert(sizeof(struct cw_lb4_service) == 8, "cw_lb4_service layout");
_Static_assert(sizeof(struct cw_lb4_slot_key) == 4, "cw_lb4_slot_key layout");
_Static_assert(sizeof(struct cw_lb4_backend) == 12, "cw_lb4_backend layout");
_Static_assert(sizeof(struct cw_lb4_reverse_nat) == 8, "cw_lb4_reverse_nat layout");
_Static_assert(sizeof(struct cw_ct4_key) == 16, "cw_ct4_key layout");
_Static_assert(sizeof(struct cw_ct4_entry) == 16, "cw_ct4_entry layout");
_Static_assert(sizeof(struct cw_lpm_key) == 8, "cw_lpm_key layout");
_Static_assert(sizeof(struct cw_ipcache_info) == 12, "cw_ipcache_info layout");
_Static_assert(sizeof(struct cw_tunnel_info) == 8, "cw_tunnel_info layout");
_Static_assert(sizeof(struct cw_config) == 16, "cw_config layout");
_Static_assert(sizeof(struct cw_endpoint_key) == 4, "cw_endpoint_key layout");
_Static_assert(sizeof(struct cw_endpoint_info) == 24, "cw_endpoint_info layout");
_Static_assert(sizeof(struct cw_metrics_value) == 16, "cw_metrics_value layout");
_Static_assert(sizeof(struct cw_flow_key) == 16, "cw_flow_key layout");

#endif /* CAUSEWAY_DATAPATH_H */
