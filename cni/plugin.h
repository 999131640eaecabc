/* SPDX-License-Identifier: Apache-2.0 */
/* One invocation of the plugin, and the commands of the dispatch table. */
#ifndef CW_CNI_PLUGIN_H
#define CW_CNI_PLUGIN_H

#include "args.h"
#include "conf.h"
#include "error.h"

struct cw_plugin {
	struct cw_conf *conf;
	struct cw_args args;
	struct cw_error err;
	char *out;          /* the one JSON document for stdout, or NULL */
};

int cw_cmd_add(struct cw_plugin *p);
int cw_cmd_del(struct cw_plugin *p);
int cw_cmd_check(struct cw_plugin *p);
int cw_cmd_gc(struct cw_plugin *p);
int cw_cmd_status(struct cw_plugin *p);

/*
 * Remove everything ADD made for one attachment, in DEL's order: IP first,
 * then the map entry, the veth, the state file.  Missing pieces are not
 * errors.  @delegate_ipam runs the IPAM plugin's DEL when the config
 * delegates.
 */
int cw_teardown(const struct cw_conf *conf, const struct cw_args *args, const char *container_id,
		const char *ifname, bool delegate_ipam, bool async_link, struct cw_error *err);

/* Lock timeout for IPAM, in ms; past it the runtime is told to retry (11). */
#define CW_LOCK_TIMEOUT_MS 10000

#endif
