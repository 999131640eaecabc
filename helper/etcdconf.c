// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <causeway/util.h>
#include "etcdconf.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* A plain or quoted scalar; a plain one ends at " #" (a comment). */
static int scalar(char *s, char **out)
{
	size_t n;

	s = trim(s);
	n = strlen(s);
	if (n && (s[0] == '"' || s[0] == '\'')) {
		char *close = strchr(s + 1, s[0]), *rest;

		if (!close)
			return -EINVAL;
		rest = trim(close + 1);
		/* After the closing quote: nothing, or a comment. */
		if (*rest != '\0' && *rest != '#')
			return -EINVAL;
		*close = '\0';
		s++;
	} else {
		char *c = strstr(s, " #");

		if (c)
			*c = '\0';
		s = trim(s);
	}
	*out = strdup(s);
	return *out ? 0 : -ENOMEM;
}

static int add_endpoint(struct cw_etcd_conf *c, char *s, unsigned int line, char *err,
			size_t errlen)
{
	char *v = NULL;

	if (scalar(s, &v))
		return ERR("line %u: malformed endpoint", line);
	if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) {
		int rc = ERR("line %u: endpoint \"%s\" is not an http(s) URL", line, v);

		free(v);
		return rc;
	}
	if (c->n_endpoints == CW_KV_MAX_ENDPOINTS) {
		free(v);
		return ERR("line %u: more than %d endpoints", line, CW_KV_MAX_ENDPOINTS);
	}
	c->endpoints[c->n_endpoints++] = v;
	return 0;
}

int cw_etcd_conf_parse(const char *buf, size_t len, struct cw_etcd_conf *out, char *err,
		       size_t errlen)
{
	char *text = strndup(buf, len), *next, *ln;
	bool in_list = false, have_endpoints = false;
	unsigned int line = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (!text)
		return -ENOMEM;
	if (memchr(buf, '\0', len)) {
		free(text);
		return ERR("etcd config contains a NUL byte");
	}
	/* Line by line, blank ones included, so messages name the right line. */
	for (ln = text; ln && !rc; ln = next) {
		char *s, *colon, *key, *val, **slot = NULL;

		next = strchr(ln, '\n');
		if (next)
			*next++ = '\0';
		s = trim(ln);
		line++;
		if (*s == '\0' || *s == '#' || strcmp(s, "---") == 0)
			continue;
		if (*s == '-' && (s[1] == ' ' || s[1] == '\0')) {
			if (!in_list)
				rc = ERR("line %u: a list item outside \"endpoints:\"", line);
			else
				rc = add_endpoint(out, s + 1, line, err, errlen);
			continue;
		}
		in_list = false;
		if (ln[0] == ' ' || ln[0] == '\t') {
			rc = ERR("line %u: unexpected indentation", line);
			continue;
		}
		colon = strchr(s, ':');
		if (!colon) {
			rc = ERR("line %u: expected \"key: value\"", line);
			continue;
		}
		*colon = '\0';
		key = trim(s);
		val = trim(colon + 1);
		if (strcmp(key, "endpoints") == 0) {
			if (have_endpoints) {
				rc = ERR("line %u: \"endpoints\" given twice", line);
				continue;
			}
			have_endpoints = true;
			if (*val == '\0') {
				in_list = true;
			} else if (*val == '[' && val[strlen(val) - 1] == ']') {
				char *save2 = NULL, *item;

				val[strlen(val) - 1] = '\0';
				for (item = strtok_r(val + 1, ",", &save2); item && !rc;
				     item = strtok_r(NULL, ",", &save2))
					rc = add_endpoint(out, item, line, err, errlen);
			} else {
				rc = add_endpoint(out, val, line, err, errlen);
			}
			continue;
		}
		if (strcmp(key, "trusted-ca-file") == 0)
			slot = &out->ca_file;
		else if (strcmp(key, "cert-file") == 0)
			slot = &out->cert_file;
		else if (strcmp(key, "key-file") == 0)
			slot = &out->key_file;
		else if (strcmp(key, "username") == 0)
			slot = &out->username;
		else if (strcmp(key, "password") == 0)
			slot = &out->password;
		if (!slot)
			continue; /* Cilium's other settings: not ours to judge */
		if (*slot) {
			rc = ERR("line %u: \"%s\" given twice", line, key);
			continue;
		}
		if (scalar(val, slot))
			rc = ERR("line %u: malformed value for \"%s\"", line, key);
	}
	free(text);
	if (!rc && out->n_endpoints == 0)
		rc = ERR("etcd config has no endpoints");
	if (!rc && (!out->cert_file) != (!out->key_file))
		rc = ERR("etcd config: cert-file and key-file go together");
	if (!rc && (!out->username) != (!out->password))
		rc = ERR("etcd config: username and password go together");
	if (rc)
		cw_etcd_conf_clear(out);
	return rc;
}

int cw_etcd_conf_load(const char *path, struct cw_etcd_conf *out, char *err, size_t errlen)
{
	char *buf = NULL, inner[256];
	size_t len = 0;
	int rc = cw_read_file(path, &buf, &len);

	if (rc) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	rc = cw_etcd_conf_parse(buf, len, out, inner, sizeof(inner));
	if (rc)
		snprintf(err, errlen, "%s: %s", path, inner);
	free(buf);
	return rc;
}

void cw_etcd_conf_clear(struct cw_etcd_conf *c)
{
	for (size_t i = 0; i < c->n_endpoints; i++)
		free(c->endpoints[i]);
	free(c->ca_file);
	free(c->cert_file);
	free(c->key_file);
	free(c->username);
	free(c->password);
	memset(c, 0, sizeof(*c));
}

void cw_etcd_conf_to_kv(const struct cw_etcd_conf *c, struct cw_kv_config *kv)
{
	memset(kv, 0, sizeof(*kv));
	for (size_t i = 0; i < c->n_endpoints; i++)
		kv->endpoints[i] = c->endpoints[i];
	kv->n_endpoints = c->n_endpoints;
	kv->ca_file = c->ca_file;
	kv->cert_file = c->cert_file;
	kv->key_file = c->key_file;
	kv->username = c->username;
	kv->password = c->password;
}
