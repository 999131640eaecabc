// SPDX-License-Identifier: Apache-2.0
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>
#include <net/if.h>
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
#include "overlay.skel.h"
#include "netdev.skel.h"
#pragma GCC diagnostic pop

/*
 * Every pin a current node has.  cw_dp_pinned() wants all of them, so the
 * pins of an older release (fewer programs or maps) count as "not loaded"
 * and the next load adds what is missing, adopting the maps that exist.
 */
static const char *const prog_pins[] = { CW_PIN_FROM_CONTAINER, CW_PIN_TO_CONTAINER,
					 CW_PIN_FROM_OVERLAY, CW_PIN_TO_OVERLAY,
					 CW_PIN_FROM_NETDEV, CW_PIN_TO_NETDEV };
static const char *const map_pins[] = { CW_MAP_ENDPOINTS, CW_MAP_METRICS, CW_MAP_STACK_FLOWS,
					CW_MAP_IPCACHE, CW_MAP_TUNNEL, CW_MAP_CONFIG,
					CW_MAP_LB4_SERVICES, CW_MAP_LB4_BACKENDS,
					CW_MAP_LB4_REVNAT, CW_MAP_LB4_CT };

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
	/* The nearest existing ancestor decides which filesystem the root lands on. */
	while (access(parent, F_OK) != 0 && (slash = strrchr(parent, '/')) && slash != parent)
		*slash = '\0';
	if (!on_bpffs(parent)) {
		pr_err("bpffs: %s is not on a bpf filesystem (mount -t bpf bpf DIR)", parent);
		return -ENOTSUP;
	}
	return cw_mkdir_p(bpf_root, 0700);
}

static int pin_path(char *buf, size_t len, const char *root, const char *name)
{
	if (snprintf(buf, len, "%s/%s", root, name) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * Whether the pinned cw_metrics has this release's layout.  Earlier ones
 * pinned a per-CPU hash, which libbpf refuses to adopt for the per-CPU
 * array the programs now declare, and which the readers here would find
 * empty.
 */
static bool metrics_pin_current(const char *path)
{
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);
	bool ok;
	int fd;

	fd = bpf_obj_get(path);
	if (fd < 0)
		return false;
	ok = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
	     info.type == BPF_MAP_TYPE_PERCPU_ARRAY && info.key_size == sizeof(__u32) &&
	     info.value_size == sizeof(struct cw_metrics_value) &&
	     info.max_entries == CW_MAX_METRICS;
	close(fd);
	return ok;
}

/*
 * A metrics pin of an older layout is replaced rather than adopted: it
 * holds only counters, which restart from zero (the programs still
 * attached keep theirs until they are replaced).  Any other map holds
 * state, and a pin of another layout fails the load, by libbpf's check.
 */
static int replace_stale_metrics(const char *bpf_root)
{
	char path[PATH_MAX];
	int err = pin_path(path, sizeof(path), bpf_root, CW_MAP_METRICS);

	if (err)
		return err;
	if (access(path, F_OK) || metrics_pin_current(path))
		return 0;
	if (unlink(path) < 0) {
		err = -errno;
		pr_err("datapath: cannot remove %s, pinned with an older layout: %s", path,
		       strerror(errno));
		return err;
	}
	pr_info("datapath: %s had an older layout (not a per-CPU array of %d slots): replaced, "
		"its counters restart", path, CW_MAX_METRICS);
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
	return pin_path(path, sizeof(path), bpf_root, CW_MAP_METRICS) == 0 &&
	       metrics_pin_current(path);
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

static int open_failed(const char *what)
{
	int err = errno ? -errno : -EINVAL;

	pr_err("datapath: cannot open the BPF object %s: %s", what, strerror(-err));
	return err;
}

/*
 * Both objects declare the same maps pinned by name under @bpf_root: the
 * first load creates (or adopts) and pins them, the second adopts them, so
 * all programs share one instance of each.  Every program is loaded before
 * any is pinned, so a verifier failure in one leaves the old programs in
 * place (new maps may already be pinned, empty, which the next load adopts).
 */
static int load_locked(const char *bpf_root)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = bpf_root);
	struct lxc *lxc = NULL;
	struct overlay *overlay = NULL;
	struct netdev *netdev = NULL;
	int err;

	err = replace_stale_metrics(bpf_root);
	if (err)
		return err;
	lxc = lxc__open_opts(&opts);
	if (!lxc)
		return open_failed("lxc");
	overlay = overlay__open_opts(&opts);
	if (!overlay) {
		err = open_failed("overlay");
		goto cleanup;
	}
	netdev = netdev__open_opts(&opts);
	if (!netdev) {
		err = open_failed("netdev");
		goto cleanup;
	}
	err = lxc__load(lxc);
	if (!err)
		err = overlay__load(overlay);
	if (!err)
		err = netdev__load(netdev);
	if (err) {
		pr_err("datapath: loading the BPF programs failed: %s", strerror(-err));
		goto cleanup;
	}
	err = pin_prog_atomic(lxc->progs.from_container, bpf_root, CW_PIN_FROM_CONTAINER);
	if (!err)
		err = pin_prog_atomic(lxc->progs.to_container, bpf_root, CW_PIN_TO_CONTAINER);
	if (!err)
		err = pin_prog_atomic(overlay->progs.from_overlay, bpf_root, CW_PIN_FROM_OVERLAY);
	if (!err)
		err = pin_prog_atomic(overlay->progs.to_overlay, bpf_root, CW_PIN_TO_OVERLAY);
	if (!err)
		err = pin_prog_atomic(netdev->progs.from_netdev, bpf_root, CW_PIN_FROM_NETDEV);
	if (!err)
		err = pin_prog_atomic(netdev->progs.to_netdev, bpf_root, CW_PIN_TO_NETDEV);
	if (!err)
		pr_info("datapath: programs loaded and pinned in %s", bpf_root);
cleanup:
	netdev__destroy(netdev);
	overlay__destroy(overlay);
	lxc__destroy(lxc);
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
	cw_close(dp->map_ipcache);
	cw_close(dp->map_tunnel);
	cw_close(dp->map_config);
	cw_close(dp->map_lb4_services);
	cw_close(dp->map_lb4_backends);
	cw_close(dp->map_lb4_revnat);
	cw_close(dp->map_lb4_ct);
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
	dp->map_ipcache = dp->map_tunnel = dp->map_config = -1;
	dp->map_lb4_services = dp->map_lb4_backends = dp->map_lb4_revnat = dp->map_lb4_ct = -1;
	snprintf(dp->root, sizeof(dp->root), "%s", bpf_root);
	err = open_pin(bpf_root, CW_PIN_FROM_CONTAINER, &dp->prog_from_container);
	if (!err)
		err = open_pin(bpf_root, CW_PIN_TO_CONTAINER, &dp->prog_to_container);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_ENDPOINTS, &dp->map_endpoints);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_METRICS, &dp->map_metrics);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_IPCACHE, &dp->map_ipcache);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_TUNNEL, &dp->map_tunnel);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_CONFIG, &dp->map_config);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_LB4_SERVICES, &dp->map_lb4_services);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_LB4_BACKENDS, &dp->map_lb4_backends);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_LB4_REVNAT, &dp->map_lb4_revnat);
	if (!err)
		err = open_pin(bpf_root, CW_MAP_LB4_CT, &dp->map_lb4_ct);
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

int cw_tc_detach(int ifindex, bool ingress)
{
	struct bpf_tc_hook hook;
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = CW_TC_HANDLE, .priority = CW_TC_PRIORITY);
	int err;

	tc_hook(&hook, ifindex, ingress);
	err = bpf_tc_detach(&hook, &opts);
	/* no clsact qdisc (EINVAL), or no filter at our handle (ENOENT): detached */
	return err == -ENOENT || err == -EINVAL ? 0 : err;
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

/* Whether @name is one of our programs (each pinned under its own name). */
static bool ours(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(prog_pins); i++)
		if (strcmp(prog_pins[i], name) == 0)
			return true;
	return false;
}

int cw_dp_attach_pinned(const char *bpf_root, const char *name, int ifindex, bool ingress)
{
	int fd, err;

	err = open_pin(bpf_root, name, &fd);
	if (err)
		return err;
	err = cw_tc_attach(ifindex, fd, ingress);
	close(fd);
	return err;
}

/* The kernel's name of program @id; -ENOENT once it is gone. */
static int prog_name(__u32 id, char *name, size_t len)
{
	struct bpf_prog_info info = {};
	__u32 ilen = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(id), err = 0;

	if (fd < 0)
		return -errno;
	if (bpf_obj_get_info_by_fd(fd, &info, &ilen))
		err = -errno;
	else
		snprintf(name, len, "%s", info.name);
	close(fd);
	return err;
}

int cw_dp_refresh_link(const char *bpf_root, int ifindex, const char *ifname)
{
	int moved = 0, first_err = 0;

	for (int dir = 0; dir < 2; dir++) {
		bool ingress = dir == 0;
		char name[BPF_OBJ_NAME_LEN];
		__u32 id, want = 0;
		int fd = -1, err;

		err = cw_tc_query(ifindex, ingress, &id);
		if (err == -ENODEV)
			return moved; /* the link went away (a pod deleted meanwhile) */
		if (err) {
			first_err = first_err ? first_err : err;
			continue;
		}
		if (!id || prog_name(id, name, sizeof(name)) || !ours(name))
			continue; /* gone meanwhile, or not one of ours: left alone */
		err = open_pin(bpf_root, name, &fd);
		if (!err)
			err = cw_prog_id(fd, &want);
		if (!err && want != id)
			err = cw_tc_attach(ifindex, fd, ingress);
		cw_close(fd);
		if (err == -ENODEV)
			return moved;
		if (err) {
			pr_err("datapath: cannot move %s %s from program %u to the pinned %s: %s", ifname,
			       ingress ? "ingress" : "egress", id, name, strerror(-err));
			first_err = first_err ? first_err : err;
		} else if (want != id) {
			pr_info("datapath: %s %s: program %u replaced by the pinned %s (%u)", ifname,
				ingress ? "ingress" : "egress", id, name, want);
			moved++;
		}
	}
	return first_err ? first_err : moved;
}

int cw_dp_refresh_all(const char *bpf_root, unsigned int *moved)
{
	struct if_nameindex *ifs = if_nameindex();
	int first_err = 0;

	*moved = 0;
	if (!ifs)
		return -errno;
	for (struct if_nameindex *i = ifs; i->if_index; i++) {
		int rc = cw_dp_refresh_link(bpf_root, (int)i->if_index, i->if_name);

		if (rc < 0)
			first_err = first_err ? first_err : rc;
		else
			*moved += (unsigned int)rc;
	}
	if_freenameindex(ifs);
	return first_err;
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

/*
 * LPM trie keys are written canonical (host bits cleared): the kernel keeps
 * the bits past the prefix as last written and hands them back in a listing,
 * so 10.1.2.3/24 and 10.1.2.0/24, one entry, would be listed under either
 * name and a resync comparing listed keys with wanted ones would churn.
 */
static int lpm_key(__be32 ip4, __u8 prefixlen, struct cw_lpm_key *key)
{
	if (prefixlen > 32)
		return -EINVAL;
	memset(key, 0, sizeof(*key));
	key->prefixlen = prefixlen;
	key->ip4 = prefixlen ? htonl(ntohl(ip4) & (~0U << (32 - prefixlen))) : 0;
	return 0;
}

static int lpm_put(int fd, __be32 ip4, __u8 prefixlen, const void *value)
{
	struct cw_lpm_key key;
	int err = lpm_key(ip4, prefixlen, &key);

	if (err)
		return err;
	return bpf_map_update_elem(fd, &key, value, BPF_ANY) ? -errno : 0;
}

/*
 * The entry of exactly @ip4/@prefixlen.  A trie lookup is a longest-prefix
 * match, which would answer for a missing /32 with its covering /24, and a
 * resync comparing wanted against present entries would then skip the
 * write.  Exactness comes from BPF_MAP_GET_NEXT_KEY, which (bpf(2)) returns
 * the first key when the given key is absent: a present key has a
 * different successor than the first key, or none.
 */
static int lpm_get(int fd, __be32 ip4, __u8 prefixlen, void *value)
{
	struct cw_lpm_key key, next, first;
	int err = lpm_key(ip4, prefixlen, &key);

	if (err)
		return err;
	if (bpf_map_lookup_elem(fd, &key, value))
		return -errno;
	if (bpf_map_get_next_key(fd, &key, &next))
		return errno == ENOENT ? 0 : -errno; /* @key is the last key */
	if (bpf_map_get_next_key(fd, NULL, &first))
		return -errno;
	return memcmp(&next, &first, sizeof(next)) ? 0 : -ENOENT;
}

static int lpm_delete(int fd, __be32 ip4, __u8 prefixlen)
{
	struct cw_lpm_key key;
	int err = lpm_key(ip4, prefixlen, &key);

	if (err)
		return err;
	if (bpf_map_delete_elem(fd, &key) && errno != ENOENT)
		return -errno;
	return 0;
}

/*
 * Every key of a map, in the map's order (a trie's is most specific
 * first).  The listing restarts from the first key when the previous one
 * is deleted under it, so a map changing meanwhile could list forever:
 * more keys than the map can hold means exactly that, and the caller may
 * retry.
 */
static int map_keys(int fd, void **keys, size_t *n)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	unsigned char *out = NULL, *grown, *prev = NULL;
	size_t count = 0, cap = 0, ksize;
	int err = 0;

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	ksize = info.key_size;
	for (;;) {
		if (count == cap) {
			cap = cap ? cap * 2 : 64;
			grown = realloc(out, cap * ksize);
			if (!grown) {
				err = -ENOMEM;
				goto cleanup;
			}
			out = grown;
			prev = count ? out + (count - 1) * ksize : NULL;
		}
		if (bpf_map_get_next_key(fd, prev, out + count * ksize)) {
			if (errno != ENOENT)
				err = -errno;
			break;
		}
		prev = out + count++ * ksize;
		if (count > info.max_entries) {
			err = -EAGAIN;
			break;
		}
	}
cleanup:
	if (err) {
		free(out);
		return err;
	}
	*keys = out;
	*n = count;
	return 0;
}

static int lpm_keys(int fd, struct cw_lpm_key **keys, size_t *n)
{
	return map_keys(fd, (void **)keys, n);
}

int cw_ipcache_put(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen,
		   const struct cw_ipcache_info *info)
{
	return lpm_put(dp->map_ipcache, ip4, prefixlen, info);
}

int cw_ipcache_get(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen, struct cw_ipcache_info *info)
{
	return lpm_get(dp->map_ipcache, ip4, prefixlen, info);
}

int cw_ipcache_delete(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen)
{
	return lpm_delete(dp->map_ipcache, ip4, prefixlen);
}

int cw_ipcache_keys(const struct cw_dp *dp, struct cw_lpm_key **keys, size_t *n)
{
	return lpm_keys(dp->map_ipcache, keys, n);
}

int cw_tunnel_put(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen,
		  const struct cw_tunnel_info *info)
{
	return lpm_put(dp->map_tunnel, ip4, prefixlen, info);
}

int cw_tunnel_get(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen, struct cw_tunnel_info *info)
{
	return lpm_get(dp->map_tunnel, ip4, prefixlen, info);
}

int cw_tunnel_delete(const struct cw_dp *dp, __be32 ip4, __u8 prefixlen)
{
	return lpm_delete(dp->map_tunnel, ip4, prefixlen);
}

int cw_tunnel_keys(const struct cw_dp *dp, struct cw_lpm_key **keys, size_t *n)
{
	return lpm_keys(dp->map_tunnel, keys, n);
}

int cw_config_put(const struct cw_dp *dp, const struct cw_config *cfg)
{
	__u32 zero = 0;

	return bpf_map_update_elem(dp->map_config, &zero, cfg, BPF_ANY) ? -errno : 0;
}

int cw_config_get(const struct cw_dp *dp, struct cw_config *cfg)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(dp->map_config, &zero, cfg) ? -errno : 0;
}

static int lb4_key_check(const struct cw_lb4_key *key)
{
	return key->proto == IPPROTO_TCP || key->proto == IPPROTO_UDP ? 0 : -EINVAL;
}

/* Keys are copied with their padding cleared: the kernel hashes every byte. */
static struct cw_lb4_key lb4_key(const struct cw_lb4_key *key)
{
	struct cw_lb4_key k;

	memset(&k, 0, sizeof(k));
	k.address = key->address;
	k.port = key->port;
	k.proto = key->proto;
	return k;
}

static int map_put(int fd, const void *key, const void *value)
{
	return bpf_map_update_elem(fd, key, value, BPF_ANY) ? -errno : 0;
}

static int map_get(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value) ? -errno : 0;
}

static int map_delete(int fd, const void *key)
{
	if (bpf_map_delete_elem(fd, key) && errno != ENOENT)
		return -errno;
	return 0;
}

int cw_lb4_service_put(const struct cw_dp *dp, const struct cw_lb4_key *key,
		       const struct cw_lb4_service *svc)
{
	struct cw_lb4_key k = lb4_key(key);
	struct cw_lb4_service v = *svc;

	if (lb4_key_check(key) || !svc->rev_nat_id)
		return -EINVAL;
	v.pad = 0;
	return map_put(dp->map_lb4_services, &k, &v);
}

int cw_lb4_service_get(const struct cw_dp *dp, const struct cw_lb4_key *key,
		       struct cw_lb4_service *svc)
{
	struct cw_lb4_key k = lb4_key(key);

	if (lb4_key_check(key))
		return -EINVAL;
	return map_get(dp->map_lb4_services, &k, svc);
}

int cw_lb4_service_delete(const struct cw_dp *dp, const struct cw_lb4_key *key)
{
	struct cw_lb4_key k = lb4_key(key);

	if (lb4_key_check(key))
		return -EINVAL;
	return map_delete(dp->map_lb4_services, &k);
}

int cw_lb4_backend_put(const struct cw_dp *dp, __u16 rev_nat_id, __u16 slot,
		       const struct cw_lb4_backend *be)
{
	struct cw_lb4_slot_key k = { .rev_nat_id = rev_nat_id, .slot = slot };
	struct cw_lb4_backend v = *be;

	if (!rev_nat_id || !slot)
		return -EINVAL;
	v.pad = 0;
	return map_put(dp->map_lb4_backends, &k, &v);
}

int cw_lb4_backend_get(const struct cw_dp *dp, __u16 rev_nat_id, __u16 slot,
		       struct cw_lb4_backend *be)
{
	struct cw_lb4_slot_key k = { .rev_nat_id = rev_nat_id, .slot = slot };

	if (!rev_nat_id || !slot)
		return -EINVAL;
	return map_get(dp->map_lb4_backends, &k, be);
}

int cw_lb4_backend_delete(const struct cw_dp *dp, __u16 rev_nat_id, __u16 slot)
{
	struct cw_lb4_slot_key k = { .rev_nat_id = rev_nat_id, .slot = slot };

	if (!rev_nat_id || !slot)
		return -EINVAL;
	return map_delete(dp->map_lb4_backends, &k);
}

int cw_lb4_revnat_put(const struct cw_dp *dp, __u16 rev_nat_id,
		      const struct cw_lb4_reverse_nat *nat)
{
	struct cw_lb4_reverse_nat v = *nat;

	if (!rev_nat_id)
		return -EINVAL;
	v.pad = 0;
	return map_put(dp->map_lb4_revnat, &rev_nat_id, &v);
}

int cw_lb4_revnat_get(const struct cw_dp *dp, __u16 rev_nat_id, struct cw_lb4_reverse_nat *nat)
{
	if (!rev_nat_id)
		return -EINVAL;
	return map_get(dp->map_lb4_revnat, &rev_nat_id, nat);
}

int cw_lb4_revnat_delete(const struct cw_dp *dp, __u16 rev_nat_id)
{
	if (!rev_nat_id)
		return -EINVAL;
	return map_delete(dp->map_lb4_revnat, &rev_nat_id);
}

/* Slots @from..@to of @rev_nat_id; 0 when all are gone. */
static int lb4_slots_delete(const struct cw_dp *dp, __u16 rev_nat_id, unsigned int from,
			    unsigned int to)
{
	int err = 0, e;

	for (unsigned int slot = from; slot <= to; slot++) {
		e = cw_lb4_backend_delete(dp, rev_nat_id, (__u16)slot);
		if (e && !err)
			err = e;
	}
	return err;
}

int cw_lb4_service_set(const struct cw_dp *dp, const struct cw_lb4_key *key, __u16 rev_nat_id,
		       __u16 flags, const struct cw_lb4_backend *slots, size_t n)
{
	struct cw_lb4_reverse_nat nat = { .address = key->address, .port = key->port };
	struct cw_lb4_service old = { 0 }, svc = { .count = (__u16)n, .rev_nat_id = rev_nat_id,
						    .flags = flags };
	bool had;
	int err;

	if (lb4_key_check(key) || !rev_nat_id || n > UINT16_MAX)
		return -EINVAL;
	err = cw_lb4_service_get(dp, key, &old);
	if (err && err != -ENOENT)
		return err;
	had = err == 0;
	err = cw_lb4_revnat_put(dp, rev_nat_id, &nat);
	if (err)
		return err;
	/*
	 * Slots below the old count are overwritten in place: a flow hashing
	 * meanwhile gets the old backend or the new one, both valid choices.
	 */
	for (size_t i = 0; i < n; i++) {
		err = cw_lb4_backend_put(dp, rev_nat_id, (__u16)(i + 1), &slots[i]);
		if (err)
			return err;
	}
	err = cw_lb4_service_put(dp, key, &svc);
	if (err)
		return err;
	if (!had)
		return 0;
	if (old.rev_nat_id != rev_nat_id)
		return lb4_slots_delete(dp, old.rev_nat_id, 1, old.count);
	return lb4_slots_delete(dp, rev_nat_id, (unsigned int)n + 1, old.count);
}

int cw_lb4_service_remove(const struct cw_dp *dp, const struct cw_lb4_key *key)
{
	struct cw_lb4_service old;
	int err, e;

	err = cw_lb4_service_get(dp, key, &old);
	if (err)
		return err == -ENOENT ? 0 : err;
	/* The entry first: no new flow hashes into slots being deleted. */
	err = cw_lb4_service_delete(dp, key);
	if (err)
		return err;
	err = lb4_slots_delete(dp, old.rev_nat_id, 1, old.count);
	e = cw_lb4_revnat_delete(dp, old.rev_nat_id);
	return err ? err : e;
}

int cw_lb4_service_keys(const struct cw_dp *dp, struct cw_lb4_key **keys, size_t *n)
{
	return map_keys(dp->map_lb4_services, (void **)keys, n);
}

int cw_lb4_backend_keys(const struct cw_dp *dp, struct cw_lb4_slot_key **keys, size_t *n)
{
	return map_keys(dp->map_lb4_backends, (void **)keys, n);
}

int cw_lb4_revnat_keys(const struct cw_dp *dp, __u16 **ids, size_t *n)
{
	return map_keys(dp->map_lb4_revnat, (void **)ids, n);
}

int cw_lb4_ct_lookup(const struct cw_dp *dp, const struct cw_ct4_key *key, struct cw_ct4_entry *e)
{
	struct cw_ct4_key k = *key;

	k.pad[0] = k.pad[1] = 0;
	return map_get(dp->map_lb4_ct, &k, e);
}

int cw_lb4_ct_flow(const struct cw_dp *dp, __be32 client, __be16 client_port,
		   const struct cw_lb4_key *frontend, struct cw_ct4_entry *e)
{
	struct cw_ct4_key k = { .saddr = client, .daddr = frontend->address, .sport = client_port,
				.dport = frontend->port, .proto = frontend->proto,
				.kind = CW_CT_SERVICE };

	return map_get(dp->map_lb4_ct, &k, e);
}

int cw_lb4_ct_keys(const struct cw_dp *dp, struct cw_ct4_key **keys, size_t *n)
{
	return map_keys(dp->map_lb4_ct, (void **)keys, n);
}

__u32 cw_lb4_ct_clock(void)
{
	struct timespec ts;

	/* bpf_ktime_get_ns() reads CLOCK_MONOTONIC */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u32)ts.tv_sec;
}

/* Whether reply entry @k (with @r) still leads to a live flow to its sender. */
static bool ct_reply_live(const struct cw_dp *dp, const struct cw_ct4_key *k,
			  const struct cw_ct4_entry *r, __u32 now)
{
	struct cw_lb4_reverse_nat nat;
	struct cw_lb4_key fe;
	struct cw_ct4_entry e;
	__be32 client;

	if (cw_lb4_revnat_get(dp, r->rev_nat_id, &nat))
		return false;
	memset(&fe, 0, sizeof(fe));
	fe.address = nat.address;
	fe.port = nat.port;
	fe.proto = k->proto;
	/* a hairpin flow's reply goes to the loopback address, its client is the sender */
	client = k->daddr == htonl(CW_LB_LOOPBACK4) ? k->saddr : k->daddr;
	if (cw_lb4_ct_flow(dp, client, k->dport, &fe, &e))
		return false;
	return now <= e.expires && e.backend_addr == k->saddr && e.backend_port == k->sport &&
	       e.rev_nat_id == r->rev_nat_id;
}

int cw_lb4_ct_gc(const struct cw_dp *dp, __u32 now, size_t *deleted)
{
	struct cw_ct4_key *keys = NULL;
	struct cw_ct4_entry e;
	size_t n = 0, gone = 0;
	int err;

	err = cw_lb4_ct_keys(dp, &keys, &n);
	if (err)
		return err;
	/* Service entries first, so replies of flows that just expired go too. */
	for (int pass = CW_CT_SERVICE; pass <= CW_CT_REPLY; pass++) {
		for (size_t i = 0; i < n; i++) {
			bool dead;

			if (keys[i].kind != pass || map_get(dp->map_lb4_ct, &keys[i], &e))
				continue;
			if (pass == CW_CT_SERVICE)
				dead = now > e.expires;
			else
				dead = !ct_reply_live(dp, &keys[i], &e, now);
			if (dead && map_delete(dp->map_lb4_ct, &keys[i]) == 0)
				gone++;
		}
	}
	free(keys);
	if (deleted)
		*deleted = gone;
	return 0;
}

int cw_metrics_sum(int map_fd, __u8 reason, __u8 dir, struct cw_metrics_value *out)
{
	__u32 idx = cw_metrics_index(reason, dir);
	int ncpu = libbpf_num_possible_cpus();
	struct cw_metrics_value *vals;
	int err = 0;

	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	vals = calloc((size_t)ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	memset(out, 0, sizeof(*out));
	if (bpf_map_lookup_elem(map_fd, &idx, vals)) {
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

void cw_metrics_each(int map_fd,
		     void (*fn)(unsigned int reason, unsigned int dir,
				const struct cw_metrics_value *v, void *ctx),
		     void *ctx)
{
	struct cw_metrics_value v;

	/* the reasons a counter can carry: forwarded (0) and the drops */
	for (unsigned int r = 0; r < CW_DROP_MAX; r = r ? r + 1 : CW_DROP_MIN)
		for (unsigned int dir = 0; dir < 2; dir++)
			if (!cw_metrics_sum(map_fd, (__u8)r, (__u8)dir, &v) && v.packets)
				fn(r, dir, &v, ctx);
}

const char *cw_dir_name(unsigned int dir)
{
	return dir == CW_DIR_INGRESS ? "ingress" : "egress";
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
	case CW_DROP_NO_TUNNEL_KEY: return "no tunnel metadata";
	case CW_DROP_TUNNEL_FAILED: return "tunnel key refused";
	case CW_DROP_NO_TUNNEL_DEV: return "no tunnel device";
	case CW_DROP_NO_SERVICE_BACKEND: return "no service backend";
	case CW_DROP_CT_CREATE_FAILED: return "conntrack entry not created";
	default: return "unknown reason";
	}
}
