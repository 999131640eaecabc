// SPDX-License-Identifier: Apache-2.0
/*
 * DEL and the teardown it shares with GC.  DEL must succeed when things are
 * already gone (SPEC.md: "plugins should generally complete a DEL action
 * without error even if some resources are missing"), so every step treats
 * absence as done.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <cjson/cJSON.h>

#include <causeway/addr.h>
#include <causeway/dp.h>
#include <causeway/endpoint.h>
#include <causeway/log.h>
#include <causeway/netlink.h>
#include "delegate.h"
#include "ipam.h"
#include "plugin.h"
#include "result.h"

/* The pod IP from prevResult, when the runtime passes one on DEL. */
static bool ip_from_prev_result(const struct cw_conf *conf, struct in_addr *ip)
{
	struct cw_result r;
	struct cw_error ignored = { 0 };
	bool ok;

	if (!conf->prev_result || cw_result_parse_json(conf->prev_result, &r, &ignored) < 0)
		return false;
	ok = r.n_ips > 0;
	if (ok)
		*ip = r.ips[0].addr;
	cw_result_clear(&r);
	return ok;
}

int cw_teardown(const struct cw_conf *conf, const struct cw_args *args, const char *container_id,
		const char *ifname, bool delegate_ipam, bool async_link, struct cw_error *err)
{
	struct cw_endpoint_state ep;
	struct cw_ipam *ipam = NULL;
	struct cw_dp *dp = NULL;
	struct nl_sock *sk = NULL;
	struct in_addr ip = { 0 };
	char host_ifname[16];
	int host_ifindex = 0, rc;
	bool have_state;

	cw_host_ifname(container_id, ifname, host_ifname);
	have_state = cw_endpoint_read(conf->state_dir, container_id, ifname, &ep) == 0;
	if (have_state) {
		ip = ep.ip;
		host_ifindex = ep.host_ifindex;
	}

	/* 1. the address */
	if (delegate_ipam && conf->has_ipam) {
		if (cw_delegate(conf, args, "DEL", NULL, err) < 0)
			return -1;
	} else {
		rc = cw_ipam_open(conf->state_dir, conf->name, NULL, CW_LOCK_TIMEOUT_MS, &ipam);
		if (rc == -EAGAIN)
			return cw_error_set(err, CW_ERR_TRY_AGAIN, "ipam: lock busy for %d ms",
					    CW_LOCK_TIMEOUT_MS);
		if (rc == 0) {
			if (!ip.s_addr)
				cw_ipam_find(ipam, container_id, ifname, &ip);
			rc = cw_ipam_release(ipam, container_id, ifname);
			cw_ipam_close(ipam);
			if (rc)
				return cw_error_set(err, CW_ERR_IPAM, "ipam: release for %s/%s failed: %s",
						    container_id, ifname, strerror(-rc));
		}
	}
	if (!ip.s_addr)
		ip_from_prev_result(conf, &ip);

	/* 2. the map entry, only if it is still ours: once the address is
	 * released a concurrent ADD may have taken it for another veth. */
	if (cw_nl_open(&sk) == 0 && !host_ifindex)
		cw_link_ifindex(sk, host_ifname, &host_ifindex);
	if (ip.s_addr && cw_dp_open(conf->bpf_root, conf->state_dir, false, &dp) == 0) {
		struct cw_endpoint_info info;

		if (cw_ep_get(dp, ip.s_addr, &info) == 0 && (int)info.ifindex == host_ifindex &&
		    cw_ep_delete(dp, ip.s_addr) < 0)
			pr_warn("DEL: cannot delete endpoint map entry");
		cw_dp_free(dp);
	}

	/*
	 * 3. the veth: deleting the host end removes the pod end too.  Async:
	 * down now (the pod is cut off before DEL returns), unregistered by
	 * a detached child.  Only a link that still carries our name and
	 * ifindex is touched.
	 */
	if (sk && async_link && host_ifindex) {
		int now_ifindex = 0;

		if (cw_link_ifindex(sk, host_ifname, &now_ifindex) == 0 && now_ifindex == host_ifindex &&
		    cw_link_set_down(sk, host_ifindex) == 0) {
			rc = cw_link_del_ifindex_detached(host_ifindex);
			if (rc)
				rc = cw_link_del_ifindex(sk, host_ifindex);
		} else {
			rc = cw_link_del(sk, host_ifname);
		}
		cw_nl_close(sk);
		if (rc)
			return cw_error_set(err, CW_ERR_NETLINK, "DEL: cannot delete %s: %s", host_ifname,
					    strerror(-rc));
	} else if (sk) {
		rc = cw_link_del(sk, host_ifname);
		cw_nl_close(sk);
		if (rc)
			return cw_error_set(err, CW_ERR_NETLINK, "DEL: cannot delete %s: %s", host_ifname,
					    strerror(-rc));
	}

	/* 4. the state file, last: it is how a retried DEL finds the rest */
	rc = cw_endpoint_remove(conf->state_dir, container_id, ifname);
	if (rc)
		return cw_error_set(err, CW_ERR_IO, "DEL: cannot remove endpoint state: %s", strerror(-rc));
	return 0;
}

int cw_cmd_del(struct cw_plugin *p)
{
	int rc = cw_teardown(p->conf, &p->args, p->args.container_id, p->args.ifname, true,
			     p->conf->async_link_delete, &p->err);

	if (rc == 0)
		pr_info("DEL %s/%s done", p->args.container_id, p->args.ifname);
	return rc;
}
