// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/magic.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <causeway/addr.h>
#include <causeway/dp.h>
#include <causeway/log.h>
#include <causeway/util.h>

/* bpftool's generated loader casts away const; that is its business. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#include "lxc.skel.h"
#pragma GCC diagnostic pop

static const char *const prog_pins[] = { CW_PIN_FROM_CONTAINER, CW_PIN_TO_CONTAINER };
static const char *const map_pins[] = { CW_MAP_ENDPOINTS, CW_MAP_METRICS, CW_MAP_STACK_FLOWS };

static bool on_bpffs(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

int cw_bpffs_ensure(const char *bpf_root)
{
	static const char sysfs_bpf[] = "/sys/fs/bpf";
	char parent[PATH_MAX];
	char *slash;

	if (on_bpffs(bpf_root))
		return 0;
	if (snprintf(parent, sizeof(parent), "%s", bpf_root) >= (int)sizeof(parent))
		return -ENAMETOOLONG;
	slash = strrchr(parent, '/');
	if (slash && slash != parent)
		*slash = '\0';
	/* Like the Cilium agent: mount bpffs where the kernel documents it. */
	if (strncmp(bpf_root, sysfs_bpf, sizeof(sysfs_bpf) - 1) == 0 &&
	    (bpf_root[sizeof(sysfs_bpf) - 1] == '/' || bpf_root[sizeof(sysfs_bpf) - 1] == '\0') &&
	    !on_bpffs(sysfs_bpf)) {
		if (mount("bpf", sysfs_bpf, "bpf", 0, "mode=0700") < 0) {
			int err = -errno;

			pr_err("bpffs: cannot mount on %s: %s", sysfs_bpf, strerror(errno));
			return err;
		}
		pr_info("bpffs: mounted on %s", sysfs_bpf);
	}
	if (!on_bpffs(parent) && !on_bpffs(bpf_root)) {
		pr_err("bpffs: %s is not on a bpf filesystem (mount -t bpf bpf DIR)", parent);
		return -ENOTSUP;
	}
	if (mkdir(bpf_root, 0700) < 0 && errno != EEXIST) {
		int err = -errno;

		pr_err("bpffs: cannot create %s: %s", bpf_root, strerror(errno));
		return err;
	}
	return 0;
}

static int pin_path(char *buf, size_t len, const char *root, const char *name)
{
	if (snprintf(buf, len, "%s/%s", root, name) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

bool cw_dp_pinned(const char *bpf_root)
{
	char path[PATH_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(prog_pins); i++) {
		if (pin_path(path, sizeof(path), bpf_root, prog_pins[i]) || access(path, F_OK))
			return false;
	}
	for (size_t i = 0; i < ARRAY_SIZE(map_pins); i++) {
		if (pin_path(path, sizeof(path), bpf_root, map_pins[i]) || access(path, F_OK))
			return false;
	}
	return true;
}

/* One lock per bpffs root: the plugin's first ADDs and the helper share it. */
static int lock_root(const char *bpf_root, const char *lock_dir)
{
	char path[PATH_MAX];
	uint64_t h = cw_fnv1a64(bpf_root, strlen(bpf_root), CW_FNV1A64_SEED);
	int fd, err;

	err = cw_mkdir_p(lock_dir, 0700);
	if (err)
		return err;
	if (snprintf(path, sizeof(path), "%s/bpf-%016llx.lock", lock_dir,
		     (unsigned long long)h) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		pr_err("datapath: cannot open lock %s: %s", path, strerror(errno));
		return err;
	}
	if (flock(fd, LOCK_EX) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* Pin beside, then rename over: a reader never sees the pin missing.
 * (bpffs refuses names with a dot, hence "_new".) */
static int pin_prog_atomic(struct bpf_program *prog, const char *root, const char *name)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	int err;

	if (pin_path(path, sizeof(path), root, name) ||
	    snprintf(tmp, sizeof(tmp), "%s_new", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	err = bpf_obj_pin(bpf_program__fd(prog), tmp);
	if (err) {
		err = -errno;
		pr_err("datapath: cannot pin %s: %s", tmp, strerror(errno));
		return err;
	}
	if (rename(tmp, path) < 0) {
		err = -errno;
		pr_err("datapath: cannot rename %s to %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
		return err;
	}
	return 0;
}

static int load_locked(const char *bpf_root)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = bpf_root);
	struct lxc *skel = NULL;
	int err;

	skel = lxc__open_opts(&opts);
	if (!skel) {
		err = -errno;
		pr_err("datapath: cannot open the BPF object: %s", strerror(-err));
		return err ? err : -EINVAL;
	}
	err = lxc__load(skel);
	if (err) {
		pr_err("datapath: loading the BPF programs failed: %s", strerror(-err));
		goto cleanup;
	}
	err = pin_prog_atomic(skel->progs.from_container, bpf_root, CW_PIN_FROM_CONTAINER);
	if (!err)
		err = pin_prog_atomic(skel->progs.to_container, bpf_root, CW_PIN_TO_CONTAINER);
	if (!err)
		pr_info("datapath: programs loaded and pinned in %s", bpf_root);
cleanup:
	lxc__destroy(skel);
	return err;
}

int cw_dp_load(const char *bpf_root, const char *lock_dir)
{
	int lock, err;

	err = cw_bpffs_ensure(bpf_root);
	if (err)
		return err;
	lock = lock_root(bpf_root, lock_dir);
	if (lock < 0)
		return lock;
	err = load_locked(bpf_root);
	close(lock);
	return err;
}

int cw_dp_unpin(const char *bpf_root)
{
	char path[PATH_MAX];
	int err = 0;

	for (size_t i = 0; i < ARRAY_SIZE(prog_pins); i++) {
		if (!pin_path(path, sizeof(path), bpf_root, prog_pins[i]) &&
		    unlink(path) < 0 && errno != ENOENT)
			err = -errno;
	}
	for (size_t i = 0; i < ARRAY_SIZE(map_pins); i++) {
		if (!pin_path(path, sizeof(path), bpf_root, map_pins[i]) &&
		    unlink(path) < 0 && errno != ENOENT)
			err = -errno;
	}
	if (rmdir(bpf_root) < 0 && errno != ENOENT && !err)
		err = -errno;
	return err;
}

void cw_dp_free(struct cw_dp *dp)
{
	if (!dp)
		return;
	cw_close(dp->prog_from_container);
	cw_close(dp->prog_to_container);
	cw_close(dp->map_endpoints);
	cw_close(dp->map_metrics);
	free(dp);
}

static int open_pin(const char *root, const char *name, int *fd)
{
	char path[PATH_MAX];
	int err = pin_path(path, sizeof(path), root, name);

	if (err)
		return err;
	*fd = bpf_obj_get(path);
	if (*fd < 0) {
		err = -errno;
		pr_debug("datapath: cannot open pin %s: %s", path, strerror(errno));
		return err;
	}
	return 0;
}

int cw_dp_open(const char *bpf_root, const char *lock_dir, bool load_if_missing,
	       struct cw_dp **out)
{
	struct cw_dp *dp = NULL;
	int err, lock = -1;

	err = cw_bpffs_ensure(bpf_root);
	if (err)
		return err;
	if (load_if_missing && !cw_dp_pinned(bpf_root)) {
		lock = lock_root(bpf_root, lock_dir);
		if (lock < 0)
			return lock;
		/* Another ADD may have loaded while we waited for the lock. */
		if (!cw_dp_pinned(bpf_root)) {
			err = load_locked(bpf_root);
			if (err)
				goto cleanup;
		}
	}

	dp = calloc(1, sizeof(*dp));
	if (!dp) {
		err = -ENOMEM;
		goto cleanup;
	}
	dp->prog_from_container = dp->prog_to_container = -1;
	dp->map_endpoints = dp->map_metrics = -1;
	snprintf(dp->root, sizeof(dp->root), "%s", bpf_root);
	err = open_pin(bpf_root, CW_PIN_FROM_CONTAINER, &dp->prog_from_container);
	if (!err)
		err = open_pin(bpf_root, CW_PIN_TO_CONTAINER, &dp->prog_to_container);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_ENDPOINTS, &dp->map_endpoints);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_METRICS, &dp->map_metrics);
	if (err) {
		pr_err("datapath: pinned programs/maps missing in %s: %s", bpf_root, strerror(-err));
		goto cleanup;
	}
	*out = dp;
	dp = NULL;
cleanup:
	cw_dp_free(dp);
	cw_close(lock);
	return err;
}

static void tc_hook(struct bpf_tc_hook *hook, int ifindex, bool ingress)
{
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = ifindex;
	hook->attach_point = ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}

int cw_tc_attach(int ifindex, int prog_fd, bool ingress)
{
	struct bpf_tc_hook hook;
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = CW_TC_HANDLE,
		    .priority = CW_TC_PRIORITY, .prog_fd = prog_fd,
		    .flags = BPF_TC_F_REPLACE);
	int err;

	tc_hook(&hook, ifindex, ingress);
	/* One clsact qdisc holds both directions; ADD attaches ingress first. */
	err = ingress ? bpf_tc_hook_create(&hook) : 0;
	if (err && err != -EEXIST) {
		pr_err("tc: cannot create clsact on ifindex %d: %s", ifindex, strerror(-err));
		return err;
	}
	err = bpf_tc_attach(&hook, &opts);
	if (err)
		pr_err("tc: cannot attach %s program on ifindex %d: %s",
		       ingress ? "ingress" : "egress", ifindex, strerror(-err));
	return err;
}

int cw_tc_query(int ifindex, bool ingress, __u32 *prog_id)
{
	struct bpf_tc_hook hook;
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = CW_TC_HANDLE, .priority = CW_TC_PRIORITY);
	int err;

	tc_hook(&hook, ifindex, ingress);
	err = bpf_tc_query(&hook, &opts);
	if (err == -ENOENT || err == -EINVAL) {
		*prog_id = 0;
		return 0;
	}
	if (err)
		return err;
	*prog_id = opts.prog_id;
	return 0;
}

int cw_prog_id(int prog_fd, __u32 *id)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	int err = bpf_obj_get_info_by_fd(prog_fd, &info, &len);

	if (err)
		return -errno;
	*id = info.id;
	return 0;
}

int cw_ep_put(const struct cw_dp *dp, __be32 ip4, const struct cw_endpoint_info *info)
{
	struct cw_endpoint_key key = { .ip4 = ip4 };

	return bpf_map_update_elem(dp->map_endpoints, &key, info, BPF_ANY) ? -errno : 0;
}

int cw_ep_get(const struct cw_dp *dp, __be32 ip4, struct cw_endpoint_info *info)
{
	struct cw_endpoint_key key = { .ip4 = ip4 };

	return bpf_map_lookup_elem(dp->map_endpoints, &key, info) ? -errno : 0;
}

int cw_ep_delete(const struct cw_dp *dp, __be32 ip4)
{
	struct cw_endpoint_key key = { .ip4 = ip4 };

	if (bpf_map_delete_elem(dp->map_endpoints, &key) && errno != ENOENT)
		return -errno;
	return 0;
}

int cw_metrics_sum(int map_fd, const struct cw_metrics_key *key, struct cw_metrics_value *out)
{
	int ncpu = libbpf_num_possible_cpus();
	struct cw_metrics_value *vals;
	int err = 0;

	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	vals = calloc((size_t)ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	memset(out, 0, sizeof(*out));
	if (bpf_map_lookup_elem(map_fd, key, vals)) {
		err = -errno;
		goto cleanup;
	}
	for (int i = 0; i < ncpu; i++) {
		out->packets += vals[i].packets;
		out->bytes += vals[i].bytes;
	}
cleanup:
	free(vals);
	return err;
}

const char *cw_reason_name(unsigned int reason)
{
	switch (reason) {
	case CW_REASON_FORWARDED: return "forwarded";
	case CW_DROP_INVALID_PACKET: return "invalid packet";
	case CW_DROP_UNKNOWN_L3: return "unknown L3 protocol";
	case CW_DROP_INVALID_SOURCE: return "invalid source address";
	case CW_DROP_TTL_EXCEEDED: return "TTL exceeded";
	case CW_DROP_REDIRECT_FAILED: return "redirect failed";
	case CW_DROP_FRAG_UNSUPPORTED: return "fragment not supported";
	case CW_DROP_POLICY_DENIED: return "policy denied";
	default: return "unknown reason";
	}
}
