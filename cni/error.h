/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CW_CNI_ERROR_H
#define CW_CNI_ERROR_H

#include <stdarg.h>

/* CNI spec error codes (SPEC.md "Error"), then Causeway's own (100+). */
enum cw_cni_code {
	CW_ERR_INCOMPATIBLE_VERSION = 1,
	CW_ERR_UNSUPPORTED_FIELD    = 2,
	CW_ERR_UNKNOWN_CONTAINER    = 3,
	CW_ERR_INVALID_ENV          = 4,
	CW_ERR_IO                   = 5,
	CW_ERR_DECODE               = 6,
	CW_ERR_INVALID_CONFIG       = 7,
	CW_ERR_TRY_AGAIN            = 11,
	CW_ERR_NOT_AVAILABLE        = 50,
	CW_ERR_IPAM                 = 100,
	CW_ERR_NETLINK              = 101,
	CW_ERR_DATAPATH             = 102,
	CW_ERR_IPAM_PLUGIN          = 103,
	CW_ERR_CHECK                = 104,
};

struct cw_error {
	int code;
	char msg[512];
	char details[1024];
};

/* Sets code and message (first one wins, so the root cause is kept). */
int cw_error_set(struct cw_error *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void cw_error_details(struct cw_error *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The one JSON error document for stdout. */
char *cw_error_format(const struct cw_error *e, const char *cni_version);

#endif
