// SPDX-License-Identifier: Apache-2.0
/*
 * meshcheck: prove TCP reachability between many pods from one process.
 *
 *   meshcheck [-p PORT] [-t SECONDS] [-c CONCURRENCY] [-n N] [-r] [-a]
 *             [-s SEED] [-v] < pods
 *
 * stdin has one pod per line: "NETNS_PATH IP".  meshcheck opens a listener
 * on IP:PORT inside every pod's netns, then for each pair opens a client
 * socket inside the source pod's netns and connects to the destination.
 * A socket belongs to the netns it was created in for its whole life, so
 * one process can hold sockets in every pod at once and drive them all from
 * one epoll loop: no process or thread per pod, and thousands of pairs take
 * well under a second when the network works.
 *
 * Pairs: -a every ordered pair (the default when no pair option is given),
 * -n N random ordered pairs, -r each pod to the next one (the last to the
 * first).  Options add up: "-n 1000 -r" checks both sets.
 *
 * Each client sends a token naming (source, destination, nonce); the
 * listener answers with the token, its own pod index and the source address
 * it saw.  The client accepts only its own token, back from the right pod,
 * with its own address as source (no NAT between pods), within -t seconds
 * of starting.  Prints one line per failed pair and
 * "pairs=N ok=N failed=N"; exits 0 only if every pair succeeded, 1 if some
 * failed, 2 on a usage or setup error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TOKEN_LEN 48
#define REPLY_LEN (TOKEN_LEN + 8) /* token, server pod index, peer IPv4 */
#define MAX_EVENTS 256

struct pod {
	char *netns;
	struct in_addr ip;
	int ns_fd;
	struct conn *listener;
};

struct pair {
	unsigned src, dst;
};

enum conn_kind { CONN_LISTENER, CONN_SERVER, CONN_CLIENT };

struct conn {
	enum conn_kind kind;
	int fd;
	unsigned pod;       /* listener/server: the pod it lives in */
	size_t pair;        /* client: index into the pair list */
	bool connected;     /* client: connect() completed */
	double deadline;    /* client */
	size_t off;         /* bytes sent (server reply) or received */
	size_t sent;        /* client: token bytes sent */
	char token[TOKEN_LEN];
	unsigned char buf[REPLY_LEN];
	struct conn *next, *prev; /* clients: for timeouts; servers: to free at exit */
};

struct ctx {
	struct pod *pods;
	unsigned npods;
	struct pair *pairs;
	size_t npairs;
	uint16_t port;
	double timeout;
	unsigned concurrency;
	bool verbose;
	int epfd;
	int orig_ns;
	struct conn *clients, *servers; /* live ones */
	unsigned active;
	size_t next_pair, ok, failed;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("meshcheck: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* xorshift64*: reproducible pair samples from -s, no libc state */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p)
		die("out of memory");
	return p;
}

static void read_pods(struct ctx *c)
{
	char *line = NULL;
	size_t cap = 0, alloc = 0;
	unsigned lineno = 0;

	while (getline(&line, &cap, stdin) > 0) {
		char ns[4096], ip[64];
		struct pod *p;

		lineno++;
		if (line[0] == '#' || strspn(line, " \t\r\n") == strlen(line))
			continue;
		if (sscanf(line, "%4095s %63s", ns, ip) != 2)
			die("stdin line %u: want \"NETNS_PATH IP\"", lineno);
		if (c->npods == alloc) {
			alloc = alloc ? alloc * 2 : 64;
			c->pods = realloc(c->pods, alloc * sizeof(*c->pods));
			if (!c->pods)
				die("out of memory");
		}
		p = &c->pods[c->npods];
		memset(p, 0, sizeof(*p));
		if (inet_pton(AF_INET, ip, &p->ip) != 1)
			die("stdin line %u: %s is not an IPv4 address", lineno, ip);
		p->netns = strdup(ns);
		if (!p->netns)
			die("out of memory");
		p->ns_fd = -1;
		c->npods++;
	}
	free(line);
	if (c->npods < 2)
		die("need at least 2 pods on stdin, got %u", c->npods);
}

static void enter_ns(int fd, const char *what)
{
	if (setns(fd, CLONE_NEWNET) < 0)
		die("setns into %s: %s", what, strerror(errno));
}

static void epoll_add(struct ctx *c, struct conn *k, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = k };

	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, k->fd, &ev) < 0)
		die("epoll_ctl add: %s", strerror(errno));
}

static void epoll_mod(struct ctx *c, struct conn *k, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = k };

	if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, k->fd, &ev) < 0)
		die("epoll_ctl mod: %s", strerror(errno));
}

/* A listener is created inside the pod's netns and stays there. */
static void open_listeners(struct ctx *c)
{
	for (unsigned i = 0; i < c->npods; i++) {
		struct pod *p = &c->pods[i];
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(c->port), .sin_addr = p->ip };
		int one = 1, fd;

		p->ns_fd = open(p->netns, O_RDONLY | O_CLOEXEC);
		if (p->ns_fd < 0)
			die("open %s: %s", p->netns, strerror(errno));
		enter_ns(p->ns_fd, p->netns);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die("socket in %s: %s", p->netns, strerror(errno));
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			die("bind %s:%u in %s: %s", inet_ntoa(p->ip), c->port, p->netns, strerror(errno));
		if (listen(fd, 1024) < 0)
			die("listen in %s: %s", p->netns, strerror(errno));
		enter_ns(c->orig_ns, "the original netns");

		p->listener = xcalloc(1, sizeof(*p->listener));
		p->listener->kind = CONN_LISTENER;
		p->listener->fd = fd;
		p->listener->pod = i;
		epoll_add(c, p->listener, EPOLLIN);
	}
}

static void pair_fail(struct ctx *c, size_t pi, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void pair_fail(struct ctx *c, size_t pi, const char *fmt, ...)
{
	const struct pair *pr = &c->pairs[pi];
	char src[INET_ADDRSTRLEN], dst[INET_ADDRSTRLEN];
	va_list ap;

	inet_ntop(AF_INET, &c->pods[pr->src].ip, src, sizeof(src));
	inet_ntop(AF_INET, &c->pods[pr->dst].ip, dst, sizeof(dst));
	printf("FAIL %s (%s) -> %s:%u (%s): ", src, c->pods[pr->src].netns, dst, c->port,
	       c->pods[pr->dst].netns);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	c->failed++;
}

static void conn_link(struct conn **head, struct conn *k)
{
	k->prev = NULL;
	k->next = *head;
	if (*head)
		(*head)->prev = k;
	*head = k;
}

static void conn_close(struct ctx *c, struct conn *k)
{
	if (k->kind != CONN_LISTENER) {
		struct conn **head = k->kind == CONN_CLIENT ? &c->clients : &c->servers;

		if (k->prev)
			k->prev->next = k->next;
		else
			*head = k->next;
		if (k->next)
			k->next->prev = k->prev;
	}
	if (k->kind == CONN_CLIENT)
		c->active--;
	close(k->fd); /* also removes it from the epoll set */
	free(k);
}

static void client_done(struct ctx *c, struct conn *k, bool ok)
{
	if (ok) {
		c->ok++;
		if (c->verbose) {
			const struct pair *pr = &c->pairs[k->pair];

			printf("ok %s -> ", inet_ntoa(c->pods[pr->src].ip));
			printf("%s\n", inet_ntoa(c->pods[pr->dst].ip));
		}
	}
	conn_close(c, k);
}

/* The client socket is created in the source pod's netns. */
static void start_client(struct ctx *c, size_t pi)
{
	const struct pair *pr = &c->pairs[pi];
	const struct pod *s = &c->pods[pr->src], *d = &c->pods[pr->dst];
	struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr = s->ip };
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(c->port), .sin_addr = d->ip };
	struct conn *k;
	int fd;

	enter_ns(s->ns_fd, s->netns);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	enter_ns(c->orig_ns, "the original netns");
	if (fd < 0) {
		pair_fail(c, pi, "socket: %s", strerror(errno));
		return;
	}
	/* Bind the pod's own address so a wrong source is our doing, not routing's. */
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
		pair_fail(c, pi, "bind source: %s", strerror(errno));
		close(fd);
		return;
	}

	k = xcalloc(1, sizeof(*k));
	k->kind = CONN_CLIENT;
	k->fd = fd;
	k->pair = pi;
	k->deadline = now() + c->timeout;
	snprintf(k->token, sizeof(k->token), "cw-mesh s=%u d=%u n=%08x", pr->src, pr->dst,
		 (unsigned)(rng() >> 32));
	conn_link(&c->clients, k);
	c->active++;

	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
		pair_fail(c, pi, "connect: %s", strerror(errno));
		conn_close(c, k);
		return;
	}
	epoll_add(c, k, EPOLLOUT);
}

static void on_listener(struct ctx *c, struct conn *l)
{
	for (;;) {
		struct conn *k;
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED)
				fprintf(stderr, "meshcheck: accept in %s: %s\n", c->pods[l->pod].netns,
					strerror(errno));
			return;
		}
		k = xcalloc(1, sizeof(*k));
		k->kind = CONN_SERVER;
		k->fd = fd;
		k->pod = l->pod;
		conn_link(&c->servers, k);
		epoll_add(c, k, EPOLLIN);
	}
}

/* Server side: read the token, then answer token + own index + peer IP. */
static void on_server(struct ctx *c, struct conn *k)
{
	if (k->off < TOKEN_LEN) {
		ssize_t n = read(k->fd, k->buf + k->off, TOKEN_LEN - k->off);

		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			conn_close(c, k); /* the client gave up; it reports the failure */
			return;
		}
		k->off += n;
		if (k->off < TOKEN_LEN)
			return;

		struct sockaddr_in peer;
		socklen_t len = sizeof(peer);
		uint32_t idx = htonl(k->pod);

		memset(&peer, 0, sizeof(peer));
		getpeername(k->fd, (struct sockaddr *)&peer, &len);
		memcpy(k->buf + TOKEN_LEN, &idx, 4);
		memcpy(k->buf + TOKEN_LEN + 4, &peer.sin_addr, 4);
		k->sent = 0;
		epoll_mod(c, k, EPOLLOUT);
	}
	while (k->sent < REPLY_LEN) {
		ssize_t n = write(k->fd, k->buf + k->sent, REPLY_LEN - k->sent);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			conn_close(c, k);
			return;
		}
		k->sent += n;
	}
	conn_close(c, k);
}

static void on_client(struct ctx *c, struct conn *k, uint32_t events)
{
	if (!k->connected) {
		int err = 0;
		socklen_t len = sizeof(err);

		getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			pair_fail(c, k->pair, "connect: %s", strerror(err));
			client_done(c, k, false);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		k->connected = true;
	}
	while (k->sent < TOKEN_LEN) {
		ssize_t n = write(k->fd, k->token + k->sent, TOKEN_LEN - k->sent);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			pair_fail(c, k->pair, "send: %s", strerror(errno));
			client_done(c, k, false);
			return;
		}
		k->sent += n;
		if (k->sent == TOKEN_LEN)
			epoll_mod(c, k, EPOLLIN);
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	while (k->off < REPLY_LEN) {
		ssize_t n = read(k->fd, k->buf + k->off, REPLY_LEN - k->off);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			pair_fail(c, k->pair, "receive: %s", strerror(errno));
			client_done(c, k, false);
			return;
		}
		if (n == 0) {
			pair_fail(c, k->pair, "connection closed after %zu of %d reply bytes", k->off, REPLY_LEN);
			client_done(c, k, false);
			return;
		}
		k->off += n;
	}

	const struct pair *pr = &c->pairs[k->pair];
	uint32_t idx;
	struct in_addr seen;

	memcpy(&idx, k->buf + TOKEN_LEN, 4);
	memcpy(&seen, k->buf + TOKEN_LEN + 4, 4);
	if (memcmp(k->buf, k->token, TOKEN_LEN) != 0) {
		pair_fail(c, k->pair, "reply does not carry our token");
		client_done(c, k, false);
	} else if (ntohl(idx) != pr->dst) {
		pair_fail(c, k->pair, "answered by the listener of pod %u (%s)", ntohl(idx),
			  ntohl(idx) < c->npods ? c->pods[ntohl(idx)].netns : "?");
		client_done(c, k, false);
	} else if (seen.s_addr != c->pods[pr->src].ip.s_addr) {
		pair_fail(c, k->pair, "destination saw source %s (NAT between pods?)", inet_ntoa(seen));
		client_done(c, k, false);
	} else {
		client_done(c, k, true);
	}
}

static void expire_clients(struct ctx *c)
{
	double t = now();

	for (struct conn *k = c->clients, *next; k; k = next) {
		next = k->next;
		if (t < k->deadline)
			continue;
		pair_fail(c, k->pair, "timed out after %.1fs (%s)", c->timeout,
			  !k->connected ? "connecting" : k->sent < TOKEN_LEN ? "sending" : "waiting for the reply");
		client_done(c, k, false);
	}
}

static void run(struct ctx *c)
{
	struct epoll_event evs[MAX_EVENTS];

	while (c->next_pair < c->npairs || c->active > 0) {
		while (c->active < c->concurrency && c->next_pair < c->npairs)
			start_client(c, c->next_pair++);
		if (!c->active)
			continue;

		int n = epoll_wait(c->epfd, evs, MAX_EVENTS, 100);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait: %s", strerror(errno));
		}
		/*
		 * Listeners first: a server socket freed in this batch must not be
		 * looked at again, and accept() never frees anything.
		 */
		for (int i = 0; i < n; i++) {
			struct conn *k = evs[i].data.ptr;

			if (k->kind == CONN_LISTENER)
				on_listener(c, k);
		}
		for (int i = 0; i < n; i++) {
			struct conn *k = evs[i].data.ptr;

			if (k->kind == CONN_SERVER)
				on_server(c, k);
			else if (k->kind == CONN_CLIENT)
				on_client(c, k, evs[i].events);
		}
		expire_clients(c);
	}
}

/* Freed so that the sanitizer build's leak check stays quiet. */
static void free_all(struct ctx *c)
{
	while (c->servers)
		conn_close(c, c->servers);
	for (unsigned i = 0; i < c->npods; i++) {
		if (c->pods[i].listener)
			conn_close(c, c->pods[i].listener);
		if (c->pods[i].ns_fd >= 0)
			close(c->pods[i].ns_fd);
		free(c->pods[i].netns);
	}
	free(c->pods);
	free(c->pairs);
	close(c->epfd);
	close(c->orig_ns);
}

static void make_pairs(struct ctx *c, bool all, bool ring, unsigned long nrandom)
{
	size_t n = 0, cap = 0;
	unsigned np = c->npods;

	if (all)
		cap += (size_t)np * (np - 1);
	if (ring)
		cap += np;
	cap += nrandom;
	c->pairs = xcalloc(cap ? cap : 1, sizeof(*c->pairs));
	if (all)
		for (unsigned s = 0; s < np; s++)
			for (unsigned d = 0; d < np; d++)
				if (s != d)
					c->pairs[n++] = (struct pair){ s, d };
	if (ring)
		for (unsigned s = 0; s < np; s++)
			c->pairs[n++] = (struct pair){ s, (s + 1) % np };
	for (unsigned long i = 0; i < nrandom; i++) {
		unsigned s = rng() % np, d = rng() % (np - 1);

		c->pairs[n++] = (struct pair){ s, d >= s ? d + 1 : d };
	}
	c->npairs = n;
}

/*
 * Every pair may hold a client and a server socket at once, beside one
 * listener and one netns fd per pod: raise the soft limit to the hard one.
 */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void usage(void)
{
	fputs("usage: meshcheck [-p PORT] [-t SECONDS] [-c CONCURRENCY] [-n N] [-r] [-a] [-s SEED] [-v] < pods\n"
	      "  stdin: one \"NETNS_PATH IP\" per line\n"
	      "  -p PORT         listener port in every pod (7000)\n"
	      "  -t SECONDS      time each pair has to complete (5)\n"
	      "  -c CONCURRENCY  pairs in flight at once (64)\n"
	      "  -n N            N random ordered pairs\n"
	      "  -r              each pod to the next one\n"
	      "  -a              every ordered pair (default without -n/-r)\n"
	      "  -s SEED         seed for -n and the tokens\n"
	      "  -v              print every successful pair too\n",
	      stderr);
	exit(2);
}

static unsigned long parse_ulong(const char *s, const char *opt, unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || end == s || v < min || v > max)
		die("%s: %s is not a number in %lu..%lu", opt, s, min, max);
	return v;
}

int main(int argc, char **argv)
{
	struct ctx c = { .port = 7000, .timeout = 5, .concurrency = 64, .epfd = -1, .orig_ns = -1 };
	bool all = false, ring = false;
	unsigned long nrandom = 0;
	int opt;

	rng_state ^= (uint64_t)time(NULL) << 20 ^ (uint64_t)getpid();
	while ((opt = getopt(argc, argv, "p:t:c:n:ras:vh")) != -1) {
		switch (opt) {
		case 'p':
			c.port = parse_ulong(optarg, "-p", 1, 65535);
			break;
		case 't': {
			char *end;

			c.timeout = strtod(optarg, &end);
			if (*end || end == optarg || !(c.timeout > 0 && c.timeout <= 3600))
				die("-t: %s is not a number of seconds in (0, 3600]", optarg);
			break;
		}
		case 'c':
			c.concurrency = parse_ulong(optarg, "-c", 1, 100000);
			break;
		case 'n':
			nrandom = parse_ulong(optarg, "-n", 0, 10000000);
			break;
		case 'r':
			ring = true;
			break;
		case 'a':
			all = true;
			break;
		case 's':
			rng_state = parse_ulong(optarg, "-s", 0, ~0UL) | 1;
			break;
		case 'v':
			c.verbose = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (!all && !ring && !nrandom)
		all = true;

	raise_nofile();
	read_pods(&c);
	make_pairs(&c, all, ring, nrandom);

	c.orig_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (c.orig_ns < 0)
		die("open /proc/thread-self/ns/net: %s", strerror(errno));
	c.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c.epfd < 0)
		die("epoll_create1: %s", strerror(errno));

	open_listeners(&c);
	run(&c);

	printf("pairs=%zu ok=%zu failed=%zu\n", c.npairs, c.ok, c.failed);
	free_all(&c);
	return c.failed || c.ok != c.npairs ? 1 : 0;
}
