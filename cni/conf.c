// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <cjson/cJSON.h>

#include <causeway/datapath.h>
#include <causeway/endpoint.h>
#include <causeway/util.h>
#include "args.h"
#include "conf.h"

static const struct {
	const char *name;
	enum cw_cni_version v;
} versions[] = {
	{ "0.3.1", CW_V031 }, { "0.4.0", CW_V040 }, { "1.0.0", CW_V100 }, { "1.1.0", CW_V110 },
};

bool cw_cni_version_parse(const char *s, enum cw_cni_version *out)
{
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		if (strcmp(s, versions[i].name) == 0) {
			*out = versions[i].v;
			return true;
		}
	}
	return false;
}

const char *cw_conf_peek_version(const char *buf, size_t len, char *out, size_t outlen)
{
	cJSON *root = cJSON_ParseWithLength(buf, len);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "cniVersion");
	const char *ret = NULL;

	if (cJSON_IsString(v) && strlen(v->valuestring) < outlen) {
		strcpy(out, v->valuestring);
		ret = out;
	}
	cJSON_Delete(root);
	return ret;
}

static bool valid_abs_path(const char *s, size_t max)
{
	return s[0] == '/' && strlen(s) < max && !strstr(s, "/../") &&
	       strcmp(s + (strlen(s) >= 3 ? strlen(s) - 3 : 0), "/..") != 0;
}

/* Optional string member: absent is fine, wrong type is not. */
static int opt_string(const cJSON *o, const char *key, char *dst, size_t len,
		      struct cw_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v))
		return cw_error_set(err, CW_ERR_INVALID_CONFIG, "config field \"%s\" must be a string", key);
	if (strlen(v->valuestring) >= len)
		return cw_error_set(err, CW_ERR_INVALID_CONFIG,
				    "config field \"%s\" is longer than %zu bytes", key, len - 1);
	strcpy(dst, v->valuestring);
	return 1;
}

static int parse_attachments(struct cw_conf *c, const cJSON *list, const char *key,
			     struct cw_error *err)
{
	size_t n = 0, i = 0;
	const cJSON *it;

	if (!cJSON_IsArray(list))
		return cw_error_set(err, CW_ERR_INVALID_CONFIG, "config field \"%s\" must be a list", key);
	cJSON_ArrayForEach(it, list)
		n++;
	c->valid = calloc(n ? n : 1, sizeof(*c->valid));
	if (!c->valid)
		return cw_error_set(err, CW_ERR_IO, "out of memory");
	cJSON_ArrayForEach(it, list) {
		const cJSON *cid = cJSON_GetObjectItemCaseSensitive(it, "containerID");
		const cJSON *ifn = cJSON_GetObjectItemCaseSensitive(it, "ifname");

		if (!cJSON_IsString(cid) || !cJSON_IsString(ifn) ||
		    strlen(cid->valuestring) >= sizeof(c->valid[i].container_id) ||
		    strlen(ifn->valuestring) >= sizeof(c->valid[i].ifname))
			return cw_error_set(err, CW_ERR_INVALID_CONFIG,
					    "config field \"%s\"[%zu] needs string \"containerID\" and \"ifname\"",
					    key, i);
		strcpy(c->valid[i].container_id, cid->valuestring);
		strcpy(c->valid[i].ifname, ifn->valuestring);
		i++;
	}
	c->n_valid = n;
	c->has_valid = true;
	return 0;
}

static int parse_fields(struct cw_conf *c, const cJSON *root, struct cw_error *err)
{
	const cJSON *v, *ipam;
	char buf[64], level[16];
	int r;

	v = cJSON_GetObjectItemCaseSensitive(root, "cniVersion");
	if (!cJSON_IsString(v))
		return cw_error_set(err, CW_ERR_INVALID_CONFIG, "config field \"cniVersion\" is missing or not a string");
	if (strlen(v->valuestring) >= sizeof(c->cni_version) ||
	    !cw_cni_version_parse(v->valuestring, &c->version))
		return cw_error_set(err, CW_ERR_INCOMPATIBLE_VERSION,
				    "cniVersion \"%.32s\" is not supported (supported: 0.3.1, 0.4.0, 1.0.0, 1.1.0)",
				    v->valuestring);
	strcpy(c->cni_version, v->valuestring);

	v = cJSON_GetObjectItemCaseSensitive(root, "name");
	if (!cJSON_IsString(v) || !v->valuestring[0])
		return cw_error_set(err, CW_ERR_INVALID_CONFIG, "config field \"name\" is missing or not a string");
	if (!cw_valid_cni_token(v->valuestring, sizeof(c->name) - 1))
		return cw_error_set(err, CW_ERR_INVALID_CONFIG,
				    "config field \"name\": \"%.64s\" must be 1-127 characters of [A-Za-z0-9_.-] starting alphanumeric",
				    v->valuestring);
	strcpy(c->name, v->valuestring);

	if ((r = opt_string(root, "type", c->type, sizeof(c->type), err)) < 0)
		return r;

	if ((r = opt_string(root, "bpfRoot", c->bpf_root, sizeof(c->bpf_root), err)) < 0)
		return r;
	if (r && !valid_abs_path(c->bpf_root, sizeof(c->bpf_root)))
		return cw_error_set(err, CW_ERR_INVALID_CONFIG,
				    "config field \"bpfRoot\": \"%s\" must be an absolute path without \"..\"", c->bpf_root);
	if ((r = opt_string(root, "stateDir", c->state_dir, sizeof(c->state_dir), err)) < 0)
		return r;
	if (r && !valid_abs_path(c->state_dir, sizeof(c->state_dir)))
		return cw_error_set(err, CW_ERR_INVALID_CONFIG,
				    "config field \"stateDir\": \"%s\" must be an absolute path without \"..\"", c->state_dir);
	if ((r = opt_string(root, "logFile", c->log_file, sizeof(c->log_file), err)) < 0)
		return r;
	if (r && c->log_file[0] != '/')
		return cw_error_set(err, CW_ERR_INVALID_CONFIG,
				    "config field \"logFile\": \"%s\" must be an absolute path", c->log_file);

	if ((r = opt_string(root, "logLevel", level, sizeof(level), err)) < 0)
		return r;
	if (r && !cw_log_parse_level(level, &c->log_level))
		return cw_error_set(err, CW_ERR_INVALID_CONFIG,
				    "config field \"logLevel\": \"%s\" is not one of debug, info, warn, error", level);

	v = cJSON_GetObjectItemCaseSensitive(root, "mtu");
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsNumber(v))
			return cw_error_set(err, CW_ERR_INVALID_CONFIG,
					    "config field \"mtu\" must be an integer from 68 to 65535");
		if (v->valuedouble != floor(v->valuedouble) || v->valuedouble < 68 ||
		    v->valuedouble > 65535)
			return cw_error_set(err, CW_ERR_INVALID_CONFIG,
					    "config field \"mtu\": %.17g is not an integer from 68 to 65535",
					    v->valuedouble);
		c->mtu = (unsigned int)v->valuedouble;
	}

	v = cJSON_GetObjectItemCaseSensitive(root, "asyncLinkDelete");
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsBool(v))
			return cw_error_set(err, CW_ERR_INVALID_CONFIG,
					    "config field \"asyncLinkDelete\" must be true or false");
		c->async_link_delete = cJSON_IsTrue(v);
	}

	if ((r = opt_string(root, "podCIDR", buf, sizeof(buf), err)) < 0)
		return r;
	if (r) {
		if (!cw_prefix4_parse(buf, &c->pod_cidr))
			return cw_error_set(err, CW_ERR_INVALID_CONFIG,
					    "config field \"podCIDR\": \"%s\" is not an IPv4 network in CIDR notation (like 10.10.1.0/24, host bits zero)", buf);
		/* network, gateway and broadcast are reserved: /29 leaves 5 */
		if (c->pod_cidr.len < 8 || c->pod_cidr.len > 29)
			return cw_error_set(err, CW_ERR_INVALID_CONFIG,
					    "config field \"podCIDR\": \"%s\" must have a prefix length from /8 to /29", buf);
		c->has_pod_cidr = true;
	}

	ipam = cJSON_GetObjectItemCaseSensitive(root, "ipam");
	if (ipam && !cJSON_IsNull(ipam)) {
		if (!cJSON_IsObject(ipam))
			return cw_error_set(err, CW_ERR_INVALID_CONFIG, "config field \"ipam\" must be an object");
		if ((r = opt_string(ipam, "type", c->ipam_type, sizeof(c->ipam_type), err)) < 0) {
			snprintf(err->msg, sizeof(err->msg), "config field \"ipam.type\" must be a string");
			return r;
		}
		if (r) {
			if (!c->ipam_type[0] || strchr(c->ipam_type, '/') || strcmp(c->ipam_type, ".") == 0 ||
			    strcmp(c->ipam_type, "..") == 0)
				return cw_error_set(err, CW_ERR_INVALID_CONFIG,
						    "config field \"ipam.type\": \"%s\" is not a plugin name", c->ipam_type);
			c->has_ipam = true;
		}
	}

	v = cJSON_GetObjectItemCaseSensitive(root, "prevResult");
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsObject(v))
			return cw_error_set(err, CW_ERR_INVALID_CONFIG, "config field \"prevResult\" must be an object");
		c->prev_result = cJSON_Duplicate(v, 1);
		if (!c->prev_result)
			return cw_error_set(err, CW_ERR_IO, "out of memory");
	}

	/* SPEC.md GC: cni.dev/valid-attachments, formerly cni.dev/attachments */
	v = cJSON_GetObjectItemCaseSensitive(root, "cni.dev/valid-attachments");
	if (v && !cJSON_IsNull(v))
		return parse_attachments(c, v, "cni.dev/valid-attachments", err);
	v = cJSON_GetObjectItemCaseSensitive(root, "cni.dev/attachments");
	if (v && !cJSON_IsNull(v))
		return parse_attachments(c, v, "cni.dev/attachments", err);
	return 0;
}

int cw_conf_parse(const char *buf, size_t len, struct cw_conf **out, struct cw_error *err)
{
	struct cw_conf *c = NULL;
	cJSON *root = NULL;
	int rc = -1;

	root = cJSON_ParseWithLength(buf, len);
	if (!root) {
		const char *at = cJSON_GetErrorPtr();
		size_t off = at && at >= buf && at <= buf + len ? (size_t)(at - buf) : 0;

		cw_error_set(err, CW_ERR_DECODE, "config is not valid JSON (error near byte %zu)", off);
		goto cleanup;
	}
	if (!cJSON_IsObject(root)) {
		cw_error_set(err, CW_ERR_DECODE, "config is not a JSON object");
		goto cleanup;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		cw_error_set(err, CW_ERR_IO, "out of memory");
		goto cleanup;
	}
	snprintf(c->bpf_root, sizeof(c->bpf_root), "%s", CW_DEFAULT_BPF_ROOT);
	snprintf(c->state_dir, sizeof(c->state_dir), "%s", CW_DEFAULT_STATE_DIR);
	c->mtu = 1500;
	c->async_link_delete = true;
	c->log_level = CW_LOG_WARN;
	if (parse_fields(c, root, err) < 0)
		goto cleanup;
	c->raw = malloc(len + 1);
	if (!c->raw) {
		cw_error_set(err, CW_ERR_IO, "out of memory");
		goto cleanup;
	}
	memcpy(c->raw, buf, len);
	c->raw[len] = '\0';
	c->raw_len = len;
	*out = c;
	c = NULL;
	rc = 0;
cleanup:
	cw_conf_free(c);
	cJSON_Delete(root);
	return rc;
}

void cw_conf_free(struct cw_conf *c)
{
	if (!c)
		return;
	cJSON_Delete(c->prev_result);
	free(c->valid);
	free(c->raw);
	free(c);
}

bool cw_conf_has_attachment(const struct cw_conf *c, const char *container_id, const char *ifname)
{
	for (size_t i = 0; i < c->n_valid; i++) {
		if (strcmp(c->valid[i].container_id, container_id) == 0 &&
		    strcmp(c->valid[i].ifname, ifname) == 0)
			return true;
	}
	return false;
}

char *cw_conf_dump(const struct cw_conf *c)
{
	static const char *const lv[] = { "debug", "info", "warn", "error" };
	char cidr[24] = "", ip[16];
	/* sized from what it prints: the paths alone may be 4 KiB each */
	size_t cap = 512 + strlen(c->bpf_root) + strlen(c->state_dir) + strlen(c->log_file) +
		     strlen(c->name) + strlen(c->type) + strlen(c->ipam_type) + c->n_valid * 300, off;
	char *s = malloc(cap);

	if (!s)
		return NULL;
	if (c->has_pod_cidr) {
		cw_addr4_str(c->pod_cidr.addr, ip);
		snprintf(cidr, sizeof(cidr), "%s/%u", ip, c->pod_cidr.len);
	}
	off = (size_t)snprintf(s, cap,
			       "cniVersion=%s\nname=%s\ntype=%s\nbpfRoot=%s\nstateDir=%s\nmtu=%u\nasyncLinkDelete=%s\n"
			       "podCIDR=%s\nlogFile=%s\nlogLevel=%s\nipam=%s\nprevResult=%s\n",
			       c->cni_version, c->name, c->type, c->bpf_root, c->state_dir, c->mtu,
			       c->async_link_delete ? "true" : "false",
			       c->has_pod_cidr ? cidr : "-", c->log_file[0] ? c->log_file : "-",
			       lv[c->log_level], c->has_ipam ? c->ipam_type : "-",
			       c->prev_result ? "yes" : "no");
	if (c->has_valid) {
		off += (size_t)snprintf(s + off, cap - off, "validAttachments=%zu\n", c->n_valid);
		for (size_t i = 0; i < c->n_valid && off < cap; i++)
			off += (size_t)snprintf(s + off, cap - off, "  %s %s\n",
						c->valid[i].container_id, c->valid[i].ifname);
	}
	return s;
}

int cw_conf_pod_cidr(const struct cw_conf *c, struct cw_prefix4 *out, struct cw_error *err)
{
	char path[PATH_MAX + 16], *buf = NULL;
	size_t len = 0;
	int rc;

	if (c->has_pod_cidr) {
		*out = c->pod_cidr;
		return 0;
	}
	snprintf(path, sizeof(path), "%s/%s", c->state_dir, CW_PODCIDR_FILE);
	rc = cw_read_file(path, &buf, &len);
	if (rc == -ENOENT)
		return cw_error_set(err, CW_ERR_TRY_AGAIN,
				    "config has neither \"podCIDR\" nor \"ipam.type\", and the helper has "
				    "not published this node's PodCIDR yet (%s is missing)", path);
	if (rc)
		return cw_error_set(err, CW_ERR_IO, "cannot read %s: %s", path, strerror(-rc));
	buf[strcspn(buf, "\n")] = '\0';
	if (!cw_prefix4_parse(buf, out) || out->len < 8 || out->len > 29) {
		rc = cw_error_set(err, CW_ERR_INVALID_CONFIG,
				  "%s: \"%.40s\" is not an IPv4 PodCIDR from /8 to /29", path, buf);
		free(buf);
		return rc;
	}
	free(buf);
	return 0;
}
