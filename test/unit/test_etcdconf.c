// SPDX-License-Identifier: Apache-2.0
/*
 * helper/etcdconf.c: the etcd client config, in the layout of Cilium's etcd
 * config and of each file of the cilium-clustermesh Secret.  What Cilium's
 * files hold must parse; what is wrong must be refused naming the line.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "etcdconf.h"

static int parse(const char *text, struct cw_etcd_conf *c, char *err, size_t errlen)
{
	err[0] = '\0';
	return cw_etcd_conf_parse(text, strlen(text), c, err, errlen);
}

static void parses(const char *text, struct cw_etcd_conf *c)
{
	char err[256];

	if (parse(text, c, err, sizeof(err)))
		fail_msg("refused: %s\n---\n%s", err, text);
}

/* Refused with -EINVAL, a message containing @needle, and nothing left set. */
static void refused(const char *text, const char *needle)
{
	struct cw_etcd_conf c;
	char err[256];

	memset(&c, 0xa5, sizeof(c));
	if (parse(text, &c, err, sizeof(err)) != -EINVAL) {
		cw_etcd_conf_clear(&c);
		fail_msg("accepted:\n%s", text);
	}
	if (!strstr(err, needle))
		fail_msg("message \"%s\" does not contain \"%s\"", err, needle);
	assert_int_equal(c.n_endpoints, 0);
	assert_null(c.ca_file);
	assert_null(c.cert_file);
	assert_null(c.key_file);
	assert_null(c.username);
	assert_null(c.password);
}

static void test_block_list(void **state)
{
	/* as Cilium's clustermesh-apiserver writes each remote cluster's file */
	static const char text[] =
		"endpoints:\n"
		"- https://cluster2.mesh.cilium.io:2379\n"
		"- https://172.30.2.10:2379\n"
		"trusted-ca-file: /var/lib/cilium/clustermesh/cluster2-ca.crt\n"
		"key-file: /var/lib/cilium/clustermesh/cluster2.key\n"
		"cert-file: /var/lib/cilium/clustermesh/cluster2.crt\n"
		"username: remote-cluster1\n"
		"password: s3cret\n";
	struct cw_etcd_conf c;

	(void)state;
	parses(text, &c);
	assert_int_equal(c.n_endpoints, 2);
	assert_string_equal(c.endpoints[0], "https://cluster2.mesh.cilium.io:2379");
	assert_string_equal(c.endpoints[1], "https://172.30.2.10:2379");
	assert_string_equal(c.ca_file, "/var/lib/cilium/clustermesh/cluster2-ca.crt");
	assert_string_equal(c.cert_file, "/var/lib/cilium/clustermesh/cluster2.crt");
	assert_string_equal(c.key_file, "/var/lib/cilium/clustermesh/cluster2.key");
	assert_string_equal(c.username, "remote-cluster1");
	assert_string_equal(c.password, "s3cret");
	cw_etcd_conf_clear(&c);
	assert_int_equal(c.n_endpoints, 0);
	assert_null(c.ca_file);
	cw_etcd_conf_clear(&c); /* twice is harmless */
}

static void test_indented_list_and_layout(void **state)
{
	/* a document marker, comments, blank lines, indented items, CRLF */
	static const char text[] =
		"---\r\n"
		"# cluster2, read-only user\r\n"
		"\r\n"
		"endpoints:\r\n"
		"  # the first is preferred\r\n"
		"  - https://172.30.2.10:2379   \r\n"
		"\r\n"
		"  - \"https://172.30.2.11:2379\"\r\n"
		"  -   'http://127.0.0.1:2379'\r\n"
		"trusted-ca-file:   /etc/ca.crt   # the mesh CA\r\n"
		"  # indented comment\r\n";
	struct cw_etcd_conf c;

	(void)state;
	parses(text, &c);
	assert_int_equal(c.n_endpoints, 3);
	assert_string_equal(c.endpoints[0], "https://172.30.2.10:2379");
	assert_string_equal(c.endpoints[1], "https://172.30.2.11:2379");
	assert_string_equal(c.endpoints[2], "http://127.0.0.1:2379");
	assert_string_equal(c.ca_file, "/etc/ca.crt");
	assert_null(c.cert_file);
	assert_null(c.username);
	cw_etcd_conf_clear(&c);

	/* no newline at the end, and a file that is only the endpoints */
	parses("endpoints:\n- https://a:2379", &c);
	assert_int_equal(c.n_endpoints, 1);
	assert_string_equal(c.endpoints[0], "https://a:2379");
	cw_etcd_conf_clear(&c);

	/* one endpoint as a plain scalar */
	parses("endpoints: https://a:2379\n", &c);
	assert_int_equal(c.n_endpoints, 1);
	assert_string_equal(c.endpoints[0], "https://a:2379");
	cw_etcd_conf_clear(&c);
}

static void test_flow_list(void **state)
{
	struct cw_etcd_conf c;

	(void)state;
	parses("endpoints: [https://a:2379, https://b:2379,https://c:2379]\n", &c);
	assert_int_equal(c.n_endpoints, 3);
	assert_string_equal(c.endpoints[0], "https://a:2379");
	assert_string_equal(c.endpoints[1], "https://b:2379");
	assert_string_equal(c.endpoints[2], "https://c:2379");
	cw_etcd_conf_clear(&c);

	parses("endpoints: [\"https://a:2379\", 'https://b:2379']\n", &c);
	assert_int_equal(c.n_endpoints, 2);
	assert_string_equal(c.endpoints[0], "https://a:2379");
	assert_string_equal(c.endpoints[1], "https://b:2379");
	cw_etcd_conf_clear(&c);

	parses("endpoints: [https://a:2379]\n", &c);
	assert_int_equal(c.n_endpoints, 1);
	cw_etcd_conf_clear(&c);

	refused("endpoints: []\n", "no endpoints");
	refused("endpoints: [https://a:2379, ftp://b]\n", "ftp://b");
	refused("endpoints: [https://a:2379, b:2379]\n", "line 1");
}

static void test_quoted_and_plain_values(void **state)
{
	static const char text[] =
		"endpoints:\n"
		"- https://a:2379\n"
		"cert-file: \"/etc/my certs/client.crt\"\n"
		"key-file: '/etc/my certs/client.key'\n"
		"username: \"\"\n"
		"password: 'p#ss: word'\n"
		"trusted-ca-file: /etc/ca#1.crt\n";
	struct cw_etcd_conf c;

	(void)state;
	parses(text, &c);
	assert_string_equal(c.cert_file, "/etc/my certs/client.crt");
	assert_string_equal(c.key_file, "/etc/my certs/client.key");
	assert_string_equal(c.username, "");
	/* inside quotes, '#' and ": " are the value's */
	assert_string_equal(c.password, "p#ss: word");
	/* a '#' not after a space does not start a comment */
	assert_string_equal(c.ca_file, "/etc/ca#1.crt");
	cw_etcd_conf_clear(&c);

	refused("endpoints:\n- https://a:2379\ncert-file: \"/etc/a.crt\n", "line 3");
	refused("endpoints:\n- https://a:2379\ncert-file: \"/etc/a.crt\" junk\n", "line 3");
	refused("endpoints:\n- 'https://a:2379\n", "line 2");
}

static void test_unknown_keys_ignored(void **state)
{
	/* Cilium's etcd config carries settings that are not ours */
	static const char text[] =
		"endpoints:\n"
		"- https://a:2379\n"
		"dial-timeout: 5s\n"
		"keepalive-time: 30s\n"
		"auto-sync-interval: 0\n"
		"insecure-skip-tls-verify: false\n"
		"username: u\n"
		"password: p\n";
	struct cw_etcd_conf c;

	(void)state;
	parses(text, &c);
	assert_int_equal(c.n_endpoints, 1);
	assert_string_equal(c.username, "u");
	assert_string_equal(c.password, "p");
	cw_etcd_conf_clear(&c);
}

static void test_errors_name_the_line(void **state)
{
	(void)state;
	refused("", "no endpoints");
	refused("# nothing\n", "no endpoints");
	refused("endpoints:\n", "no endpoints");
	refused("trusted-ca-file: /etc/ca.crt\n", "no endpoints");

	refused("endpoints:\n- https://a:2379\n- 172.30.2.10:2379\n", "line 3");
	refused("endpoints:\n- https://a:2379\n- 172.30.2.10:2379\n", "172.30.2.10:2379");
	refused("endpoints: unix:///run/etcd.sock\n", "line 1");
	refused("endpoints:\n- HTTPS//a:2379\n", "line 2");
	refused("endpoints:\n-\n", "line 2");

	refused("- https://a:2379\nendpoints:\n", "line 1");
	refused("endpoints:\n- https://a:2379\nusername: u\n- https://b:2379\npassword: p\n", "line 4");

	refused("endpoints:\n- https://a:2379\nusername: u\nusername: v\npassword: p\n", "line 4");
	refused("endpoints:\n- https://a:2379\ncert-file: a\nkey-file: b\ncert-file: a\n", "cert-file");

	refused("endpoints:\n- https://a:2379\ncert-file: /etc/a.crt\n", "key-file");
	refused("endpoints:\n- https://a:2379\nkey-file: /etc/a.key\n", "cert-file");
	refused("endpoints:\n- https://a:2379\nusername: u\n", "password");
	refused("endpoints:\n- https://a:2379\npassword: p\n", "username");

	refused("endpoints:\n- https://a:2379\njust some words\n", "line 3");
	refused("endpoints:\n- https://a:2379\n  username: u\n", "line 3");
}

static void test_nul_byte(void **state)
{
	static const char text[] = "endpoints:\n- https://a:2379\npassword: p\0wned\nusername: u\n";
	struct cw_etcd_conf c;
	char err[256] = "";

	(void)state;
	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(cw_etcd_conf_parse(text, sizeof(text) - 1, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "NUL"));
	assert_int_equal(c.n_endpoints, 0);
	assert_null(c.password);
	/* the length is the file's: bytes past it are not read */
	assert_int_equal(cw_etcd_conf_parse(text, 11, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no endpoints"));
	assert_int_equal(cw_etcd_conf_parse(text, 27, &c, err, sizeof(err)), 0);
	assert_int_equal(c.n_endpoints, 1);
	assert_string_equal(c.endpoints[0], "https://a:2379");
	cw_etcd_conf_clear(&c);
}

static void test_endpoint_limit(void **state)
{
	char text[1024];
	size_t off;
	struct cw_etcd_conf c;

	(void)state;
	off = (size_t)snprintf(text, sizeof(text), "endpoints:\n");
	for (int i = 0; i < CW_KV_MAX_ENDPOINTS; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "- https://10.0.0.%d:2379\n", i);
	parses(text, &c);
	assert_int_equal(c.n_endpoints, CW_KV_MAX_ENDPOINTS);
	assert_string_equal(c.endpoints[CW_KV_MAX_ENDPOINTS - 1], "https://10.0.0.7:2379");
	cw_etcd_conf_clear(&c);

	/* the ninth, on line 10 */
	snprintf(text + off, sizeof(text) - off, "- https://10.0.0.99:2379\n");
	refused(text, "line 10");
	refused(text, "more than 8");

	/* and in a flow list */
	refused("endpoints: [http://a, http://b, http://c, http://d, http://e, http://f, http://g,"
		" http://h, http://i]\n", "more than 8");
}

static void test_long_and_hostile_values(void **state)
{
	size_t n = 1 << 20;
	char *text = malloc(n + 64), err[32];
	struct cw_etcd_conf c;

	(void)state;
	assert_non_null(text);
	/* a 1 MiB endpoint: refused, the message cut to its buffer */
	strcpy(text, "endpoints:\n- ");
	memset(text + 13, 'x', n);
	strcpy(text + 13 + n, "\n");
	memset(err, 'z', sizeof(err));
	assert_int_equal(cw_etcd_conf_parse(text, strlen(text), &c, err, 16), -EINVAL);
	assert_non_null(memchr(err, '\0', 16));
	assert_int_equal(err[16], 'z');

	/* a 1 MiB path is taken as it is */
	memcpy(text, "endpoints: http://a\ncert-file: ", 31);
	memset(text + 31, 'p', n);
	strcpy(text + 31 + n, "\nkey-file: k\n");
	assert_int_equal(cw_etcd_conf_parse(text, strlen(text), &c, err, sizeof(err)), 0);
	assert_int_equal(strlen(c.cert_file), n);
	cw_etcd_conf_clear(&c);

	/* only newlines, only colons, binary */
	memset(text, '\n', n);
	assert_int_equal(cw_etcd_conf_parse(text, n, &c, err, sizeof(err)), -EINVAL);
	memset(text, ':', n);
	assert_int_equal(cw_etcd_conf_parse(text, n, &c, err, sizeof(err)), -EINVAL);
	for (size_t i = 0; i < 4096; i++)
		text[i] = (char)(i * 131 + 7) ? (char)(i * 131 + 7) : 1;
	assert_int_equal(cw_etcd_conf_parse(text, 4096, &c, err, sizeof(err)), -EINVAL);
	free(text);
}

static void test_load(void **state)
{
	char path[] = "/tmp/cw-etcdconf-XXXXXX", err[512];
	static const char text[] = "endpoints: [https://a:2379]\nusername: u\n";
	struct cw_etcd_conf c;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
	close(fd);
	/* the message names the file and the problem */
	assert_int_equal(cw_etcd_conf_load(path, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "password"));
	unlink(path);
	assert_int_equal(cw_etcd_conf_load(path, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
}

static void test_to_kv(void **state)
{
	static const char text[] =
		"endpoints: [https://a:2379, https://b:2379]\n"
		"trusted-ca-file: /ca\ncert-file: /crt\nkey-file: /key\nusername: u\npassword: p\n";
	struct cw_etcd_conf c;
	struct cw_kv_config kv;

	(void)state;
	parses(text, &c);
	memset(&kv, 0xa5, sizeof(kv));
	cw_etcd_conf_to_kv(&c, &kv);
	assert_int_equal(kv.n_endpoints, 2);
	/* a borrowing view: the same strings, not copies */
	assert_ptr_equal(kv.endpoints[0], c.endpoints[0]);
	assert_ptr_equal(kv.endpoints[1], c.endpoints[1]);
	for (size_t i = 2; i < CW_KV_MAX_ENDPOINTS; i++)
		assert_null(kv.endpoints[i]);
	assert_ptr_equal(kv.ca_file, c.ca_file);
	assert_ptr_equal(kv.cert_file, c.cert_file);
	assert_ptr_equal(kv.key_file, c.key_file);
	assert_ptr_equal(kv.username, c.username);
	assert_ptr_equal(kv.password, c.password);
	assert_int_equal(kv.timeout_ms, 0);
	cw_etcd_conf_clear(&c);

	/* no TLS files, no user: NULL, which cw_kv_new takes as "not used" */
	parses("endpoints: http://127.0.0.1:2379\n", &c);
	cw_etcd_conf_to_kv(&c, &kv);
	assert_int_equal(kv.n_endpoints, 1);
	assert_string_equal(kv.endpoints[0], "http://127.0.0.1:2379");
	assert_null(kv.ca_file);
	assert_null(kv.cert_file);
	assert_null(kv.key_file);
	assert_null(kv.username);
	assert_null(kv.password);
	cw_etcd_conf_clear(&c);
}

/*
 * Regression (found by this test, fixed in 389b2f8): lines were split with
 * strtok_r(..., "\n"), which skips empty lines, so every error after a
 * blank line named the wrong line.
 */
static void test_line_numbers_count_blank_lines(void **state)
{
	(void)state;
	refused("endpoints:\n- https://a:2379\n\n- ftp://b\n", "line 4");
	refused("\n\n\n- https://a:2379\n", "line 4");
}

/*
 * Regression (found by this test, fixed in 389b2f8): a second "endpoints:"
 * appended to the first list; YAML (and Cilium's yaml decoder) refuse a
 * repeated mapping key.
 */
static void test_duplicate_endpoints_key(void **state)
{
	(void)state;
	refused("endpoints:\n- https://a:2379\nendpoints:\n- https://b:2379\n", "line 3");
	refused("endpoints: https://a:2379\nendpoints: [https://b:2379]\n", "line 2");
}

/*
 * Regression (found by this test, fixed in 389b2f8): a comment after a
 * quoted value, valid YAML (`cert-file: "/etc/a.crt"  # client`), was
 * refused as "malformed value".
 */
static void test_comment_after_quoted_value(void **state)
{
	struct cw_etcd_conf c;

	(void)state;
	parses("endpoints:\n- \"https://a:2379\" # primary\n"
	       "cert-file: \"/etc/a.crt\"  # client\nkey-file: '/etc/a.key' # key\n", &c);
	assert_string_equal(c.endpoints[0], "https://a:2379");
	assert_string_equal(c.cert_file, "/etc/a.crt");
	assert_string_equal(c.key_file, "/etc/a.key");
	cw_etcd_conf_clear(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_block_list),
		cmocka_unit_test(test_indented_list_and_layout),
		cmocka_unit_test(test_flow_list),
		cmocka_unit_test(test_quoted_and_plain_values),
		cmocka_unit_test(test_unknown_keys_ignored),
		cmocka_unit_test(test_errors_name_the_line),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_endpoint_limit),
		cmocka_unit_test(test_long_and_hostile_values),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_to_kv),
		cmocka_unit_test(test_line_numbers_count_blank_lines),
		cmocka_unit_test(test_duplicate_endpoints_key),
		cmocka_unit_test(test_comment_after_quoted_value),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
