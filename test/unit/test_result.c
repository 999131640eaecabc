// SPDX-License-Identifier: Apache-2.0
/* cni/result.c: results in each CNI version, and reading IPAM results. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include <causeway/log.h>
#include "result.h"

static struct in_addr ip4(const char *s)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		fail_msg("bad test address %s", s);
	return a;
}

/* What ADD reports: host veth, pod interface, one address, default route. */
static void sample(struct cw_result *r, bool with_dns)
{
	static const uint8_t host_mac[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };
	static const uint8_t pod_mac[6] = { 0x0a, 0xbb, 0xcc, 0xdd, 0xee, 0xff };

	memset(r, 0, sizeof(*r));
	strcpy(r->ifaces[0].name, "cw0123456789ab");
	memcpy(r->ifaces[0].mac, host_mac, 6);
	strcpy(r->ifaces[1].name, "eth0");
	memcpy(r->ifaces[1].mac, pod_mac, 6);
	strcpy(r->ifaces[1].sandbox, "/var/run/netns/cni-1234");
	r->n_ifaces = 2;
	r->ips[0].addr = ip4("10.10.1.5");
	r->ips[0].prefixlen = 32;
	r->ips[0].gateway = ip4("10.10.1.1");
	r->ips[0].iface = 1;
	r->n_ips = 1;
	r->routes[0].dst = ip4("0.0.0.0");
	r->routes[0].len = 0;
	r->routes[0].gw = ip4("10.10.1.1");
	r->n_routes = 1;
	if (with_dns)
		r->dns = cJSON_Parse("{\"nameservers\":[\"10.96.0.10\"],\"search\":[\"svc.cluster.local\"]}");
}

static const char *str_of(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsString(v))
		fail_msg("\"%s\" is missing or not a string", key);
	return v->valuestring;
}

static cJSON *format_parsed(const struct cw_result *r, const char *version)
{
	char *s = cw_result_format(r, version);
	cJSON *o;

	assert_non_null(s);
	o = cJSON_Parse(s);
	if (!cJSON_IsObject(o))
		fail_msg("result is not a JSON object: %s", s);
	free(s);
	return o;
}

/* The parts every version shares (doc/cni-contract.md "Result"). */
static void check_common(const cJSON *o, const char *version)
{
	const cJSON *ifs, *ips, *routes, *it;

	assert_string_equal(str_of(o, "cniVersion"), version);
	ifs = cJSON_GetObjectItemCaseSensitive(o, "interfaces");
	assert_true(cJSON_IsArray(ifs));
	assert_int_equal(cJSON_GetArraySize(ifs), 2);
	it = cJSON_GetArrayItem(ifs, 0);
	assert_string_equal(str_of(it, "name"), "cw0123456789ab");
	assert_string_equal(str_of(it, "mac"), "02:11:22:33:44:55");
	/* the host side is in the runtime's netns: no sandbox */
	assert_null(cJSON_GetObjectItemCaseSensitive(it, "sandbox"));
	it = cJSON_GetArrayItem(ifs, 1);
	assert_string_equal(str_of(it, "name"), "eth0");
	assert_string_equal(str_of(it, "mac"), "0a:bb:cc:dd:ee:ff");
	assert_string_equal(str_of(it, "sandbox"), "/var/run/netns/cni-1234");

	ips = cJSON_GetObjectItemCaseSensitive(o, "ips");
	assert_true(cJSON_IsArray(ips));
	assert_int_equal(cJSON_GetArraySize(ips), 1);
	it = cJSON_GetArrayItem(ips, 0);
	assert_string_equal(str_of(it, "address"), "10.10.1.5/32");
	assert_string_equal(str_of(it, "gateway"), "10.10.1.1");
	assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(it, "interface")));
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(it, "interface")->valueint, 1);

	routes = cJSON_GetObjectItemCaseSensitive(o, "routes");
	assert_true(cJSON_IsArray(routes));
	assert_int_equal(cJSON_GetArraySize(routes), 1);
	it = cJSON_GetArrayItem(routes, 0);
	assert_string_equal(str_of(it, "dst"), "0.0.0.0/0");
	assert_string_equal(str_of(it, "gw"), "10.10.1.1");
}

static void test_format_pre_100(void **state)
{
	static const char *const versions[] = { "0.3.1", "0.4.0" };
	struct cw_result r;

	(void)state;
	sample(&r, false);
	for (size_t i = 0; i < 2; i++) {
		cJSON *o = format_parsed(&r, versions[i]);
		const cJSON *ip = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "ips"), 0);

		check_common(o, versions[i]);
		/* SPEC 0.3.x/0.4.0: ips[].version is required */
		assert_string_equal(str_of(ip, "version"), "4");
		cJSON_Delete(o);
	}
	cw_result_clear(&r);
}

static void test_format_100(void **state)
{
	static const char *const versions[] = { "1.0.0", "1.1.0" };
	struct cw_result r;

	(void)state;
	sample(&r, false);
	for (size_t i = 0; i < 2; i++) {
		cJSON *o = format_parsed(&r, versions[i]);
		const cJSON *ip = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "ips"), 0);

		check_common(o, versions[i]);
		/* SPEC 1.0.0 removed ips[].version */
		assert_null(cJSON_GetObjectItemCaseSensitive(ip, "version"));
		cJSON_Delete(o);
	}
	cw_result_clear(&r);
}

static void test_format_dns(void **state)
{
	struct cw_result r;
	cJSON *o, *dns;

	(void)state;
	sample(&r, true);
	o = format_parsed(&r, "1.0.0");
	dns = cJSON_GetObjectItemCaseSensitive(o, "dns");
	assert_true(cJSON_IsObject(dns));
	assert_true(cJSON_Compare(dns, r.dns, 1));
	cJSON_Delete(o);
	cw_result_clear(&r);
	assert_null(r.dns);
	assert_int_equal(r.n_ips, 0);

	/* without DNS: an empty object, which every version accepts */
	sample(&r, false);
	o = format_parsed(&r, "0.3.1");
	dns = cJSON_GetObjectItemCaseSensitive(o, "dns");
	assert_true(cJSON_IsObject(dns));
	assert_null(dns->child);
	cJSON_Delete(o);
	cw_result_clear(&r);
}

static void test_format_optional(void **state)
{
	struct cw_result r;
	const cJSON *ip;
	cJSON *o;

	(void)state;
	sample(&r, false);
	r.ips[0].gateway.s_addr = 0;
	r.ips[0].iface = -1;
	r.n_routes = 0;
	r.n_ifaces = 0;
	o = format_parsed(&r, "1.1.0");
	ip = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "ips"), 0);
	assert_string_equal(str_of(ip, "address"), "10.10.1.5/32");
	assert_null(cJSON_GetObjectItemCaseSensitive(ip, "gateway"));
	assert_null(cJSON_GetObjectItemCaseSensitive(ip, "interface"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "routes"));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "interfaces")), 0);
	cJSON_Delete(o);

	/* interface index 0 is an index, not "none" */
	r.ips[0].iface = 0;
	o = format_parsed(&r, "1.1.0");
	ip = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "ips"), 0);
	assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(ip, "interface")));
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(ip, "interface")->valueint, 0);
	cJSON_Delete(o);
	cw_result_clear(&r);
}

static void parse_ok(const char *json, struct cw_result *r)
{
	struct cw_error err = { 0 };

	if (cw_result_parse(json, strlen(json), r, &err) != 0)
		fail_msg("parse failed: %d %s", err.code, err.msg);
	assert_int_equal(err.code, 0);
}

static void parse_fails(const char *json, const char *needle)
{
	struct cw_error err = { 0 };
	struct cw_result r = { 0 };

	assert_int_equal(cw_result_parse(json, strlen(json), &r, &err), -1);
	assert_int_equal(err.code, CW_ERR_IPAM_PLUGIN);
	if (!strstr(err.msg, needle))
		fail_msg("message \"%s\" does not contain \"%s\"", err.msg, needle);
	cw_result_clear(&r);
}

static void assert_ip(struct in_addr a, const char *want)
{
	char s[16];

	cw_addr4_str(a, s);
	assert_string_equal(s, want);
}

/* As host-local prints them (no "interface": IPAM plugins know none). */
static void test_parse_host_local(void **state)
{
	static const char *const docs[] = {
		"{\"cniVersion\":\"0.3.1\",\"ips\":[{\"version\":\"4\",\"address\":\"10.22.0.7/16\","
		"\"gateway\":\"10.22.0.1\"}],\"routes\":[{\"dst\":\"0.0.0.0/0\"}],\"dns\":{}}",
		"{\"cniVersion\":\"0.4.0\",\"ips\":[{\"version\":\"4\",\"address\":\"10.22.0.7/16\","
		"\"gateway\":\"10.22.0.1\"}],\"routes\":[{\"dst\":\"0.0.0.0/0\"}],\"dns\":{}}",
		"{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.22.0.7/16\",\"gateway\":\"10.22.0.1\"}],"
		"\"routes\":[{\"dst\":\"0.0.0.0/0\"}],\"dns\":{}}",
	};
	struct cw_result r;

	(void)state;
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		parse_ok(docs[i], &r);
		assert_int_equal(r.n_ips, 1);
		assert_ip(r.ips[0].addr, "10.22.0.7");
		assert_int_equal(r.ips[0].prefixlen, 16);
		assert_ip(r.ips[0].gateway, "10.22.0.1");
		assert_int_equal(r.ips[0].iface, -1);
		assert_int_equal(r.n_routes, 1);
		assert_ip(r.routes[0].dst, "0.0.0.0");
		assert_int_equal(r.routes[0].len, 0);
		assert_int_equal(r.routes[0].gw.s_addr, 0);
		assert_int_equal(r.n_ifaces, 0);
		assert_true(cJSON_IsObject(r.dns));
		cw_result_clear(&r);
	}
}

static void test_parse_full(void **state)
{
	struct cw_result r;

	(void)state;
	parse_ok("{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.1.0.5/24\",\"interface\":2},"
		 "{\"address\":\"10.2.0.5/24\",\"gateway\":\"10.2.0.254\"}],"
		 "\"routes\":[{\"dst\":\"10.0.0.0/8\",\"gw\":\"10.1.0.1\"},{\"dst\":\"192.168.0.0/16\"}],"
		 "\"dns\":{\"nameservers\":[\"1.1.1.1\"],\"domain\":\"example\"}}", &r);
	assert_int_equal(r.n_ips, 2);
	assert_ip(r.ips[0].addr, "10.1.0.5");
	assert_int_equal(r.ips[0].gateway.s_addr, 0);
	assert_int_equal(r.ips[0].iface, 2);
	assert_ip(r.ips[1].gateway, "10.2.0.254");
	assert_int_equal(r.n_routes, 2);
	assert_ip(r.routes[0].dst, "10.0.0.0");
	assert_int_equal(r.routes[0].len, 8);
	assert_ip(r.routes[0].gw, "10.1.0.1");
	assert_int_equal(r.routes[1].len, 16);
	assert_string_equal(str_of(r.dns, "domain"), "example");
	cw_result_clear(&r);

	/* nothing but the version: no addresses, no error (the caller decides) */
	parse_ok("{\"cniVersion\":\"1.0.0\"}", &r);
	assert_int_equal(r.n_ips, 0);
	assert_int_equal(r.n_routes, 0);
	assert_null(r.dns);
	cw_result_clear(&r);
}

static void test_parse_ipv6_skipped(void **state)
{
	struct cw_result r;

	(void)state;
	parse_ok("{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"fd00::5/64\",\"gateway\":\"fd00::1\"},"
		 "{\"address\":\"10.1.0.5/24\"},{\"address\":\"2001:db8::1/128\"}],"
		 "\"routes\":[{\"dst\":\"::/0\",\"gw\":\"fd00::1\"},{\"dst\":\"0.0.0.0/0\"}]}", &r);
	assert_int_equal(r.n_ips, 1);
	assert_ip(r.ips[0].addr, "10.1.0.5");
	assert_int_equal(r.n_routes, 1);
	assert_ip(r.routes[0].dst, "0.0.0.0");
	cw_result_clear(&r);
}

static void test_parse_errors(void **state)
{
	char big[2048], *p;

	(void)state;
	parse_fails("not json", "not valid JSON");
	parse_fails("", "not valid JSON");
	parse_fails("[]", "not a JSON object");
	parse_fails("{\"ips\":[{\"address\":\"10.1.0.500/24\"}]}", "\"10.1.0.500/24\" is not an IPv4 CIDR");
	parse_fails("{\"ips\":[{\"address\":\"10.1.0.5\"}]}", "\"10.1.0.5\" is not an IPv4 CIDR");
	parse_fails("{\"ips\":[{\"address\":\"10.1.0.5/33\"}]}", "is not an IPv4 CIDR");
	parse_fails("{\"ips\":[{\"address\":\"banana\"}]}", "\"banana\"");
	parse_fails("{\"ips\":[{\"address\":5}]}", "ips[].address missing");
	parse_fails("{\"ips\":[{\"gateway\":\"10.1.0.1\"}]}", "ips[].address missing");
	parse_fails("{\"ips\":[{\"address\":\"10.1.0.5/24\",\"gateway\":\"10.1.0.1/24\"}]}",
		    "gateway \"10.1.0.1/24\" is not an IPv4 address");
	parse_fails("{\"routes\":[{\"gw\":\"10.1.0.1\"}]}", "routes[].dst missing");
	parse_fails("{\"routes\":[{\"dst\":\"default\"}]}", "route dst \"default\"");
	parse_fails("{\"routes\":[{\"dst\":\"0.0.0.0/0\",\"gw\":\"x\"}]}", "route gw \"x\"");

	/* more addresses than the struct holds: refused, not overflowed */
	p = big + sprintf(big, "{\"ips\":[");
	for (int i = 0; i < CW_RESULT_MAX_IPS + 1; i++)
		p += sprintf(p, "%s{\"address\":\"10.1.0.%d/24\"}", i ? "," : "", i + 1);
	strcpy(p, "]}");
	parse_fails(big, "more than 8 addresses");
}

/* What we format, we read back the same (CHECK reads prevResult this way). */
static void test_round_trip(void **state)
{
	static const char *const versions[] = { "0.3.1", "0.4.0", "1.0.0", "1.1.0" };
	struct cw_result in, out;

	(void)state;
	sample(&in, true);
	for (size_t i = 0; i < 4; i++) {
		char *s = cw_result_format(&in, versions[i]);

		assert_non_null(s);
		parse_ok(s, &out);
		free(s);
		assert_int_equal(out.n_ips, 1);
		assert_int_equal(out.ips[0].addr.s_addr, in.ips[0].addr.s_addr);
		assert_int_equal(out.ips[0].prefixlen, in.ips[0].prefixlen);
		assert_int_equal(out.ips[0].gateway.s_addr, in.ips[0].gateway.s_addr);
		assert_int_equal(out.ips[0].iface, 1);
		assert_int_equal(out.n_routes, 1);
		assert_int_equal(out.routes[0].gw.s_addr, in.routes[0].gw.s_addr);
		assert_true(cJSON_Compare(out.dns, in.dns, 1));
		cw_result_clear(&out);
	}
	cw_result_clear(&in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_pre_100),
		cmocka_unit_test(test_format_100),
		cmocka_unit_test(test_format_dns),
		cmocka_unit_test(test_format_optional),
		cmocka_unit_test(test_parse_host_local),
		cmocka_unit_test(test_parse_full),
		cmocka_unit_test(test_parse_ipv6_skipped),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_round_trip),
	};

	/* the IPv6 "skipping" warnings are expected here */
	cw_log_set_level(CW_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
