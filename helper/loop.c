// SPDX-License-Identifier: Apache-2.0
/*
 * The event loop.  One epoll set; timers kept in a list ordered by
 * deadline, the nearest one giving epoll_wait its timeout (a helper has
 * tens of timers, not thousands, so a list beats a heap on clarity);
 * signals through a signalfd; libcurl's multi handle driven by its
 * socket and timer callbacks (curl_multi_socket_action), never by
 * curl_multi_perform in a polling loop.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <causeway/log.h>
#include "loop.h"

struct cw_io {
	struct cw_loop *loop;
	int fd;
	uint32_t events;
	cw_io_fn fn;
	void *arg;
	bool dead;          /* deleted while the dispatch still holds it */
	struct cw_io *next_dead;
};

struct cw_timer {
	struct cw_loop *loop;
	int64_t deadline;   /* ms, CLOCK_MONOTONIC; valid when armed */
	int64_t period;
	bool armed;
	uint64_t turn;      /* loop turn in which it was last armed */
	cw_timer_fn fn;
	void *arg;
	struct cw_timer *next; /* in loop->timers, by deadline, when armed */
};

struct sig_handler {
	int signo;
	cw_signal_fn fn;
	void *arg;
};

struct curl_xfer {
	CURL *easy;
	cw_curl_done_fn fn;
	void *arg;
	struct curl_xfer *next;
};

struct cw_loop {
	int epfd;
	bool stop;
	uint64_t turn;
	struct cw_timer *timers;    /* armed timers, nearest first */
	struct cw_io *dead_ios;     /* freed after the current dispatch */

	int sigfd;
	struct cw_io *sig_io;
	sigset_t sigmask;
	struct sig_handler sigs[16];
	size_t n_sigs;

	CURLM *multi;
	struct cw_timer *curl_timer;
	struct curl_xfer *xfers;
};

int64_t cw_loop_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cw_backoff_ms(unsigned int attempt, int64_t base_ms, int64_t cap_ms)
{
	int64_t span = base_ms;
	uint32_t r = 0;

	for (unsigned int i = 0; i < attempt && span < cap_ms; i++)
		span *= 2;
	if (span > cap_ms)
		span = cap_ms;
	if (span <= base_ms)
		return base_ms;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)cw_loop_now_ms() * 2654435761u;
	return base_ms + (int64_t)(r % (uint64_t)(span - base_ms));
}

/* --- file descriptors ------------------------------------------------- */

int cw_io_add(struct cw_loop *loop, int fd, uint32_t events, cw_io_fn fn, void *arg,
	      struct cw_io **out)
{
	struct cw_io *io = calloc(1, sizeof(*io));
	struct epoll_event ev = { .events = events };

	if (!io)
		return -ENOMEM;
	io->loop = loop;
	io->fd = fd;
	io->events = events;
	io->fn = fn;
	io->arg = arg;
	ev.data.ptr = io;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;

		free(io);
		return err;
	}
	if (out)
		*out = io;
	return 0;
}

int cw_io_modify(struct cw_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };

	if (epoll_ctl(io->loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
		return -errno;
	io->events = events;
	return 0;
}

void cw_io_del(struct cw_io *io)
{
	if (!io || io->dead)
		return;
	/* The fd may already be closed (curl closes before telling us). */
	epoll_ctl(io->loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	/*
	 * An epoll batch may still hold a pointer to this io, so it is only
	 * marked here and freed once the batch has been dispatched.
	 */
	io->dead = true;
	io->next_dead = io->loop->dead_ios;
	io->loop->dead_ios = io;
}

static void reap_ios(struct cw_loop *loop)
{
	while (loop->dead_ios) {
		struct cw_io *io = loop->dead_ios;

		loop->dead_ios = io->next_dead;
		free(io);
	}
}

/* --- timers ----------------------------------------------------------- */

static void timer_unlink(struct cw_timer *t)
{
	struct cw_timer **p;

	if (!t->armed)
		return;
	for (p = &t->loop->timers; *p; p = &(*p)->next)
		if (*p == t) {
			*p = t->next;
			break;
		}
	t->armed = false;
	t->next = NULL;
}

static void timer_link(struct cw_timer *t, int64_t deadline)
{
	struct cw_timer **p;

	timer_unlink(t);
	t->deadline = deadline;
	t->turn = t->loop->turn;
	for (p = &t->loop->timers; *p && (*p)->deadline <= deadline; p = &(*p)->next)
		;
	t->next = *p;
	*p = t;
	t->armed = true;
}

int cw_timer_add(struct cw_loop *loop, int64_t delay_ms, int64_t period_ms, cw_timer_fn fn,
		 void *arg, struct cw_timer **out)
{
	struct cw_timer *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->loop = loop;
	t->period = period_ms;
	t->fn = fn;
	t->arg = arg;
	if (delay_ms >= 0)
		timer_link(t, cw_loop_now_ms() + delay_ms);
	*out = t;
	return 0;
}

void cw_timer_arm(struct cw_timer *t, int64_t delay_ms)
{
	timer_link(t, cw_loop_now_ms() + (delay_ms < 0 ? 0 : delay_ms));
}

void cw_timer_disarm(struct cw_timer *t)
{
	if (t)
		timer_unlink(t);
}

bool cw_timer_armed(const struct cw_timer *t)
{
	return t && t->armed;
}

void cw_timer_del(struct cw_timer *t)
{
	if (!t)
		return;
	timer_unlink(t);
	free(t);
}

static void run_timers(struct cw_loop *loop)
{
	int64_t now = cw_loop_now_ms();

	/*
	 * Due timers run once per turn: one (re-)armed during this turn, even
	 * for "now", waits for the next turn, after I/O.  The list is rescanned
	 * after every callback because a callback may arm or free any timer.
	 */
	loop->turn++;
	for (;;) {
		struct cw_timer *t;

		for (t = loop->timers; t && t->deadline <= now; t = t->next)
			if (t->turn != loop->turn)
				break;
		if (!t || t->deadline > now || loop->stop)
			return;
		timer_unlink(t);
		if (t->period > 0)
			timer_link(t, now + t->period);
		t->fn(loop, t->arg);
	}
}

/* --- signals ---------------------------------------------------------- */

static void on_signalfd(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	struct signalfd_siginfo si;

	(void)events;
	(void)arg;
	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		for (size_t i = 0; i < loop->n_sigs; i++)
			if (loop->sigs[i].signo == (int)si.ssi_signo)
				loop->sigs[i].fn(loop, (int)si.ssi_signo, loop->sigs[i].arg);
}

int cw_loop_signal(struct cw_loop *loop, int signo, cw_signal_fn fn, void *arg)
{
	int err;

	if (loop->n_sigs == sizeof(loop->sigs) / sizeof(loop->sigs[0]))
		return -ENOSPC;
	sigaddset(&loop->sigmask, signo);
	if (sigprocmask(SIG_BLOCK, &loop->sigmask, NULL) < 0)
		return -errno;
	if (signalfd(loop->sigfd, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC) < 0)
		return -errno;
	if (!loop->sig_io) {
		err = cw_io_add(loop, loop->sigfd, EPOLLIN, on_signalfd, NULL, &loop->sig_io);
		if (err)
			return err;
	}
	loop->sigs[loop->n_sigs++] = (struct sig_handler){ signo, fn, arg };
	return 0;
}

/* --- libcurl multi ---------------------------------------------------- */

static void check_multi_info(struct cw_loop *loop)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(loop->multi, &left))) {
		struct curl_xfer **p, *x = NULL;
		CURL *easy = msg->easy_handle;
		CURLcode res = msg->data.result;

		if (msg->msg != CURLMSG_DONE)
			continue;
		for (p = &loop->xfers; *p; p = &(*p)->next)
			if ((*p)->easy == easy) {
				x = *p;
				*p = x->next;
				break;
			}
		curl_multi_remove_handle(loop->multi, easy);
		if (x) {
			cw_curl_done_fn fn = x->fn;
			void *arg = x->arg;

			free(x);
			fn(loop, easy, res, arg);
		}
	}
}

static void on_curl_io(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	int flags = 0, running;

	(void)arg;
	if (events & EPOLLIN)
		flags |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		flags |= CURL_CSELECT_OUT;
	if (events & (EPOLLERR | EPOLLHUP))
		flags |= CURL_CSELECT_ERR;
	curl_multi_socket_action(loop->multi, fd, flags, &running);
	check_multi_info(loop);
}

static void on_curl_timer(struct cw_loop *loop, void *arg)
{
	int running;

	(void)arg;
	curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(loop);
}

static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct cw_loop *loop = userp;
	struct cw_io *io = socketp;
	uint32_t events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		cw_io_del(io);
		curl_multi_assign(loop->multi, s, NULL);
		return 0;
	}
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= EPOLLOUT;
	if (io)
		return cw_io_modify(io, events) ? -1 : 0;
	if (cw_io_add(loop, s, events, on_curl_io, NULL, &io))
		return -1;
	curl_multi_assign(loop->multi, s, io);
	return 0;
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct cw_loop *loop = userp;

	(void)multi;
	if (timeout_ms < 0)
		cw_timer_disarm(loop->curl_timer);
	else
		cw_timer_arm(loop->curl_timer, timeout_ms);
	return 0;
}

int cw_loop_curl_add(struct cw_loop *loop, CURL *easy, cw_curl_done_fn fn, void *arg)
{
	struct curl_xfer *x = calloc(1, sizeof(*x));

	if (!x)
		return -ENOMEM;
	x->easy = easy;
	x->fn = fn;
	x->arg = arg;
	if (curl_multi_add_handle(loop->multi, easy) != CURLM_OK) {
		free(x);
		return -EINVAL;
	}
	x->next = loop->xfers;
	loop->xfers = x;
	return 0;
}

void cw_loop_curl_remove(struct cw_loop *loop, CURL *easy)
{
	struct curl_xfer **p;

	if (!easy)
		return;
	for (p = &loop->xfers; *p; p = &(*p)->next)
		if ((*p)->easy == easy) {
			struct curl_xfer *x = *p;

			*p = x->next;
			free(x);
			curl_multi_remove_handle(loop->multi, easy);
			return;
		}
}

/* --- the loop --------------------------------------------------------- */

int cw_loop_new(struct cw_loop **out)
{
	struct cw_loop *loop = calloc(1, sizeof(*loop));
	int err;

	if (!loop)
		return -ENOMEM;
	loop->sigfd = -1;
	sigemptyset(&loop->sigmask);
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		err = -errno;
		goto fail;
	}
	loop->sigfd = signalfd(-1, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (loop->sigfd < 0) {
		err = -errno;
		goto fail;
	}
	err = cw_timer_add(loop, -1, 0, on_curl_timer, NULL, &loop->curl_timer);
	if (err)
		goto fail;
	loop->multi = curl_multi_init();
	if (!loop->multi) {
		err = -ENOMEM;
		goto fail;
	}
	curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
	curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
	curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
	curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
	*out = loop;
	return 0;
fail:
	cw_loop_free(loop);
	return err;
}

void cw_loop_free(struct cw_loop *loop)
{
	if (!loop)
		return;
	while (loop->xfers) {
		struct curl_xfer *x = loop->xfers;

		loop->xfers = x->next;
		curl_multi_remove_handle(loop->multi, x->easy);
		free(x);
	}
	if (loop->multi)
		curl_multi_cleanup(loop->multi);
	cw_io_del(loop->sig_io);
	reap_ios(loop);
	cw_timer_del(loop->curl_timer);
	while (loop->timers)
		timer_unlink(loop->timers); /* owners free their own timers */
	if (loop->n_sigs)
		sigprocmask(SIG_UNBLOCK, &loop->sigmask, NULL);
	if (loop->sigfd >= 0)
		close(loop->sigfd);
	if (loop->epfd >= 0)
		close(loop->epfd);
	free(loop);
}

void cw_loop_stop(struct cw_loop *loop)
{
	loop->stop = true;
}

int cw_loop_run(struct cw_loop *loop)
{
	struct epoll_event evs[32];

	loop->stop = false;
	while (!loop->stop) {
		int timeout = -1, n;

		if (loop->timers) {
			int64_t d = loop->timers->deadline - cw_loop_now_ms();

			timeout = d < 0 ? 0 : d > 60000 ? 60000 : (int)d;
		}
		n = epoll_wait(loop->epfd, evs, 32, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n && !loop->stop; i++) {
			struct cw_io *io = evs[i].data.ptr;

			if (!io->dead)
				io->fn(loop, io->fd, evs[i].events, io->arg);
		}
		reap_ios(loop);
		run_timers(loop);
		reap_ios(loop);
	}
	return 0;
}
