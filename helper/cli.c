// SPDX-License-Identifier: Apache-2.0
/* Operator commands that read or manage the node's pinned datapath. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <cjson/cJSON.h>

#include <causeway/addr.h>
#include <causeway/dp.h>
#include <causeway/log.h>
#include "cli.h"

int cw_cli_load(const struct cw_cli_opts *o)
{
	int err = cw_dp_load(o->bpf_root, o->state_dir);

	if (err) {
		fprintf(stderr, "load: cannot load and pin the datapath in %s: %s\n", o->bpf_root,
			strerror(-err));
		return 1;
	}
	printf("datapath loaded and pinned in %s\n", o->bpf_root);
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

int cw_cli_endpoints(const struct cw_cli_opts *o)
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

int cw_cli_metrics(const struct cw_cli_opts *o)
{
	struct cw_metrics_key key, next, *prev = NULL;
	struct cw_metrics_value v;
	struct cw_dp *dp = NULL;
	cJSON *arr = cJSON_CreateArray();

	if (open_dp(o, &dp)) {
		cJSON_Delete(arr);
		return 1;
	}
	if (!o->json)
		printf("%-10s %-24s %12s %14s\n", "DIRECTION", "REASON", "PACKETS", "BYTES");
	while (bpf_map_get_next_key(dp->map_metrics, prev, &next) == 0) {
		const char *dir;

		key = next;
		prev = &key;
		if (cw_metrics_sum(dp->map_metrics, &key, &v))
			continue;
		dir = key.dir == CW_DIR_INGRESS ? "ingress" : "egress";
		if (o->json) {
			cJSON *e = cJSON_CreateObject();

			cJSON_AddStringToObject(e, "direction", dir);
			cJSON_AddNumberToObject(e, "reasonCode", key.reason);
			cJSON_AddStringToObject(e, "reason", cw_reason_name(key.reason));
			cJSON_AddBoolToObject(e, "drop", key.reason != CW_REASON_FORWARDED);
			cJSON_AddNumberToObject(e, "packets", (double)v.packets);
			cJSON_AddNumberToObject(e, "bytes", (double)v.bytes);
			cJSON_AddItemToArray(arr, e);
		} else {
			printf("%-10s %-24s %12llu %14llu\n", dir, cw_reason_name(key.reason),
			       (unsigned long long)v.packets, (unsigned long long)v.bytes);
		}
	}
	finish(o, arr, dp);
	return 0;
}
