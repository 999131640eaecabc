/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Services, as pure functions shared by the node role (which load-balances
 * them in BPF) and the mesh-apiserver role (which publishes the global ones):
 *
 *  - a Kubernetes Service object read into its frontends and its ClusterMesh
 *    annotations (service.cilium.io/global|shared|affinity, and the older
 *    io.cilium/global-service|shared-service|service-affinity aliases; the
 *    new name wins when both are set);
 *  - an EndpointSlice read into the ready (address, port) tuples of its
 *    service;
 *  - the mesh store's service record, cilium/state/services/v1/<cluster>/
 *    <ns>/<name>, Cilium's ClusterService JSON, written and read back with
 *    the same checks as every other record (records.h): the key, the
 *    cluster name and id must all be those of the connection;
 *  - the choice of a frontend's slots per affinity, as Cilium defines it.
 *
 * No I/O: unit-tested and fuzzed on their own.
 */
#ifndef CW_HELPER_SERVICES_H
#define CW_HELPER_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <cjson/cJSON.h>
#include <causeway/datapath.h>
#include "records.h"

#define CW_KEY_SERVICES "cilium/state/services/v1/"

#define CW_SVC_NAME_MAX 63       /* namespace and Service names: DNS labels */
#define CW_SVC_PORT_NAME_MAX 63  /* a port name ("" for a lone unnamed port) */
#define CW_SVC_PORTS_MAX 32      /* ports of one Service we load-balance */

#define CW_ANN_GLOBAL         "service.cilium.io/global"
#define CW_ANN_GLOBAL_ALIAS   "io.cilium/global-service"
#define CW_ANN_SHARED         "service.cilium.io/shared"
#define CW_ANN_SHARED_ALIAS   "io.cilium/shared-service"
#define CW_ANN_AFFINITY       "service.cilium.io/affinity"
#define CW_ANN_AFFINITY_ALIAS "io.cilium/service-affinity"

enum cw_affinity {
	CW_AFFINITY_NONE,    /* absent, "none", or a value we do not know */
	CW_AFFINITY_LOCAL,
	CW_AFFINITY_REMOTE,
};

const char *cw_affinity_name(enum cw_affinity a);   /* "none", "local", "remote" */

struct cw_svc_port {
	char name[CW_SVC_PORT_NAME_MAX + 1];
	uint16_t port;       /* the frontend port */
	uint8_t proto;       /* IPPROTO_TCP or IPPROTO_UDP */
};

struct cw_svc {
	char ns[CW_SVC_NAME_MAX + 1];
	char name[CW_SVC_NAME_MAX + 1];
	struct in_addr cluster_ip;   /* 0: headless ("None") or no ClusterIP: nothing to balance */
	struct cw_svc_port ports[CW_SVC_PORTS_MAX];
	size_t n_ports;              /* TCP and UDP ports only (SCTP is skipped) */
	bool global;                 /* global annotation "true" */
	bool shared;                 /* absent shared annotation, or one saying "true" */
	enum cw_affinity affinity;   /* read only on global services; NONE otherwise */
};

/*
 * A Kubernetes Service (v1) object.  Needs metadata.namespace and .name;
 * spec.clusterIP "None", "" or absent gives cluster_ip 0 (not an error);
 * a clusterIP that is not IPv4, a port outside 1..65535 or a protocol that
 * is not a string is an error naming the field.  Ports beyond
 * CW_SVC_PORTS_MAX are an error too (nothing half-balanced).
 */
int cw_svc_from_k8s(const cJSON *obj, struct cw_svc *out, char *err, size_t errlen);
/* What cw_svc_from_k8s reads: an informer's keep list (k8s.h). */
extern const char *const cw_svc_k8s_keep[];

/* One backend tuple: an address serving one named port of a service. */
struct cw_svc_be {
	struct in_addr ip;
	uint16_t port;          /* the target port on the backend */
	uint8_t proto;          /* IPPROTO_TCP or IPPROTO_UDP */
	uint16_t cluster_id;    /* where it lives */
	char port_name[CW_SVC_PORT_NAME_MAX + 1];
};

/* A growable list of tuples. */
struct cw_svc_bes {
	struct cw_svc_be *v;
	size_t n, cap;
};

int cw_svc_bes_add(struct cw_svc_bes *b, const struct cw_svc_be *be);
void cw_svc_bes_clear(struct cw_svc_bes *b);

/*
 * An EndpointSlice (discovery.k8s.io/v1): the service it belongs to (its
 * kubernetes.io/service-name label) in @ns/@svc, and its ready tuples
 * appended to @out with @cluster_id.  Ready means conditions.ready true or
 * absent (the API's "unknown, treat as ready").  An addressType other than
 * IPv4 or a slice without the label is not an error: 0 with @svc "" and
 * nothing added.  Malformed addresses or ports are an error naming the
 * field, and then nothing is added.
 */
int cw_epslice_parse(const cJSON *obj, char *ns, size_t ns_len, char *svc, size_t svc_len,
		     uint16_t cluster_id, struct cw_svc_bes *out, char *err, size_t errlen);
/* What cw_epslice_parse reads: an informer's keep list (k8s.h). */
extern const char *const cw_epslice_k8s_keep[];

/*
 * The record of a global service that @cluster (@cluster_id) publishes:
 * frontends are the ClusterIP with every port, backends every tuple of
 * @bes (those of that cluster), "shared" from the annotation.  malloc'd.
 */
char *cw_svc_rec_format(const struct cw_svc *svc, const char *cluster, unsigned int cluster_id,
			const struct cw_svc_bes *bes);

struct cw_svc_rec {
	char cluster[CW_CLUSTER_NAME_MAX + 1];
	unsigned int cluster_id;
	char ns[CW_SVC_NAME_MAX + 1];
	char name[CW_SVC_NAME_MAX + 1];
	bool shared;
	bool include_external;
	struct cw_svc_bes backends;  /* each with cluster_id set to the record's */
};

/*
 * @key is cilium/state/services/v1/<cluster>/<ns>/<name>; @cluster and
 * @cluster_id are those of the connection the record came from.  Rejects
 * (naming the field) a key of another cluster, a value whose cluster,
 * clusterID, namespace or name differ from the key's, backend IPs that do
 * not parse, ports outside 1..65535, protocols other than TCP/UDP (SCTP
 * and ANY ports are skipped, not errors), more than 65535 tuples.
 */
int cw_svc_rec_parse(const char *key, const char *buf, size_t len, const char *cluster,
		     unsigned int cluster_id, struct cw_svc_rec *out, char *err, size_t errlen);
void cw_svc_rec_clear(struct cw_svc_rec *r);

/*
 * The slots of one frontend port @fp of a service: the tuples of @cands
 * whose port name and protocol match @fp, chosen per @aff relative to
 * @local_id: LOCAL takes the local ones, or the remote ones when there is
 * no local one; REMOTE the mirror image; NONE all of them.  Duplicates
 * (same address and port) are kept once; the result is sorted by cluster,
 * address and port so that the same input always gives the same slots.
 * *@out (free() it) holds *@n entries; 0 entries is a valid answer.
 */
int cw_svc_select(const struct cw_svc_port *fp, enum cw_affinity aff, unsigned int local_id,
		  const struct cw_svc_be *cands, size_t n_cands, struct cw_lb4_backend **out,
		  size_t *n);

#endif
