// SPDX-License-Identifier: Apache-2.0
/* STATUS (SPEC.md 1.1.0): can this plugin serve an ADD right now? */
#include <errno.h>
#include <string.h>

#include <causeway/dp.h>
#include "delegate.h"
#include "ipam.h"
#include "plugin.h"

int cw_cmd_status(struct cw_plugin *p)
{
	const struct cw_conf *conf = p->conf;
	struct cw_ipam *ipam = NULL;
	struct cw_prefix4 pod_cidr;
	struct cw_dp *dp = NULL;
	unsigned int used, cap;
	int err;

	err = cw_dp_open(conf->bpf_root, conf->state_dir, true, &dp);
	cw_dp_free(dp);
	if (err)
		return cw_error_set(&p->err, CW_ERR_NOT_AVAILABLE,
				    "datapath unavailable: bpfRoot %s: %s", conf->bpf_root, strerror(-err));
	if (conf->has_ipam) {
		struct cw_error e = { 0 };

		if (cw_delegate(conf, &p->args, "STATUS", NULL, &e) < 0)
			return cw_error_set(&p->err, CW_ERR_NOT_AVAILABLE, "%s", e.msg);
		return 0;
	}
	if (cw_conf_pod_cidr(conf, &pod_cidr, &p->err))
		return cw_error_set(&p->err, CW_ERR_NOT_AVAILABLE, "no address range: %s", p->err.msg);
	err = cw_ipam_open(conf->state_dir, conf->name, &pod_cidr, CW_LOCK_TIMEOUT_MS, &ipam);
	if (!err)
		err = cw_ipam_usage(ipam, &used, &cap);
	cw_ipam_close(ipam);
	if (err)
		return cw_error_set(&p->err, CW_ERR_NOT_AVAILABLE, "ipam state unreadable: %s",
				    strerror(-err));
	if (used >= cap)
		return cw_error_set(&p->err, CW_ERR_NOT_AVAILABLE,
				    "ipam: pool exhausted (%u of %u addresses in use)", used, cap);
	return 0;
}
