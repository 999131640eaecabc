/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Conntrack of service flows: lifetimes and the TCP state that decides
 * them.  Entry kinds and rules are described in <causeway/datapath.h>.
 */
#ifndef CW_BPF_CONNTRACK_H
#define CW_BPF_CONNTRACK_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"

/* Byte 13 of the TCP header (RFC 793 section 3.1). */
#define CW_TCP_FIN 0x01
#define CW_TCP_SYN 0x02
#define CW_TCP_RST 0x04
#define CW_TCP_ACK 0x10
#define CW_TCP_FLAGS_OFF 13

/* CLOCK_MONOTONIC seconds, which user space can read too (clock_gettime). */
static __always_inline __u32 cw_ct_now(void)
{
	return (__u32)(bpf_ktime_get_ns() / 1000000000ULL);
}

static __always_inline bool cw_ct_closing(__u16 flags)
{
	return (flags & CW_CT_F_RST) ||
	       (flags & (CW_CT_F_FIN_CLIENT | CW_CT_F_FIN_BACKEND)) ==
		       (CW_CT_F_FIN_CLIENT | CW_CT_F_FIN_BACKEND);
}

static __always_inline __u32 cw_ct_lifetime(__u8 proto, __u16 flags)
{
	if (proto != IPPROTO_TCP)
		return CW_CT_LIFETIME_NONTCP;
	if (cw_ct_closing(flags))
		return CW_CT_LIFETIME_TCP_CLOSE;
	if (flags & CW_CT_F_ESTABLISHED)
		return CW_CT_LIFETIME_TCP;
	return CW_CT_LIFETIME_TCP_SYN;
}

static __always_inline bool cw_ct_expired(const struct cw_ct4_entry *e, __u32 now)
{
	return now > e->expires;
}

/*
 * Whether the client's packet belongs to the flow of service entry @e: not
 * when the entry expired, nor when a SYN opens a new connection on a tuple
 * whose previous one is closing (a client may reuse the tuple at once
 * after the server closed first).
 */
static __always_inline bool cw_ct_same_flow(const struct cw_ct4_entry *e, __u8 proto,
					    __u8 tcp_flags, __u32 now)
{
	if (cw_ct_expired(e, now))
		return false;
	return !(proto == IPPROTO_TCP && (tcp_flags & (CW_TCP_SYN | CW_TCP_ACK)) == CW_TCP_SYN &&
		 cw_ct_closing(e->flags));
}

/*
 * Fold a packet of the flow into its service entry and push the expiry.
 * Stores go through the map value in place (no update call per packet),
 * and only when something changed, so a busy flow writes its entry about
 * once a second; two CPUs racing on one flow store the same values.
 */
static __always_inline void cw_ct_touch(struct cw_ct4_entry *e, __u8 proto, __u8 tcp_flags,
					bool from_client, __u32 now)
{
	__u16 flags = e->flags;
	__u32 expires;

	if (proto == IPPROTO_TCP) {
		if (!(tcp_flags & CW_TCP_SYN))
			flags |= CW_CT_F_ESTABLISHED;
		if (tcp_flags & CW_TCP_FIN)
			flags |= from_client ? CW_CT_F_FIN_CLIENT : CW_CT_F_FIN_BACKEND;
		if (tcp_flags & CW_TCP_RST)
			flags |= CW_CT_F_RST;
	}
	expires = now + cw_ct_lifetime(proto, flags);
	if (flags != e->flags)
		e->flags = flags;
	if (expires != e->expires)
		e->expires = expires;
}

#endif
