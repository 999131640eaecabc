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

/* Run the IPAM plugin with @stdin_buf; its stdout lands in *out. */
static int run_plugin(const struct cw_conf *conf, const struct cw_args *args, const char *command,
		      const char *stdin_buf, size_t stdin_len, char **stdout_buf, size_t *out_len,
		      struct cw_error *err)
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
	while (off < stdin_len) {
		ssize_t w = write(in[1], stdin_buf + off, stdin_len - off);

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
	*stdout_buf = buf;
	*out_len = len;
	buf = NULL;
	rc = 0;
cleanup:
	cw_close(in[0]);
	cw_close(in[1]);
	cw_close(out[0]);
	cw_close(out[1]);
	free(buf);
	return rc;
}

int cw_delegate(const struct cw_conf *conf, const struct cw_args *args, const char *command,
		struct cw_result *result, struct cw_error *err)
{
	char *out = NULL;
	size_t len = 0;
	int rc;

	rc = run_plugin(conf, args, command, conf->raw, conf->raw_len, &out, &len, err);
	if (rc == 0 && result && (!out || cw_result_parse(out, len, result, err) < 0)) {
		cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM plugin %s returned no usable result",
			     conf->ipam_type);
		rc = -1;
	}
	free(out);
	return rc;
}

/* The newest version both we and the IPAM plugin speak, from its VERSION. */
static int ipam_best_version(const struct cw_conf *conf, const struct cw_args *args, char *best,
			     size_t len, struct cw_error *err)
{
	static const char *const ours[] = { "1.1.0", "1.0.0", "0.4.0", "0.3.1" };
	char in[64], *out = NULL;
	size_t out_len = 0;
	cJSON *o = NULL;
	const cJSON *list, *it;
	int rc = -1;

	snprintf(in, sizeof(in), "{\"cniVersion\":\"%s\"}", conf->cni_version);
	if (run_plugin(conf, args, "VERSION", in, strlen(in), &out, &out_len, err) < 0)
		return -1;
	o = cJSON_ParseWithLength(out, out_len);
	list = cJSON_GetObjectItemCaseSensitive(o, "supportedVersions");
	for (size_t i = 0; rc && i < sizeof(ours) / sizeof(ours[0]); i++) {
		cJSON_ArrayForEach(it, list) {
			if (cJSON_IsString(it) && strcmp(it->valuestring, ours[i]) == 0) {
				snprintf(best, len, "%s", ours[i]);
				rc = 0;
				break;
			}
		}
	}
	if (rc)
		cw_error_set(err, CW_ERR_IPAM_PLUGIN, "IPAM plugin %s shares no CNI version with us",
			     conf->ipam_type);
	cJSON_Delete(o);
	free(out);
	return rc;
}

int cw_delegate_gc(const struct cw_conf *conf, const struct cw_args *args,
		   const struct cw_attachment *stale, size_t n_stale, struct cw_error *err)
{
	char best[16], *doc = NULL, *out = NULL;
	cJSON *o = NULL;
	size_t out_len;
	int rc = 0;

	if (ipam_best_version(conf, args, best, sizeof(best), err) < 0)
		return -1;
	if (strcmp(best, "1.1.0") == 0)
		return cw_delegate(conf, args, "GC", NULL, err);

	/*
	 * The plugin predates GC (host-local from Debian's plugins 1.1 does):
	 * what GC would free is exactly what a DEL of each collected
	 * attachment frees, so send those, in a version it speaks.
	 */
	o = cJSON_ParseWithLength(conf->raw, conf->raw_len);
	if (!o)
		return cw_error_set(err, CW_ERR_IO, "GC: cannot re-read the config");
	cJSON_DeleteItemFromObjectCaseSensitive(o, "cni.dev/valid-attachments");
	cJSON_DeleteItemFromObjectCaseSensitive(o, "cni.dev/attachments");
	cJSON_ReplaceItemInObjectCaseSensitive(o, "cniVersion", cJSON_CreateString(best));
	doc = cJSON_PrintUnformatted(o);
	for (size_t i = 0; doc && i < n_stale; i++) {
		setenv("CNI_CONTAINERID", stale[i].container_id, 1);
		setenv("CNI_IFNAME", stale[i].ifname, 1);
		setenv("CNI_NETNS", "", 1);
		if (run_plugin(conf, args, "DEL", doc, strlen(doc), &out, &out_len, err) < 0)
			rc = -1;
		free(out);
		out = NULL;
	}
	cJSON_Delete(o);
	free(doc);
	return rc;
}
