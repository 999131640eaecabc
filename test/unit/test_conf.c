// SPDX-License-Identifier: Apache-2.0
/* cni/conf.c: the network configuration parser (doc/cni-contract.md "Config"). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include <causeway/datapath.h>
#include "conf.h"

static struct cw_conf *parse_ok(const char *json)
{
	struct cw_error err = { 0 };
	struct cw_conf *c = NULL;
	int rc = cw_conf_parse(json, strlen(json), &c, &err);

	if (rc != 0)
		fail_msg("expected success for %s, got code %d: %s", json, err.code, err.msg);
	assert_int_equal(err.code, 0);
	assert_non_null(c);
	return c;
}

/* Parses @json, expects failure with @code and a message containing @needle. */
static void parse_fails(const char *json, int code, const char *needle)
{
	struct cw_error err = { 0 };
	struct cw_conf *c = NULL;
	int rc = cw_conf_parse(json, strlen(json), &c, &err);

	if (rc == 0)
		fail_msg("expected code %d for %s, but it parsed", code, json);
	assert_int_equal(rc, -1);
	assert_null(c);
	if (err.code != code)
		fail_msg("for %s: expected code %d, got %d (%s)", json, code, err.code, err.msg);
	if (needle && !strstr(err.msg, needle))
		fail_msg("for %s: message \"%s\" does not contain \"%s\"", json, err.msg, needle);
}

/* A valid config with one extra member spliced in (empty @extra: none). */
static char *with_field(const char *extra)
{
	char *s = NULL;

	assert_true(asprintf(&s, "{\"cniVersion\":\"1.0.0\",\"name\":\"pods\",\"type\":\"causeway\"%s%s}",
			     extra[0] ? "," : "", extra) > 0);
	return s;
}

static void field_fails(const char *extra, const char *needle)
{
	char *s = with_field(extra);

	parse_fails(s, CW_ERR_INVALID_CONFIG, needle);
	free(s);
}

static struct cw_conf *field_ok(const char *extra)
{
	char *s = with_field(extra);
	struct cw_conf *c = parse_ok(s);

	free(s);
	return c;
}

static void test_defaults(void **state)
{
	const char *json = "{\"cniVersion\":\"1.1.0\",\"name\":\"pods\",\"type\":\"causeway\"}";
	struct cw_conf *c = parse_ok(json);

	(void)state;
	assert_string_equal(c->cni_version, "1.1.0");
	assert_int_equal(c->version, CW_V110);
	assert_string_equal(c->name, "pods");
	assert_string_equal(c->type, "causeway");
	assert_string_equal(c->bpf_root, CW_DEFAULT_BPF_ROOT);
	assert_string_equal(c->bpf_root, "/sys/fs/bpf/causeway");
	assert_string_equal(c->state_dir, CW_DEFAULT_STATE_DIR);
	assert_string_equal(c->state_dir, "/var/lib/causeway");
	assert_int_equal(c->mtu, 1500);
	assert_true(c->async_link_delete);
	assert_false(c->has_pod_cidr);
	assert_string_equal(c->log_file, "");
	assert_int_equal(c->log_level, CW_LOG_WARN);
	assert_false(c->has_ipam);
	assert_null(c->prev_result);
	assert_false(c->has_valid);
	assert_int_equal(c->n_valid, 0);
	/* the raw bytes are kept for delegation to an IPAM plugin */
	assert_int_equal(c->raw_len, strlen(json));
	assert_memory_equal(c->raw, json, strlen(json));
	assert_int_equal(c->raw[c->raw_len], '\0');
	cw_conf_free(c);
}

static void test_all_fields(void **state)
{
	struct cw_conf *c = field_ok("\"bpfRoot\":\"/sys/fs/bpf/cw-test\",\"stateDir\":\"/run/cw\","
				     "\"mtu\":9000,\"podCIDR\":\"10.10.1.0/24\",\"logFile\":\"/var/log/cw.log\","
				     "\"logLevel\":\"debug\",\"ipam\":{\"type\":\"host-local\",\"subnet\":\"10.0.0.0/8\"},"
				     "\"runtimeConfig\":{\"portMappings\":[]},\"args\":{\"cni\":{}}");
	char ip[16];

	(void)state;
	assert_string_equal(c->bpf_root, "/sys/fs/bpf/cw-test");
	assert_string_equal(c->state_dir, "/run/cw");
	assert_int_equal(c->mtu, 9000);
	assert_true(c->has_pod_cidr);
	cw_addr4_str(c->pod_cidr.addr, ip);
	assert_string_equal(ip, "10.10.1.0");
	assert_int_equal(c->pod_cidr.len, 24);
	assert_string_equal(c->log_file, "/var/log/cw.log");
	assert_int_equal(c->log_level, CW_LOG_DEBUG);
	assert_true(c->has_ipam);
	assert_string_equal(c->ipam_type, "host-local");
	cw_conf_free(c);
}

static void test_versions(void **state)
{
	static const struct {
		const char *s;
		enum cw_cni_version v;
	} ok[] = {
		{ "0.3.1", CW_V031 }, { "0.4.0", CW_V040 }, { "1.0.0", CW_V100 }, { "1.1.0", CW_V110 },
	};
	char buf[160];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct cw_conf *c;

		snprintf(buf, sizeof(buf), "{\"cniVersion\":\"%s\",\"name\":\"n\"}", ok[i].s);
		c = parse_ok(buf);
		assert_int_equal(c->version, ok[i].v);
		assert_string_equal(c->cni_version, ok[i].s);
		cw_conf_free(c);
	}
}

static void test_version_unsupported(void **state)
{
	static const char *const bad[] = { "0.2.0", "0.3.0", "0.4", "1.0", "2.0.0", "1.1.0 ", "", "v1.0.0" };
	char buf[160];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "{\"cniVersion\":\"%s\",\"name\":\"n\"}", bad[i]);
		parse_fails(buf, CW_ERR_INCOMPATIBLE_VERSION, "is not supported");
	}
	parse_fails("{\"cniVersion\":\"0.2.0\",\"name\":\"n\"}", CW_ERR_INCOMPATIBLE_VERSION, "\"0.2.0\"");
	/* longer than the field: still "unsupported", not an overflow */
	parse_fails("{\"cniVersion\":\"1.0.0000000000000000000000000000000000000000000\",\"name\":\"n\"}",
		    CW_ERR_INCOMPATIBLE_VERSION, "is not supported");
	/* missing or mistyped is an invalid config, not a version mismatch */
	parse_fails("{\"name\":\"n\"}", CW_ERR_INVALID_CONFIG, "cniVersion");
	parse_fails("{\"cniVersion\":1.0,\"name\":\"n\"}", CW_ERR_INVALID_CONFIG, "cniVersion");
}

static void test_not_json(void **state)
{
	struct cw_error err = { 0 };
	struct cw_conf *c = NULL;

	(void)state;
	parse_fails("{", CW_ERR_DECODE, "not valid JSON");
	parse_fails("", CW_ERR_DECODE, "not valid JSON");
	parse_fails("cniVersion: 1.0.0", CW_ERR_DECODE, "not valid JSON");
	parse_fails("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",}", CW_ERR_DECODE, "not valid JSON");
	parse_fails("[{\"cniVersion\":\"1.0.0\",\"name\":\"n\"}]", CW_ERR_DECODE, "not a JSON object");
	parse_fails("[]", CW_ERR_DECODE, "not a JSON object");
	parse_fails("\"x\"", CW_ERR_DECODE, "not a JSON object");
	parse_fails("42", CW_ERR_DECODE, "not a JSON object");
	parse_fails("null", CW_ERR_DECODE, "not a JSON object");

	/* NULL buffer with length 0: same as empty input */
	assert_int_equal(cw_conf_parse(NULL, 0, &c, &err), -1);
	assert_int_equal(err.code, CW_ERR_DECODE);
	assert_null(c);
}

/* Only @len bytes are read: the parser must not run past them. */
static void test_length_respected(void **state)
{
	const char *obj = "{\"cniVersion\":\"1.0.0\",\"name\":\"pods\"}";
	char buf[128];
	struct cw_error err = { 0 };
	struct cw_conf *c = NULL;

	(void)state;
	snprintf(buf, sizeof(buf), "%s,\"mtu\":\"garbage\"}", obj);
	assert_int_equal(cw_conf_parse(buf, strlen(obj), &c, &err), 0);
	assert_int_equal(c->raw_len, strlen(obj));
	assert_string_equal(c->raw, obj);
	cw_conf_free(c);

	/* cut in the middle of the object: not JSON */
	c = NULL;
	memset(&err, 0, sizeof(err));
	assert_int_equal(cw_conf_parse(obj, strlen(obj) - 1, &c, &err), -1);
	assert_int_equal(err.code, CW_ERR_DECODE);
	assert_null(c);
}

static void test_name(void **state)
{
	char long_name[200], buf[300];
	struct cw_conf *c;

	(void)state;
	parse_fails("{\"cniVersion\":\"1.0.0\"}", CW_ERR_INVALID_CONFIG, "\"name\"");
	parse_fails("{\"cniVersion\":\"1.0.0\",\"name\":\"\"}", CW_ERR_INVALID_CONFIG, "\"name\"");
	parse_fails("{\"cniVersion\":\"1.0.0\",\"name\":7}", CW_ERR_INVALID_CONFIG, "\"name\"");
	parse_fails("{\"cniVersion\":\"1.0.0\",\"name\":null}", CW_ERR_INVALID_CONFIG, "\"name\"");
	static const char *const bad[] = { "bad/name", "a b", "-lead", "_lead", ".lead", "a:b",
					   "a\\nb", "caf\\u00e9", "..", "a*" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "{\"cniVersion\":\"1.0.0\",\"name\":\"%s\"}", bad[i]);
		parse_fails(buf, CW_ERR_INVALID_CONFIG, "config field \"name\"");
	}

	c = parse_ok("{\"cniVersion\":\"1.0.0\",\"name\":\"Net_1.a-b\"}");
	assert_string_equal(c->name, "Net_1.a-b");
	cw_conf_free(c);

	/* 127 characters fit, 128 do not */
	memset(long_name, 'a', 127);
	long_name[127] = '\0';
	snprintf(buf, sizeof(buf), "{\"cniVersion\":\"1.0.0\",\"name\":\"%s\"}", long_name);
	c = parse_ok(buf);
	assert_int_equal(strlen(c->name), 127);
	cw_conf_free(c);
	memset(long_name, 'a', 128);
	long_name[128] = '\0';
	snprintf(buf, sizeof(buf), "{\"cniVersion\":\"1.0.0\",\"name\":\"%s\"}", long_name);
	parse_fails(buf, CW_ERR_INVALID_CONFIG, "\"name\"");
}

static void test_type_field(void **state)
{
	(void)state;
	parse_fails("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":1}", CW_ERR_INVALID_CONFIG,
		    "\"type\" must be a string");
}

static void test_mtu(void **state)
{
	static const char *const bad[] = { "\"1500\"", "67", "0", "-1", "65536", "1500.5", "true",
					   "[1500]", "{}", "1e9" };
	static const struct {
		const char *json;
		unsigned int mtu;
	} ok[] = { { "68", 68 }, { "65535", 65535 }, { "1450", 1450 }, { "1.5e3", 1500 }, { "null", 1500 } };
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "\"mtu\":%s", bad[i]);
		field_fails(buf, "integer from 68 to 65535");
	}
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct cw_conf *c;

		snprintf(buf, sizeof(buf), "\"mtu\":%s", ok[i].json);
		c = field_ok(buf);
		assert_int_equal(c->mtu, ok[i].mtu);
		cw_conf_free(c);
	}
}

static void test_pod_cidr(void **state)
{
	static const char *const not_cidr[] = {
		"10.10.1.1/24",  /* host bits set */
		"10.10.1.0/33", "10.10.1.0/-1", "10.10.1.0/", "10.10.1.0", "10.10.1/24",
		"10.10.1.256/24", "fd00::/64", "", "10.10.1.0/24x",
	};
	static const char *const bad_len[] = { "10.10.1.0/30", "10.10.1.0/31", "10.10.1.1/32",
					       "10.0.0.0/7", "0.0.0.0/0" };
	char buf[96];
	struct cw_conf *c;

	(void)state;
	for (size_t i = 0; i < sizeof(not_cidr) / sizeof(not_cidr[0]); i++) {
		snprintf(buf, sizeof(buf), "\"podCIDR\":\"%s\"", not_cidr[i]);
		field_fails(buf, "is not an IPv4 network in CIDR notation");
	}
	for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
		snprintf(buf, sizeof(buf), "\"podCIDR\":\"%s\"", bad_len[i]);
		field_fails(buf, "must have a prefix length from /8 to /29");
	}
	field_fails("\"podCIDR\":24", "\"podCIDR\" must be a string");
	field_fails("\"podCIDR\":\"10.10.1.0/24                                                        \"",
		    "\"podCIDR\" is longer than");

	c = field_ok("\"podCIDR\":\"10.0.0.0/8\"");
	assert_true(c->has_pod_cidr);
	assert_int_equal(c->pod_cidr.len, 8);
	assert_int_equal(ntohl(c->pod_cidr.addr.s_addr), 0x0a000000);
	cw_conf_free(c);
	c = field_ok("\"podCIDR\":\"192.168.7.248/29\"");
	assert_int_equal(c->pod_cidr.len, 29);
	assert_int_equal(ntohl(c->pod_cidr.addr.s_addr), 0xc0a807f8);
	cw_conf_free(c);
	c = field_ok("\"podCIDR\":null");
	assert_false(c->has_pod_cidr);
	cw_conf_free(c);
}

static void test_paths(void **state)
{
	static const char *const keys[] = { "bpfRoot", "stateDir" };
	static const char *const bad[] = { "relative/dir", "", ".", "/a/../b", "/..", "/a/..",
					   "~/x", "./x" };
	char buf[128], needle[64], *huge;
	struct cw_conf *c;

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			snprintf(buf, sizeof(buf), "\"%s\":\"%s\"", keys[k], bad[i]);
			snprintf(needle, sizeof(needle), "config field \"%s\"", keys[k]);
			field_fails(buf, needle);
		}
		snprintf(buf, sizeof(buf), "\"%s\":5", keys[k]);
		field_fails(buf, "must be a string");
	}
	/* ".." only as a whole component is a traversal */
	c = field_ok("\"bpfRoot\":\"/sys/fs/bpf/..x\",\"stateDir\":\"/var/lib/a..b/\"");
	assert_string_equal(c->bpf_root, "/sys/fs/bpf/..x");
	assert_string_equal(c->state_dir, "/var/lib/a..b/");
	cw_conf_free(c);

	/* longer than PATH_MAX - 1: refused, not truncated */
	huge = malloc(PATH_MAX + 64);
	assert_non_null(huge);
	strcpy(huge, "\"stateDir\":\"/");
	memset(huge + strlen(huge), 'a', PATH_MAX);
	strcpy(huge + 13 + PATH_MAX, "\"");
	field_fails(huge, "\"stateDir\" is longer than 4095 bytes");
	free(huge);

	field_fails("\"logFile\":\"cw.log\"", "config field \"logFile\": \"cw.log\" must be an absolute path");
	field_fails("\"logFile\":[]", "\"logFile\" must be a string");
	c = field_ok("\"logFile\":\"/var/log/causeway.log\"");
	assert_string_equal(c->log_file, "/var/log/causeway.log");
	cw_conf_free(c);
}

static void test_log_level(void **state)
{
	static const struct {
		const char *name;
		enum cw_log_level level;
	} ok[] = { { "debug", CW_LOG_DEBUG }, { "info", CW_LOG_INFO }, { "warn", CW_LOG_WARN },
		   { "error", CW_LOG_ERROR } };
	static const char *const bad[] = { "verbose", "WARN", "warning", "", "err" };
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct cw_conf *c;

		snprintf(buf, sizeof(buf), "\"logLevel\":\"%s\"", ok[i].name);
		c = field_ok(buf);
		assert_int_equal(c->log_level, ok[i].level);
		cw_conf_free(c);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "\"logLevel\":\"%s\"", bad[i]);
		field_fails(buf, "is not one of debug, info, warn, error");
	}
	field_fails("\"logLevel\":3", "\"logLevel\" must be a string");
}

static void test_ipam(void **state)
{
	static const char *const bad[] = { "../bin/sh", "/opt/cni/bin/host-local", "a/b", ".", "..", "" };
	char buf[96];
	struct cw_conf *c;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "\"ipam\":{\"type\":\"%s\"}", bad[i]);
		field_fails(buf, "\"ipam.type\"");
	}
	field_fails("\"ipam\":\"host-local\"", "\"ipam\" must be an object");
	field_fails("\"ipam\":[]", "\"ipam\" must be an object");
	field_fails("\"ipam\":{\"type\":1}", "must be a string");

	/* no ipam, or ipam without type: the built-in allocator */
	c = field_ok("\"ipam\":{}");
	assert_false(c->has_ipam);
	cw_conf_free(c);
	c = field_ok("\"ipam\":null");
	assert_false(c->has_ipam);
	cw_conf_free(c);
	c = field_ok("\"ipam\":{\"type\":\"dhcp\",\"x\":1}");
	assert_true(c->has_ipam);
	assert_string_equal(c->ipam_type, "dhcp");
	cw_conf_free(c);
	/* ".." inside a name is not a path */
	c = field_ok("\"ipam\":{\"type\":\"my..ipam\"}");
	assert_true(c->has_ipam);
	cw_conf_free(c);
}

static void test_prev_result(void **state)
{
	struct cw_conf *c = field_ok("\"prevResult\":{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.1.0.5/24\"}]}");
	const cJSON *ips, *addr;

	(void)state;
	assert_non_null(c->prev_result);
	ips = cJSON_GetObjectItemCaseSensitive(c->prev_result, "ips");
	assert_true(cJSON_IsArray(ips));
	addr = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ips, 0), "address");
	assert_true(cJSON_IsString(addr));
	assert_string_equal(addr->valuestring, "10.1.0.5/24");
	/* a copy: it outlives the parse tree and belongs to the conf */
	cw_conf_free(c);

	c = field_ok("\"prevResult\":null");
	assert_null(c->prev_result);
	cw_conf_free(c);
	field_fails("\"prevResult\":[]", "\"prevResult\" must be an object");
	field_fails("\"prevResult\":\"{}\"", "\"prevResult\" must be an object");
}

static void test_valid_attachments(void **state)
{
	struct cw_conf *c = field_ok("\"cni.dev/valid-attachments\":["
				     "{\"containerID\":\"aaa\",\"ifname\":\"eth0\"},"
				     "{\"containerID\":\"bbb\",\"ifname\":\"net1\"}]");

	(void)state;
	assert_true(c->has_valid);
	assert_int_equal(c->n_valid, 2);
	assert_string_equal(c->valid[0].container_id, "aaa");
	assert_string_equal(c->valid[0].ifname, "eth0");
	assert_string_equal(c->valid[1].container_id, "bbb");
	assert_string_equal(c->valid[1].ifname, "net1");
	assert_true(cw_conf_has_attachment(c, "aaa", "eth0"));
	assert_true(cw_conf_has_attachment(c, "bbb", "net1"));
	/* both halves must match the same entry */
	assert_false(cw_conf_has_attachment(c, "aaa", "net1"));
	assert_false(cw_conf_has_attachment(c, "bbb", "eth0"));
	assert_false(cw_conf_has_attachment(c, "ccc", "eth0"));
	assert_false(cw_conf_has_attachment(c, "aa", "eth0"));
	assert_false(cw_conf_has_attachment(c, "aaa", "eth"));
	assert_false(cw_conf_has_attachment(c, "", ""));
	cw_conf_free(c);
}

static void test_legacy_attachments(void **state)
{
	struct cw_conf *c = field_ok("\"cni.dev/attachments\":[{\"containerID\":\"old\",\"ifname\":\"eth0\"}]");

	(void)state;
	assert_true(c->has_valid);
	assert_int_equal(c->n_valid, 1);
	assert_true(cw_conf_has_attachment(c, "old", "eth0"));
	cw_conf_free(c);

	/* the current key wins when a runtime sends both */
	c = field_ok("\"cni.dev/attachments\":[{\"containerID\":\"old\",\"ifname\":\"eth0\"}],"
		     "\"cni.dev/valid-attachments\":[{\"containerID\":\"new\",\"ifname\":\"eth0\"}]");
	assert_int_equal(c->n_valid, 1);
	assert_true(cw_conf_has_attachment(c, "new", "eth0"));
	assert_false(cw_conf_has_attachment(c, "old", "eth0"));
	cw_conf_free(c);
}

static void test_attachments_edge(void **state)
{
	struct cw_conf *c;
	char buf[512], cid[300];

	(void)state;
	/* an empty list is a list: GC everything */
	c = field_ok("\"cni.dev/valid-attachments\":[]");
	assert_true(c->has_valid);
	assert_int_equal(c->n_valid, 0);
	assert_false(cw_conf_has_attachment(c, "aaa", "eth0"));
	cw_conf_free(c);

	/* without a list nothing is "valid" and has_valid says so */
	c = field_ok("");
	assert_false(c->has_valid);
	assert_false(cw_conf_has_attachment(c, "aaa", "eth0"));
	cw_conf_free(c);

	field_fails("\"cni.dev/valid-attachments\":{}", "\"cni.dev/valid-attachments\" must be a list");
	field_fails("\"cni.dev/attachments\":\"aaa\"", "\"cni.dev/attachments\" must be a list");
	field_fails("\"cni.dev/valid-attachments\":[{\"containerID\":\"a\",\"ifname\":\"eth0\"},"
		    "{\"containerID\":\"b\"}]",
		    "\"cni.dev/valid-attachments\"[1] needs string \"containerID\" and \"ifname\"");
	field_fails("\"cni.dev/valid-attachments\":[{\"containerID\":1,\"ifname\":\"eth0\"}]",
		    "[0] needs string");
	field_fails("\"cni.dev/valid-attachments\":[\"a/eth0\"]", "[0] needs string");
	field_fails("\"cni.dev/valid-attachments\":[{\"containerID\":\"a\",\"ifname\":\"sixteen-chars-xx\"}]",
		    "[0] needs string");
	memset(cid, 'c', 256);
	cid[256] = '\0';
	snprintf(buf, sizeof(buf), "\"cni.dev/valid-attachments\":[{\"containerID\":\"%s\",\"ifname\":\"eth0\"}]", cid);
	field_fails(buf, "[0] needs string");
	cid[255] = '\0';
	snprintf(buf, sizeof(buf), "\"cni.dev/valid-attachments\":[{\"containerID\":\"%s\",\"ifname\":\"fifteen-chars-x\"}]", cid);
	c = field_ok(buf);
	assert_true(cw_conf_has_attachment(c, cid, "fifteen-chars-x"));
	cw_conf_free(c);
}

/* cniVersion is checked first: a runtime speaking another version is told
 * that (code 1), not about whichever field it spells differently. */
static void test_first_error_wins(void **state)
{
	(void)state;
	parse_fails("{\"cniVersion\":\"9.9.9\",\"name\":\"bad/name\",\"mtu\":1}", CW_ERR_INCOMPATIBLE_VERSION, "9.9.9");
	parse_fails("{\"cniVersion\":\"1.0.0\",\"name\":\"bad/name\",\"mtu\":1}", CW_ERR_INVALID_CONFIG, "\"name\"");
}

static void test_dump(void **state)
{
	struct cw_conf *c = field_ok("\"podCIDR\":\"10.10.1.0/24\",\"logLevel\":\"error\","
				     "\"cni.dev/valid-attachments\":[{\"containerID\":\"aaa\",\"ifname\":\"eth0\"}]");
	char *s = cw_conf_dump(c);

	(void)state;
	assert_non_null(s);
	assert_non_null(strstr(s, "cniVersion=1.0.0\n"));
	assert_non_null(strstr(s, "\npodCIDR=10.10.1.0/24\n"));
	assert_non_null(strstr(s, "\nlogLevel=error\n"));
	assert_non_null(strstr(s, "\nlogFile=-\n"));
	assert_non_null(strstr(s, "\nasyncLinkDelete=true\n"));
	assert_non_null(strstr(s, "\nvalidAttachments=1\n  aaa eth0\n"));
	free(s);
	cw_conf_free(c);
}

/*
 * cw_conf_dump sizes its buffer as 4096 + 300 per attachment, but three path
 * fields of up to 4095 bytes each fit in a valid config: the header line is
 * truncated and the attachment lines are then written past the buffer.
 */
static void test_dump_long_paths(void **state)
{
	char *json, *s, *p;
	struct cw_conf *c;

	(void)state;
	json = malloc(16384);
	assert_non_null(json);
	p = json + sprintf(json, "\"bpfRoot\":\"/");
	memset(p, 'b', 4000);
	p += 4000;
	p += sprintf(p, "\",\"stateDir\":\"/");
	memset(p, 's', 4000);
	p += 4000;
	sprintf(p, "\",\"cni.dev/valid-attachments\":[{\"containerID\":\"aaa\",\"ifname\":\"eth0\"}]");
	c = field_ok(json);
	s = cw_conf_dump(c);
	assert_non_null(s);
	assert_non_null(strstr(s, "\nvalidAttachments=1\n  aaa eth0\n"));
	assert_non_null(strstr(s, "\nprevResult=no\n"));
	free(s);
	cw_conf_free(c);
	free(json);
}

static void test_async_link_delete(void **state)
{
	struct cw_conf *c;

	(void)state;
	c = field_ok("\"asyncLinkDelete\":false");
	assert_false(c->async_link_delete);
	cw_conf_free(c);
	c = field_ok("\"asyncLinkDelete\":true");
	assert_true(c->async_link_delete);
	cw_conf_free(c);
	c = field_ok("\"asyncLinkDelete\":null");
	assert_true(c->async_link_delete);
	cw_conf_free(c);
	field_fails("\"asyncLinkDelete\":\"false\"", "\"asyncLinkDelete\" must be true or false");
	field_fails("\"asyncLinkDelete\":0", "\"asyncLinkDelete\" must be true or false");
}

/* The version to answer in, read even from a config the parser refuses. */
static void test_peek_version(void **state)
{
	static const char bad_name[] = "{\"cniVersion\":\"0.4.0\",\"name\":\"bad/name\"}";
	static const char old[] = "{\"cniVersion\":\"0.2.0\"}";
	char v[16] = "untouched";

	(void)state;
	assert_ptr_equal(cw_conf_peek_version(bad_name, strlen(bad_name), v, sizeof(v)), v);
	assert_string_equal(v, "0.4.0");
	/* unsupported versions are still reported as given */
	assert_ptr_equal(cw_conf_peek_version(old, strlen(old), v, sizeof(v)), v);
	assert_string_equal(v, "0.2.0");
	assert_null(cw_conf_peek_version("{", 1, v, sizeof(v)));
	assert_null(cw_conf_peek_version("[]", 2, v, sizeof(v)));
	assert_null(cw_conf_peek_version("{\"cniVersion\":1}", 16, v, sizeof(v)));
	assert_null(cw_conf_peek_version("{}", 2, v, sizeof(v)));
	/* too long for the buffer: none, rather than a truncated version */
	assert_null(cw_conf_peek_version("{\"cniVersion\":\"1.0.0.0.0.0.0.0.0\"}", 34, v, 8));
}

static void test_free_null(void **state)
{
	(void)state;
	cw_conf_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_all_fields),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_version_unsupported),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_length_respected),
		cmocka_unit_test(test_name),
		cmocka_unit_test(test_type_field),
		cmocka_unit_test(test_mtu),
		cmocka_unit_test(test_pod_cidr),
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_log_level),
		cmocka_unit_test(test_ipam),
		cmocka_unit_test(test_prev_result),
		cmocka_unit_test(test_valid_attachments),
		cmocka_unit_test(test_legacy_attachments),
		cmocka_unit_test(test_attachments_edge),
		cmocka_unit_test(test_first_error_wins),
		cmocka_unit_test(test_dump),
		cmocka_unit_test(test_dump_long_paths),
		cmocka_unit_test(test_async_link_delete),
		cmocka_unit_test(test_peek_version),
		cmocka_unit_test(test_free_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
