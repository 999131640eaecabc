// SPDX-License-Identifier: Apache-2.0
/* CHECK: verify that what ADD made is still there, naming what is not. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

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

#define MISSING(p, ...) cw_error_set(&(p)->err, CW_ERR_CHECK, __VA_ARGS__)

static int check_pod_side(struct cw_plugin *p, const struct cw_endpoint_state *ep, int pod_ns,
			  int host_ns)
{
	struct in_addr any = { 0 };
	struct nl_sock *sk = NULL;
	uint8_t mac[6];
	char ip[16], gw[16];
	int ifindex, rc = -1;
	bool up;

	cw_addr4_str(ep->ip, ip);
	cw_addr4_str(ep->gateway, gw);
	if (cw_netns_enter(pod_ns) || cw_nl_open(&sk)) {
		MISSING(p, "CHECK: cannot enter pod netns %s", ep->netns);
		goto out;
	}
	if (cw_link_get(sk, ep->ifname, &ifindex, mac, NULL, &up)) {
		MISSING(p, "CHECK: interface %s is missing in %s", ep->ifname, ep->netns);
		goto out;
	}
	if (memcmp(mac, ep->pod_mac, 6) != 0)
		MISSING(p, "CHECK: interface %s has a different MAC than ADD set", ep->ifname);
	else if (!up)
		MISSING(p, "CHECK: interface %s is down", ep->ifname);
	else if (!cw_addr4_present(sk, ifindex, ep->ip, 32))
		MISSING(p, "CHECK: address %s/32 is missing on %s", ip, ep->ifname);
	else if (!cw_route4_present(sk, ifindex, ep->gateway, 32, any))
		MISSING(p, "CHECK: route %s/32 dev %s is missing", gw, ep->ifname);
	else if (!cw_route4_present(sk, ifindex, any, 0, ep->gateway))
		MISSING(p, "CHECK: default route via %s dev %s is missing", gw, ep->ifname);
	else if (!cw_neigh4_present(sk, ifindex, ep->gateway, ep->host_mac))
		MISSING(p, "CHECK: permanent neighbour entry for gateway %s is missing", gw);
	else
		rc = 0;
out:
	cw_nl_close(sk);
	if (cw_netns_enter(host_ns))
		pr_err("CHECK: cannot return to the host netns");
	return rc;
}

static int check_host_side(struct cw_plugin *p, const struct cw_endpoint_state *ep)
{
	struct in_addr any = { 0 };
	struct cw_endpoint_info info;
	struct nl_sock *sk = NULL;
	struct cw_dp *dp = NULL;
	__u32 want_in, want_out, got_in, got_out;
	int ifindex, rc = -1;
	char ip[16];
	bool up;

	cw_addr4_str(ep->ip, ip);
	if (cw_nl_open(&sk)) {
		MISSING(p, "CHECK: cannot open netlink");
		goto out;
	}
	if (cw_link_get(sk, ep->host_ifname, &ifindex, NULL, NULL, &up)) {
		MISSING(p, "CHECK: host veth %s is missing", ep->host_ifname);
		goto out;
	}
	if (ifindex != ep->host_ifindex) {
		MISSING(p, "CHECK: host veth %s has ifindex %d, ADD made %d", ep->host_ifname, ifindex,
			ep->host_ifindex);
		goto out;
	}
	if (!up) {
		MISSING(p, "CHECK: host veth %s is down", ep->host_ifname);
		goto out;
	}
	if (!cw_route4_present(sk, ifindex, ep->ip, 32, any)) {
		MISSING(p, "CHECK: host route %s/32 dev %s is missing", ip, ep->host_ifname);
		goto out;
	}
	if (!cw_neigh4_present(sk, ifindex, ep->ip, ep->pod_mac)) {
		MISSING(p, "CHECK: host neighbour entry for %s is missing", ip);
		goto out;
	}
	if (cw_dp_open(p->conf->bpf_root, p->conf->state_dir, false, &dp)) {
		MISSING(p, "CHECK: pinned programs and maps are missing in %s", p->conf->bpf_root);
		goto out;
	}
	if (cw_prog_id(dp->prog_from_container, &want_in) || cw_prog_id(dp->prog_to_container, &want_out) ||
	    cw_tc_query(ifindex, true, &got_in) || cw_tc_query(ifindex, false, &got_out)) {
		MISSING(p, "CHECK: cannot query tc programs on %s", ep->host_ifname);
		goto out;
	}
	if (got_in != want_in) {
		MISSING(p, "CHECK: from-container program is not attached to %s ingress (found id %u, pinned id %u)",
			ep->host_ifname, got_in, want_in);
		goto out;
	}
	if (got_out != want_out) {
		MISSING(p, "CHECK: to-container program is not attached to %s egress (found id %u, pinned id %u)",
			ep->host_ifname, got_out, want_out);
		goto out;
	}
	if (cw_ep_get(dp, ep->ip.s_addr, &info)) {
		MISSING(p, "CHECK: endpoint map entry for %s is missing", ip);
		goto out;
	}
	if ((int)info.ifindex != ifindex || memcmp(info.pod_mac, ep->pod_mac, 6) ||
	    memcmp(info.host_mac, ep->host_mac, 6)) {
		MISSING(p, "CHECK: endpoint map entry for %s does not match the interface", ip);
		goto out;
	}
	rc = 0;
out:
	cw_dp_free(dp);
	cw_nl_close(sk);
	return rc;
}

static int check_ipam(struct cw_plugin *p, const struct cw_endpoint_state *ep)
{
	struct cw_ipam *ipam = NULL;
	struct in_addr held;
	int rc;

	if (ep->ipam_delegated)
		return cw_delegate(p->conf, &p->args, "CHECK", NULL, &p->err);
	rc = cw_ipam_open(p->conf->state_dir, p->conf->name, NULL, CW_LOCK_TIMEOUT_MS, &ipam);
	if (rc == 0) {
		rc = cw_ipam_find(ipam, ep->container_id, ep->ifname, &held);
		cw_ipam_close(ipam);
	}
	if (rc || held.s_addr != ep->ip.s_addr)
		return MISSING(p, "CHECK: IPAM holds no allocation of %s for %s/%s", inet_ntoa(ep->ip),
			       ep->container_id, ep->ifname);
	return 0;
}

int cw_cmd_check(struct cw_plugin *p)
{
	struct cw_endpoint_state ep;
	struct cw_error perr = { 0 };
	struct cw_result prev;
	int pod_ns = -1, host_ns = -1, rc = -1;

	if (!p->conf->prev_result)
		return cw_error_set(&p->err, CW_ERR_INVALID_CONFIG, "CHECK needs \"prevResult\" in the config");
	if (cw_result_parse_json(p->conf->prev_result, &prev, &perr) < 0)
		return cw_error_set(&p->err, CW_ERR_INVALID_CONFIG, "CHECK: prevResult: %s", perr.msg);
	if (cw_endpoint_read(p->conf->state_dir, p->args.container_id, p->args.ifname, &ep)) {
		MISSING(p, "CHECK: no endpoint state for %s/%s in %s", p->args.container_id,
			p->args.ifname, p->conf->state_dir);
		goto out;
	}
	if (prev.n_ips == 0 || prev.ips[0].addr.s_addr != ep.ip.s_addr) {
		MISSING(p, "CHECK: prevResult address does not match the endpoint's %s", inet_ntoa(ep.ip));
		goto out;
	}
	if (cw_netns_open(ep.netns, &pod_ns)) {
		MISSING(p, "CHECK: pod netns %s is gone", ep.netns);
		goto out;
	}
	if (cw_netns_open("/proc/self/ns/net", &host_ns)) {
		MISSING(p, "CHECK: cannot open the host netns");
		goto out;
	}
	if (check_pod_side(p, &ep, pod_ns, host_ns) < 0 || check_host_side(p, &ep) < 0 ||
	    check_ipam(p, &ep) < 0)
		goto out;
	rc = 0;
out:
	cw_result_clear(&prev);
	cw_close(pod_ns);
	cw_close(host_ns);
	return rc;
}
