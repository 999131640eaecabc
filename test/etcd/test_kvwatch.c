// SPDX-License-Identifier: Apache-2.0
/*
 * helper/kvwatch.c on the real event loop against a real etcd 3.4
 * (test/etcd/run-kvwatch starts the fixture): the mirror follows puts and
 * deletes, survives an etcd restart by resuming from its revision, and
 * relists exactly (deletes included) when its revision was compacted while
 * it was disconnected.
 */
#include <errno.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kvwatch.h"

static const char *env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		fail_msg("%s is not set: run through test/etcd/run-kvwatch", name);
	return v;
}

static struct cw_kv *client(void)
{
	struct cw_kv_config cfg = { 0 };
	struct cw_kv *kv = NULL;

	cfg.endpoints[cfg.n_endpoints++] = env("ETCD_ENDPOINT");
	cfg.ca_file = env("ETCD_CA");
	cfg.cert_file = env("ETCD_LOCAL_CERT");
	cfg.key_file = env("ETCD_LOCAL_KEY");
	cfg.username = env("ETCD_LOCAL_USER");
	cfg.password = env("ETCD_LOCAL_PASSWORD");
	cfg.timeout_ms = 3000;
	assert_int_equal(cw_kv_new(&cfg, &kv), 0);
	return kv;
}

struct seen {
	int puts, dels, synced;
	char last_put[128], last_del[128];
};

static void on_put(void *arg, const struct cw_kv_pair *kv, const struct cw_kv_pair *old)
{
	struct seen *s = arg;

	(void)old;
	s->puts++;
	snprintf(s->last_put, sizeof(s->last_put), "%s=%s", kv->key, kv->value);
}

static void on_del(void *arg, const struct cw_kv_pair *old)
{
	struct seen *s = arg;

	s->dels++;
	snprintf(s->last_del, sizeof(s->last_del), "%s", old->key);
}

static void on_synced(void *arg)
{
	((struct seen *)arg)->synced++;
}

static const struct cw_kv_watch_ops ops = { on_put, on_del, on_synced };

struct until {
	struct cw_kv_watch *w;
	struct seen *s;
	bool (*cond)(struct until *u);
	const char *key, *value;
	int64_t deadline;
};

static bool has_value(struct until *u)
{
	const struct cw_kv_pair *p = cw_kv_watch_lookup(u->w, u->key);

	if (!u->value)
		return p == NULL;
	return p && strcmp(p->value, u->value) == 0;
}

static void check(struct cw_loop *loop, void *arg)
{
	struct until *u = arg;

	if (u->cond(u) || cw_loop_now_ms() > u->deadline)
		cw_loop_stop(loop);
}

/* Run the loop until the mirror has @key = @value (NULL: absent), or 15 s. */
static bool run_until(struct cw_loop *loop, struct cw_kv_watch *w, const char *key,
		      const char *value)
{
	struct until u = { w, NULL, has_value, key, value, cw_loop_now_ms() + 15000 };
	struct cw_timer *t;

	assert_int_equal(cw_timer_add(loop, 0, 20, check, &u, &t), 0);
	cw_loop_run(loop);
	cw_timer_del(t);
	return has_value(&u);
}

/* The fixture's etcd of now (a test before may have restarted it). */
static pid_t etcd_pid(void)
{
	char path[512];
	pid_t pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/etcd.pid", env("ETCD_DIR"));
	f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d", &pid), 1);
	fclose(f);
	return pid;
}

static void fixture(const char *verb)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "test/etcd/fixture %s %s >/dev/null", verb, env("ETCD_DIR"));
	assert_int_equal(system(cmd), 0);
}

static void test_follow_restart_compact(void **state)
{
	struct cw_kv *kv = client(), *writer = client();
	struct cw_loop *loop = NULL;
	struct cw_kv_watch *w = NULL;
	struct cw_kv_watch_status st;
	struct seen s = { 0 };
	char key[64];

	(void)state;
	cw_kv_delete(writer, "cilium/wt/", true);
	/* 1500 keys: the initial list takes two pages */
	for (int i = 0; i < 1500; i++) {
		snprintf(key, sizeof(key), "cilium/wt/pre/%04d", i);
		assert_int_equal(cw_kv_put(writer, key, "x", 1, 0), 0);
	}
	assert_int_equal(cw_loop_new(&loop), 0);
	assert_int_equal(cw_kv_watch_start(loop, kv, "cilium/wt/", &ops, &s, &w), 0);
	assert_true(run_until(loop, w, "cilium/wt/pre/1499", "x"));
	assert_int_equal(s.synced, 1);
	assert_int_equal(s.puts, 1500);

	/* live events */
	assert_int_equal(cw_kv_put(writer, "cilium/wt/a", "1", 1, 0), 0);
	assert_true(run_until(loop, w, "cilium/wt/a", "1"));
	assert_int_equal(cw_kv_delete(writer, "cilium/wt/pre/0000", false), 0);
	assert_true(run_until(loop, w, "cilium/wt/pre/0000", NULL));
	assert_string_equal(s.last_del, "cilium/wt/pre/0000");

	/* etcd restarts under the stream: it resumes, no relist needed */
	cw_kv_watch_get_status(w, &st);
	uint64_t relists = st.relists;
	fixture("restart");
	assert_int_equal(cw_kv_put(writer, "cilium/wt/a", "2", 1, 0), 0);
	assert_true(run_until(loop, w, "cilium/wt/a", "2"));
	cw_kv_watch_get_status(w, &st);
	assert_int_equal(st.relists, relists);
	assert_true(st.reconnects >= 1);

	/*
	 * While the watcher is cut off (the loop is not running and etcd
	 * restarts), keys change and history is compacted: on resuming, etcd
	 * says its revision is gone and the relist delivers the difference,
	 * deletes included.
	 */
	fixture("restart");
	assert_int_equal(cw_kv_put(writer, "cilium/wt/a", "3", 1, 0), 0);
	assert_int_equal(cw_kv_delete(writer, "cilium/wt/pre/0001", false), 0);
	assert_int_equal(cw_kv_put(writer, "cilium/wt/b", "new", 3, 0), 0);
	fixture("compact");
	int dels = s.dels;
	assert_true(run_until(loop, w, "cilium/wt/b", "new"));
	/*
	 * The relist is paged and applies puts as each page comes; keys it
	 * did not see go only when the last page is in.  "b" sorts onto the
	 * first page, so wait for the end of the listing too.
	 */
	assert_true(run_until(loop, w, "cilium/wt/pre/0001", NULL));
	assert_non_null(cw_kv_watch_lookup(w, "cilium/wt/a"));
	assert_string_equal(cw_kv_watch_lookup(w, "cilium/wt/a")->value, "3");
	assert_null(cw_kv_watch_lookup(w, "cilium/wt/pre/0001"));
	assert_int_equal(s.dels, dels + 1);
	cw_kv_watch_get_status(w, &st);
	assert_int_equal(st.relists, relists + 1);
	assert_int_equal(st.keys, 1500 - 2 + 2);
	assert_int_equal(s.synced, 1);

	cw_kv_delete(writer, "cilium/wt/", true);
	cw_kv_watch_free(w);
	cw_loop_free(loop);
	cw_kv_free(kv);
	cw_kv_free(writer);
}

/* --- requests on the loop ------------------------------------------------------------ */

struct req_run {
	struct cw_loop *loop;
	int rc;
	char why[512], body[1024];
	bool done;
	unsigned int ticks;          /* of a 20 ms timer while the request was out */
};

static void req_cb(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct req_run *p = arg;

	p->rc = rc;
	snprintf(p->why, sizeof(p->why), "%s", why);
	snprintf(p->body, sizeof(p->body), "%.*s", (int)(len < 1000 ? len : 1000), body ? body : "");
	p->done = true;
	cw_loop_stop(p->loop);
}

static void tick(struct cw_loop *loop, void *arg)
{
	struct req_run *p = arg;

	p->ticks++;
	if (p->ticks > 500) /* 10 s: give up */
		cw_loop_stop(loop);
}

static void run_req(struct cw_kv_req *r, struct req_run *p, const char *path, char *body,
		    long timeout_ms)
{
	struct cw_timer *t;

	assert_non_null(body);
	p->done = false;
	p->ticks = 0;
	assert_int_equal(cw_kv_req_start(r, path, body, timeout_ms, req_cb, p), 0);
	assert_int_equal(cw_kv_req_start(r, path, body, timeout_ms, req_cb, p), -EBUSY);
	free(body);
	assert_int_equal(cw_timer_add(p->loop, 20, 20, tick, p, &t), 0);
	cw_loop_run(p->loop);
	cw_timer_del(t);
	assert_true(p->done);
}

/*
 * Requests on the loop: a put and a read answer; a frozen etcd (SIGSTOP)
 * accepts connections and answers nothing, which the request says after
 * its timeout while the loop kept running; a token that expired meanwhile
 * (the fixture's --auth-token-ttl is 2 s) is renewed without the caller
 * seeing it.
 */
static void test_requests_on_the_loop(void **state)
{
	struct cw_kv *kv = client();
	struct req_run p = { 0 };
	struct cw_kv_req *r;
	struct cw_kv_pair got = { 0 };
	pid_t pid;

	(void)state;
	pid = etcd_pid();
	assert_int_equal(cw_loop_new(&p.loop), 0);
	assert_int_equal(cw_kv_req_new(p.loop, kv, &r), 0);

	run_req(r, &p, "/v3/kv/put", cw_kvp_put_req("cilium/wt/req", "v1", 2, 0), 2000);
	assert_int_equal(p.rc, 0);
	assert_string_equal(p.why, "");
	assert_int_equal(cw_kv_get(kv, "cilium/wt/req", &got), 0);
	assert_string_equal(got.value, "v1");
	cw_kv_pair_clear(&got);

	/* idle past the token's TTL: the next request renews it by itself */
	sleep(3);
	run_req(r, &p, "/v3/kv/range", cw_kvp_range_req("cilium/wt/req", NULL, 1, 0, true), 2000);
	assert_int_equal(p.rc, 0);
	assert_non_null(strstr(p.body, "\"count\":\"1\""));

	assert_int_equal(kill(pid, SIGSTOP), 0);
	run_req(r, &p, "/v3/kv/range", cw_kvp_range_req("cilium/wt/req", NULL, 1, 0, true), 1000);
	kill(pid, SIGCONT);
	assert_int_equal(p.rc, -ETIMEDOUT);
	assert_non_null(strstr(p.why, "/v3/kv/range"));
	/* ~1 s of 20 ms ticks: the loop was not held */
	assert_true(p.ticks >= 25);

	run_req(r, &p, "/v3/kv/range", cw_kvp_range_req("cilium/wt/req", NULL, 1, 0, true), 5000);
	assert_int_equal(p.rc, 0);

	/*
	 * A client that has no token yet, against a frozen etcd: the
	 * authentication its first request needs waits on the loop too.
	 */
	{
		struct cw_kv *fresh = client();
		struct cw_kv_req *fr;

		assert_int_equal(cw_kv_req_new(p.loop, fresh, &fr), 0);
		assert_int_equal(kill(pid, SIGSTOP), 0);
		run_req(fr, &p, "/v3/kv/range", cw_kvp_range_req("cilium/wt/req", NULL, 1, 0, true),
			1000);
		kill(pid, SIGCONT);
		assert_int_equal(p.rc, -ETIMEDOUT);
		assert_non_null(strstr(p.why, "/v3/auth/authenticate"));
		assert_true(p.ticks >= 25);
		/* etcd back: the token, then the answer, in one request */
		run_req(fr, &p, "/v3/kv/range", cw_kvp_range_req("cilium/wt/req", NULL, 1, 0, true),
			5000);
		assert_int_equal(p.rc, 0);
		assert_non_null(strstr(p.body, "\"count\":\"1\""));
		cw_kv_req_free(fr);
		cw_kv_free(fresh);
	}
	cw_kv_delete(kv, "cilium/wt/req", false);
	cw_kv_req_free(r);
	cw_loop_free(p.loop);
	cw_kv_free(kv);
}

static void count_ticks(struct cw_loop *loop, void *arg)
{
	unsigned int *ticks = arg;

	if (++*ticks >= 50) /* 1 s of 20 ms ticks */
		cw_loop_stop(loop);
}

/*
 * A watch whose client has no token yet, started while etcd is frozen:
 * the authentication it needs first waits on the loop (the stream says it
 * waits for a token), so the loop keeps ticking; once etcd answers, the
 * token comes and the watch lists and syncs.
 */
static void test_watch_token_on_the_loop(void **state)
{
	struct cw_kv *fresh = client(), *writer = client();
	struct cw_loop *loop = NULL;
	struct cw_kv_watch *w = NULL;
	struct cw_kv_watch_status st;
	struct seen s = { 0 };
	struct cw_timer *t;
	unsigned int ticks = 0;
	int64_t t0, t1;
	pid_t pid;

	(void)state;
	pid = etcd_pid();
	assert_int_equal(cw_kv_put(writer, "cilium/wt/tok", "v1", 2, 0), 0);
	assert_int_equal(cw_loop_new(&loop), 0);

	assert_int_equal(kill(pid, SIGSTOP), 0);
	t0 = cw_loop_now_ms();
	assert_int_equal(cw_kv_watch_start(loop, fresh, "cilium/wt/tok", &ops, &s, &w), 0);
	assert_int_equal(cw_timer_add(loop, 20, 20, count_ticks, &ticks, &t), 0);
	cw_loop_run(loop);
	cw_timer_del(t);
	t1 = cw_loop_now_ms();
	kill(pid, SIGCONT);
	/* the loop stops at the 50th tick: in about their second, so nothing held it */
	assert_true(t1 - t0 < 2000);
	cw_kv_watch_get_status(w, &st);
	assert_false(st.synced);

	assert_true(run_until(loop, w, "cilium/wt/tok", "v1"));
	cw_kv_watch_get_status(w, &st);
	assert_true(st.synced);
	assert_int_equal(s.synced, 1);

	cw_kv_watch_free(w);
	cw_kv_delete(writer, "cilium/wt/tok", false);
	cw_loop_free(loop);
	cw_kv_free(fresh);
	cw_kv_free(writer);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_follow_restart_compact),
		cmocka_unit_test(test_requests_on_the_loop),
		cmocka_unit_test(test_watch_token_on_the_loop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
