// SPDX-License-Identifier: Apache-2.0
/*
 * conf-dump: a network config on stdin, cw_conf_dump() of it on stdout, or
 * "error CODE: MSG" when the parser refuses it.  Exit 0 either way, so the
 * golden runner compares output only (test/golden/run).
 */
#include <stdio.h>
#include <stdlib.h>

#include <causeway/log.h>
#include <causeway/util.h>
#include "conf.h"

int main(void)
{
	struct cw_error err = { 0 };
	struct cw_conf *conf = NULL;
	char *buf = NULL, *dump;
	size_t len = 0;
	int rc;

	/* the parser logs nothing, but keep stderr clean if that changes */
	cw_log_set_level(CW_LOG_ERROR);
	rc = cw_read_fd(0, 1 << 20, &buf, &len);
	if (rc) {
		fprintf(stderr, "conf-dump: cannot read stdin: %d\n", rc);
		return 1;
	}
	if (cw_conf_parse(buf, len, &conf, &err) < 0) {
		printf("error %d: %s\n", err.code, err.msg);
		free(buf);
		return 0;
	}
	dump = cw_conf_dump(conf);
	if (!dump) {
		fprintf(stderr, "conf-dump: out of memory\n");
		return 1;
	}
	fputs(dump, stdout);
	free(dump);
	cw_conf_free(conf);
	free(buf);
	return 0;
}
