/* SPDX-License-Identifier: Apache-2.0 */
/* Every map the programs use; layouts come from <causeway/datapath.h>. */
#ifndef CW_BPF_MAPS_H
#define CW_BPF_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <causeway/datapath.h>

/*
 * Pinned by name under the bpffs root given as pin_root_path at open time,
 * so the plugin and the helper share one instance per node and a reload
 * adopts the existing entries instead of starting empty.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CW_MAX_ENDPOINTS);
	__type(key, struct cw_endpoint_key);
	__type(value, struct cw_endpoint_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CW_MAX_METRICS);
	__type(key, __u32);
	__type(value, struct cw_metrics_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CW_MAX_STACK_FLOWS);
	__type(key, struct cw_flow_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_stack_flows SEC(".maps");

/*
 * Every pod IP of the mesh, longest-prefix match (a trie needs
 * BPF_F_NO_PREALLOC).  Written only by the helper; the programs read it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, CW_MAX_IPCACHE);
	__type(key, struct cw_lpm_key);
	__type(value, struct cw_ipcache_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_ipcache SEC(".maps");

/* Remote PodCIDR -> node to tunnel to. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, CW_MAX_TUNNELS);
	__type(key, struct cw_lpm_key);
	__type(value, struct cw_tunnel_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_tunnel SEC(".maps");

/* Node-wide settings: one entry, key 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cw_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_config SEC(".maps");

/*
 * Service load balancing (layouts and rules in <causeway/datapath.h>).
 * The helper writes services, backend slots and reverse NAT; conntrack is
 * the programs' own, LRU so that forgotten flows make room.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CW_MAX_LB_SERVICES);
	__type(key, struct cw_lb4_key);
	__type(value, struct cw_lb4_service);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CW_MAX_LB_BACKENDS);
	__type(key, struct cw_lb4_slot_key);
	__type(value, struct cw_lb4_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CW_MAX_LB_SERVICES);
	__type(key, __u16);
	__type(value, struct cw_lb4_reverse_nat);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_lb4_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CW_MAX_LB_CT);
	__type(key, struct cw_ct4_key);
	__type(value, struct cw_ct4_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cw_lb4_ct SEC(".maps");

#endif
