/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh-apiserver role, one per cluster: what the cluster says about
 * itself in its mesh store.
 *
 *  - cilium/cluster-config/<name>: its id and capabilities, read by every
 *    remote cluster before it trusts anything else;
 *  - cilium/state/services/v1/<name>/<ns>/<svc>: every Service annotated
 *    global (and not shared=false) with a ClusterIP, its backends the ready
 *    tuples of all its EndpointSlices (services.h); withdrawn when that
 *    stops being so, when the Service or its namespace is deleted, and, after
 *    the first sync, when a key of an earlier run is no longer wanted;
 *  - cilium/synced/<name>/cilium/state/<kind>/v1, the synced canaries:
 *    services once the first publication is complete, nodes, ip and
 *    identities (which the nodes publish themselves) once cluster-config is
 *    written;
 *  - the heartbeat, and the garbage collection of identities no node
 *    references any more.
 *
 * Writes that fail (etcd down) are retried with backoff; what is written is
 * only what differs from what etcd holds.
 */
#ifndef CW_HELPER_MESHAPI_H
#define CW_HELPER_MESHAPI_H

struct cw_meshapi_opts {
	const char *cluster;
	unsigned int cluster_id;
	const char *etcd_config;
	int heartbeat_s;
	int identity_gc_s;   /* scan period; an id is removed after two unreferenced scans */
	/* The Kubernetes API; all NULL: in-cluster configuration (k8s.h). */
	const char *k8s_api;
	const char *k8s_ca_file;
	const char *k8s_token_file;
};

int cw_meshapi_main(const struct cw_meshapi_opts *o);

#endif
