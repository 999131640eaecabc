// SPDX-License-Identifier: Apache-2.0
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <causeway/addr.h>

bool cw_addr4_parse(const char *s, struct in_addr *out)
{
	/* inet_pton accepts exactly dotted-quad decimal, no leading junk. */
	return s && inet_pton(AF_INET, s, out) == 1;
}

bool cw_addr4_parse_cidr(const char *s, struct in_addr *addr, uint8_t *len)
{
	char buf[32], *slash, *end;
	long l;

	if (!s || strlen(s) >= sizeof(buf))
		return false;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (!slash || slash[1] == '\0')
		return false;
	*slash = '\0';
	errno = 0;
	l = strtol(slash + 1, &end, 10);
	if (errno || *end || l < 0 || l > 32 || !(slash[1] >= '0' && slash[1] <= '9'))
		return false;
	if (!cw_addr4_parse(buf, addr))
		return false;
	*len = (uint8_t)l;
	return true;
}

static uint32_t mask_of(uint8_t len)
{
	return len == 0 ? 0 : ~0U << (32 - len);
}

bool cw_prefix4_parse(const char *s, struct cw_prefix4 *out)
{
	struct in_addr a;
	uint8_t len;

	if (!cw_addr4_parse_cidr(s, &a, &len))
		return false;
	if (ntohl(a.s_addr) & ~mask_of(len))
		return false;
	out->addr = a;
	out->len = len;
	return true;
}

bool cw_prefix4_contains(const struct cw_prefix4 *p, struct in_addr a)
{
	uint32_t m = mask_of(p->len);

	return (ntohl(a.s_addr) & m) == (ntohl(p->addr.s_addr) & m);
}

uint32_t cw_prefix4_first(const struct cw_prefix4 *p)
{
	return ntohl(p->addr.s_addr) & mask_of(p->len);
}

uint32_t cw_prefix4_last(const struct cw_prefix4 *p)
{
	return cw_prefix4_first(p) | ~mask_of(p->len);
}

void cw_addr4_str(struct in_addr a, char buf[16])
{
	inet_ntop(AF_INET, &a, buf, 16);
}

void cw_mac_str(const uint8_t mac[6], char buf[18])
{
	snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x",
		 mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Exactly "xx:xx:xx:xx:xx:xx" in hex digits (sscanf's %x would take signs). */
bool cw_mac_parse(const char *s, uint8_t mac[6])
{
	if (!s || strlen(s) != 17)
		return false;
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
			return false;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

int cw_mac_random(uint8_t mac[6])
{
	if (getrandom(mac, 6, 0) != 6)
		return -errno;
	mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);
	return 0;
}

uint64_t cw_fnv1a64(const void *data, size_t len, uint64_t seed)
{
	const uint8_t *p = data;
	uint64_t h = seed;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

void cw_host_ifname(const char *container_id, const char *ifname, char buf[16])
{
	uint64_t h = cw_fnv1a64(container_id, strlen(container_id), CW_FNV1A64_SEED);

	h = cw_fnv1a64("/", 1, h);
	h = cw_fnv1a64(ifname, strlen(ifname), h);
	snprintf(buf, 16, "cw%012llx", (unsigned long long)(h & 0xffffffffffffULL));
}
