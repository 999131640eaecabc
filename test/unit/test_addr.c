// SPDX-License-Identifier: Apache-2.0
/* lib/addr.c: IPv4 prefixes, MACs, host interface names. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <causeway/addr.h>

static uint32_t h(struct in_addr a)
{
	return ntohl(a.s_addr);
}

static struct in_addr ip4(uint32_t host_order)
{
	struct in_addr a = { htonl(host_order) };

	return a;
}

static void test_prefix_parse_ok(void **state)
{
	static const struct {
		const char *s;
		uint32_t addr;
		uint8_t len;
	} ok[] = {
		{ "10.0.0.0/8", 0x0a000000, 8 },
		{ "10.10.1.0/24", 0x0a0a0100, 24 },
		{ "0.0.0.0/0", 0, 0 },
		{ "10.1.2.3/32", 0x0a010203, 32 },
		{ "192.168.7.248/29", 0xc0a807f8, 29 },
		{ "255.255.255.255/32", 0xffffffff, 32 },
		{ "128.0.0.0/1", 0x80000000, 1 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct cw_prefix4 p = { { 0xdeadbeef }, 99 };

		if (!cw_prefix4_parse(ok[i].s, &p))
			fail_msg("%s refused", ok[i].s);
		assert_int_equal(h(p.addr), ok[i].addr);
		assert_int_equal(p.len, ok[i].len);
	}
}

static void test_prefix_parse_bad(void **state)
{
	static const char *const bad[] = {
		"10.0.0.1/8",     /* host bits */
		"10.10.1.1/24", "0.0.0.1/0", "10.1.2.3/31",
		"10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "10.0.0.0", "/8", "10.0.0/8",
		"10.0.0.256/32", "10.0.0.0/8x", "10.0.0.0/+8", "10.0.0.0/ 8", " 10.0.0.0/8",
		"10.0.0.0 /8", "1.2.3.4/8/8", "fd00::/8", "", "10.0.0.0//8", "010.0.0.0/8",
		"10.0.0.0/999999999999999999999", "0x0a.0.0.0/8", "10.0.0.0/8\n",
		"10.000000000000000000000000.0.0/8", /* longer than the parser's buffer */
	};
	struct cw_prefix4 p;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cw_prefix4_parse(bad[i], &p))
			fail_msg("\"%s\" accepted as a prefix", bad[i]);
	}
	assert_false(cw_prefix4_parse(NULL, &p));
}

static void test_addr_parse(void **state)
{
	struct in_addr a;
	uint8_t len = 0;

	(void)state;
	/* an address with its prefix length: host bits are the point */
	assert_true(cw_addr4_parse_cidr("10.1.2.3/24", &a, &len));
	assert_int_equal(h(a), 0x0a010203);
	assert_int_equal(len, 24);
	assert_false(cw_addr4_parse_cidr("10.1.2.3", &a, &len));
	assert_false(cw_addr4_parse_cidr("10.1.2.3/33", &a, &len));
	assert_false(cw_addr4_parse_cidr(NULL, &a, &len));

	assert_true(cw_addr4_parse("10.1.2.3", &a));
	assert_int_equal(h(a), 0x0a010203);
	assert_false(cw_addr4_parse("10.1.2.3/32", &a));
	assert_false(cw_addr4_parse("10.1.2", &a));
	assert_false(cw_addr4_parse("10.1.2.3 ", &a));
	assert_false(cw_addr4_parse("::1", &a));
	assert_false(cw_addr4_parse("", &a));
	assert_false(cw_addr4_parse(NULL, &a));
}

static void test_addr_str(void **state)
{
	char s[16];

	(void)state;
	cw_addr4_str(ip4(0x0a010203), s);
	assert_string_equal(s, "10.1.2.3");
	cw_addr4_str(ip4(0xffffffff), s);
	assert_string_equal(s, "255.255.255.255");
	cw_addr4_str(ip4(0), s);
	assert_string_equal(s, "0.0.0.0");
}

static void test_contains(void **state)
{
	struct cw_prefix4 p;

	(void)state;
	assert_true(cw_prefix4_parse("10.1.0.0/16", &p));
	assert_true(cw_prefix4_contains(&p, ip4(0x0a010000)));
	assert_true(cw_prefix4_contains(&p, ip4(0x0a01ffff)));
	assert_true(cw_prefix4_contains(&p, ip4(0x0a017f01)));
	assert_false(cw_prefix4_contains(&p, ip4(0x0a020000)));
	assert_false(cw_prefix4_contains(&p, ip4(0x0a00ffff)));
	assert_false(cw_prefix4_contains(&p, ip4(0x8a010000)));

	assert_true(cw_prefix4_parse("0.0.0.0/0", &p));
	assert_true(cw_prefix4_contains(&p, ip4(0)));
	assert_true(cw_prefix4_contains(&p, ip4(0xffffffff)));

	assert_true(cw_prefix4_parse("10.1.2.3/32", &p));
	assert_true(cw_prefix4_contains(&p, ip4(0x0a010203)));
	assert_false(cw_prefix4_contains(&p, ip4(0x0a010202)));
	assert_false(cw_prefix4_contains(&p, ip4(0x0a010204)));
}

static void test_first_last(void **state)
{
	struct cw_prefix4 p;

	(void)state;
	assert_true(cw_prefix4_parse("10.1.2.0/24", &p));
	assert_int_equal(cw_prefix4_first(&p), 0x0a010200);
	assert_int_equal(cw_prefix4_last(&p), 0x0a0102ff);
	assert_true(cw_prefix4_parse("192.168.7.248/29", &p));
	assert_int_equal(cw_prefix4_first(&p), 0xc0a807f8);
	assert_int_equal(cw_prefix4_last(&p), 0xc0a807ff);
	assert_true(cw_prefix4_parse("10.1.2.3/32", &p));
	assert_int_equal(cw_prefix4_first(&p), 0x0a010203);
	assert_int_equal(cw_prefix4_last(&p), 0x0a010203);
	assert_true(cw_prefix4_parse("0.0.0.0/0", &p));
	assert_int_equal(cw_prefix4_first(&p), 0);
	assert_int_equal(cw_prefix4_last(&p), 0xffffffff);

	/* a hand-built prefix with host bits: first/last still mask them */
	p.addr = ip4(0x0a010203);
	p.len = 24;
	assert_int_equal(cw_prefix4_first(&p), 0x0a010200);
	assert_int_equal(cw_prefix4_last(&p), 0x0a0102ff);
}

static void test_mac(void **state)
{
	static const char *const bad[] = {
		"02:00:5e:10:00", "02:00:5e:10:00:01:02", "02-00-5e-10-00-01", "0200.5e10.0001",
		"02:00:5e:10:00:0g", "", "02:00:5e:10:00:01 ", "2:0:5e:10:0:1", "002:00:5e:10:00:1",
		"02:00:5e:10:00:1", "02:00:5e:10:00:001", "020:0:5e:10:00:01",
	};
	uint8_t mac[6];
	char s[18];

	(void)state;
	assert_true(cw_mac_parse("02:00:5e:10:00:01", mac));
	assert_memory_equal(mac, ((uint8_t[]){ 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01 }), 6);
	cw_mac_str(mac, s);
	assert_string_equal(s, "02:00:5e:10:00:01");

	/* upper case is read, lower case is written */
	assert_true(cw_mac_parse("AA:BB:CC:DD:EE:FF", mac));
	cw_mac_str(mac, s);
	assert_string_equal(s, "aa:bb:cc:dd:ee:ff");

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cw_mac_parse(bad[i], mac))
			fail_msg("\"%s\" accepted as a MAC", bad[i]);
	}
	assert_false(cw_mac_parse(NULL, mac));
}

/* sscanf's %x takes a sign and leading blanks, and the length check does
 * not notice because each of these is 17 bytes. */
static void test_mac_non_hex(void **state)
{
	uint8_t mac[6];

	(void)state;
	assert_false(cw_mac_parse("-1:22:33:44:55:66", mac));
	assert_false(cw_mac_parse("+1:22:33:44:55:66", mac));
	assert_false(cw_mac_parse(" 1:22:33:44:55:66", mac));
}

static void test_mac_random(void **state)
{
	uint8_t a[6], b[6];
	int differ = 0;

	(void)state;
	for (int i = 0; i < 256; i++) {
		assert_int_equal(cw_mac_random(a), 0);
		assert_int_equal(cw_mac_random(b), 0);
		/* IEEE 802: bit 1 of the first octet = locally administered, bit 0 = group */
		assert_int_equal(a[0] & 0x02, 0x02);
		assert_int_equal(a[0] & 0x01, 0);
		assert_int_equal(b[0] & 0x03, 0x02);
		differ += memcmp(a, b, 6) != 0;
	}
	assert_int_equal(differ, 256);
}

/* Reference FNV-1a 64 (draft-eastlake-fnv), written out independently. */
static uint64_t ref_fnv1a64(const char *s)
{
	uint64_t x = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		x ^= (uint8_t)*s;
		x *= 0x100000001b3ULL;
	}
	return x;
}

static void test_fnv(void **state)
{
	(void)state;
	/* published FNV-1a 64 test vectors */
	assert_true(cw_fnv1a64("", 0, CW_FNV1A64_SEED) == 0xcbf29ce484222325ULL);
	assert_true(cw_fnv1a64("a", 1, CW_FNV1A64_SEED) == 0xaf63dc4c8601ec8cULL);
	assert_true(cw_fnv1a64("foobar", 6, CW_FNV1A64_SEED) == 0x85944171f73967e8ULL);
	/* chaining = hashing the concatenation */
	assert_true(cw_fnv1a64("bar", 3, cw_fnv1a64("foo", 3, CW_FNV1A64_SEED)) ==
		    cw_fnv1a64("foobar", 6, CW_FNV1A64_SEED));
}

static void test_host_ifname(void **state)
{
	char a[16], b[16], want[16];

	(void)state;
	cw_host_ifname("0123456789abcdef", "eth0", a);
	cw_host_ifname("0123456789abcdef", "eth0", b);
	assert_string_equal(a, b);
	assert_true(strlen(a) <= 15);
	assert_int_equal(strlen(a), 14);
	assert_memory_equal(a, "cw", 2);
	assert_int_equal(strspn(a + 2, "0123456789abcdef"), 12);

	/* doc/cni-contract.md: low 48 bits of FNV-1a 64 over "CONTAINERID/IFNAME" */
	snprintf(want, sizeof(want), "cw%012llx",
		 (unsigned long long)(ref_fnv1a64("0123456789abcdef/eth0") & 0xffffffffffffULL));
	assert_string_equal(a, want);

	cw_host_ifname("0123456789abcdef", "eth1", b);
	assert_string_not_equal(a, b);
	cw_host_ifname("0123456789abcdeF", "eth0", b);
	assert_string_not_equal(a, b);
	/* the separator keeps ("ab","c") and ("a","bc") apart */
	cw_host_ifname("ab", "c", a);
	cw_host_ifname("a", "bc", b);
	assert_string_not_equal(a, b);

	/* the longest inputs still give 14 characters */
	{
		char id[201];

		memset(id, 'f', 200);
		id[200] = '\0';
		cw_host_ifname(id, "fifteen-chars-x", a);
		assert_int_equal(strlen(a), 14);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefix_parse_ok),
		cmocka_unit_test(test_prefix_parse_bad),
		cmocka_unit_test(test_addr_parse),
		cmocka_unit_test(test_addr_str),
		cmocka_unit_test(test_contains),
		cmocka_unit_test(test_first_last),
		cmocka_unit_test(test_mac),
		cmocka_unit_test(test_mac_non_hex),
		cmocka_unit_test(test_mac_random),
		cmocka_unit_test(test_fnv),
		cmocka_unit_test(test_host_ifname),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
