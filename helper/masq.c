// SPDX-License-Identifier: Apache-2.0
/*
 * Masquerading of pod traffic leaving the mesh (masq.h): the ruleset, and
 * running iptables-restore / iptables on it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <causeway/datapath.h>
#include <causeway/log.h>
#include "masq.h"

#define JUMP_COMMENT "causeway: masquerade pod traffic leaving the mesh"
#define RAW_COMMENT "causeway: no conntrack for VXLAN between nodes"
#define MANGLE_COMMENT "causeway: mark flows the stack destination-NATs"

/* The jumps into our chains: table, hook, chain, comment.  nat's first. */
static char *const jumps[][4] = {
	{ "nat", "POSTROUTING", CW_MASQ_CHAIN, JUMP_COMMENT },
	{ "raw", "PREROUTING", CW_MASQ_RAW_CHAIN, RAW_COMMENT },
	{ "raw", "OUTPUT", CW_MASQ_RAW_CHAIN, RAW_COMMENT },
	{ "mangle", "POSTROUTING", CW_MASQ_MANGLE_CHAIN, MANGLE_COMMENT },
};

static int cmp_prefix(const void *a, const void *b)
{
	const struct cw_prefix4 *x = a, *y = b;
	uint32_t xa = ntohl(x->addr.s_addr), ya = ntohl(y->addr.s_addr);

	if (xa != ya)
		return xa < ya ? -1 : 1;
	return (int)x->len - (int)y->len;
}

/* Element by element: a prefix has padding bytes, which memcmp would compare. */
static bool same(const struct cw_masq *m, struct cw_prefix4 src, const struct cw_prefix4 *v,
		 size_t n)
{
	if (cmp_prefix(&m->src, &src) != 0 || m->n_dsts != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (cmp_prefix(&m->dsts[i], &v[i]) != 0)
			return false;
	return true;
}

char *cw_masq_rules(bool masquerade, struct cw_prefix4 src, const struct cw_prefix4 *dsts,
		    size_t n)
{
	char *buf = NULL, s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	if (masquerade) {
		inet_ntop(AF_INET, &src.addr, s, sizeof(s));
		fprintf(f, "*nat\n:" CW_MASQ_CHAIN " - [0:0]\n");
		/* Not from this node's pods: not ours (host traffic, forwarded traffic). */
		fprintf(f, "-A " CW_MASQ_CHAIN " ! -s %s/%u -j RETURN\n", s, src.len);
		for (size_t i = 0; i < n; i++) {
			inet_ntop(AF_INET, &dsts[i].addr, d, sizeof(d));
			fprintf(f, "-A " CW_MASQ_CHAIN " -d %s/%u -j RETURN\n", d, dsts[i].len);
		}
		/* --random-fully: kube-proxy's choice, against source-port clashes under load */
		fprintf(f, "-A " CW_MASQ_CHAIN " -m comment --comment \"pod traffic leaving the "
			   "mesh\" -j MASQUERADE --random-fully\nCOMMIT\n");
	}
	/*
	 * Any NAT rule makes the kernel track every connection of the node,
	 * the tunnel's own UDP packets included, which never need it: that
	 * cost 5-10 % of cross-node throughput.  Pod-to-pod traffic in native
	 * routing never meets conntrack: the programs redirect it past the
	 * stack (bpf/lib/fib.h, bpf/netdev.bpf.c).
	 */
	fprintf(f, "*raw\n:" CW_MASQ_RAW_CHAIN " - [0:0]\n"
		   "-A " CW_MASQ_RAW_CHAIN " -p udp -m udp --dport %u -j CT --notrack\nCOMMIT\n",
		CW_VXLAN_PORT);
	/*
	 * The fast paths must leave the replies of a flow the stack
	 * destination-NATed (hostPort, kube-proxy, the node's own DNAT rules)
	 * to the stack: its packets leave with CW_MARK_STACK_NAT, from which
	 * the programs on the way out learn the flow (bpf/lib/stackflow.h).
	 * Every packet of the original direction, so the learnt entry stays
	 * fresh in its LRU map while the flow lives.
	 */
	fprintf(f, "*mangle\n:" CW_MASQ_MANGLE_CHAIN " - [0:0]\n"
		   "-A " CW_MASQ_MANGLE_CHAIN " -m conntrack --ctstate DNAT --ctdir ORIGINAL "
		   "-j MARK --or-mark 0x%x\nCOMMIT\n",
		CW_MARK_STACK_NAT);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

/*
 * Runs @argv (argv[0] looked up in @dir, or PATH) with @input on its stdin;
 * its exit status, or -errno when it could not run.  Its first line of
 * output goes to @out.  stdin and the output are memfds, so no pipe can
 * fill up and block either side.
 */
static int run(const char *dir, char *const argv[], const char *input, char *out, size_t outlen)
{
	int in_fd = -1, out_fd = -1, status, rc;
	char path[PATH_MAX];
	pid_t pid;

	out[0] = '\0';
	in_fd = memfd_create("causeway-iptables-in", MFD_CLOEXEC);
	out_fd = memfd_create("causeway-iptables-out", MFD_CLOEXEC);
	if (in_fd < 0 || out_fd < 0) {
		rc = -errno;
		goto out;
	}
	if (input) {
		size_t left = strlen(input);
		const char *p = input;

		while (left) {
			ssize_t w = write(in_fd, p, left);

			if (w < 0) {
				rc = -errno;
				goto out;
			}
			p += w;
			left -= (size_t)w;
		}
		lseek(in_fd, 0, SEEK_SET);
	}
	if (dir)
		snprintf(path, sizeof(path), "%s/%s", dir, argv[0]);
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		goto out;
	}
	if (pid == 0) {
		sigset_t none;

		/* the loop blocks the signals it reads from a signalfd */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
			_exit(126);
		if (dir)
			execv(path, argv);
		else
			execvp(argv[0], argv);
		_exit(errno == ENOENT ? 127 : 126);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			rc = -errno;
			goto out;
		}
	}
	{
		ssize_t r = pread(out_fd, out, outlen - 1, 0);
		char *nl;

		out[r > 0 ? r : 0] = '\0';
		nl = strchr(out, '\n');
		if (nl)
			*nl = '\0';
	}
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (rc == 127)
		rc = -ENOENT;
out:
	if (in_fd >= 0)
		close(in_fd);
	if (out_fd >= 0)
		close(out_fd);
	return rc;
}

/* Runs it and says in m->error what failed; 0 on exit status 0. */
static int run_checked(struct cw_masq *m, char *const argv[], const char *input)
{
	char out[300];
	int rc = run(m->iptables_dir, argv, input, out, sizeof(out));

	if (rc == 0)
		return 0;
	if (rc == -ENOENT)
		snprintf(m->error, sizeof(m->error),
			 "iptables: %s not found (install iptables: without it the node can "
			 "neither masquerade nor tell which flows the stack NATs)",
			 argv[0]);
	else if (rc < 0)
		snprintf(m->error, sizeof(m->error), "iptables: cannot run %s: %s", argv[0],
			 strerror(-rc));
	else
		snprintf(m->error, sizeof(m->error), "iptables: %s exited with %d: %s", argv[0], rc,
			 out[0] ? out : "(no output)");
	return rc < 0 ? rc : -EIO;
}

static int ensure_jumps(struct cw_masq *m)
{
	char out[300];

	for (size_t i = m->enabled ? 0 : 1; i < sizeof(jumps) / sizeof(jumps[0]); i++) {
		char *argv[] = { "iptables", "-w", "5", "-t", jumps[i][0], "-C",
				 jumps[i][1], "-m", "comment", "--comment",
				 jumps[i][3], "-j", jumps[i][2], NULL };
		int rc;

		if (run(m->iptables_dir, argv, NULL, out, sizeof(out)) == 0)
			continue;
		argv[5] = "-A";
		rc = run_checked(m, argv, NULL);
		if (rc)
			return rc;
	}
	return 0;
}

int cw_masq_sync(struct cw_masq *m, struct cw_prefix4 src, const struct cw_prefix4 *cidrs,
		 size_t n, int64_t now_ms)
{
	char *restore[] = { "iptables-restore", "-w", "5", "--noflush", NULL };
	struct cw_prefix4 *v;
	size_t nv = 0;
	char *rules;
	int rc;

	if (!src.len)
		return 0;
	v = malloc((n + m->n_except + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	v[nv++] = src;
	for (size_t i = 0; i < m->n_except; i++)
		v[nv++] = m->except[i];
	for (size_t i = 0; i < n; i++)
		v[nv++] = cidrs[i];
	qsort(v, nv, sizeof(*v), cmp_prefix);
	n = 0;
	for (size_t i = 0; i < nv; i++)
		if (!n || cmp_prefix(&v[n - 1], &v[i]) != 0)
			v[n++] = v[i];
	if (m->applied_ms && !m->error[0] && now_ms - m->applied_ms < CW_MASQ_REFRESH_MS &&
	    same(m, src, v, n)) {
		free(v);
		return 0;
	}
	rules = cw_masq_rules(m->enabled, src, v, n);
	if (!rules) {
		free(v);
		return -ENOMEM;
	}
	rc = run_checked(m, restore, rules);
	free(rules);
	if (!rc)
		rc = ensure_jumps(m);
	if (rc) {
		m->failures++;
		pr_warn("%s", m->error);
		free(v);
		return rc;
	}
	if (m->enabled && !same(m, src, v, n)) {
		char s[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &src.addr, s, sizeof(s));
		pr_info("masquerade: traffic from %s/%u to outside %zu PodCIDR(s) and exception(s) "
			"leaves with the node's address", s, src.len, n);
	}
	free(m->dsts);
	m->dsts = v;
	m->n_dsts = n;
	m->src = src;
	m->applied_ms = now_ms;
	m->updates++;
	m->error[0] = '\0';
	return 0;
}

void cw_masq_remove(struct cw_masq *m)
{
	char *const *nat = jumps[0];
	char *del[] = { "iptables", "-w", "5", "-t", nat[0], "-D", nat[1], "-m", "comment",
			"--comment", nat[3], "-j", nat[2], NULL };
	char *flush[] = { "iptables", "-w", "5", "-t", nat[0], "-F", nat[2], NULL };
	char *drop[] = { "iptables", "-w", "5", "-t", nat[0], "-X", nat[2], NULL };
	char out[300];

	/* each may find nothing to remove, which is the state wanted */
	for (int k = 0; k < 8 && run(m->iptables_dir, del, NULL, out, sizeof(out)) == 0; k++)
		;
	if (run(m->iptables_dir, flush, NULL, out, sizeof(out)) == 0 &&
	    run(m->iptables_dir, drop, NULL, out, sizeof(out)) == 0)
		pr_info("masquerade: off; removed the %s chain of the %s table", nat[2], nat[0]);
}

void cw_masq_clear(struct cw_masq *m)
{
	free(m->dsts);
	m->dsts = NULL;
	m->n_dsts = 0;
}
