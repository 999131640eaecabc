// SPDX-License-Identifier: Apache-2.0
/*
 * helper/records.c: Cilium kvstore schema v1 records (DESIGN.md "The mesh
 * store").  A receiver must accept what a well-behaved cluster writes and
 * refuse, with a message naming the field, anything a corrupt or hostile
 * cluster could write to claim state that is not its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "records.h"

#define NODE_KEY CW_KEY_NODES "cluster1/node-a"

static struct in_addr ip4(const char *s)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a;
}

/* A node record as a Cilium agent of cluster1 (id 1) writes it. */
static const char good_node[] =
	"{\"Name\":\"node-a\",\"Cluster\":\"cluster1\",\"IPAddresses\":["
	"{\"Type\":\"ExternalIP\",\"IP\":\"203.0.113.9\"},"
	"{\"Type\":\"InternalIP\",\"IP\":\"fd00::a\"},"
	"{\"Type\":\"InternalIP\",\"IP\":\"172.30.1.11\"},"
	"{\"Type\":\"CiliumInternalIP\",\"IP\":\"10.10.1.1\"}],"
	"\"IPv4AllocCIDR\":{\"IP\":\"10.10.1.0\",\"Mask\":\"////AA==\"},"
	"\"IPv6AllocCIDR\":null,\"IPv4HealthIP\":\"\",\"ClusterID\":1,"
	"\"Source\":\"custom-resource\",\"EncryptionKey\":0,\"Labels\":{\"kubernetes.io/os\":\"linux\"},"
	"\"WireguardPubKey\":\"\",\"BootID\":\"6b6f3a5c-1d8e-4a57-a3b3-0f0b0a0c0d0e\"}";

static int node_parse(const char *key, const char *json, struct cw_node_rec *n, char *err,
		      size_t errlen)
{
	err[0] = '\0';
	return cw_node_rec_parse(key, json, strlen(json), "cluster1", 1, n, err, errlen);
}

/* Refused with -EINVAL and a message containing @needle. */
static void node_refused(const char *key, const char *json, const char *needle)
{
	struct cw_node_rec n;
	char err[256];

	assert_int_equal(node_parse(key, json, &n, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("message \"%s\" does not name \"%s\"", err, needle);
}

/* good_node with the first occurrence of @from replaced by @to. */
static char *node_with(const char *from, const char *to)
{
	const char *p = strstr(good_node, from);
	size_t n = strlen(good_node) - strlen(from) + strlen(to) + 1;
	char *s = malloc(n);

	assert_non_null(p);
	assert_non_null(s);
	snprintf(s, n, "%.*s%s%s", (int)(p - good_node), good_node, to, p + strlen(from));
	return s;
}

static void node_refused_with(const char *from, const char *to, const char *needle)
{
	char *s = node_with(from, to);

	node_refused(NODE_KEY, s, needle);
	free(s);
}

static void test_node_parse_cilium(void **state)
{
	struct cw_node_rec n;
	char err[256];

	(void)state;
	assert_int_equal(node_parse(NODE_KEY, good_node, &n, err, sizeof(err)), 0);
	assert_string_equal(n.name, "node-a");
	assert_string_equal(n.cluster, "cluster1");
	assert_int_equal(n.cluster_id, 1);
	/* the first IPv4 InternalIP, not the external, IPv6 or cilium_host one */
	assert_int_equal(n.internal_ip.s_addr, ip4("172.30.1.11").s_addr);
	assert_int_equal(n.pod_cidr.addr.s_addr, ip4("10.10.1.0").s_addr);
	assert_int_equal(n.pod_cidr.len, 24);
	assert_string_equal(n.boot_id, "6b6f3a5c-1d8e-4a57-a3b3-0f0b0a0c0d0e");
}

static void test_node_round_trip(void **state)
{
	static const struct { const char *cidr; int len; const char *mask; } cases[] = {
		{ "10.10.1.0", 24, "////AA==" },
		{ "10.10.0.0", 16, "//8AAA==" },
		{ "10.0.0.0", 8, "/wAAAA==" },
		{ "10.10.1.128", 25, "////gA==" },
		{ "10.10.1.7", 32, "/////w==" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cw_node_rec in = { .cluster_id = 7 }, out;
		cJSON *o, *c;
		char err[256] = "", *s;

		snprintf(in.name, sizeof(in.name), "worker-%zu.example", i);
		snprintf(in.cluster, sizeof(in.cluster), "east-2");
		snprintf(in.boot_id, sizeof(in.boot_id), "boot-%zu", i);
		in.internal_ip = ip4("172.30.1.12");
		in.pod_cidr.addr = ip4(cases[i].cidr);
		in.pod_cidr.len = (uint8_t)cases[i].len;

		s = cw_node_rec_format(&in);
		assert_non_null(s);
		/* Go's net.IPNet marshals Mask as base64 of the 4 mask bytes */
		o = cJSON_Parse(s);
		assert_non_null(o);
		c = cJSON_GetObjectItemCaseSensitive(o, "IPv4AllocCIDR");
		assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "Mask")->valuestring,
				    cases[i].mask);
		assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "IP")->valuestring,
				    cases[i].cidr);
		assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "ClusterID")->valueint, 7);
		cJSON_Delete(o);

		char key[512];

		snprintf(key, sizeof(key), CW_KEY_NODES "east-2/%s", in.name);
		if (cw_node_rec_parse(key, s, strlen(s), "east-2", 7, &out, err, sizeof(err)))
			fail_msg("%s: %s", s, err);
		assert_string_equal(out.name, in.name);
		assert_string_equal(out.cluster, in.cluster);
		assert_int_equal(out.cluster_id, 7);
		assert_int_equal(out.internal_ip.s_addr, in.internal_ip.s_addr);
		assert_int_equal(out.pod_cidr.addr.s_addr, in.pod_cidr.addr.s_addr);
		assert_int_equal(out.pod_cidr.len, in.pod_cidr.len);
		assert_string_equal(out.boot_id, in.boot_id);
		free(s);
	}
}

static void test_node_without_cidr(void **state)
{
	struct cw_node_rec in = { .cluster_id = 1 }, out;
	char err[256] = "", *s;

	(void)state;
	snprintf(in.name, sizeof(in.name), "node-a");
	snprintf(in.cluster, sizeof(in.cluster), "cluster1");
	in.internal_ip = ip4("172.30.1.11");
	s = cw_node_rec_format(&in);
	assert_non_null(s);
	assert_non_null(strstr(s, "\"IPv4AllocCIDR\":null"));
	assert_int_equal(node_parse(NODE_KEY, s, &out, err, sizeof(err)), 0);
	assert_int_equal(out.pod_cidr.len, 0);
	assert_int_equal(out.internal_ip.s_addr, in.internal_ip.s_addr);
	free(s);
}

static void test_node_identity_refused(void **state)
{
	(void)state;
	/* cluster2 publishing, on cluster1's connection, a record of its own */
	node_refused_with("\"Cluster\":\"cluster1\"", "\"Cluster\":\"cluster2\"", "cluster2");
	node_refused(CW_KEY_NODES "cluster2/node-a",
		     "{\"Name\":\"node-a\",\"Cluster\":\"cluster2\",\"ClusterID\":1,"
		     "\"IPAddresses\":[{\"Type\":\"InternalIP\",\"IP\":\"172.30.1.11\"}]}",
		     "Cluster");
	node_refused_with("\"Cluster\":\"cluster1\",", "", "Cluster");
	node_refused_with("\"Cluster\":\"cluster1\"", "\"Cluster\":1", "Cluster");
	node_refused_with("\"Cluster\":\"cluster1\"", "\"Cluster\":\"Cluster1\"", "Cluster");
	node_refused_with("\"Cluster\":\"cluster1\"", "\"Cluster\":\"cluster1 \"", "Cluster");

	/* the key must name the record it holds */
	node_refused(CW_KEY_NODES "cluster1/node-b", good_node, "key");
	node_refused(CW_KEY_NODES "cluster2/node-a", good_node, "key");
	node_refused(CW_KEY_NODES "cluster1/node-a/", good_node, "key");
	node_refused(CW_KEY_NODES "cluster1/node-", good_node, "key");
	node_refused("cilium/state/nodes/v2/cluster1/node-a", good_node, "key");
	node_refused("", good_node, "key");

	/* Name */
	node_refused_with("\"Name\":\"node-a\"", "\"Name\":\"\"", "Name");
	node_refused_with("\"Name\":\"node-a\"", "\"Name\":\"../node-a\"", "Name");
	node_refused_with("\"Name\":\"node-a\"", "\"Name\":\"node-a/x\"", "Name");
	node_refused_with("\"Name\":\"node-a\"", "\"Name\":\"Node-A\"", "Name");
	node_refused_with("\"Name\":\"node-a\"", "\"Name\":null", "Name");
	node_refused_with("\"Name\":\"node-a\",", "", "Name");

	/* ClusterID */
	node_refused_with("\"ClusterID\":1", "\"ClusterID\":2", "ClusterID");
	node_refused_with("\"ClusterID\":1", "\"ClusterID\":0", "ClusterID");
	node_refused_with("\"ClusterID\":1", "\"ClusterID\":1.5", "ClusterID");
	node_refused_with("\"ClusterID\":1", "\"ClusterID\":\"1\"", "ClusterID");
	node_refused_with("\"ClusterID\":1", "\"ClusterID\":257", "ClusterID");
	node_refused_with("\"ClusterID\":1,", "", "ClusterID");
}

static void test_node_addresses_refused(void **state)
{
	(void)state;
	node_refused(NODE_KEY,
		     "{\"Name\":\"node-a\",\"Cluster\":\"cluster1\",\"ClusterID\":1}", "InternalIP");
	node_refused(NODE_KEY,
		     "{\"Name\":\"node-a\",\"Cluster\":\"cluster1\",\"ClusterID\":1,"
		     "\"IPAddresses\":[{\"Type\":\"ExternalIP\",\"IP\":\"203.0.113.9\"},"
		     "{\"Type\":\"InternalIP\",\"IP\":\"fd00::a\"},"
		     "{\"Type\":\"InternalIP\",\"IP\":\"172.30.1.300\"},"
		     "{\"Type\":\"InternalIP\",\"IP\":\" 172.30.1.1\"},"
		     "{\"Type\":\"InternalIP\",\"IP\":172},"
		     "{\"Type\":\"InternalIP\"},\"172.30.1.1\",null,7]}",
		     "InternalIP");
	node_refused(NODE_KEY,
		     "{\"Name\":\"node-a\",\"Cluster\":\"cluster1\",\"ClusterID\":1,"
		     "\"IPAddresses\":[{\"Type\":\"InternalIP\",\"IP\":\"0.0.0.0\"}]}",
		     "InternalIP");
	node_refused(NODE_KEY,
		     "{\"Name\":\"node-a\",\"Cluster\":\"cluster1\",\"ClusterID\":1,"
		     "\"IPAddresses\":\"172.30.1.11\"}",
		     "InternalIP");
}

static void test_node_cidr_refused(void **state)
{
	(void)state;
	/* 255.0.255.0: not contiguous */
	node_refused_with("////AA==", "/wD/AA==", "contiguous");
	/* 255.255.255.1 */
	node_refused_with("////AA==", "////AQ==", "contiguous");
	/* 0.255.255.255 */
	node_refused_with("////AA==", "AP///w==", "contiguous");
	/* 16 bytes: an IPv6 mask in an IPv4 CIDR */
	node_refused_with("////AA==", "/////////////////////w==", "Mask");
	/* 3 bytes, 5 bytes, not base64, unpadded, URL alphabet, empty, not a string */
	node_refused_with("////AA==", "////", "Mask");
	node_refused_with("////AA==", "//////8=", "Mask");
	node_refused_with("////AA==", "255.255.255.0", "Mask");
	node_refused_with("////AA==", "////AA", "Mask");
	node_refused_with("////AA==", "____AA==", "Mask");
	node_refused_with("////AA==", "", "Mask");
	node_refused_with("\"////AA==\"", "24", "Mask");
	/* /0 and /7 would claim a quarter of the Internet for one node */
	node_refused_with("////AA==", "AAAAAA==", "IPv4AllocCIDR");
	node_refused_with("\"IP\":\"10.10.1.0\",\"Mask\":\"////AA==\"",
			  "\"IP\":\"10.0.0.0\",\"Mask\":\"/gAAAA==\"", "IPv4AllocCIDR");
	/* host bits set */
	node_refused_with("\"IP\":\"10.10.1.0\"", "\"IP\":\"10.10.1.1\"", "host bits");
	node_refused_with("\"IP\":\"10.10.1.0\"", "\"IP\":\"10.10.1.128\"", "host bits");
	/* CIDR IP */
	node_refused_with("\"IP\":\"10.10.1.0\"", "\"IP\":\"fd00::\"", "IPv4AllocCIDR");
	node_refused_with("\"IP\":\"10.10.1.0\",", "", "IPv4AllocCIDR");
	node_refused_with(",\"Mask\":\"////AA==\"", "", "IPv4AllocCIDR");
}

static void test_node_garbage_refused(void **state)
{
	static const char *const bad[] = {
		"", " ", "null", "[]", "\"node\"", "42", "{", "{\"Name\":\"node-a\"",
		"{\"Name\":\"node-a\",}", "not json at all", "\xff\xfe{}",
		"[{\"Name\":\"node-a\",\"Cluster\":\"cluster1\"}]",
	};
	struct cw_node_rec n;
	char err[256], *big;
	size_t bign = 1 << 20;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(cw_node_rec_parse(NODE_KEY, bad[i], strlen(bad[i]), "cluster1", 1,
						   &n, err, sizeof(err)),
				 -EINVAL);
		assert_true(err[0] != '\0');
	}

	/* the length is the record's: bytes past it are not read */
	assert_int_equal(cw_node_rec_parse(NODE_KEY, good_node, strlen(good_node) - 1, "cluster1",
					   1, &n, err, sizeof(err)),
			 -EINVAL);

	/* a 1 MiB Name: refused, and the message stays within its buffer */
	big = malloc(bign + 64);
	assert_non_null(big);
	memcpy(big, "{\"Name\":\"", 9);
	memset(big + 9, 'a', bign);
	strcpy(big + 9 + bign, "\",\"Cluster\":\"cluster1\"}");
	memset(err, 'x', sizeof(err));
	assert_int_equal(cw_node_rec_parse(NODE_KEY, big, strlen(big), "cluster1", 1, &n, err, 16),
			 -EINVAL);
	assert_true(memchr(err, '\0', 16) != NULL);
	assert_int_equal(err[16], 'x');

	/* a 1 MiB Cluster, and one 254-character Name: refused too */
	{
		size_t head = (size_t)snprintf(big, bign + 64, "{\"Name\":\"node-a\",\"Cluster\":\"");

		memset(big + head, 'c', bign);
		strcpy(big + head + bign, "\"}");
	}
	assert_int_equal(cw_node_rec_parse(NODE_KEY, big, strlen(big), "cluster1", 1, &n, err,
					   sizeof(err)),
			 -EINVAL);
	memset(big, 'n', 254);
	big[254] = '\0';
	{
		char *json = NULL;

		assert_true(asprintf(&json, "{\"Name\":\"%s\",\"Cluster\":\"cluster1\",\"ClusterID\":1,"
				     "\"IPAddresses\":[{\"Type\":\"InternalIP\",\"IP\":\"172.30.1.11\"}]}",
				     big) > 0);
		node_refused(NODE_KEY, json, "Name");
		free(json);
	}
	free(big);

	/* deep nesting: refused without exhausting the stack */
	{
		size_t depth = 100000;
		char *deep = malloc(2 * depth + 1);

		assert_non_null(deep);
		memset(deep, '[', depth);
		memset(deep + depth, ']', depth);
		deep[2 * depth] = '\0';
		assert_int_equal(cw_node_rec_parse(NODE_KEY, deep, 2 * depth, "cluster1", 1, &n, err,
						   sizeof(err)),
				 -EINVAL);
		free(deep);
	}
}

static void test_node_253_name_and_long_boot_id(void **state)
{
	struct cw_node_rec n;
	char name[254], key[512], err[256] = "", *json = NULL;

	(void)state;
	/* the longest node name Kubernetes allows fits, key and all: 253
	 * characters in DNS labels of at most 63 */
	memset(name, 'n', 253);
	name[63] = name[127] = name[191] = '.';
	name[253] = '\0';
	snprintf(key, sizeof(key), CW_KEY_NODES "cluster1/%s", name);
	assert_true(asprintf(&json, "{\"Name\":\"%s\",\"Cluster\":\"cluster1\",\"ClusterID\":1,"
			     "\"IPAddresses\":[{\"Type\":\"InternalIP\",\"IP\":\"172.30.1.11\"}],"
			     "\"BootID\":\"%0300d\"}", name, 0) > 0);
	if (node_parse(key, json, &n, err, sizeof(err)))
		fail_msg("%s", err);
	assert_string_equal(n.name, name);
	/* an over-long BootID is cut, never overflows */
	assert_int_equal(strlen(n.boot_id), sizeof(n.boot_id) - 1);
	free(json);
}

static void test_node_any_cluster_id(void **state)
{
	struct cw_node_rec n;
	char err[256] = "", *s = node_with("\"ClusterID\":1", "\"ClusterID\":9");

	(void)state;
	/* a connection whose id is not known yet (0) does not check ClusterID */
	assert_int_equal(cw_node_rec_parse(NODE_KEY, s, strlen(s), "cluster1", 0, &n, err,
					   sizeof(err)),
			 0);
	/* but still the cluster name */
	free(s);
	s = node_with("\"Cluster\":\"cluster1\"", "\"Cluster\":\"cluster2\"");
	assert_int_equal(cw_node_rec_parse(NODE_KEY, s, strlen(s), "cluster1", 0, &n, err,
					   sizeof(err)),
			 -EINVAL);
	free(s);
}

/* --- ip records ------------------------------------------------------------- */

#define IP_KEY CW_KEY_IPS "10.10.1.5"

static int ip_parse(const char *key, const char *json, unsigned int cluster_id, struct cw_ip_rec *r,
		    char *err, size_t errlen)
{
	err[0] = '\0';
	return cw_ip_rec_parse(key, json, strlen(json), cluster_id, r, err, errlen);
}

static void ip_refused(const char *key, const char *json, unsigned int cluster_id,
		       const char *needle)
{
	struct cw_ip_rec r;
	char err[256];

	assert_int_equal(ip_parse(key, json, cluster_id, &r, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("%s: message \"%s\" does not name \"%s\"", json, err, needle);
}

/* An ip record of cluster 1 with identity @id (a JSON number as text). */
static char *ip_json(const char *id)
{
	char *s = NULL;

	assert_true(asprintf(&s, "{\"IP\":\"10.10.1.5\",\"Mask\":null,\"HostIP\":\"172.30.1.11\","
			     "\"ID\":%s,\"Key\":0,\"Metadata\":\"cilium-global:default:frontend-1:1\","
			     "\"K8sNamespace\":\"default\",\"K8sPodName\":\"frontend-1\"}", id) > 0);
	return s;
}

static void test_ip_parse_cilium(void **state)
{
	struct cw_ip_rec r;
	char err[256], *s = ip_json("65792"); /* 1 << 16 | 256 */

	(void)state;
	if (ip_parse(IP_KEY, s, 1, &r, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(r.ip.s_addr, ip4("10.10.1.5").s_addr);
	assert_int_equal(r.host_ip.s_addr, ip4("172.30.1.11").s_addr);
	assert_int_equal(r.identity, 65792);
	assert_string_equal(r.k8s_namespace, "default");
	assert_string_equal(r.k8s_pod_name, "frontend-1");
	free(s);
}

static void test_ip_round_trip(void **state)
{
	static const uint32_t ids[] = { 0, 1, 2, 255, 3 << 16 | 256, 3 << 16 | 0xffff, 3 << 16 | 4242 };

	(void)state;
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		struct cw_ip_rec in = { .identity = ids[i] }, out;
		char err[256], *s;

		in.ip = ip4("10.30.2.17");
		in.host_ip = ip4("172.30.3.12");
		snprintf(in.k8s_namespace, sizeof(in.k8s_namespace), "kube-system");
		snprintf(in.k8s_pod_name, sizeof(in.k8s_pod_name), "coredns-\"quoted\"\\x");
		s = cw_ip_rec_format(&in);
		assert_non_null(s);
		if (ip_parse(CW_KEY_IPS "10.30.2.17", s, 3, &out, err, sizeof(err)))
			fail_msg("%s: %s", s, err);
		assert_int_equal(out.ip.s_addr, in.ip.s_addr);
		assert_int_equal(out.host_ip.s_addr, in.host_ip.s_addr);
		assert_int_equal(out.identity, in.identity);
		assert_string_equal(out.k8s_namespace, in.k8s_namespace);
		assert_string_equal(out.k8s_pod_name, in.k8s_pod_name);
		free(s);
	}
}

static void test_ip_refused(void **state)
{
	static const struct { const char *id; const char *why; } bad_ids[] = {
		{ "\"65792\"", "ID" },     /* a string */
		{ "null", "ID" },
		{ "true", "ID" },
		{ "[65792]", "ID" },
		{ "-1", "ID" },
		{ "-65792", "ID" },
		{ "65792.5", "ID" },       /* fractional */
		{ "256.0001", "ID" },
		{ "16777216", "ID" },      /* 1 << 24: more than 24 bits */
		{ "4294967296", "ID" },    /* wraps to 0 in 32 bits */
		{ "4294967552", "ID" },    /* wraps to 256 in 32 bits */
		{ "1e300", "ID" },
		{ "1e999", "ID" },         /* inf */
		{ "-1e999", "ID" },
	};
	char *s;

	(void)state;
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		s = ip_json(bad_ids[i].id);
		ip_refused(IP_KEY, s, 1, bad_ids[i].why);
		free(s);
	}
	s = ip_json("65792");
	ip_refused(IP_KEY, "{\"IP\":\"10.10.1.5\",\"HostIP\":\"172.30.1.11\"}", 1, "ID");

	/* the key's IP must be the value's */
	ip_refused(CW_KEY_IPS "10.10.1.6", s, 1, "key");
	ip_refused(CW_KEY_IPS "10.10.1.50", s, 1, "key");
	ip_refused(CW_KEY_IPS "10.10.1.", s, 1, "key");
	ip_refused(CW_KEY_IPS "10.10.1.5/32", s, 1, "key");
	ip_refused("cilium/state/ip/v1/other/10.10.1.5", s, 1, "key");
	ip_refused("10.10.1.5", s, 1, "key");
	ip_refused("", s, 1, "key");
	free(s);

	/* HostIP: the node to tunnel to, so it must be there and IPv4 */
	ip_refused(IP_KEY, "{\"IP\":\"10.10.1.5\",\"ID\":65792}", 1, "HostIP");
	ip_refused(IP_KEY, "{\"IP\":\"10.10.1.5\",\"HostIP\":\"\",\"ID\":65792}", 1, "HostIP");
	ip_refused(IP_KEY, "{\"IP\":\"10.10.1.5\",\"HostIP\":null,\"ID\":65792}", 1, "HostIP");
	ip_refused(IP_KEY, "{\"IP\":\"10.10.1.5\",\"HostIP\":\"fd00::1\",\"ID\":65792}", 1, "HostIP");
	ip_refused(IP_KEY, "{\"IP\":\"10.10.1.5\",\"HostIP\":\"node-a\",\"ID\":65792}", 1, "HostIP");

	/* IP */
	ip_refused(IP_KEY, "{\"HostIP\":\"172.30.1.11\",\"ID\":65792}", 1, "IP");
	ip_refused(CW_KEY_IPS "fd00::5", "{\"IP\":\"fd00::5\",\"HostIP\":\"172.30.1.11\",\"ID\":65792}",
		   1, "IP");
	ip_refused(CW_KEY_IPS "10.10.1.05",
		   "{\"IP\":\"10.10.1.05\",\"HostIP\":\"172.30.1.11\",\"ID\":65792}", 1, "IP");

	/* not an object */
	ip_refused(IP_KEY, "", 1, "JSON");
	ip_refused(IP_KEY, "[]", 1, "JSON");
	ip_refused(IP_KEY, "\"10.10.1.5\"", 1, "JSON");
	ip_refused(IP_KEY, "{\"IP\":\"10.10.1.5\"", 1, "JSON");
}

static void test_ip_identity_range(void **state)
{
	struct cw_ip_rec r;
	char err[256], *s, id[32];

	(void)state;
	/* reserved identities (host 1, world 2, …, < 256) are every cluster's */
	for (unsigned int v = 0; v < 256; v += 51) {
		snprintf(id, sizeof(id), "%u", v);
		s = ip_json(id);
		if (ip_parse(IP_KEY, s, 5, &r, err, sizeof(err)))
			fail_msg("reserved identity %u refused: %s", v, err);
		assert_int_equal(r.identity, v);
		free(s);
	}

	/* cluster 5's own allocated identities: 5 << 16 | 256 .. 5 << 16 | 65535 */
	static const uint32_t own[] = { 5 << 16 | 256, 5 << 16 | 257, 5 << 16 | 0xffff };

	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
		snprintf(id, sizeof(id), "%u", own[i]);
		s = ip_json(id);
		if (ip_parse(IP_KEY, s, 5, &r, err, sizeof(err)))
			fail_msg("own identity %s refused: %s", id, err);
		assert_int_equal(r.identity, own[i]);
		free(s);
	}

	/*
	 * Anything else from cluster 5 claims another cluster's identity, or a
	 * reserved one wearing a cluster id (5 << 16 | 2 is not "world").
	 */
	static const uint32_t foreign[] = {
		256, 0xffff,                     /* cluster 0's range */
		4 << 16 | 256, 6 << 16 | 256, 255u << 16 | 0xffff,
		5 << 16 | 0, 5 << 16 | 2, 5 << 16 | 255,
	};

	for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
		snprintf(id, sizeof(id), "%u", foreign[i]);
		s = ip_json(id);
		ip_refused(IP_KEY, s, 5, id);
		free(s);
	}
}

static void test_identity_in_cluster(void **state)
{
	(void)state;
	assert_true(cw_identity_in_cluster(1 << 16 | 256, 1));
	assert_true(cw_identity_in_cluster(1 << 16 | 256, 0));
	assert_true(cw_identity_in_cluster(255u << 16 | 0xffff, 255));
	assert_false(cw_identity_in_cluster(1 << 16 | 255, 1));
	assert_false(cw_identity_in_cluster(2, 0));
	assert_false(cw_identity_in_cluster(2 << 16 | 256, 1));
	assert_false(cw_identity_in_cluster(1u << 24 | 1 << 16 | 256, 1));
	assert_false(cw_identity_in_cluster(UINT32_MAX, 0));
}

/* --- identity keys and labels --------------------------------------------- */

static void test_identity_key_parse(void **state)
{
	static const char *const bad[] = {
		CW_KEY_ID "",
		CW_KEY_ID "12x",
		CW_KEY_ID "12 ",
		CW_KEY_ID " 12",
		CW_KEY_ID "+12",
		CW_KEY_ID "-12",
		CW_KEY_ID "0x10",
		CW_KEY_ID "12/",
		CW_KEY_ID "12/k8s:app=x",
		CW_KEY_ID "16777216",                /* 1 << 24 */
		CW_KEY_ID "4294967296",              /* 1 << 32 */
		CW_KEY_ID "18446744073709551616",    /* 1 << 64: strtoul overflows */
		CW_KEY_ID "99999999999999999999999999",
		CW_KEY_VALUE "65792",
		"cilium/state/identities/v2/id/65792",
		"cilium/state/identities/v1/id65792",
		"65792",
		"",
	};
	uint32_t id;

	(void)state;
	assert_int_equal(cw_identity_key_parse(CW_KEY_ID "65792", &id), 0);
	assert_int_equal(id, 65792);
	assert_int_equal(cw_identity_key_parse(CW_KEY_ID "0", &id), 0);
	assert_int_equal(id, 0);
	assert_int_equal(cw_identity_key_parse(CW_KEY_ID "16777215", &id), 0);
	assert_int_equal(id, 16777215);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		id = 12345;
		if (cw_identity_key_parse(bad[i], &id) != -EINVAL)
			fail_msg("identity key \"%s\" accepted as %u", bad[i], id);
		assert_int_equal(id, 12345); /* untouched on failure */
	}
}

static void test_labels_format(void **state)
{
	static const char *const pairs[] = {
		"io.kubernetes.pod.namespace", "default",
		"app", "x-wing",
		"io.cilium.k8s.policy.cluster", "cluster1",
		"class", "fighter",
	};
	char out[CW_LABELS_MAX];
	const char *want = "k8s:app=x-wing;k8s:class=fighter;k8s:io.cilium.k8s.policy.cluster=cluster1;"
			   "k8s:io.kubernetes.pod.namespace=default;";

	(void)state;
	assert_int_equal(cw_labels_format(pairs, 4, out, sizeof(out)), 0);
	assert_string_equal(out, want);

	/* the order of the input does not matter */
	static const char *const rev[] = {
		"class", "fighter",
		"io.cilium.k8s.policy.cluster", "cluster1",
		"app", "x-wing",
		"io.kubernetes.pod.namespace", "default",
	};

	assert_int_equal(cw_labels_format(rev, 4, out, sizeof(out)), 0);
	assert_string_equal(out, want);

	/* sorted by key, not by "key=value": "a.b" < "a=" would flip it */
	static const char *const prefix[] = { "ab", "1", "a", "2" };

	assert_int_equal(cw_labels_format(prefix, 2, out, sizeof(out)), 0);
	assert_string_equal(out, "k8s:a=2;k8s:ab=1;");

	/* empty values and an empty set */
	static const char *const empty[] = { "tier", "" };

	assert_int_equal(cw_labels_format(empty, 1, out, sizeof(out)), 0);
	assert_string_equal(out, "k8s:tier=;");
	assert_int_equal(cw_labels_format(NULL, 0, out, sizeof(out)), 0);
	assert_string_equal(out, "");

	/* exactly fitting, and one byte short */
	size_t exact = strlen(want) + 1;

	assert_int_equal(cw_labels_format(pairs, 4, out, exact), 0);
	assert_string_equal(out, want);
	memset(out, 'z', sizeof(out));
	assert_int_equal(cw_labels_format(pairs, 4, out, exact - 1), -ENAMETOOLONG);
	assert_int_equal(out[exact - 1], 'z'); /* nothing written past @len */
	memset(out, 'z', sizeof(out));
	assert_int_equal(cw_labels_format(pairs, 4, out, 1), -ENAMETOOLONG);
	assert_int_equal(out[0], '\0');
	assert_int_equal(out[1], 'z');
}

/* --- names ------------------------------------------------------------------ */

static void test_cluster_name_valid(void **state)
{
	char n33[34], n32[33];

	(void)state;
	memset(n32, 'a', 32);
	n32[32] = '\0';
	memset(n33, 'a', 33);
	n33[33] = '\0';
	assert_true(cw_cluster_name_valid(n32));
	assert_false(cw_cluster_name_valid(n33));
	assert_true(cw_cluster_name_valid("cluster1"));
	assert_true(cw_cluster_name_valid("a"));
	assert_true(cw_cluster_name_valid("1"));
	assert_true(cw_cluster_name_valid("eu-west-1"));
	assert_true(cw_cluster_name_valid("a--b"));
	assert_false(cw_cluster_name_valid(""));
	assert_false(cw_cluster_name_valid("-"));
	assert_false(cw_cluster_name_valid("-cluster"));
	assert_false(cw_cluster_name_valid("cluster-"));
	assert_false(cw_cluster_name_valid("Cluster1"));
	assert_false(cw_cluster_name_valid("clusteR"));
	assert_false(cw_cluster_name_valid("cluster.one"));
	assert_false(cw_cluster_name_valid("cluster_one"));
	assert_false(cw_cluster_name_valid("cluster/one"));
	assert_false(cw_cluster_name_valid("cluster one"));
	assert_false(cw_cluster_name_valid("cluster\n"));
	assert_false(cw_cluster_name_valid(".."));
	assert_false(cw_cluster_name_valid("cl\xc3\xa9"));
}

static void test_node_name_valid(void **state)
{
	char n253[254], n254[255];

	(void)state;
	/* 253 characters in labels of at most 63 (a DNS subdomain) */
	memset(n253, 'a', 253);
	n253[63] = n253[127] = n253[191] = '.';
	n253[253] = '\0';
	memset(n254, 'a', 254);
	n254[63] = n254[127] = n254[191] = '.';
	n254[254] = '\0';
	assert_true(cw_node_name_valid(n253));
	assert_false(cw_node_name_valid(n254));
	assert_true(cw_node_name_valid("node-a"));
	assert_true(cw_node_name_valid("ip-10-0-0-1.eu-west-1.compute.internal"));
	assert_true(cw_node_name_valid("a"));
	assert_true(cw_node_name_valid("0"));
	assert_false(cw_node_name_valid(""));
	assert_false(cw_node_name_valid("-node"));
	assert_false(cw_node_name_valid("node-"));
	assert_false(cw_node_name_valid(".node"));
	assert_false(cw_node_name_valid("node."));
	assert_false(cw_node_name_valid("Node-A"));
	assert_false(cw_node_name_valid("node_a"));
	assert_false(cw_node_name_valid("node/a"));
	assert_false(cw_node_name_valid(".."));
	assert_false(cw_node_name_valid("node a"));
	assert_false(cw_node_name_valid("n\xc3\xb6""de"));
}

/*
 * Regression (found by this test, fixed in 389b2f8): cw_node_name_valid
 * checked only the first and last characters, so empty labels and labels
 * starting or ending with '-' passed for a DNS subdomain.
 */
static void test_node_name_dns_labels(void **state)
{
	(void)state;
	assert_true(cw_node_name_valid("a.b-c.d"));
	assert_false(cw_node_name_valid("a..b"));
	assert_false(cw_node_name_valid("a.-b"));
	assert_false(cw_node_name_valid("a-.b"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_node_parse_cilium),
		cmocka_unit_test(test_node_round_trip),
		cmocka_unit_test(test_node_without_cidr),
		cmocka_unit_test(test_node_identity_refused),
		cmocka_unit_test(test_node_addresses_refused),
		cmocka_unit_test(test_node_cidr_refused),
		cmocka_unit_test(test_node_garbage_refused),
		cmocka_unit_test(test_node_253_name_and_long_boot_id),
		cmocka_unit_test(test_node_any_cluster_id),
		cmocka_unit_test(test_ip_parse_cilium),
		cmocka_unit_test(test_ip_round_trip),
		cmocka_unit_test(test_ip_refused),
		cmocka_unit_test(test_ip_identity_range),
		cmocka_unit_test(test_identity_in_cluster),
		cmocka_unit_test(test_identity_key_parse),
		cmocka_unit_test(test_labels_format),
		cmocka_unit_test(test_cluster_name_valid),
		cmocka_unit_test(test_node_name_valid),
		cmocka_unit_test(test_node_name_dns_labels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
