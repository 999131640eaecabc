// SPDX-License-Identifier: Apache-2.0
/* lib/endpoint.c: the endpoint state file (include/causeway/endpoint.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include <causeway/endpoint.h>
#include <causeway/log.h>

static void sample(struct cw_endpoint_state *ep, const char *cid, const char *ifname)
{
	static const uint8_t pod_mac[6] = { 0x0a, 0x58, 0x0a, 0x0a, 0x01, 0x05 };
	static const uint8_t host_mac[6] = { 0x02, 0xfe, 0x01, 0x02, 0x03, 0x04 };

	memset(ep, 0, sizeof(*ep));
	snprintf(ep->container_id, sizeof(ep->container_id), "%s", cid);
	snprintf(ep->ifname, sizeof(ep->ifname), "%s", ifname);
	strcpy(ep->netns, "/var/run/netns/cni-5a1b");
	strcpy(ep->network, "pods");
	strcpy(ep->host_ifname, "cw0a1b2c3d4e5f");
	ep->host_ifindex = 42;
	inet_pton(AF_INET, "10.10.1.5", &ep->ip);
	ep->prefixlen = 24;
	inet_pton(AF_INET, "10.10.1.1", &ep->gateway);
	memcpy(ep->pod_mac, pod_mac, 6);
	memcpy(ep->host_mac, host_mac, 6);
	ep->mtu = 1450;
	ep->ipam_delegated = true;
	strcpy(ep->pod_namespace, "default");
	strcpy(ep->pod_name, "web-0");
	strcpy(ep->pod_uid, "0c2f3a3e-1111-2222-3333-444455556666");
}

static void assert_same(const struct cw_endpoint_state *a, const struct cw_endpoint_state *b)
{
	assert_string_equal(a->container_id, b->container_id);
	assert_string_equal(a->ifname, b->ifname);
	assert_string_equal(a->netns, b->netns);
	assert_string_equal(a->network, b->network);
	assert_string_equal(a->host_ifname, b->host_ifname);
	assert_int_equal(a->host_ifindex, b->host_ifindex);
	assert_int_equal(a->ip.s_addr, b->ip.s_addr);
	assert_int_equal(a->prefixlen, b->prefixlen);
	assert_int_equal(a->gateway.s_addr, b->gateway.s_addr);
	assert_memory_equal(a->pod_mac, b->pod_mac, 6);
	assert_memory_equal(a->host_mac, b->host_mac, 6);
	assert_int_equal(a->mtu, b->mtu);
	assert_int_equal(a->ipam_delegated, b->ipam_delegated);
	assert_string_equal(a->pod_namespace, b->pod_namespace);
	assert_string_equal(a->pod_name, b->pod_name);
	assert_string_equal(a->pod_uid, b->pod_uid);
}

static void test_round_trip(void **state)
{
	struct cw_endpoint_state in, out;
	char err[256] = "", *s;

	(void)state;
	sample(&in, "abc123", "eth0");
	s = cw_endpoint_format(&in);
	assert_non_null(s);
	assert_int_equal(cw_endpoint_parse(s, strlen(s), &out, err, sizeof(err)), 0);
	assert_same(&in, &out);
	free(s);

	/* and with the optional fields empty and the flag off */
	in.netns[0] = in.pod_namespace[0] = in.pod_name[0] = in.pod_uid[0] = '\0';
	in.ipam_delegated = false;
	in.prefixlen = 32;
	s = cw_endpoint_format(&in);
	assert_non_null(s);
	assert_int_equal(cw_endpoint_parse(s, strlen(s), &out, err, sizeof(err)), 0);
	assert_same(&in, &out);
	free(s);
}

/* The field names are a contract with the helper, which watches these files. */
static void test_format_fields(void **state)
{
	struct cw_endpoint_state in;
	char *s;
	cJSON *o;

	(void)state;
	sample(&in, "abc123", "eth0");
	s = cw_endpoint_format(&in);
	o = cJSON_Parse(s);
	assert_true(cJSON_IsObject(o));
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "containerID")->valuestring, "abc123");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "ip")->valuestring, "10.10.1.5/24");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "gateway")->valuestring, "10.10.1.1");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "podMAC")->valuestring, "0a:58:0a:0a:01:05");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "hostMAC")->valuestring, "02:fe:01:02:03:04");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "hostIfname")->valuestring, "cw0a1b2c3d4e5f");
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "hostIfindex")->valueint, 42);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "mtu")->valueint, 1450);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ipamDelegated")));
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "podUID")->valuestring, in.pod_uid);
	cJSON_Delete(o);
	free(s);
}

/* Re-encodes sample() with @key replaced by @json_value (NULL: removed). */
static char *mutate(const char *key, const char *json_value)
{
	struct cw_endpoint_state ep;
	char *s, *out;
	cJSON *o;

	sample(&ep, "abc123", "eth0");
	s = cw_endpoint_format(&ep);
	o = cJSON_Parse(s);
	free(s);
	assert_non_null(o);
	cJSON_DeleteItemFromObjectCaseSensitive(o, key);
	if (json_value) {
		cJSON *v = cJSON_Parse(json_value);

		assert_non_null(v);
		cJSON_AddItemToObject(o, key, v);
	}
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

static void parse_fails(const char *key, const char *json_value, const char *needle)
{
	struct cw_endpoint_state out;
	char err[256] = "";
	char *s = mutate(key, json_value);

	assert_int_equal(cw_endpoint_parse(s, strlen(s), &out, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("%s=%s: error \"%s\" does not name %s", key, json_value ? json_value : "(absent)",
			 err, needle);
	free(s);
}

static void test_parse_missing(void **state)
{
	static const char *const required[] = { "containerID", "ifname", "hostIfname", "ip", "gateway",
						"podMAC", "hostMAC", "hostIfindex" };
	char needle[64];

	(void)state;
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		snprintf(needle, sizeof(needle), "\"%s\"", required[i]);
		parse_fails(required[i], NULL, needle);
	}
}

static void test_parse_bad_values(void **state)
{
	char long_str[300];

	(void)state;
	parse_fails("ip", "\"10.10.1.5\"", "\"ip\"");
	parse_fails("ip", "\"10.10.1.500/24\"", "\"ip\"");
	parse_fails("ip", "24", "\"ip\"");
	parse_fails("gateway", "\"10.10.1.1/24\"", "\"gateway\"");
	parse_fails("gateway", "\"gw\"", "\"gateway\"");
	parse_fails("podMAC", "\"0a:58:0a:0a:01\"", "\"podMAC\"");
	parse_fails("hostMAC", "\"zz:58:0a:0a:01:05\"", "\"hostMAC\"");
	parse_fails("hostIfindex", "0", "\"hostIfindex\"");
	parse_fails("hostIfindex", "-3", "\"hostIfindex\"");
	parse_fails("hostIfindex", "\"42\"", "\"hostIfindex\"");
	parse_fails("hostIfindex", "3e10", "\"hostIfindex\"");
	parse_fails("ifname", "\"sixteen-chars-xx\"", "\"ifname\"");
	parse_fails("netns", "7", "\"netns\"");
	parse_fails("podUID", "[]", "\"podUID\"");
	/* 256 bytes: one more than the field holds */
	long_str[0] = '"';
	memset(long_str + 1, 'a', 256);
	strcpy(long_str + 257, "\"");
	parse_fails("containerID", long_str, "\"containerID\"");
}

static void test_parse_defaults(void **state)
{
	struct cw_endpoint_state out;
	char err[256] = "", *s = mutate("mtu", NULL);

	(void)state;
	/* no mtu: the plugin's default; optional strings empty */
	assert_int_equal(cw_endpoint_parse(s, strlen(s), &out, err, sizeof(err)), 0);
	assert_int_equal(out.mtu, 1500);
	free(s);
	s = mutate("ipamDelegated", NULL);
	assert_int_equal(cw_endpoint_parse(s, strlen(s), &out, err, sizeof(err)), 0);
	assert_false(out.ipam_delegated);
	free(s);
	s = mutate("podName", NULL);
	assert_int_equal(cw_endpoint_parse(s, strlen(s), &out, err, sizeof(err)), 0);
	assert_string_equal(out.pod_name, "");
	free(s);
}

static void test_parse_not_object(void **state)
{
	struct cw_endpoint_state out;
	char err[256] = "";

	(void)state;
	assert_int_equal(cw_endpoint_parse("[]", 2, &out, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "not a JSON object");
	assert_int_equal(cw_endpoint_parse("{\"containerID\":", 15, &out, err, sizeof(err)), -EINVAL);
	assert_int_equal(cw_endpoint_parse("", 0, &out, err, sizeof(err)), -EINVAL);
}

/* --- on disk --- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	char *dir = strdup("/tmp/cw-test-endpoint-XXXXXX");

	if (!dir || !mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int teardown(void **state)
{
	char *dir = *state;
	struct stat st;
	int rc = nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);

	if (rc == 0 && stat(dir, &st) == 0)
		rc = -1;
	free(dir);
	return rc;
}

static void test_write_read_remove(void **state)
{
	const char *dir = *state;
	struct cw_endpoint_state in, out;
	char path[PATH_MAX], want[PATH_MAX];
	struct stat st;

	sample(&in, "abc123", "eth0");
	assert_int_equal(cw_endpoint_read(dir, "abc123", "eth0", &out), -ENOENT);
	assert_int_equal(cw_endpoint_write(dir, &in), 0);

	/* doc/cni-contract.md: <stateDir>/endpoints/<CONTAINERID>-<IFNAME>.json */
	snprintf(want, sizeof(want), "%s/endpoints/abc123-eth0.json", dir);
	assert_int_equal(cw_endpoint_path(dir, "abc123", "eth0", path, sizeof(path)), 0);
	assert_string_equal(path, want);
	assert_int_equal(stat(want, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 077, 0);

	assert_int_equal(cw_endpoint_read(dir, "abc123", "eth0", &out), 0);
	assert_same(&in, &out);
	assert_int_equal(cw_endpoint_read(dir, "abc123", "eth1", &out), -ENOENT);

	/* rewrite replaces */
	in.mtu = 9000;
	assert_int_equal(cw_endpoint_write(dir, &in), 0);
	assert_int_equal(cw_endpoint_read(dir, "abc123", "eth0", &out), 0);
	assert_int_equal(out.mtu, 9000);

	assert_int_equal(cw_endpoint_remove(dir, "abc123", "eth0"), 0);
	assert_int_equal(stat(want, &st), -1);
	assert_int_equal(cw_endpoint_read(dir, "abc123", "eth0", &out), -ENOENT);
	/* removing what is not there is success (DEL is idempotent) */
	assert_int_equal(cw_endpoint_remove(dir, "abc123", "eth0"), 0);
}

static void test_path_too_long(void **state)
{
	char *dir = malloc(PATH_MAX);
	char path[PATH_MAX];
	struct cw_endpoint_state ep;

	(void)state;
	assert_non_null(dir);
	memset(dir, 'd', PATH_MAX - 1);
	dir[0] = '/';
	dir[PATH_MAX - 20] = '\0';
	assert_int_equal(cw_endpoint_path(dir, "abc123", "eth0", path, sizeof(path)), -ENAMETOOLONG);
	sample(&ep, "abc123", "eth0");
	assert_int_equal(cw_endpoint_write(dir, &ep), -ENAMETOOLONG);
	assert_int_equal(cw_endpoint_remove(dir, "abc123", "eth0"), -ENAMETOOLONG);
	free(dir);
}

static void write_raw(const char *dir, const char *name, const char *data)
{
	char path[PATH_MAX];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/endpoints/%s", dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(data, fp);
	assert_int_equal(fclose(fp), 0);
}

struct seen {
	int calls;
	bool a, b, c;
	int stop_after;
};

static int collect(const struct cw_endpoint_state *ep, void *arg)
{
	struct seen *s = arg;

	s->calls++;
	if (strcmp(ep->container_id, "aaa") == 0 && strcmp(ep->ifname, "eth0") == 0)
		s->a = true;
	else if (strcmp(ep->container_id, "bbb") == 0 && strcmp(ep->ifname, "eth0") == 0)
		s->b = true;
	else if (strcmp(ep->container_id, "aaa") == 0 && strcmp(ep->ifname, "net1") == 0)
		s->c = true;
	else
		fail_msg("foreach handed out %s/%s", ep->container_id, ep->ifname);
	return s->stop_after && s->calls == s->stop_after ? 7 : 0;
}

static void test_foreach(void **state)
{
	const char *dir = *state;
	struct cw_endpoint_state ep;
	struct seen s = { 0 };

	/* no endpoints directory yet: nothing, no error */
	assert_int_equal(cw_endpoint_foreach(dir, collect, &s), 0);
	assert_int_equal(s.calls, 0);

	sample(&ep, "aaa", "eth0");
	assert_int_equal(cw_endpoint_write(dir, &ep), 0);
	sample(&ep, "bbb", "eth0");
	assert_int_equal(cw_endpoint_write(dir, &ep), 0);
	sample(&ep, "aaa", "net1");
	assert_int_equal(cw_endpoint_write(dir, &ep), 0);
	/* a corrupt state file, an empty one, a stray temp file and a non-JSON name */
	write_raw(dir, "ccc-eth0.json", "{\"containerID\":\"ccc\"");
	write_raw(dir, "ddd-eth0.json", "");
	write_raw(dir, "eee-eth0.json.tmp.1234", "{}");
	write_raw(dir, "README", "not state");
	write_raw(dir, ".json", "{}");

	assert_int_equal(cw_endpoint_foreach(dir, collect, &s), 0);
	assert_int_equal(s.calls, 3);
	assert_true(s.a && s.b && s.c);

	/* a non-zero return stops the walk and is passed back */
	memset(&s, 0, sizeof(s));
	s.stop_after = 2;
	assert_int_equal(cw_endpoint_foreach(dir, collect, &s), 7);
	assert_int_equal(s.calls, 2);
}

static void test_read_corrupt(void **state)
{
	const char *dir = *state;
	struct cw_endpoint_state ep;

	sample(&ep, "aaa", "eth0");
	assert_int_equal(cw_endpoint_write(dir, &ep), 0);
	write_raw(dir, "aaa-eth0.json", "{\"containerID\":\"aaa\",\"ifname\":\"eth0\"}");
	assert_int_equal(cw_endpoint_read(dir, "aaa", "eth0", &ep), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_format_fields),
		cmocka_unit_test(test_parse_missing),
		cmocka_unit_test(test_parse_bad_values),
		cmocka_unit_test(test_parse_defaults),
		cmocka_unit_test(test_parse_not_object),
		cmocka_unit_test_setup_teardown(test_write_read_remove, setup, teardown),
		cmocka_unit_test(test_path_too_long),
		cmocka_unit_test_setup_teardown(test_foreach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_corrupt, setup, teardown),
	};

	/* corrupt files are expected here: their warnings are noise */
	cw_log_set_level(CW_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
