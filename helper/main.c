// SPDX-License-Identifier: Apache-2.0
/*
 * causeway-helper: the node helper.  For now the operator's commands over
 * the node's pinned datapath; the daemon roles build on the same table.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <causeway/datapath.h>
#include <causeway/log.h>
#include <causeway/util.h>
#include "cli.h"

static const struct subcommand {
	const char *name;
	int (*fn)(const struct cw_cli_opts *o);
	const char *help;
} subcommands[] = {
	{ "load", cw_cli_load, "load the BPF programs and pin them with their maps" },
	{ "unload", cw_cli_unload, "remove the pins (attached programs stay until their veths go)" },
	{ "endpoints", cw_cli_endpoints, "list the endpoint map" },
	{ "metrics", cw_cli_metrics, "forwarded and dropped packets by reason and direction" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: causeway-helper COMMAND [--bpf-root DIR] [--state-dir DIR] [-o json] [-v]\n\n");
	for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++)
		fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].help);
	fprintf(f, "\ndefaults: --bpf-root %s --state-dir %s\n", CW_DEFAULT_BPF_ROOT,
		CW_DEFAULT_STATE_DIR);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "bpf-root", required_argument, NULL, 'b' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "output", required_argument, NULL, 'o' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cw_cli_opts o = { .bpf_root = CW_DEFAULT_BPF_ROOT, .state_dir = CW_DEFAULT_STATE_DIR };
	const struct subcommand *sub = NULL;
	int c;

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
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
	cw_log_capture_libbpf();
	return sub->fn(&o);
}
