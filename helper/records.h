/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh store's records, Cilium's kvstore schema v1 (DESIGN.md "The mesh
 * store"): key builders, and JSON values encoded and decoded as pure
 * functions.  A decoder checks the value against its key and against the
 * cluster the connection belongs to; what fails is rejected with a message
 * naming the field, so a corrupt or hostile record changes nothing.
 */
#ifndef CW_HELPER_RECORDS_H
#define CW_HELPER_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <causeway/addr.h>

#define CW_KEY_NODES      "cilium/state/nodes/v1/"
#define CW_KEY_IPS        "cilium/state/ip/v1/default/"
#define CW_KEY_IDENTITIES "cilium/state/identities/v1/"
#define CW_KEY_ID         CW_KEY_IDENTITIES "id/"
#define CW_KEY_VALUE      CW_KEY_IDENTITIES "value/"
#define CW_KEY_CLUSTER_CONFIG "cilium/cluster-config/"
#define CW_KEY_SYNCED     "cilium/synced/"
#define CW_KEY_HEARTBEAT  "cilium/.heartbeat"

#define CW_CLUSTER_NAME_MAX 32
#define CW_NODE_NAME_MAX 253
#define CW_LABELS_MAX 4096

/* Identities: clusterID << 16 | local id; local ids below 256 are reserved. */
#define CW_IDENTITY_LOCAL_MIN 256
#define CW_IDENTITY_LOCAL_MAX 65535

/* Cluster names: 1..32 of [a-z0-9-], alphanumeric at both ends. */
bool cw_cluster_name_valid(const char *name);
/* Node names: DNS subdomain, at most 253. */
bool cw_node_name_valid(const char *name);
/* An identity allocated by @cluster_id (0: any cluster's). */
bool cw_identity_in_cluster(uint32_t id, unsigned int cluster_id);

struct cw_node_rec {
	char name[CW_NODE_NAME_MAX + 1];
	char cluster[CW_CLUSTER_NAME_MAX + 1];
	unsigned int cluster_id;
	struct in_addr internal_ip;
	struct cw_prefix4 pod_cidr;  /* len 0: none yet */
	char boot_id[64];
};

struct cw_ip_rec {
	struct in_addr ip;
	struct in_addr host_ip;
	uint32_t identity;
	char k8s_namespace[256];
	char k8s_pod_name[256];
};

char *cw_node_rec_format(const struct cw_node_rec *n);
/*
 * @key is the full etcd key (cilium/state/nodes/v1/<cluster>/<node>);
 * @cluster/@cluster_id those of the connection it was read from.
 */
int cw_node_rec_parse(const char *key, const char *buf, size_t len, const char *cluster,
		      unsigned int cluster_id, struct cw_node_rec *out, char *err, size_t errlen);

char *cw_ip_rec_format(const struct cw_ip_rec *r);
/* Checks the key's IP against the value's and the identity's cluster. */
int cw_ip_rec_parse(const char *key, const char *buf, size_t len, unsigned int cluster_id,
		    struct cw_ip_rec *out, char *err, size_t errlen);

/* Parses the <id> out of cilium/state/identities/v1/id/<id>. */
int cw_identity_key_parse(const char *key, uint32_t *id);

/*
 * A security label set as Cilium writes it into id/<id>: "k8s:" labels
 * sorted by key, each "k8s:key=value;".  @pairs alternates keys and values.
 */
int cw_labels_format(const char *const *pairs, size_t n_pairs, char *out, size_t len);

#endif
