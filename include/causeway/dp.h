/* SPDX-License-Identifier: Apache-2.0 */
/*
 * User-space access to a node's pinned datapath: load-and-pin under a lock,
 * open the pins, tc attach/query, endpoint, ipcache, tunnel, config,
 * service load balancing and metrics map access.
 */
#ifndef CAUSEWAY_DP_H
#define CAUSEWAY_DP_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <causeway/datapath.h>

struct cw_dp {
	int prog_from_container;
	int prog_to_container;
	int map_endpoints;
	int map_metrics;
	int map_ipcache;
	int map_tunnel;
	int map_config;
	int map_lb4_services;
	int map_lb4_backends;
	int map_lb4_revnat;
	int map_lb4_ct;
	char root[PATH_MAX];
};

/*
 * Make sure @bpf_root sits on a bpffs: mounts bpffs on /sys/fs/bpf when the
 * root lies below it and nothing is mounted there, creates the root
 * directory.  -ENOTSUP when the root is on another filesystem.
 */
int cw_bpffs_ensure(const char *bpf_root);
bool cw_dp_pinned(const char *bpf_root);

/*
 * Open the pods' pinned programs and the maps of @bpf_root (the devices'
 * programs are attached from their pins: cw_dp_attach_pinned).  With
 * @load_if_missing the programs are loaded and pinned first when absent,
 * serialised on a lock file in @lock_dir so concurrent first ADDs load once.
 */
int cw_dp_open(const char *bpf_root, const char *lock_dir, bool load_if_missing,
	       struct cw_dp **out);
void cw_dp_free(struct cw_dp *dp);

/* Load the programs and (re)pin them, adopting already-pinned maps. */
int cw_dp_load(const char *bpf_root, const char *lock_dir);
/* Remove every pin this project makes in @bpf_root, then the directory. */
int cw_dp_unpin(const char *bpf_root);

int cw_tc_attach(int ifindex, int prog_fd, bool ingress);
/* Removes the filter at Causeway's handle; 0 when there was none. */
int cw_tc_detach(int ifindex, bool ingress);
/* *prog_id = 0 when nothing is attached at Causeway's handle. */
int cw_tc_query(int ifindex, bool ingress, __u32 *prog_id);
int cw_prog_id(int prog_fd, __u32 *id);

/* Attach the program pinned as @name in @bpf_root (replacing ours there). */
int cw_dp_attach_pinned(const char *bpf_root, const char *name, int ifindex, bool ingress);
/*
 * Upgrades in place.  Every tc attachment at Causeway's handle on @ifindex
 * whose program bears the name of one of ours but is not the one pinned
 * now in @bpf_root (an older release's, or one opened before the pins were
 * replaced) is replaced by the pinned program, atomically: the link never
 * runs without one.  Programs of other names are left alone.  The number
 * replaced, or the first error (the other direction is still tried).
 */
int cw_dp_refresh_link(const char *bpf_root, int ifindex, const char *ifname);
/* The same on every link of the current network namespace; *moved counts. */
int cw_dp_refresh_all(const char *bpf_root, unsigned int *moved);

int cw_ep_put(const struct cw_dp *dp, __be32 ip4, const struct cw_endpoint_info *info);
int cw_ep_get(const struct cw_dp *dp, __be32 ip4, struct cw_endpoint_info *info);
/* 0 when deleted or absent. */
int cw_ep_delete(const struct cw_dp *dp, __be32 ip4);

/*
 * ipcache and tunnel entries by prefix.  Keys are stored with the host bits
 * cleared; get is an exact-prefix read (not the datapath's longest-prefix
 * match), -ENOENT when that very prefix is absent; delete returns 0 when
 * deleted or absent; a prefixlen above 32 is -EINVAL.
 */
int cw_ipcache_put(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen,
		   const struct cw_ipcache_info *info);
int cw_ipcache_get(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen, struct cw_ipcache_info *info);
int cw_ipcache_delete(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen);
int cw_tunnel_put(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen,
		  const struct cw_tunnel_info *info);
int cw_tunnel_get(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen, struct cw_tunnel_info *info);
int cw_tunnel_delete(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen);

/*
 * Every key of the map, for a resync that lists, writes differences and
 * deletes the rest.  *keys (free() it) holds *n keys, most specific first;
 * -EAGAIN when the map kept changing during the listing.
 */
int cw_ipcache_keys(const struct cw_dp *dp, struct cw_lpm_key **keys, size_t *n);
int cw_tunnel_keys(const struct cw_dp *dp, struct cw_lpm_key **keys, size_t *n);

/* The node-wide settings (the config map's only entry). */
int cw_config_put(const struct cw_dp *dp, const struct cw_config *cfg);
int cw_config_get(const struct cw_dp *dp, struct cw_config *cfg);

/*
 * Service load balancing (layouts and rules in <causeway/datapath.h>).
 *
 * Single entries: put overwrites, get is -ENOENT when absent, delete is 0
 * when deleted or absent.  A rev_nat_id of 0, a slot of 0 or a protocol
 * other than TCP and UDP is -EINVAL.
 */
int cw_lb4_service_put(const struct cw_dp *dp, const struct cw_lb4_key *key,
		       const struct cw_lb4_service *svc);
int cw_lb4_service_get(const struct cw_dp *dp, const struct cw_lb4_key *key,
		       struct cw_lb4_service *svc);
int cw_lb4_service_delete(const struct cw_dp *dp, const struct cw_lb4_key *key);
int cw_lb4_backend_put(const struct cw_dp *dp, __u16 rev_nat_id, __u16 slot,
		       const struct cw_lb4_backend *be);
int cw_lb4_backend_get(const struct cw_dp *dp, __u16 rev_nat_id, __u16 slot,
		       struct cw_lb4_backend *be);
int cw_lb4_backend_delete(const struct cw_dp *dp, __u16 rev_nat_id, __u16 slot);
int cw_lb4_revnat_put(const struct cw_dp *dp, __u16 rev_nat_id,
		      const struct cw_lb4_reverse_nat *nat);
int cw_lb4_revnat_get(const struct cw_dp *dp, __u16 rev_nat_id, struct cw_lb4_reverse_nat *nat);
int cw_lb4_revnat_delete(const struct cw_dp *dp, __u16 rev_nat_id);

/*
 * A whole frontend: its reverse NAT entry (@key's address and port under
 * @rev_nat_id), @n backend slots (@slots[i] in slot i + 1; n may be 0,
 * then new flows are dropped), and the service entry, written in the order
 * that never lets the datapath hash into a missing slot: reverse NAT and
 * slots first, the count last when it grows, and slots past a shrunken
 * count deleted after it.  Slots of a previous id of the frontend are
 * deleted once the entry names the new one; that id's reverse NAT entry is
 * left to the caller, which knows whether flows still use it.
 */
int cw_lb4_service_set(const struct cw_dp *dp, const struct cw_lb4_key *key, __u16 rev_nat_id,
		       __u16 flags, const struct cw_lb4_backend *slots, size_t n);
/*
 * Withdraw a frontend: service entry, its slots, its reverse NAT entry.
 * Flows already balanced stop too (neither direction is rewritten any
 * more).  0 when absent.
 */
int cw_lb4_service_remove(const struct cw_dp *dp, const struct cw_lb4_key *key);

/* Every key, for a resync; *keys (free() it) holds *n.  -EAGAIN as above. */
int cw_lb4_service_keys(const struct cw_dp *dp, struct cw_lb4_key **keys, size_t *n);
int cw_lb4_backend_keys(const struct cw_dp *dp, struct cw_lb4_slot_key **keys, size_t *n);
int cw_lb4_revnat_keys(const struct cw_dp *dp, __u16 **ids, size_t *n);

/*
 * Conntrack, read-only but for expiry: one entry by key; the service entry
 * of the flow @client:@client_port -> @frontend; every key (*keys to be
 * freed); the datapath's clock (CLOCK_MONOTONIC seconds, compare with
 * cw_ct4_entry.expires).
 */
int cw_lb4_ct_lookup(const struct cw_dp *dp, const struct cw_ct4_key *key, struct cw_ct4_entry *e);
int cw_lb4_ct_flow(const struct cw_dp *dp, __be32 client, __be16 client_port,
		   const struct cw_lb4_key *frontend, struct cw_ct4_entry *e);
int cw_lb4_ct_keys(const struct cw_dp *dp, struct cw_ct4_key **keys, size_t *n);
__u32 cw_lb4_ct_clock(void);
/*
 * Delete what the datapath no longer uses: service entries expired at
 * @now, reply entries whose flow is gone or names another backend.  The
 * LRU would evict them under pressure anyway; this keeps listings honest
 * and the room free.  *deleted (may be NULL) counts the entries removed.
 */
int cw_lb4_ct_gc(const struct cw_dp *dp, __u32 now, size_t *deleted);

/* Sum one metrics slot (reason, direction) over all CPUs. */
int cw_metrics_sum(int map_fd, __u8 reason, __u8 dir, struct cw_metrics_value *out);
/*
 * @fn for every slot that has counted a packet, summed over CPUs: forwarded
 * first, then the drops by reason, ingress before egress.
 */
void cw_metrics_each(int map_fd,
		     void (*fn)(unsigned int reason, unsigned int dir,
				const struct cw_metrics_value *v, void *ctx),
		     void *ctx);
const char *cw_reason_name(unsigned int reason);
const char *cw_dir_name(unsigned int dir);

#endif
