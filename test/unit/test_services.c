// SPDX-License-Identifier: Apache-2.0
/*
 * helper/services.c: what a Service and its EndpointSlices mean to the
 * load balancer, the services/v1 record a cluster publishes and what a
 * receiver accepts from it, and the slots each affinity gives.  JSON in the
 * tests is written with single quotes, turned into double ones by json().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "k8s.h"
#include "services.h"

#define SVC_KEY CW_KEY_SERVICES "cluster1/default/rebel-base"

static struct in_addr ip4(const char *s)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a;
}

/* @s with ' for ", parsed; the test frees it. */
static cJSON *json(const char *s)
{
	char *d = strdup(s);
	cJSON *o;

	assert_non_null(d);
	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	o = cJSON_Parse(d);
	free(d);
	if (!o)
		fail_msg("test JSON does not parse: %s", s);
	return o;
}

static char *dq(const char *s)
{
	char *d = strdup(s);

	assert_non_null(d);
	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

static void assert_names(const char *err, const char *needle)
{
	if (!strstr(err, needle))
		fail_msg("message \"%s\" does not name \"%s\"", err, needle);
}

/* --- Service ---------------------------------------------------------------------- */

static int svc_parse(const char *js, struct cw_svc *s, char *err, size_t errlen)
{
	cJSON *o = json(js);
	int rc;

	err[0] = '\0';
	rc = cw_svc_from_k8s(o, s, err, errlen);
	cJSON_Delete(o);
	return rc;
}

/* A Service with annotations @ann (a JSON object body) and the rebel-base ports. */
static void svc_ann(const char *ann, struct cw_svc *s)
{
	char js[1024], err[256];

	snprintf(js, sizeof(js),
		 "{'metadata':{'namespace':'default','name':'rebel-base','annotations':{%s}},"
		 "'spec':{'clusterIP':'10.96.0.20','ports':[{'port':80}]}}",
		 ann);
	assert_int_equal(svc_parse(js, s, err, sizeof(err)), 0);
}

static void svc_refused(const char *js, const char *needle)
{
	struct cw_svc s;
	char err[256];

	assert_int_equal(svc_parse(js, &s, err, sizeof(err)), -EINVAL);
	assert_names(err, needle);
}

static void test_svc_ports_and_cluster_ip(void **state)
{
	struct cw_svc s;
	char err[256];

	(void)state;
	assert_int_equal(svc_parse("{'kind':'Service','metadata':{'namespace':'default','name':'rebel-base',"
				   "'labels':{'app':'x'}},'spec':{'type':'ClusterIP','clusterIP':'10.96.0.20',"
				   "'clusterIPs':['10.96.0.20'],'ports':["
				   "{'name':'http','port':80,'protocol':'TCP','targetPort':8080},"
				   "{'name':'dns','port':53,'protocol':'UDP'},"
				   "{'name':'sig','port':9999,'protocol':'SCTP'},"
				   "{'name':'metrics','port':9090}]}}",
				   &s, err, sizeof(err)),
			 0);
	assert_string_equal(s.ns, "default");
	assert_string_equal(s.name, "rebel-base");
	assert_int_equal(s.cluster_ip.s_addr, ip4("10.96.0.20").s_addr);
	/* SCTP skipped; a port without protocol is TCP */
	assert_int_equal(s.n_ports, 3);
	assert_string_equal(s.ports[0].name, "http");
	assert_int_equal(s.ports[0].port, 80);
	assert_int_equal(s.ports[0].proto, IPPROTO_TCP);
	assert_string_equal(s.ports[1].name, "dns");
	assert_int_equal(s.ports[1].port, 53);
	assert_int_equal(s.ports[1].proto, IPPROTO_UDP);
	assert_string_equal(s.ports[2].name, "metrics");
	assert_int_equal(s.ports[2].proto, IPPROTO_TCP);
	assert_false(s.global);
	assert_true(s.shared);
	assert_int_equal(s.affinity, CW_AFFINITY_NONE);

	/* one unnamed port */
	assert_int_equal(svc_parse("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
				   "'ports':[{'port':443}]}}", &s, err, sizeof(err)), 0);
	assert_int_equal(s.n_ports, 1);
	assert_string_equal(s.ports[0].name, "");
}

static void test_svc_headless(void **state)
{
	struct cw_svc s;
	char err[256];

	(void)state;
	assert_int_equal(svc_parse("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'None',"
				   "'ports':[{'port':80}]}}", &s, err, sizeof(err)), 0);
	assert_int_equal(s.cluster_ip.s_addr, 0);
	assert_int_equal(s.n_ports, 1);
	assert_int_equal(svc_parse("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':''}}",
				   &s, err, sizeof(err)), 0);
	assert_int_equal(s.cluster_ip.s_addr, 0);
	assert_int_equal(s.n_ports, 0);
	/* ExternalName: no clusterIP at all */
	assert_int_equal(svc_parse("{'metadata':{'namespace':'a','name':'b'},'spec':{'type':'ExternalName',"
				   "'externalName':'example.com'}}", &s, err, sizeof(err)), 0);
	assert_int_equal(s.cluster_ip.s_addr, 0);
	assert_int_equal(svc_parse("{'metadata':{'namespace':'a','name':'b'}}", &s, err, sizeof(err)), 0);
	assert_int_equal(s.cluster_ip.s_addr, 0);
}

static void test_svc_refused(void **state)
{
	char js[4096];
	size_t off;

	(void)state;
	svc_refused("[]", "not a JSON object");
	svc_refused("{'metadata':{'name':'b'},'spec':{}}", "metadata.namespace");
	svc_refused("{'metadata':{'namespace':'a'},'spec':{}}", "metadata.name");
	svc_refused("{'metadata':{'namespace':'a','name':'B/c'},'spec':{}}", "metadata.name");
	svc_refused("{'metadata':{'namespace':'../x','name':'b'},'spec':{}}", "metadata.namespace");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0'}}",
		    "spec.clusterIP \"10.96.0\"");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'fd00::10'}}",
		    "spec.clusterIP \"fd00::10\"");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'127.0.0.1'}}",
		    "spec.clusterIP \"127.0.0.1\"");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':5}}",
		    "spec.clusterIP");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
		    "'ports':{'port':80}}}", "spec.ports");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
		    "'ports':[{'port':80},{'port':0}]}}", "spec.ports[1].port");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
		    "'ports':[{'port':65536}]}}", "spec.ports[0].port");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
		    "'ports':[{'port':'80'}]}}", "spec.ports[0].port");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
		    "'ports':[{'port':80.5}]}}", "spec.ports[0].port");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
		    "'ports':[{'port':80,'protocol':6}]}}", "spec.ports[0].protocol");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
		    "'ports':[{'port':80,'protocol':'ICMP'}]}}", "spec.ports[0].protocol \"ICMP\"");
	svc_refused("{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1',"
		    "'ports':[{'port':80,'name':7}]}}", "spec.ports[0].name");

	/* more ports than we balance: refused whole, not cut */
	off = (size_t)snprintf(js, sizeof(js),
			       "{'metadata':{'namespace':'a','name':'b'},'spec':{'clusterIP':'10.96.0.1','ports':[");
	for (int i = 0; i <= CW_SVC_PORTS_MAX; i++)
		off += (size_t)snprintf(js + off, sizeof(js) - off, "%s{'name':'p%d','port':%d}",
					i ? "," : "", i, 1000 + i);
	snprintf(js + off, sizeof(js) - off, "]}}");
	svc_refused(js, "more than 32");
}

static void test_svc_annotations(void **state)
{
	struct cw_svc s;

	(void)state;
	svc_ann("", &s);
	assert_false(s.global);
	assert_true(s.shared);
	svc_ann("'service.cilium.io/global':'true'", &s);
	assert_true(s.global);
	assert_true(s.shared);
	assert_int_equal(s.affinity, CW_AFFINITY_NONE);
	svc_ann("'service.cilium.io/global':'True'", &s);
	assert_true(s.global);
	svc_ann("'service.cilium.io/global':'yes'", &s);
	assert_false(s.global);
	svc_ann("'service.cilium.io/global':'false'", &s);
	assert_false(s.global);
	svc_ann("'io.cilium/global-service':'true'", &s);
	assert_true(s.global);
	/* the current name wins over the alias, both ways */
	svc_ann("'io.cilium/global-service':'true','service.cilium.io/global':'false'", &s);
	assert_false(s.global);
	svc_ann("'service.cilium.io/global':'true','io.cilium/global-service':'false'", &s);
	assert_true(s.global);

	svc_ann("'service.cilium.io/global':'true','service.cilium.io/shared':'false'", &s);
	assert_true(s.global);
	assert_false(s.shared);
	svc_ann("'service.cilium.io/global':'true','service.cilium.io/shared':'FALSE'", &s);
	assert_false(s.shared);
	svc_ann("'service.cilium.io/global':'true','service.cilium.io/shared':'true'", &s);
	assert_true(s.shared);
	/* Cilium: a present annotation shares only when it says "true". */
	svc_ann("'service.cilium.io/global':'true','service.cilium.io/shared':'no'", &s);
	assert_false(s.shared);
	svc_ann("'service.cilium.io/global':'true','service.cilium.io/shared':'TRUE'", &s);
	assert_true(s.shared);
	svc_ann("'service.cilium.io/global':'true','io.cilium/shared-service':'false'", &s);
	assert_false(s.shared);
	svc_ann("'service.cilium.io/global':'true','io.cilium/shared-service':'false',"
		"'service.cilium.io/shared':'true'", &s);
	assert_true(s.shared);
}

static void test_svc_affinity(void **state)
{
	struct cw_svc s;

	(void)state;
	svc_ann("'service.cilium.io/global':'true','service.cilium.io/affinity':'local'", &s);
	assert_int_equal(s.affinity, CW_AFFINITY_LOCAL);
	svc_ann("'service.cilium.io/global':'true','service.cilium.io/affinity':'Remote'", &s);
	assert_int_equal(s.affinity, CW_AFFINITY_REMOTE);
	svc_ann("'service.cilium.io/global':'true','service.cilium.io/affinity':'NONE'", &s);
	assert_int_equal(s.affinity, CW_AFFINITY_NONE);
	svc_ann("'service.cilium.io/global':'true','service.cilium.io/affinity':'nearest'", &s);
	assert_int_equal(s.affinity, CW_AFFINITY_NONE);
	svc_ann("'service.cilium.io/global':'true','io.cilium/service-affinity':'LOCAL'", &s);
	assert_int_equal(s.affinity, CW_AFFINITY_LOCAL);
	svc_ann("'service.cilium.io/global':'true','io.cilium/service-affinity':'local',"
		"'service.cilium.io/affinity':'remote'", &s);
	assert_int_equal(s.affinity, CW_AFFINITY_REMOTE);
	/* affinity means nothing on a service that is not global */
	svc_ann("'service.cilium.io/affinity':'local'", &s);
	assert_false(s.global);
	assert_int_equal(s.affinity, CW_AFFINITY_NONE);

	assert_string_equal(cw_affinity_name(CW_AFFINITY_NONE), "none");
	assert_string_equal(cw_affinity_name(CW_AFFINITY_LOCAL), "local");
	assert_string_equal(cw_affinity_name(CW_AFFINITY_REMOTE), "remote");
}

/* --- EndpointSlice ---------------------------------------------------------------- */

static int slice_parse(const char *js, char *ns, char *svc, struct cw_svc_bes *b, char *err,
		       size_t errlen)
{
	cJSON *o = json(js);
	int rc;

	err[0] = '\0';
	rc = cw_epslice_parse(o, ns, CW_SVC_NAME_MAX + 1, svc, CW_SVC_NAME_MAX + 1, 3, b, err,
			      errlen);
	cJSON_Delete(o);
	return rc;
}

static bool has_be(const struct cw_svc_bes *b, const char *ip, uint16_t port, const char *name)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->v[i].ip.s_addr == ip4(ip).s_addr && b->v[i].port == port &&
		    strcmp(b->v[i].port_name, name) == 0)
			return true;
	return false;
}

#define SLICE_HEAD "{'apiVersion':'discovery.k8s.io/v1','kind':'EndpointSlice','metadata':{'namespace':'default'," \
		   "'name':'rebel-base-x7k2p','labels':{'kubernetes.io/service-name':'rebel-base'}},"

static void test_slice_ready(void **state)
{
	struct cw_svc_bes b = { 0 };
	char ns[64], svc[64], err[256];

	(void)state;
	assert_int_equal(slice_parse(SLICE_HEAD "'addressType':'IPv4','ports':["
				     "{'name':'http','port':8080,'protocol':'TCP'},{'name':'dns','port':53,'protocol':'UDP'}],"
				     "'endpoints':["
				     "{'addresses':['10.10.1.5'],'conditions':{'ready':true,'serving':true},'nodeName':'n1'},"
				     "{'addresses':['10.10.1.6'],'conditions':{'ready':false,'serving':true,'terminating':true}},"
				     "{'addresses':['10.10.1.7'],'conditions':{}},"
				     "{'addresses':['10.10.1.8']},"
				     "{'addresses':['10.10.1.9'],'conditions':{'ready':null}}]}",
				     ns, svc, &b, err, sizeof(err)),
			 0);
	assert_string_equal(ns, "default");
	assert_string_equal(svc, "rebel-base");
	/* 4 ready endpoints (true, absent three ways) x 2 ports; the not-ready one is out */
	assert_int_equal(b.n, 8);
	assert_true(has_be(&b, "10.10.1.5", 8080, "http"));
	assert_true(has_be(&b, "10.10.1.5", 53, "dns"));
	assert_true(has_be(&b, "10.10.1.7", 8080, "http"));
	assert_true(has_be(&b, "10.10.1.8", 8080, "http"));
	assert_true(has_be(&b, "10.10.1.9", 53, "dns"));
	assert_false(has_be(&b, "10.10.1.6", 8080, "http"));
	for (size_t i = 0; i < b.n; i++) {
		assert_int_equal(b.v[i].cluster_id, 3);
		assert_int_equal(b.v[i].proto, strcmp(b.v[i].port_name, "dns") ? IPPROTO_TCP : IPPROTO_UDP);
	}
	cw_svc_bes_clear(&b);
	assert_null(b.v);
	assert_int_equal(b.n, 0);
}

static void test_slice_ports(void **state)
{
	struct cw_svc_bes b = { 0 };
	char ns[64], svc[64], err[256];

	(void)state;
	/* an unnamed port is name ""; a null port number (all ports) is skipped; SCTP skipped */
	assert_int_equal(slice_parse(SLICE_HEAD "'addressType':'IPv4','ports':["
				     "{'port':8080},{'name':'all','port':null},{'name':'sig','port':99,'protocol':'SCTP'}],"
				     "'endpoints':[{'addresses':['10.10.1.5']}]}",
				     ns, svc, &b, err, sizeof(err)),
			 0);
	assert_int_equal(b.n, 1);
	assert_true(has_be(&b, "10.10.1.5", 8080, ""));
	assert_int_equal(b.v[0].proto, IPPROTO_TCP);
	cw_svc_bes_clear(&b);

	/* no ports or no endpoints yet: the service, with nothing to add */
	assert_int_equal(slice_parse(SLICE_HEAD "'addressType':'IPv4','ports':null,'endpoints':["
				     "{'addresses':['10.10.1.5']}]}", ns, svc, &b, err, sizeof(err)), 0);
	assert_string_equal(svc, "rebel-base");
	assert_int_equal(b.n, 0);
	assert_int_equal(slice_parse(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':80}],'endpoints':null}",
				     ns, svc, &b, err, sizeof(err)), 0);
	assert_string_equal(svc, "rebel-base");
	assert_int_equal(b.n, 0);
}

static void test_slice_not_ours(void **state)
{
	struct cw_svc_bes b = { 0 };
	char ns[64], svc[64], err[256];

	(void)state;
	assert_int_equal(slice_parse(SLICE_HEAD "'addressType':'IPv6','ports':[{'port':80}],"
				     "'endpoints':[{'addresses':['fd00::5']}]}", ns, svc, &b, err, sizeof(err)), 0);
	assert_string_equal(svc, "");
	assert_int_equal(b.n, 0);
	assert_int_equal(slice_parse(SLICE_HEAD "'addressType':'FQDN','ports':[{'port':80}],"
				     "'endpoints':[{'addresses':['example.com']}]}", ns, svc, &b, err, sizeof(err)), 0);
	assert_string_equal(svc, "");
	assert_int_equal(b.n, 0);
	/* a slice managed by someone else, without the service label */
	assert_int_equal(slice_parse("{'metadata':{'namespace':'default','name':'x'},'addressType':'IPv4',"
				     "'ports':[{'port':80}],'endpoints':[{'addresses':['10.10.1.5']}]}",
				     ns, svc, &b, err, sizeof(err)), 0);
	assert_string_equal(ns, "default");
	assert_string_equal(svc, "");
	assert_int_equal(b.n, 0);
}

static void slice_refused(const char *js, const char *needle)
{
	struct cw_svc_be keep = { .ip = ip4("10.0.0.1"), .port = 1, .proto = IPPROTO_TCP };
	struct cw_svc_bes b = { 0 };
	char ns[64], svc[64], err[256];

	/* what was there before stays, nothing of the bad slice is added */
	assert_int_equal(cw_svc_bes_add(&b, &keep), 0);
	assert_int_equal(slice_parse(js, ns, svc, &b, err, sizeof(err)), -EINVAL);
	assert_names(err, needle);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.v[0].ip.s_addr, keep.ip.s_addr);
	cw_svc_bes_clear(&b);
}

static void test_slice_refused(void **state)
{
	(void)state;
	slice_refused("{'metadata':{'name':'x'},'addressType':'IPv4'}", "metadata.namespace");
	slice_refused("{'metadata':{'namespace':'default','labels':{'kubernetes.io/service-name':'A/b'}},"
		      "'addressType':'IPv4'}", "kubernetes.io/service-name");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':80}],'endpoints':["
		      "{'addresses':['10.10.1.5']},{'addresses':['10.10.1.256']}]}",
		      "endpoints[1].addresses[0]");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':80}],'endpoints':["
		      "{'addresses':['10.10.1.5','127.0.0.1']}]}", "endpoints[0].addresses[1]");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':80}],'endpoints':["
		      "{'addresses':[5]}]}", "endpoints[0].addresses[0]");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':80}],'endpoints':["
		      "{'addresses':'10.10.1.5'}]}", "endpoints[0].addresses");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':80}],'endpoints':["
		      "{'addresses':['10.10.1.5'],'conditions':{'ready':'yes'}}]}",
		      "endpoints[0].conditions.ready");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':80},{'port':0}],'endpoints':[]}",
		      "ports[1].port");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':70000}],'endpoints':[]}",
		      "ports[0].port");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[{'port':80,'protocol':'ICMP'}],'endpoints':[]}",
		      "ports[0].protocol");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':{},'endpoints':[]}", "ports is not a list");
	slice_refused(SLICE_HEAD "'addressType':'IPv4','ports':[],'endpoints':{}}", "endpoints is not a list");
}

/* --- the services/v1 record --------------------------------------------------------- */

static void add_be(struct cw_svc_bes *b, const char *ip, uint16_t port, uint8_t proto,
		   const char *name, uint16_t cid)
{
	struct cw_svc_be be = { .ip = ip4(ip), .port = port, .proto = proto, .cluster_id = cid };

	snprintf(be.port_name, sizeof(be.port_name), "%s", name);
	assert_int_equal(cw_svc_bes_add(b, &be), 0);
}

static void global_svc(struct cw_svc *s)
{
	svc_ann("'service.cilium.io/global':'true'", s);
	s->n_ports = 2;
	snprintf(s->ports[0].name, sizeof(s->ports[0].name), "http");
	s->ports[0].port = 80;
	s->ports[0].proto = IPPROTO_TCP;
	snprintf(s->ports[1].name, sizeof(s->ports[1].name), "dns");
	s->ports[1].port = 53;
	s->ports[1].proto = IPPROTO_UDP;
}

static void test_rec_format(void **state)
{
	struct cw_svc_bes b = { 0 };
	struct cw_svc s;
	cJSON *o, *want;
	char *txt;

	(void)state;
	global_svc(&s);
	add_be(&b, "10.10.1.6", 8080, IPPROTO_TCP, "http", 1);
	add_be(&b, "10.10.1.5", 8080, IPPROTO_TCP, "http", 1);
	add_be(&b, "10.10.1.5", 5353, IPPROTO_UDP, "dns", 1);
	txt = cw_svc_rec_format(&s, "cluster1", 1, &b);
	assert_non_null(txt);
	o = cJSON_Parse(txt);
	want = json("{'cluster':'cluster1','namespace':'default','name':'rebel-base',"
		    "'frontends':{'10.96.0.20':{'http':{'Protocol':'TCP','Port':80},'dns':{'Protocol':'UDP','Port':53}}},"
		    "'backends':{'10.10.1.5':{'dns':{'Protocol':'UDP','Port':5353},'http':{'Protocol':'TCP','Port':8080}},"
		    "'10.10.1.6':{'http':{'Protocol':'TCP','Port':8080}}},"
		    "'labels':{},'selector':{},'includeExternal':true,'shared':true,'clusterID':1}");
	if (!cJSON_Compare(o, want, true))
		fail_msg("record %s is not the ClusterService expected", txt);
	cJSON_Delete(o);
	cJSON_Delete(want);
	free(txt);

	/* shared=false is carried; no backends is an empty object */
	s.shared = false;
	b.n = 0;
	txt = cw_svc_rec_format(&s, "cluster1", 1, &b);
	o = cJSON_Parse(txt);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(o, "shared")));
	assert_true(cJSON_IsObject(cJSON_GetObjectItem(o, "backends")));
	assert_null(cJSON_GetObjectItem(o, "backends")->child);
	cJSON_Delete(o);
	free(txt);
	cw_svc_bes_clear(&b);
}

/* The same tuples in any order give the same bytes (the publisher compares them). */
static void test_rec_format_deterministic(void **state)
{
	struct cw_svc_bes a = { 0 }, b = { 0 };
	struct cw_svc s;
	char *x, *y;

	(void)state;
	global_svc(&s);
	add_be(&a, "10.10.2.9", 8080, IPPROTO_TCP, "http", 1);
	add_be(&a, "10.10.1.5", 8080, IPPROTO_TCP, "http", 1);
	add_be(&a, "10.10.1.10", 5353, IPPROTO_UDP, "dns", 1);
	add_be(&a, "10.10.1.10", 8080, IPPROTO_TCP, "http", 1);
	for (size_t i = a.n; i-- > 0;)
		assert_int_equal(cw_svc_bes_add(&b, &a.v[i]), 0);
	x = cw_svc_rec_format(&s, "cluster1", 1, &a);
	y = cw_svc_rec_format(&s, "cluster1", 1, &b);
	assert_non_null(x);
	assert_non_null(y);
	assert_string_equal(x, y);
	/* addresses in numeric order: 10.10.1.5 before 10.10.1.10 before 10.10.2.9 */
	assert_true(strstr(x, "\"10.10.1.5\"") < strstr(x, "\"10.10.1.10\""));
	assert_true(strstr(x, "\"10.10.1.10\"") < strstr(x, "\"10.10.2.9\""));
	free(x);
	free(y);
	cw_svc_bes_clear(&a);
	cw_svc_bes_clear(&b);
}

static void test_rec_round_trip(void **state)
{
	struct cw_svc_bes b = { 0 };
	struct cw_svc_rec r;
	struct cw_svc s;
	char err[256], *txt;

	(void)state;
	global_svc(&s);
	add_be(&b, "10.10.1.5", 8080, IPPROTO_TCP, "http", 2);
	add_be(&b, "10.10.1.5", 5353, IPPROTO_UDP, "dns", 2);
	add_be(&b, "10.10.1.6", 8080, IPPROTO_TCP, "http", 2);
	txt = cw_svc_rec_format(&s, "cluster1", 2, &b);
	assert_non_null(txt);
	assert_int_equal(cw_svc_rec_parse(SVC_KEY, txt, strlen(txt), "cluster1", 2, &r, err,
					  sizeof(err)), 0);
	assert_string_equal(r.cluster, "cluster1");
	assert_int_equal(r.cluster_id, 2);
	assert_string_equal(r.ns, "default");
	assert_string_equal(r.name, "rebel-base");
	assert_true(r.shared);
	assert_true(r.include_external);
	assert_int_equal(r.backends.n, 3);
	assert_true(has_be(&r.backends, "10.10.1.5", 8080, "http"));
	assert_true(has_be(&r.backends, "10.10.1.5", 5353, "dns"));
	assert_true(has_be(&r.backends, "10.10.1.6", 8080, "http"));
	for (size_t i = 0; i < r.backends.n; i++) {
		assert_int_equal(r.backends.v[i].cluster_id, 2);
		assert_int_equal(r.backends.v[i].proto,
				 strcmp(r.backends.v[i].port_name, "dns") ? IPPROTO_TCP : IPPROTO_UDP);
	}
	cw_svc_rec_clear(&r);
	assert_null(r.backends.v);
	cw_svc_rec_clear(NULL);
	free(txt);
	cw_svc_bes_clear(&b);
}

/* What a Cilium clustermesh-apiserver of cluster1 (id 1) writes, hostnames and IPv6 included. */
static const char cilium_rec[] =
	"{'cluster':'cluster1','namespace':'default','name':'rebel-base',"
	"'frontends':{'10.96.0.20':{'http':{'Protocol':'TCP','Port':80}},'fd00:10:96::20':{'http':{'Protocol':'TCP','Port':80}}},"
	"'backends':{'10.10.1.5':{'http':{'Protocol':'TCP','Port':80},'sig':{'Protocol':'SCTP','Port':99}},"
	"'fd00:10:1::5':{'http':{'Protocol':'TCP','Port':80}},"
	"'10.10.2.7':{'http':{'Protocol':'TCP','Port':80}}},"
	"'hostnames':{'10.10.1.5':'rebel-base-1'},"
	"'labels':{'app':'rebel-base'},'selector':{'name':'rebel-base'},"
	"'includeExternal':true,'shared':false,'clusterID':1}";

static void test_rec_parse_cilium(void **state)
{
	struct cw_svc_rec r;
	char err[256], *txt = dq(cilium_rec);

	(void)state;
	assert_int_equal(cw_svc_rec_parse(SVC_KEY, txt, strlen(txt), "cluster1", 1, &r, err,
					  sizeof(err)), 0);
	assert_false(r.shared);
	/* the IPv6 backend and the SCTP port are skipped, not refused */
	assert_int_equal(r.backends.n, 2);
	assert_true(has_be(&r.backends, "10.10.1.5", 80, "http"));
	assert_true(has_be(&r.backends, "10.10.2.7", 80, "http"));
	cw_svc_rec_clear(&r);

	/* a connection whose id is not known yet takes the record's */
	assert_int_equal(cw_svc_rec_parse(SVC_KEY, txt, strlen(txt), "cluster1", 0, &r, err,
					  sizeof(err)), 0);
	assert_int_equal(r.cluster_id, 1);
	assert_int_equal(r.backends.v[0].cluster_id, 1);
	cw_svc_rec_clear(&r);
	free(txt);
}

/* cilium_rec with the first @from replaced by @to, parsed under @key from cluster1 (1). */
static void rec_refused_with(const char *key, const char *from, const char *to, const char *needle)
{
	char *base = dq(cilium_rec), *f = dq(from), *t = dq(to), *s, err[256];
	const char *p = strstr(base, f);
	struct cw_svc_rec r;
	size_t n;

	if (!p)
		fail_msg("%s is not in the record", from);
	n = strlen(base) - strlen(f) + strlen(t) + 1;
	s = malloc(n);
	assert_non_null(s);
	snprintf(s, n, "%.*s%s%s", (int)(p - base), base, t, p + strlen(f));
	err[0] = '\0';
	assert_int_equal(cw_svc_rec_parse(key, s, strlen(s), "cluster1", 1, &r, err, sizeof(err)),
			 -EINVAL);
	assert_names(err, needle);
	assert_null(r.backends.v);
	assert_int_equal(r.backends.n, 0);
	free(s);
	free(t);
	free(f);
	free(base);
}

static void test_rec_refused_identity(void **state)
{
	(void)state;
	/* cluster1's connection publishing for cluster2, by key or by value or by id */
	rec_refused_with(CW_KEY_SERVICES "cluster2/default/rebel-base", "", "",
			 "is cluster cluster2's, not cluster1's");
	rec_refused_with(SVC_KEY, "'cluster':'cluster1'", "'cluster':'cluster2'",
			 "cluster \"cluster2\" is not \"cluster1\"");
	rec_refused_with(SVC_KEY, "'cluster':'cluster1',", "", "cluster \"\" is not");
	rec_refused_with(SVC_KEY, "'clusterID':1", "'clusterID':2", "clusterID is not 1");
	rec_refused_with(SVC_KEY, ",'clusterID':1", "", "clusterID is not 1");
	rec_refused_with(SVC_KEY, "'clusterID':1", "'clusterID':'1'", "clusterID is not 1");
	rec_refused_with(SVC_KEY, "'namespace':'default'", "'namespace':'kube-system'",
			 "do not match the key");
	rec_refused_with(SVC_KEY, "'name':'rebel-base'", "'name':'x-wing'", "do not match the key");
	/* keys that are not <cluster>/<ns>/<name> */
	rec_refused_with(CW_KEY_SERVICES "cluster1/default/rebel-base/x", "", "", "is not " CW_KEY_SERVICES);
	rec_refused_with(CW_KEY_SERVICES "cluster1/rebel-base", "", "", "is not " CW_KEY_SERVICES);
	rec_refused_with(CW_KEY_SERVICES "cluster1/Default/rebel-base", "", "", "is not " CW_KEY_SERVICES);
	rec_refused_with(CW_KEY_NODES "cluster1/default/rebel-base", "", "", "is not " CW_KEY_SERVICES);
}

static void test_rec_refused_values(void **state)
{
	(void)state;
	rec_refused_with(SVC_KEY, "'10.10.2.7':", "'10.10.2':", "backend \"10.10.2\" is not an IP");
	rec_refused_with(SVC_KEY, "'10.10.2.7':", "'example.com':", "backend \"example.com\"");
	rec_refused_with(SVC_KEY, "'10.10.2.7':", "'127.0.0.1':", "backend 127.0.0.1 is not a unicast");
	rec_refused_with(SVC_KEY, "'10.10.2.7':", "'224.0.0.5':", "backend 224.0.0.5 is not a unicast");
	rec_refused_with(SVC_KEY, "'10.10.2.7':", "'0.0.0.0':", "backend 0.0.0.0 is not a unicast");
	rec_refused_with(SVC_KEY, "'10.10.2.7':{'http':{'Protocol':'TCP','Port':80}}",
			 "'10.10.2.7':{'http':{'Protocol':'TCP','Port':0}}", "backends[10.10.2.7][http].Port");
	rec_refused_with(SVC_KEY, "'10.10.2.7':{'http':{'Protocol':'TCP','Port':80}}",
			 "'10.10.2.7':{'http':{'Protocol':'TCP','Port':65536}}", "backends[10.10.2.7][http].Port");
	rec_refused_with(SVC_KEY, "'10.10.2.7':{'http':{'Protocol':'TCP','Port':80}}",
			 "'10.10.2.7':{'http':{'Protocol':'TCP'}}", "backends[10.10.2.7][http].Port");
	rec_refused_with(SVC_KEY, "'10.10.2.7':{'http':{'Protocol':'TCP','Port':80}}",
			 "'10.10.2.7':{'http':{'Protocol':'ICMP','Port':80}}",
			 "backends[10.10.2.7][http].Protocol \"ICMP\"");
	rec_refused_with(SVC_KEY, "'10.10.2.7':{'http':{'Protocol':'TCP','Port':80}}",
			 "'10.10.2.7':{'http':{'Port':80}}", "backends[10.10.2.7][http].Protocol");
	rec_refused_with(SVC_KEY, "'10.10.2.7':{'http':{'Protocol':'TCP','Port':80}}",
			 "'10.10.2.7':[]", "backends[10.10.2.7] is not an object");
	rec_refused_with(SVC_KEY, "'shared':false", "'shared':'false'", "shared is not a boolean");
	rec_refused_with(SVC_KEY, "'includeExternal':true", "'includeExternal':1",
			 "includeExternal is not a boolean");
	rec_refused_with(SVC_KEY, "'backends':{", "'backends':[],'x':{", "backends is not an object");
	rec_refused_with(SVC_KEY, "'frontends':{", "'frontends':7,'x':{", "frontends is not an object");
	rec_refused_with(SVC_KEY, "{'cluster'", "[{'cluster'", "not a JSON object");
}

static void test_rec_too_many_tuples(void **state)
{
	/* 65536 tuples: 8192 addresses x 8 ports */
	size_t cap = 8192 * 300 + 256, off;
	char *s = malloc(cap), err[256];
	struct cw_svc_rec r;

	(void)state;
	assert_non_null(s);
	off = (size_t)snprintf(s, cap, "{\"cluster\":\"cluster1\",\"namespace\":\"default\","
				       "\"name\":\"rebel-base\",\"clusterID\":1,\"backends\":{");
	for (int i = 0; i < 8192; i++) {
		off += (size_t)snprintf(s + off, cap - off, "%s\"10.%d.%d.1\":{", i ? "," : "", 1 + i / 256,
					i % 256);
		for (int p = 0; p < 8; p++)
			off += (size_t)snprintf(s + off, cap - off,
						"%s\"p%d\":{\"Protocol\":\"TCP\",\"Port\":%d}", p ? "," : "",
						p, 80 + p);
		off += (size_t)snprintf(s + off, cap - off, "}");
	}
	snprintf(s + off, cap - off, "}}");
	assert_int_equal(cw_svc_rec_parse(SVC_KEY, s, strlen(s), "cluster1", 1, &r, err, sizeof(err)),
			 -EINVAL);
	assert_names(err, "more than 65535 backend tuples");
	assert_null(r.backends.v);
	free(s);
}

/* --- slots per affinity ------------------------------------------------------------- */

static const struct cw_svc_port http = { .name = "http", .port = 80, .proto = IPPROTO_TCP };

static void slots(const struct cw_svc_bes *c, enum cw_affinity aff, const char *want)
{
	struct cw_lb4_backend *v = (void *)0x1;
	char got[1024] = "";
	size_t n = 99, off = 0;

	assert_int_equal(cw_svc_select(&http, aff, 1, c->v, c->n, &v, &n), 0);
	for (size_t i = 0; i < n; i++) {
		char ip[16];

		cw_addr4_str((struct in_addr){ .s_addr = v[i].address }, ip);
		off += (size_t)snprintf(got + off, sizeof(got) - off, "%s%u:%s:%u", i ? " " : "",
					v[i].cluster_id, ip, ntohs(v[i].port));
	}
	if (!n)
		assert_null(v);
	free(v);
	if (strcmp(got, want) != 0)
		fail_msg("%s: slots \"%s\", expected \"%s\"", cw_affinity_name(aff), got, want);
}

static void test_select_affinity(void **state)
{
	struct cw_svc_bes c = { 0 };

	(void)state;
	add_be(&c, "10.20.1.5", 8080, IPPROTO_TCP, "http", 2);
	add_be(&c, "10.10.1.6", 8080, IPPROTO_TCP, "http", 1);
	add_be(&c, "10.10.1.5", 8080, IPPROTO_TCP, "http", 1);
	add_be(&c, "10.30.1.5", 8080, IPPROTO_TCP, "http", 3);
	/* other ports of the service, and the same name over UDP, never fill http's slots */
	add_be(&c, "10.10.1.7", 5353, IPPROTO_UDP, "dns", 1);
	add_be(&c, "10.10.1.8", 8080, IPPROTO_UDP, "http", 1);
	add_be(&c, "10.10.1.9", 8080, IPPROTO_TCP, "", 1);

	slots(&c, CW_AFFINITY_NONE, "1:10.10.1.5:8080 1:10.10.1.6:8080 2:10.20.1.5:8080 3:10.30.1.5:8080");
	slots(&c, CW_AFFINITY_LOCAL, "1:10.10.1.5:8080 1:10.10.1.6:8080");
	slots(&c, CW_AFFINITY_REMOTE, "2:10.20.1.5:8080 3:10.30.1.5:8080");
	cw_svc_bes_clear(&c);
}

static void test_select_failover(void **state)
{
	struct cw_svc_bes remote_only = { 0 }, local_only = { 0 }, none = { 0 };

	(void)state;
	/* local with no local backend falls to the remote ones */
	add_be(&remote_only, "10.20.1.5", 8080, IPPROTO_TCP, "http", 2);
	add_be(&remote_only, "10.10.1.5", 8080, IPPROTO_UDP, "http", 1); /* local, other protocol */
	slots(&remote_only, CW_AFFINITY_LOCAL, "2:10.20.1.5:8080");
	slots(&remote_only, CW_AFFINITY_REMOTE, "2:10.20.1.5:8080");
	/* remote with no remote backend falls to the local ones */
	add_be(&local_only, "10.10.1.5", 8080, IPPROTO_TCP, "http", 1);
	add_be(&local_only, "10.20.1.5", 9090, IPPROTO_TCP, "metrics", 2); /* remote, other port */
	slots(&local_only, CW_AFFINITY_REMOTE, "1:10.10.1.5:8080");
	slots(&local_only, CW_AFFINITY_LOCAL, "1:10.10.1.5:8080");
	/* nothing anywhere: 0 slots, a valid answer */
	slots(&none, CW_AFFINITY_LOCAL, "");
	slots(&none, CW_AFFINITY_NONE, "");
	add_be(&none, "10.10.1.5", 53, IPPROTO_UDP, "dns", 1);
	slots(&none, CW_AFFINITY_REMOTE, "");
	cw_svc_bes_clear(&remote_only);
	cw_svc_bes_clear(&local_only);
	cw_svc_bes_clear(&none);
}

static void test_select_dedup_and_order(void **state)
{
	struct cw_svc_bes a = { 0 }, b = { 0 };

	(void)state;
	/* the same tuple from two slices, and from two clusters: one slot each */
	add_be(&a, "10.10.1.10", 8080, IPPROTO_TCP, "http", 1);
	add_be(&a, "10.10.1.9", 8080, IPPROTO_TCP, "http", 1);
	add_be(&a, "10.10.1.10", 8080, IPPROTO_TCP, "http", 1);
	add_be(&a, "10.10.1.9", 8081, IPPROTO_TCP, "http", 1);
	add_be(&a, "10.20.1.1", 8080, IPPROTO_TCP, "http", 3);
	add_be(&a, "10.20.1.1", 8080, IPPROTO_TCP, "http", 2);
	add_be(&a, "10.2.0.1", 8080, IPPROTO_TCP, "http", 2);
	slots(&a, CW_AFFINITY_NONE,
	      "1:10.10.1.9:8080 1:10.10.1.9:8081 1:10.10.1.10:8080 2:10.2.0.1:8080 2:10.20.1.1:8080");
	/* any order in, the same slots out */
	for (size_t i = a.n; i-- > 0;)
		assert_int_equal(cw_svc_bes_add(&b, &a.v[i]), 0);
	slots(&b, CW_AFFINITY_NONE,
	      "1:10.10.1.9:8080 1:10.10.1.9:8081 1:10.10.1.10:8080 2:10.2.0.1:8080 2:10.20.1.1:8080");
	cw_svc_bes_clear(&a);
	cw_svc_bes_clear(&b);
}

/* --- slim informer objects --------------------------------------------------------- */

/*
 * What an informer caches of a Service or an EndpointSlice (cw_k8s_slim with
 * the parsers' keep lists) parses exactly as the whole object does, as a
 * real API server sends it: managedFields, kubectl's last-applied copy,
 * status and the fields no parser reads are gone.
 */
static void test_slim_keeps_what_parsers_read(void **state)
{
	static const char svc_js[] =
		"{'apiVersion':'v1','kind':'Service','metadata':{'namespace':'default','name':'rebel-base',"
		"'uid':'4c5d','resourceVersion':'812','creationTimestamp':'2026-11-23T10:00:00Z',"
		"'labels':{'app':'rebel-base'},'annotations':{'service.cilium.io/global':'true',"
		"'service.cilium.io/affinity':'remote','kubectl.kubernetes.io/last-applied-configuration':'{}'},"
		"'managedFields':[{'manager':'kubectl','operation':'Update','fieldsType':'FieldsV1',"
		"'fieldsV1':{'f:spec':{'f:ports':{}}}}]},"
		"'spec':{'type':'ClusterIP','clusterIP':'10.96.0.20','clusterIPs':['10.96.0.20'],"
		"'selector':{'name':'rebel-base'},'sessionAffinity':'None','ipFamilies':['IPv4'],"
		"'ports':[{'name':'http','port':80,'targetPort':8080,'protocol':'TCP'},"
		"{'name':'dns','port':53,'protocol':'UDP'}]},'status':{'loadBalancer':{}}}";
	static const char slice_js[] = SLICE_HEAD
		"'addressType':'IPv4','ports':[{'name':'http','port':8080,'protocol':'TCP'}],"
		"'endpoints':[{'addresses':['10.10.1.5'],'conditions':{'ready':true},'nodeName':'n1',"
		"'targetRef':{'kind':'Pod','name':'rebel-base-1','namespace':'default','uid':'77'},"
		"'zone':'a'},{'addresses':['10.10.1.6'],'conditions':{'ready':false}}]}";
	struct cw_svc full, slim;
	struct cw_svc_bes bf = { 0 }, bs = { 0 };
	char ns[64], name[64], err[256];
	cJSON *o = json(svc_js), *meta;
	char *txt;

	(void)state;
	assert_int_equal(cw_svc_from_k8s(o, &full, err, sizeof(err)), 0);
	cw_k8s_slim(o, cw_svc_k8s_keep);
	assert_int_equal(cw_svc_from_k8s(o, &slim, err, sizeof(err)), 0);
	assert_memory_equal(&full, &slim, sizeof(full));
	assert_true(slim.global);
	assert_int_equal(slim.affinity, CW_AFFINITY_REMOTE);
	assert_int_equal(slim.n_ports, 2);
	meta = cJSON_GetObjectItemCaseSensitive(o, "metadata");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "resourceVersion")->valuestring, "812");
	txt = cJSON_PrintUnformatted(o);
	assert_non_null(txt);
	assert_null(strstr(txt, "managedFields"));
	assert_null(strstr(txt, "last-applied"));
	assert_null(strstr(txt, "selector"));
	assert_null(strstr(txt, "status"));
	assert_null(strstr(txt, "uid"));
	free(txt);
	cJSON_Delete(o);

	o = json(slice_js);
	assert_int_equal(cw_epslice_parse(o, ns, sizeof(ns), name, sizeof(name), 1, &bf, err,
					  sizeof(err)), 0);
	cw_k8s_slim(o, cw_epslice_k8s_keep);
	assert_int_equal(cw_epslice_parse(o, ns, sizeof(ns), name, sizeof(name), 1, &bs, err,
					  sizeof(err)), 0);
	assert_string_equal(name, "rebel-base");
	assert_int_equal(bs.n, 1);
	assert_int_equal(bf.n, bs.n);
	assert_memory_equal(bf.v, bs.v, bs.n * sizeof(*bs.v));
	txt = cJSON_PrintUnformatted(o);
	assert_non_null(txt);
	assert_null(strstr(txt, "nodeName"));
	assert_null(strstr(txt, "targetRef"));
	assert_non_null(strstr(txt, "\"conditions\":{\"ready\":false}"));
	free(txt);
	cJSON_Delete(o);
	cw_svc_bes_clear(&bf);
	cw_svc_bes_clear(&bs);

	/* a malformed field the keep list reaches into stays, for the parser to refuse */
	o = json("{'metadata':{'namespace':'default','name':'x'},'spec':'oops'}");
	cw_k8s_slim(o, cw_svc_k8s_keep);
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "spec")->valuestring, "oops");
	cJSON_Delete(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_svc_ports_and_cluster_ip),
		cmocka_unit_test(test_svc_headless),
		cmocka_unit_test(test_svc_refused),
		cmocka_unit_test(test_svc_annotations),
		cmocka_unit_test(test_svc_affinity),
		cmocka_unit_test(test_slice_ready),
		cmocka_unit_test(test_slice_ports),
		cmocka_unit_test(test_slice_not_ours),
		cmocka_unit_test(test_slice_refused),
		cmocka_unit_test(test_rec_format),
		cmocka_unit_test(test_rec_format_deterministic),
		cmocka_unit_test(test_rec_round_trip),
		cmocka_unit_test(test_rec_parse_cilium),
		cmocka_unit_test(test_rec_refused_identity),
		cmocka_unit_test(test_rec_refused_values),
		cmocka_unit_test(test_rec_too_many_tuples),
		cmocka_unit_test(test_select_affinity),
		cmocka_unit_test(test_select_failover),
		cmocka_unit_test(test_select_dedup_and_order),
		cmocka_unit_test(test_slim_keeps_what_parsers_read),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
