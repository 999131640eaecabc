// SPDX-License-Identifier: Apache-2.0
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include <causeway/addr.h>
#include <causeway/endpoint.h>
#include <causeway/log.h>
#include <causeway/util.h>

static bool get_str(const cJSON *o, const char *name, char *dst, size_t len, bool required,
		    char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	if (!v) {
		if (required)
			snprintf(err, errlen, "field \"%s\" is missing", name);
		dst[0] = '\0';
		return !required;
	}
	if (!cJSON_IsString(v) || strlen(v->valuestring) >= len) {
		snprintf(err, errlen, "field \"%s\" must be a string of at most %zu bytes",
			 name, len - 1);
		return false;
	}
	strcpy(dst, v->valuestring);
	return true;
}

int cw_endpoint_parse(const char *buf, size_t len, struct cw_endpoint_state *out,
		      char *err, size_t errlen)
{
	char ip[32], gw[32], pmac[24], hmac[24];
	cJSON *o = cJSON_ParseWithLength(buf, len);
	const cJSON *v;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(o)) {
		snprintf(err, errlen, "not a JSON object");
		goto cleanup;
	}
	if (!get_str(o, "containerID", out->container_id, sizeof(out->container_id), true, err, errlen) ||
	    !get_str(o, "ifname", out->ifname, sizeof(out->ifname), true, err, errlen) ||
	    !get_str(o, "netns", out->netns, sizeof(out->netns), false, err, errlen) ||
	    !get_str(o, "network", out->network, sizeof(out->network), false, err, errlen) ||
	    !get_str(o, "hostIfname", out->host_ifname, sizeof(out->host_ifname), true, err, errlen) ||
	    !get_str(o, "ip", ip, sizeof(ip), true, err, errlen) ||
	    !get_str(o, "gateway", gw, sizeof(gw), true, err, errlen) ||
	    !get_str(o, "podMAC", pmac, sizeof(pmac), true, err, errlen) ||
	    !get_str(o, "hostMAC", hmac, sizeof(hmac), true, err, errlen) ||
	    !get_str(o, "podNamespace", out->pod_namespace, sizeof(out->pod_namespace), false, err, errlen) ||
	    !get_str(o, "podName", out->pod_name, sizeof(out->pod_name), false, err, errlen) ||
	    !get_str(o, "podUID", out->pod_uid, sizeof(out->pod_uid), false, err, errlen))
		goto cleanup;
	if (!cw_addr4_parse_cidr(ip, &out->ip, &out->prefixlen)) {
		snprintf(err, errlen, "field \"ip\": \"%s\" is not an IPv4 CIDR", ip);
		goto cleanup;
	}
	if (!cw_addr4_parse(gw, &out->gateway)) {
		snprintf(err, errlen, "field \"gateway\": \"%s\" is not an IPv4 address", gw);
		goto cleanup;
	}
	if (!cw_mac_parse(pmac, out->pod_mac) || !cw_mac_parse(hmac, out->host_mac)) {
		snprintf(err, errlen, "field \"podMAC\" or \"hostMAC\" is not a MAC address");
		goto cleanup;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "hostIfindex");
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > INT_MAX ||
	    v->valuedouble != (double)(int)v->valuedouble) {
		snprintf(err, errlen, "field \"hostIfindex\" must be a positive integer");
		goto cleanup;
	}
	out->host_ifindex = v->valueint;
	v = cJSON_GetObjectItemCaseSensitive(o, "mtu");
	out->mtu = cJSON_IsNumber(v) && v->valuedouble >= 68 && v->valuedouble < 65536 ?
		   (unsigned int)v->valuedouble : 1500;
	out->ipam_delegated = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ipamDelegated"));
	rc = 0;
cleanup:
	cJSON_Delete(o);
	return rc;
}

char *cw_endpoint_format(const struct cw_endpoint_state *ep)
{
	char ip[16], gw[16], cidr[24], pmac[18], hmac[18];
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (!o)
		return NULL;
	cw_addr4_str(ep->ip, ip);
	cw_addr4_str(ep->gateway, gw);
	snprintf(cidr, sizeof(cidr), "%s/%u", ip, ep->prefixlen);
	cw_mac_str(ep->pod_mac, pmac);
	cw_mac_str(ep->host_mac, hmac);
	cJSON_AddStringToObject(o, "containerID", ep->container_id);
	cJSON_AddStringToObject(o, "ifname", ep->ifname);
	cJSON_AddStringToObject(o, "netns", ep->netns);
	cJSON_AddStringToObject(o, "network", ep->network);
	cJSON_AddStringToObject(o, "hostIfname", ep->host_ifname);
	cJSON_AddNumberToObject(o, "hostIfindex", ep->host_ifindex);
	cJSON_AddStringToObject(o, "ip", cidr);
	cJSON_AddStringToObject(o, "gateway", gw);
	cJSON_AddStringToObject(o, "podMAC", pmac);
	cJSON_AddStringToObject(o, "hostMAC", hmac);
	cJSON_AddNumberToObject(o, "mtu", ep->mtu);
	cJSON_AddBoolToObject(o, "ipamDelegated", ep->ipam_delegated);
	cJSON_AddStringToObject(o, "podNamespace", ep->pod_namespace);
	cJSON_AddStringToObject(o, "podName", ep->pod_name);
	cJSON_AddStringToObject(o, "podUID", ep->pod_uid);
	s = cJSON_Print(o);
	cJSON_Delete(o);
	return s;
}

int cw_endpoint_path(const char *state_dir, const char *container_id, const char *ifname,
		     char *buf, size_t len)
{
	if (snprintf(buf, len, "%s/%s/%s-%s.json", state_dir, CW_ENDPOINT_DIR,
		     container_id, ifname) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

int cw_endpoint_write(const char *state_dir, const struct cw_endpoint_state *ep)
{
	char dir[PATH_MAX], path[PATH_MAX];
	char *doc = NULL;
	int err;

	if (snprintf(dir, sizeof(dir), "%s/%s", state_dir, CW_ENDPOINT_DIR) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	err = cw_mkdir_p(dir, 0700);
	if (err)
		return err;
	err = cw_endpoint_path(state_dir, ep->container_id, ep->ifname, path, sizeof(path));
	if (err)
		return err;
	doc = cw_endpoint_format(ep);
	if (!doc)
		return -ENOMEM;
	/* Pods do not outlive a node crash, so neither need their records. */
	err = cw_write_file_atomic(path, doc, strlen(doc), false);
	free(doc);
	return err;
}

int cw_endpoint_read(const char *state_dir, const char *container_id, const char *ifname,
		     struct cw_endpoint_state *out)
{
	char path[PATH_MAX], err[256];
	char *buf = NULL;
	size_t len;
	int rc;

	rc = cw_endpoint_path(state_dir, container_id, ifname, path, sizeof(path));
	if (rc)
		return rc;
	rc = cw_read_file(path, &buf, &len);
	if (rc)
		return rc;
	rc = cw_endpoint_parse(buf, len, out, err, sizeof(err));
	if (rc)
		pr_warn("endpoint state %s is corrupt: %s", path, err);
	free(buf);
	return rc;
}

int cw_endpoint_remove(const char *state_dir, const char *container_id, const char *ifname)
{
	char path[PATH_MAX];
	int err = cw_endpoint_path(state_dir, container_id, ifname, path, sizeof(path));

	if (err)
		return err;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int cw_endpoint_foreach(const char *state_dir, cw_endpoint_fn fn, void *arg)
{
	char dir[PATH_MAX], path[PATH_MAX], err[256];
	struct cw_endpoint_state ep;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if (snprintf(dir, sizeof(dir), "%s/%s", state_dir, CW_ENDPOINT_DIR) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name), len;
		char *buf = NULL;

		if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
			continue;
		if (cw_read_file(path, &buf, &len))
			continue; /* removed under us by a concurrent DEL */
		if (cw_endpoint_parse(buf, len, &ep, err, sizeof(err)) == 0)
			rc = fn(&ep, arg);
		else
			pr_warn("endpoint state %s is corrupt: %s", path, err);
		free(buf);
		if (rc)
			break;
	}
	closedir(d);
	return rc;
}
