// SPDX-License-Identifier: Apache-2.0
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include <causeway/addr.h>
#include <causeway/log.h>
#include "result.h"

void cw_result_clear(struct cw_result *r)
{
	cJSON_Delete(r->dns);
	memset(r, 0, sizeof(*r));
}

static void add_cidr(cJSON *o, const char *key, struct in_addr a, uint8_t len)
{
	char ip[16], buf[24];

	cw_addr4_str(a, ip);
	snprintf(buf, sizeof(buf), "%s/%u", ip, len);
	cJSON_AddStringToObject(o, key, buf);
}

static void add_ip(cJSON *o, const char *key, struct in_addr a)
{
	char ip[16];

	cw_addr4_str(a, ip);
	cJSON_AddStringToObject(o, key, ip);
}

char *cw_result_format(const struct cw_result *r, const char *cni_version)
{
	enum cw_cni_version v = CW_V110;
	cJSON *o = cJSON_CreateObject(), *arr, *it;
	char mac[18], *s;

	if (!o)
		return NULL;
	cw_cni_version_parse(cni_version, &v);
	cJSON_AddStringToObject(o, "cniVersion", cni_version);

	arr = cJSON_AddArrayToObject(o, "interfaces");
	for (int i = 0; i < r->n_ifaces; i++) {
		it = cJSON_CreateObject();
		cJSON_AddStringToObject(it, "name", r->ifaces[i].name);
		cw_mac_str(r->ifaces[i].mac, mac);
		cJSON_AddStringToObject(it, "mac", mac);
		if (r->ifaces[i].sandbox[0])
			cJSON_AddStringToObject(it, "sandbox", r->ifaces[i].sandbox);
		cJSON_AddItemToArray(arr, it);
	}

	arr = cJSON_AddArrayToObject(o, "ips");
	for (int i = 0; i < r->n_ips; i++) {
		it = cJSON_CreateObject();
		/* 0.3.x and 0.4.0 carry the family; 1.0.0 dropped the field. */
		if (v == CW_V031 || v == CW_V040)
			cJSON_AddStringToObject(it, "version", "4");
		add_cidr(it, "address", r->ips[i].addr, r->ips[i].prefixlen);
		if (r->ips[i].gateway.s_addr)
			add_ip(it, "gateway", r->ips[i].gateway);
		if (r->ips[i].iface >= 0)
			cJSON_AddNumberToObject(it, "interface", r->ips[i].iface);
		cJSON_AddItemToArray(arr, it);
	}

	if (r->n_routes) {
		arr = cJSON_AddArrayToObject(o, "routes");
		for (int i = 0; i < r->n_routes; i++) {
			it = cJSON_CreateObject();
			add_cidr(it, "dst", r->routes[i].dst, r->routes[i].len);
			if (r->routes[i].gw.s_addr)
				add_ip(it, "gw", r->routes[i].gw);
			cJSON_AddItemToArray(arr, it);
		}
	}
	cJSON_AddItemToObject(o, "dns", r->dns ? cJSON_Duplicate(r->dns, 1) : cJSON_CreateObject());
	s = cJSON_Print(o);
	cJSON_Delete(o);
	return s;
}

static int parse_ips(const cJSON *ips, struct cw_result *out, struct cw_error *err)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, ips) {
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(it, "address");
		const cJSON *g = cJSON_GetObjectItemCaseSensitive(it, "gateway");
		const cJSON *ifc = cJSON_GetObjectItemCaseSensitive(it, "interface");
		struct cw_result_ip *ip;

		if (!cJSON_IsString(a))
			return cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM result: ips[].address missing");
		if (strchr(a->valuestring, ':')) {
			pr_warn("IPAM result: skipping IPv6 address %s (IPv4 only so far)", a->valuestring);
			continue;
		}
		if (out->n_ips == CW_RESULT_MAX_IPS)
			return cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM result: more than %d addresses",
					    CW_RESULT_MAX_IPS);
		ip = &out->ips[out->n_ips];
		if (!cw_addr4_parse_cidr(a->valuestring, &ip->addr, &ip->prefixlen))
			return cw_error_set(err, CW_ERR_IPAM_PLUGIN,
					    "IPAM result: address \"%.40s\" is not an IPv4 CIDR", a->valuestring);
		ip->gateway.s_addr = 0;
		if (cJSON_IsString(g) && !cw_addr4_parse(g->valuestring, &ip->gateway))
			return cw_error_set(err, CW_ERR_IPAM_PLUGIN,
					    "IPAM result: gateway \"%.40s\" is not an IPv4 address", g->valuestring);
		ip->iface = cJSON_IsNumber(ifc) ? ifc->valueint : -1;
		out->n_ips++;
	}
	return 0;
}

static int parse_routes(const cJSON *routes, struct cw_result *out, struct cw_error *err)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, routes) {
		const cJSON *d = cJSON_GetObjectItemCaseSensitive(it, "dst");
		const cJSON *g = cJSON_GetObjectItemCaseSensitive(it, "gw");
		struct cw_result_route *rt;

		if (!cJSON_IsString(d))
			return cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM result: routes[].dst missing");
		if (strchr(d->valuestring, ':'))
			continue;
		if (out->n_routes == CW_RESULT_MAX_ROUTES)
			return cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM result: more than %d routes",
					    CW_RESULT_MAX_ROUTES);
		rt = &out->routes[out->n_routes];
		if (!cw_addr4_parse_cidr(d->valuestring, &rt->dst, &rt->len))
			return cw_error_set(err, CW_ERR_IPAM_PLUGIN,
					    "IPAM result: route dst \"%.40s\" is not an IPv4 CIDR", d->valuestring);
		rt->gw.s_addr = 0;
		if (cJSON_IsString(g) && !cw_addr4_parse(g->valuestring, &rt->gw))
			return cw_error_set(err, CW_ERR_IPAM_PLUGIN,
					    "IPAM result: route gw \"%.40s\" is not an IPv4 address", g->valuestring);
		out->n_routes++;
	}
	return 0;
}

int cw_result_parse_json(const cJSON *o, struct cw_result *out, struct cw_error *err)
{
	const cJSON *dns;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(o))
		return cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM result is not a JSON object");
	if (parse_ips(cJSON_GetObjectItemCaseSensitive(o, "ips"), out, err) < 0 ||
	    parse_routes(cJSON_GetObjectItemCaseSensitive(o, "routes"), out, err) < 0)
		return -1;
	dns = cJSON_GetObjectItemCaseSensitive(o, "dns");
	if (cJSON_IsObject(dns))
		out->dns = cJSON_Duplicate(dns, 1);
	return 0;
}

int cw_result_parse(const char *buf, size_t len, struct cw_result *out, struct cw_error *err)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	int rc;

	if (!o)
		return cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM result is not valid JSON");
	rc = cw_result_parse_json(o, out, err);
	cJSON_Delete(o);
	return rc;
}
