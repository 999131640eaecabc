/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The helper's one event loop: epoll over file descriptors, one-shot and
 * periodic timers, signals (signalfd) and libcurl's multi interface, so
 * every etcd and Kubernetes stream of the process runs on one thread
 * without polling.
 *
 * Callbacks run on the loop's thread, one at a time; a callback may add or
 * remove any watch, timer or transfer, including its own.
 */
#ifndef CW_HELPER_LOOP_H
#define CW_HELPER_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <curl/curl.h>

struct cw_loop;
struct cw_timer;
struct cw_io;

int cw_loop_new(struct cw_loop **out);
void cw_loop_free(struct cw_loop *loop);

/* Runs until cw_loop_stop(); returns 0, or -errno when epoll fails. */
int cw_loop_run(struct cw_loop *loop);
void cw_loop_stop(struct cw_loop *loop);
/* CLOCK_MONOTONIC in milliseconds. */
int64_t cw_loop_now_ms(void);

/* --- file descriptors ------------------------------------------------- */

/* @events is EPOLLIN/EPOLLOUT; the callback gets what fired. */
typedef void (*cw_io_fn)(struct cw_loop *loop, int fd, uint32_t events, void *arg);
int cw_io_add(struct cw_loop *loop, int fd, uint32_t events, cw_io_fn fn, void *arg,
	      struct cw_io **out);
int cw_io_modify(struct cw_io *io, uint32_t events);
/* NULL-safe.  Does not close the fd. */
void cw_io_del(struct cw_io *io);

/* --- timers ----------------------------------------------------------- */

typedef void (*cw_timer_fn)(struct cw_loop *loop, void *arg);
/*
 * Fires once after @delay_ms, then every @period_ms if that is > 0.  The
 * timer stays allocated until cw_timer_del(), so it can be re-armed.
 */
int cw_timer_add(struct cw_loop *loop, int64_t delay_ms, int64_t period_ms, cw_timer_fn fn,
		 void *arg, struct cw_timer **out);
void cw_timer_arm(struct cw_timer *t, int64_t delay_ms);
void cw_timer_disarm(struct cw_timer *t);
bool cw_timer_armed(const struct cw_timer *t);
/* NULL-safe. */
void cw_timer_del(struct cw_timer *t);

/* --- signals ---------------------------------------------------------- */

typedef void (*cw_signal_fn)(struct cw_loop *loop, int signo, void *arg);
/* Blocks @signo for the process and delivers it through the loop. */
int cw_loop_signal(struct cw_loop *loop, int signo, cw_signal_fn fn, void *arg);

/* --- libcurl multi ---------------------------------------------------- */

/*
 * Called once when a transfer added with cw_loop_curl_add() ends, with
 * curl's result; the easy handle has been removed from the multi handle and
 * belongs to the caller again (to free or to re-add).
 */
typedef void (*cw_curl_done_fn)(struct cw_loop *loop, CURL *easy, CURLcode result, void *arg);
int cw_loop_curl_add(struct cw_loop *loop, CURL *easy, cw_curl_done_fn fn, void *arg);
/* Aborts a running transfer without calling its done callback.  NULL-safe. */
void cw_loop_curl_remove(struct cw_loop *loop, CURL *easy);

/* Exponential backoff with full jitter: a delay in [base, min(cap, base*2^n)). */
int64_t cw_backoff_ms(unsigned int attempt, int64_t base_ms, int64_t cap_ms);

#endif
