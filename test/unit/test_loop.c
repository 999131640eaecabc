// SPDX-License-Identifier: Apache-2.0
/*
 * helper/loop.c: the event loop.  Timers in deadline order, periodic
 * timers, callbacks that delete timers and watches (their own or others'),
 * timers that must not starve I/O, signals through signalfd, and libcurl
 * transfers driven by the loop against a small HTTP server run on the same
 * loop in this process.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "loop.h"

/* Every test runs under this: a loop that never returns fails, not hangs. */
#define WATCHDOG_MS 5000

static void on_watchdog(struct cw_loop *loop, void *arg)
{
	*(bool *)arg = true;
	cw_loop_stop(loop);
}

/* Runs @loop until stopped or WATCHDOG_MS; false when the watchdog fired. */
static bool run_bounded(struct cw_loop *loop, int64_t limit_ms)
{
	struct cw_timer *wd = NULL;
	bool fired = false;

	assert_int_equal(cw_timer_add(loop, limit_ms, 0, on_watchdog, &fired, &wd), 0);
	assert_int_equal(cw_loop_run(loop), 0);
	cw_timer_del(wd);
	return !fired;
}

static void on_stop(struct cw_loop *loop, void *arg)
{
	(void)arg;
	cw_loop_stop(loop);
}

/* --- timers ----------------------------------------------------------------- */

struct order {
	int fired[16];
	size_t n;
	size_t stop_after;
};

struct tag {
	struct order *o;
	int id;
};

static void on_tag(struct cw_loop *loop, void *arg)
{
	struct tag *t = arg;

	assert_true(t->o->n < 16);
	t->o->fired[t->o->n++] = t->id;
	if (t->o->n == t->o->stop_after)
		cw_loop_stop(loop);
}

static void test_timers_fire_in_deadline_order(void **state)
{
	static const int delays[] = { 60, 20, 40, 0, 20, 80, 1 };
	static const int want[] = { 3, 6, 1, 4, 2, 0, 5 };
	struct cw_loop *loop = NULL;
	struct cw_timer *t[7] = { 0 }, *never = NULL;
	struct order o = { .stop_after = 7 };
	struct tag tags[7];
	int64_t t0;

	(void)state;
	assert_int_equal(cw_loop_new(&loop), 0);
	t0 = cw_loop_now_ms();
	for (int i = 0; i < 7; i++) {
		tags[i] = (struct tag){ &o, i };
		assert_int_equal(cw_timer_add(loop, delays[i], 0, on_tag, &tags[i], &t[i]), 0);
		assert_true(cw_timer_armed(t[i]));
	}
	/* a negative delay: created disarmed */
	assert_int_equal(cw_timer_add(loop, -1, 0, on_tag, &tags[0], &never), 0);
	assert_false(cw_timer_armed(never));

	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(o.n, 7);
	/* by deadline; equal deadlines in the order they were added (1 before 4) */
	for (int i = 0; i < 7; i++)
		if (o.fired[i] != want[i])
			fail_msg("timer #%d fired %d, expected %d", i, o.fired[i], want[i]);
	assert_true(cw_loop_now_ms() - t0 >= 80);
	/* one-shot timers are disarmed, still allocated, and can be re-armed */
	for (int i = 0; i < 7; i++)
		assert_false(cw_timer_armed(t[i]));
	o.n = 0;
	o.stop_after = 2;
	cw_timer_arm(t[2], 10);
	cw_timer_arm(t[5], -5); /* negative: now */
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(o.n, 2);
	assert_int_equal(o.fired[0], 5);
	assert_int_equal(o.fired[1], 2);

	/* a disarmed timer does not fire */
	o.n = 0;
	o.stop_after = 99;
	cw_timer_arm(t[0], 5);
	cw_timer_disarm(t[0]);
	cw_timer_disarm(t[0]);
	assert_false(run_bounded(loop, 50));
	assert_int_equal(o.n, 0);

	for (int i = 0; i < 7; i++)
		cw_timer_del(t[i]);
	cw_timer_del(never);
	cw_timer_del(NULL);
	cw_loop_free(loop);
	cw_loop_free(NULL);
}

struct periodic {
	int count;
	int stop_at;
	int64_t first, last;
};

static void on_periodic(struct cw_loop *loop, void *arg)
{
	struct periodic *p = arg;

	if (p->count++ == 0)
		p->first = cw_loop_now_ms();
	p->last = cw_loop_now_ms();
	if (p->count == p->stop_at)
		cw_loop_stop(loop);
}

static void test_periodic_timer(void **state)
{
	struct cw_loop *loop = NULL;
	struct cw_timer *t = NULL;
	struct periodic p = { .stop_at = 5 };

	(void)state;
	assert_int_equal(cw_loop_new(&loop), 0);
	assert_int_equal(cw_timer_add(loop, 0, 10, on_periodic, &p, &t), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(p.count, 5);
	/* four periods of 10 ms between the first and the fifth firing */
	assert_true(p.last - p.first >= 40);
	assert_true(cw_timer_armed(t));

	/* it goes on when the loop runs again, and stops when disarmed */
	p.stop_at = 8;
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(p.count, 8);
	cw_timer_disarm(t);
	assert_false(cw_timer_armed(t));
	assert_false(run_bounded(loop, 40));
	assert_int_equal(p.count, 8);
	cw_timer_del(t);
	cw_loop_free(loop);
}

struct killer {
	struct cw_timer **victim;
	struct cw_timer **self;
	int fired;
};

static void on_kill_other(struct cw_loop *loop, void *arg)
{
	struct killer *k = arg;

	(void)loop;
	k->fired++;
	cw_timer_del(*k->victim);
	*k->victim = NULL;
}

static void on_kill_self(struct cw_loop *loop, void *arg)
{
	struct killer *k = arg;

	(void)loop;
	k->fired++;
	cw_timer_del(*k->self);
	*k->self = NULL;
}

static void on_count(struct cw_loop *loop, void *arg)
{
	(void)loop;
	(*(int *)arg)++;
}

static void test_timer_del_from_callback(void **state)
{
	struct cw_loop *loop = NULL;
	struct cw_timer *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *stop = NULL;
	struct killer ka = { .victim = &b }, kc = { .self = &c }, ke = { .victim = &d };
	int b_fired = 0, d_fired = 0;

	(void)state;
	assert_int_equal(cw_loop_new(&loop), 0);
	/* a and b due in the same turn: a deletes b, which was next in line */
	assert_int_equal(cw_timer_add(loop, 10, 0, on_kill_other, &ka, &a), 0);
	assert_int_equal(cw_timer_add(loop, 10, 0, on_count, &b_fired, &b), 0);
	/* c deletes itself; e (periodic) deletes d, due later */
	assert_int_equal(cw_timer_add(loop, 5, 0, on_kill_self, &kc, &c), 0);
	assert_int_equal(cw_timer_add(loop, 50, 0, on_count, &d_fired, &d), 0);
	assert_int_equal(cw_timer_add(loop, 20, 1000, on_kill_other, &ke, &e), 0);
	assert_int_equal(cw_timer_add(loop, 80, 0, on_stop, NULL, &stop), 0);

	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(ka.fired, 1);
	assert_int_equal(kc.fired, 1);
	assert_int_equal(ke.fired, 1);
	assert_int_equal(b_fired, 0);
	assert_int_equal(d_fired, 0);
	assert_null(b);
	assert_null(c);
	assert_null(d);
	cw_timer_del(a);
	cw_timer_del(e);
	cw_timer_del(stop);
	cw_loop_free(loop);
}

/* --- timers against I/O ----------------------------------------------------- */

struct busy {
	struct cw_timer *t;
	int wfd;
	long fired;
	long fired_at_io;
	bool io_seen;
};

/* Re-arms itself for "now", forever; after a few turns makes the pipe readable. */
static void on_busy(struct cw_loop *loop, void *arg)
{
	struct busy *b = arg;

	b->fired++;
	if (b->fired == 5)
		assert_int_equal(write(b->wfd, "x", 1), 1);
	if (b->fired > 100000) {
		cw_loop_stop(loop); /* starved: give up */
		return;
	}
	cw_timer_arm(b->t, 0);
}

static void on_busy_io(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	struct busy *b = arg;
	char c;

	assert_true(events & EPOLLIN);
	assert_int_equal(read(fd, &c, 1), 1);
	b->io_seen = true;
	b->fired_at_io = b->fired;
	cw_loop_stop(loop);
}

static void test_zero_timer_does_not_starve_io(void **state)
{
	struct cw_loop *loop = NULL;
	struct busy b = { 0 };
	struct cw_io *io = NULL;
	int p[2];

	(void)state;
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	b.wfd = p[1];
	assert_int_equal(cw_loop_new(&loop), 0);
	assert_int_equal(cw_timer_add(loop, 0, 0, on_busy, &b, &b.t), 0);
	assert_int_equal(cw_io_add(loop, p[0], EPOLLIN, on_busy_io, &b, &io), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_true(b.io_seen);
	/* the byte written in the 5th callback is read within a turn or two */
	assert_true(b.fired_at_io >= 5 && b.fired_at_io <= 7);
	cw_io_del(io);
	cw_timer_del(b.t);
	cw_loop_free(loop);
	close(p[0]);
	close(p[1]);
}

/* --- file descriptors ------------------------------------------------------- */

struct pipe_io {
	struct cw_io *io;
	char got[64];
	size_t len;
	int calls;
	uint32_t events;
	bool del_self;
	bool keep_running;    /* do not stop the loop */
	struct cw_io **other; /* deleted from this callback */
};

static void on_pipe(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	struct pipe_io *p = arg;
	ssize_t n;

	p->calls++;
	p->events = events;
	if (events & EPOLLIN) {
		n = read(fd, p->got + p->len, sizeof(p->got) - 1 - p->len);
		if (n > 0)
			p->len += (size_t)n;
	}
	if (p->other) {
		cw_io_del(*p->other);
		*p->other = NULL;
	}
	if (p->del_self) {
		cw_io_del(p->io);
		cw_io_del(p->io); /* twice: harmless */
		p->io = NULL;
	}
	if (!p->keep_running)
		cw_loop_stop(loop);
}

static void test_io_pipe(void **state)
{
	struct cw_loop *loop = NULL;
	struct pipe_io r = { 0 }, w = { 0 };
	int p[2];

	(void)state;
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(cw_loop_new(&loop), 0);
	assert_int_equal(cw_io_add(loop, p[0], EPOLLIN, on_pipe, &r, &r.io), 0);
	/* the same fd twice is refused, and leaves the first watch working */
	assert_int_equal(cw_io_add(loop, p[0], EPOLLIN, on_pipe, &r, NULL), -EEXIST);
	assert_int_equal(cw_io_add(loop, -1, EPOLLIN, on_pipe, &r, NULL), -EBADF);

	/* nothing to read: nothing dispatched */
	assert_false(run_bounded(loop, 30));
	assert_int_equal(r.calls, 0);

	assert_int_equal(write(p[1], "hello", 5), 5);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(r.calls, 1);
	assert_true(r.events & EPOLLIN);
	assert_string_equal(r.got, "hello");

	/* a writable pipe, watched for EPOLLOUT, then switched to EPOLLIN */
	assert_int_equal(cw_io_add(loop, p[1], EPOLLOUT, on_pipe, &w, &w.io), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(w.calls, 1);
	assert_true(w.events & EPOLLOUT);
	assert_int_equal(cw_io_modify(w.io, EPOLLIN), 0);
	cw_io_del(w.io);

	/* once deleted, a readable fd is not dispatched */
	cw_io_del(r.io);
	assert_int_equal(write(p[1], "again", 5), 5);
	assert_false(run_bounded(loop, 30));
	assert_int_equal(r.calls, 1);
	/* and the fd can be watched again */
	assert_int_equal(cw_io_add(loop, p[0], EPOLLIN, on_pipe, &r, &r.io), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(r.calls, 2);
	assert_string_equal(r.got, "helloagain");
	cw_io_del(r.io);
	cw_io_del(NULL);
	cw_loop_free(loop);
	close(p[0]);
	close(p[1]);
}

static void test_io_del_in_callback(void **state)
{
	struct cw_loop *loop = NULL;
	struct pipe_io a = { .del_self = true }, b = { 0 }, c = { 0 };
	int p[2], q[2];

	(void)state;
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(pipe2(q, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(cw_loop_new(&loop), 0);

	/* deleting itself: called once, never again, though readable again */
	assert_int_equal(cw_io_add(loop, p[0], EPOLLIN, on_pipe, &a, &a.io), 0);
	assert_int_equal(write(p[1], "ab", 2), 2);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(a.calls, 1);
	assert_null(a.io);
	assert_string_equal(a.got, "ab");
	assert_int_equal(write(p[1], "c", 1), 1);
	assert_false(run_bounded(loop, 30));
	assert_int_equal(a.calls, 1);
	/* the fd is not closed by the loop, and its data is still there */
	assert_int_equal(read(p[0], a.got, 1), 1);
	assert_int_equal(a.got[0], 'c');

	/*
	 * Two watches ready in the same epoll batch, each deleting the other:
	 * whichever runs first, the other is not called (nor freed under it).
	 */
	b.other = &c.io;
	c.other = &b.io;
	/* the rest of the batch must be dispatched: the loop is not stopped */
	b.keep_running = c.keep_running = true;
	assert_int_equal(cw_io_add(loop, p[0], EPOLLIN, on_pipe, &b, &b.io), 0);
	assert_int_equal(cw_io_add(loop, q[0], EPOLLIN, on_pipe, &c, &c.io), 0);
	/* both readable before the loop looks */
	assert_int_equal(write(p[1], "e", 1), 1);
	assert_int_equal(write(q[1], "d", 1), 1);
	assert_false(run_bounded(loop, 50));
	assert_int_equal(b.calls + c.calls, 1);
	cw_io_del(b.io);
	cw_io_del(c.io);
	cw_loop_free(loop);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

/* --- signals ---------------------------------------------------------------- */

struct sig_seen {
	int usr1, usr2;
};

static void on_signal(struct cw_loop *loop, int signo, void *arg)
{
	struct sig_seen *s = arg;

	if (signo == SIGUSR1)
		s->usr1++;
	else if (signo == SIGUSR2)
		s->usr2++;
	cw_loop_stop(loop);
}

static void test_signals(void **state)
{
	struct cw_loop *loop = NULL;
	struct sig_seen s1 = { 0 }, s2 = { 0 };
	bool ok1, ok2, ok3;

	(void)state;
	assert_int_equal(cw_loop_new(&loop), 0);
	assert_int_equal(cw_loop_signal(loop, SIGUSR1, on_signal, &s1), 0);
	assert_int_equal(cw_loop_signal(loop, SIGUSR2, on_signal, &s2), 0);

	/* raise(): blocked, so it waits in the signalfd instead of killing us */
	assert_int_equal(raise(SIGUSR1), 0);
	ok1 = run_bounded(loop, WATCHDOG_MS);
	/* kill(getpid()): the same, through the process */
	assert_int_equal(kill(getpid(), SIGUSR2), 0);
	ok2 = run_bounded(loop, WATCHDOG_MS);
	assert_int_equal(kill(getpid(), SIGUSR1), 0);
	ok3 = run_bounded(loop, WATCHDOG_MS);

	/* not delivered: drop what is pending before the loop unblocks it */
	if (!(ok1 && ok2 && ok3)) {
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_IGN);
	}
	cw_loop_free(loop);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
	assert_true(ok1 && ok2 && ok3);
	/* each signal went to its own handler only */
	assert_int_equal(s1.usr1, 2);
	assert_int_equal(s1.usr2, 0);
	assert_int_equal(s2.usr2, 1);
	assert_int_equal(s2.usr1, 0);
}

/* --- stop ------------------------------------------------------------------- */

static void on_stop_count(struct cw_loop *loop, void *arg)
{
	(*(int *)arg)++;
	cw_loop_stop(loop);
}

static void test_loop_stop(void **state)
{
	struct cw_loop *loop = NULL;
	struct cw_timer *t = NULL, *u = NULL;
	int n = 0, m = 0;
	int64_t t0;

	(void)state;
	assert_int_equal(cw_loop_new(&loop), 0);
	/* the loop returns 0 right after the callback that stopped it */
	assert_int_equal(cw_timer_add(loop, 0, 5, on_stop_count, &n, &t), 0);
	t0 = cw_loop_now_ms();
	assert_int_equal(cw_loop_run(loop), 0);
	assert_int_equal(n, 1);
	assert_true(cw_loop_now_ms() - t0 < 1000);
	/* and runs again when asked */
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(n, 2);
	cw_timer_del(t);

	/* a stop from a later timer, with an earlier periodic one running */
	n = 0;
	assert_int_equal(cw_timer_add(loop, 0, 2, on_count, &n, &t), 0);
	assert_int_equal(cw_timer_add(loop, 30, 0, on_stop_count, &m, &u), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(m, 1);
	assert_true(n >= 5);
	cw_timer_del(t);
	cw_timer_del(u);
	cw_loop_free(loop);
}

/* --- backoff ---------------------------------------------------------------- */

static void test_backoff(void **state)
{
	int64_t prev_max = 0;

	(void)state;
	/* attempt 0: exactly the base */
	for (int i = 0; i < 100; i++)
		assert_int_equal(cw_backoff_ms(0, 100, 30000), 100);
	for (unsigned int a = 1; a <= 40; a++) {
		int64_t span = 100, lo = INT64_MAX, hi = 0;

		for (unsigned int i = 0; i < a && span < 30000; i++)
			span *= 2;
		if (span > 30000)
			span = 30000;
		for (int i = 0; i < 2000; i++) {
			int64_t d = cw_backoff_ms(a, 100, 30000);

			if (d < 100 || d >= span || d > 30000)
				fail_msg("attempt %u: %lld outside [100, %lld)", a, (long long)d,
					 (long long)span);
			lo = d < lo ? d : lo;
			hi = d > hi ? d : hi;
		}
		/* jittered over the whole span, not a constant */
		assert_true(lo < 100 + (span - 100) / 4);
		assert_true(hi > 100 + (span - 100) * 3 / 4);
		/* it grows until the cap */
		if (span < 30000)
			assert_true(hi > prev_max);
		prev_max = hi;
	}
	/* very many attempts: still capped */
	for (int i = 0; i < 1000; i++) {
		int64_t d = cw_backoff_ms(UINT32_MAX, 100, 30000);

		assert_true(d >= 100 && d < 30000);
	}
	/* base equal to the cap: the base */
	assert_int_equal(cw_backoff_ms(7, 500, 500), 500);
}

/* --- libcurl ---------------------------------------------------------------- */

/* A one-shot HTTP/1.1 server on the loop: reads a request, then acts. */
enum srv_mode { SRV_RESPOND, SRV_HANG };

struct srv {
	struct cw_loop *loop;
	int lfd, cfd;
	struct cw_io *lio, *cio;
	enum srv_mode mode;
	char req[4096];
	size_t req_len;
	int requests;
	int64_t request_ms, closed_ms;
	bool peer_closed;
	CURL *abort_easy; /* SRV_HANG: removed from the loop once the request is in */
};

static const char srv_body[] = "{\"header\":{\"revision\":\"42\"},\"count\":\"0\"}";

static void srv_close_conn(struct srv *s)
{
	cw_io_del(s->cio);
	s->cio = NULL;
	if (s->cfd >= 0)
		close(s->cfd);
	s->cfd = -1;
}

static void on_srv_conn(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	struct srv *s = arg;
	ssize_t n;

	(void)events;
	n = read(fd, s->req + s->req_len, sizeof(s->req) - 1 - s->req_len);
	if (n == 0 || (n < 0 && errno != EAGAIN)) {
		s->peer_closed = true;
		s->closed_ms = cw_loop_now_ms();
		srv_close_conn(s);
		if (s->mode == SRV_HANG)
			cw_loop_stop(loop);
		return;
	}
	if (n < 0)
		return;
	s->req_len += (size_t)n;
	s->req[s->req_len] = '\0';
	if (!strstr(s->req, "\r\n\r\n"))
		return;
	s->requests++;
	s->request_ms = cw_loop_now_ms();
	if (s->mode == SRV_RESPOND) {
		char resp[512];
		int len = snprintf(resp, sizeof(resp),
				   "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
				   strlen(srv_body), srv_body);

		assert_int_equal(write(fd, resp, (size_t)len), len);
		srv_close_conn(s);
	} else {
		/* abort the transfer while it waits for the answer */
		cw_loop_curl_remove(loop, s->abort_easy);
	}
}

static void on_srv_accept(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	struct srv *s = arg;
	int c;

	(void)events;
	c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (c < 0)
		return;
	assert_int_equal(s->cfd, -1); /* one connection at a time */
	s->cfd = c;
	s->req_len = 0;
	assert_int_equal(cw_io_add(loop, c, EPOLLIN, on_srv_conn, s, &s->cio), 0);
}

static int srv_start(struct cw_loop *loop, struct srv *s, enum srv_mode mode)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);

	memset(s, 0, sizeof(*s));
	s->loop = loop;
	s->mode = mode;
	s->cfd = -1;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
	assert_int_equal(cw_io_add(loop, s->lfd, EPOLLIN, on_srv_accept, s, &s->lio), 0);
	return ntohs(a.sin_port);
}

static void srv_stop(struct srv *s)
{
	srv_close_conn(s);
	cw_io_del(s->lio);
	close(s->lfd);
}

struct xfer {
	char body[512];
	size_t len;
	int done;
	CURLcode result;
	CURL *easy;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;

	if (len > sizeof(x->body) - 1 - x->len)
		return 0;
	memcpy(x->body + x->len, p, len);
	x->len += len;
	x->body[x->len] = '\0';
	return len;
}

static void on_done(struct cw_loop *loop, CURL *easy, CURLcode result, void *arg)
{
	struct xfer *x = arg;

	x->done++;
	x->result = result;
	x->easy = easy;
	cw_loop_stop(loop);
}

static void set_port(CURL *e, int port)
{
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v3/kv/range", port);
	assert_int_equal(curl_easy_setopt(e, CURLOPT_URL, url), CURLE_OK);
}

static CURL *easy_for(int port, struct xfer *x)
{
	CURL *e = curl_easy_init();

	assert_non_null(e);
	set_port(e, port);
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 4000L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	return e;
}

static void test_curl_transfer(void **state)
{
	struct cw_loop *loop = NULL;
	struct srv s;
	struct xfer x = { 0 };
	CURL *e;
	long code = 0;
	int port;

	(void)state;
	assert_int_equal(cw_loop_new(&loop), 0);
	port = srv_start(loop, &s, SRV_RESPOND);
	e = easy_for(port, &x);
	assert_int_equal(cw_loop_curl_add(loop, e, on_done, &x), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(x.done, 1);
	assert_int_equal(x.result, CURLE_OK);
	assert_ptr_equal(x.easy, e);
	assert_string_equal(x.body, srv_body);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	assert_int_equal(code, 200);
	assert_int_equal(s.requests, 1);
	assert_non_null(strstr(s.req, "GET /v3/kv/range HTTP/1.1\r\n"));

	/* the handle is the caller's again: it can be re-added for a second request */
	x.len = 0;
	x.body[0] = '\0';
	assert_int_equal(cw_loop_curl_add(loop, e, on_done, &x), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(x.done, 2);
	assert_int_equal(x.result, CURLE_OK);
	assert_string_equal(x.body, srv_body);
	assert_int_equal(s.requests, 2);

	/* done is called once: nothing more happens afterwards */
	assert_false(run_bounded(loop, 50));
	assert_int_equal(x.done, 2);
	curl_easy_cleanup(e);
	srv_stop(&s);
	cw_loop_free(loop);
}

static void test_curl_connect_refused(void **state)
{
	struct cw_loop *loop = NULL;
	struct xfer x = { 0 };
	struct srv s;
	CURL *e;
	int port;

	(void)state;
	assert_int_equal(cw_loop_new(&loop), 0);
	/* a port that was just listening and is now closed */
	port = srv_start(loop, &s, SRV_RESPOND);
	srv_stop(&s);
	e = easy_for(port, &x);
	assert_int_equal(cw_loop_curl_add(loop, e, on_done, &x), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(x.done, 1);
	assert_int_equal(x.result, CURLE_COULDNT_CONNECT);
	curl_easy_cleanup(e);
	cw_loop_free(loop);
}

static void test_curl_remove_aborts(void **state)
{
	struct cw_loop *loop = NULL;
	struct xfer x = { 0 };
	struct srv s;
	CURL *e;
	int port;

	(void)state;
	assert_int_equal(cw_loop_new(&loop), 0);
	port = srv_start(loop, &s, SRV_HANG);
	e = easy_for(port, &x);
	s.abort_easy = e;
	assert_int_equal(cw_loop_curl_add(loop, e, on_done, &x), 0);
	/* the server removes the transfer once the request is in, then sees it close */
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(s.requests, 1);
	assert_true(s.peer_closed);
	/* closed by the abort, not by curl's own 4 s timeout */
	assert_true(s.closed_ms - s.request_ms < 1000);
	assert_int_equal(x.done, 0);
	/* and done is never called later */
	assert_false(run_bounded(loop, 100));
	assert_int_equal(x.done, 0);

	/* removing again, or what was never added, or NULL: harmless */
	cw_loop_curl_remove(loop, e);
	cw_loop_curl_remove(loop, NULL);

	/* the handle is the caller's again, and works for a new transfer */
	srv_stop(&s);
	port = srv_start(loop, &s, SRV_RESPOND);
	set_port(e, port);
	assert_int_equal(cw_loop_curl_add(loop, e, on_done, &x), 0);
	assert_true(run_bounded(loop, WATCHDOG_MS));
	assert_int_equal(x.done, 1);
	assert_int_equal(x.result, CURLE_OK);
	assert_string_equal(x.body, srv_body);
	curl_easy_cleanup(e);
	srv_stop(&s);
	cw_loop_free(loop);
}

static void test_curl_freed_with_loop(void **state)
{
	struct cw_loop *loop = NULL;
	struct xfer x = { 0 };
	struct srv s;
	CURL *e;
	int port;

	(void)state;
	/* a transfer still running when the loop is freed: no callback, no leak */
	assert_int_equal(cw_loop_new(&loop), 0);
	port = srv_start(loop, &s, SRV_HANG);
	e = easy_for(port, &x);
	s.abort_easy = NULL;
	assert_int_equal(cw_loop_curl_add(loop, e, on_done, &x), 0);
	assert_false(run_bounded(loop, 100));
	assert_int_equal(s.requests, 1);
	srv_stop(&s);
	cw_loop_free(loop);
	assert_int_equal(x.done, 0);
	curl_easy_cleanup(e);
}

static int setup(void **state)
{
	(void)state;
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	curl_global_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timers_fire_in_deadline_order),
		cmocka_unit_test(test_periodic_timer),
		cmocka_unit_test(test_timer_del_from_callback),
		cmocka_unit_test(test_zero_timer_does_not_starve_io),
		cmocka_unit_test(test_io_pipe),
		cmocka_unit_test(test_io_del_in_callback),
		cmocka_unit_test(test_signals),
		cmocka_unit_test(test_loop_stop),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_curl_transfer),
		cmocka_unit_test(test_curl_connect_refused),
		cmocka_unit_test(test_curl_remove_aborts),
		cmocka_unit_test(test_curl_freed_with_loop),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
