// SPDX-License-Identifier: Apache-2.0
/*
 * Services (services.h): Kubernetes Service and EndpointSlice objects read
 * into frontends and backend tuples, Cilium's ClusterService record written
 * and checked, and the slots of a frontend chosen per affinity.  Pure
 * functions; every refusal names the field.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cjson/cJSON.h>

#include "services.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

/* A ClusterService carries at most this many (address, port) tuples. */
#define CW_SVC_REC_TUPLES_MAX 65535

const char *cw_affinity_name(enum cw_affinity a)
{
	switch (a) {
	case CW_AFFINITY_LOCAL:
		return "local";
	case CW_AFFINITY_REMOTE:
		return "remote";
	default:
		return "none";
	}
}

/* --- small helpers -------------------------------------------------------------- */

static const cJSON *field(const cJSON *o, const char *name)
{
	return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
}

static const char *str_of(const cJSON *o, const char *name)
{
	const cJSON *v = field(o, name);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Absent or JSON null: Go's zero value, and Kubernetes' "not set". */
static bool unset(const cJSON *v)
{
	return !v || cJSON_IsNull(v);
}

/* An RFC 1123 label, as Kubernetes checks namespace and Service names. */
static bool dns_label_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CW_SVC_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
			return false;
	return s[0] != '-' && s[n - 1] != '-';
}

/*
 * Addresses traffic may be sent to: not 0/8, loopback, link-local,
 * multicast, reserved or broadcast.  Kubernetes refuses the same ones for
 * endpoint addresses; a remote cluster naming them as backends would point
 * this node's traffic at itself or nowhere.
 */
static bool unicast(struct in_addr a)
{
	uint32_t h = ntohl(a.s_addr);

	return (h >> 24) != 0 && (h >> 24) != 127 && (h >> 16) != 0xa9fe && h < 0xe0000000u;
}

/* An integer 1..65535 in a JSON number. */
static bool port_number(const cJSON *v, uint16_t *out)
{
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65535 ||
	    v->valuedouble != (double)(int)v->valuedouble)
		return false;
	*out = (uint16_t)v->valuedouble;
	return true;
}

enum proto_kind { PROTO_BAD, PROTO_OK, PROTO_SKIP };

/* Kubernetes' and Cilium's L4 protocol names; SCTP and ANY are not balanced. */
static enum proto_kind proto_parse(const char *s, uint8_t *out)
{
	if (strcmp(s, "TCP") == 0) {
		*out = IPPROTO_TCP;
		return PROTO_OK;
	}
	if (strcmp(s, "UDP") == 0) {
		*out = IPPROTO_UDP;
		return PROTO_OK;
	}
	return strcmp(s, "SCTP") == 0 || strcmp(s, "ANY") == 0 ? PROTO_SKIP : PROTO_BAD;
}

static const char *proto_name(uint8_t p)
{
	return p == IPPROTO_UDP ? "UDP" : "TCP";
}

/* --- tuples ----------------------------------------------------------------------- */

int cw_svc_bes_add(struct cw_svc_bes *b, const struct cw_svc_be *be)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct cw_svc_be *v = realloc(b->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n++] = *be;
	return 0;
}

void cw_svc_bes_clear(struct cw_svc_bes *b)
{
	if (!b)
		return;
	free(b->v);
	b->v = NULL;
	b->n = b->cap = 0;
}

/* --- Kubernetes Service ------------------------------------------------------------ */

/*
 * The value of annotation @name, else of its older @alias (Cilium's
 * annotation.Get: the current name is looked up first).
 */
static const char *annotation(const cJSON *ann, const char *name, const char *alias)
{
	const char *v = str_of(ann, name);

	return v ? v : str_of(ann, alias);
}

const char *const cw_svc_k8s_keep[] = { "metadata.annotations", "spec.clusterIP", "spec.ports",
					NULL };

int cw_svc_from_k8s(const cJSON *obj, struct cw_svc *out, char *err, size_t errlen)
{
	const cJSON *meta = field(obj, "metadata"), *spec = field(obj, "spec"), *ports, *p, *ann;
	const char *ns = str_of(meta, "namespace"), *name = str_of(meta, "name"), *ip, *v;
	size_t i = 0;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(obj))
		return ERR("Service: not a JSON object");
	if (!ns || !dns_label_valid(ns))
		return ERR("Service: metadata.namespace missing or not a DNS label");
	if (!name || !dns_label_valid(name))
		return ERR("Service %s: metadata.name missing or not a DNS label", ns);
	snprintf(out->ns, sizeof(out->ns), "%s", ns);
	snprintf(out->name, sizeof(out->name), "%s", name);

	if (!unset(field(spec, "clusterIP")) && !cJSON_IsString(field(spec, "clusterIP")))
		return ERR("Service %s/%s: spec.clusterIP is not a string", ns, name);
	ip = str_of(spec, "clusterIP");
	if (ip && *ip && strcmp(ip, "None") != 0 &&
	    (!cw_addr4_parse(ip, &out->cluster_ip) || !unicast(out->cluster_ip))) {
		out->cluster_ip.s_addr = 0;
		return ERR("Service %s/%s: spec.clusterIP \"%s\" is not a unicast IPv4 address", ns,
			   name, ip);
	}

	ports = field(spec, "ports");
	if (!unset(ports) && !cJSON_IsArray(ports))
		return ERR("Service %s/%s: spec.ports is not a list", ns, name);
	if (!cJSON_IsArray(ports))
		ports = NULL;
	cJSON_ArrayForEach(p, ports) {
		const cJSON *pname = field(p, "name"), *proto = field(p, "protocol");
		struct cw_svc_port sp = { .proto = IPPROTO_TCP };

		if (!cJSON_IsObject(p))
			return ERR("Service %s/%s: spec.ports[%zu] is not an object", ns, name, i);
		if (!port_number(field(p, "port"), &sp.port))
			return ERR("Service %s/%s: spec.ports[%zu].port is not a number in 1..65535",
				   ns, name, i);
		if (!unset(pname)) {
			if (!cJSON_IsString(pname) || strlen(pname->valuestring) > CW_SVC_PORT_NAME_MAX)
				return ERR("Service %s/%s: spec.ports[%zu].name is not a port name", ns,
					   name, i);
			snprintf(sp.name, sizeof(sp.name), "%s", pname->valuestring);
		}
		if (!unset(proto)) {
			if (!cJSON_IsString(proto))
				return ERR("Service %s/%s: spec.ports[%zu].protocol is not a string", ns,
					   name, i);
			switch (proto_parse(proto->valuestring, &sp.proto)) {
			case PROTO_BAD:
				return ERR("Service %s/%s: spec.ports[%zu].protocol \"%s\" is not TCP, UDP or SCTP",
					   ns, name, i, proto->valuestring);
			case PROTO_SKIP:
				i++;
				continue;
			case PROTO_OK:
				break;
			}
		}
		if (out->n_ports == CW_SVC_PORTS_MAX)
			return ERR("Service %s/%s: more than %d TCP/UDP ports", ns, name,
				   CW_SVC_PORTS_MAX);
		out->ports[out->n_ports++] = sp;
		i++;
	}

	/*
	 * ClusterMesh annotations, read as Cilium reads them: global is "true"
	 * in any case; shared and affinity only mean something on a global
	 * service.  Shared is on when absent; when present only "true" (in
	 * any case) keeps it on, as Cilium reads it ("no" shares nothing).
	 */
	ann = field(meta, "annotations");
	v = annotation(ann, CW_ANN_GLOBAL, CW_ANN_GLOBAL_ALIAS);
	out->global = v && strcasecmp(v, "true") == 0;
	v = annotation(ann, CW_ANN_SHARED, CW_ANN_SHARED_ALIAS);
	out->shared = !v || strcasecmp(v, "true") == 0;
	v = out->global ? annotation(ann, CW_ANN_AFFINITY, CW_ANN_AFFINITY_ALIAS) : NULL;
	if (v && strcasecmp(v, "local") == 0)
		out->affinity = CW_AFFINITY_LOCAL;
	else if (v && strcasecmp(v, "remote") == 0)
		out->affinity = CW_AFFINITY_REMOTE;
	else
		out->affinity = CW_AFFINITY_NONE;
	return 0;
}

/* --- EndpointSlice ----------------------------------------------------------------- */

#define SLICE_LABEL "kubernetes.io/service-name"

struct slice_port {
	char name[CW_SVC_PORT_NAME_MAX + 1];
	uint16_t port;
	uint8_t proto;
};

static int slice_ports(const cJSON *ports, const char *ns, struct slice_port **out, size_t *n,
		       char *err, size_t errlen)
{
	struct slice_port *v;
	const cJSON *p;
	size_t i = 0;

	*out = NULL;
	*n = 0;
	if (unset(ports))
		return 0;
	if (!cJSON_IsArray(ports))
		return ERR("EndpointSlice in %s: ports is not a list", ns);
	v = calloc((size_t)cJSON_GetArraySize(ports) + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	cJSON_ArrayForEach(p, ports) {
		const cJSON *pname = field(p, "name"), *proto = field(p, "protocol"),
			    *port = field(p, "port");
		struct slice_port sp = { .proto = IPPROTO_TCP };

		if (!cJSON_IsObject(p)) {
			free(v);
			return ERR("EndpointSlice in %s: ports[%zu] is not an object", ns, i);
		}
		/* A null port means "all ports" (API reference): nothing we can balance to. */
		if (unset(port)) {
			i++;
			continue;
		}
		if (!port_number(port, &sp.port)) {
			free(v);
			return ERR("EndpointSlice in %s: ports[%zu].port is not a number in 1..65535",
				   ns, i);
		}
		if (!unset(pname)) {
			if (!cJSON_IsString(pname) || strlen(pname->valuestring) > CW_SVC_PORT_NAME_MAX) {
				free(v);
				return ERR("EndpointSlice in %s: ports[%zu].name is not a port name", ns, i);
			}
			snprintf(sp.name, sizeof(sp.name), "%s", pname->valuestring);
		}
		if (!unset(proto)) {
			enum proto_kind k = cJSON_IsString(proto) ?
						    proto_parse(proto->valuestring, &sp.proto) :
						    PROTO_BAD;

			if (k == PROTO_BAD) {
				free(v);
				return ERR("EndpointSlice in %s: ports[%zu].protocol is not TCP, UDP or SCTP",
					   ns, i);
			}
			if (k == PROTO_SKIP) {
				i++;
				continue;
			}
		}
		v[(*n)++] = sp;
		i++;
	}
	*out = v;
	return 0;
}

const char *const cw_epslice_k8s_keep[] = { "metadata.labels", "addressType",
					    "endpoints.addresses", "endpoints.conditions", "ports",
					    NULL };

int cw_epslice_parse(const cJSON *obj, char *ns, size_t ns_len, char *svc, size_t svc_len,
		     uint16_t cluster_id, struct cw_svc_bes *out, char *err, size_t errlen)
{
	const cJSON *meta = field(obj, "metadata"), *eps, *ep;
	const char *nsv = str_of(meta, "namespace"), *type = str_of(obj, "addressType"), *label;
	size_t before = out->n, i = 0, n_ports = 0;
	struct slice_port *ports = NULL;
	int rc;

	if (ns_len)
		ns[0] = '\0';
	if (svc_len)
		svc[0] = '\0';
	if (!cJSON_IsObject(obj))
		return ERR("EndpointSlice: not a JSON object");
	if (!nsv || !dns_label_valid(nsv))
		return ERR("EndpointSlice: metadata.namespace missing or not a DNS label");
	snprintf(ns, ns_len, "%s", nsv);
	/* FQDN slices, IPv6 slices (and future types) are not ours to balance. */
	if (!type || strcmp(type, "IPv4") != 0)
		return 0;
	label = str_of(field(meta, "labels"), SLICE_LABEL);
	if (!label)
		return 0;
	if (!dns_label_valid(label))
		return ERR("EndpointSlice in %s: label " SLICE_LABEL " \"%s\" is not a Service name",
			   nsv, label);

	rc = slice_ports(field(obj, "ports"), nsv, &ports, &n_ports, err, errlen);
	if (rc)
		return rc;
	eps = field(obj, "endpoints");
	if (!unset(eps) && !cJSON_IsArray(eps)) {
		rc = ERR("EndpointSlice %s/%s: endpoints is not a list", nsv, label);
		goto fail;
	}
	if (!cJSON_IsArray(eps))
		eps = NULL;
	cJSON_ArrayForEach(ep, eps) {
		const cJSON *addrs = field(ep, "addresses"), *ready, *a;
		size_t j = 0;

		if (!cJSON_IsObject(ep)) {
			rc = ERR("EndpointSlice %s/%s: endpoints[%zu] is not an object", nsv, label, i);
			goto fail;
		}
		if (!cJSON_IsArray(addrs)) {
			rc = ERR("EndpointSlice %s/%s: endpoints[%zu].addresses is not a list", nsv,
				 label, i);
			goto fail;
		}
		/* conditions.ready unset is "unknown", which consumers treat as ready. */
		ready = field(field(ep, "conditions"), "ready");
		if (!unset(ready) && !cJSON_IsBool(ready)) {
			rc = ERR("EndpointSlice %s/%s: endpoints[%zu].conditions.ready is not a boolean",
				 nsv, label, i);
			goto fail;
		}
		cJSON_ArrayForEach(a, addrs) {
			struct cw_svc_be be = { .cluster_id = cluster_id };

			if (!cJSON_IsString(a) || !cw_addr4_parse(a->valuestring, &be.ip) ||
			    !unicast(be.ip)) {
				rc = ERR("EndpointSlice %s/%s: endpoints[%zu].addresses[%zu] is not a unicast IPv4 address",
					 nsv, label, i, j);
				goto fail;
			}
			for (size_t k = 0; !cJSON_IsFalse(ready) && k < n_ports; k++) {
				be.port = ports[k].port;
				be.proto = ports[k].proto;
				memcpy(be.port_name, ports[k].name, sizeof(be.port_name));
				rc = cw_svc_bes_add(out, &be);
				if (rc)
					goto fail;
			}
			j++;
		}
		i++;
	}
	snprintf(svc, svc_len, "%s", label);
	free(ports);
	return 0;
fail:
	out->n = before;
	free(ports);
	return rc;
}

/* --- the services/v1 record ------------------------------------------------------- */

static int cmp_be_rec(const void *a, const void *b)
{
	const struct cw_svc_be *x = a, *y = b;
	uint32_t xi = ntohl(x->ip.s_addr), yi = ntohl(y->ip.s_addr);
	int c;

	if (xi != yi)
		return xi < yi ? -1 : 1;
	c = strcmp(x->port_name, y->port_name);
	if (c)
		return c;
	if (x->proto != y->proto)
		return x->proto < y->proto ? -1 : 1;
	return x->port < y->port ? -1 : x->port > y->port;
}

/* {"Protocol":"TCP","Port":80}: Cilium's loadbalancer.L4Addr, Go field names. */
static bool add_l4(cJSON *ports, const char *name, uint8_t proto, uint16_t port)
{
	cJSON *l4 = cJSON_CreateObject();

	if (!l4 || !cJSON_AddItemToObject(ports, name, l4)) {
		cJSON_Delete(l4);
		return false;
	}
	return cJSON_AddStringToObject(l4, "Protocol", proto_name(proto)) &&
	       cJSON_AddNumberToObject(l4, "Port", port);
}

char *cw_svc_rec_format(const struct cw_svc *svc, const char *cluster, unsigned int cluster_id,
			const struct cw_svc_bes *bes)
{
	cJSON *o = cJSON_CreateObject(), *fe, *be, *ports = NULL;
	struct cw_svc_be *sorted = NULL;
	size_t n = bes ? bes->n : 0;
	char ip[16], *s = NULL;
	bool ok;

	if (!o)
		return NULL;
	ok = cJSON_AddStringToObject(o, "cluster", cluster) &&
	     cJSON_AddStringToObject(o, "namespace", svc->ns) &&
	     cJSON_AddStringToObject(o, "name", svc->name) &&
	     (fe = cJSON_AddObjectToObject(o, "frontends")) &&
	     (be = cJSON_AddObjectToObject(o, "backends"));
	if (!ok)
		goto out;
	if (svc->cluster_ip.s_addr) {
		cw_addr4_str(svc->cluster_ip, ip);
		ports = cJSON_AddObjectToObject(fe, ip);
		ok = ports != NULL;
		for (size_t i = 0; ok && i < svc->n_ports; i++)
			if (!cJSON_GetObjectItemCaseSensitive(ports, svc->ports[i].name))
				ok = add_l4(ports, svc->ports[i].name, svc->ports[i].proto,
					    svc->ports[i].port);
		if (!ok)
			goto out;
	}
	/*
	 * Sorted, so that the same backends always give the same bytes and a
	 * publisher can tell an unchanged record by comparing them.  A port
	 * name holds one L4 address per backend IP; the first in this order wins.
	 */
	if (n) {
		sorted = malloc(n * sizeof(*sorted));
		if (!sorted)
			goto out;
		memcpy(sorted, bes->v, n * sizeof(*sorted));
		qsort(sorted, n, sizeof(*sorted), cmp_be_rec);
	}
	for (size_t i = 0; i < n; i++) {
		if (!i || sorted[i].ip.s_addr != sorted[i - 1].ip.s_addr) {
			cw_addr4_str(sorted[i].ip, ip);
			ports = cJSON_AddObjectToObject(be, ip);
			if (!ports)
				goto out;
		}
		if (!cJSON_GetObjectItemCaseSensitive(ports, sorted[i].port_name) &&
		    !add_l4(ports, sorted[i].port_name, sorted[i].proto, sorted[i].port))
			goto out;
	}
	/* Labels and selector are informational in Cilium's agent; we do not carry them. */
	ok = cJSON_AddObjectToObject(o, "labels") && cJSON_AddObjectToObject(o, "selector") &&
	     cJSON_AddBoolToObject(o, "includeExternal", svc->global) &&
	     cJSON_AddBoolToObject(o, "shared", svc->shared) &&
	     cJSON_AddNumberToObject(o, "clusterID", cluster_id);
	if (ok)
		s = cJSON_PrintUnformatted(o);
out:
	free(sorted);
	cJSON_Delete(o);
	return s;
}

/* <cluster>/<ns>/<name> after the prefix, each part copied out. */
static int split_key(const char *key, char *cluster, char *ns, char *name)
{
	const char *p, *a, *b;
	size_t lc, ln, lm;

	if (strncmp(key, CW_KEY_SERVICES, strlen(CW_KEY_SERVICES)) != 0)
		return -EINVAL;
	p = key + strlen(CW_KEY_SERVICES);
	a = strchr(p, '/');
	b = a ? strchr(a + 1, '/') : NULL;
	if (!a || !b || strchr(b + 1, '/'))
		return -EINVAL;
	lc = (size_t)(a - p);
	ln = (size_t)(b - a - 1);
	lm = strlen(b + 1);
	if (lc > CW_CLUSTER_NAME_MAX || ln > CW_SVC_NAME_MAX || lm > CW_SVC_NAME_MAX)
		return -EINVAL;
	memcpy(cluster, p, lc);
	cluster[lc] = '\0';
	memcpy(ns, a + 1, ln);
	ns[ln] = '\0';
	memcpy(name, b + 1, lm);
	name[lm] = '\0';
	return cw_cluster_name_valid(cluster) && dns_label_valid(ns) && dns_label_valid(name) ?
		       0 : -EINVAL;
}

static int opt_bool(const cJSON *o, const char *name, bool *out)
{
	const cJSON *v = field(o, name);

	if (unset(v)) {
		*out = false;
		return 0;
	}
	if (!cJSON_IsBool(v))
		return -EINVAL;
	*out = cJSON_IsTrue(v);
	return 0;
}

static int rec_backends(const cJSON *backends, const char *what, struct cw_svc_rec *out,
			char *err, size_t errlen)
{
	const cJSON *b, *p;

	if (unset(backends))
		return 0;
	if (!cJSON_IsObject(backends))
		return ERR("%s: backends is not an object", what);
	cJSON_ArrayForEach(b, backends) {
		struct cw_svc_be be = { .cluster_id = (uint16_t)out->cluster_id };
		struct in6_addr a6;

		if (!b->string || !cw_addr4_parse(b->string, &be.ip)) {
			/* Our datapath is IPv4; a dual-stack cluster's IPv6 backends are not refused. */
			if (b->string && inet_pton(AF_INET6, b->string, &a6) == 1)
				continue;
			return ERR("%s: backend \"%s\" is not an IP address", what,
				   b->string ? b->string : "");
		}
		if (!unicast(be.ip))
			return ERR("%s: backend %s is not a unicast address", what, b->string);
		if (!cJSON_IsObject(b))
			return ERR("%s: backends[%s] is not an object", what, b->string);
		cJSON_ArrayForEach(p, b) {
			const char *proto = str_of(p, "Protocol");

			if (!p->string || strlen(p->string) > CW_SVC_PORT_NAME_MAX)
				return ERR("%s: backends[%s]: port name too long", what, b->string);
			if (!proto)
				return ERR("%s: backends[%s][%s].Protocol missing", what, b->string,
					   p->string);
			switch (proto_parse(proto, &be.proto)) {
			case PROTO_BAD:
				return ERR("%s: backends[%s][%s].Protocol \"%s\" is not TCP, UDP, SCTP or ANY",
					   what, b->string, p->string, proto);
			case PROTO_SKIP:
				continue;
			case PROTO_OK:
				break;
			}
			if (!port_number(field(p, "Port"), &be.port))
				return ERR("%s: backends[%s][%s].Port is not a number in 1..65535", what,
					   b->string, p->string);
			if (out->backends.n == CW_SVC_REC_TUPLES_MAX)
				return ERR("%s: more than %d backend tuples", what,
					   CW_SVC_REC_TUPLES_MAX);
			memcpy(be.port_name, p->string, strlen(p->string) + 1);
			if (cw_svc_bes_add(&out->backends, &be))
				return -ENOMEM;
		}
	}
	return 0;
}

int cw_svc_rec_parse(const char *key, const char *buf, size_t len, const char *cluster,
		     unsigned int cluster_id, struct cw_svc_rec *out, char *err, size_t errlen)
{
	char kc[CW_CLUSTER_NAME_MAX + 1], kns[CW_SVC_NAME_MAX + 1], kname[CW_SVC_NAME_MAX + 1];
	char what[2 * CW_SVC_NAME_MAX + 32];
	const char *clu, *ns, *name;
	const cJSON *cid, *fe;
	cJSON *o = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (split_key(key, kc, kns, kname))
		return ERR("service record: key %s is not " CW_KEY_SERVICES "<cluster>/<namespace>/<name>",
			   key);
	snprintf(what, sizeof(what), "service record %s/%s", kns, kname);
	if (strcmp(kc, cluster) != 0)
		return ERR("%s: key %s is cluster %s's, not %s's", what, key, kc, cluster);
	o = cJSON_ParseWithLength(buf, len);
	if (!cJSON_IsObject(o)) {
		rc = ERR("%s: not a JSON object", what);
		goto fail;
	}
	clu = str_of(o, "cluster");
	ns = str_of(o, "namespace");
	name = str_of(o, "name");
	if (!clu || strcmp(clu, cluster) != 0) {
		rc = ERR("%s: cluster \"%s\" is not \"%s\"", what, clu ? clu : "", cluster);
		goto fail;
	}
	if (!ns || strcmp(ns, kns) != 0 || !name || strcmp(name, kname) != 0) {
		rc = ERR("%s: namespace/name \"%s/%s\" do not match the key", what, ns ? ns : "",
			 name ? name : "");
		goto fail;
	}
	cid = field(o, "clusterID");
	if (!cJSON_IsNumber(cid) || cid->valuedouble < 0 || cid->valuedouble > 65535 ||
	    cid->valuedouble != (double)(int)cid->valuedouble ||
	    (cluster_id && (unsigned int)cid->valuedouble != cluster_id)) {
		rc = cluster_id ? ERR("%s: clusterID is not %u", what, cluster_id) :
				  ERR("%s: clusterID is not a cluster id", what);
		goto fail;
	}
	snprintf(out->cluster, sizeof(out->cluster), "%s", kc);
	snprintf(out->ns, sizeof(out->ns), "%s", kns);
	snprintf(out->name, sizeof(out->name), "%s", kname);
	out->cluster_id = (unsigned int)cid->valuedouble;
	if (opt_bool(o, "shared", &out->shared)) {
		rc = ERR("%s: shared is not a boolean", what);
		goto fail;
	}
	if (opt_bool(o, "includeExternal", &out->include_external)) {
		rc = ERR("%s: includeExternal is not a boolean", what);
		goto fail;
	}
	/* The receiver balances on its own Service's ClusterIP; frontends are only typed. */
	fe = field(o, "frontends");
	if (!unset(fe) && !cJSON_IsObject(fe)) {
		rc = ERR("%s: frontends is not an object", what);
		goto fail;
	}
	rc = rec_backends(field(o, "backends"), what, out, err, errlen);
	if (rc)
		goto fail;
	cJSON_Delete(o);
	return 0;
fail:
	cJSON_Delete(o);
	cw_svc_rec_clear(out);
	return rc;
}

void cw_svc_rec_clear(struct cw_svc_rec *r)
{
	if (r)
		cw_svc_bes_clear(&r->backends);
}

/* --- slots ------------------------------------------------------------------------- */

static int cmp_addr_port(const struct cw_lb4_backend *x, const struct cw_lb4_backend *y)
{
	uint32_t xi = ntohl(x->address), yi = ntohl(y->address);
	uint16_t xp = ntohs(x->port), yp = ntohs(y->port);

	if (xi != yi)
		return xi < yi ? -1 : 1;
	return xp < yp ? -1 : xp > yp;
}

static int cmp_dedup(const void *a, const void *b)
{
	const struct cw_lb4_backend *x = a, *y = b;
	int c = cmp_addr_port(x, y);

	if (c)
		return c;
	return x->cluster_id < y->cluster_id ? -1 : x->cluster_id > y->cluster_id;
}

static int cmp_slot(const void *a, const void *b)
{
	const struct cw_lb4_backend *x = a, *y = b;

	if (x->cluster_id != y->cluster_id)
		return x->cluster_id < y->cluster_id ? -1 : 1;
	return cmp_addr_port(x, y);
}

int cw_svc_select(const struct cw_svc_port *fp, enum cw_affinity aff, unsigned int local_id,
		  const struct cw_svc_be *cands, size_t n_cands, struct cw_lb4_backend **out,
		  size_t *n)
{
	struct cw_lb4_backend *v;
	size_t n_local = 0, n_remote = 0, k = 0, w = 0;
	bool want_local = true, want_remote = true;

	*out = NULL;
	*n = 0;
	for (size_t i = 0; i < n_cands; i++) {
		if (cands[i].proto != fp->proto || strcmp(cands[i].port_name, fp->name) != 0)
			continue;
		if (cands[i].cluster_id == local_id)
			n_local++;
		else
			n_remote++;
	}
	/* Cilium's service affinity: the preferred side, the other when it has none. */
	if (aff == CW_AFFINITY_LOCAL && n_local)
		want_remote = false;
	else if (aff == CW_AFFINITY_REMOTE && n_remote)
		want_local = false;
	if (!n_local && !n_remote)
		return 0;
	v = malloc((n_local + n_remote) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n_cands; i++) {
		bool local = cands[i].cluster_id == local_id;

		if (cands[i].proto != fp->proto || strcmp(cands[i].port_name, fp->name) != 0 ||
		    (local ? !want_local : !want_remote))
			continue;
		v[k++] = (struct cw_lb4_backend){ .address = cands[i].ip.s_addr,
						  .port = htons(cands[i].port),
						  .cluster_id = cands[i].cluster_id };
	}
	/* One slot per (address, port): the lowest cluster id names it. */
	qsort(v, k, sizeof(*v), cmp_dedup);
	for (size_t i = 0; i < k; i++)
		if (!w || cmp_addr_port(&v[i], &v[w - 1]) != 0)
			v[w++] = v[i];
	qsort(v, w, sizeof(*v), cmp_slot);
	if (!w) {
		free(v);
		v = NULL;
	}
	*out = v;
	*n = w;
	return 0;
}
