// SPDX-License-Identifier: Apache-2.0
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include <sodium.h>

#include "records.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

bool cw_cluster_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > CW_CLUSTER_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) ||
		      name[i] == '-'))
			return false;
	return name[0] != '-' && name[n - 1] != '-';
}

/* A DNS subdomain as Kubernetes checks it (IsDNS1123Subdomain): labels of [a-z0-9-], alphanumeric at both ends. */
bool cw_node_name_valid(const char *name)
{
	size_t n = strlen(name), label = 0;

	if (n == 0 || n > CW_NODE_NAME_MAX)
		return false;
	for (size_t i = 0; i <= n; i++) {
		char c = name[i];

		if (c == '.' || c == '\0') {
			if (label == 0 || name[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '-'))
			return false;
		if (label == 0 && c == '-')
			return false;
		label++;
	}
	return true;
}

bool cw_identity_in_cluster(uint32_t id, unsigned int cluster_id)
{
	uint32_t local = id & 0xffff;

	if (id > 0xffffff || local < CW_IDENTITY_LOCAL_MIN)
		return false;
	return cluster_id == 0 || (id >> 16) == cluster_id;
}

static char *print(cJSON *o)
{
	char *s = o ? cJSON_PrintUnformatted(o) : NULL;

	cJSON_Delete(o);
	return s;
}

/* --- nodes ------------------------------------------------------------------ */

char *cw_node_rec_format(const struct cw_node_rec *n)
{
	cJSON *o = cJSON_CreateObject(), *addrs, *a, *cidr;
	char ip[16], mask_b64[16];
	uint32_t mask;

	if (!o)
		return NULL;
	cw_addr4_str(n->internal_ip, ip);
	cJSON_AddStringToObject(o, "Name", n->name);
	cJSON_AddStringToObject(o, "Cluster", n->cluster);
	addrs = cJSON_AddArrayToObject(o, "IPAddresses");
	a = cJSON_CreateObject();
	if (!addrs || !a) {
		cJSON_Delete(a);
		cJSON_Delete(o);
		return NULL;
	}
	cJSON_AddStringToObject(a, "Type", "InternalIP");
	cJSON_AddStringToObject(a, "IP", ip);
	cJSON_AddItemToArray(addrs, a);
	if (n->pod_cidr.len) {
		/* Go's net.IPNet: Mask is a byte slice, so base64 of 4 bytes. */
		mask = htonl(n->pod_cidr.len ? ~0u << (32 - n->pod_cidr.len) : 0);
		sodium_bin2base64(mask_b64, sizeof(mask_b64), (const unsigned char *)&mask, 4,
				  sodium_base64_VARIANT_ORIGINAL);
		cw_addr4_str(n->pod_cidr.addr, ip);
		cidr = cJSON_AddObjectToObject(o, "IPv4AllocCIDR");
		if (cidr) {
			cJSON_AddStringToObject(cidr, "IP", ip);
			cJSON_AddStringToObject(cidr, "Mask", mask_b64);
		}
	} else {
		cJSON_AddNullToObject(o, "IPv4AllocCIDR");
	}
	cJSON_AddNullToObject(o, "IPv6AllocCIDR");
	cJSON_AddNumberToObject(o, "ClusterID", n->cluster_id);
	cJSON_AddStringToObject(o, "Source", "local");
	cJSON_AddStringToObject(o, "WireguardPubKey", "");
	cJSON_AddStringToObject(o, "BootID", n->boot_id);
	return print(o);
}

static const char *str_field(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int parse_cidr(const cJSON *c, struct cw_prefix4 *out, char *err, size_t errlen)
{
	const char *ip = str_field(c, "IP"), *mask = str_field(c, "Mask");
	unsigned char m[8];
	size_t mlen = 0;
	uint32_t bits;
	int len = 0;

	if (!ip || !mask || !cw_addr4_parse(ip, &out->addr))
		return ERR("IPv4AllocCIDR: IP/Mask missing or not IPv4");
	if (sodium_base642bin(m, sizeof(m), mask, strlen(mask), NULL, &mlen, NULL,
			      sodium_base64_VARIANT_ORIGINAL) || mlen != 4)
		return ERR("IPv4AllocCIDR: Mask \"%s\" is not base64 of 4 bytes", mask);
	bits = ntohl(*(uint32_t *)m);
	while (len < 32 && (bits & (0x80000000u >> len)))
		len++;
	if (len < 32 && (bits << len) != 0)
		return ERR("IPv4AllocCIDR: Mask \"%s\" is not contiguous", mask);
	if (len < 8)
		return ERR("IPv4AllocCIDR: /%d is too wide for a node", len);
	out->len = (uint8_t)len;
	if (len < 32 && (ntohl(out->addr.s_addr) & ~(~0u << (32 - len))))
		return ERR("IPv4AllocCIDR: %s has host bits set for /%d", ip, len);
	return 0;
}

int cw_node_rec_parse(const char *key, const char *buf, size_t len, const char *cluster,
		      unsigned int cluster_id, struct cw_node_rec *out, char *err, size_t errlen)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	const cJSON *addrs, *a, *cidr, *cid;
	const char *name, *clu, *boot;
	char want[512];
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!o || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return ERR("node record is not a JSON object");
	}
	name = str_field(o, "Name");
	clu = str_field(o, "Cluster");
	if (!name || !cw_node_name_valid(name)) {
		rc = ERR("node record: Name missing or not a node name");
		goto out;
	}
	if (!clu || strcmp(clu, cluster) != 0) {
		rc = ERR("node record %s: Cluster \"%s\" is not \"%s\"", name, clu ? clu : "", cluster);
		goto out;
	}
	snprintf(want, sizeof(want), CW_KEY_NODES "%s/%s", cluster, name);
	if (strcmp(key, want) != 0) {
		rc = ERR("node record %s: key %s does not match its value", name, key);
		goto out;
	}
	cid = cJSON_GetObjectItemCaseSensitive(o, "ClusterID");
	if (cluster_id && (!cJSON_IsNumber(cid) || cid->valuedouble != cluster_id)) {
		rc = ERR("node record %s: ClusterID is not %u", name, cluster_id);
		goto out;
	}
	snprintf(out->name, sizeof(out->name), "%s", name);
	snprintf(out->cluster, sizeof(out->cluster), "%s", clu);
	out->cluster_id = cluster_id;
	addrs = cJSON_GetObjectItemCaseSensitive(o, "IPAddresses");
	cJSON_ArrayForEach(a, addrs) {
		const char *type = str_field(a, "Type"), *ip = str_field(a, "IP");

		if (type && ip && strcmp(type, "InternalIP") == 0 &&
		    cw_addr4_parse(ip, &out->internal_ip))
			break;
	}
	if (!out->internal_ip.s_addr) {
		rc = ERR("node record %s: no IPv4 InternalIP", name);
		goto out;
	}
	cidr = cJSON_GetObjectItemCaseSensitive(o, "IPv4AllocCIDR");
	if (cJSON_IsObject(cidr)) {
		rc = parse_cidr(cidr, &out->pod_cidr, err, errlen);
		if (rc)
			goto out;
	}
	boot = str_field(o, "BootID");
	if (boot)
		snprintf(out->boot_id, sizeof(out->boot_id), "%s", boot);
	rc = 0;
out:
	cJSON_Delete(o);
	return rc;
}

/* --- ip records ------------------------------------------------------------- */

char *cw_ip_rec_format(const struct cw_ip_rec *r)
{
	cJSON *o = cJSON_CreateObject();
	char ip[16], host[16];

	if (!o)
		return NULL;
	cw_addr4_str(r->ip, ip);
	cw_addr4_str(r->host_ip, host);
	cJSON_AddStringToObject(o, "IP", ip);
	cJSON_AddNullToObject(o, "Mask");
	cJSON_AddStringToObject(o, "HostIP", host);
	cJSON_AddNumberToObject(o, "ID", r->identity);
	cJSON_AddNumberToObject(o, "Key", 0);
	cJSON_AddStringToObject(o, "Metadata", "");
	cJSON_AddStringToObject(o, "K8sNamespace", r->k8s_namespace);
	cJSON_AddStringToObject(o, "K8sPodName", r->k8s_pod_name);
	return print(o);
}

int cw_ip_rec_parse(const char *key, const char *buf, size_t len, unsigned int cluster_id,
		    struct cw_ip_rec *out, char *err, size_t errlen)
{
	cJSON *o = cJSON_ParseWithLength(buf, len);
	const char *ip, *host, *ns, *pod;
	const cJSON *id;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!o || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return ERR("ip record is not a JSON object");
	}
	ip = str_field(o, "IP");
	host = str_field(o, "HostIP");
	if (!ip || !cw_addr4_parse(ip, &out->ip)) {
		rc = ERR("ip record: IP missing or not IPv4");
		goto out;
	}
	if (strncmp(key, CW_KEY_IPS, strlen(CW_KEY_IPS)) != 0 ||
	    strcmp(key + strlen(CW_KEY_IPS), ip) != 0) {
		rc = ERR("ip record %s: key %s does not match its value", ip, key);
		goto out;
	}
	if (!host || !cw_addr4_parse(host, &out->host_ip)) {
		rc = ERR("ip record %s: HostIP missing or not IPv4", ip);
		goto out;
	}
	id = cJSON_GetObjectItemCaseSensitive(o, "ID");
	if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 0xffffff ||
	    id->valuedouble != (double)(uint32_t)id->valuedouble) {
		rc = ERR("ip record %s: ID is not a 24-bit identity", ip);
		goto out;
	}
	out->identity = (uint32_t)id->valuedouble;
	/* Reserved identities are any cluster's; allocated ones must be its own. */
	if (out->identity >= CW_IDENTITY_LOCAL_MIN && !cw_identity_in_cluster(out->identity, cluster_id)) {
		rc = ERR("ip record %s: identity %" PRIu32 " is not in cluster %u's range", ip,
		    out->identity, cluster_id);
		goto out;
	}
	ns = str_field(o, "K8sNamespace");
	pod = str_field(o, "K8sPodName");
	snprintf(out->k8s_namespace, sizeof(out->k8s_namespace), "%s", ns ? ns : "");
	snprintf(out->k8s_pod_name, sizeof(out->k8s_pod_name), "%s", pod ? pod : "");
	rc = 0;
out:
	cJSON_Delete(o);
	return rc;
}

int cw_identity_key_parse(const char *key, uint32_t *id)
{
	const char *s;
	char *end;
	unsigned long v;

	if (strncmp(key, CW_KEY_ID, strlen(CW_KEY_ID)) != 0)
		return -EINVAL;
	s = key + strlen(CW_KEY_ID);
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 0xffffff)
		return -EINVAL;
	*id = (uint32_t)v;
	return 0;
}

struct label {
	const char *k, *v;
};

static int cmp_label(const void *a, const void *b)
{
	return strcmp(((const struct label *)a)->k, ((const struct label *)b)->k);
}

int cw_labels_format(const char *const *pairs, size_t n_pairs, char *out, size_t len)
{
	struct label *l = calloc(n_pairs ? n_pairs : 1, sizeof(*l));
	size_t off = 0;
	int rc = 0;

	if (!l)
		return -ENOMEM;
	for (size_t i = 0; i < n_pairs; i++)
		l[i] = (struct label){ pairs[2 * i], pairs[2 * i + 1] };
	qsort(l, n_pairs, sizeof(*l), cmp_label);
	out[0] = '\0';
	for (size_t i = 0; i < n_pairs && !rc; i++) {
		int n = snprintf(out + off, len - off, "k8s:%s=%s;", l[i].k, l[i].v);

		if (n < 0 || (size_t)n >= len - off)
			rc = -ENAMETOOLONG;
		else
			off += (size_t)n;
	}
	free(l);
	return rc;
}
