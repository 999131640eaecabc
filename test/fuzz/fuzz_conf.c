// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer harness for the parsers of outside input (STYLE.md practice 11):
 * the network config from the runtime, the IPAM plugin's result, and
 * CNI_ARGS.  The parsers' .c files are included directly (as wireguard-tools
 * does) so the harness builds without the plugin's objects.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "../../cni/conf.c"
#include "../../cni/args.c"
#include "../../cni/error.c"
#include "../../cni/result.c"
#include "../../lib/addr.c"
#include "../../lib/log.c"
#include "../../lib/util.c"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* result parsing warns about IPv6 entries: noise at fuzzing speed */
	cw_log_set_level(CW_LOG_ERROR);
	return 0;
}

static void fuzz_conf(const char *buf, size_t len)
{
	struct cw_error err = { 0 };
	struct cw_conf *c = NULL;
	char ver[16];
	char *dump;

	cw_conf_peek_version(buf, len, ver, sizeof(ver));
	if (cw_conf_parse(buf, len, &c, &err) < 0) {
		/* every refusal carries a code and a message */
		if (!err.code || !err.msg[0])
			abort();
		return;
	}
	if (err.code || c->raw_len != len || memcmp(c->raw, buf, len) != 0)
		abort();
	dump = cw_conf_dump(c);
	if (!dump)
		abort();
	free(dump);
	for (size_t i = 0; i < c->n_valid; i++) {
		if (!cw_conf_has_attachment(c, c->valid[i].container_id, c->valid[i].ifname))
			abort();
	}
	cw_conf_free(c);
}

static void fuzz_result(const char *buf, size_t len)
{
	static const char *const versions[] = { "0.3.1", "0.4.0", "1.0.0", "1.1.0" };
	struct cw_error err = { 0 };
	struct cw_result r = { 0 };

	if (cw_result_parse(buf, len, &r, &err) < 0) {
		if (!err.code || !err.msg[0])
			abort();
		cw_result_clear(&r);
		return;
	}
	if (r.n_ips > CW_RESULT_MAX_IPS || r.n_routes > CW_RESULT_MAX_ROUTES)
		abort();
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		struct cw_result again = { 0 };
		struct cw_error err2 = { 0 };
		char *s;

		/* what we format, we must read back to the same addresses */
		s = cw_result_format(&r, versions[i]);
		if (!s)
			abort();
		if (cw_result_parse(s, strlen(s), &again, &err2) < 0 || again.n_ips != r.n_ips)
			abort();
		for (int k = 0; k < r.n_ips; k++) {
			if (again.ips[k].addr.s_addr != r.ips[k].addr.s_addr ||
			    again.ips[k].prefixlen != r.ips[k].prefixlen)
				abort();
		}
		cw_result_clear(&again);
		free(s);
	}
	cw_result_clear(&r);
}

static void fuzz_cni_args(const char *buf, size_t len)
{
	char *s = malloc(len + 1);
	struct cw_args a;

	if (!s)
		return;
	memcpy(s, buf, len);
	s[len] = '\0';
	memset(&a, 0, sizeof(a));
	cw_args_parse_cni_args(&a, s);
	if (strlen(a.pod_namespace) >= sizeof(a.pod_namespace) || strlen(a.pod_name) >= sizeof(a.pod_name) ||
	    strlen(a.pod_uid) >= sizeof(a.pod_uid))
		abort();
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact-size copy, so reading one byte past @size is caught by ASan */
	char *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	fuzz_conf(buf, size);
	/* a config's prevResult is an IPAM result: exercise both on the same bytes */
	fuzz_result(buf, size);
	fuzz_cni_args(buf, size);
	free(buf);
	return 0;
}
