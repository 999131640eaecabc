// SPDX-License-Identifier: Apache-2.0
/* cni/args.c: the CNI_* environment (SPEC.md "Parameters"). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "args.h"

static void test_container_id(void **state)
{
	static const char *const ok[] = { "a", "abc123", "A-b_c.1", "0",
					  "5f2a0c3e9d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f" };
	static const char *const bad[] = { "", "a/b", "../etc", "a b", "a:b", "a;b", "a\nb", "caf\xc3\xa9",
					   "a\\b", "a=b", "a\tb", "...", "-", "_a", ".a" };
	char id[202];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_true(cw_valid_container_id(ok[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cw_valid_container_id(bad[i]))
			fail_msg("container id \"%s\" accepted", bad[i]);
	}
	assert_false(cw_valid_container_id(NULL));

	/* 200 bytes at most */
	memset(id, 'x', 200);
	id[200] = '\0';
	assert_true(cw_valid_container_id(id));
	id[200] = 'x';
	id[201] = '\0';
	assert_false(cw_valid_container_id(id));
}

static void test_ifname(void **state)
{
	static const char *const ok[] = { "eth0", "net1", "a", "fifteen-chars-x", "...", "e.0", "a-b_c@d" };
	static const char *const bad[] = { "", ".", "..", "sixteen-chars-xx", "a/b", "/", "eth0:1",
					   "a b", "a\tb", "a\nb", " eth0", "eth0\n" };

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (!cw_valid_ifname(ok[i]))
			fail_msg("ifname \"%s\" refused", ok[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cw_valid_ifname(bad[i]))
			fail_msg("ifname \"%s\" accepted", bad[i]);
	}
	assert_false(cw_valid_ifname(NULL));
}

/* The kernel's dev_valid_name() refuses every isspace() byte, not only these
 * three: "eth\r0" passes here and fails later in netlink with a vaguer error. */
static void test_ifname_all_whitespace(void **state)
{
	(void)state;
	assert_false(cw_valid_ifname("eth\r0"));
	assert_false(cw_valid_ifname("eth\v0"));
	assert_false(cw_valid_ifname("eth\f0"));
}

static void parse(struct cw_args *a, const char *s)
{
	memset(a, 0, sizeof(*a));
	cw_args_parse_cni_args(a, s);
}

static void test_cni_args_kubelet(void **state)
{
	struct cw_args a;

	(void)state;
	/* what kubelet passes, in its order */
	parse(&a, "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c9869d-abcde;"
		  "K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=6f1b2c3d-aaaa-bbbb-cccc-0123456789ab");
	assert_string_equal(a.pod_namespace, "kube-system");
	assert_string_equal(a.pod_name, "coredns-5d78c9869d-abcde");
	assert_string_equal(a.pod_uid, "6f1b2c3d-aaaa-bbbb-cccc-0123456789ab");

	/* any order, single key */
	parse(&a, "K8S_POD_UID=u1");
	assert_string_equal(a.pod_uid, "u1");
	assert_string_equal(a.pod_name, "");
	assert_string_equal(a.pod_namespace, "");
}

static void test_cni_args_edges(void **state)
{
	struct cw_args a;

	(void)state;
	parse(&a, NULL);
	assert_string_equal(a.pod_name, "");
	parse(&a, "");
	assert_string_equal(a.pod_name, "");
	parse(&a, ";;;");
	assert_string_equal(a.pod_name, "");

	/* a pair without '=' is ignored, the rest still parsed */
	parse(&a, "K8S_POD_NAME;K8S_POD_NAMESPACE=ns");
	assert_string_equal(a.pod_name, "");
	assert_string_equal(a.pod_namespace, "ns");

	/* empty value */
	parse(&a, "K8S_POD_NAME=;K8S_POD_NAMESPACE=ns");
	assert_string_equal(a.pod_name, "");
	assert_string_equal(a.pod_namespace, "ns");

	/* trailing ';' ends the list, the last value keeps no ';' */
	parse(&a, "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;");
	assert_string_equal(a.pod_name, "web");
	assert_string_equal(a.pod_namespace, "ns");

	/* the value runs to the ';', '=' inside it is kept */
	parse(&a, "K8S_POD_NAME=a=b;K8S_POD_UID==");
	assert_string_equal(a.pod_name, "a=b");
	assert_string_equal(a.pod_uid, "=");

	/* keys match exactly: no prefix match, no case folding */
	parse(&a, "K8S_POD_NAMEX=x;K8S_POD_NAM=y;k8s_pod_name=z;K8S_POD_UIDS=u; K8S_POD_NAME=w");
	assert_string_equal(a.pod_name, "");
	assert_string_equal(a.pod_uid, "");
	parse(&a, "K8S_POD_NAMESPACE=only-ns");
	assert_string_equal(a.pod_name, "");
	assert_string_equal(a.pod_namespace, "only-ns");

	/* repeated key: the last one wins */
	parse(&a, "K8S_POD_NAME=first;K8S_POD_NAME=second");
	assert_string_equal(a.pod_name, "second");
}

static void test_cni_args_truncation(void **state)
{
	char s[1024], *p;
	struct cw_args a;

	(void)state;
	p = s + sprintf(s, "K8S_POD_NAME=");
	memset(p, 'n', 400);
	p += 400;
	p += sprintf(p, ";K8S_POD_UID=");
	memset(p, 'u', 100);
	p += 100;
	strcpy(p, ";K8S_POD_NAMESPACE=ns");

	memset(&a, 0x55, sizeof(a));
	cw_args_parse_cni_args(&a, s);
	assert_int_equal(strlen(a.pod_name), sizeof(a.pod_name) - 1);
	assert_int_equal(strspn(a.pod_name, "n"), sizeof(a.pod_name) - 1);
	assert_int_equal(strlen(a.pod_uid), sizeof(a.pod_uid) - 1);
	assert_int_equal(strspn(a.pod_uid, "u"), sizeof(a.pod_uid) - 1);
	/* the truncated value does not swallow the next pair */
	assert_string_equal(a.pod_namespace, "ns");
}

static const char *const cni_vars[] = { "CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME",
					"CNI_PATH", "CNI_ARGS" };

static int env_setup(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cni_vars) / sizeof(cni_vars[0]); i++)
		unsetenv(cni_vars[i]);
	setenv("CNI_COMMAND", "ADD", 1);
	setenv("CNI_CONTAINERID", "abc123", 1);
	setenv("CNI_NETNS", "/var/run/netns/cni-1", 1);
	setenv("CNI_IFNAME", "eth0", 1);
	setenv("CNI_PATH", "/opt/cni/bin", 1);
	return 0;
}

static int env_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cni_vars) / sizeof(cni_vars[0]); i++)
		unsetenv(cni_vars[i]);
	return 0;
}

static void env_fails(bool need_netns, const char *needle)
{
	struct cw_error err = { 0 };
	struct cw_args a;

	assert_int_equal(cw_args_from_env(&a, need_netns, &err), -1);
	assert_int_equal(err.code, CW_ERR_INVALID_ENV);
	if (!strstr(err.msg, needle))
		fail_msg("message \"%s\" does not name %s", err.msg, needle);
}

static void test_env_ok(void **state)
{
	struct cw_error err = { 0 };
	struct cw_args a;

	(void)state;
	setenv("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=uid-1", 1);
	memset(&a, 0x55, sizeof(a));
	assert_int_equal(cw_args_from_env(&a, true, &err), 0);
	assert_int_equal(err.code, 0);
	assert_string_equal(a.command, "ADD");
	assert_string_equal(a.container_id, "abc123");
	assert_string_equal(a.netns, "/var/run/netns/cni-1");
	assert_string_equal(a.ifname, "eth0");
	assert_string_equal(a.path, "/opt/cni/bin");
	assert_string_equal(a.pod_namespace, "default");
	assert_string_equal(a.pod_name, "web-0");
	assert_string_equal(a.pod_uid, "uid-1");
}

static void test_env_optional(void **state)
{
	struct cw_error err = { 0 };
	struct cw_args a;

	(void)state;
	/* DEL may come without a netns; CNI_PATH and CNI_ARGS are optional */
	unsetenv("CNI_NETNS");
	unsetenv("CNI_PATH");
	memset(&a, 0x55, sizeof(a));
	assert_int_equal(cw_args_from_env(&a, false, &err), 0);
	assert_string_equal(a.netns, "");
	assert_string_equal(a.path, "");
	assert_string_equal(a.pod_namespace, "");
	assert_string_equal(a.pod_name, "");
	assert_string_equal(a.pod_uid, "");
}

static void test_env_container_id(void **state)
{
	char long_id[300];

	(void)state;
	unsetenv("CNI_CONTAINERID");
	env_fails(false, "CNI_CONTAINERID is not set");
	setenv("CNI_CONTAINERID", "", 1);
	env_fails(false, "CNI_CONTAINERID is not set");
	setenv("CNI_CONTAINERID", "../../etc", 1);
	env_fails(false, "CNI_CONTAINERID \"../../etc\"");
	memset(long_id, 'a', 250);
	long_id[250] = '\0';
	setenv("CNI_CONTAINERID", long_id, 1);
	env_fails(false, "CNI_CONTAINERID");
}

static void test_env_ifname(void **state)
{
	(void)state;
	unsetenv("CNI_IFNAME");
	env_fails(false, "CNI_IFNAME is not set");
	setenv("CNI_IFNAME", "", 1);
	env_fails(false, "CNI_IFNAME is not set");
	setenv("CNI_IFNAME", "a/b", 1);
	env_fails(false, "CNI_IFNAME \"a/b\" is not a valid interface name");
	setenv("CNI_IFNAME", "sixteen-chars-xx", 1);
	env_fails(false, "CNI_IFNAME");
}

static void test_env_netns(void **state)
{
	(void)state;
	unsetenv("CNI_NETNS");
	env_fails(true, "CNI_NETNS is not set");
	setenv("CNI_NETNS", "", 1);
	env_fails(true, "CNI_NETNS is not set");
}

/* The container id is checked before the ifname, the netns last. */
static void test_env_order(void **state)
{
	(void)state;
	unsetenv("CNI_CONTAINERID");
	unsetenv("CNI_IFNAME");
	unsetenv("CNI_NETNS");
	env_fails(true, "CNI_CONTAINERID");
	setenv("CNI_CONTAINERID", "x", 1);
	env_fails(true, "CNI_IFNAME");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_container_id),
		cmocka_unit_test(test_ifname),
		cmocka_unit_test(test_ifname_all_whitespace),
		cmocka_unit_test(test_cni_args_kubelet),
		cmocka_unit_test(test_cni_args_edges),
		cmocka_unit_test(test_cni_args_truncation),
		cmocka_unit_test_setup_teardown(test_env_ok, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_env_optional, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_env_container_id, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_env_ifname, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_env_netns, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_env_order, env_setup, env_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
