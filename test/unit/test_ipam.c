// SPDX-License-Identifier: Apache-2.0
/* cni/ipam.c: the built-in, file-backed IPAM, in a throw-away state dir. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <causeway/log.h>
#include "ipam.h"

#define NET "pods"
#define LOCK_MS 30000

struct fixture {
	char dir[64];
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/cw-test-ipam-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	int rc = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);

	/* and check it is gone */
	if (rc == 0 && stat(f->dir, &st) == 0)
		rc = -1;
	free(f);
	return rc;
}

static struct cw_prefix4 pool(const char *cidr)
{
	struct cw_prefix4 p;

	if (!cw_prefix4_parse(cidr, &p))
		fail_msg("bad test pool %s", cidr);
	return p;
}

static struct cw_ipam *open_pool(struct fixture *f, const char *cidr)
{
	struct cw_prefix4 p = pool(cidr);
	struct cw_ipam *ipam = NULL;

	assert_int_equal(cw_ipam_open(f->dir, NET, &p, LOCK_MS, &ipam), 0);
	assert_non_null(ipam);
	return ipam;
}

static uint32_t alloc_ok(struct cw_ipam *ipam, const char *cid, const char *ifn, bool want_fresh)
{
	struct cw_error err = { 0 };
	struct in_addr a = { 0 };
	bool fresh = !want_fresh;
	int rc = cw_ipam_allocate(ipam, cid, ifn, &a, &fresh, &err);

	if (rc != 0)
		fail_msg("allocate %s/%s: %d %s", cid, ifn, rc, err.msg);
	assert_int_equal(err.code, 0);
	assert_int_equal(fresh, want_fresh);
	return ntohl(a.s_addr);
}

static void ipam_path(struct fixture *f, uint32_t ip, char *buf, size_t len)
{
	struct in_addr a = { htonl(ip) };
	char s[16];

	cw_addr4_str(a, s);
	snprintf(buf, len, "%s/ipam/%s/%s", f->dir, NET, s);
}

static void write_raw(struct fixture *f, const char *name, const char *data)
{
	char path[256];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/ipam/%s/%s", f->dir, NET, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(data, fp);
	assert_int_equal(fclose(fp), 0);
}

static void test_gateway(void **state)
{
	struct cw_prefix4 p = pool("10.10.1.0/24");
	struct in_addr gw = cw_ipam_gateway(&p);

	(void)state;
	assert_int_equal(ntohl(gw.s_addr), 0x0a0a0101);
	p = pool("192.168.7.248/29");
	gw = cw_ipam_gateway(&p);
	assert_int_equal(ntohl(gw.s_addr), 0xc0a807f9);
}

/* Every usable address of a /24 once, and never network, gateway, broadcast. */
static void test_never_reserved(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.10.1.0/24");
	static bool seen[256];
	char cid[32];
	unsigned int used, cap;

	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < 253; i++) {
		uint32_t ip;

		snprintf(cid, sizeof(cid), "c%d", i);
		ip = alloc_ok(ipam, cid, "eth0", true);
		assert_int_equal(ip & 0xffffff00, 0x0a0a0100);
		assert_true((ip & 0xff) >= 2 && (ip & 0xff) <= 254);
		assert_false(seen[ip & 0xff]);
		seen[ip & 0xff] = true;
	}
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 253);
	assert_int_equal(cap, 253);
	cw_ipam_close(ipam);
}

static void test_exhaustion(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.1.0.0/29");
	struct cw_error err = { 0 };
	struct in_addr a;
	bool fresh, seen[8] = { false };
	char cid[16];

	for (int i = 0; i < 5; i++) {
		uint32_t ip;

		snprintf(cid, sizeof(cid), "c%d", i);
		ip = alloc_ok(ipam, cid, "eth0", true);
		/* .0 network, .1 gateway, .7 broadcast */
		assert_true((ip & 7) >= 2 && (ip & 7) <= 6);
		assert_false(seen[ip & 7]);
		seen[ip & 7] = true;
	}
	assert_int_equal(cw_ipam_allocate(ipam, "c5", "eth0", &a, &fresh, &err), -ENOSPC);
	assert_int_equal(err.code, CW_ERR_IPAM);
	if (!strstr(err.msg, "10.1.0.0/29") || !strstr(err.msg, "5 addresses"))
		fail_msg("exhaustion message \"%s\" names neither pool nor count", err.msg);

	/* an attachment that already holds an address still gets it back */
	assert_true(alloc_ok(ipam, "c3", "eth0", false) != 0);
	cw_ipam_close(ipam);
}

static void test_idempotent(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.10.1.0/24");
	uint32_t a, b, c;
	unsigned int used, cap;
	char path[256], *buf = NULL;
	FILE *fp;
	size_t n = 0;

	a = alloc_ok(ipam, "abc", "eth0", true);
	b = alloc_ok(ipam, "abc", "eth0", false);
	assert_int_equal(a, b);
	/* same container, another interface: another address */
	c = alloc_ok(ipam, "abc", "net1", true);
	assert_int_not_equal(a, c);
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 2);

	/* the file format of doc/cni-contract.md */
	ipam_path(f, a, path, sizeof(path));
	fp = fopen(path, "r");
	assert_non_null(fp);
	assert_true(getdelim(&buf, &n, '\0', fp) > 0);
	fclose(fp);
	assert_string_equal(buf, "abc\neth0\n");
	free(buf);
	cw_ipam_close(ipam);

	/* and across open/close: the state is the directory */
	ipam = open_pool(f, "10.10.1.0/24");
	assert_int_equal(alloc_ok(ipam, "abc", "eth0", false), a);
	cw_ipam_close(ipam);
}

static void test_release_next_fit(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.1.0.0/28");
	struct in_addr out;
	uint32_t a, b, c, d;
	char path[256];

	a = alloc_ok(ipam, "a", "eth0", true);
	b = alloc_ok(ipam, "b", "eth0", true);
	assert_int_equal(a, 0x0a010002);
	assert_int_equal(b, 0x0a010003);
	assert_int_equal(cw_ipam_release(ipam, "a", "eth0"), 0);
	ipam_path(f, a, path, sizeof(path));
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(cw_ipam_find(ipam, "a", "eth0", &out), -ENOENT);

	/* next-fit: a just-freed address is not handed out again while others are free */
	c = alloc_ok(ipam, "c", "eth0", true);
	assert_int_not_equal(c, a);
	assert_int_equal(c, 0x0a010004);
	/* the same attachment coming back gets a new address too */
	d = alloc_ok(ipam, "a", "eth0", true);
	assert_int_not_equal(d, a);

	/* releasing what is not held is fine, and changes nothing */
	assert_int_equal(cw_ipam_release(ipam, "nobody", "eth0"), 0);
	assert_int_equal(cw_ipam_find(ipam, "b", "eth0", &out), 0);
	assert_int_equal(ntohl(out.s_addr), b);
	cw_ipam_close(ipam);
}

/* When the cursor reaches the end of the range it wraps to the start. */
static void test_wrap(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.1.0.0/29");
	char cid[16];
	uint32_t ip;

	for (int i = 0; i < 5; i++) {
		snprintf(cid, sizeof(cid), "c%d", i);
		assert_int_equal(alloc_ok(ipam, cid, "eth0", true), 0x0a010002 + (uint32_t)i);
	}
	assert_int_equal(cw_ipam_release(ipam, "c1", "eth0"), 0);
	/* .3 is the only free one */
	ip = alloc_ok(ipam, "new", "eth0", true);
	assert_int_equal(ip, 0x0a010003);
	assert_int_equal(cw_ipam_release(ipam, "c0", "eth0"), 0);
	assert_int_equal(cw_ipam_release(ipam, "c4", "eth0"), 0);
	/* cursor at .3: next is .4 busy, .5 busy, .6 free */
	assert_int_equal(alloc_ok(ipam, "n2", "eth0", true), 0x0a010006);
	assert_int_equal(alloc_ok(ipam, "n3", "eth0", true), 0x0a010002);
	cw_ipam_close(ipam);
}

static void test_find(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.10.1.0/24");
	struct in_addr out;
	uint32_t a;

	assert_int_equal(cw_ipam_find(ipam, "abc", "eth0", &out), -ENOENT);
	a = alloc_ok(ipam, "abc", "eth0", true);
	assert_int_equal(cw_ipam_find(ipam, "abc", "eth0", &out), 0);
	assert_int_equal(ntohl(out.s_addr), a);
	assert_int_equal(cw_ipam_find(ipam, "abc", "eth1", &out), -ENOENT);
	assert_int_equal(cw_ipam_find(ipam, "ab", "eth0", &out), -ENOENT);
	assert_int_equal(cw_ipam_find(ipam, "abcd", "eth0", &out), -ENOENT);
	cw_ipam_close(ipam);

	/* find and release need no pool (DEL does not know one) */
	assert_int_equal(cw_ipam_open(f->dir, NET, NULL, LOCK_MS, &ipam), 0);
	assert_int_equal(cw_ipam_find(ipam, "abc", "eth0", &out), 0);
	assert_int_equal(ntohl(out.s_addr), a);
	assert_int_equal(cw_ipam_release(ipam, "abc", "eth0"), 0);
	assert_int_equal(cw_ipam_find(ipam, "abc", "eth0", &out), -ENOENT);
	cw_ipam_close(ipam);
}

static struct cw_conf *gc_conf(const char *attachments)
{
	struct cw_error err = { 0 };
	struct cw_conf *c = NULL;
	char *json = NULL;

	assert_true(asprintf(&json, "{\"cniVersion\":\"1.1.0\",\"name\":\"%s\","
			     "\"cni.dev/valid-attachments\":[%s]}", NET, attachments) > 0);
	if (cw_conf_parse(json, strlen(json), &c, &err))
		fail_msg("gc conf: %s", err.msg);
	free(json);
	return c;
}

static void test_gc(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.10.1.0/24");
	struct cw_conf *conf;
	struct in_addr out;
	unsigned int released = 99, used, cap;
	uint32_t a, c;

	a = alloc_ok(ipam, "a", "eth0", true);
	alloc_ok(ipam, "b", "eth0", true);
	c = alloc_ok(ipam, "c", "net1", true);
	alloc_ok(ipam, "c", "eth0", true);

	conf = gc_conf("{\"containerID\":\"a\",\"ifname\":\"eth0\"},{\"containerID\":\"c\",\"ifname\":\"net1\"}");
	assert_int_equal(cw_ipam_gc(ipam, conf, &released), 0);
	assert_int_equal(released, 2);
	assert_int_equal(cw_ipam_find(ipam, "a", "eth0", &out), 0);
	assert_int_equal(ntohl(out.s_addr), a);
	assert_int_equal(cw_ipam_find(ipam, "c", "net1", &out), 0);
	assert_int_equal(ntohl(out.s_addr), c);
	assert_int_equal(cw_ipam_find(ipam, "b", "eth0", &out), -ENOENT);
	assert_int_equal(cw_ipam_find(ipam, "c", "eth0", &out), -ENOENT);
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 2);

	/* a second GC with the same list has nothing left to do */
	assert_int_equal(cw_ipam_gc(ipam, conf, &released), 0);
	assert_int_equal(released, 0);
	cw_conf_free(conf);

	/* an empty list collects everything */
	conf = gc_conf("");
	assert_int_equal(cw_ipam_gc(ipam, conf, &released), 0);
	assert_int_equal(released, 2);
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 0);
	cw_conf_free(conf);
	cw_ipam_close(ipam);
}

static void test_usage(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.10.1.0/24");
	unsigned int used = 99, cap = 99;

	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 0);
	assert_int_equal(cap, 253);
	alloc_ok(ipam, "a", "eth0", true);
	alloc_ok(ipam, "b", "eth0", true);
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 2);
	/* an allocation outside the pool (left from an earlier podCIDR) is not counted */
	write_raw(f, "192.168.0.5", "old\neth0\n");
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 2);
	cw_ipam_close(ipam);

	ipam = open_pool(f, "10.10.1.0/29");
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(cap, 5);
	cw_ipam_close(ipam);
	ipam = open_pool(f, "10.0.0.0/8");
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(cap, (1u << 24) - 3);
	cw_ipam_close(ipam);

	/* no pool, no capacity */
	assert_int_equal(cw_ipam_open(f->dir, NET, NULL, LOCK_MS, &ipam), 0);
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), -EINVAL);
	cw_ipam_close(ipam);
}

static void test_corrupt(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.1.0.0/28");
	struct cw_conf *conf;
	struct in_addr out;
	unsigned int used, cap, released;
	uint32_t a;

	/* a half-written claim (no newline) and an empty one: both stay taken */
	write_raw(f, "10.1.0.2", "garbage-without-newline");
	write_raw(f, "10.1.0.3", "");
	/* junk in the directory that is not an address */
	write_raw(f, "notes.txt", "x\ny\n");
	write_raw(f, "last_reserved_ip", "not-an-ip\n");

	a = alloc_ok(ipam, "a", "eth0", true);
	assert_int_equal(a, 0x0a010004);
	assert_int_equal(cw_ipam_find(ipam, "a", "eth0", &out), 0);
	assert_int_equal(ntohl(out.s_addr), a);
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 3);
	/* the corrupt claims match no real attachment... */
	assert_int_equal(cw_ipam_find(ipam, "garbage-without-newline", "", &out), -ENOENT);

	/* ...so GC, which knows every live attachment, frees them */
	conf = gc_conf("{\"containerID\":\"a\",\"ifname\":\"eth0\"}");
	assert_int_equal(cw_ipam_gc(ipam, conf, &released), 0);
	assert_int_equal(released, 2);
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, 1);
	cw_conf_free(conf);
	cw_ipam_close(ipam);
}

/* A cursor from another pool (the podCIDR changed) restarts at the bottom. */
static void test_cursor_outside_pool(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = open_pool(f, "10.1.0.0/28");

	write_raw(f, "last_reserved_ip", "192.168.1.9");
	assert_int_equal(alloc_ok(ipam, "a", "eth0", true), 0x0a010002);
	cw_ipam_close(ipam);
}

/* The directory lock: a second holder waits, then gives up with -EAGAIN. */
static void test_lock_timeout(void **state)
{
	struct fixture *f = *state;
	struct cw_prefix4 p = pool("10.1.0.0/28");
	struct cw_ipam *first = NULL, *second = NULL;

	assert_int_equal(cw_ipam_open(f->dir, NET, &p, LOCK_MS, &first), 0);
	assert_int_equal(cw_ipam_open(f->dir, NET, &p, 50, &second), -EAGAIN);
	assert_null(second);
	/* another network has its own lock */
	assert_int_equal(cw_ipam_open(f->dir, "other", &p, 50, &second), 0);
	cw_ipam_close(second);
	second = NULL;
	cw_ipam_close(first);
	assert_int_equal(cw_ipam_open(f->dir, NET, &p, 50, &second), 0);
	cw_ipam_close(second);
	cw_ipam_close(NULL);
}

static void test_open_errors(void **state)
{
	struct fixture *f = *state;
	struct cw_ipam *ipam = NULL;
	char *long_dir = malloc(PATH_MAX + 16), path[128];
	FILE *fp;

	assert_non_null(long_dir);
	memset(long_dir, 'a', PATH_MAX);
	long_dir[0] = '/';
	long_dir[PATH_MAX] = '\0';
	assert_int_equal(cw_ipam_open(long_dir, NET, NULL, 50, &ipam), -ENAMETOOLONG);
	assert_null(ipam);
	free(long_dir);

	/* a state dir that is a file */
	snprintf(path, sizeof(path), "%s/file", f->dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(cw_ipam_open(path, NET, NULL, 50, &ipam), -ENOTDIR);
	assert_null(ipam);
}

enum { N_PROCS = 8, PER_PROC = 10, SAME_ROUNDS = 20 };

/*
 * Child: wait for @go to close so that all children start together, then
 * allocate @count addresses, each under its own open/close as separate ADDs
 * do, and report each address and its "fresh" flag through @out.
 */
static void child_allocate(struct fixture *f, int go, int out, const char *fmt, int idx, int count)
{
	struct cw_prefix4 p = pool("10.20.0.0/24");
	char c;

	if (read(go, &c, 1) != 0)
		_exit(4);
	for (int i = 0; i < count; i++) {
		struct cw_error err = { 0 };
		struct cw_ipam *ipam = NULL;
		struct in_addr a;
		uint8_t rec[5];
		bool fresh;
		char cid[32];

		snprintf(cid, sizeof(cid), fmt, idx, i);
		if (cw_ipam_open(f->dir, NET, &p, LOCK_MS, &ipam) ||
		    cw_ipam_allocate(ipam, cid, "eth0", &a, &fresh, &err))
			_exit(2);
		cw_ipam_close(ipam);
		memcpy(rec, &a.s_addr, 4);
		rec[4] = fresh;
		if (write(out, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
			_exit(3);
	}
	_exit(0);
}

/* Runs N_PROCS children at once; returns how many records came back. */
static int run_children(struct fixture *f, const char *fmt, int fmt_arg, int count, uint32_t *ips,
			uint8_t *fresh, int max)
{
	pid_t pids[N_PROCS];
	int go[2], out[2], n = 0, status;
	uint8_t rec[5];

	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(out), 0);
	for (int i = 0; i < N_PROCS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(go[1]);
			close(out[0]);
			child_allocate(f, go[0], out[1], fmt, fmt_arg >= 0 ? fmt_arg : i, count);
		}
	}
	close(go[0]);
	close(out[1]);
	close(go[1]);
	while (read(out[0], rec, sizeof(rec)) == (ssize_t)sizeof(rec)) {
		assert_true(n < max);
		memcpy(&ips[n], rec, 4);
		ips[n] = ntohl(ips[n]);
		fresh[n] = rec[4];
		n++;
	}
	close(out[0]);
	for (int i = 0; i < N_PROCS; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	return n;
}

/* 8 processes x 10 ADDs at once: 80 distinct addresses, none reserved. */
static void test_concurrent_distinct(void **state)
{
	struct fixture *f = *state;
	uint32_t ips[N_PROCS * PER_PROC];
	uint8_t fresh[N_PROCS * PER_PROC];
	bool seen[256] = { false };
	struct cw_ipam *ipam;
	unsigned int used, cap;
	int n = run_children(f, "p%d-c%d", -1, PER_PROC, ips, fresh, N_PROCS * PER_PROC);

	assert_int_equal(n, N_PROCS * PER_PROC);
	for (int i = 0; i < n; i++) {
		assert_int_equal(ips[i] & 0xffffff00, 0x0a140000);
		assert_true((ips[i] & 0xff) >= 2 && (ips[i] & 0xff) <= 254);
		if (seen[ips[i] & 0xff])
			fail_msg("10.20.0.%u handed out twice", ips[i] & 0xff);
		seen[ips[i] & 0xff] = true;
		assert_true(fresh[i]);
	}
	ipam = open_pool(f, "10.20.0.0/24");
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, N_PROCS * PER_PROC);
	cw_ipam_close(ipam);
}

/*
 * 8 processes racing to ADD the same attachment (a runtime retrying): the
 * find-then-claim must be atomic under the lock, or two of them each claim
 * an address for it.  Several rounds, each a fresh attachment and a fresh
 * start line, to give a missing lock many chances to show.
 */
static void test_concurrent_same_attachment(void **state)
{
	struct fixture *f = *state;
	uint32_t ips[N_PROCS];
	uint8_t fresh[N_PROCS];
	struct cw_ipam *ipam;
	unsigned int used, cap;

	for (int r = 0; r < SAME_ROUNDS; r++) {
		int n = run_children(f, "same%d-%d", r, 1, ips, fresh, N_PROCS), n_fresh = 0;

		assert_int_equal(n, N_PROCS);
		for (int i = 0; i < n; i++) {
			if (ips[i] != ips[0])
				fail_msg("round %d: one attachment got 0x%08x and 0x%08x", r, ips[0], ips[i]);
			n_fresh += fresh[i];
		}
		assert_int_equal(n_fresh, 1);
	}
	ipam = open_pool(f, "10.20.0.0/24");
	assert_int_equal(cw_ipam_usage(ipam, &used, &cap), 0);
	assert_int_equal(used, SAME_ROUNDS);
	cw_ipam_close(ipam);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gateway),
		cmocka_unit_test_setup_teardown(test_never_reserved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exhaustion, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_release_next_fit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursor_outside_pool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_distinct, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_same_attachment, setup, teardown),
	};

	/* the allocator's info lines would drown cmocka's output */
	cw_log_set_level(CW_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
