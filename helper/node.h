/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node role: the helper that runs on every node.  Its one context
 * struct holds all mutable state of the process (STYLE.md: no other
 * globals); node.c owns its life cycle and the mesh-store side,
 * datapath.c keeps the kernel equal to it, api.c serves it.
 */
#ifndef CW_HELPER_NODE_H
#define CW_HELPER_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <causeway/addr.h>
#include <causeway/dp.h>
#include <causeway/endpoint.h>
#include "etcdconf.h"
#include "k8s.h"
#include "masq.h"
#include "kvwatch.h"
#include "loop.h"
#include "records.h"

enum cw_routing {
	CW_ROUTING_TUNNEL,
	CW_ROUTING_NATIVE,
	CW_ROUTING_HYBRID,
};

const char *cw_routing_name(enum cw_routing r);
bool cw_routing_parse(const char *s, enum cw_routing *out);

struct cw_node_opts {
	const char *cluster;
	unsigned int cluster_id;
	const char *node_name;
	const char *bpf_root;
	const char *state_dir;
	const char *socket;
	const char *etcd_config;
	const char *k8s_api;          /* NULL: in-cluster, or none when not in a pod */
	const char *k8s_ca_file;
	const char *k8s_token_file;
	bool no_k8s;                  /* run from etcd and flags alone */
	enum cw_routing routing;
	const char *metrics_addr;     /* "127.0.0.1:9962"; NULL: no metrics endpoint */
	const char *clustermesh_dir;  /* one etcd config per remote cluster; NULL: none */
	struct in_addr node_ip;       /* 0: the Node's InternalIP */
	struct cw_prefix4 pod_cidr;   /* len 0: the Node's spec.podCIDR */
	int lease_ttl;                /* seconds */
	int remote_eviction_s;        /* a remote's last state outlives its loss this long */
	bool no_masquerade;           /* pods' traffic leaving the mesh keeps its source */
	struct cw_prefix4 masq_except[CW_MASQ_EXCEPT_MAX]; /* never masqueraded to */
	size_t n_masq_except;
	bool tunnel_through_stack;    /* pods' tunnelled packets via cw_vxlan, not encapsulated by BPF */
};

/*
 * How long an unreachable remote cluster's last state (routes, identities,
 * service backends) is kept before it is withdrawn; its heartbeat ages the
 * same way.  Two heartbeat periods: one late heartbeat or a restart of its
 * etcd or mesh-apiserver never evicts, a dead cluster stops drawing traffic
 * after two minutes (README "Remote clusters").
 */
#define CW_REMOTE_EVICTION_DEFAULT_S 120
/* A remote's store is read this often, each read given this long to answer. */
#define CW_REMOTE_PROBE_MS 5000
#define CW_REMOTE_PROBE_TIMEOUT_MS 5000

/* A pod interface on this node, from the plugin's state file. */
struct cw_local_ep {
	struct cw_endpoint_state st;
	char labels[CW_LABELS_MAX];   /* "" until resolved */
	uint32_t identity;            /* 0 until allocated */
	bool published;               /* its ip/v1 record is in etcd under our lease */
	bool seen;                    /* marked by a rescan */
	struct cw_local_ep *next;
};

enum cw_remote_state {
	CW_REMOTE_CONNECTING,   /* not reached yet, or lost: its last state is kept */
	CW_REMOTE_REFUSED,      /* its config or cluster-config is unacceptable */
	CW_REMOTE_CONNECTED,
};

/* A remote cluster, read-only, from one file of the clustermesh directory. */
struct cw_remote {
	struct cw_node *n;
	char name[CW_CLUSTER_NAME_MAX + 1];
	unsigned int id;              /* from its cilium/cluster-config; 0 until read */
	char *file_text;              /* the config it was connected with */
	struct cw_etcd_conf conf;
	struct cw_kv *kv;
	struct cw_kv_watch *w_nodes, *w_ips, *w_ids, *w_svcs, *w_synced, *w_heartbeat;
	bool canaries;                /* its cluster-config promises synced canaries */
	enum cw_remote_state state;
	char why[384];
	struct cw_timer *t_retry, *t_health;
	unsigned int attempt;
	/*
	 * Eviction: since when it has been unreachable (or its heartbeat
	 * stale; 0 while healthy), and whether its last state has been
	 * withdrawn for being so longer than --remote-eviction-timeout.
	 */
	int64_t lost_ms;
	bool evicted;
	char lost_why[256];
	/*
	 * The store's answer to a read every CW_REMOTE_PROBE_MS: an etcd that
	 * keeps its streams open but answers nothing (stopped, wedged, no
	 * quorum) shows only here.  probe_why is "" while it answers.
	 */
	struct cw_kv_req *probe;
	int64_t probe_ms;             /* when the last probe started */
	struct cw_kv_req *connect;    /* the cluster-config read that connecting starts with */
	char probe_why[256];
	char overlap[256], overlap_new[256];  /* a PodCIDR overlap found by the last reconcile */
	bool seen;                    /* marked by a directory rescan */
	struct cw_remote *next;
};

/*
 * One frontend as programmed in the service maps: its key, its reverse
 * NAT id (stable for the frontend's life, so conntrack keeps meaning the
 * same thing across reconciles and restarts), its slots, and the service
 * it belongs to for the CLI.
 */
struct cw_lb_fe {
	struct cw_lb4_key key;
	uint16_t id;
	uint16_t flags;               /* CW_LB_F_* */
	struct cw_lb4_backend *slots;
	size_t n;
	char ns[64], name[64];        /* "" when adopted from the maps and not seen since */
	char port_name[64];
	uint8_t affinity;             /* enum cw_affinity */
	bool shared;
};

struct cw_lb_table {
	struct cw_lb_fe *v;           /* sorted by key */
	size_t n, cap;
};

/* A key to delete from the local store: a withdrawn ip/v1 record, a released value/ reference. */
struct cw_withdraw {
	char key[CW_LABELS_MAX + 320];
	struct cw_withdraw *next;
};

/* The publication request in flight (node.c): what its answer refers to, by value. */
enum cw_pub_kind { CW_PUB_WITHDRAW, CW_PUB_NODE, CW_PUB_EP, CW_PUB_IDENTITY };

/*
 * An identity being resolved for a label set, one etcd request at a time
 * on the publication channel (node.c, "identities"): the transaction that
 * claims a free number, the reads that tell who won a lost race, the
 * reference put.
 */
enum cw_id_stage { CW_ID_IDLE, CW_ID_TXN, CW_ID_GET, CW_ID_LIST, CW_ID_REF };

struct cw_id_op {
	enum cw_id_stage stage;
	char labels[CW_LABELS_MAX];
	char cid[256], ifname[16];    /* the endpoint that asked, found again by */
	int64_t lease;                /* the reference's lease */
	uint32_t candidate;           /* the local id the transaction tries */
	uint32_t found;               /* the identity, once known */
	uint8_t *used;                /* bitmap of local ids known to be taken */
};

struct cw_pub_op {
	enum cw_pub_kind kind;
	char key[CW_LABELS_MAX + 320];
	int64_t lease;                /* the put's lease */
	struct in_addr ip;            /* CW_PUB_EP: the endpoint, found again by */
	char cid[256], ifname[16];    /* ... its container and interface */
	uint32_t identity;            /* the identity the record carries */
	uint64_t gen;                 /* n->pub_gen when it went out */
};

struct cw_node_counters {
	uint64_t invalid_records;     /* dropped by validation */
	uint64_t reconciles;
	uint64_t map_writes, map_deletes;
	uint64_t route_adds, route_deletes;
	uint64_t publish_errors;
	uint64_t identities_allocated;
	uint64_t invalid_services;    /* Service or EndpointSlice objects that do not parse */
	uint64_t lb_writes, lb_removes;
	uint64_t ct_collected;        /* conntrack entries removed by the periodic GC */
	uint64_t evictions;           /* remote clusters withdrawn for being unreachable */
};

struct cw_node {
	struct cw_node_opts o;
	struct cw_loop *loop;
	bool stopping;

	/* mesh store */
	struct cw_etcd_conf etcd_conf;
	struct cw_kv *kv;
	struct cw_kv_watch *w_nodes, *w_ips, *w_ids;
	int64_t lease;
	struct cw_timer *t_lease, *t_publish, *t_reconcile;
	struct cw_kv_req *lease_req;  /* keepalives and grants, on the loop */
	struct cw_kv_req *pub_req;    /* record publication, one request at a time */
	struct cw_pub_op pub_op;
	struct cw_id_op id_op;
	uint64_t pub_gen;             /* bumped whenever something must be published again */
	unsigned int publish_attempt;
	bool node_published;
	int64_t last_publish_ms;

	/* Kubernetes */
	struct cw_k8s *k8s;
	struct cw_k8s_informer *i_node, *i_pods, *i_namespaces, *i_services, *i_slices;

	/* pod traffic leaving the mesh: masq.h */
	struct cw_masq masq;

	/* what this node is */
	struct in_addr node_ip;
	struct cw_prefix4 pod_cidr;
	char boot_id[64];

	/* endpoints */
	struct cw_local_ep *eps;
	struct cw_withdraw *withdraw;
	int inotify_fd;
	struct cw_io *inotify_io;

	/* remote clusters */
	struct cw_remote *remotes;
	int mesh_inotify_fd;
	struct cw_io *mesh_io;

	/* datapath */
	struct cw_dp *dp;
	struct nl_sock *nl;
	int vxlan_ifindex;
	int underlay_ifindex;
	char underlay_dev[16];
	unsigned int underlay_mtu;
	bool dp_ready;                /* VXLAN device and config map in place */
	bool dp_synced;               /* the first full reconcile has run */
	char dp_load_error[256];      /* why this release's programs do not all run; "" when they do */
	unsigned int dp_moved;        /* attachments moved to this release's programs at start */
	struct cw_prefix4 *local_cidrs; /* every local node's PodCIDR, as of the last reconcile */
	size_t n_local_cidrs;
	struct cw_lb_table lb;        /* the service maps' content */
	bool lb_loaded;               /* lb read back from the maps (once, or after an error) */
	uint16_t lb_next_id;          /* where the search for a free reverse NAT id starts */
	struct cw_timer *t_ct_gc, *t_resync, *t_lb;
	int64_t last_reconcile_ms;

	/* API */
	int api_fd, metrics_fd;
	struct cw_io *api_io, *metrics_io;

	struct cw_node_counters c;
	char last_error[512];
	int64_t started_ms;
};

int cw_node_main(const struct cw_node_opts *o);

/* Ask for a datapath reconcile on the loop's next turn. */
void cw_node_reconcile_soon(struct cw_node *n);
/*
 * Ask for the service maps alone to be reconciled on the loop's next turn
 * (a Service, EndpointSlice or remote service record changed): nothing
 * else depends on them, and the full reconcile reads every pod record.
 */
void cw_node_services_soon(struct cw_node *n);
/* Ask for publication of the node and endpoint records. */
void cw_node_publish_soon(struct cw_node *n);
/*
 * Whether a record read from @cluster's store is valid for that cluster;
 * logs and counts it when not (once per change: call it from the watch).
 */
bool cw_mesh_record_ok(struct cw_node *n, const char *cluster, unsigned int cluster_id,
		       const struct cw_kv_pair *kv);
__attribute__((format(printf, 2, 3)))
void cw_node_error(struct cw_node *n, const char *fmt, ...);

/*
 * Whether @ip belongs to this cluster (a local node's PodCIDR holds it, or a
 * local ip/v1 record names it): a remote cluster's record for it is refused.
 */
bool cw_ip_is_local(struct cw_node *n, struct in_addr ip);
/* Whether @p overlaps a PodCIDR of this cluster. */
bool cw_cidr_is_local(struct cw_node *n, const struct cw_prefix4 *p);

/* datapath.c */
int cw_datapath_setup(struct cw_node *n);
int cw_datapath_reconcile(struct cw_node *n);
void cw_datapath_update_endpoint(struct cw_node *n, const struct cw_local_ep *ep);
/* One ip/v1 record of @cluster_id put or deleted: its ipcache entry, now. */
void cw_datapath_ip_put(struct cw_node *n, unsigned int cluster_id, const struct cw_kv_pair *kv);
void cw_datapath_ip_del(struct cw_node *n, unsigned int cluster_id, const struct cw_kv_pair *old);

/* clusters.c */
int cw_clusters_start(struct cw_node *n);
void cw_clusters_stop(struct cw_node *n);
const char *cw_remote_state_name(enum cw_remote_state s);
/*
 * Whether @r's mirrors of @prefix are complete: listed, and (when its
 * cluster-config promises them) its synced canary for that kind present.
 * Until then nothing of it is withdrawn.
 */
bool cw_remote_settled(const struct cw_remote *r, const char *prefix);
/* Whether @r's state counts at all: configured, read, and not evicted. */
bool cw_remote_usable(const struct cw_remote *r);
/*
 * Whether what the maps hold for @cluster_id's @prefix records must stay as
 * it is because its owner has not been read completely yet: a remote that
 * is configured, not evicted and not settled, or, for an id no remote has
 * claimed, some configured remote not reached yet (it may be the owner).
 */
bool cw_cluster_pending(struct cw_node *n, unsigned int cluster_id, const char *prefix);
/* The remote cluster of id @id, or NULL. */
struct cw_remote *cw_remote_by_id(struct cw_node *n, unsigned int id);

/* lb.c: the service maps */
int cw_lb_reconcile(struct cw_node *n);
void cw_lb_clear(struct cw_lb_table *t);
/* The name of cluster @id as this node knows it ("" when unknown). */
const char *cw_cluster_name_of(struct cw_node *n, unsigned int id);

/* api.c */
int cw_api_start(struct cw_node *n);
void cw_api_stop(struct cw_node *n);

#endif
