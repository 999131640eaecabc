/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The endpoint state file: one JSON document per pod interface, written by
 * the plugin on ADD (atomically) and removed on DEL, watched by the helper.
 * Path: <stateDir>/endpoints/<containerID>-<ifname>.json
 */
#ifndef CAUSEWAY_ENDPOINT_H
#define CAUSEWAY_ENDPOINT_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <netinet/in.h>

#define CW_ENDPOINT_DIR "endpoints"
/*
 * <stateDir>/podcidr: the node's PodCIDR ("10.10.1.0/24\n"), written by the
 * helper from the Node object, read by the plugin when its config gives
 * neither "podCIDR" nor "ipam".
 */
#define CW_PODCIDR_FILE "podcidr"

struct cw_endpoint_state {
	char container_id[256];
	char ifname[16];
	char netns[256];
	char network[128];       /* CNI network name */
	char host_ifname[16];
	int host_ifindex;
	struct in_addr ip;
	uint8_t prefixlen;       /* as reported in the result */
	struct in_addr gateway;
	uint8_t pod_mac[6];
	uint8_t host_mac[6];
	unsigned int mtu;
	bool ipam_delegated;     /* IP came from an IPAM plugin, not podCIDR */
	char pod_namespace[256];
	char pod_name[256];
	char pod_uid[64];
};

/* Pure: bytes ↔ struct.  Parse errors name the field in @err. */
int cw_endpoint_parse(const char *buf, size_t len, struct cw_endpoint_state *out,
		      char *err, size_t errlen);
char *cw_endpoint_format(const struct cw_endpoint_state *ep);

int cw_endpoint_path(const char *state_dir, const char *container_id, const char *ifname,
		     char *buf, size_t len);
int cw_endpoint_write(const char *state_dir, const struct cw_endpoint_state *ep);
/* -ENOENT when there is no state for this attachment. */
int cw_endpoint_read(const char *state_dir, const char *container_id, const char *ifname,
		     struct cw_endpoint_state *out);
/* 0 when removed or absent. */
int cw_endpoint_remove(const char *state_dir, const char *container_id, const char *ifname);

typedef int (*cw_endpoint_fn)(const struct cw_endpoint_state *ep, void *arg);
/* Calls @fn for every readable state file; unreadable ones are logged. */
int cw_endpoint_foreach(const char *state_dir, cw_endpoint_fn fn, void *arg);

#endif
