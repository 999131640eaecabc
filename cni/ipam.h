/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Built-in IPAM: one file per allocated address under
 * <stateDir>/ipam/<network>/<ip>, holding "containerID\nifname\n".
 * O_CREAT|O_EXCL makes a claim atomic; a directory lock serialises the
 * next-fit cursor so concurrent ADDs spread over the range instead of
 * colliding on the first free address.
 */
#ifndef CW_CNI_IPAM_H
#define CW_CNI_IPAM_H

#include <stdbool.h>
#include <netinet/in.h>
#include <causeway/addr.h>
#include "conf.h"
#include "error.h"

struct cw_ipam;

/* Takes the lock (waits up to @timeout_ms; -EAGAIN after).  @pool may be NULL
 * for release/find/gc, which need no range. */
int cw_ipam_open(const char *state_dir, const char *network, const struct cw_prefix4 *pool,
		 int timeout_ms, struct cw_ipam **out);
void cw_ipam_close(struct cw_ipam *ipam);

/* The gateway is the first address of the pool; it is never allocated. */
struct in_addr cw_ipam_gateway(const struct cw_prefix4 *pool);
/* Allocates, or returns the address this attachment already holds
 * (*fresh = false).  -ENOSPC when the pool is full. */
int cw_ipam_allocate(struct cw_ipam *ipam, const char *container_id, const char *ifname,
		     struct in_addr *out, bool *fresh, struct cw_error *err);
/* -ENOENT when the attachment holds nothing. */
int cw_ipam_find(struct cw_ipam *ipam, const char *container_id, const char *ifname,
		 struct in_addr *out);
/* Releases whatever the attachment holds; 0 if it held nothing. */
int cw_ipam_release(struct cw_ipam *ipam, const char *container_id, const char *ifname);
/* Releases every allocation whose attachment is not in @conf's valid list. */
int cw_ipam_gc(struct cw_ipam *ipam, const struct cw_conf *conf, unsigned int *released);
int cw_ipam_usage(struct cw_ipam *ipam, unsigned int *used, unsigned int *capacity);

#endif
