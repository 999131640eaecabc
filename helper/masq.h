/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Masquerading of pod traffic that leaves the mesh.
 *
 * Pod addresses are routable only inside the mesh: in tunnel mode nothing
 * outside the BPF maps knows a PodCIDR, and the underlay (kind's Docker
 * network, a cloud VPC) never does.  A pod talking to anything that is not
 * a pod (another node's host-network process, the API server behind the
 * kubernetes Service, a DNS server or the Internet) would get no answer.
 * So, as Cilium's iptables masquerading and ip-masq-agent do, traffic from
 * this node's PodCIDR to any address outside every known PodCIDR (and
 * outside the configured exceptions) is source-NATed to the node's address
 * on its way out.  Pod-to-pod traffic keeps its source: it goes over the
 * tunnel (which skips netfilter) or, in native routing, to an excepted
 * PodCIDR.
 *
 * The rules live in a chain of their own in the nat table, rewritten
 * atomically with iptables-restore --noflush (what kube-proxy does), and
 * reached from POSTROUTING by one jump; a chain in the raw table, reached
 * from PREROUTING and OUTPUT, keeps the tunnel's UDP out of conntrack; a
 * chain in the mangle table, reached from POSTROUTING, marks the flows the
 * stack destination-NATs for the datapath (CW_MARK_STACK_NAT).  The raw
 * and mangle chains are written with masquerading off too.  They stay when
 * the helper stops, so a restart does not change what pods can reach.
 */
#ifndef CW_HELPER_MASQ_H
#define CW_HELPER_MASQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <causeway/addr.h>

#define CW_MASQ_CHAIN "CAUSEWAY-POSTROUTING"
/* raw table: the tunnel's UDP packets skip conntrack (see masq.c) */
#define CW_MASQ_RAW_CHAIN "CAUSEWAY-RAW"
/* mangle table: flows the stack destination-NATs get CW_MARK_STACK_NAT */
#define CW_MASQ_MANGLE_CHAIN "CAUSEWAY-MANGLE"
#define CW_MASQ_EXCEPT_MAX 16
/*
 * Rewritten at least this often (the full resync runs every 60 s), which
 * puts back rules someone removed.
 */
#define CW_MASQ_REFRESH_MS 50000

struct cw_masq {
	bool enabled;                /* masquerading; the raw and mangle rules are always written */
	const char *iptables_dir;    /* NULL: iptables-restore and iptables from PATH */
	struct cw_prefix4 except[CW_MASQ_EXCEPT_MAX]; /* --no-masquerade-to */
	size_t n_except;

	/* in force */
	struct cw_prefix4 src;       /* the node's PodCIDR; len 0: nothing applied */
	struct cw_prefix4 *dsts;     /* sorted, unique */
	size_t n_dsts;
	int64_t applied_ms;          /* loop clock of the last success; 0: never */
	unsigned long updates, failures;
	char error[512];             /* the last failure; "" when the last attempt worked */
};

/*
 * The iptables-restore input: with @masquerade, the nat rules for @src and
 * the destinations it keeps its address to (@dsts, @n); always the raw and
 * mangle rules.  Malloc'd; NULL on ENOMEM.
 */
char *cw_masq_rules(bool masquerade, struct cw_prefix4 src, const struct cw_prefix4 *dsts,
		    size_t n);

/*
 * Makes the rules masquerade traffic from @src to everything outside
 * @cidrs (@n of them, in any order, duplicates allowed) and the
 * exceptions.  Runs iptables only when that differs from what is in force
 * or CW_MASQ_REFRESH_MS have passed since the last success (@now_ms).
 * Blocks for the time iptables takes (milliseconds; at most its 5 s lock
 * wait).  0, or -errno with m->error naming what failed.
 */
int cw_masq_sync(struct cw_masq *m, struct cw_prefix4 src, const struct cw_prefix4 *cidrs,
		 size_t n, int64_t now_ms);

/*
 * Removes the nat jump and chain (masquerading turned off); the raw and
 * mangle ones stay.  Quiet if absent.
 */
void cw_masq_remove(struct cw_masq *m);

void cw_masq_clear(struct cw_masq *m);

#endif
