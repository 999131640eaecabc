/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh-apiserver role, one per cluster: what the cluster says about
 * itself in its mesh store.  Today: cilium/cluster-config/<name> (its id and
 * capabilities, read by every remote cluster before it trusts anything
 * else), the heartbeat, and the garbage collection of identities no node
 * references any more.  Global services join it with ClusterMesh.
 */
#ifndef CW_HELPER_MESHAPI_H
#define CW_HELPER_MESHAPI_H

struct cw_meshapi_opts {
	const char *cluster;
	unsigned int cluster_id;
	const char *etcd_config;
	int heartbeat_s;
	int identity_gc_s;   /* scan period; an id is removed after two unreferenced scans */
};

int cw_meshapi_main(const struct cw_meshapi_opts *o);

#endif
