/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CW_HELPER_CLI_H
#define CW_HELPER_CLI_H

#include <stdbool.h>

struct cw_cli_opts {
	const char *bpf_root;
	const char *state_dir;
	const char *socket;
	bool json;
};

int cw_cli_load(const struct cw_cli_opts *o);
int cw_cli_unload(const struct cw_cli_opts *o);
int cw_cli_bpf_endpoints(const struct cw_cli_opts *o);
int cw_cli_endpoints(const struct cw_cli_opts *o);
int cw_cli_status(const struct cw_cli_opts *o);
int cw_cli_clusters(const struct cw_cli_opts *o);
int cw_cli_services(const struct cw_cli_opts *o);
int cw_cli_ipcache(const struct cw_cli_opts *o);
int cw_cli_tunnels(const struct cw_cli_opts *o);
int cw_cli_metrics(const struct cw_cli_opts *o);

#endif
