/* SPDX-License-Identifier: Apache-2.0 */
/* The CNI_* environment of one invocation (SPEC.md "Parameters"). */
#ifndef CW_CNI_ARGS_H
#define CW_CNI_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include "error.h"

struct cw_args {
	const char *command;
	const char *container_id;
	const char *netns;     /* "" when absent */
	const char *ifname;
	const char *path;      /* CNI_PATH, "" when absent */
	/* from CNI_ARGS, "" when absent */
	char pod_namespace[256];
	char pod_name[256];
	char pod_uid[64];
};

/* Reads the environment; code 4 names the variable that is wrong. */
int cw_args_from_env(struct cw_args *a, bool need_netns, struct cw_error *err);
/* Pure parts, exposed for tests. */
bool cw_valid_cni_token(const char *s, size_t max);
bool cw_valid_container_id(const char *s);
bool cw_valid_ifname(const char *s);
void cw_args_parse_cni_args(struct cw_args *a, const char *cni_args);

#endif
