// SPDX-License-Identifier: Apache-2.0
/*
 * causeway: the CNI plugin.  Reads the network config on stdin and the
 * CNI_* environment, runs one command, and writes exactly one JSON document
 * (a result or an error) to stdout.  Logs never go to stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include <causeway/log.h>
#include <causeway/util.h>
#include "args.h"
#include "conf.h"
#include "plugin.h"

#define CW_MAX_CONFIG (1 << 20)

static const char *const supported_versions[] = { "0.3.1", "0.4.0", "1.0.0", "1.1.0" };

enum env_need { NEED_NONE, NEED_ATTACHMENT, NEED_ATTACHMENT_NETNS };

static const struct command {
	const char *name;
	int (*fn)(struct cw_plugin *p);
	enum env_need env;
	enum cw_cni_version since;
	const char *help;
} commands[] = {
	{ "ADD", cw_cmd_add, NEED_ATTACHMENT_NETNS, CW_V031, "wire a pod interface" },
	{ "DEL", cw_cmd_del, NEED_ATTACHMENT, CW_V031, "remove it (idempotent)" },
	{ "CHECK", cw_cmd_check, NEED_ATTACHMENT, CW_V040, "verify what ADD made" },
	{ "GC", cw_cmd_gc, NEED_NONE, CW_V110, "remove attachments not listed as valid" },
	{ "STATUS", cw_cmd_status, NEED_NONE, CW_V110, "report whether ADD can be served" },
	{ "VERSION", NULL, NEED_NONE, CW_V031, "print the supported spec versions" },
};

static void print_doc(char *doc)
{
	if (doc) {
		fputs(doc, stdout);
		fputc('\n', stdout);
	}
	fflush(stdout);
	free(doc);
}

static int fail(struct cw_plugin *p, const char *version)
{
	print_doc(cw_error_format(&p->err, version));
	return 1;
}

static int cmd_version(const char *buf, size_t len)
{
	cJSON *in = cJSON_ParseWithLength(buf, len), *o = cJSON_CreateObject(), *arr;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, "cniVersion");

	cJSON_AddStringToObject(o, "cniVersion", cJSON_IsString(v) ? v->valuestring : "1.1.0");
	arr = cJSON_AddArrayToObject(o, "supportedVersions");
	for (size_t i = 0; i < ARRAY_SIZE(supported_versions); i++)
		cJSON_AddItemToArray(arr, cJSON_CreateString(supported_versions[i]));
	print_doc(cJSON_PrintUnformatted(o));
	cJSON_Delete(o);
	cJSON_Delete(in);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "causeway: a CNI plugin; run by a container runtime with CNI_COMMAND set to:\n");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(stderr, "  %-8s %s\n", commands[i].name, commands[i].help);
	fprintf(stderr, "and the network configuration on stdin (see README.md).\n");
}

int main(int argc, char **argv)
{
	struct cw_plugin p = { 0 };
	const struct command *cmd = NULL;
	const char *name = getenv("CNI_COMMAND");
	char *buf = NULL;
	size_t len = 0;
	int rc = 1;

	(void)argv;
	if (argc > 1 || (!name && isatty(STDIN_FILENO))) {
		usage();
		return 2;
	}
	for (size_t i = 0; name && i < ARRAY_SIZE(commands); i++)
		if (strcmp(name, commands[i].name) == 0)
			cmd = &commands[i];
	if (!cmd) {
		cw_error_set(&p.err, CW_ERR_INVALID_ENV, "CNI_COMMAND \"%.16s\" is not one of ADD, DEL, CHECK, GC, STATUS, VERSION",
			     name ? name : "");
		return fail(&p, NULL);
	}
	if (cw_read_fd(STDIN_FILENO, CW_MAX_CONFIG, &buf, &len)) {
		cw_error_set(&p.err, CW_ERR_DECODE, "cannot read the config from stdin (limit %d bytes)",
			     CW_MAX_CONFIG);
		return fail(&p, NULL);
	}
	if (!cmd->fn) {
		rc = cmd_version(buf, len);
		goto cleanup;
	}
	if (cw_conf_parse(buf, len, &p.conf, &p.err) < 0) {
		char version[16];

		/* SPEC.md "Error": cniVersion is the one the config gave. */
		rc = fail(&p, cw_conf_peek_version(buf, len, version, sizeof(version)));
		goto cleanup;
	}
	cw_log_set_level(p.conf->log_level);
	if (p.conf->log_file[0])
		cw_log_open(p.conf->log_file, "causeway");
	cw_log_capture_libbpf();

	if (p.conf->version < cmd->since) {
		cw_error_set(&p.err, CW_ERR_INCOMPATIBLE_VERSION, "%s is not defined in CNI %s",
			     cmd->name, p.conf->cni_version);
		rc = fail(&p, p.conf->cni_version);
		goto cleanup;
	}
	if (cmd->env != NEED_NONE &&
	    cw_args_from_env(&p.args, cmd->env == NEED_ATTACHMENT_NETNS, &p.err) < 0) {
		rc = fail(&p, p.conf->cni_version);
		goto cleanup;
	}
	if (cmd->env == NEED_NONE) {
		p.args.command = name;
		p.args.path = getenv("CNI_PATH") ? getenv("CNI_PATH") : "";
		p.args.netns = "";
	}
	pr_debug("%s %s/%s netns=%s", cmd->name, p.args.container_id ? p.args.container_id : "-",
		 p.args.ifname ? p.args.ifname : "-", p.args.netns);
	if (cmd->fn(&p) < 0) {
		pr_err("%s failed: %s", cmd->name, p.err.msg);
		rc = fail(&p, p.conf->cni_version);
		goto cleanup;
	}
	print_doc(p.out);
	p.out = NULL;
	rc = 0;
cleanup:
	free(p.out);
	cw_conf_free(p.conf);
	free(buf);
	cw_log_close();
	return rc;
}
