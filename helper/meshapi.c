// SPDX-License-Identifier: Apache-2.0
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <causeway/log.h>
#include "etcdconf.h"
#include "kvstore.h"
#include "loop.h"
#include "meshapi.h"
#include "records.h"

struct meshapi {
	const struct cw_meshapi_opts *o;
	struct cw_kv *kv;
	struct cw_timer *t_config, *t_heartbeat, *t_gc;
	bool config_written;
	/* identities seen unreferenced by the previous scan: removed if still so */
	uint32_t *suspects;
	size_t n_suspects;
};

static void on_config(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	char key[128], val[160];

	(void)loop;
	snprintf(key, sizeof(key), CW_KEY_CLUSTER_CONFIG "%s", m->o->cluster);
	snprintf(val, sizeof(val),
		 "{\"id\":%u,\"capabilities\":{\"syncedCanaries\":true,\"maxConnectedClusters\":255}}",
		 m->o->cluster_id);
	if (cw_kv_put(m->kv, key, val, strlen(val), 0)) {
		pr_warn("mesh-apiserver: cannot write %s: %s", key, cw_kv_error(m->kv));
		return; /* periodic: tried again */
	}
	pr_info("mesh-apiserver: wrote %s = %s", key, val);
	m->config_written = true;
	cw_timer_disarm(m->t_config);
}

static void on_heartbeat(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	char now[64];
	time_t t = time(NULL);
	struct tm tm;

	(void)loop;
	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (cw_kv_put(m->kv, CW_KEY_HEARTBEAT, now, strlen(now), 0))
		pr_warn("mesh-apiserver: heartbeat: %s", cw_kv_error(m->kv));
}

struct gc_scan {
	struct meshapi *m;
	uint32_t *ids;
	char **labels;
	size_t n, cap;
	char **refs;          /* the labels of every value/ reference */
	size_t n_refs, cap_refs;
	int err;
};

static int collect_id(const struct cw_kv_pair *kv, void *arg)
{
	struct gc_scan *s = arg;
	uint32_t id;

	if (cw_identity_key_parse(kv->key, &id) || !cw_identity_in_cluster(id, s->m->o->cluster_id))
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		uint32_t *ni = realloc(s->ids, cap * sizeof(*ni));
		char **nl;

		if (!ni)
			return -ENOMEM;
		s->ids = ni;
		nl = realloc(s->labels, cap * sizeof(*nl));
		if (!nl)
			return -ENOMEM;
		s->labels = nl;
		s->cap = cap;
	}
	s->labels[s->n] = strdup(kv->value);
	if (!s->labels[s->n])
		return -ENOMEM;
	s->ids[s->n++] = id;
	return 0;
}

static int collect_ref(const struct cw_kv_pair *kv, void *arg)
{
	struct gc_scan *s = arg;
	const char *labels = kv->key + strlen(CW_KEY_VALUE);
	const char *slash = strrchr(labels, '/');

	if (!slash)
		return 0;
	if (s->n_refs == s->cap_refs) {
		size_t cap = s->cap_refs ? s->cap_refs * 2 : 64;
		char **nr = realloc(s->refs, cap * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		s->refs = nr;
		s->cap_refs = cap;
	}
	s->refs[s->n_refs] = strndup(labels, (size_t)(slash - labels));
	return s->refs[s->n_refs++] ? 0 : -ENOMEM;
}

/*
 * An id/<n> key lives as long as some node references its labels.  One
 * unreferenced scan is not enough (a node may be between allocating the id
 * and writing its reference, or re-publishing after a lost lease): the id
 * goes only when two scans a period apart both found it unreferenced.
 */
static void on_gc(struct cw_loop *loop, void *arg)
{
	struct meshapi *m = arg;
	struct gc_scan s = { .m = m };
	uint32_t *next = NULL;
	size_t n_next = 0;
	int rc;

	(void)loop;
	rc = cw_kv_list(m->kv, CW_KEY_ID, 1000, collect_id, &s, NULL);
	if (!rc)
		rc = cw_kv_list(m->kv, CW_KEY_VALUE, 1000, collect_ref, &s, NULL);
	if (rc) {
		pr_warn("mesh-apiserver: identity gc: %s", cw_kv_error(m->kv));
		goto out;
	}
	next = calloc(s.n ? s.n : 1, sizeof(*next));
	if (!next)
		goto out;
	for (size_t i = 0; i < s.n; i++) {
		bool referenced = false, suspect = false;
		char key[64];

		for (size_t j = 0; j < s.n_refs && !referenced; j++)
			referenced = strcmp(s.refs[j], s.labels[i]) == 0;
		if (referenced)
			continue;
		for (size_t j = 0; j < m->n_suspects && !suspect; j++)
			suspect = m->suspects[j] == s.ids[i];
		if (!suspect) {
			next[n_next++] = s.ids[i];
			continue;
		}
		snprintf(key, sizeof(key), CW_KEY_ID "%" PRIu32, s.ids[i]);
		if (cw_kv_delete(m->kv, key, false) == 0)
			pr_info("mesh-apiserver: identity %" PRIu32 " (%s) unreferenced, removed",
				s.ids[i], s.labels[i]);
	}
	free(m->suspects);
	m->suspects = next;
	m->n_suspects = n_next;
	next = NULL;
out:
	free(next);
	for (size_t i = 0; i < s.n; i++)
		free(s.labels[i]);
	for (size_t i = 0; i < s.n_refs; i++)
		free(s.refs[i]);
	free(s.ids);
	free(s.labels);
	free(s.refs);
}

static void on_signal(struct cw_loop *loop, int signo, void *arg)
{
	(void)signo;
	(void)arg;
	cw_loop_stop(loop);
}

int cw_meshapi_main(const struct cw_meshapi_opts *o)
{
	struct meshapi m = { .o = o };
	struct cw_etcd_conf conf = { 0 };
	struct cw_loop *loop = NULL;
	struct cw_kv_config kc;
	char err[512];
	int rc;

	rc = cw_etcd_conf_load(o->etcd_config, &conf, err, sizeof(err));
	if (rc) {
		pr_err("etcd config %s", err);
		return 1;
	}
	cw_etcd_conf_to_kv(&conf, &kc);
	kc.timeout_ms = 2000;
	rc = cw_kv_new(&kc, &m.kv);
	if (!rc)
		rc = cw_loop_new(&loop);
	if (!rc)
		rc = cw_timer_add(loop, 0, 10000, on_config, &m, &m.t_config);
	if (!rc)
		rc = cw_timer_add(loop, 0, (int64_t)o->heartbeat_s * 1000, on_heartbeat, &m,
				  &m.t_heartbeat);
	if (!rc)
		rc = cw_timer_add(loop, (int64_t)o->identity_gc_s * 1000,
				  (int64_t)o->identity_gc_s * 1000, on_gc, &m, &m.t_gc);
	if (!rc) {
		cw_loop_signal(loop, SIGTERM, on_signal, NULL);
		cw_loop_signal(loop, SIGINT, on_signal, NULL);
		pr_info("mesh-apiserver for cluster %s (id %u) running", o->cluster, o->cluster_id);
		rc = cw_loop_run(loop);
	}
	cw_timer_del(m.t_config);
	cw_timer_del(m.t_heartbeat);
	cw_timer_del(m.t_gc);
	free(m.suspects);
	cw_loop_free(loop);
	cw_kv_free(m.kv);
	cw_etcd_conf_clear(&conf);
	return rc ? 1 : 0;
}
