/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Link, address, route and neighbour operations over libnl-route-3, and
 * network namespace switching.  A netlink socket talks to the namespace the
 * thread was in when the socket was made: open one per namespace.
 */
#ifndef CAUSEWAY_NETLINK_H
#define CAUSEWAY_NETLINK_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>

struct nl_sock;

int cw_nl_open(struct nl_sock **out);
void cw_nl_close(struct nl_sock *sk);
/* Translate a libnl error (-NLE_*) into -errno. */
int cw_nl_errno(int nlerr);

/* Open a netns path; -ENOENT when it is gone. */
int cw_netns_open(const char *path, int *fd);
int cw_netns_enter(int fd);

int cw_veth_create(struct nl_sock *sk, const char *host_name, const uint8_t host_mac[6],
		   const char *peer_name, const uint8_t peer_mac[6], int peer_netns_fd,
		   unsigned int mtu);
/* -ENODEV when absent. */
int cw_link_ifindex(struct nl_sock *sk, const char *name, int *ifindex);
int cw_link_get(struct nl_sock *sk, const char *name, int *ifindex, uint8_t mac[6],
		unsigned int *mtu, bool *up);
int cw_link_set_up(struct nl_sock *sk, int ifindex);
/* 0 when deleted or already absent. */
int cw_link_del(struct nl_sock *sk, const char *name);
int cw_link_del_ifindex(struct nl_sock *sk, int ifindex);
int cw_link_set_down(struct nl_sock *sk, int ifindex);
/*
 * Delete a link by ifindex from a forked child and return at once: the
 * kernel's unregister of a veth takes 15-30 ms of RCU grace periods that the
 * caller need not wait for.  By ifindex, never by name, so a link re-created
 * under the same name in the meantime is never touched.
 */
int cw_link_del_ifindex_detached(int ifindex);

int cw_addr4_add(struct nl_sock *sk, int ifindex, struct in_addr addr, uint8_t prefixlen);
bool cw_addr4_present(struct nl_sock *sk, int ifindex, struct in_addr addr, uint8_t prefixlen);

/* gw.s_addr == 0 makes a scope-link route. */
int cw_route4_add(struct nl_sock *sk, int ifindex, struct in_addr dst, uint8_t dst_len,
		  struct in_addr gw);
bool cw_route4_present(struct nl_sock *sk, int ifindex, struct in_addr dst, uint8_t dst_len,
		       struct in_addr gw);

int cw_neigh4_add(struct nl_sock *sk, int ifindex, struct in_addr ip, const uint8_t mac[6]);
bool cw_neigh4_present(struct nl_sock *sk, int ifindex, struct in_addr ip, const uint8_t mac[6]);

#endif
