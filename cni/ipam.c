// SPDX-License-Identifier: Apache-2.0
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <causeway/log.h>
#include <causeway/util.h>
#include "ipam.h"

#define CURSOR_FILE "last_reserved_ip"
#define LOCK_FILE   ".lock"

struct cw_ipam {
	/* short enough that dir + "/" + any file name fits in PATH_MAX */
	char dir[PATH_MAX - 512];
	int lock_fd;
	bool has_pool;
	struct cw_prefix4 pool;
};

void cw_ipam_close(struct cw_ipam *ipam)
{
	if (!ipam)
		return;
	cw_close(ipam->lock_fd);
	free(ipam);
}

static int lock_with_timeout(int fd, int timeout_ms)
{
	struct timespec nap = { 0, 5 * 1000 * 1000 };

	for (int waited = 0;; waited += 5) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK)
			return -errno;
		if (waited >= timeout_ms)
			return -EAGAIN;
		nanosleep(&nap, NULL);
	}
}

int cw_ipam_open(const char *state_dir, const char *network, const struct cw_prefix4 *pool,
		 int timeout_ms, struct cw_ipam **out)
{
	struct cw_ipam *ipam = calloc(1, sizeof(*ipam));
	char path[PATH_MAX];
	int err;

	if (!ipam)
		return -ENOMEM;
	ipam->lock_fd = -1;
	if (snprintf(ipam->dir, sizeof(ipam->dir), "%s/ipam/%s", state_dir, network) >=
	    (int)sizeof(ipam->dir) ||
	    snprintf(path, sizeof(path), "%s/%s", ipam->dir, LOCK_FILE) >= (int)sizeof(path)) {
		err = -ENAMETOOLONG;
		goto cleanup;
	}
	err = cw_mkdir_p(ipam->dir, 0700);
	if (err)
		goto cleanup;
	ipam->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ipam->lock_fd < 0) {
		err = -errno;
		goto cleanup;
	}
	err = lock_with_timeout(ipam->lock_fd, timeout_ms);
	if (err)
		goto cleanup;
	if (pool) {
		ipam->pool = *pool;
		ipam->has_pool = true;
	}
	*out = ipam;
	return 0;
cleanup:
	cw_ipam_close(ipam);
	return err;
}

struct in_addr cw_ipam_gateway(const struct cw_prefix4 *pool)
{
	struct in_addr gw = { htonl(cw_prefix4_first(pool) + 1) };

	return gw;
}

/* Reads the owner of one allocation file; false if unreadable. */
static bool read_owner(const char *dir, const char *name, char *cid, size_t cidlen,
		       char *ifn, size_t ifnlen)
{
	char path[PATH_MAX], *buf = NULL, *nl;
	bool ok = false;

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
	    cw_read_file(path, &buf, NULL))
		return false;
	nl = strchr(buf, '\n');
	if (nl) {
		*nl = '\0';
		snprintf(cid, cidlen, "%s", buf);
		snprintf(ifn, ifnlen, "%s", nl + 1);
		nl = strchr(ifn, '\n');
		if (nl)
			*nl = '\0';
		ok = true;
	}
	free(buf);
	return ok;
}

typedef int (*alloc_fn)(struct cw_ipam *ipam, const char *name, struct in_addr a,
			const char *cid, const char *ifn, void *arg);

static int foreach_alloc(struct cw_ipam *ipam, alloc_fn fn, void *arg)
{
	char cid[256], ifn[64];
	struct dirent *de;
	struct in_addr a;
	DIR *d = opendir(ipam->dir);
	int rc = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		if (!cw_addr4_parse(de->d_name, &a)) /* lock, cursor, strays */
			continue;
		if (!read_owner(ipam->dir, de->d_name, cid, sizeof(cid), ifn, sizeof(ifn))) {
			cid[0] = ifn[0] = '\0';
			pr_warn("ipam: allocation %s/%s is unreadable or corrupt", ipam->dir, de->d_name);
		}
		rc = fn(ipam, de->d_name, a, cid, ifn, arg);
		if (rc)
			break;
	}
	closedir(d);
	return rc < 0 ? rc : 0;
}

struct find_arg {
	const char *cid, *ifn;
	struct in_addr found;
	bool hit;
	bool release;
	unsigned int count;
};

static int find_cb(struct cw_ipam *ipam, const char *name, struct in_addr a, const char *cid,
		   const char *ifn, void *arg)
{
	struct find_arg *f = arg;
	char path[PATH_MAX];

	if (strcmp(cid, f->cid) != 0 || strcmp(ifn, f->ifn) != 0)
		return 0;
	f->found = a;
	f->hit = true;
	if (!f->release)
		return 1;
	snprintf(path, sizeof(path), "%s/%s", ipam->dir, name);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	pr_info("ipam: released %s held by %s/%s", name, cid, ifn);
	return 0;
}

int cw_ipam_find(struct cw_ipam *ipam, const char *container_id, const char *ifname,
		 struct in_addr *out)
{
	struct find_arg f = { .cid = container_id, .ifn = ifname };
	int err = foreach_alloc(ipam, find_cb, &f);

	if (err)
		return err;
	if (!f.hit)
		return -ENOENT;
	*out = f.found;
	return 0;
}

int cw_ipam_release(struct cw_ipam *ipam, const char *container_id, const char *ifname)
{
	struct find_arg f = { .cid = container_id, .ifn = ifname, .release = true };

	return foreach_alloc(ipam, find_cb, &f);
}

static int count_cb(struct cw_ipam *ipam, const char *name, struct in_addr a, const char *cid,
		    const char *ifn, void *arg)
{
	struct find_arg *f = arg;

	(void)name; (void)cid; (void)ifn;
	if (cw_prefix4_contains(&ipam->pool, a))
		f->count++;
	return 0;
}

static unsigned int pool_capacity(const struct cw_prefix4 *p)
{
	/* network, gateway (first host) and broadcast are never handed out */
	return (unsigned int)(cw_prefix4_last(p) - cw_prefix4_first(p)) - 2;
}

int cw_ipam_usage(struct cw_ipam *ipam, unsigned int *used, unsigned int *capacity)
{
	struct find_arg f = { .cid = "", .ifn = "" };
	int err;

	if (!ipam->has_pool)
		return -EINVAL;
	err = foreach_alloc(ipam, count_cb, &f);
	if (err)
		return err;
	*used = f.count;
	*capacity = pool_capacity(&ipam->pool);
	return 0;
}

static uint32_t read_cursor(struct cw_ipam *ipam)
{
	char path[PATH_MAX], *buf = NULL;
	struct in_addr a = { 0 };

	snprintf(path, sizeof(path), "%s/%s", ipam->dir, CURSOR_FILE);
	if (cw_read_file(path, &buf, NULL) == 0) {
		buf[strcspn(buf, "\n")] = '\0';
		if (!cw_addr4_parse(buf, &a))
			a.s_addr = 0;
	}
	free(buf);
	return ntohl(a.s_addr);
}

static void write_cursor(struct cw_ipam *ipam, struct in_addr a)
{
	char path[PATH_MAX], ip[16];

	snprintf(path, sizeof(path), "%s/%s", ipam->dir, CURSOR_FILE);
	cw_addr4_str(a, ip);
	/* Only a hint for next-fit: losing it costs a longer scan, nothing more. */
	if (cw_write_file_atomic(path, ip, strlen(ip), false))
		pr_warn("ipam: cannot update %s", path);
}

int cw_ipam_allocate(struct cw_ipam *ipam, const char *container_id, const char *ifname,
		     struct in_addr *out, bool *fresh, struct cw_error *err)
{
	uint32_t lo, hi, start, cur, span;
	char path[PATH_MAX], ip[16], owner[300];
	struct in_addr a;
	int fd, rc;

	if (!ipam->has_pool)
		return cw_error_set(err, CW_ERR_IPAM, "ipam: no pool configured"), -EINVAL;
	rc = cw_ipam_find(ipam, container_id, ifname, out);
	if (rc == 0) {
		*fresh = false;
		return 0;
	}
	if (rc != -ENOENT) {
		cw_error_set(err, CW_ERR_IPAM, "ipam: cannot read %s: %s", ipam->dir, strerror(-rc));
		return rc;
	}

	lo = cw_prefix4_first(&ipam->pool) + 2;
	hi = cw_prefix4_last(&ipam->pool) - 1;
	span = hi - lo + 1;
	start = read_cursor(ipam);
	start = start >= lo && start < hi ? start + 1 : lo;
	snprintf(owner, sizeof(owner), "%s\n%s\n", container_id, ifname);

	for (uint32_t i = 0; i < span; i++) {
		cur = lo + (start - lo + i) % span;
		a.s_addr = htonl(cur);
		cw_addr4_str(a, ip);
		snprintf(path, sizeof(path), "%s/%s", ipam->dir, ip);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST)
			continue;
		if (fd < 0) {
			rc = -errno;
			cw_error_set(err, CW_ERR_IPAM, "ipam: cannot create %s: %s", path, strerror(errno));
			return rc;
		}
		/*
		 * No fsync: O_EXCL already made the claim atomic, and a node
		 * crash that loses it also killed the pod that held it.
		 */
		if (write(fd, owner, strlen(owner)) != (ssize_t)strlen(owner)) {
			rc = errno ? -errno : -EIO;
			close(fd);
			unlink(path);
			cw_error_set(err, CW_ERR_IPAM, "ipam: cannot write %s: %s", path, strerror(-rc));
			return rc;
		}
		close(fd);
		write_cursor(ipam, a);
		*out = a;
		*fresh = true;
		pr_info("ipam: allocated %s to %s/%s", ip, container_id, ifname);
		return 0;
	}
	cw_addr4_str(ipam->pool.addr, ip);
	cw_error_set(err, CW_ERR_IPAM, "ipam: %s/%u is exhausted (%u addresses in use)", ip,
		     ipam->pool.len, span);
	return -ENOSPC;
}

struct gc_arg {
	const struct cw_conf *conf;
	unsigned int released;
};

static int gc_cb(struct cw_ipam *ipam, const char *name, struct in_addr a, const char *cid,
		 const char *ifn, void *arg)
{
	struct gc_arg *g = arg;
	char path[PATH_MAX];

	(void)a;
	if (cid[0] && cw_conf_has_attachment(g->conf, cid, ifn))
		return 0;
	snprintf(path, sizeof(path), "%s/%s", ipam->dir, name);
	if (unlink(path) == 0) {
		g->released++;
		pr_info("ipam: gc released %s held by %s/%s", name, cid, ifn);
	}
	return 0;
}

int cw_ipam_gc(struct cw_ipam *ipam, const struct cw_conf *conf, unsigned int *released)
{
	struct gc_arg g = { .conf = conf };
	int err = foreach_alloc(ipam, gc_cb, &g);

	*released = g.released;
	return err;
}
