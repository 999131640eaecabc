// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer harness for the service parsers (STYLE.md practice 11): the
 * services/v1 record arrives from other clusters' etcd, Service and
 * EndpointSlice objects from the Kubernetes API; every byte of them is
 * outside input.  The parsers' .c files are included directly.
 *
 * Input: one byte choosing the connection's cluster id, then either
 * "KEY\nVALUE" (the key as given) or just VALUE, in which case the key is
 * the one the value names, so the fuzzer gets past the key checks.  The
 * value is also read as a Service and as an EndpointSlice, and the tuples
 * of whatever was accepted go through the slot choice.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "../../helper/services.c"
#include "../../helper/records.c"
#include "../../lib/addr.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned int cluster_ids[] = { 0, 1, 5, 255 };

static void check_err(int rc, const char *err, size_t errlen)
{
	/* a refusal is -EINVAL with a message, NUL-terminated within its buffer */
	if (rc == -ENOMEM)
		return;
	if (rc != -EINVAL || !err[0] || !memchr(err, '\0', errlen))
		abort();
}

static void check_tuple(const struct cw_svc_be *b, uint16_t cid)
{
	if (!unicast(b->ip) || !b->port || (b->proto != IPPROTO_TCP && b->proto != IPPROTO_UDP) ||
	    b->cluster_id != cid || !memchr(b->port_name, '\0', sizeof(b->port_name)))
		abort();
}

/* Slots for each affinity: a subset of the port's tuples, unique, in order. */
static void fuzz_select(const struct cw_svc_bes *b, unsigned int local_id)
{
	static const enum cw_affinity affs[] = { CW_AFFINITY_NONE, CW_AFFINITY_LOCAL,
						 CW_AFFINITY_REMOTE };
	struct cw_svc_port fp = { .port = 80, .proto = IPPROTO_TCP };
	size_t n_match = 0;

	if (b->n) {
		memcpy(fp.name, b->v[0].port_name, sizeof(fp.name));
		fp.proto = b->v[0].proto;
	}
	for (size_t i = 0; i < b->n; i++)
		n_match += b->v[i].proto == fp.proto && strcmp(b->v[i].port_name, fp.name) == 0;
	for (size_t a = 0; a < 3; a++) {
		struct cw_lb4_backend *v = NULL;
		size_t n = 0;

		if (cw_svc_select(&fp, affs[a], local_id, b->v, b->n, &v, &n) != 0)
			abort();
		if (n > n_match || (n == 0) != (v == NULL) || (n_match && !n))
			abort();
		for (size_t i = 1; i < n; i++)
			if (cmp_slot(&v[i - 1], &v[i]) >= 0)
				abort();
		for (size_t i = 0; i < n; i++) {
			bool found = false;

			for (size_t j = 0; j < i; j++)
				if (cmp_addr_port(&v[j], &v[i]) == 0)
					abort();
			for (size_t j = 0; j < b->n && !found; j++)
				found = b->v[j].ip.s_addr == v[i].address &&
					htons(b->v[j].port) == v[i].port &&
					b->v[j].cluster_id == v[i].cluster_id &&
					b->v[j].proto == fp.proto &&
					strcmp(b->v[j].port_name, fp.name) == 0;
			if (!found)
				abort();
		}
		free(v);
	}
}

/* The key a value names, from its fields (or "" when they are not strings). */
static void derive_key(const char *val, size_t len, char *key, size_t keylen, char *cluster,
		       size_t clulen)
{
	cJSON *o = cJSON_ParseWithLength(val, len);
	const char *c = str_field(o, "cluster"), *ns = str_field(o, "namespace"),
		   *name = str_field(o, "name");

	snprintf(cluster, clulen, "%s", c && cw_cluster_name_valid(c) ? c : "cluster1");
	snprintf(key, keylen, CW_KEY_SERVICES "%s/%s/%s", cluster, ns ? ns : "", name ? name : "");
	cJSON_Delete(o);
}

static void fuzz_rec(const char *key, const char *val, size_t len, const char *cluster,
		     unsigned int cid)
{
	struct cw_svc_rec r, again;
	struct cw_svc svc;
	char err[128], want[256], *s, *s2;
	int rc;

	memset(err, 0, sizeof(err));
	rc = cw_svc_rec_parse(key, val, len, cluster, cid, &r, err, sizeof(err));
	if (rc) {
		check_err(rc, err, sizeof(err));
		if (r.backends.v || r.backends.n)
			abort();
		return;
	}
	/* what is accepted is the connection's, under its own key */
	snprintf(want, sizeof(want), CW_KEY_SERVICES "%s/%s/%s", cluster, r.ns, r.name);
	if (strcmp(key, want) != 0 || strcmp(r.cluster, cluster) != 0 ||
	    (cid && r.cluster_id != cid) || r.cluster_id > 65535 || !dns_label_valid(r.ns) ||
	    !dns_label_valid(r.name) || r.backends.n > CW_SVC_REC_TUPLES_MAX)
		abort();
	for (size_t i = 0; i < r.backends.n; i++)
		check_tuple(&r.backends.v[i], (uint16_t)r.cluster_id);
	fuzz_select(&r.backends, cid);

	/* what we accept, we write and read back; writing it again gives the same bytes */
	memset(&svc, 0, sizeof(svc));
	memcpy(svc.ns, r.ns, sizeof(svc.ns));
	memcpy(svc.name, r.name, sizeof(svc.name));
	svc.global = r.include_external;
	svc.shared = r.shared;
	s = cw_svc_rec_format(&svc, r.cluster, r.cluster_id, &r.backends);
	if (!s)
		abort();
	if (cw_svc_rec_parse(key, s, strlen(s), cluster, cid, &again, err, sizeof(err)) != 0)
		abort();
	if (again.cluster_id != r.cluster_id || again.shared != r.shared ||
	    again.include_external != r.include_external || again.backends.n > r.backends.n ||
	    (r.backends.n && !again.backends.n))
		abort();
	s2 = cw_svc_rec_format(&svc, again.cluster, again.cluster_id, &again.backends);
	if (!s2 || strcmp(s, s2) != 0)
		abort();
	free(s2);
	free(s);
	cw_svc_rec_clear(&again);
	cw_svc_rec_clear(&r);
}

static void fuzz_k8s(const char *val, size_t len, unsigned int cid)
{
	cJSON *o = cJSON_ParseWithLength(val, len);
	struct cw_svc_be seed = { .ip.s_addr = htonl(0x0a000001), .port = 1, .proto = IPPROTO_TCP,
				  .cluster_id = (uint16_t)cid };
	struct cw_svc_bes b = { 0 };
	char err[128], ns[CW_SVC_NAME_MAX + 1], name[CW_SVC_NAME_MAX + 1], *s;
	struct cw_svc svc;
	int rc;

	if (!o)
		return;
	memset(err, 0, sizeof(err));
	rc = cw_svc_from_k8s(o, &svc, err, sizeof(err));
	if (rc) {
		check_err(rc, err, sizeof(err));
	} else {
		if (!dns_label_valid(svc.ns) || !dns_label_valid(svc.name) ||
		    svc.n_ports > CW_SVC_PORTS_MAX || (!svc.global && svc.affinity != CW_AFFINITY_NONE) ||
		    (svc.cluster_ip.s_addr && !unicast(svc.cluster_ip)))
			abort();
		for (size_t i = 0; i < svc.n_ports; i++)
			if (!svc.ports[i].port || (svc.ports[i].proto != IPPROTO_TCP &&
						   svc.ports[i].proto != IPPROTO_UDP) ||
			    !memchr(svc.ports[i].name, '\0', sizeof(svc.ports[i].name)))
				abort();
		s = cw_svc_rec_format(&svc, "cluster1", cid, NULL);
		if (!s)
			abort();
		free(s);
	}

	/* a slice adds its ready tuples after what is there, or nothing at all */
	if (cw_svc_bes_add(&b, &seed))
		goto out;
	memset(err, 0, sizeof(err));
	rc = cw_epslice_parse(o, ns, sizeof(ns), name, sizeof(name), (uint16_t)cid, &b, err,
			      sizeof(err));
	if (b.n < 1 || b.v[0].ip.s_addr != seed.ip.s_addr)
		abort();
	if (rc) {
		check_err(rc, err, sizeof(err));
		if (b.n != 1)
			abort();
	} else {
		if (!memchr(ns, '\0', sizeof(ns)) || !memchr(name, '\0', sizeof(name)) ||
		    (!name[0] && b.n != 1) || (name[0] && !dns_label_valid(name)))
			abort();
		for (size_t i = 1; i < b.n; i++)
			check_tuple(&b.v[i], (uint16_t)cid);
		fuzz_select(&b, 1);
	}
out:
	cw_svc_bes_clear(&b);
	cJSON_Delete(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf, *key = NULL, cluster[CW_CLUSTER_NAME_MAX + 1] = "cluster1", k[512];
	unsigned int cid;
	const char *nl, *val;
	size_t vlen;

	if (size < 1)
		return 0;
	cid = cluster_ids[data[0] % 4];
	data++;
	size--;
	/* an exact-size copy, so reading one byte past the value is caught by ASan */
	buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	nl = memchr(buf, '\n', size);
	if (nl && nl - buf < 400) {
		key = strndup(buf, (size_t)(nl - buf));
		val = nl + 1;
		vlen = size - (size_t)(nl - buf) - 1;
		if (key)
			fuzz_rec(key, val, vlen, cluster, cid);
	} else {
		val = buf;
		vlen = size;
		derive_key(val, vlen, k, sizeof(k), cluster, sizeof(cluster));
		fuzz_rec(k, val, vlen, cluster, cid);
	}
	fuzz_k8s(val, vlen, cid);
	free(key);
	free(buf);
	return 0;
}
