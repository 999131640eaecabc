// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer harness for the mesh store's record decoders (STYLE.md practice
 * 11): node and ip records arrive from other clusters' etcd, so every byte
 * of them is outside input.  The parser's .c is included directly, as in
 * fuzz_conf.c.
 *
 * Input: one byte choosing the connection's cluster id, then either
 * "KEY\nVALUE" (the key as given) or just VALUE, in which case the key is
 * the one the value names, so the fuzzer gets past the key checks.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "../../helper/records.c"
#include "../../lib/addr.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned int cluster_ids[] = { 0, 1, 5, 255 };

static void check_err(int rc, const char *err, size_t errlen)
{
	/* a refusal is -EINVAL with a message, NUL-terminated within its buffer */
	if (rc != -EINVAL || !err[0] || !memchr(err, '\0', errlen))
		abort();
}

/* The key a value names, from its fields (or "" when they are not strings). */
static void derive_key(const char *val, size_t len, bool node, char *key, size_t keylen,
		       char *cluster, size_t clulen)
{
	cJSON *o = cJSON_ParseWithLength(val, len);
	const char *a = str_field(o, node ? "Cluster" : "IP"), *b = str_field(o, "Name");

	if (node) {
		snprintf(cluster, clulen, "%s", a && cw_cluster_name_valid(a) ? a : "cluster1");
		snprintf(key, keylen, CW_KEY_NODES "%s/%s", cluster, b ? b : "");
	} else {
		snprintf(key, keylen, CW_KEY_IPS "%s", a ? a : "");
	}
	cJSON_Delete(o);
}

static void fuzz_node(const char *key, const char *val, size_t len, const char *cluster,
		      unsigned int cid)
{
	struct cw_node_rec n, again;
	char err[128], want[512], *s;
	int rc;

	memset(err, 0, sizeof(err));
	rc = cw_node_rec_parse(key, val, len, cluster, cid, &n, err, sizeof(err));
	if (rc) {
		check_err(rc, err, sizeof(err));
		return;
	}
	/* what is accepted is the connection's, under its own key */
	snprintf(want, sizeof(want), CW_KEY_NODES "%s/%s", cluster, n.name);
	if (!cw_node_name_valid(n.name) || strcmp(n.cluster, cluster) != 0 ||
	    strcmp(key, want) != 0 || n.cluster_id != cid || !n.internal_ip.s_addr)
		abort();
	if (n.pod_cidr.len && (n.pod_cidr.len < 8 || n.pod_cidr.len > 32 ||
			       (n.pod_cidr.len < 32 &&
				(ntohl(n.pod_cidr.addr.s_addr) & ~(~0u << (32 - n.pod_cidr.len))))))
		abort();
	if (!memchr(n.boot_id, '\0', sizeof(n.boot_id)))
		abort();

	/* what we accept, we format and read back to the same record */
	s = cw_node_rec_format(&n);
	if (!s)
		abort();
	if (cw_node_rec_parse(key, s, strlen(s), cluster, cid, &again, err, sizeof(err)) != 0)
		abort();
	if (strcmp(again.name, n.name) || strcmp(again.cluster, n.cluster) ||
	    again.cluster_id != n.cluster_id || again.internal_ip.s_addr != n.internal_ip.s_addr ||
	    again.pod_cidr.len != n.pod_cidr.len ||
	    again.pod_cidr.addr.s_addr != (n.pod_cidr.len ? n.pod_cidr.addr.s_addr : 0) ||
	    strcmp(again.boot_id, n.boot_id))
		abort();
	free(s);
}

static void fuzz_ip(const char *key, const char *val, size_t len, unsigned int cid)
{
	struct cw_ip_rec r, again;
	char err[128], ip[16], want[64], *s;
	int rc;

	memset(err, 0, sizeof(err));
	rc = cw_ip_rec_parse(key, val, len, cid, &r, err, sizeof(err));
	if (rc) {
		check_err(rc, err, sizeof(err));
		return;
	}
	cw_addr4_str(r.ip, ip);
	snprintf(want, sizeof(want), CW_KEY_IPS "%s", ip);
	if (strcmp(key, want) != 0 || r.identity > 0xffffff)
		abort();
	/* reserved identities are anyone's; allocated ones the connection's own */
	if (r.identity >= CW_IDENTITY_LOCAL_MIN && !cw_identity_in_cluster(r.identity, cid))
		abort();
	if (!memchr(r.k8s_namespace, '\0', sizeof(r.k8s_namespace)) ||
	    !memchr(r.k8s_pod_name, '\0', sizeof(r.k8s_pod_name)))
		abort();

	s = cw_ip_rec_format(&r);
	if (!s)
		abort();
	if (cw_ip_rec_parse(key, s, strlen(s), cid, &again, err, sizeof(err)) != 0)
		abort();
	if (again.ip.s_addr != r.ip.s_addr || again.host_ip.s_addr != r.host_ip.s_addr ||
	    again.identity != r.identity || strcmp(again.k8s_namespace, r.k8s_namespace) ||
	    strcmp(again.k8s_pod_name, r.k8s_pod_name))
		abort();
	free(s);
}

static void fuzz_identity_key(const char *key)
{
	uint32_t id = 0;
	const char *p;

	if (cw_identity_key_parse(key, &id) != 0)
		return;
	if (id > 0xffffff || strncmp(key, CW_KEY_ID, strlen(CW_KEY_ID)) != 0)
		abort();
	p = key + strlen(CW_KEY_ID);
	if (!*p)
		abort();
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			abort();
}

/* The value split at ';' into key/value pairs: only memory safety to check. */
static void fuzz_labels(const char *val, size_t len, size_t outlen)
{
	const char *pairs[32];
	char *copy = strndup(val, len), *save = NULL, *tok, *out;
	size_t n = 0;
	int rc;

	if (!copy)
		return;
	for (tok = strtok_r(copy, ";", &save); tok && n < 32; tok = strtok_r(NULL, ";", &save))
		pairs[n++] = tok;
	n /= 2;
	out = malloc(outlen);
	if (!out) {
		free(copy);
		return;
	}
	rc = cw_labels_format(pairs, n, out, outlen);
	if ((rc != 0 && rc != -ENAMETOOLONG) || !memchr(out, '\0', outlen))
		abort();
	free(out);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned int cid, sel;
	const char *nl;
	char *buf, *key = NULL, cluster[CW_CLUSTER_NAME_MAX + 1] = "cluster1";
	const char *val;
	size_t vlen;

	if (size < 1)
		return 0;
	sel = data[0];
	cid = cluster_ids[sel % 4];
	data++;
	size--;
	/* an exact-size copy, so reading one byte past the value is caught by ASan */
	buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	nl = memchr(buf, '\n', size);
	if (nl) {
		key = strndup(buf, (size_t)(nl - buf));
		val = nl + 1;
		vlen = size - (size_t)(nl - buf) - 1;
		if (!key)
			goto out;
		fuzz_node(key, val, vlen, cluster, cid);
		fuzz_ip(key, val, vlen, cid);
		fuzz_identity_key(key);
	} else {
		char k[1024];

		val = buf;
		vlen = size;
		derive_key(val, vlen, true, k, sizeof(k), cluster, sizeof(cluster));
		fuzz_node(k, val, vlen, cluster, cid);
		derive_key(val, vlen, false, k, sizeof(k), cluster, sizeof(cluster));
		fuzz_ip(k, val, vlen, cid);
	}
	fuzz_labels(val, vlen, (size_t)(sel >> 2) + 1);
out:
	free(key);
	free(buf);
	return 0;
}
