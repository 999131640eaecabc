// SPDX-License-Identifier: Apache-2.0
/*
 * podserve: the lab's stand-in for a pod's containers.
 *
 *   podserve --name POD --cluster CLUSTER [--namespace NS] -p PORT [-p PORT...]
 *
 * Listens on every given TCP port (all addresses of the netns it runs in)
 * and answers every HTTP/1.x request with 200 and one line of JSON naming
 * the pod, e.g. {"pod":"rebel-base-1","namespace":"default","cluster":"cluster1"},
 * so a client can tell which pod of which cluster served it.  Keep-alive and
 * pipelined requests are handled; a request body announced by Content-Length
 * is read and ignored; chunked request bodies are refused (411), which no
 * test client sends.  One epoll loop, no threads; SIGTERM and SIGINT arrive
 * through a signalfd and end the loop cleanly (exit 0).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PORTS 64
#define MAX_EVENTS 64
#define REQ_MAX 16384 /* request line and headers */
#define BODY_MAX (1 << 20)

enum conn_kind { CONN_SIGNAL, CONN_LISTENER, CONN_CLIENT };

struct conn {
	enum conn_kind kind;
	int fd;
	unsigned short port;   /* listener */
	char in[REQ_MAX];      /* client: bytes of the request(s) not yet handled */
	size_t in_len;
	size_t skip;           /* client: body bytes still to discard */
	char *out;             /* client: response bytes not yet written */
	size_t out_len, out_off;
	bool close_after;      /* client: close once out is written */
	struct conn *next, *prev;
};

struct ctx {
	const char *name, *ns, *cluster;
	char *body;            /* the JSON line, the same for every request */
	size_t body_len;
	unsigned short ports[MAX_PORTS];
	unsigned nports;
	int epfd;
	struct conn *sig;
	struct conn *listeners[MAX_PORTS];
	struct conn *clients;
	bool stop;
};

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("podserve: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p)
		die("out of memory");
	return p;
}

/* Append s to buf as the inside of a JSON string (RFC 8259, section 7). */
static size_t json_escape(char *buf, size_t cap, size_t off, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		char tmp[8];
		const char *rep = tmp;

		if (ch == '"' || ch == '\\')
			snprintf(tmp, sizeof(tmp), "\\%c", ch);
		else if (ch < 0x20)
			snprintf(tmp, sizeof(tmp), "\\u%04x", ch);
		else
			tmp[0] = (char)ch, tmp[1] = '\0';
		for (; *rep; rep++) {
			if (off + 1 >= cap)
				die("name too long");
			buf[off++] = *rep;
		}
	}
	buf[off] = '\0';
	return off;
}

static void make_body(struct ctx *c)
{
	size_t cap = 6 * (strlen(c->name) + strlen(c->ns) + strlen(c->cluster)) + 64, off = 0;

	c->body = xcalloc(1, cap);
	off += snprintf(c->body + off, cap - off, "{\"pod\":\"");
	off = json_escape(c->body, cap, off, c->name);
	off += snprintf(c->body + off, cap - off, "\",\"namespace\":\"");
	off = json_escape(c->body, cap, off, c->ns);
	off += snprintf(c->body + off, cap - off, "\",\"cluster\":\"");
	off = json_escape(c->body, cap, off, c->cluster);
	off += snprintf(c->body + off, cap - off, "\"}\n");
	c->body_len = off;
}

static void epoll_set(struct ctx *c, int op, struct conn *k, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = k };

	if (epoll_ctl(c->epfd, op, k->fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
}

static void open_listener(struct ctx *c, unsigned i)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(c->ports[i]) };
	struct conn *l;
	int one = 1, fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind 0.0.0.0:%u: %s", c->ports[i], strerror(errno));
	if (listen(fd, 512) < 0)
		die("listen on port %u: %s", c->ports[i], strerror(errno));
	l = xcalloc(1, sizeof(*l));
	l->kind = CONN_LISTENER;
	l->fd = fd;
	l->port = c->ports[i];
	c->listeners[i] = l;
	epoll_set(c, EPOLL_CTL_ADD, l, EPOLLIN);
}

static void client_close(struct ctx *c, struct conn *k)
{
	if (k->prev)
		k->prev->next = k->next;
	else
		c->clients = k->next;
	if (k->next)
		k->next->prev = k->prev;
	close(k->fd); /* also leaves the epoll set */
	free(k->out);
	free(k);
}

static void on_listener(struct ctx *c, struct conn *l)
{
	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *k;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED && errno != EINTR)
				fprintf(stderr, "podserve: accept on port %u: %s\n", l->port, strerror(errno));
			return;
		}
		k = xcalloc(1, sizeof(*k));
		k->kind = CONN_CLIENT;
		k->fd = fd;
		k->next = c->clients;
		if (c->clients)
			c->clients->prev = k;
		c->clients = k;
		epoll_set(c, EPOLL_CTL_ADD, k, EPOLLIN | EPOLLRDHUP);
	}
}

static void queue(struct conn *k, const char *data, size_t len)
{
	char *out = realloc(k->out, k->out_len + len);

	if (!out)
		die("out of memory");
	memcpy(out + k->out_len, data, len);
	k->out = out;
	k->out_len += len;
}

/*
 * The value of header NAME in the header block hdr (which ends with the
 * blank line), copied into val; false when absent.
 */
static bool header(const char *hdr, size_t len, const char *name, char *val, size_t cap)
{
	size_t nlen = strlen(name);
	const char *p = memchr(hdr, '\n', len), *end = hdr + len;

	while (p && ++p < end) {
		const char *eol = memchr(p, '\n', end - p);
		size_t n;

		if (!eol)
			break;
		if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
			const char *v = p + nlen + 1;

			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			n = eol - v;
			while (n && (v[n - 1] == '\r' || v[n - 1] == ' ' || v[n - 1] == '\t'))
				n--;
			if (n >= cap)
				n = cap - 1;
			memcpy(val, v, n);
			val[n] = '\0';
			return true;
		}
		p = eol;
	}
	return false;
}

static void respond(struct ctx *c, struct conn *k, int status, const char *reason, bool head, bool close_conn)
{
	char hdr[256];
	const char *body = status == 200 ? c->body : "";
	size_t blen = status == 200 ? c->body_len : 0;
	int n;

	n = snprintf(hdr, sizeof(hdr),
		     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n", status,
		     reason, blen, close_conn ? "Connection: close\r\n" : "");
	queue(k, hdr, n);
	if (!head)
		queue(k, body, blen);
	if (close_conn)
		k->close_after = true;
}

/*
 * Answer every complete request in k->in.  A malformed one is answered with
 * an error and marks the connection to be closed once that is sent.
 */
static void parse_requests(struct ctx *c, struct conn *k)
{
	while (!k->close_after) {
		char *end, *eol, line[512], method[16], version[16], val[64];
		size_t hlen, llen, body = 0;
		bool head, close_conn;

		if (k->skip) {
			size_t n = k->skip < k->in_len ? k->skip : k->in_len;

			memmove(k->in, k->in + n, k->in_len - n);
			k->in_len -= n;
			k->skip -= n;
			if (k->skip)
				return;
		}
		end = memmem(k->in, k->in_len, "\r\n\r\n", 4);
		if (!end) {
			if (k->in_len == sizeof(k->in))
				respond(c, k, 431, "Request Header Fields Too Large", false, true);
			return;
		}
		hlen = end + 4 - k->in;
		/* k->in is not a string: scan a bounded copy of the request line. */
		eol = memchr(k->in, '\n', hlen);
		llen = eol - k->in < (ptrdiff_t)sizeof(line) ? (size_t)(eol - k->in) : sizeof(line) - 1;
		memcpy(line, k->in, llen);
		line[llen] = '\0';
		if (sscanf(line, "%15s %*s %15s", method, version) != 2 || strncmp(version, "HTTP/1.", 7) != 0) {
			respond(c, k, 400, "Bad Request", false, true);
			return;
		}
		head = strcmp(method, "HEAD") == 0;
		/* HTTP/1.1 keeps the connection unless told otherwise; 1.0 closes unless asked to keep it. */
		if (strcmp(version, "HTTP/1.0") == 0)
			close_conn = !(header(k->in, hlen, "Connection", val, sizeof(val)) &&
				       strcasecmp(val, "keep-alive") == 0);
		else
			close_conn = header(k->in, hlen, "Connection", val, sizeof(val)) &&
				     strcasecmp(val, "close") == 0;
		if (header(k->in, hlen, "Transfer-Encoding", val, sizeof(val))) {
			respond(c, k, 411, "Length Required", head, true);
			return;
		}
		if (header(k->in, hlen, "Content-Length", val, sizeof(val))) {
			char *e;

			errno = 0;
			body = strtoul(val, &e, 10);
			if (errno || *e || e == val || body > BODY_MAX) {
				respond(c, k, 400, "Bad Request", head, true);
				return;
			}
		}
		respond(c, k, 200, "OK", head, close_conn);
		memmove(k->in, k->in + hlen, k->in_len - hlen);
		k->in_len -= hlen;
		k->skip = body;
	}
}

/* Write what is queued; false when the connection is finished. */
static bool flush(struct ctx *c, struct conn *k)
{
	while (k->out_off < k->out_len) {
		ssize_t n = send(k->fd, k->out + k->out_off, k->out_len - k->out_off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				epoll_set(c, EPOLL_CTL_MOD, k, EPOLLOUT);
				return true;
			}
			return false;
		}
		k->out_off += n;
	}
	free(k->out);
	k->out = NULL;
	k->out_len = k->out_off = 0;
	if (k->close_after) {
		shutdown(k->fd, SHUT_WR);
		return false;
	}
	epoll_set(c, EPOLL_CTL_MOD, k, EPOLLIN | EPOLLRDHUP);
	return true;
}

static void on_client(struct ctx *c, struct conn *k)
{
	bool peer_done = false;

	if (k->out_len) {
		/* Writable again: finish the queued responses before reading more. */
		if (!flush(c, k))
			client_close(c, k);
		return;
	}
	while (!k->close_after && k->in_len < sizeof(k->in)) {
		ssize_t n = read(k->fd, k->in + k->in_len, sizeof(k->in) - k->in_len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			client_close(c, k);
			return;
		}
		if (n == 0) {
			peer_done = true;
			break;
		}
		k->in_len += n;
		parse_requests(c, k);
	}
	if (k->out_len && !flush(c, k)) {
		client_close(c, k);
		return;
	}
	if (peer_done && !k->out_len)
		client_close(c, k);
}

static void on_signal(struct ctx *c, struct conn *s)
{
	struct signalfd_siginfo si;

	while (read(s->fd, &si, sizeof(si)) == sizeof(si))
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			c->stop = true;
}

static void run(struct ctx *c)
{
	struct epoll_event evs[MAX_EVENTS];

	while (!c->stop) {
		int n = epoll_wait(c->epfd, evs, MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait: %s", strerror(errno));
		}
		/*
		 * The signal and listeners first: neither frees anything, so the
		 * client pointers of this batch stay valid until their turn.  A
		 * client closed in this batch cannot appear in it again, since each
		 * fd is reported at most once per epoll_wait.
		 */
		for (int i = 0; i < n; i++) {
			struct conn *k = evs[i].data.ptr;

			if (k->kind == CONN_SIGNAL)
				on_signal(c, k);
			else if (k->kind == CONN_LISTENER)
				on_listener(c, k);
		}
		for (int i = 0; i < n; i++) {
			struct conn *k = evs[i].data.ptr;

			if (k->kind == CONN_CLIENT)
				on_client(c, k);
		}
	}
}

static void free_all(struct ctx *c)
{
	while (c->clients)
		client_close(c, c->clients);
	for (unsigned i = 0; i < c->nports; i++) {
		if (c->listeners[i]) {
			close(c->listeners[i]->fd);
			free(c->listeners[i]);
		}
	}
	if (c->sig) {
		close(c->sig->fd);
		free(c->sig);
	}
	close(c->epfd);
	free(c->body);
}

static void usage(FILE *f, int status)
{
	fputs("usage: podserve --name POD --cluster CLUSTER [--namespace NS] -p PORT [-p PORT...]\n"
	      "  answers every HTTP request on every PORT with 200 and\n"
	      "  {\"pod\":POD,\"namespace\":NS,\"cluster\":CLUSTER}; NS defaults to \"default\"\n",
	      f);
	exit(status);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "name", required_argument, NULL, 'N' },
		{ "namespace", required_argument, NULL, 'n' },
		{ "cluster", required_argument, NULL, 'c' },
		{ "port", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctx c = { .ns = "default", .epfd = -1 };
	sigset_t mask;
	int opt;

	while ((opt = getopt_long(argc, argv, "p:n:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'N':
			c.name = optarg;
			break;
		case 'n':
			c.ns = optarg;
			break;
		case 'c':
			c.cluster = optarg;
			break;
		case 'p': {
			char *end;
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || end == optarg || v < 1 || v > 65535)
				die("-p: %s is not a port number in 1..65535", optarg);
			for (unsigned i = 0; i < c.nports; i++)
				if (c.ports[i] == v)
					goto next;
			if (c.nports == MAX_PORTS)
				die("-p: at most %d ports", MAX_PORTS);
			c.ports[c.nports++] = (unsigned short)v;
next:
			break;
		}
		case 'h':
			usage(stdout, 0);
			break;
		default:
			usage(stderr, 2);
		}
	}
	if (optind != argc || !c.name || !c.cluster || !c.nports)
		usage(stderr, 2);

	make_body(&c);
	c.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c.epfd < 0)
		die("epoll_create1: %s", strerror(errno));

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		die("sigprocmask: %s", strerror(errno));
	c.sig = xcalloc(1, sizeof(*c.sig));
	c.sig->kind = CONN_SIGNAL;
	c.sig->fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (c.sig->fd < 0)
		die("signalfd: %s", strerror(errno));
	epoll_set(&c, EPOLL_CTL_ADD, c.sig, EPOLLIN);
	signal(SIGPIPE, SIG_IGN);

	for (unsigned i = 0; i < c.nports; i++)
		open_listener(&c, i);

	run(&c);
	free_all(&c);
	return 0;
}
