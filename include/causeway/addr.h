/* SPDX-License-Identifier: Apache-2.0 */
/* Small, pure helpers for IPv4 prefixes, MACs and names. */
#ifndef CAUSEWAY_ADDR_H
#define CAUSEWAY_ADDR_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <netinet/in.h>

struct cw_prefix4 {
	struct in_addr addr; /* network byte order, host bits cleared */
	uint8_t len;
};

/* "10.1.2.0/24" → prefix; rejects host bits set, bad octets, missing /len. */
bool cw_prefix4_parse(const char *s, struct cw_prefix4 *out);
/* "10.1.2.3/24" (an address with its prefix length, host bits allowed). */
bool cw_addr4_parse_cidr(const char *s, struct in_addr *addr, uint8_t *len);
bool cw_addr4_parse(const char *s, struct in_addr *out);
bool cw_prefix4_contains(const struct cw_prefix4 *p, struct in_addr a);
/* Host-order helpers for walking a range. */
uint32_t cw_prefix4_first(const struct cw_prefix4 *p);
uint32_t cw_prefix4_last(const struct cw_prefix4 *p);
void cw_addr4_str(struct in_addr a, char buf[16]);

void cw_mac_str(const uint8_t mac[6], char buf[18]);
bool cw_mac_parse(const char *s, uint8_t mac[6]);
/* Random, locally administered, unicast. */
int cw_mac_random(uint8_t mac[6]);

/* Host-side veth name: "cw" + 12 hex of FNV-1a 64 over "CONTAINERID/IFNAME". */
void cw_host_ifname(const char *container_id, const char *ifname, char buf[16]);
uint64_t cw_fnv1a64(const void *data, size_t len, uint64_t seed);
#define CW_FNV1A64_SEED 0xcbf29ce484222325ULL

#endif
