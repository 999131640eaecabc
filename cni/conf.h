/* SPDX-License-Identifier: Apache-2.0 */
/* The plugin's network configuration: bytes in, struct out, no I/O. */
#ifndef CW_CNI_CONF_H
#define CW_CNI_CONF_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include <causeway/addr.h>
#include <causeway/log.h>
#include "error.h"

enum cw_cni_version { CW_V031, CW_V040, CW_V100, CW_V110 };

struct cw_attachment {
	char container_id[256];
	char ifname[16];
};

struct cw_conf {
	char cni_version[16];
	enum cw_cni_version version;
	char name[128];
	char type[64];
	char bpf_root[PATH_MAX];
	char state_dir[PATH_MAX];
	unsigned int mtu;
	bool async_link_delete; /* DEL leaves the veth unregister to a child */
	bool has_pod_cidr;
	struct cw_prefix4 pod_cidr;
	char log_file[PATH_MAX];
	enum cw_log_level log_level;
	bool has_ipam;          /* ipam.type given: delegate */
	char ipam_type[64];
	struct cJSON *prev_result; /* owned copy, or NULL */
	bool has_valid;         /* GC list given */
	struct cw_attachment *valid;
	size_t n_valid;
	char *raw;              /* the bytes as received, for delegation */
	size_t raw_len;
};

/*
 * Parse and validate.  Errors: code 6 (not JSON), 1 (cniVersion not
 * supported), 7 (a field is invalid; the message names it).
 */
int cw_conf_parse(const char *buf, size_t len, struct cw_conf **out, struct cw_error *err);
/*
 * The range built-in IPAM allocates from: the config's "podCIDR", else the
 * node's PodCIDR as the helper published it in <stateDir>/podcidr.  Sets
 * err (code 11, try again) while the helper has not written it yet.
 */
int cw_conf_pod_cidr(const struct cw_conf *c, struct cw_prefix4 *out, struct cw_error *err);
void cw_conf_free(struct cw_conf *conf);
/* The canonical dump used by the golden tests. */
char *cw_conf_dump(const struct cw_conf *conf);

bool cw_cni_version_parse(const char *s, enum cw_cni_version *out);
/* The config's cniVersion string, even from an invalid config; NULL if none. */
const char *cw_conf_peek_version(const char *buf, size_t len, char *out, size_t outlen);
bool cw_conf_has_attachment(const struct cw_conf *conf, const char *container_id,
			    const char *ifname);

#endif
