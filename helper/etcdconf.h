/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The etcd client configuration file, in the layout of Cilium's etcd config
 * (and of each file of the cilium-clustermesh Secret):
 *
 *   endpoints:
 *   - https://172.30.1.10:2379
 *   trusted-ca-file: /var/lib/causeway/etcd/ca.crt
 *   cert-file: /var/lib/causeway/etcd/client.crt
 *   key-file: /var/lib/causeway/etcd/client.key
 *   username: causeway-local
 *   password: s3cret
 *
 * A YAML subset: top-level "key: value" pairs, scalars plain or quoted,
 * endpoints as a block list or a flow list ([a, b]).  Pure: text in,
 * struct out, the offending line named on error.
 */
#ifndef CW_HELPER_ETCDCONF_H
#define CW_HELPER_ETCDCONF_H

#include <stddef.h>
#include "kvstore.h"

struct cw_etcd_conf {
	char *endpoints[CW_KV_MAX_ENDPOINTS];
	size_t n_endpoints;
	char *ca_file, *cert_file, *key_file, *username, *password;
};

int cw_etcd_conf_parse(const char *buf, size_t len, struct cw_etcd_conf *out, char *err,
		       size_t errlen);
int cw_etcd_conf_load(const char *path, struct cw_etcd_conf *out, char *err, size_t errlen);
void cw_etcd_conf_clear(struct cw_etcd_conf *c);
/* Borrowing view for cw_kv_new(); valid while @c is. */
void cw_etcd_conf_to_kv(const struct cw_etcd_conf *c, struct cw_kv_config *kv);

#endif
