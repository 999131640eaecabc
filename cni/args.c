// SPDX-License-Identifier: Apache-2.0
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/*
 * SPEC.md uses one rule for CNI_CONTAINERID and the network name: an
 * alphanumeric first character, then alphanumerics, '_', '.' or '-'.
 */
bool cw_valid_cni_token(const char *s, size_t max)
{
	size_t n = 0;

	if (!s || !is_alnum(*s))
		return false;
	for (; *s; s++, n++) {
		if (!is_alnum(*s) && *s != '_' && *s != '.' && *s != '-')
			return false;
	}
	return n <= max;
}

bool cw_valid_container_id(const char *s)
{
	return cw_valid_cni_token(s, 200);
}

/* Linux interface names: 1..15 bytes, no '/', ':' or whitespace, not . or .. */
bool cw_valid_ifname(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 15 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (; *s; s++) {
		/* the kernel's dev_valid_name(): no '/', ':' or isspace() */
		if (*s == '/' || *s == ':' || *s == ' ' || (*s >= '\t' && *s <= '\r'))
			return false;
	}
	return true;
}

static void copy_value(char *dst, size_t len, const char *v, size_t vlen)
{
	if (vlen >= len)
		vlen = len - 1;
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
}

/* CNI_ARGS: "K=V;K=V" (SPEC.md, and the K8S_POD_* keys kubelet passes). */
void cw_args_parse_cni_args(struct cw_args *a, const char *s)
{
	while (s && *s) {
		const char *end = strchr(s, ';'), *eq;
		size_t n = end ? (size_t)(end - s) : strlen(s);

		eq = memchr(s, '=', n);
		if (eq) {
			size_t klen = (size_t)(eq - s), vlen = n - klen - 1;

			if (klen == 17 && strncmp(s, "K8S_POD_NAMESPACE", klen) == 0)
				copy_value(a->pod_namespace, sizeof(a->pod_namespace), eq + 1, vlen);
			else if (klen == 12 && strncmp(s, "K8S_POD_NAME", klen) == 0)
				copy_value(a->pod_name, sizeof(a->pod_name), eq + 1, vlen);
			else if (klen == 11 && strncmp(s, "K8S_POD_UID", klen) == 0)
				copy_value(a->pod_uid, sizeof(a->pod_uid), eq + 1, vlen);
		}
		s = end ? end + 1 : NULL;
	}
}

int cw_args_from_env(struct cw_args *a, bool need_netns, struct cw_error *err)
{
	memset(a, 0, sizeof(*a));
	a->command = getenv("CNI_COMMAND");
	a->container_id = getenv("CNI_CONTAINERID");
	a->netns = getenv("CNI_NETNS");
	a->ifname = getenv("CNI_IFNAME");
	a->path = getenv("CNI_PATH");
	if (!a->netns)
		a->netns = "";
	if (!a->path)
		a->path = "";
	if (!a->container_id || !*a->container_id)
		return cw_error_set(err, CW_ERR_INVALID_ENV, "CNI_CONTAINERID is not set");
	if (!cw_valid_container_id(a->container_id))
		return cw_error_set(err, CW_ERR_INVALID_ENV,
				    "CNI_CONTAINERID \"%.64s\" must be 1-200 characters of [A-Za-z0-9_.-]",
				    a->container_id);
	if (!a->ifname || !*a->ifname)
		return cw_error_set(err, CW_ERR_INVALID_ENV, "CNI_IFNAME is not set");
	if (!cw_valid_ifname(a->ifname))
		return cw_error_set(err, CW_ERR_INVALID_ENV,
				    "CNI_IFNAME \"%.32s\" is not a valid interface name", a->ifname);
	if (need_netns && !*a->netns)
		return cw_error_set(err, CW_ERR_INVALID_ENV, "CNI_NETNS is not set");
	cw_args_parse_cni_args(a, getenv("CNI_ARGS"));
	return 0;
}
