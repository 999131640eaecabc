// SPDX-License-Identifier: Apache-2.0
/*
 * helper/kvstore.c against a real etcd 3.4 with TLS client certificates and
 * users, started by test/etcd/fixture (test/etcd/run-kvstore does that and
 * passes its DIR/env in the environment).
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

#include "kvstore.h"

static const char *env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		fail_msg("%s is not set: run through test/etcd/run-kvstore", name);
	return v;
}

static struct cw_kv *client(const char *who, const char *first_endpoint)
{
	char cert[32], key[32], user[32], pass[32];
	struct cw_kv_config cfg = { 0 };
	struct cw_kv *kv = NULL;

	snprintf(cert, sizeof(cert), "ETCD_%s_CERT", who);
	snprintf(key, sizeof(key), "ETCD_%s_KEY", who);
	snprintf(user, sizeof(user), "ETCD_%s_USER", who);
	snprintf(pass, sizeof(pass), "ETCD_%s_PASSWORD", who);
	if (first_endpoint)
		cfg.endpoints[cfg.n_endpoints++] = first_endpoint;
	cfg.endpoints[cfg.n_endpoints++] = env("ETCD_ENDPOINT");
	cfg.ca_file = env("ETCD_CA");
	cfg.cert_file = env(cert);
	cfg.key_file = env(key);
	cfg.username = env(user);
	cfg.password = env(pass);
	cfg.timeout_ms = 3000;
	assert_int_equal(cw_kv_new(&cfg, &kv), 0);
	return kv;
}

static void test_put_get_delete(void **state)
{
	struct cw_kv *kv = client("LOCAL", NULL);
	struct cw_kv_pair p;

	(void)state;
	assert_int_equal(cw_kv_put(kv, "cilium/test/a", "hello\0world", 11, 0), 0);
	assert_int_equal(cw_kv_get(kv, "cilium/test/a", &p), 0);
	assert_string_equal(p.key, "cilium/test/a");
	assert_int_equal(p.value_len, 11);
	assert_memory_equal(p.value, "hello\0world", 11); /* bytes, not text */
	assert_true(p.mod_revision > 0);
	cw_kv_pair_clear(&p);
	assert_int_equal(cw_kv_delete(kv, "cilium/test/a", false), 0);
	assert_int_equal(cw_kv_get(kv, "cilium/test/a", &p), -ENOENT);
	cw_kv_free(kv);
}

static void test_create_and_cas(void **state)
{
	struct cw_kv *kv = client("LOCAL", NULL);
	struct cw_kv_pair p;
	int64_t rev;

	(void)state;
	cw_kv_delete(kv, "cilium/test/id", false);
	assert_int_equal(cw_kv_create(kv, "cilium/test/id", "1", 1, 0), 0);
	assert_int_equal(cw_kv_create(kv, "cilium/test/id", "2", 1, 0), -EEXIST);
	assert_int_equal(cw_kv_get(kv, "cilium/test/id", &p), 0);
	assert_string_equal(p.value, "1"); /* the losing create changed nothing */
	rev = p.mod_revision;
	cw_kv_pair_clear(&p);
	assert_int_equal(cw_kv_cas(kv, "cilium/test/id", rev, "3", 1, 0), 0);
	assert_int_equal(cw_kv_cas(kv, "cilium/test/id", rev, "4", 1, 0), -ESTALE);
	assert_int_equal(cw_kv_get(kv, "cilium/test/id", &p), 0);
	assert_string_equal(p.value, "3");
	cw_kv_pair_clear(&p);
	cw_kv_free(kv);
}

struct collected {
	int n;
	char last[128];
	bool ordered;
};

static int collect(const struct cw_kv_pair *p, void *arg)
{
	struct collected *c = arg;

	if (c->n && strcmp(c->last, p->key) >= 0)
		c->ordered = false;
	snprintf(c->last, sizeof(c->last), "%s", p->key);
	c->n++;
	return 0;
}

static void test_list_paginated(void **state)
{
	struct cw_kv *kv = client("LOCAL", NULL);
	struct collected c = { .ordered = true };
	char key[64];
	int64_t rev = 0;

	(void)state;
	assert_int_equal(cw_kv_delete(kv, "cilium/test/list/", true), 0);
	for (int i = 0; i < 25; i++) {
		snprintf(key, sizeof(key), "cilium/test/list/%02d", i);
		assert_int_equal(cw_kv_put(kv, key, "x", 1, 0), 0);
	}
	/* a sibling prefix must not leak in: list/ ends before list0 */
	assert_int_equal(cw_kv_put(kv, "cilium/test/list0", "x", 1, 0), 0);
	assert_int_equal(cw_kv_list(kv, "cilium/test/list/", 10, collect, &c, &rev), 0);
	assert_int_equal(c.n, 25);
	assert_true(c.ordered);
	assert_string_equal(c.last, "cilium/test/list/24");
	assert_true(rev > 0);
	assert_int_equal(cw_kv_delete(kv, "cilium/test/list/", true), 0);
	c.n = 0;
	assert_int_equal(cw_kv_list(kv, "cilium/test/list/", 10, collect, &c, &rev), 0);
	assert_int_equal(c.n, 0);
	cw_kv_delete(kv, "cilium/test/list0", false);
	cw_kv_free(kv);
}

static void test_lease(void **state)
{
	struct cw_kv *kv = client("LOCAL", NULL);
	struct cw_kv_pair p;
	int64_t id = 0, ttl = 0;

	(void)state;
	assert_int_equal(cw_kv_lease_grant(kv, 30, &id), 0);
	assert_true(id != 0);
	assert_int_equal(cw_kv_put(kv, "cilium/test/leased", "x", 1, id), 0);
	assert_int_equal(cw_kv_get(kv, "cilium/test/leased", &p), 0);
	assert_int_equal(p.lease, id);
	cw_kv_pair_clear(&p);
	assert_int_equal(cw_kv_lease_keepalive(kv, id, &ttl), 0);
	assert_true(ttl > 0 && ttl <= 30);
	assert_int_equal(cw_kv_lease_revoke(kv, id), 0);
	/* revoking a lease deletes its keys: how a dead node's records go */
	assert_int_equal(cw_kv_get(kv, "cilium/test/leased", &p), -ENOENT);
	cw_kv_free(kv);
}

static void test_lease_expiry(void **state)
{
	struct cw_kv *kv = client("LOCAL", NULL);
	struct cw_kv_pair p;
	int64_t id = 0, ttl = 0;

	(void)state;
	assert_int_equal(cw_kv_lease_grant(kv, 2, &id), 0);
	assert_int_equal(cw_kv_put(kv, "cilium/test/expiring", "x", 1, id), 0);
	sleep(4);
	assert_int_equal(cw_kv_get(kv, "cilium/test/expiring", &p), -ENOENT);
	assert_int_equal(cw_kv_lease_keepalive(kv, id, &ttl), -ENOENT);
	assert_non_null(strstr(cw_kv_error(kv), "expired"));
	cw_kv_free(kv);
}

static void test_remote_is_read_only(void **state)
{
	struct cw_kv *local = client("LOCAL", NULL), *remote = client("REMOTE", NULL);
	struct cw_kv_pair p;

	(void)state;
	assert_int_equal(cw_kv_put(local, "cilium/test/shared", "v", 1, 0), 0);
	assert_int_equal(cw_kv_get(remote, "cilium/test/shared", &p), 0);
	assert_string_equal(p.value, "v");
	cw_kv_pair_clear(&p);
	assert_int_equal(cw_kv_put(remote, "cilium/test/shared", "w", 1, 0), -EACCES);
	assert_int_equal(cw_kv_error_code(remote), 7);
	assert_non_null(strstr(cw_kv_error(remote), "permission denied"));
	assert_int_equal(cw_kv_get(remote, "causeway/private", &p), -EACCES);
	assert_int_equal(cw_kv_get(local, "cilium/test/shared", &p), 0);
	assert_string_equal(p.value, "v"); /* unchanged */
	cw_kv_pair_clear(&p);
	cw_kv_free(local);
	cw_kv_free(remote);
}

static void test_failover_and_bad_password(void **state)
{
	/* port 1 on loopback: nothing listens, the connect is refused at once */
	struct cw_kv *kv = client("LOCAL", "https://127.0.0.1:1");
	struct cw_kv_config cfg = { 0 };
	struct cw_kv_pair p;

	(void)state;
	assert_int_equal(cw_kv_put(kv, "cilium/test/failover", "x", 1, 0), 0);
	assert_int_equal(cw_kv_get(kv, "cilium/test/failover", &p), 0);
	cw_kv_pair_clear(&p);
	cw_kv_free(kv);

	cfg.endpoints[cfg.n_endpoints++] = env("ETCD_ENDPOINT");
	cfg.ca_file = env("ETCD_CA");
	cfg.cert_file = env("ETCD_LOCAL_CERT");
	cfg.key_file = env("ETCD_LOCAL_KEY");
	cfg.username = "causeway-local";
	cfg.password = "wrong";
	assert_int_equal(cw_kv_new(&cfg, &kv), 0);
	assert_int_equal(cw_kv_get(kv, "cilium/test/failover", &p), -EACCES);
	assert_non_null(strstr(cw_kv_error(kv), "authentication as causeway-local refused"));
	cw_kv_free(kv);
}

static void test_token_expiry_and_restart(void **state)
{
	struct cw_kv *kv = client("LOCAL", NULL);
	char cmd[512];
	struct cw_kv_pair p;

	(void)state;
	assert_int_equal(cw_kv_put(kv, "cilium/test/persist", "x", 1, 0), 0);
	/* the fixture runs with --token-ttl 2: an idle token expires (code 16)
	 * and the client must authenticate again by itself */
	sleep(4);
	assert_int_equal(cw_kv_get(kv, "cilium/test/persist", &p), 0);
	cw_kv_pair_clear(&p);
	snprintf(cmd, sizeof(cmd), "test/etcd/fixture restart %s >/dev/null", env("ETCD_DIR"));
	assert_int_equal(system(cmd), 0);
	assert_int_equal(cw_kv_get(kv, "cilium/test/persist", &p), 0);
	assert_string_equal(p.value, "x");
	cw_kv_pair_clear(&p);
	cw_kv_free(kv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_delete),
		cmocka_unit_test(test_create_and_cas),
		cmocka_unit_test(test_list_paginated),
		cmocka_unit_test(test_lease),
		cmocka_unit_test(test_lease_expiry),
		cmocka_unit_test(test_remote_is_read_only),
		cmocka_unit_test(test_failover_and_bad_password),
		cmocka_unit_test(test_token_expiry_and_restart),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
