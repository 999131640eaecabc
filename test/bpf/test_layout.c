// SPDX-License-Identifier: Apache-2.0
/*
 * STYLE.md practice 5: every struct BPF and user space share has one layout.
 * Checks the layout gcc gives include/causeway/datapath.h against the numbers
 * written here, and against the BTF clang -target bpf put in the object (what
 * the programs were compiled with), member by member; and that the maps the
 * object declares use those structs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/btf.h>
#include <linux/pkt_cls.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <cmocka.h>

#include <causeway/datapath.h>
#include <causeway/dp.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#include "lxc.skel.h"
#include "overlay.skel.h"
#include "netdev.skel.h"
#pragma GCC diagnostic pop

#define MEMBER(type, m) { #m, offsetof(struct type, m), sizeof(((struct type *)0)->m) }

struct member {
	const char *name;
	size_t offset, size;
};

struct layout {
	const char *name;
	size_t size, expect_size;
	struct member members[8];
	size_t n_members;
};

/* sizeof/offsetof as gcc sees them, and the sizes the header promises */
static const struct layout layouts[] = {
	{ "cw_endpoint_key", sizeof(struct cw_endpoint_key), 4,
	  { MEMBER(cw_endpoint_key, ip4) }, 1 },
	{ "cw_endpoint_info", sizeof(struct cw_endpoint_info), 24,
	  { MEMBER(cw_endpoint_info, ifindex), MEMBER(cw_endpoint_info, identity),
	    MEMBER(cw_endpoint_info, ep_id), MEMBER(cw_endpoint_info, flags),
	    MEMBER(cw_endpoint_info, pod_mac), MEMBER(cw_endpoint_info, host_mac) }, 6 },
	{ "cw_metrics_value", sizeof(struct cw_metrics_value), 16,
	  { MEMBER(cw_metrics_value, packets), MEMBER(cw_metrics_value, bytes) }, 2 },
	{ "cw_flow_key", sizeof(struct cw_flow_key), 16,
	  { MEMBER(cw_flow_key, saddr), MEMBER(cw_flow_key, daddr), MEMBER(cw_flow_key, sport),
	    MEMBER(cw_flow_key, dport), MEMBER(cw_flow_key, proto), MEMBER(cw_flow_key, pad) }, 6 },
	{ "cw_lpm_key", sizeof(struct cw_lpm_key), 8,
	  { MEMBER(cw_lpm_key, prefixlen), MEMBER(cw_lpm_key, ip4) }, 2 },
	{ "cw_ipcache_info", sizeof(struct cw_ipcache_info), 12,
	  { MEMBER(cw_ipcache_info, identity), MEMBER(cw_ipcache_info, tunnel_ip),
	    MEMBER(cw_ipcache_info, cluster_id), MEMBER(cw_ipcache_info, flags) }, 4 },
	{ "cw_tunnel_info", sizeof(struct cw_tunnel_info), 8,
	  { MEMBER(cw_tunnel_info, node_ip), MEMBER(cw_tunnel_info, flags) }, 2 },
	{ "cw_config", sizeof(struct cw_config), 16,
	  { MEMBER(cw_config, vxlan_ifindex), MEMBER(cw_config, node_ip), MEMBER(cw_config, cluster_id),
	    MEMBER(cw_config, flags), MEMBER(cw_config, underlay_ifindex) }, 5 },
	{ "cw_lb4_key", sizeof(struct cw_lb4_key), 8,
	  { MEMBER(cw_lb4_key, address), MEMBER(cw_lb4_key, port), MEMBER(cw_lb4_key, proto),
	    MEMBER(cw_lb4_key, pad) }, 4 },
	{ "cw_lb4_service", sizeof(struct cw_lb4_service), 8,
	  { MEMBER(cw_lb4_service, count), MEMBER(cw_lb4_service, rev_nat_id),
	    MEMBER(cw_lb4_service, flags), MEMBER(cw_lb4_service, pad) }, 4 },
	{ "cw_lb4_slot_key", sizeof(struct cw_lb4_slot_key), 4,
	  { MEMBER(cw_lb4_slot_key, rev_nat_id), MEMBER(cw_lb4_slot_key, slot) }, 2 },
	{ "cw_lb4_backend", sizeof(struct cw_lb4_backend), 12,
	  { MEMBER(cw_lb4_backend, address), MEMBER(cw_lb4_backend, port),
	    MEMBER(cw_lb4_backend, cluster_id), MEMBER(cw_lb4_backend, flags),
	    MEMBER(cw_lb4_backend, pad) }, 5 },
	{ "cw_lb4_reverse_nat", sizeof(struct cw_lb4_reverse_nat), 8,
	  { MEMBER(cw_lb4_reverse_nat, address), MEMBER(cw_lb4_reverse_nat, port),
	    MEMBER(cw_lb4_reverse_nat, pad) }, 3 },
	{ "cw_ct4_key", sizeof(struct cw_ct4_key), 16,
	  { MEMBER(cw_ct4_key, saddr), MEMBER(cw_ct4_key, daddr), MEMBER(cw_ct4_key, sport),
	    MEMBER(cw_ct4_key, dport), MEMBER(cw_ct4_key, proto), MEMBER(cw_ct4_key, kind),
	    MEMBER(cw_ct4_key, pad) }, 7 },
	{ "cw_ct4_entry", sizeof(struct cw_ct4_entry), 16,
	  { MEMBER(cw_ct4_entry, backend_addr), MEMBER(cw_ct4_entry, backend_port),
	    MEMBER(cw_ct4_entry, rev_nat_id), MEMBER(cw_ct4_entry, slot), MEMBER(cw_ct4_entry, flags),
	    MEMBER(cw_ct4_entry, expires) }, 6 },
};

/* Explicit offsets: a reordering that keeps the size must fail too. */
static void test_user_space_offsets(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++)
		assert_int_equal(layouts[i].size, layouts[i].expect_size);
	assert_int_equal(offsetof(struct cw_endpoint_info, ifindex), 0);
	assert_int_equal(offsetof(struct cw_endpoint_info, identity), 4);
	assert_int_equal(offsetof(struct cw_endpoint_info, ep_id), 8);
	assert_int_equal(offsetof(struct cw_endpoint_info, flags), 10);
	assert_int_equal(offsetof(struct cw_endpoint_info, pod_mac), 12);
	assert_int_equal(offsetof(struct cw_endpoint_info, host_mac), 18);
	/* one metrics slot per (reason, direction), none shared */
	assert_int_equal(cw_metrics_index(CW_REASON_FORWARDED, CW_DIR_INGRESS), 0);
	assert_int_equal(cw_metrics_index(CW_REASON_FORWARDED, CW_DIR_EGRESS), 1);
	assert_int_equal(cw_metrics_index(CW_DROP_MIN, CW_DIR_EGRESS), 2 * CW_DROP_MIN + 1);
	assert_true(cw_metrics_index(UINT8_MAX, CW_DIR_EGRESS) < CW_MAX_METRICS);
	assert_int_equal(offsetof(struct cw_metrics_value, bytes), 8);
	assert_int_equal(offsetof(struct cw_flow_key, daddr), 4);
	assert_int_equal(offsetof(struct cw_flow_key, sport), 8);
	assert_int_equal(offsetof(struct cw_flow_key, dport), 10);
	assert_int_equal(offsetof(struct cw_flow_key, proto), 12);
	assert_int_equal(offsetof(struct cw_flow_key, pad), 13);
	/* the trie reads prefixlen first, then the address bytes (kernel ABI) */
	assert_int_equal(offsetof(struct cw_lpm_key, prefixlen), 0);
	assert_int_equal(offsetof(struct cw_lpm_key, ip4), 4);
	assert_int_equal(offsetof(struct cw_ipcache_info, tunnel_ip), 4);
	assert_int_equal(offsetof(struct cw_ipcache_info, cluster_id), 8);
	assert_int_equal(offsetof(struct cw_ipcache_info, flags), 10);
	assert_int_equal(offsetof(struct cw_tunnel_info, flags), 4);
	assert_int_equal(offsetof(struct cw_config, node_ip), 4);
	assert_int_equal(offsetof(struct cw_config, cluster_id), 8);
	assert_int_equal(offsetof(struct cw_config, flags), 10);
	assert_int_equal(offsetof(struct cw_config, underlay_ifindex), 12);
	assert_int_equal(offsetof(struct cw_lb4_key, port), 4);
	assert_int_equal(offsetof(struct cw_lb4_key, proto), 6);
	assert_int_equal(offsetof(struct cw_lb4_key, pad), 7);
	assert_int_equal(offsetof(struct cw_lb4_service, rev_nat_id), 2);
	assert_int_equal(offsetof(struct cw_lb4_service, flags), 4);
	assert_int_equal(offsetof(struct cw_lb4_service, pad), 6);
	assert_int_equal(offsetof(struct cw_lb4_slot_key, slot), 2);
	assert_int_equal(offsetof(struct cw_lb4_backend, port), 4);
	assert_int_equal(offsetof(struct cw_lb4_backend, cluster_id), 6);
	assert_int_equal(offsetof(struct cw_lb4_backend, flags), 8);
	assert_int_equal(offsetof(struct cw_lb4_backend, pad), 10);
	assert_int_equal(offsetof(struct cw_lb4_reverse_nat, port), 4);
	assert_int_equal(offsetof(struct cw_lb4_reverse_nat, pad), 6);
	assert_int_equal(offsetof(struct cw_ct4_key, daddr), 4);
	assert_int_equal(offsetof(struct cw_ct4_key, sport), 8);
	assert_int_equal(offsetof(struct cw_ct4_key, dport), 10);
	assert_int_equal(offsetof(struct cw_ct4_key, proto), 12);
	assert_int_equal(offsetof(struct cw_ct4_key, kind), 13);
	assert_int_equal(offsetof(struct cw_ct4_key, pad), 14);
	assert_int_equal(offsetof(struct cw_ct4_entry, backend_port), 4);
	assert_int_equal(offsetof(struct cw_ct4_entry, rev_nat_id), 6);
	assert_int_equal(offsetof(struct cw_ct4_entry, slot), 8);
	assert_int_equal(offsetof(struct cw_ct4_entry, flags), 10);
	assert_int_equal(offsetof(struct cw_ct4_entry, expires), 12);
}

/* Every object, which share every map through their pins. */
struct objs {
	struct lxc *lxc;
	struct overlay *overlay;
	struct netdev *netdev;
};

static int close_obj(void **state)
{
	struct objs *o = *state;

	if (o) {
		netdev__destroy(o->netdev);
		overlay__destroy(o->overlay);
		lxc__destroy(o->lxc);
		free(o);
	}
	return 0;
}

static int open_obj(void **state)
{
	struct objs *o = calloc(1, sizeof(*o));

	/* opening parses the ELF and its BTF; nothing is loaded or pinned */
	*state = o;
	if (!o)
		return -1;
	o->lxc = lxc__open();
	o->overlay = overlay__open();
	o->netdev = netdev__open();
	if (!o->lxc || !o->overlay || !o->netdev) {
		close_obj(state);
		*state = NULL;
		return -1;
	}
	return 0;
}

static void btf_matches(struct bpf_object *obj)
{
	struct btf *btf = bpf_object__btf(obj);

	assert_non_null(btf);
	for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
		const struct layout *l = &layouts[i];
		__s32 id = btf__find_by_name_kind(btf, l->name, BTF_KIND_STRUCT);
		const struct btf_type *tp;
		const struct btf_member *m;

		if (id <= 0)
			fail_msg("struct %s is not in the BTF of %s", l->name, bpf_object__name(obj));
		tp = btf__type_by_id(btf, (__u32)id);
		if (tp->size != l->size)
			fail_msg("struct %s: BPF size %u, user space %zu", l->name, tp->size, l->size);
		if (btf_vlen(tp) != l->n_members)
			fail_msg("struct %s: BPF has %u members, user space %zu", l->name, btf_vlen(tp),
				 l->n_members);
		m = btf_members(tp);
		for (size_t k = 0; k < l->n_members; k++, m++) {
			const char *name = btf__name_by_offset(btf, m->name_off);
			__u32 bit_off = btf_member_bit_offset(tp, (__u32)k);
			__s64 size = btf__resolve_size(btf, m->type);

			if (strcmp(name, l->members[k].name) != 0)
				fail_msg("struct %s member %zu: BPF \"%s\", user space \"%s\"", l->name, k,
					 name, l->members[k].name);
			if (bit_off % 8 || bit_off / 8 != l->members[k].offset)
				fail_msg("%s.%s: BPF offset %u bits, user space %zu bytes", l->name, name,
					 bit_off, l->members[k].offset);
			if (size < 0 || (size_t)size != l->members[k].size)
				fail_msg("%s.%s: BPF size %lld, user space %zu", l->name, name,
					 (long long)size, l->members[k].size);
		}
	}
}

static void test_btf_matches(void **state)
{
	struct objs *o = *state;

	btf_matches(o->lxc->obj);
	btf_matches(o->overlay->obj);
	btf_matches(o->netdev->obj);
}

static void assert_map(struct bpf_map *m, const char *name, enum bpf_map_type type, size_t key_size,
		       size_t value_size, __u32 max_entries, __u32 flags)
{
	if (strcmp(bpf_map__name(m), name) != 0)
		fail_msg("map %s, expected %s", bpf_map__name(m), name);
	if (bpf_map__type(m) != type || bpf_map__key_size(m) != key_size ||
	    bpf_map__value_size(m) != value_size || bpf_map__max_entries(m) != max_entries ||
	    bpf_map__map_flags(m) != flags)
		fail_msg("map %s: type %d key %u value %u max %u flags %#x; expected %d %zu %zu %u %#x",
			 name, bpf_map__type(m), bpf_map__key_size(m), bpf_map__value_size(m),
			 bpf_map__max_entries(m), bpf_map__map_flags(m), type, key_size, value_size,
			 max_entries, flags);
	/* pinned by name: the pin names user space opens are the map names */
	if (!bpf_map__pin_path(m))
		fail_msg("map %s is not pinned by name", name);
}

/* The cross-node maps, identical in both objects: a second object's map
 * that differed from the pinned one would be refused at load. */
static void tunnel_maps(struct bpf_map *ipcache, struct bpf_map *tunnel, struct bpf_map *config)
{
	assert_map(ipcache, CW_MAP_IPCACHE, BPF_MAP_TYPE_LPM_TRIE, sizeof(struct cw_lpm_key),
		   sizeof(struct cw_ipcache_info), CW_MAX_IPCACHE, BPF_F_NO_PREALLOC);
	assert_map(tunnel, CW_MAP_TUNNEL, BPF_MAP_TYPE_LPM_TRIE, sizeof(struct cw_lpm_key),
		   sizeof(struct cw_tunnel_info), CW_MAX_TUNNELS, BPF_F_NO_PREALLOC);
	assert_map(config, CW_MAP_CONFIG, BPF_MAP_TYPE_ARRAY, sizeof(__u32), sizeof(struct cw_config),
		   1, 0);
}

/* The load-balancing maps, identical in both objects. */
static void lb_maps(struct bpf_map *services, struct bpf_map *backends, struct bpf_map *revnat,
		    struct bpf_map *ct)
{
	assert_map(services, CW_MAP_LB4_SERVICES, BPF_MAP_TYPE_HASH, sizeof(struct cw_lb4_key),
		   sizeof(struct cw_lb4_service), CW_MAX_LB_SERVICES, BPF_F_NO_PREALLOC);
	assert_map(backends, CW_MAP_LB4_BACKENDS, BPF_MAP_TYPE_HASH, sizeof(struct cw_lb4_slot_key),
		   sizeof(struct cw_lb4_backend), CW_MAX_LB_BACKENDS, BPF_F_NO_PREALLOC);
	/* the id is the key, and the slots carry it in 16 bits too */
	assert_map(revnat, CW_MAP_LB4_REVNAT, BPF_MAP_TYPE_HASH,
		   sizeof(((struct cw_lb4_slot_key *)0)->rev_nat_id), sizeof(struct cw_lb4_reverse_nat),
		   CW_MAX_LB_SERVICES, BPF_F_NO_PREALLOC);
	assert_map(ct, CW_MAP_LB4_CT, BPF_MAP_TYPE_LRU_HASH, sizeof(struct cw_ct4_key),
		   sizeof(struct cw_ct4_entry), CW_MAX_LB_CT, 0);
}

/* The maps carry the structs the header names, with the header's limits. */
static void test_maps(void **state)
{
	struct objs *o = *state;
	struct lxc *skel = o->lxc;
	struct overlay *ov = o->overlay;

	assert_string_equal(bpf_map__name(skel->maps.cw_endpoints), CW_MAP_ENDPOINTS);
	assert_int_equal(bpf_map__type(skel->maps.cw_endpoints), BPF_MAP_TYPE_HASH);
	assert_int_equal(bpf_map__key_size(skel->maps.cw_endpoints), sizeof(struct cw_endpoint_key));
	assert_int_equal(bpf_map__value_size(skel->maps.cw_endpoints), sizeof(struct cw_endpoint_info));
	assert_int_equal(bpf_map__max_entries(skel->maps.cw_endpoints), CW_MAX_ENDPOINTS);

	assert_string_equal(bpf_map__name(skel->maps.cw_metrics), CW_MAP_METRICS);
	assert_int_equal(bpf_map__type(skel->maps.cw_metrics), BPF_MAP_TYPE_PERCPU_ARRAY);
	assert_int_equal(bpf_map__key_size(skel->maps.cw_metrics), sizeof(__u32));
	assert_int_equal(bpf_map__value_size(skel->maps.cw_metrics), sizeof(struct cw_metrics_value));
	assert_int_equal(bpf_map__max_entries(skel->maps.cw_metrics), CW_MAX_METRICS);

	assert_string_equal(bpf_map__name(skel->maps.cw_stack_flows), CW_MAP_STACK_FLOWS);
	assert_int_equal(bpf_map__type(skel->maps.cw_stack_flows), BPF_MAP_TYPE_LRU_HASH);
	assert_int_equal(bpf_map__key_size(skel->maps.cw_stack_flows), sizeof(struct cw_flow_key));
	assert_int_equal(bpf_map__max_entries(skel->maps.cw_stack_flows), CW_MAX_STACK_FLOWS);

	/* pinned by name: the pin names user space opens are the map names */
	assert_int_equal(bpf_map__pin_path(skel->maps.cw_endpoints) != NULL, 1);
	assert_string_equal(bpf_program__name(skel->progs.from_container), CW_PIN_FROM_CONTAINER);
	assert_string_equal(bpf_program__name(skel->progs.to_container), CW_PIN_TO_CONTAINER);
	assert_int_equal(bpf_program__type(skel->progs.from_container), BPF_PROG_TYPE_SCHED_CLS);
	assert_int_equal(bpf_program__type(skel->progs.to_container), BPF_PROG_TYPE_SCHED_CLS);

	tunnel_maps(skel->maps.cw_ipcache, skel->maps.cw_tunnel, skel->maps.cw_config);
	tunnel_maps(ov->maps.cw_ipcache, ov->maps.cw_tunnel, ov->maps.cw_config);
	lb_maps(skel->maps.cw_lb4_services, skel->maps.cw_lb4_backends, skel->maps.cw_lb4_revnat,
		skel->maps.cw_lb4_ct);
	lb_maps(ov->maps.cw_lb4_services, ov->maps.cw_lb4_backends, ov->maps.cw_lb4_revnat,
		ov->maps.cw_lb4_ct);
	assert_map(ov->maps.cw_endpoints, CW_MAP_ENDPOINTS, BPF_MAP_TYPE_HASH,
		   sizeof(struct cw_endpoint_key), sizeof(struct cw_endpoint_info), CW_MAX_ENDPOINTS,
		   BPF_F_NO_PREALLOC);
	assert_map(ov->maps.cw_metrics, CW_MAP_METRICS, BPF_MAP_TYPE_PERCPU_ARRAY,
		   sizeof(__u32), sizeof(struct cw_metrics_value), CW_MAX_METRICS, 0);
	assert_map(ov->maps.cw_stack_flows, CW_MAP_STACK_FLOWS, BPF_MAP_TYPE_LRU_HASH,
		   sizeof(struct cw_flow_key), sizeof(__u8), CW_MAX_STACK_FLOWS, 0);
	assert_string_equal(bpf_program__name(ov->progs.from_overlay), CW_PIN_FROM_OVERLAY);
	assert_int_equal(bpf_program__type(ov->progs.from_overlay), BPF_PROG_TYPE_SCHED_CLS);
	assert_string_equal(bpf_program__name(ov->progs.to_overlay), CW_PIN_TO_OVERLAY);
	assert_int_equal(bpf_program__type(ov->progs.to_overlay), BPF_PROG_TYPE_SCHED_CLS);

	/* the underlay device's programs deliver to endpoints and learn stack flows */
	assert_map(o->netdev->maps.cw_endpoints, CW_MAP_ENDPOINTS, BPF_MAP_TYPE_HASH,
		   sizeof(struct cw_endpoint_key), sizeof(struct cw_endpoint_info), CW_MAX_ENDPOINTS,
		   BPF_F_NO_PREALLOC);
	assert_map(o->netdev->maps.cw_stack_flows, CW_MAP_STACK_FLOWS, BPF_MAP_TYPE_LRU_HASH,
		   sizeof(struct cw_flow_key), sizeof(__u8), CW_MAX_STACK_FLOWS, 0);
	assert_string_equal(bpf_program__name(o->netdev->progs.from_netdev), CW_PIN_FROM_NETDEV);
	assert_string_equal(bpf_program__name(o->netdev->progs.to_netdev), CW_PIN_TO_NETDEV);
	assert_int_equal(bpf_program__type(o->netdev->progs.from_netdev), BPF_PROG_TYPE_SCHED_CLS);
	assert_int_equal(bpf_program__type(o->netdev->progs.to_netdev), BPF_PROG_TYPE_SCHED_CLS);
}

/* Drop reasons live apart from TC_ACT_* verdicts and fit the u8 key field,
 * and the CLI has a name for each. */
static void test_reasons(void **state)
{
	const char *names[CW_DROP_MAX] = { 0 };

	(void)state;
	assert_true(CW_DROP_MIN > TC_ACT_VALUE_MAX);
	assert_true(CW_DROP_MAX - 1 <= UINT8_MAX);
	assert_true(CW_DROP_MAX <= CW_MAX_METRICS / 2);
	names[0] = cw_reason_name(CW_REASON_FORWARDED);
	assert_string_equal(names[0], "forwarded");
	for (unsigned int r = CW_DROP_MIN; r < CW_DROP_MAX; r++) {
		names[r] = cw_reason_name(r);
		if (strcmp(names[r], "unknown reason") == 0)
			fail_msg("drop reason %u has no name", r);
		for (unsigned int q = CW_DROP_MIN; q < r; q++)
			if (strcmp(names[q], names[r]) == 0)
				fail_msg("drop reasons %u and %u share the name \"%s\"", q, r, names[r]);
	}
	assert_string_equal(cw_reason_name(CW_DROP_MAX), "unknown reason");
	assert_string_equal(cw_reason_name(1), "unknown reason");
}

/*
 * The slot hash is part of the contract (a test or a CLI predicts a flow's
 * slot with it): pinned to known values, so a change to it is deliberate.
 * The datapath's use of it is test_lb.c's.
 */
#define LB4_HASH_ZERO   0xd941144bu
#define LB4_HASH_SAMPLE 0x67cd1cb1u /* 10.1.0.2:40000 -> 10.96.0.10:80/TCP */

static void test_lb4_hash(void **state)
{
	(void)state;
	/* it hashes the words as they lie in memory (network order) */
	if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
		skip();
	assert_int_equal(cw_lb4_hash(0, 0, 0, 0, 0), LB4_HASH_ZERO);
	assert_int_equal(cw_lb4_hash(htonl(0x0a010002), htonl(0x0a60000a), htons(40000), htons(80), 6),
			 LB4_HASH_SAMPLE);
	/* every input counts */
	assert_int_not_equal(cw_lb4_hash(htonl(0x0a010002), htonl(0x0a60000a), htons(40000), htons(80), 17),
			     LB4_HASH_SAMPLE);
	assert_int_not_equal(cw_lb4_hash(htonl(0x0a010003), htonl(0x0a60000a), htons(40000), htons(80), 6),
			     LB4_HASH_SAMPLE);
	assert_int_not_equal(cw_lb4_hash(htonl(0x0a010002), htonl(0x0a60000b), htons(40000), htons(80), 6),
			     LB4_HASH_SAMPLE);
	assert_int_not_equal(cw_lb4_hash(htonl(0x0a010002), htonl(0x0a60000a), htons(40001), htons(80), 6),
			     LB4_HASH_SAMPLE);
	assert_int_not_equal(cw_lb4_hash(htonl(0x0a010002), htonl(0x0a60000a), htons(40000), htons(81), 6),
			     LB4_HASH_SAMPLE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_space_offsets),
		cmocka_unit_test_setup_teardown(test_btf_matches, open_obj, close_obj),
		cmocka_unit_test_setup_teardown(test_maps, open_obj, close_obj),
		cmocka_unit_test(test_reasons),
		cmocka_unit_test(test_lb4_hash),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
