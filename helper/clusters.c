// SPDX-License-Identifier: Apache-2.0
/*
 * Remote clusters: the directory laid out like Cilium's cilium-clustermesh
 * Secret, one etcd config per remote cluster named after it.  The directory
 * is watched with inotify (a Secret volume swaps a "..data" symlink, so any
 * event means "read it again"): a new file connects, a removed one
 * disconnects and its state leaves the maps on the next reconcile, a
 * changed one reconnects.
 *
 * A remote is read through the same watch code as the local store.  Before
 * anything else its cilium/cluster-config/<name> must give an id in 1..255
 * that is neither ours nor another connected cluster's; otherwise the
 * cluster is refused, with the reason in `causeway-helper clusters`.
 */
#include <dirent.h>
#include <errno.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include <causeway/log.h>
#include <causeway/util.h>
#include "node.h"
#include "services.h"

#define RETRY_BASE_MS 500
#define RETRY_CAP_MS 30000

const char *cw_remote_state_name(enum cw_remote_state s)
{
	switch (s) {
	case CW_REMOTE_CONNECTING: return "connecting";
	case CW_REMOTE_REFUSED: return "refused";
	case CW_REMOTE_CONNECTED: return "connected";
	}
	return "?";
}

static void remote_free(struct cw_remote *r)
{
	if (!r)
		return;
	cw_kv_watch_free(r->w_nodes);
	cw_kv_watch_free(r->w_ips);
	cw_kv_watch_free(r->w_ids);
	cw_kv_watch_free(r->w_svcs);
	cw_kv_watch_free(r->w_synced);
	cw_kv_watch_free(r->w_heartbeat);
	cw_kv_req_free(r->probe);
	cw_kv_req_free(r->connect);
	cw_kv_free(r->kv);
	cw_etcd_conf_clear(&r->conf);
	cw_timer_del(r->t_retry);
	cw_timer_del(r->t_health);
	free(r->file_text);
	free(r);
}

/*
 * What a change of a remote's key asks for: a pod record is applied alone,
 * a service record reconciles the service maps alone, identities and the
 * heartbeat touch no map (the health timer reads the heartbeat), the rest
 * (nodes, synced canaries) the full reconcile.
 */
static bool watch_synced(const struct cw_kv_watch *w);

static void remote_changed(struct cw_remote *r, const struct cw_kv_pair *kv, bool put)
{
	if (strncmp(kv->key, CW_KEY_IPS, strlen(CW_KEY_IPS)) == 0) {
		if (!cw_remote_usable(r))
			return;
		if (put)
			cw_datapath_ip_put(r->n, r->id, kv);
		else
			cw_datapath_ip_del(r->n, r->id, kv);
	} else if (strncmp(kv->key, CW_KEY_SERVICES, strlen(CW_KEY_SERVICES)) == 0) {
		/* While the first listing arrives, its end (synced) reconciles once. */
		if (watch_synced(r->w_svcs))
			cw_node_services_soon(r->n);
	} else if (strncmp(kv->key, CW_KEY_ID, strlen(CW_KEY_ID)) != 0 &&
		   strcmp(kv->key, CW_KEY_HEARTBEAT) != 0) {
		cw_node_reconcile_soon(r->n);
	}
}

static void on_remote_put(void *arg, const struct cw_kv_pair *kv, const struct cw_kv_pair *old)
{
	struct cw_remote *r = arg;

	(void)old;
	/* A refused node record still goes to the reconcile, which reports overlaps. */
	if (!cw_mesh_record_ok(r->n, r->name, r->id, kv) &&
	    strncmp(kv->key, CW_KEY_NODES, strlen(CW_KEY_NODES)) != 0)
		return;
	remote_changed(r, kv, true);
}

static void on_remote_del(void *arg, const struct cw_kv_pair *old)
{
	remote_changed(arg, old, false);
}

static void on_remote_synced(void *arg)
{
	struct cw_remote *r = arg;

	pr_info("cluster %s: initial listing received", r->name);
	cw_node_reconcile_soon(r->n);
}

static const struct cw_kv_watch_ops remote_ops = { on_remote_put, on_remote_del, on_remote_synced };

__attribute__((format(printf, 3, 4)))
static void remote_state(struct cw_remote *r, enum cw_remote_state s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	if (r->state != s || s != CW_REMOTE_CONNECTED)
		pr_info("cluster %s: %s%s%s", r->name, cw_remote_state_name(s), r->why[0] ? ": " : "",
			r->why);
	r->state = s;
}

/* The id in cilium/cluster-config/<name>, checked against ours and the others'. */
static int check_cluster_config(struct cw_remote *r, const struct cw_kv_pair *p)
{
	cJSON *o = cJSON_ParseWithLength(p->value, p->value_len);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
	double v = cJSON_IsNumber(id) ? id->valuedouble : -1;
	int rc = -EINVAL;

	if (!cJSON_IsObject(o)) {
		remote_state(r, CW_REMOTE_REFUSED, "cilium/cluster-config/%s is not a JSON object",
			     r->name);
	} else if (v < 1 || v > 255 || v != (double)(unsigned int)v) {
		remote_state(r, CW_REMOTE_REFUSED, "cluster id %g is out of range 1..255", v);
	} else if ((unsigned int)v == r->n->o.cluster_id) {
		remote_state(r, CW_REMOTE_REFUSED, "cluster id %u is this cluster's own",
			     (unsigned int)v);
	} else {
		rc = 0;
		for (struct cw_remote *o2 = r->n->remotes; o2; o2 = o2->next)
			if (o2 != r && o2->state == CW_REMOTE_CONNECTED && o2->id == (unsigned int)v) {
				remote_state(r, CW_REMOTE_REFUSED,
					     "cluster id %u is already used by connected cluster %s",
					     (unsigned int)v, o2->name);
				rc = -EEXIST;
			}
		if (!rc) {
			const cJSON *caps = cJSON_GetObjectItemCaseSensitive(o, "capabilities");

			r->id = (unsigned int)v;
			r->canaries = cJSON_IsTrue(
				cJSON_GetObjectItemCaseSensitive(caps, "syncedCanaries"));
		}
	}
	cJSON_Delete(o);
	return rc;
}

/* The cluster-config answered: check it, then mirror the cluster. */
static void on_cluster_config(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct cw_remote *r = arg;
	struct cw_kv_range_resp resp = { 0 };
	char key[128], prefix[128], err[256];

	snprintf(key, sizeof(key), CW_KEY_CLUSTER_CONFIG "%s", r->name);
	if (!rc && cw_kvp_parse_range(body, len, &resp, err, sizeof(err))) {
		rc = -EPROTO;
		why = err;
	}
	if (!rc && !resp.n) {
		/* A cluster that has not published itself yet, or a misnamed file. */
		remote_state(r, CW_REMOTE_CONNECTING, "%s is absent: no cluster named %s there (yet)",
			     key, r->name);
		rc = -ENOENT;
	} else if (rc) {
		remote_state(r, CW_REMOTE_CONNECTING, "%s", why);
	}
	if (rc) {
		cw_kvp_range_clear(&resp);
		cw_timer_arm(r->t_retry, cw_backoff_ms(r->attempt++, RETRY_BASE_MS, RETRY_CAP_MS));
		return;
	}
	rc = check_cluster_config(r, &resp.kvs[0]);
	cw_kvp_range_clear(&resp);
	if (rc) {
		/* An id clash may clear when the other cluster goes: look again later. */
		cw_timer_arm(r->t_retry, RETRY_CAP_MS);
		cw_node_reconcile_soon(r->n);
		return;
	}
	snprintf(prefix, sizeof(prefix), CW_KEY_NODES "%s/", r->name);
	rc = cw_kv_watch_start(r->n->loop, r->kv, prefix, &remote_ops, r, &r->w_nodes);
	if (!rc)
		rc = cw_kv_watch_start(r->n->loop, r->kv, CW_KEY_IPS, &remote_ops, r, &r->w_ips);
	if (!rc)
		rc = cw_kv_watch_start(r->n->loop, r->kv, CW_KEY_ID, &remote_ops, r, &r->w_ids);
	snprintf(prefix, sizeof(prefix), CW_KEY_SERVICES "%s/", r->name);
	if (!rc)
		rc = cw_kv_watch_start(r->n->loop, r->kv, prefix, &remote_ops, r, &r->w_svcs);
	snprintf(prefix, sizeof(prefix), CW_KEY_SYNCED "%s/", r->name);
	if (!rc)
		rc = cw_kv_watch_start(r->n->loop, r->kv, prefix, &remote_ops, r, &r->w_synced);
	if (!rc)
		rc = cw_kv_watch_start(r->n->loop, r->kv, CW_KEY_HEARTBEAT, &remote_ops, r,
				       &r->w_heartbeat);
	if (rc) {
		remote_state(r, CW_REMOTE_REFUSED, "cannot start watches: %s", strerror(-rc));
		return;
	}
	r->attempt = 0;
	remote_state(r, CW_REMOTE_CONNECTED, "id %u", r->id);
}

/*
 * Connecting starts with a read of cilium/cluster-config/<name>, on the
 * loop (cw_kv_req): a remote etcd that accepts connections and answers
 * nothing costs this node nothing but the wait, however often it retries.
 */
static void on_retry(struct cw_loop *loop, void *arg)
{
	struct cw_remote *r = arg;
	struct cw_kv_config kc;
	char key[128];
	int rc;

	(void)loop;
	if (!r->kv) {
		cw_etcd_conf_to_kv(&r->conf, &kc);
		kc.timeout_ms = 2000;
		rc = cw_kv_new(&kc, &r->kv);
		if (rc) {
			remote_state(r, CW_REMOTE_REFUSED, "cannot set up the client: %s", strerror(-rc));
			return;
		}
	}
	if (!r->connect && (rc = cw_kv_req_new(r->n->loop, r->kv, &r->connect))) {
		remote_state(r, CW_REMOTE_REFUSED, "cannot set up the client: %s", strerror(-rc));
		return;
	}
	if (cw_kv_req_busy(r->connect))
		return; /* its answer decides */
	snprintf(key, sizeof(key), CW_KEY_CLUSTER_CONFIG "%s", r->name);
	rc = cw_kv_req_send(r->connect, "/v3/kv/range", cw_kvp_range_req(key, NULL, 0, 0, false),
			    CW_REMOTE_PROBE_TIMEOUT_MS, on_cluster_config, r);
	if (rc) {
		remote_state(r, CW_REMOTE_CONNECTING, "cannot read %s: %s", key,
			     cw_kv_error(r->kv)[0] ? cw_kv_error(r->kv) : strerror(-rc));
		cw_timer_arm(r->t_retry, cw_backoff_ms(r->attempt++, RETRY_BASE_MS, RETRY_CAP_MS));
	}
}

/* --- settled, usable, evicted ------------------------------------------------------ */

static bool watch_synced(const struct cw_kv_watch *w)
{
	struct cw_kv_watch_status st;

	if (!w)
		return false;
	cw_kv_watch_get_status(w, &st);
	return st.synced;
}

/* The watch of @r that mirrors @prefix, and the kind its synced canary names. */
static const struct cw_kv_watch *watch_of(const struct cw_remote *r, const char *prefix,
					  const char **kind)
{
	if (strncmp(prefix, CW_KEY_NODES, strlen(CW_KEY_NODES)) == 0)
		return *kind = "nodes", r->w_nodes;
	if (strncmp(prefix, CW_KEY_IPS, strlen(CW_KEY_IPS)) == 0)
		return *kind = "ip", r->w_ips;
	if (strncmp(prefix, CW_KEY_IDENTITIES, strlen(CW_KEY_IDENTITIES)) == 0)
		return *kind = "identities", r->w_ids;
	if (strncmp(prefix, CW_KEY_SERVICES, strlen(CW_KEY_SERVICES)) == 0)
		return *kind = "services", r->w_svcs;
	return *kind = NULL, NULL;
}

bool cw_remote_settled(const struct cw_remote *r, const char *prefix)
{
	const struct cw_kv_watch *w;
	const char *kind;
	char canary[160];

	if (r->state != CW_REMOTE_CONNECTED)
		return false;
	w = watch_of(r, prefix, &kind);
	if (!kind || !watch_synced(w))
		return false;
	if (!r->canaries)
		return true;
	snprintf(canary, sizeof(canary), CW_KEY_SYNCED "%s/cilium/state/%s/v1", r->name, kind);
	return watch_synced(r->w_synced) && cw_kv_watch_lookup(r->w_synced, canary);
}

bool cw_remote_usable(const struct cw_remote *r)
{
	return r->state == CW_REMOTE_CONNECTED && !r->evicted;
}

struct cw_remote *cw_remote_by_id(struct cw_node *n, unsigned int id)
{
	for (struct cw_remote *r = n->remotes; r; r = r->next)
		if (r->id == id && r->state != CW_REMOTE_REFUSED)
			return r;
	return NULL;
}

bool cw_cluster_pending(struct cw_node *n, unsigned int cluster_id, const char *prefix)
{
	struct cw_remote *r;

	if (cluster_id == n->o.cluster_id)
		return false;
	r = cw_remote_by_id(n, cluster_id);
	if (r)
		return !r->evicted && !cw_remote_settled(r, prefix);
	/* A configured cluster not reached yet may be the owner. */
	for (r = n->remotes; r; r = r->next)
		if (r->state == CW_REMOTE_CONNECTING && !r->id && !r->evicted)
			return true;
	return false;
}

/* "2026-11-23T21:07:47Z", as the mesh-apiserver writes it; -1 if not that. */
static time_t heartbeat_time(const struct cw_kv_pair *kv)
{
	char buf[64];
	struct tm tm = { 0 };
	const char *end;

	if (!kv || kv->value_len >= sizeof(buf))
		return -1;
	memcpy(buf, kv->value, kv->value_len);
	buf[kv->value_len] = '\0';
	end = strptime(buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return end && !*end ? timegm(&tm) : -1;
}

/*
 * A heartbeat is rewritten every 60 s by the cluster's mesh-apiserver; one
 * older than two periods means nobody keeps that store up to date (its
 * mesh-apiserver is gone, or the store hangs without closing our streams).
 */
#define CW_HEARTBEAT_STALE_S 120

/*
 * Once a second: is the cluster reachable, its streams open and its
 * heartbeat fresh?  A cluster that has not
 * been for --remote-eviction-timeout is evicted: its routes, endpoints and
 * backends leave the maps (it was kept until then so that traffic kept
 * flowing through a restart of its etcd).  It comes back by itself.
 */
static void on_probe(int rc, const char *body, size_t len, const char *why, void *arg)
{
	struct cw_remote *r = arg;

	(void)body;
	(void)len;
	if (rc && !r->probe_why[0])
		pr_debug("cluster %s: %s", r->name, why);
	snprintf(r->probe_why, sizeof(r->probe_why), "%s", rc ? why : "");
}

/* Reads the remote's store now and then, off the loop's critical path. */
static void probe(struct cw_remote *r, int64_t now)
{
	int rc;

	if (now - r->probe_ms < CW_REMOTE_PROBE_MS || cw_kv_req_busy(r->probe))
		return;
	if (!r->probe && cw_kv_req_new(r->n->loop, r->kv, &r->probe))
		return;
	/* a count: the answer is small whatever the key holds */
	rc = cw_kv_req_send(r->probe, "/v3/kv/range",
			    cw_kvp_range_req(CW_KEY_HEARTBEAT, NULL, 1, 0, true),
			    CW_REMOTE_PROBE_TIMEOUT_MS, on_probe, r);
	r->probe_ms = now;
	if (rc)
		snprintf(r->probe_why, sizeof(r->probe_why), "cannot read the store: %s",
			 cw_kv_error(r->kv)[0] ? cw_kv_error(r->kv) : strerror(-rc));
}

static void on_health(struct cw_loop *loop, void *arg)
{
	struct cw_remote *r = arg;
	struct cw_node *n = r->n;
	int64_t now = cw_loop_now_ms(), limit = (int64_t)n->o.remote_eviction_s * 1000;
	char why[256] = "";

	(void)loop;
	if (r->state == CW_REMOTE_REFUSED)
		return; /* nothing of it is used anyway */
	if (r->state == CW_REMOTE_CONNECTING) {
		snprintf(why, sizeof(why), "not connected: %.200s", r->why);
	} else {
		struct cw_kv_watch *ws[] = { r->w_nodes, r->w_ips, r->w_ids, r->w_svcs, r->w_synced,
					     r->w_heartbeat };
		time_t hb = heartbeat_time(cw_kv_watch_lookup(r->w_heartbeat, CW_KEY_HEARTBEAT));

		for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]) && !why[0]; i++) {
			struct cw_kv_watch_status st;

			cw_kv_watch_get_status(ws[i], &st);
			/* A watch still making its first listing has not been lost. */
			if (!st.streaming && (st.synced || st.error[0]))
				snprintf(why, sizeof(why), "etcd unreachable: %.200s",
					 st.error[0] ? st.error : "stream closed");
		}
		probe(r, now);
		if (!why[0] && r->probe_why[0])
			snprintf(why, sizeof(why), "etcd does not answer: %.200s", r->probe_why);
		if (!why[0] && hb > 0 && time(NULL) - hb > CW_HEARTBEAT_STALE_S)
			snprintf(why, sizeof(why), "its heartbeat is %lld s old (stale after %d s)",
				 (long long)(time(NULL) - hb), CW_HEARTBEAT_STALE_S);
	}
	if (!why[0]) {
		if (r->lost_ms)
			pr_info("cluster %s: healthy again%s", r->name,
				r->evicted ? "; its state returns to the maps" : "");
		r->lost_ms = 0;
		r->lost_why[0] = '\0';
		if (r->evicted) {
			r->evicted = false;
			cw_node_reconcile_soon(n);
		}
		return;
	}
	snprintf(r->lost_why, sizeof(r->lost_why), "%s", why);
	if (!r->lost_ms) {
		r->lost_ms = now;
		pr_warn("cluster %s: %s; its last state is kept for %d s", r->name, why,
			n->o.remote_eviction_s);
	}
	if (!r->evicted && now - r->lost_ms >= limit) {
		r->evicted = true;
		n->c.evictions++;
		pr_warn("cluster %s: unreachable for %d s (%s): evicted, its routes and backends "
			"are withdrawn", r->name, n->o.remote_eviction_s, why);
		cw_node_reconcile_soon(n);
	}
}

static struct cw_remote *remote_find(struct cw_node *n, const char *name)
{
	for (struct cw_remote *r = n->remotes; r; r = r->next)
		if (strcmp(r->name, name) == 0)
			return r;
	return NULL;
}

static int remote_add(struct cw_node *n, const char *name, char *text, size_t len)
{
	struct cw_remote *r = calloc(1, sizeof(*r));
	char err[256];
	int rc;

	if (!r)
		return -ENOMEM;
	r->n = n;
	snprintf(r->name, sizeof(r->name), "%.*s", (int)sizeof(r->name) - 1, name);
	r->file_text = text;
	r->seen = true;
	rc = cw_timer_add(n->loop, -1, 0, on_retry, r, &r->t_retry);
	if (!rc)
		rc = cw_timer_add(n->loop, 1000, 1000, on_health, r, &r->t_health);
	if (rc) {
		r->file_text = NULL;
		remote_free(r);
		return rc;
	}
	r->next = n->remotes;
	n->remotes = r;
	if (strcmp(name, n->o.cluster) == 0) {
		remote_state(r, CW_REMOTE_REFUSED, "that is this cluster's own name");
	} else if (cw_etcd_conf_parse(text, len, &r->conf, err, sizeof(err))) {
		remote_state(r, CW_REMOTE_REFUSED, "config: %s", err);
	} else {
		remote_state(r, CW_REMOTE_CONNECTING, "%s", "");
		cw_timer_arm(r->t_retry, 0);
	}
	return 0;
}

static void remote_unlink(struct cw_node *n, struct cw_remote *gone)
{
	for (struct cw_remote **p = &n->remotes; *p; p = &(*p)->next)
		if (*p == gone) {
			*p = gone->next;
			break;
		}
	remote_free(gone);
}

static void rescan(struct cw_node *n)
{
	DIR *d = opendir(n->o.clustermesh_dir);
	struct dirent *de;

	for (struct cw_remote *r = n->remotes; r; r = r->next)
		r->seen = false;
	while (d && (de = readdir(d))) {
		char path[PATH_MAX], *text = NULL;
		struct cw_remote *r;
		size_t len = 0;

		/* Secret volumes keep their plumbing in dot-names ("..data"). */
		if (de->d_name[0] == '.')
			continue;
		if (!cw_cluster_name_valid(de->d_name)) {
			pr_warn("clustermesh: ignoring %s/%s: not a cluster name (1-32 of [a-z0-9-])",
				n->o.clustermesh_dir, de->d_name);
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", n->o.clustermesh_dir, de->d_name);
		if (cw_read_file(path, &text, &len))
			continue; /* a directory, or gone meanwhile */
		r = remote_find(n, de->d_name);
		if (r && r->file_text && strcmp(r->file_text, text) == 0) {
			r->seen = true;
			free(text);
			continue;
		}
		if (r) {
			pr_info("cluster %s: configuration changed, reconnecting", r->name);
			remote_unlink(n, r);
		}
		if (remote_add(n, de->d_name, text, len))
			free(text);
	}
	if (d)
		closedir(d);
	for (struct cw_remote *r = n->remotes, *next; r; r = next) {
		next = r->next;
		if (!r->seen) {
			pr_info("cluster %s: configuration removed, disconnecting and withdrawing",
				r->name);
			remote_unlink(n, r);
		}
	}
	cw_node_reconcile_soon(n);
}

static void on_dir(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	(void)loop;
	(void)events;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	rescan(arg);
}

int cw_clusters_start(struct cw_node *n)
{
	int rc;

	if (!n->o.clustermesh_dir)
		return 0;
	rc = cw_mkdir_p(n->o.clustermesh_dir, 0700);
	if (rc)
		return rc;
	n->mesh_inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (n->mesh_inotify_fd < 0)
		return -errno;
	if (inotify_add_watch(n->mesh_inotify_fd, n->o.clustermesh_dir,
			      IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE) < 0)
		return -errno;
	rc = cw_io_add(n->loop, n->mesh_inotify_fd, EPOLLIN, on_dir, n, &n->mesh_io);
	if (!rc)
		rescan(n);
	return rc;
}

void cw_clusters_stop(struct cw_node *n)
{
	while (n->remotes)
		remote_unlink(n, n->remotes);
	cw_io_del(n->mesh_io);
	n->mesh_io = NULL;
	cw_close(n->mesh_inotify_fd);
	n->mesh_inotify_fd = -1;
}
