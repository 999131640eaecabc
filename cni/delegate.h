/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Delegation to an IPAM plugin (SPEC.md "Delegated plugin protocol"): the
 * plugin is found in CNI_PATH and run with our own stdin and environment,
 * CNI_COMMAND included.
 */
#ifndef CW_CNI_DELEGATE_H
#define CW_CNI_DELEGATE_H

#include "args.h"
#include "conf.h"
#include "error.h"
#include "result.h"

/* Runs @command (ADD/DEL/CHECK/GC/STATUS); ADD fills @result. */
int cw_delegate(const struct cw_conf *conf, const struct cw_args *args, const char *command,
		struct cw_result *result, struct cw_error *err);

/*
 * GC for the delegated IPAM: forwarded as GC when the plugin speaks 1.1.0,
 * otherwise as a DEL of each collected attachment.
 */
int cw_delegate_gc(const struct cw_conf *conf, const struct cw_args *args,
		   const struct cw_attachment *stale, size_t n_stale, struct cw_error *err);

#endif
