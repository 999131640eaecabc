// SPDX-License-Identifier: Apache-2.0
/* Operator commands that read or manage the node's pinned datapath. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <cjson/cJSON.h>

#include <causeway/addr.h>
#include <causeway/dp.h>
#include <causeway/log.h>
#include "cli.h"

int cw_cli_load(const struct cw_cli_opts *o)
{
	unsigned int moved = 0;
	int err = cw_dp_load(o->bpf_root, o->state_dir);

	if (err) {
		fprintf(stderr, "load: cannot load and pin the datapath in %s: %s\n", o->bpf_root,
			strerror(-err));
		return 1;
	}
	/* What runs attached moves to what was just pinned (this netns's links). */
	err = cw_dp_refresh_all(o->bpf_root, &moved);
	printf("datapath loaded and pinned in %s; %u attachment(s) moved to it\n", o->bpf_root,
	       moved);
	if (err) {
		fprintf(stderr, "load: not every attachment moved to the new programs: %s\n",
			strerror(-err));
		return 1;
	}
	return 0;
}

int cw_cli_unload(const struct cw_cli_opts *o)
{
	int err = cw_dp_unpin(o->bpf_root);

	if (err) {
		fprintf(stderr, "unload: cannot remove pins in %s: %s\n", o->bpf_root, strerror(-err));
		return 1;
	}
	return 0;
}

static int open_dp(const struct cw_cli_opts *o, struct cw_dp **dp)
{
	int err = cw_dp_open(o->bpf_root, o->state_dir, false, dp);

	if (err)
		fprintf(stderr, "no datapath pinned in %s: %s\n", o->bpf_root, strerror(-err));
	return err;
}

/* Print the collected JSON list (in -o json mode) and free what a listing used. */
static void finish(const struct cw_cli_opts *o, cJSON *arr, struct cw_dp *dp)
{
	char *s;

	if (o->json) {
		s = cJSON_Print(arr);
		puts(s ? s : "[]");
		free(s);
	}
	cJSON_Delete(arr);
	cw_dp_free(dp);
}

int cw_cli_bpf_endpoints(const struct cw_cli_opts *o)
{
	struct cw_endpoint_key key, next, *prev = NULL;
	struct cw_endpoint_info info;
	struct cw_dp *dp = NULL;
	cJSON *arr = cJSON_CreateArray();
	char ip[16], pmac[18], hmac[18];

	if (open_dp(o, &dp)) {
		cJSON_Delete(arr);
		return 1;
	}
	if (!o->json)
		printf("%-16s %-8s %-8s %-9s %-18s %s\n", "IP", "IFINDEX", "EP-ID", "IDENTITY",
		       "POD-MAC", "HOST-MAC");
	while (bpf_map_get_next_key(dp->map_endpoints, prev, &next) == 0) {
		struct in_addr a = { next.ip4 };

		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(dp->map_endpoints, &key, &info))
			continue;
		cw_addr4_str(a, ip);
		cw_mac_str(info.pod_mac, pmac);
		cw_mac_str(info.host_mac, hmac);
		if (o->json) {
			cJSON *e = cJSON_CreateObject();

			cJSON_AddStringToObject(e, "ip", ip);
			cJSON_AddNumberToObject(e, "ifindex", info.ifindex);
			cJSON_AddNumberToObject(e, "endpointID", info.ep_id);
			cJSON_AddNumberToObject(e, "identity", info.identity);
			cJSON_AddStringToObject(e, "podMAC", pmac);
			cJSON_AddStringToObject(e, "hostMAC", hmac);
			cJSON_AddItemToArray(arr, e);
		} else {
			printf("%-16s %-8u %-8u %-9u %-18s %s\n", ip, info.ifindex, info.ep_id,
			       info.identity, pmac, hmac);
		}
	}
	finish(o, arr, dp);
	return 0;
}

static void metrics_row(unsigned int reason, unsigned int dir, const struct cw_metrics_value *v,
			void *arr)
{
	cJSON *e;

	if (!arr) {
		printf("%-10s %-24s %12llu %14llu\n", cw_dir_name(dir), cw_reason_name(reason),
		       (unsigned long long)v->packets, (unsigned long long)v->bytes);
		return;
	}
	e = cJSON_CreateObject();
	cJSON_AddStringToObject(e, "direction", cw_dir_name(dir));
	cJSON_AddNumberToObject(e, "reasonCode", reason);
	cJSON_AddStringToObject(e, "reason", cw_reason_name(reason));
	cJSON_AddBoolToObject(e, "drop", reason != CW_REASON_FORWARDED);
	cJSON_AddNumberToObject(e, "packets", (double)v->packets);
	cJSON_AddNumberToObject(e, "bytes", (double)v->bytes);
	cJSON_AddItemToArray(arr, e);
}

int cw_cli_metrics(const struct cw_cli_opts *o)
{
	struct cw_dp *dp = NULL;
	cJSON *arr = cJSON_CreateArray();

	if (open_dp(o, &dp)) {
		cJSON_Delete(arr);
		return 1;
	}
	if (!o->json)
		printf("%-10s %-24s %12s %14s\n", "DIRECTION", "REASON", "PACKETS", "BYTES");
	cw_metrics_each(dp->map_metrics, metrics_row, o->json ? arr : NULL);
	finish(o, arr, dp);
	return 0;
}

/* --- commands answered by the running helper ------------------------------------ */

/* One request line to the helper's socket; its whole answer in *out. */
static int ask(const char *path, const char *req, char **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = 0, cap = 0;
	char *buf = NULL;
	ssize_t r;
	int fd, err = 0;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		err = -errno;
		goto out;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			char *nb = realloc(buf, cap = cap * 2 + 8192);

			if (!nb) {
				err = -ENOMEM;
				goto out;
			}
			buf = nb;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0) {
			err = -errno;
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	*out = buf;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return err;
}

/*
 * The helper's answer to @req, parsed.  With -o json the answer is printed
 * as the helper wrote it instead (NULL returned, *done set): re-printing
 * it through cJSON would round 64-bit numbers such as lease ids.
 */
static cJSON *ask_json(const struct cw_cli_opts *o, const char *req, int *done)
{
	char *resp = NULL;
	cJSON *doc;
	int rc = ask(o->socket, req, &resp);

	*done = 1;
	if (rc) {
		fprintf(stderr, "causeway-helper: no helper answers on %s: %s\n", o->socket,
			strerror(-rc));
		return NULL;
	}
	if (o->json) {
		fputs(resp, stdout);
		free(resp);
		*done = 0;
		return NULL;
	}
	doc = cJSON_Parse(resp);
	if (!doc)
		fprintf(stderr, "causeway-helper: the helper on %s answered something unparsable\n",
			o->socket);
	free(resp);
	return doc;
}

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static double jnum(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static bool jbool(const cJSON *o, const char *k)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static void ago(double ms, char *buf, size_t len)
{
	if (ms < 0)
		snprintf(buf, len, "never");
	else if (ms < 10000)
		snprintf(buf, len, "%.1fs ago", ms / 1000);
	else
		snprintf(buf, len, "%.0fs ago", ms / 1000);
}

int cw_cli_status(const struct cw_cli_opts *o)
{
	int done;
	cJSON *doc = ask_json(o, "status\n", &done), *it, *c;
	char when[32];

	if (!doc)
		return done;
	printf("Node:       %s (cluster %s, id %.0f), routing %s\n", jstr(doc, "node"),
	       jstr(doc, "cluster"), jnum(doc, "clusterID"), jstr(doc, "routing"));
	printf("Addresses:  node IP %s, PodCIDR %s, underlay %s, tunnel device %s "
	       "(pods' packets encapsulated by the %s)\n",
	       *jstr(doc, "nodeIP") ? jstr(doc, "nodeIP") : "(unknown)",
	       *jstr(doc, "podCIDR") ? jstr(doc, "podCIDR") : "(unknown)",
	       *jstr(doc, "underlayDevice") ? jstr(doc, "underlayDevice") : "-",
	       *jstr(doc, "vxlanDevice") ? jstr(doc, "vxlanDevice") : "-",
	       jstr(doc, "tunnelEncapsulation"));
	ago(jnum(doc, "lastReconcileAgoMs"), when, sizeof(when));
	{
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "masquerade");

		if (!jbool(m, "enabled"))
			printf("Masquerade: off\n");
		else if (*jstr(m, "error"))
			printf("Masquerade: FAILING: %s\n", jstr(m, "error"));
		else if (jbool(m, "applied"))
			printf("Masquerade: on, pods keep their address to %.0f PodCIDR(s) and "
			       "exception(s)\n", jnum(m, "keptDestinations"));
		else
			printf("Masquerade: on, not applied yet (PodCIDR unknown or not synced)\n");
	}
	printf("Datapath:   %s, %s, last reconcile %s\n",
	       jbool(doc, "datapathReady") ? "ready" : "NOT READY",
	       jbool(doc, "datapathSynced") ? "synced" : "not yet synced", when);
	if (*jstr(doc, "datapathLoadError"))
		printf("Programs:   OLDER ones run: %s\n", jstr(doc, "datapathLoadError"));
	else
		printf("Programs:   this release's, %.0f attachment(s) moved to them at start\n",
		       jnum(doc, "attachmentsMoved"));
	printf("Mesh store: %s, lease %s, node record %s\n", jstr(doc, "etcd"), jstr(doc, "leaseID"),
	       jbool(doc, "nodePublished") ? "published" : "NOT published");
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "kvstore")) {
		ago(jnum(it, "lastSyncAgoMs"), when, sizeof(when));
		printf("  %-11s %s%s, %.0f keys, revision %.0f, %.0f events, %.0f relists, "
		       "%.0f reconnects, last sync %s%s%s\n", jstr(it, "name"),
		       jbool(it, "synced") ? "synced" : "NOT synced",
		       jbool(it, "streaming") ? ", streaming" : ", not streaming", jnum(it, "keys"),
		       jnum(it, "revision"), jnum(it, "events"), jnum(it, "relists"),
		       jnum(it, "reconnects"), when, *jstr(it, "error") ? ": " : "", jstr(it, "error"));
	}
	printf("Kubernetes:\n");
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "kubernetes"))
		printf("  %-26s %s, %s, %.0f objects, %.0f events, %.0f relists, %.0f reconnects%s%s\n",
		       jstr(it, "path"), jbool(it, "connected") ? "connected" : "NOT connected",
		       jbool(it, "synced") ? "synced" : "NOT synced", jnum(it, "objects"),
		       jnum(it, "events"), jnum(it, "relists"), jnum(it, "reconnects"),
		       *jstr(it, "error") ? ": " : "", jstr(it, "error"));
	printf("Endpoints:  %.0f\n", jnum(doc, "endpoints"));
	c = cJSON_GetObjectItemCaseSensitive(doc, "counters");
	printf("Counters:   %.0f reconciles, %.0f map writes, %.0f map deletes, %.0f route adds, "
	       "%.0f route deletes, %.0f invalid records, %.0f publish errors\n",
	       jnum(c, "reconciles"), jnum(c, "mapWrites"), jnum(c, "mapDeletes"),
	       jnum(c, "routeAdds"), jnum(c, "routeDeletes"), jnum(c, "invalidRecords"),
	       jnum(c, "publishErrors"));
	if (*jstr(doc, "lastError"))
		printf("Last error: %s\n", jstr(doc, "lastError"));
	cJSON_Delete(doc);
	return 0;
}

int cw_cli_endpoints(const struct cw_cli_opts *o)
{
	int done;
	cJSON *doc = ask_json(o, "endpoints\n", &done), *it;

	if (!doc)
		return done;
	printf("%-16s %-10s %-20s %-30s %-15s %s\n", "IP", "IDENTITY", "NAMESPACE", "POD", "INTERFACE",
	       "PUBLISHED");
	cJSON_ArrayForEach(it, doc)
		printf("%-16s %-10.0f %-20s %-30s %-15s %s\n", jstr(it, "ip"), jnum(it, "identity"),
		       jstr(it, "namespace"), jstr(it, "pod"), jstr(it, "interface"),
		       jbool(it, "published") ? "yes" : "no");
	cJSON_Delete(doc);
	return 0;
}

int cw_cli_clusters(const struct cw_cli_opts *o)
{
	int done;
	cJSON *doc = ask_json(o, "clusters\n", &done), *it, *w;
	char when[32];

	if (!doc)
		return done;
	if (!cJSON_GetArraySize(doc))
		printf("no remote clusters configured\n");
	cJSON_ArrayForEach(it, doc) {
		const cJSON *dl = cJSON_GetObjectItemCaseSensitive(it, "evictionDeadline");

		printf("%s (id %.0f): %s%s%s\n", jstr(it, "name"), jnum(it, "id"), jstr(it, "state"),
		       *jstr(it, "reason") ? ", " : "", jstr(it, "reason"));
		printf("  %.0f nodes, %.0f endpoints, %.0f identities, %.0f services; %s\n",
		       jnum(it, "nodes"), jnum(it, "endpoints"), jnum(it, "identities"),
		       jnum(it, "services"), jbool(it, "synced") ? "synced" : "NOT synced");
		if (*jstr(it, "podCIDROverlap"))
			printf("  WARNING: %s\n", jstr(it, "podCIDROverlap"));
		if (jbool(it, "evicted"))
			printf("  EVICTED (its routes and backends are withdrawn): %s\n",
			       jstr(it, "unhealthy"));
		else if (cJSON_IsNumber(dl))
			printf("  unhealthy (%s): evicted in %.0f s unless it recovers\n",
			       jstr(it, "unhealthy"), dl->valuedouble);
		cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(it, "kvstore")) {
			ago(jnum(w, "lastSyncAgoMs"), when, sizeof(when));
			printf("  %-6s %s, %.0f keys, last sync %s%s%s\n", jstr(w, "name"),
			       jbool(w, "synced") ? "synced" : "NOT synced", jnum(w, "keys"), when,
			       *jstr(w, "error") ? ": " : "", jstr(w, "error"));
		}
	}
	cJSON_Delete(doc);
	return 0;
}

int cw_cli_services(const struct cw_cli_opts *o)
{
	int done;
	cJSON *doc = ask_json(o, "services\n", &done), *svc, *fe, *be;

	if (!doc)
		return done;
	printf("%-4s %-34s %-22s %-8s %-22s %s\n", "ID", "SERVICE", "FRONTEND", "AFFINITY",
	       "BACKEND", "CLUSTER");
	cJSON_ArrayForEach(svc, cJSON_GetObjectItemCaseSensitive(doc, "services")) {
		char name[160];

		snprintf(name, sizeof(name), "%s/%s%s%s", jstr(svc, "namespace"), jstr(svc, "name"),
			 jbool(svc, "global") ? " (global" : "",
			 !jbool(svc, "global") ? "" : jbool(svc, "shared") ? ")" : ", not shared)");
		cJSON_ArrayForEach(fe, cJSON_GetObjectItemCaseSensitive(svc, "frontends")) {
			const cJSON *bes = cJSON_GetObjectItemCaseSensitive(fe, "backends");
			char front[40];
			int i = 0;

			snprintf(front, sizeof(front), "%s:%.0f/%s", jstr(fe, "address"),
				 jnum(fe, "port"), jstr(fe, "protocol"));
			if (!cJSON_GetArraySize(bes))
				printf("%-4.0f %-34s %-22s %-8s %-22s %s\n", jnum(fe, "id"), name, front,
				       jstr(svc, "affinity"), "(none: new flows dropped)", "");
			cJSON_ArrayForEach(be, bes) {
				char back[40];

				snprintf(back, sizeof(back), "%s:%.0f", jstr(be, "address"),
					 jnum(be, "port"));
				if (i++ == 0)
					printf("%-4.0f %-34s %-22s %-8s %-22s %s\n", jnum(fe, "id"), name,
					       front, jstr(svc, "affinity"), back, jstr(be, "cluster"));
				else
					printf("%-4s %-34s %-22s %-8s %-22s %s\n", "", "", "", "", back,
					       jstr(be, "cluster"));
			}
		}
	}
	cJSON_Delete(doc);
	return 0;
}

static int print_lpm(const struct cw_cli_opts *o, bool ipcache)
{
	struct cw_lpm_key *keys = NULL;
	struct cw_dp *dp = NULL;
	cJSON *arr = cJSON_CreateArray();
	size_t n = 0;
	int rc;

	if (open_dp(o, &dp)) {
		cJSON_Delete(arr);
		return 1;
	}
	rc = ipcache ? cw_ipcache_keys(dp, &keys, &n) : cw_tunnel_keys(dp, &keys, &n);
	if (rc) {
		fprintf(stderr, "causeway-helper: cannot list the %s map: %s\n",
			ipcache ? "ipcache" : "tunnel", strerror(-rc));
		cJSON_Delete(arr);
		cw_dp_free(dp);
		return 1;
	}
	if (!o->json)
		printf(ipcache ? "%-19s %-10s %-16s %s\n" : "%-19s %s\n", "PREFIX",
		       ipcache ? "IDENTITY" : "NODE", "TUNNEL", "CLUSTER");
	for (size_t i = 0; i < n; i++) {
		struct in_addr a = { keys[i].ip4 }, t;
		struct cw_ipcache_info ii;
		struct cw_tunnel_info ti;
		char pfx[24], tip[16];

		cw_addr4_str(a, pfx);
		snprintf(pfx + strlen(pfx), sizeof(pfx) - strlen(pfx), "/%u", keys[i].prefixlen);
		if (ipcache ? cw_ipcache_get(dp, keys[i].ip4, (__u8)keys[i].prefixlen, &ii) :
			      cw_tunnel_get(dp, keys[i].ip4, (__u8)keys[i].prefixlen, &ti))
			continue;
		t.s_addr = ipcache ? ii.tunnel_ip : ti.node_ip;
		cw_addr4_str(t, tip);
		if (o->json) {
			cJSON *e = cJSON_CreateObject();

			cJSON_AddStringToObject(e, "prefix", pfx);
			if (ipcache) {
				cJSON_AddNumberToObject(e, "identity", ii.identity);
				cJSON_AddStringToObject(e, "tunnel", ii.tunnel_ip ? tip : "");
				cJSON_AddNumberToObject(e, "clusterID", ii.cluster_id);
			} else {
				cJSON_AddStringToObject(e, "node", tip);
			}
			cJSON_AddItemToArray(arr, e);
		} else if (ipcache) {
			printf("%-19s %-10u %-16s %u\n", pfx, ii.identity, ii.tunnel_ip ? tip : "-",
			       ii.cluster_id);
		} else {
			printf("%-19s %s\n", pfx, tip);
		}
	}
	free(keys);
	finish(o, arr, dp);
	return 0;
}

int cw_cli_ipcache(const struct cw_cli_opts *o)
{
	return print_lpm(o, true);
}

int cw_cli_tunnels(const struct cw_cli_opts *o)
{
	return print_lpm(o, false);
}
