/* SPDX-License-Identifier: Apache-2.0 */
/* CNI results: encoding in each supported version, and reading an IPAM
 * plugin's result (any supported version). */
#ifndef CW_CNI_RESULT_H
#define CW_CNI_RESULT_H

#include <stdint.h>
#include <netinet/in.h>
#include "conf.h"
#include "error.h"

#define CW_RESULT_MAX_IPS    8
#define CW_RESULT_MAX_ROUTES 32

struct cw_result_iface {
	char name[16];
	uint8_t mac[6];
	char sandbox[256]; /* "" for the host side */
};

struct cw_result_ip {
	struct in_addr addr;
	uint8_t prefixlen;
	struct in_addr gateway; /* 0 when none */
	int iface;              /* index into ifaces, -1 when none */
};

struct cw_result_route {
	struct in_addr dst;
	uint8_t len;
	struct in_addr gw;      /* 0 when none */
};

struct cw_result {
	struct cw_result_iface ifaces[2];
	int n_ifaces;
	struct cw_result_ip ips[CW_RESULT_MAX_IPS];
	int n_ips;
	struct cw_result_route routes[CW_RESULT_MAX_ROUTES];
	int n_routes;
	struct cJSON *dns;      /* owned, or NULL */
};

void cw_result_clear(struct cw_result *r);
char *cw_result_format(const struct cw_result *r, const char *cni_version);
/* IPv4 parts of an IPAM result; IPv6 entries are skipped with a warning. */
int cw_result_parse(const char *buf, size_t len, struct cw_result *out, struct cw_error *err);
int cw_result_parse_json(const struct cJSON *o, struct cw_result *out, struct cw_error *err);

#endif
