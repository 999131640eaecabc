// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include <causeway/log.h>
#include <causeway/util.h>
#include "delegate.h"

static int find_plugin(const char *type, const char *cni_path, char *out, size_t len)
{
	const char *p = cni_path;

	while (p && *p) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n && snprintf(out, len, "%.*s/%s", (int)n, p, type) < (int)len &&
		    access(out, X_OK) == 0)
			return 0;
		p = end ? end + 1 : NULL;
	}
	return -ENOENT;
}

/* Reports the delegate's own error document when it printed one. */
static void report_failure(const char *type, const char *command, const char *out, int status,
			   struct cw_error *err)
{
	cJSON *o = cJSON_Parse(out);
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(o, "code");
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(o, "msg");

	if (cJSON_IsNumber(code) && cJSON_IsString(msg))
		cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM plugin %s %s failed (code %d): %s", type,
			     command, code->valueint, msg->valuestring);
	else
		cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM plugin %s %s failed (exit status %d)", type,
			     command, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	cJSON_Delete(o);
}

int cw_delegate(const struct cw_conf *conf, const struct cw_args *args, const char *command,
		struct cw_result *result, struct cw_error *err)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, status = 0, rc = -1;
	char path[PATH_MAX], *buf = NULL;
	size_t len = 0, off = 0;
	pid_t pid;

	if (find_plugin(conf->ipam_type, args->path, path, sizeof(path)))
		return cw_error_set(err, CW_ERR_IPAM_PLUGIN,
				    "IPAM plugin \"%s\" not found in CNI_PATH \"%s\"", conf->ipam_type,
				    args->path);
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		cw_error_set(err, CW_ERR_IO, "cannot create pipes for IPAM plugin: %s", strerror(errno));
		goto cleanup;
	}
	pid = fork();
	if (pid < 0) {
		cw_error_set(err, CW_ERR_IO, "cannot fork IPAM plugin: %s", strerror(errno));
		goto cleanup;
	}
	if (pid == 0) {
		/* stderr stays ours so the delegate's logs reach the runtime */
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		setenv("CNI_COMMAND", command, 1);
		execl(path, conf->ipam_type, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	in[0] = -1;
	close(out[1]);
	out[1] = -1;
	while (off < conf->raw_len) {
		ssize_t w = write(in[1], conf->raw + off, conf->raw_len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			break; /* the child exited early; its status tells why */
		off += (size_t)w;
	}
	close(in[1]);
	in[1] = -1;
	if (cw_read_fd(out[0], 1 << 20, &buf, &len))
		buf = NULL;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		report_failure(conf->ipam_type, command, buf ? buf : "", status, err);
		goto cleanup;
	}
	if (result) {
		if (!buf || cw_result_parse(buf, len, result, err) < 0) {
			cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM plugin %s returned no usable result",
				     conf->ipam_type);
			goto cleanup;
		}
	}
	rc = 0;
cleanup:
	cw_close(in[0]);
	cw_close(in[1]);
	cw_close(out[0]);
	cw_close(out[1]);
	free(buf);
	return rc;
}
