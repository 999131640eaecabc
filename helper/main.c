// SPDX-License-Identifier: Apache-2.0
/*
 * causeway-helper: the node helper daemon (role "node") and the operator's
 * commands.  Daemon roles take their own options; operator commands share
 * one small set.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <causeway/datapath.h>
#include <causeway/log.h>
#include <causeway/util.h>
#include "cli.h"
#include "meshapi.h"
#include "node.h"

#define DEFAULT_SOCKET_NAME "helper.sock"

static int run_node(int argc, char **argv);
static int run_meshapi(int argc, char **argv);

static const struct role {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} roles[] = {
	{ "node", run_node, "run the node daemon (every node)" },
	{ "mesh-apiserver", run_meshapi, "run the cluster's mesh publisher (one per cluster)" },
};

static const struct subcommand {
	const char *name;
	int (*fn)(const struct cw_cli_opts *o);
	const char *help;
} subcommands[] = {
	{ "status", cw_cli_status, "the running helper's connections, syncs, counts and errors" },
	{ "endpoints", cw_cli_endpoints, "the running helper's endpoints and their identities" },
	{ "clusters", cw_cli_clusters, "the running helper's remote clusters: state, why, sync, counts" },
	{ "services", cw_cli_services, "the running helper's services: frontends, backends, clusters, affinity" },
	{ "load", cw_cli_load, "load the BPF programs, pin them with their maps, move attachments to them" },
	{ "unload", cw_cli_unload, "remove the pins (attached programs stay until their veths go)" },
	{ "bpf-endpoints", cw_cli_bpf_endpoints, "list the endpoint map" },
	{ "ipcache", cw_cli_ipcache, "list the ipcache map (pod IP -> identity, tunnel)" },
	{ "tunnels", cw_cli_tunnels, "list the tunnel map (PodCIDR -> node)" },
	{ "metrics", cw_cli_metrics, "forwarded and dropped packets by reason and direction" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: causeway-helper ROLE [options]          (see ROLE --help)\n"
		   "       causeway-helper COMMAND [--bpf-root DIR] [--state-dir DIR] "
		   "[--socket PATH] [-o json] [-v]\n\nroles:\n");
	for (size_t i = 0; i < ARRAY_SIZE(roles); i++)
		fprintf(f, "  %-15s %s\n", roles[i].name, roles[i].help);
	fprintf(f, "\ncommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++)
		fprintf(f, "  %-15s %s\n", subcommands[i].name, subcommands[i].help);
	fprintf(f, "\ndefaults: --bpf-root %s --state-dir %s --socket STATE_DIR/%s\n",
		CW_DEFAULT_BPF_ROOT, CW_DEFAULT_STATE_DIR, DEFAULT_SOCKET_NAME);
}

static int open_log(const char *file, const char *tag)
{
	if (file && cw_log_open(file, tag)) {
		fprintf(stderr, "causeway-helper: cannot open log file %s\n", file);
		return -1;
	}
	return 0;
}

/* An integer option within [lo, hi], or a message naming it. */
static bool parse_range(const char *role, const char *opt, const char *arg, long lo, long hi,
			const char *unit, long *out)
{
	char *end;
	long v = strtol(arg, &end, 10);

	if (!*arg || *end || v < lo || v > hi) {
		fprintf(stderr, "%s: --%s \"%s\" is not %ld..%ld%s\n", role, opt, arg, lo, hi, unit);
		return false;
	}
	*out = v;
	return true;
}

static const char node_usage[] =
	"usage: causeway-helper node --cluster-name NAME --cluster-id N --node-name NAME\n"
	"         --etcd-config FILE [--bpf-root DIR] [--state-dir DIR] [--socket PATH]\n"
	"         [--k8s-api URL --k8s-ca-file F --k8s-token-file F | --no-k8s]\n"
	"         [--routing tunnel|native|hybrid] [--node-ip IP] [--pod-cidr CIDR]\n"
	"         [--metrics-addr 127.0.0.1:PORT] [--lease-ttl SECONDS] [--log-file F] [-v]\n"
	"         [--clustermesh-config DIR] [--remote-eviction-timeout SECONDS]\n"
	"         [--no-masquerade | --no-masquerade-to CIDR ...] [--tunnel-through-stack]\n"
	"\nWithout --k8s-api the in-cluster configuration is used.  --node-ip and --pod-cidr\n"
	"override the Node object's InternalIP and spec.podCIDR.  --clustermesh-config is a\n"
	"directory with one etcd config per remote cluster, named after it (read-only).\n"
	"A remote cluster unreachable, or whose heartbeat is older than 120 s, for\n"
	"--remote-eviction-timeout seconds (default 120) has its routes and backends withdrawn.\n"
	"Pod traffic to addresses outside every PodCIDR of the mesh leaves with the node's\n"
	"address (iptables MASQUERADE) unless --no-masquerade; --no-masquerade-to adds\n"
	"destinations that keep the pod's address (a routed pod range, say).\n"
	"Pods' tunnelled packets are encapsulated by the datapath and leave by the\n"
	"underlay straight away; --tunnel-through-stack sends them through cw_vxlan and\n"
	"the node's IP stack instead, for node rules that must see them (OUTPUT and\n"
	"POSTROUTING filters, IPsec policies), at some throughput.\n";

static int run_node(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "cluster-name", required_argument, NULL, 'c' },
		{ "cluster-id", required_argument, NULL, 'i' },
		{ "node-name", required_argument, NULL, 'n' },
		{ "etcd-config", required_argument, NULL, 'e' },
		{ "bpf-root", required_argument, NULL, 'b' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "socket", required_argument, NULL, 'S' },
		{ "k8s-api", required_argument, NULL, 'k' },
		{ "k8s-ca-file", required_argument, NULL, 'C' },
		{ "k8s-token-file", required_argument, NULL, 'T' },
		{ "no-k8s", no_argument, NULL, 'N' },
		{ "routing", required_argument, NULL, 'r' },
		{ "node-ip", required_argument, NULL, 'I' },
		{ "pod-cidr", required_argument, NULL, 'P' },
		{ "metrics-addr", required_argument, NULL, 'm' },
		{ "clustermesh-config", required_argument, NULL, 'M' },
		{ "lease-ttl", required_argument, NULL, 'L' },
		{ "remote-eviction-timeout", required_argument, NULL, 'E' },
		{ "no-masquerade", no_argument, NULL, 'Q' },
		{ "no-masquerade-to", required_argument, NULL, 'X' },
		{ "tunnel-through-stack", no_argument, NULL, 'U' },
		{ "log-file", required_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cw_node_opts o = { .bpf_root = CW_DEFAULT_BPF_ROOT, .state_dir = CW_DEFAULT_STATE_DIR,
				  .routing = CW_ROUTING_TUNNEL, .lease_ttl = 30,
				  .remote_eviction_s = CW_REMOTE_EVICTION_DEFAULT_S };
	char sock[PATH_MAX];
	const char *log_file = NULL;
	long v;
	int c;

	optind = 2;
	while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': o.cluster = optarg; break;
		case 'i':
			if (!parse_range("node", "cluster-id", optarg, 1, 255, "", &v))
				return 2;
			o.cluster_id = (unsigned int)v;
			break;
		case 'n': o.node_name = optarg; break;
		case 'e': o.etcd_config = optarg; break;
		case 'b': o.bpf_root = optarg; break;
		case 's': o.state_dir = optarg; break;
		case 'S': o.socket = optarg; break;
		case 'k': o.k8s_api = optarg; break;
		case 'C': o.k8s_ca_file = optarg; break;
		case 'T': o.k8s_token_file = optarg; break;
		case 'N': o.no_k8s = true; break;
		case 'r':
			if (!cw_routing_parse(optarg, &o.routing)) {
				fprintf(stderr, "node: --routing \"%s\" is not tunnel, native or hybrid\n",
					optarg);
				return 2;
			}
			break;
		case 'I':
			if (!cw_addr4_parse(optarg, &o.node_ip)) {
				fprintf(stderr, "node: --node-ip \"%s\" is not an IPv4 address\n", optarg);
				return 2;
			}
			break;
		case 'P':
			if (!cw_prefix4_parse(optarg, &o.pod_cidr)) {
				fprintf(stderr, "node: --pod-cidr \"%s\" is not an IPv4 prefix\n", optarg);
				return 2;
			}
			break;
		case 'm': o.metrics_addr = optarg; break;
		case 'M': o.clustermesh_dir = optarg; break;
		case 'L':
			if (!parse_range("node", "lease-ttl", optarg, 5, 3600, " seconds", &v))
				return 2;
			o.lease_ttl = (int)v;
			break;
		case 'E':
			if (!parse_range("node", "remote-eviction-timeout", optarg, 1, 86400,
					 " seconds", &v))
				return 2;
			o.remote_eviction_s = (int)v;
			break;
		case 'Q': o.no_masquerade = true; break;
		case 'U': o.tunnel_through_stack = true; break;
		case 'X':
			if (o.n_masq_except == CW_MASQ_EXCEPT_MAX) {
				fprintf(stderr, "node: at most %d --no-masquerade-to\n",
					CW_MASQ_EXCEPT_MAX);
				return 2;
			}
			if (!cw_prefix4_parse(optarg, &o.masq_except[o.n_masq_except])) {
				fprintf(stderr, "node: --no-masquerade-to \"%s\" is not an IPv4 prefix\n",
					optarg);
				return 2;
			}
			o.n_masq_except++;
			break;
		case 'l': log_file = optarg; break;
		case 'v': cw_log_set_level(CW_LOG_DEBUG); break;
		case 'h': fputs(node_usage, stdout); return 0;
		default: fputs(node_usage, stderr); return 2;
		}
	}
	if (optind < argc || !o.cluster || !o.cluster_id || !o.node_name || !o.etcd_config) {
		fprintf(stderr, "node: --cluster-name, --cluster-id, --node-name and --etcd-config "
				"are required\n%s", node_usage);
		return 2;
	}
	if (!cw_cluster_name_valid(o.cluster)) {
		fprintf(stderr, "node: --cluster-name \"%s\" is not 1-32 of [a-z0-9-], "
				"alphanumeric at both ends\n", o.cluster);
		return 2;
	}
	if (!cw_node_name_valid(o.node_name)) {
		fprintf(stderr, "node: --node-name \"%s\" is not a DNS subdomain\n", o.node_name);
		return 2;
	}
	if (!o.socket) {
		snprintf(sock, sizeof(sock), "%s/%s", o.state_dir, DEFAULT_SOCKET_NAME);
		o.socket = sock;
	}
	if (cw_mkdir_p(o.state_dir, 0700) || open_log(log_file, "causeway-helper"))
		return 1;
	cw_log_capture_libbpf();
	return cw_node_main(&o);
}

static const char meshapi_usage[] =
	"usage: causeway-helper mesh-apiserver --cluster-name NAME --cluster-id N\n"
	"         --etcd-config FILE [--k8s-api URL --k8s-ca-file F --k8s-token-file F]\n"
	"         [--heartbeat SECONDS] [--identity-gc SECONDS] [--log-file F] [-v]\n"
	"\nWrites cilium/cluster-config/NAME, the heartbeat, the synced canaries, and\n"
	"every Service annotated service.cilium.io/global=\"true\" (not shared=\"false\")\n"
	"with a ClusterIP as cilium/state/services/v1/NAME/NS/SERVICE, its backends the\n"
	"ready addresses of its EndpointSlices; removes identities no node references.\n"
	"Without --k8s-api the in-cluster configuration is used.\n";

static int run_meshapi(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "cluster-name", required_argument, NULL, 'c' },
		{ "cluster-id", required_argument, NULL, 'i' },
		{ "etcd-config", required_argument, NULL, 'e' },
		{ "k8s-api", required_argument, NULL, 'k' },
		{ "k8s-ca-file", required_argument, NULL, 'C' },
		{ "k8s-token-file", required_argument, NULL, 'T' },
		{ "heartbeat", required_argument, NULL, 'H' },
		{ "identity-gc", required_argument, NULL, 'G' },
		{ "log-file", required_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cw_meshapi_opts o = { .heartbeat_s = 60, .identity_gc_s = 60 };
	const char *log_file = NULL;
	long v;
	int c;

	optind = 2;
	while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': o.cluster = optarg; break;
		case 'i':
			if (!parse_range("mesh-apiserver", "cluster-id", optarg, 1, 255, "", &v))
				return 2;
			o.cluster_id = (unsigned int)v;
			break;
		case 'e': o.etcd_config = optarg; break;
		case 'k': o.k8s_api = optarg; break;
		case 'C': o.k8s_ca_file = optarg; break;
		case 'T': o.k8s_token_file = optarg; break;
		case 'H':
		case 'G':
			if (!parse_range("mesh-apiserver", c == 'H' ? "heartbeat" : "identity-gc", optarg,
					 1, 86400, " seconds", &v))
				return 2;
			if (c == 'H')
				o.heartbeat_s = (int)v;
			else
				o.identity_gc_s = (int)v;
			break;
		case 'l': log_file = optarg; break;
		case 'v': cw_log_set_level(CW_LOG_DEBUG); break;
		case 'h': fputs(meshapi_usage, stdout); return 0;
		default: fputs(meshapi_usage, stderr); return 2;
		}
	}
	if (optind < argc || !o.cluster || !o.cluster_id || !o.etcd_config ||
	    !cw_cluster_name_valid(o.cluster)) {
		fprintf(stderr, "mesh-apiserver: a valid --cluster-name, --cluster-id and "
				"--etcd-config are required\n%s", meshapi_usage);
		return 2;
	}
	if (open_log(log_file, "causeway-mesh-apiserver"))
		return 1;
	return cw_meshapi_main(&o);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "bpf-root", required_argument, NULL, 'b' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "socket", required_argument, NULL, 'S' },
		{ "output", required_argument, NULL, 'o' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cw_cli_opts o = { .bpf_root = CW_DEFAULT_BPF_ROOT, .state_dir = CW_DEFAULT_STATE_DIR };
	const struct subcommand *sub = NULL;
	char sock[PATH_MAX];
	int c;

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(roles); i++)
		if (strcmp(argv[1], roles[i].name) == 0)
			return roles[i].fn(argc, argv);
	for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++)
		if (strcmp(argv[1], subcommands[i].name) == 0)
			sub = &subcommands[i];
	if (!sub) {
		fprintf(stderr, "causeway-helper: unknown command \"%s\"\n\n", argv[1]);
		usage(stderr);
		return 2;
	}
	optind = 2;
	while ((c = getopt_long(argc, argv, "b:s:o:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'b': o.bpf_root = optarg; break;
		case 's': o.state_dir = optarg; break;
		case 'S': o.socket = optarg; break;
		case 'o':
			if (strcmp(optarg, "json") != 0) {
				fprintf(stderr, "causeway-helper: -o takes \"json\"\n");
				return 2;
			}
			o.json = true;
			break;
		case 'v': cw_log_set_level(CW_LOG_DEBUG); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!o.socket) {
		snprintf(sock, sizeof(sock), "%s/%s", o.state_dir, DEFAULT_SOCKET_NAME);
		o.socket = sock;
	}
	cw_log_capture_libbpf();
	return sub->fn(&o);
}
