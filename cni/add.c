// SPDX-License-Identifier: Apache-2.0
/*
 * ADD.  Each step that creates something records how to undo it; a failure
 * at any step undoes the earlier ones in reverse order and the error names
 * the step, so a failed ADD leaves the node as it found it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <causeway/addr.h>
#include <causeway/dp.h>
#include <causeway/endpoint.h>
#include <causeway/log.h>
#include <causeway/netlink.h>
#include <causeway/util.h>
#include "delegate.h"
#include "ipam.h"
#include "plugin.h"
#include "result.h"

struct add_ctx {
	struct cw_plugin *p;
	struct cw_dp *dp;
	int host_ns, pod_ns;
	struct nl_sock *host_sk;
	struct cw_endpoint_state ep;
	struct cw_result ipam_result;
	/* undo records */
	bool ip_fresh, ip_held, ipam_delegated_done, veth_made, map_written, state_written;
};

static int step_failed(struct add_ctx *c, int code, const char *step, int err)
{
	return cw_error_set(&c->p->err, code, "ADD failed at step \"%s\": %s", step, strerror(-err));
}

static int allocate_ip(struct add_ctx *c)
{
	const struct cw_conf *conf = c->p->conf;
	struct cw_ipam *ipam = NULL;
	struct cw_prefix4 pod_cidr;
	int err;

	if (conf->has_ipam) {
		if (cw_delegate(conf, &c->p->args, "ADD", &c->ipam_result, &c->p->err) < 0)
			return -1;
		c->ipam_delegated_done = true;
		if (c->ipam_result.n_ips == 0)
			return cw_error_set(&c->p->err, CW_ERR_IPAM_PLUGIN,
					    "IPAM plugin %s returned no IPv4 address", conf->ipam_type);
		c->ep.ip = c->ipam_result.ips[0].addr;
		c->ep.gateway = c->ipam_result.ips[0].gateway;
		if (!c->ep.gateway.s_addr) {
			/* No gateway given: use the first host of its subnet, as ptp does. */
			struct cw_prefix4 sub = { .len = c->ipam_result.ips[0].prefixlen };

			sub.addr.s_addr = htonl(ntohl(c->ep.ip.s_addr) &
						(sub.len ? ~0U << (32 - sub.len) : 0));
			c->ep.gateway = cw_ipam_gateway(&sub);
		}
		c->ep.ipam_delegated = true;
		return 0;
	}

	if (cw_conf_pod_cidr(conf, &pod_cidr, &c->p->err))
		return -1;
	err = cw_ipam_open(conf->state_dir, conf->name, &pod_cidr, CW_LOCK_TIMEOUT_MS, &ipam);
	if (err == -EAGAIN)
		return cw_error_set(&c->p->err, CW_ERR_TRY_AGAIN,
				    "ipam: lock in %s/ipam/%s busy for %d ms", conf->state_dir, conf->name,
				    CW_LOCK_TIMEOUT_MS);
	if (err)
		return cw_error_set(&c->p->err, CW_ERR_IPAM, "ipam: cannot open %s/ipam/%s: %s",
				    conf->state_dir, conf->name, strerror(-err));
	err = cw_ipam_allocate(ipam, c->ep.container_id, c->ep.ifname, &c->ep.ip, &c->ip_fresh,
			       &c->p->err);
	cw_ipam_close(ipam);
	if (err)
		return -1;
	c->ip_held = true;
	c->ep.gateway = cw_ipam_gateway(&pod_cidr);
	return 0;
}

static int setup_pod_side(struct add_ctx *c)
{
	struct nl_sock *sk = NULL;
	struct in_addr any = { 0 };
	const char *step = "enter pod netns";
	int err, ifindex = 0;

	err = cw_netns_enter(c->pod_ns);
	if (err)
		goto fail;
	step = "pod netlink";
	err = cw_nl_open(&sk);
	if (err)
		goto fail;
	step = "pod interface";
	err = cw_link_ifindex(sk, c->ep.ifname, &ifindex);
	if (err)
		goto fail;
	step = "pod address";
	err = cw_addr4_add(sk, ifindex, c->ep.ip, 32);
	if (err)
		goto fail;
	step = "pod link up";
	err = cw_link_set_up(sk, ifindex);
	if (err)
		goto fail;
	/*
	 * The pod holds a /32 and reaches everything through the gateway,
	 * which the host side answers for with a permanent neighbour entry:
	 * no ARP leaves the pod, nothing depends on proxy_arp, and the
	 * gateway needs no address on the host.
	 */
	step = "pod gateway route";
	err = cw_route4_add(sk, ifindex, c->ep.gateway, 32, any);
	if (err)
		goto fail;
	step = "pod default route";
	err = cw_route4_add(sk, ifindex, any, 0, c->ep.gateway);
	if (err)
		goto fail;
	step = "pod gateway neighbour";
	err = cw_neigh4_add(sk, ifindex, c->ep.gateway, c->ep.host_mac);
	if (err)
		goto fail;
	cw_nl_close(sk);
	err = cw_netns_enter(c->host_ns);
	if (err)
		return step_failed(c, CW_ERR_NETLINK, "return to host netns", err);
	return 0;
fail:
	cw_nl_close(sk);
	if (cw_netns_enter(c->host_ns))
		pr_err("cannot return to the host netns");
	return step_failed(c, CW_ERR_NETLINK, step, err);
}

static int setup_host_side(struct add_ctx *c)
{
	struct in_addr any = { 0 };
	int err;

	err = cw_link_ifindex(c->host_sk, c->ep.host_ifname, &c->ep.host_ifindex);
	if (err)
		return step_failed(c, CW_ERR_NETLINK, "host veth lookup", err);
	err = cw_link_set_up(c->host_sk, c->ep.host_ifindex);
	if (err)
		return step_failed(c, CW_ERR_NETLINK, "host veth up", err);
	err = cw_route4_add(c->host_sk, c->ep.host_ifindex, c->ep.ip, 32, any);
	if (err)
		return step_failed(c, CW_ERR_NETLINK, "host route to pod", err);
	err = cw_neigh4_add(c->host_sk, c->ep.host_ifindex, c->ep.ip, c->ep.pod_mac);
	if (err)
		return step_failed(c, CW_ERR_NETLINK, "host neighbour for pod", err);
	err = cw_write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
	if (err)
		return step_failed(c, CW_ERR_NETLINK, "enable ip_forward", err);
	return 0;
}

static int attach_datapath(struct add_ctx *c)
{
	struct cw_endpoint_info info = {
		.ifindex = (__u32)c->ep.host_ifindex,
		.identity = CW_IDENTITY_INIT,
		.ep_id = (__u16)(c->ep.host_ifindex & 0xffff),
		.flags = CW_EP_F_HOST_NEIGH,
	};
	int err;

	err = cw_tc_attach(c->ep.host_ifindex, c->dp->prog_from_container, true);
	if (err)
		return step_failed(c, CW_ERR_DATAPATH, "attach from-container", err);
	err = cw_tc_attach(c->ep.host_ifindex, c->dp->prog_to_container, false);
	if (err)
		return step_failed(c, CW_ERR_DATAPATH, "attach to-container", err);
	memcpy(info.pod_mac, c->ep.pod_mac, 6);
	memcpy(info.host_mac, c->ep.host_mac, 6);
	err = cw_ep_put(c->dp, c->ep.ip.s_addr, &info);
	if (err)
		return step_failed(c, CW_ERR_DATAPATH, "endpoint map", err);
	c->map_written = true;
	return 0;
}

static void build_result(struct add_ctx *c, struct cw_result *r)
{
	struct cw_plugin *p = c->p;

	memset(r, 0, sizeof(*r));
	r->n_ifaces = 2;
	snprintf(r->ifaces[0].name, sizeof(r->ifaces[0].name), "%s", c->ep.host_ifname);
	memcpy(r->ifaces[0].mac, c->ep.host_mac, 6);
	snprintf(r->ifaces[1].name, sizeof(r->ifaces[1].name), "%s", c->ep.ifname);
	memcpy(r->ifaces[1].mac, c->ep.pod_mac, 6);
	snprintf(r->ifaces[1].sandbox, sizeof(r->ifaces[1].sandbox), "%s", p->args.netns);
	r->n_ips = 1;
	r->ips[0].addr = c->ep.ip;
	r->ips[0].prefixlen = 32;
	r->ips[0].gateway = c->ep.gateway;
	r->ips[0].iface = 1;
	r->n_routes = 1;
	r->routes[0].gw = c->ep.gateway;
	r->dns = c->ipam_result.dns;
}

static void rollback(struct add_ctx *c)
{
	struct cw_plugin *p = c->p;
	struct cw_error ignored = { 0 };
	struct cw_ipam *ipam = NULL;

	if (c->state_written)
		cw_endpoint_remove(p->conf->state_dir, c->ep.container_id, c->ep.ifname);
	if (c->map_written)
		cw_ep_delete(c->dp, c->ep.ip.s_addr);
	if (c->veth_made && cw_link_del(c->host_sk, c->ep.host_ifname))
		pr_err("rollback: cannot delete %s", c->ep.host_ifname);
	if (c->ipam_delegated_done &&
	    cw_delegate(p->conf, &p->args, "DEL", NULL, &ignored) < 0)
		pr_err("rollback: IPAM plugin DEL failed: %s", ignored.msg);
	/* Only an address this ADD allocated is given back. */
	if (c->ip_held && c->ip_fresh &&
	    cw_ipam_open(p->conf->state_dir, p->conf->name, NULL, CW_LOCK_TIMEOUT_MS, &ipam) == 0) {
		cw_ipam_release(ipam, c->ep.container_id, c->ep.ifname);
		cw_ipam_close(ipam);
	}
	pr_warn("ADD %s/%s rolled back: %s", c->ep.container_id, c->ep.ifname, p->err.msg);
}

int cw_cmd_add(struct cw_plugin *p)
{
	struct add_ctx c = { .p = p, .host_ns = -1, .pod_ns = -1 };
	struct cw_result result;
	int err, rc = -1;

	snprintf(c.ep.container_id, sizeof(c.ep.container_id), "%s", p->args.container_id);
	snprintf(c.ep.ifname, sizeof(c.ep.ifname), "%s", p->args.ifname);
	snprintf(c.ep.netns, sizeof(c.ep.netns), "%s", p->args.netns);
	snprintf(c.ep.network, sizeof(c.ep.network), "%s", p->conf->name);
	snprintf(c.ep.pod_namespace, sizeof(c.ep.pod_namespace), "%s", p->args.pod_namespace);
	snprintf(c.ep.pod_name, sizeof(c.ep.pod_name), "%s", p->args.pod_name);
	snprintf(c.ep.pod_uid, sizeof(c.ep.pod_uid), "%s", p->args.pod_uid);
	cw_host_ifname(c.ep.container_id, c.ep.ifname, c.ep.host_ifname);
	c.ep.mtu = p->conf->mtu;
	c.ep.prefixlen = 32;

	/* Steps that create nothing come first: they need no undo. */
	err = cw_netns_open(p->args.netns, &c.pod_ns);
	if (err) {
		cw_error_set(&p->err, CW_ERR_INVALID_ENV, "CNI_NETNS %s cannot be opened: %s",
			     p->args.netns, strerror(-err));
		goto cleanup;
	}
	err = cw_netns_open("/proc/self/ns/net", &c.host_ns);
	if (!err)
		err = cw_nl_open(&c.host_sk);
	if (err) {
		step_failed(&c, CW_ERR_NETLINK, "host netlink", err);
		goto cleanup;
	}
	err = cw_dp_open(p->conf->bpf_root, p->conf->state_dir, true, &c.dp);
	if (err) {
		cw_error_set(&p->err, CW_ERR_DATAPATH,
			     "ADD failed at step \"datapath\": pinned programs in %s unavailable: %s",
			     p->conf->bpf_root, strerror(-err));
		goto cleanup;
	}
	if (cw_mac_random(c.ep.pod_mac) || cw_mac_random(c.ep.host_mac)) {
		step_failed(&c, CW_ERR_IO, "MAC generation", -EIO);
		goto cleanup;
	}

	/*
	 * A veth under our name with no state file is a leftover: a crashed
	 * ADD, or a DEL whose detached unregister has not finished.  The name
	 * is derived from this very attachment, so it is ours to remove.
	 */
	{
		struct cw_endpoint_state old;
		int stale_ifindex;

		if (cw_link_ifindex(c.host_sk, c.ep.host_ifname, &stale_ifindex) == 0 &&
		    cw_endpoint_read(p->conf->state_dir, c.ep.container_id, c.ep.ifname, &old) != 0) {
			pr_info("ADD: removing leftover %s (ifindex %d)", c.ep.host_ifname, stale_ifindex);
			cw_link_del_ifindex(c.host_sk, stale_ifindex);
		}
	}

	if (allocate_ip(&c) < 0)
		goto undo;

	err = cw_veth_create(c.host_sk, c.ep.host_ifname, c.ep.host_mac, c.ep.ifname,
			     c.ep.pod_mac, c.pod_ns, c.ep.mtu);
	if (err) {
		cw_error_set(&p->err, CW_ERR_NETLINK,
			     "ADD failed at step \"create veth\": %s (host %s, pod %s in %s)",
			     strerror(-err), c.ep.host_ifname, c.ep.ifname, p->args.netns);
		goto undo;
	}
	c.veth_made = true;

	if (setup_pod_side(&c) < 0 || setup_host_side(&c) < 0 || attach_datapath(&c) < 0)
		goto undo;

	err = cw_endpoint_write(p->conf->state_dir, &c.ep);
	if (err) {
		step_failed(&c, CW_ERR_IO, "endpoint state file", err);
		goto undo;
	}
	c.state_written = true;

	build_result(&c, &result);
	p->out = cw_result_format(&result, p->conf->cni_version);
	if (!p->out) {
		cw_error_set(&p->err, CW_ERR_IO, "ADD failed at step \"result\": out of memory");
		goto undo;
	}
	pr_info("ADD %s/%s: %s on %s", c.ep.container_id, c.ep.ifname,
		inet_ntoa(c.ep.ip), c.ep.host_ifname);
	rc = 0;
	goto cleanup;
undo:
	rollback(&c);
cleanup:
	cw_result_clear(&c.ipam_result);
	cw_dp_free(c.dp);
	cw_nl_close(c.host_sk);
	cw_close(c.host_ns);
	cw_close(c.pod_ns);
	return rc;
}
