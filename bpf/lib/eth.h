/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CW_BPF_ETH_H
#define CW_BPF_ETH_H

#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

static __always_inline void cw_mac_copy(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, ETH_ALEN);
}

#endif
