// SPDX-License-Identifier: Apache-2.0
/*
 * What a running helper tells the outside: a unix-socket API for the CLI
 * (one request line, "status", "endpoints", "clusters" or "services",
 * answered with one JSON
 * document, then the connection closes) and a Prometheus text endpoint
 * over HTTP on a localhost port.  Both are served from the loop; a
 * connection that does not finish its request within 5 s is dropped.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include <causeway/log.h>
#include <causeway/util.h>
#include "node.h"
#include "services.h"

#define REQUEST_MAX 4096
#define CONN_TIMEOUT_MS 5000

struct conn {
	struct cw_node *n;
	int fd;
	bool http;
	struct cw_io *io;
	struct cw_timer *timeout;
	char req[REQUEST_MAX];
	size_t len;
	char *resp;
	size_t resp_len, sent;
};

static void conn_free(struct conn *c)
{
	cw_io_del(c->io);
	cw_timer_del(c->timeout);
	cw_close(c->fd);
	free(c->resp);
	free(c);
}

static void on_conn_timeout(struct cw_loop *loop, void *arg)
{
	(void)loop;
	conn_free(arg);
}

/* --- the documents ------------------------------------------------------------ */

static void add_watch(cJSON *arr, const char *name, const struct cw_kv_watch *w)
{
	struct cw_kv_watch_status st;
	cJSON *o;

	if (!w)
		return;
	cw_kv_watch_get_status(w, &st);
	o = cJSON_CreateObject();
	if (!o)
		return;
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddBoolToObject(o, "synced", st.synced);
	cJSON_AddBoolToObject(o, "streaming", st.streaming);
	cJSON_AddNumberToObject(o, "revision", (double)st.revision);
	cJSON_AddNumberToObject(o, "keys", (double)st.keys);
	cJSON_AddNumberToObject(o, "events", (double)st.events);
	cJSON_AddNumberToObject(o, "relists", (double)st.relists);
	cJSON_AddNumberToObject(o, "reconnects", (double)st.reconnects);
	cJSON_AddNumberToObject(o, "lastSyncAgoMs",
				st.last_sync_ms ? (double)(cw_loop_now_ms() - st.last_sync_ms) : -1);
	cJSON_AddStringToObject(o, "error", st.error);
	cJSON_AddItemToArray(arr, o);
}

static void add_informer(cJSON *arr, const struct cw_k8s_informer *inf)
{
	struct cw_k8s_informer_status st;
	cJSON *o;

	if (!inf)
		return;
	cw_k8s_informer_status(inf, &st);
	o = cJSON_CreateObject();
	if (!o)
		return;
	cJSON_AddStringToObject(o, "path", st.name);
	cJSON_AddBoolToObject(o, "connected", st.connected);
	cJSON_AddBoolToObject(o, "synced", st.synced);
	cJSON_AddNumberToObject(o, "objects", (double)st.objects);
	cJSON_AddNumberToObject(o, "events", (double)st.events);
	cJSON_AddNumberToObject(o, "relists", (double)st.relists);
	cJSON_AddNumberToObject(o, "reconnects", (double)st.reconnects);
	cJSON_AddNumberToObject(o, "lastSync", (double)st.last_sync);
	cJSON_AddStringToObject(o, "error", st.last_error);
	cJSON_AddItemToArray(arr, o);
}

static cJSON *status_doc(struct cw_node *n)
{
	cJSON *o = cJSON_CreateObject(), *w, *k, *c;
	char ip[16], cidr[24] = "";
	size_t neps = 0;

	if (!o)
		return NULL;
	cw_addr4_str(n->node_ip, ip);
	if (n->pod_cidr.len) {
		cw_addr4_str(n->pod_cidr.addr, cidr);
		snprintf(cidr + strlen(cidr), sizeof(cidr) - strlen(cidr), "/%u", n->pod_cidr.len);
	}
	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		neps++;
	cJSON_AddStringToObject(o, "role", "node");
	cJSON_AddStringToObject(o, "cluster", n->o.cluster);
	cJSON_AddNumberToObject(o, "clusterID", n->o.cluster_id);
	cJSON_AddStringToObject(o, "node", n->o.node_name);
	cJSON_AddStringToObject(o, "nodeIP", n->node_ip.s_addr ? ip : "");
	cJSON_AddStringToObject(o, "podCIDR", cidr);
	cJSON_AddStringToObject(o, "routing", cw_routing_name(n->o.routing));
	{
		cJSON *m = cJSON_AddObjectToObject(o, "masquerade");

		if (m) {
			cJSON_AddBoolToObject(m, "enabled", n->masq.enabled);
			cJSON_AddBoolToObject(m, "applied", n->masq.applied_ms && !n->masq.error[0]);
			cJSON_AddNumberToObject(m, "keptDestinations", (double)n->masq.n_dsts);
			cJSON_AddNumberToObject(m, "updates", (double)n->masq.updates);
			cJSON_AddStringToObject(m, "error", n->masq.error);
		}
	}
	cJSON_AddNumberToObject(o, "uptimeMs", (double)(cw_loop_now_ms() - n->started_ms));
	cJSON_AddStringToObject(o, "etcd", n->kv ? cw_kv_endpoint(n->kv) : "");
	/*
	 * Lease ids exceed 2^53, which a JSON double cannot hold: the number is
	 * written as exact digits, and again as a string for clients (cJSON
	 * among them) that read numbers into doubles.
	 */
	{
		char lease[24];

		snprintf(lease, sizeof(lease), "%" PRId64, n->lease);
		cJSON_AddRawToObject(o, "lease", lease);
		cJSON_AddStringToObject(o, "leaseID", lease);
	}
	cJSON_AddBoolToObject(o, "nodePublished", n->node_published);
	cJSON_AddBoolToObject(o, "datapathReady", n->dp_ready);
	cJSON_AddBoolToObject(o, "datapathSynced", n->dp_synced);
	cJSON_AddStringToObject(o, "datapathLoadError", n->dp_load_error);
	cJSON_AddNumberToObject(o, "attachmentsMoved", (double)n->dp_moved);
	cJSON_AddStringToObject(o, "vxlanDevice", n->vxlan_ifindex ? CW_VXLAN_DEV : "");
	cJSON_AddStringToObject(o, "underlayDevice", n->underlay_dev);
	/* Who builds a pod's VXLAN packet: the datapath (out of the underlay at
	 * once) or the device (through the node's stack, --tunnel-through-stack). */
	cJSON_AddStringToObject(o, "tunnelEncapsulation",
				n->o.tunnel_through_stack ? "device" : "datapath");
	cJSON_AddNumberToObject(o, "endpoints", (double)neps);
	cJSON_AddNumberToObject(o, "lastReconcileAgoMs",
				n->last_reconcile_ms ? (double)(cw_loop_now_ms() - n->last_reconcile_ms) : -1);
	w = cJSON_AddArrayToObject(o, "kvstore");
	add_watch(w, "nodes", n->w_nodes);
	add_watch(w, "ips", n->w_ips);
	add_watch(w, "identities", n->w_ids);
	k = cJSON_AddArrayToObject(o, "kubernetes");
	add_informer(k, n->i_node);
	add_informer(k, n->i_pods);
	add_informer(k, n->i_namespaces);
	add_informer(k, n->i_services);
	add_informer(k, n->i_slices);
	c = cJSON_AddObjectToObject(o, "counters");
	if (c) {
		cJSON_AddNumberToObject(c, "invalidRecords", (double)n->c.invalid_records);
		cJSON_AddNumberToObject(c, "reconciles", (double)n->c.reconciles);
		cJSON_AddNumberToObject(c, "mapWrites", (double)n->c.map_writes);
		cJSON_AddNumberToObject(c, "mapDeletes", (double)n->c.map_deletes);
		cJSON_AddNumberToObject(c, "routeAdds", (double)n->c.route_adds);
		cJSON_AddNumberToObject(c, "routeDeletes", (double)n->c.route_deletes);
		cJSON_AddNumberToObject(c, "publishErrors", (double)n->c.publish_errors);
		cJSON_AddNumberToObject(c, "identitiesAllocated", (double)n->c.identities_allocated);
		cJSON_AddNumberToObject(c, "invalidServices", (double)n->c.invalid_services);
		cJSON_AddNumberToObject(c, "serviceWrites", (double)n->c.lb_writes);
		cJSON_AddNumberToObject(c, "serviceRemoves", (double)n->c.lb_removes);
		cJSON_AddNumberToObject(c, "conntrackCollected", (double)n->c.ct_collected);
		cJSON_AddNumberToObject(c, "evictions", (double)n->c.evictions);
	}
	cJSON_AddNumberToObject(o, "frontends", (double)n->lb.n);
	cJSON_AddStringToObject(o, "lastError", n->last_error);
	return o;
}

static cJSON *endpoints_doc(struct cw_node *n)
{
	cJSON *arr = cJSON_CreateArray();

	if (!arr)
		return NULL;
	for (struct cw_local_ep *e = n->eps; e; e = e->next) {
		cJSON *o = cJSON_CreateObject();
		char ip[16];

		if (!o)
			break;
		cw_addr4_str(e->st.ip, ip);
		cJSON_AddStringToObject(o, "ip", ip);
		cJSON_AddStringToObject(o, "namespace", e->st.pod_namespace);
		cJSON_AddStringToObject(o, "pod", e->st.pod_name);
		cJSON_AddStringToObject(o, "containerID", e->st.container_id);
		cJSON_AddStringToObject(o, "interface", e->st.host_ifname);
		cJSON_AddNumberToObject(o, "ifindex", e->st.host_ifindex);
		cJSON_AddNumberToObject(o, "identity", e->identity);
		cJSON_AddStringToObject(o, "labels", e->labels);
		cJSON_AddBoolToObject(o, "published", e->published);
		cJSON_AddItemToArray(arr, o);
	}
	return arr;
}

static size_t watch_keys(const struct cw_kv_watch *w)
{
	struct cw_kv_watch_status st;

	if (!w)
		return 0;
	cw_kv_watch_get_status(w, &st);
	return st.keys;
}

static int cmp_fe_by_service(const void *a, const void *b)
{
	const struct cw_lb_fe *x = *(const struct cw_lb_fe *const *)a;
	const struct cw_lb_fe *y = *(const struct cw_lb_fe *const *)b;
	int c = strcmp(x->ns, y->ns);

	if (!c)
		c = strcmp(x->name, y->name);
	if (!c)
		c = (ntohs(x->key.port) > ntohs(y->key.port)) - (ntohs(x->key.port) < ntohs(y->key.port));
	return c ? c : (x->key.proto > y->key.proto) - (x->key.proto < y->key.proto);
}

/*
 * Every service as programmed, grouped by namespace and name: its
 * frontends, each with its slots (backend, cluster) and the affinity that
 * chose them, as `cilium service list --clustermesh-affinity` shows.
 */
static cJSON *services_doc(struct cw_node *n)
{
	cJSON *doc = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(doc, "services");
	const struct cw_lb_fe **v = calloc(n->lb.n ? n->lb.n : 1, sizeof(*v));
	cJSON *svc = NULL, *fes = NULL;
	const struct cw_lb_fe *prev = NULL;

	if (!doc || !arr || !v) {
		free(v);
		cJSON_Delete(doc);
		return NULL;
	}
	for (size_t i = 0; i < n->lb.n; i++)
		v[i] = &n->lb.v[i];
	qsort(v, n->lb.n, sizeof(*v), cmp_fe_by_service);
	for (size_t i = 0; i < n->lb.n; i++) {
		const struct cw_lb_fe *f = v[i];
		cJSON *fe, *bes;
		char a[16];

		if (!prev || strcmp(prev->ns, f->ns) || strcmp(prev->name, f->name)) {
			svc = cJSON_CreateObject();
			cJSON_AddItemToArray(arr, svc);
			cJSON_AddStringToObject(svc, "namespace", f->ns);
			cJSON_AddStringToObject(svc, "name", f->name);
			cJSON_AddBoolToObject(svc, "global", f->flags & CW_LB_F_GLOBAL);
			cJSON_AddBoolToObject(svc, "shared", f->shared);
			cJSON_AddStringToObject(svc, "affinity",
						cw_affinity_name((enum cw_affinity)f->affinity));
			fes = cJSON_AddArrayToObject(svc, "frontends");
		}
		prev = f;
		fe = cJSON_CreateObject();
		cJSON_AddItemToArray(fes, fe);
		cw_addr4_str((struct in_addr){ f->key.address }, a);
		cJSON_AddStringToObject(fe, "address", a);
		cJSON_AddNumberToObject(fe, "port", ntohs(f->key.port));
		cJSON_AddStringToObject(fe, "protocol", f->key.proto == IPPROTO_UDP ? "UDP" : "TCP");
		cJSON_AddStringToObject(fe, "portName", f->port_name);
		cJSON_AddNumberToObject(fe, "id", f->id);
		bes = cJSON_AddArrayToObject(fe, "backends");
		for (size_t j = 0; j < f->n; j++) {
			cJSON *be = cJSON_CreateObject();

			cJSON_AddItemToArray(bes, be);
			cw_addr4_str((struct in_addr){ f->slots[j].address }, a);
			cJSON_AddStringToObject(be, "address", a);
			cJSON_AddNumberToObject(be, "port", ntohs(f->slots[j].port));
			cJSON_AddStringToObject(be, "cluster",
						cw_cluster_name_of(n, f->slots[j].cluster_id));
			cJSON_AddNumberToObject(be, "clusterID", f->slots[j].cluster_id);
		}
	}
	free(v);
	return doc;
}

static cJSON *clusters_doc(struct cw_node *n)
{
	cJSON *arr = cJSON_CreateArray();

	for (struct cw_remote *r = n->remotes; arr && r; r = r->next) {
		cJSON *o = cJSON_CreateObject(), *w;

		if (!o)
			break;
		cJSON_AddStringToObject(o, "name", r->name);
		cJSON_AddNumberToObject(o, "id", r->id);
		/* What a user asks "connected?" about: the streams, not only the handshake. */
		if (r->state == CW_REMOTE_CONNECTED && r->evicted) {
			cJSON_AddStringToObject(o, "state", "evicted");
			cJSON_AddStringToObject(o, "reason", r->lost_why);
		} else if (r->state == CW_REMOTE_CONNECTED && r->lost_ms) {
			cJSON_AddStringToObject(o, "state", "disconnected");
			cJSON_AddStringToObject(o, "reason", r->lost_why);
		} else {
			cJSON_AddStringToObject(o, "state", cw_remote_state_name(r->state));
			cJSON_AddStringToObject(o, "reason", r->why);
		}
		cJSON_AddStringToObject(o, "etcd", r->kv ? cw_kv_endpoint(r->kv) : "");
		cJSON_AddNumberToObject(o, "nodes", (double)watch_keys(r->w_nodes));
		cJSON_AddNumberToObject(o, "endpoints", (double)watch_keys(r->w_ips));
		cJSON_AddNumberToObject(o, "identities", (double)watch_keys(r->w_ids));
		cJSON_AddNumberToObject(o, "services", (double)watch_keys(r->w_svcs));
		cJSON_AddBoolToObject(o, "synced", !r->lost_ms && cw_remote_settled(r, CW_KEY_NODES) &&
						   cw_remote_settled(r, CW_KEY_IPS) &&
						   cw_remote_settled(r, CW_KEY_IDENTITIES) &&
						   cw_remote_settled(r, CW_KEY_SERVICES));
		cJSON_AddBoolToObject(o, "evicted", r->evicted);
		cJSON_AddStringToObject(o, "unhealthy", r->lost_why);
		cJSON_AddStringToObject(o, "podCIDROverlap", r->overlap);
		if (r->lost_ms && !r->evicted) {
			int64_t left = (int64_t)n->o.remote_eviction_s * 1000 -
				       (cw_loop_now_ms() - r->lost_ms);

			cJSON_AddNumberToObject(o, "evictionDeadline",
						(double)(left > 0 ? (left + 999) / 1000 : 0));
		} else {
			cJSON_AddNullToObject(o, "evictionDeadline");
		}
		w = cJSON_AddArrayToObject(o, "kvstore");
		add_watch(w, "nodes", r->w_nodes);
		add_watch(w, "ips", r->w_ips);
		add_watch(w, "identities", r->w_ids);
		add_watch(w, "services", r->w_svcs);
		add_watch(w, "synced", r->w_synced);
		add_watch(w, "heartbeat", r->w_heartbeat);
		cJSON_AddItemToArray(arr, o);
	}
	return arr;
}

/* --- Prometheus text format ----------------------------------------------------- */

struct sbuf {
	char *s;
	size_t len, cap;
};

__attribute__((format(printf, 2, 3)))
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->s && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap ? b->cap : 4096) * 2 + (size_t)n;
		char *ns = realloc(b->s, cap);

		if (!ns)
			return;
		b->s = ns;
		b->cap = cap;
	}
}

static void packets_text(unsigned int reason, unsigned int dir, const struct cw_metrics_value *v,
			 void *b)
{
	sb_printf(b, "causeway_datapath_packets_total{reason=\"%s\",direction=\"%s\"} %llu\n",
		  cw_reason_name(reason), cw_dir_name(dir), (unsigned long long)v->packets);
}

static void metrics_text(struct cw_node *n, struct sbuf *b)
{
	const struct { const char *name; const struct cw_kv_watch *w; } ws[] = {
		{ "nodes", n->w_nodes }, { "ips", n->w_ips }, { "identities", n->w_ids },
	};
	size_t neps = 0;

	for (struct cw_local_ep *e = n->eps; e; e = e->next)
		neps++;
	sb_printf(b, "# HELP causeway_endpoints Local pod interfaces known to the helper.\n"
		     "# TYPE causeway_endpoints gauge\ncauseway_endpoints %zu\n", neps);
	sb_printf(b, "# HELP causeway_kvstore_keys Keys mirrored from the mesh store.\n"
		     "# TYPE causeway_kvstore_keys gauge\n");
	for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++) {
		struct cw_kv_watch_status st;

		if (!ws[i].w)
			continue;
		cw_kv_watch_get_status(ws[i].w, &st);
		sb_printf(b, "causeway_kvstore_keys{prefix=\"%s\"} %zu\n", ws[i].name, st.keys);
		sb_printf(b, "causeway_kvstore_synced{prefix=\"%s\"} %d\n", ws[i].name, st.synced);
		sb_printf(b, "causeway_kvstore_events_total{prefix=\"%s\"} %" PRIu64 "\n", ws[i].name,
			  st.events);
		sb_printf(b, "causeway_kvstore_reconnects_total{prefix=\"%s\"} %" PRIu64 "\n",
			  ws[i].name, st.reconnects);
	}
	sb_printf(b, "# TYPE causeway_reconciles_total counter\ncauseway_reconciles_total %" PRIu64 "\n",
		  n->c.reconciles);
	sb_printf(b, "# TYPE causeway_map_writes_total counter\ncauseway_map_writes_total %" PRIu64 "\n",
		  n->c.map_writes);
	sb_printf(b, "# TYPE causeway_map_deletes_total counter\ncauseway_map_deletes_total %" PRIu64 "\n",
		  n->c.map_deletes);
	sb_printf(b, "# TYPE causeway_invalid_records_total counter\n"
		     "causeway_invalid_records_total %" PRIu64 "\n", n->c.invalid_records);
	sb_printf(b, "# TYPE causeway_publish_errors_total counter\n"
		     "causeway_publish_errors_total %" PRIu64 "\n", n->c.publish_errors);
	sb_printf(b, "# TYPE causeway_lease_active gauge\ncauseway_lease_active %d\n", n->lease != 0);
	sb_printf(b, "# HELP causeway_service_frontends Frontends in the service maps.\n"
		     "# TYPE causeway_service_frontends gauge\ncauseway_service_frontends %zu\n",
		  n->lb.n);
	sb_printf(b, "# TYPE causeway_invalid_services_total counter\n"
		     "causeway_invalid_services_total %" PRIu64 "\n", n->c.invalid_services);
	sb_printf(b, "# TYPE causeway_remote_evictions_total counter\n"
		     "causeway_remote_evictions_total %" PRIu64 "\n", n->c.evictions);
	for (struct cw_remote *r = n->remotes; r; r = r->next)
		sb_printf(b, "causeway_remote_cluster_ready{cluster=\"%s\"} %d\n", r->name,
			  cw_remote_usable(r) && !r->lost_ms);
	if (n->dp) {
		sb_printf(b, "# HELP causeway_datapath_packets_total Packets by verdict reason and "
			     "direction, from the BPF metrics map.\n"
			     "# TYPE causeway_datapath_packets_total counter\n");
		cw_metrics_each(n->dp->map_metrics, packets_text, b);
	}
}

/* --- serving ---------------------------------------------------------------------- */

static void respond(struct conn *c)
{
	struct cw_node *n = c->n;
	cJSON *doc = NULL;
	char *body = NULL;

	if (c->http) {
		struct sbuf b = { 0 };
		bool ok = strncmp(c->req, "GET /metrics ", 13) == 0 || strncmp(c->req, "GET / ", 6) == 0;

		if (ok)
			metrics_text(n, &b);
		body = b.s ? b.s : strdup("");
		if (!body)
			return;
		if (asprintf(&c->resp, "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
			     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			     ok ? "200 OK" : "404 Not Found", strlen(body), body) < 0)
			c->resp = NULL;
		free(body);
	} else {
		c->req[strcspn(c->req, "\r\n")] = '\0';
		if (strcmp(c->req, "status") == 0)
			doc = status_doc(n);
		else if (strcmp(c->req, "endpoints") == 0)
			doc = endpoints_doc(n);
		else if (strcmp(c->req, "clusters") == 0)
			doc = clusters_doc(n);
		else if (strcmp(c->req, "services") == 0)
			doc = services_doc(n);
		else {
			doc = cJSON_CreateObject();
			if (doc)
				cJSON_AddStringToObject(doc, "error", "unknown request");
		}
		body = doc ? cJSON_Print(doc) : NULL;
		cJSON_Delete(doc);
		if (body && asprintf(&c->resp, "%s\n", body) < 0)
			c->resp = NULL;
		free(body);
	}
	c->resp_len = c->resp ? strlen(c->resp) : 0;
}

static void on_conn(struct cw_loop *loop, int fd, uint32_t events, void *arg)
{
	struct conn *c = arg;
	ssize_t r;

	(void)loop;
	if (!c->resp) {
		r = read(fd, c->req + c->len, sizeof(c->req) - 1 - c->len);
		if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
			conn_free(c);
			return;
		}
		if (r > 0)
			c->len += (size_t)r;
		c->req[c->len] = '\0';
		if (c->http ? !strstr(c->req, "\r\n\r\n") : !strchr(c->req, '\n')) {
			if (c->len == sizeof(c->req) - 1)
				conn_free(c);
			return;
		}
		respond(c);
		if (!c->resp || cw_io_modify(c->io, EPOLLOUT)) {
			conn_free(c);
			return;
		}
		return;
	}
	if (events & EPOLLOUT) {
		r = write(fd, c->resp + c->sent, c->resp_len - c->sent);
		if (r < 0 && errno == EAGAIN)
			return;
		if (r > 0)
			c->sent += (size_t)r;
		if (r <= 0 || c->sent == c->resp_len)
			conn_free(c);
	}
}

static void on_accept(struct cw_loop *loop, int lfd, uint32_t events, void *arg)
{
	struct cw_node *n = arg;
	bool http = lfd == n->metrics_fd;
	struct conn *c;
	int fd;

	(void)events;
	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->n = n;
		c->fd = fd;
		c->http = http;
		if (cw_io_add(loop, fd, EPOLLIN, on_conn, c, &c->io) ||
		    cw_timer_add(loop, CONN_TIMEOUT_MS, 0, on_conn_timeout, c, &c->timeout)) {
			conn_free(c);
			continue;
		}
	}
}

static int listen_unix(const char *path, int *out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A previous helper's socket: it is gone, or we could not run twice. */
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 16) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	*out = fd;
	return 0;
}

static int listen_tcp(const char *addr, int *out)
{
	char host[64];
	const char *colon = strrchr(addr, ':');
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int fd, one = 1;
	long port;
	char *end;

	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -EINVAL;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	port = strtol(colon + 1, &end, 10);
	if (*end || port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	sa.sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	*out = fd;
	return 0;
}

int cw_api_start(struct cw_node *n)
{
	int rc = listen_unix(n->o.socket, &n->api_fd);

	if (rc) {
		pr_err("api: cannot listen on %s: %s", n->o.socket, strerror(-rc));
		return rc;
	}
	rc = cw_io_add(n->loop, n->api_fd, EPOLLIN, on_accept, n, &n->api_io);
	if (rc || !n->o.metrics_addr)
		return rc;
	rc = listen_tcp(n->o.metrics_addr, &n->metrics_fd);
	if (rc) {
		pr_err("metrics: cannot listen on %s: %s", n->o.metrics_addr, strerror(-rc));
		return rc;
	}
	return cw_io_add(n->loop, n->metrics_fd, EPOLLIN, on_accept, n, &n->metrics_io);
}

void cw_api_stop(struct cw_node *n)
{
	cw_io_del(n->api_io);
	cw_io_del(n->metrics_io);
	n->api_io = n->metrics_io = NULL;
	if (n->api_fd >= 0)
		unlink(n->o.socket);
	cw_close(n->api_fd);
	cw_close(n->metrics_fd);
	n->api_fd = n->metrics_fd = -1;
}
