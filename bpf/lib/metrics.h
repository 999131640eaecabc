/* SPDX-License-Identifier: Apache-2.0 */
/* Per-reason packet accounting and the single exit path for drops. */
#ifndef CW_BPF_METRICS_H
#define CW_BPF_METRICS_H

#include <linux/pkt_cls.h>
#include "maps.h"

/* One packet of @len bytes (its frame as the program first saw it). */
static __always_inline void cw_count_len(__u32 len, __u8 reason, __u8 dir)
{
	__u32 idx = cw_metrics_index(reason, dir);
	struct cw_metrics_value *v;

	v = bpf_map_lookup_elem(&cw_metrics, &idx);
	if (v) {
		/* per-CPU value: no other CPU writes this copy */
		v->packets += 1;
		v->bytes += len;
	}
}

static __always_inline void cw_count(struct __sk_buff *skb, __u8 reason, __u8 dir)
{
	cw_count_len(skb->len, reason, dir);
}

/* Every TC_ACT_SHOT goes through here so that no drop goes uncounted. */
static __always_inline int cw_drop(struct __sk_buff *skb, int neg_reason, __u8 dir)
{
	cw_count(skb, (__u8)(-neg_reason), dir);
	return TC_ACT_SHOT;
}

#endif
