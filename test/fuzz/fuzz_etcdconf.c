// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer harness for the etcd client config parser: the files of the
 * cilium-clustermesh Secret are written by whoever manages the remote
 * clusters, so they are outside input.  The parser's .c is included
 * directly, as in fuzz_conf.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../helper/etcdconf.c"
#include "../../lib/util.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool all_null(const struct cw_etcd_conf *c)
{
	return c->n_endpoints == 0 && !c->ca_file && !c->cert_file && !c->key_file &&
	       !c->username && !c->password;
}

/* A quote character the value does not contain, or 0. */
static char quote_for(const char *v)
{
	return !strchr(v, '"') ? '"' : !strchr(v, '\'') ? '\'' : 0;
}

/* Appends "key: <quoted value>\n"; false when the value cannot be quoted. */
static bool emit(char **out, size_t *len, size_t *cap, const char *prefix, const char *v)
{
	char q = quote_for(v);
	size_t need = strlen(prefix) + strlen(v) + 4;

	if (!q)
		return false;
	if (*len + need + 1 > *cap) {
		size_t ncap = (*len + need + 1) * 2;
		char *n = realloc(*out, ncap);

		if (!n)
			abort();
		*out = n;
		*cap = ncap;
	}
	*len += (size_t)snprintf(*out + *len, *cap - *len, "%s%c%s%c\n", prefix, q, v, q);
	return true;
}

/* What was accepted, written back as a file of our own, parses to the same. */
static void round_trip(const struct cw_etcd_conf *c)
{
	const struct { const char *prefix; const char *v; } fields[] = {
		{ "trusted-ca-file: ", c->ca_file }, { "cert-file: ", c->cert_file },
		{ "key-file: ", c->key_file },       { "username: ", c->username },
		{ "password: ", c->password },
	};
	struct cw_etcd_conf again;
	char *out = strdup("endpoints:\n"), err[256];
	size_t len = 11, cap = 12;
	bool ok = true;

	if (!out)
		abort();
	for (size_t i = 0; i < c->n_endpoints; i++)
		ok = emit(&out, &len, &cap, "- ", c->endpoints[i]) && ok;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (fields[i].v)
			ok = emit(&out, &len, &cap, fields[i].prefix, fields[i].v) && ok;
	if (!ok) {
		free(out);
		return;
	}
	if (cw_etcd_conf_parse(out, len, &again, err, sizeof(err)) != 0)
		abort();
	if (again.n_endpoints != c->n_endpoints)
		abort();
	for (size_t i = 0; i < c->n_endpoints; i++)
		if (strcmp(again.endpoints[i], c->endpoints[i]))
			abort();
#define SAME(f) ((!again.f && !c->f) || (again.f && c->f && !strcmp(again.f, c->f)))
	if (!SAME(ca_file) || !SAME(cert_file) || !SAME(key_file) || !SAME(username) ||
	    !SAME(password))
		abort();
#undef SAME
	cw_etcd_conf_clear(&again);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact-size copy, so reading one byte past @size is caught by ASan */
	char *buf = malloc(size ? size : 1), err[256];
	struct cw_etcd_conf c;
	struct cw_kv_config kv;
	int rc;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	memset(err, 0, sizeof(err));
	rc = cw_etcd_conf_parse(buf, size, &c, err, sizeof(err));
	if (rc) {
		/* refused: a message, and nothing left for the caller to free */
		if ((rc != -EINVAL && rc != -ENOMEM) || (rc == -EINVAL && !err[0]) || !all_null(&c))
			abort();
		free(buf);
		return 0;
	}
	if (c.n_endpoints < 1 || c.n_endpoints > CW_KV_MAX_ENDPOINTS)
		abort();
	for (size_t i = 0; i < c.n_endpoints; i++)
		if (strncmp(c.endpoints[i], "http://", 7) && strncmp(c.endpoints[i], "https://", 8))
			abort();
	if (!c.cert_file != !c.key_file || !c.username != !c.password)
		abort();
	cw_etcd_conf_to_kv(&c, &kv);
	if (kv.n_endpoints != c.n_endpoints || kv.cert_file != c.cert_file ||
	    kv.password != c.password)
		abort();
	for (size_t i = 0; i < c.n_endpoints; i++)
		if (kv.endpoints[i] != c.endpoints[i])
			abort();
	round_trip(&c);
	cw_etcd_conf_clear(&c);
	if (!all_null(&c))
		abort();
	free(buf);
	return 0;
}
