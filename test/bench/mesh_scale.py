#!/usr/bin/env python3
"""ClusterMesh scale: one node helper connected to 4 remote clusters that
hold together 100,000 endpoints, 5,000 identities and 10,000 services.
Time from the helper's start to full sync, and the helper's peak resident
memory.  Goals: under 10 s and under 64 MiB.

Everything runs in one network namespace of this benchmark's own
(cwbench-mesh-<pid>), which this process enters, so every address below is
that namespace's loopback:

  etcd         one real etcd 3.4 per cluster (Debian's), plain http (the
               helper's etcd config accepts http:// endpoints; TLS is not
               what is measured), data on tmpfs: the local cluster's
               (cluster1, id 1), where the helper publishes its node, and
               one per remote cluster (cluster2 .. cluster5, ids 2..5);
  the data     in each remote etcd, as its nodes and mesh-apiserver would
               have written it (Cilium's kvstore schema v1, DESIGN.md):
               cilium/cluster-config/<name> (syncedCanaries), node records
               with PodCIDRs (100 pods per node: 250 nodes per cluster),
               the ip/v1 records (a quarter of the endpoints each, HostIP
               their node), the identities' id/ keys (a quarter each, in
               the cluster's range), the services/v1 records, the synced
               canaries and the heartbeat.  Loaded with etcd's v3 JSON
               gateway, 1,000 puts per transaction;
  services     10,000 services/v1 records: 2,500 service names, each
               published by all 4 clusters (a global service exists in
               every cluster that serves it), 4 backends (pods of that
               cluster) each;
  kapi         test/lab/kapi.py as the local cluster's Kubernetes API
               (plain http), preloaded with the 2,500 matching global
               Services (ClusterIPs, port 80 "http"), no local endpoints;
  the helper   build/causeway-helper node, tunnel routing, "eth0" (one end
               of a veth pair) holding its node IP, a fresh bpffs root per round
               (/sys/fs/bpf/cwbench-mesh-<pid>-<round>), --clustermesh-config
               a directory with one file per remote cluster.

A remote services/v1 record only turns into BPF state when a local Service
of the same namespace and name is global: without one the helper mirrors
and validates the records and nothing more.  So every round is run twice,
interleaved: once with --no-k8s (the records mirrored, no Service to match)
and once against kapi (the same, plus 2,500 frontends of 16 slots each
programmed).  The kapi rounds are the goal's figure: they do everything.

Per round, from the helper's exec (its start):

  socket          a thread asks the helper's socket "clusters" (what
                  `causeway-helper clusters -o json` asks), one request
                  after the other: the first answer; the first answer in
                  which every remote is "connected" and "synced" (listed,
                  canaries seen); the longest wait for an answer (the
                  helper serves its socket from the same loop as
                  everything else)
  ipcache full    every 20 ms, 512 of the expected cw_ipcache /32s looked up
                  with bpf(2) (identity, tunnel endpoint = the record's
                  HostIP, cluster); once all are there, the whole map is
                  read (BPF_MAP_LOOKUP_BATCH) and must hold all 100,000
                  remote entries with the right values: the time is that
                  of the sample, or, if the read still missed some, of the
                  read that found them all
  services        every 20 ms, cw_lb4_services read whole: all 2,500
                  frontends with their 16 slots (a frontend is written
                  after its slots, so its count says they are there)
  full sync       the last of these

then, after a 2 s settle: VmHWM (peak resident set) and VmRSS from
/proc/PID/status, the helper's CPU time, and a check of every entry: each
ipcache /32, every tunnel map entry (PodCIDR -> node), each frontend's
slots against the backends of the 4 records, the counts `clusters` shows,
the helper's invalid-record counter.  Wrong, missing or extra entries are
printed.  Last, with everything synced, --changes single changes in
cluster2's etcd, one at a time, each timed from just before its put to the
map (polled every 0.5 ms): a backend added to one services/v1 record and
removed again (kapi rounds), an ip/v1 record put and deleted: what one
change costs a helper holding this much.

Usage: mesh_scale.py [--rounds 3] [--k8s both|kapi|none] [--endpoints N]
                     [--identities N] [--services N] [--clusters N] [--changes 20]
                     [--quick] [--json FILE] [--logs DIR]
(--quick: 10,000 endpoints, 500 identities, 1,000 services, 5 changes, one
round of each mode; about 15 s.  Defaults: about 2 minutes.)
"""

import argparse
import concurrent.futures
import ipaddress
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the tree
import benchlib as B  # noqa: E402

KAPI = os.path.join(B.REPO, "test", "lab", "kapi.py")
LOCAL = ("cluster1", 1)
NODE_NAME = "bench-node"
NODE_IP = "10.254.0.1"
NODE_CIDR = "10.10.1.0/24"
SERVICE_CIDR = "10.96.0.0/16"
SVC_IP0 = int(ipaddress.IPv4Address("10.96.1.0"))
NAMESPACES = 10
PODS_PER_NODE = 100
BACKENDS = 4          # per service record
TXN = 1000            # puts per etcd transaction
ETCD_PORT0 = 12379    # cluster k: client ETCD_PORT0 + 10k, peer + 1
KAPI_PORT = 16443
POLL_S = 0.02
SAMPLE = 512          # ipcache entries looked up every poll
SYNC_TIMEOUT = 120.0
SETTLE_S = 2.0
CHANGE_TIMEOUT = 30.0
GOAL_S, GOAL_MIB = 10.0, 64.0


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, help="helper starts per mode (default 3; --quick 1)")
    ap.add_argument("--k8s", choices=("both", "kapi", "none"), default="both",
                    help="helper modes: against kapi with the Services, --no-k8s, or both "
                         "interleaved (default)")
    ap.add_argument("--endpoints", type=int, help="ip/v1 records in all (default 100000)")
    ap.add_argument("--identities", type=int, help="identities in all (default 5000)")
    ap.add_argument("--services", type=int, help="services/v1 records in all (default 10000)")
    ap.add_argument("--clusters", type=int, default=4, help="remote clusters (default 4)")
    ap.add_argument("--changes", type=int,
                    help="single changes timed after each sync (default 20; --quick 5)")
    ap.add_argument("--quick", action="store_true",
                    help="a tenth of the data, one round of each mode (a smoke run)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    ap.add_argument("--logs", metavar="DIR",
                    help="keep each round's helper log there (round-N.log)")
    a = ap.parse_args()
    q = a.quick
    a.rounds = a.rounds or (1 if q else 3)
    a.changes = a.changes if a.changes is not None else (5 if q else 20)
    a.endpoints = a.endpoints if a.endpoints is not None else (10000 if q else 100000)
    a.identities = a.identities if a.identities is not None else (500 if q else 5000)
    a.services = a.services if a.services is not None else (1000 if q else 10000)
    if not 1 <= a.clusters <= 16 or not 1 <= a.rounds <= 20:
        ap.error("--clusters within 1..16, --rounds within 1..20")
    if not a.clusters <= a.endpoints <= a.clusters * 250 * 250:
        ap.error(f"--endpoints within {a.clusters}..{a.clusters * 250 * 250} "
                 "(250 nodes of 250 pods per cluster)")
    if not a.clusters <= a.identities <= a.clusters * 60000:
        ap.error("--identities: at least one per cluster, at most 60000 per cluster")
    if not 0 <= a.services // a.clusters <= 60000:
        ap.error("--services: at most 60000 per cluster")
    return a


def preflight():
    if os.geteuid() != 0:
        B.cannot_run("needs root (network namespaces, bpffs)")
    for tool in ("etcd", "ip"):
        if shutil.which(tool) is None:
            B.cannot_run(f"`{tool}` is not installed")
    if not os.access(B.HELPER, os.X_OK):
        B.cannot_run(f"{B.HELPER} is missing: run `make` in {B.REPO}")
    if not os.path.ismount(B.BPFFS):
        B.cannot_run(f"no bpffs mounted at {B.BPFFS}")


# --- the data -----------------------------------------------------------------------

def split(total, parts, i):
    """Part i of total split as evenly as possible over parts."""
    return total // parts + (1 if i < total % parts else 0)


class Remote:
    """One remote cluster's records, and what the helper should make of them."""

    def __init__(self, i, args):
        self.index = i
        self.id = 2 + i
        self.name = f"cluster{self.id}"
        self.n_eps = split(args.endpoints, args.clusters, i)
        self.n_ids = split(args.identities, args.clusters, i)
        self.n_svcs = args.services // args.clusters
        self.n_nodes = min(250, max(1, math.ceil(self.n_eps / PODS_PER_NODE)))
        self.per_node = math.ceil(self.n_eps / self.n_nodes)
        self.port = ETCD_PORT0 + 10 * (i + 1)

    def node_ip(self, j):
        return f"100.{64 + self.index}.{j // 250}.{j % 250 + 1}"

    def pod_ip(self, e):
        j, k = divmod(e, self.per_node)
        return f"10.{100 + self.id}.{j}.{k + 1}"

    def identity(self, e):
        return (self.id << 16) | (256 + e % self.n_ids)

    def records(self):
        """(key, value) of everything the cluster's etcd holds, in the order a
        cluster that comes up writes them; the canaries last."""
        name, cid = self.name, self.id
        yield (f"cilium/cluster-config/{name}",
               json.dumps({"id": cid, "capabilities": {"syncedCanaries": True,
                                                       "maxConnectedClusters": 255}}))
        for j in range(self.n_nodes):
            yield (f"cilium/state/nodes/v1/{name}/node-{j}", json.dumps({
                "Name": f"node-{j}", "Cluster": name,
                "IPAddresses": [{"Type": "InternalIP", "IP": self.node_ip(j)}],
                "IPv4AllocCIDR": {"IP": f"10.{100 + cid}.{j}.0", "Mask": "////AA=="},
                "IPv6AllocCIDR": None, "ClusterID": cid, "Source": "local",
                "WireguardPubKey": "", "BootID": str(uuid.UUID(int=cid << 32 | j))},
                separators=(",", ":")))
        for k in range(self.n_ids):
            labels = (f"k8s:app=app-{k};k8s:io.cilium.k8s.policy.cluster={name};"
                      f"k8s:io.kubernetes.pod.namespace=mesh-{k % NAMESPACES};")
            yield f"cilium/state/identities/v1/id/{(cid << 16) | (256 + k)}", labels
        for e in range(self.n_eps):
            ip = self.pod_ip(e)
            yield (f"cilium/state/ip/v1/default/{ip}", json.dumps({
                "IP": ip, "Mask": None, "HostIP": self.node_ip(e // self.per_node),
                "ID": self.identity(e), "Key": 0, "Metadata": "",
                "K8sNamespace": f"mesh-{e % NAMESPACES}", "K8sPodName": f"pod-{e}"},
                separators=(",", ":")))
        for s in range(self.n_svcs):
            yield self.service(s)
        yield "cilium/.heartbeat", heartbeat()
        for kind in ("nodes", "ip", "identities", "services"):
            yield f"cilium/synced/{name}/cilium/state/{kind}/v1", heartbeat()

    def service(self, s, extra=()):
        """The services/v1 record of service s: (key, value); extra: more backends."""
        ns, svc, name, cid = f"mesh-{s % NAMESPACES}", f"svc-{s}", self.name, self.id
        return (f"cilium/state/services/v1/{name}/{ns}/{svc}", json.dumps({
            "cluster": name, "namespace": ns, "name": svc,
            "frontends": {f"10.{200 + cid}.{s // 250}.{s % 250 + 1}":
                          {"http": {"Protocol": "TCP", "Port": 80}}},
            "backends": {ip: {"http": {"Protocol": "TCP", "Port": 8080}}
                         for ip in self.backends(s) + list(extra)},
            "labels": {}, "selector": {}, "includeExternal": True, "shared": True,
            "clusterID": cid}, separators=(",", ":")))

    def ip_record(self, ip, j):
        """An ip/v1 record for ip on node j: (key, value)."""
        return (f"cilium/state/ip/v1/default/{ip}", json.dumps({
            "IP": ip, "Mask": None, "HostIP": self.node_ip(j), "ID": self.identity(0),
            "Key": 0, "Metadata": "", "K8sNamespace": "mesh-0", "K8sPodName": f"extra-{ip}"},
            separators=(",", ":")))

    def backends(self, s):
        return [self.pod_ip((s * BACKENDS + b) % self.n_eps) for b in range(BACKENDS)]


def heartbeat():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def kapi_state(n_services):
    """kapi.py's state file: the namespaces and the global Services that
    match the remote records (no selector: no local endpoints)."""
    ts = "2026-01-01T00:00:00Z"

    def meta(name, ns=None, **extra):
        m = {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "2",
             "creationTimestamp": ts}
        if ns:
            m["namespace"] = ns
        m.update(extra)
        return m

    nss = [{"apiVersion": "v1", "kind": "Namespace",
            "metadata": meta(f"mesh-{i}", labels={"kubernetes.io/metadata.name": f"mesh-{i}"}),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
           for i in range(NAMESPACES)]
    svcs = []
    for s in range(n_services):
        ip = str(ipaddress.IPv4Address(SVC_IP0 + s))
        svcs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": meta(f"svc-{s}", f"mesh-{s % NAMESPACES}",
                                      annotations={"service.cilium.io/global": "true"}),
                     "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                              "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                              "sessionAffinity": "None",
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                         "targetPort": 8080}]},
                     "status": {"loadBalancer": {}}})
    return {"rv": 10, "seq": {}, "objects": {"namespaces": nss, "services": svcs}}


# --- processes ----------------------------------------------------------------------

class Etcd:
    """A plain-http single-member etcd on this namespace's loopback."""

    def __init__(self, cleanup, scratch, name, port):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        d = os.path.join(scratch, f"etcd-{name}")
        os.makedirs(d)
        peer = f"http://127.0.0.1:{port + 1}"
        self.log = os.path.join(d, "etcd.log")
        with open(self.log, "w") as logf:
            self.srv = B.Server(cleanup, f"etcd {name}", [
                "etcd", "--name", name, "--data-dir", os.path.join(d, "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
                "--enable-grpc-gateway", "--max-txn-ops", str(TXN),
                "--max-request-bytes", str(8 << 20), "--quota-backend-bytes", str(4 << 30),
                "--auto-compaction-retention", "0", "--logger", "zap",
                "--log-outputs", "stderr", "--log-level", "warn"], stdout=logf, stderr=logf)
        self.client = B.EtcdHttp(self.url)

    def wait(self, timeout=20.0):
        end = time.monotonic() + timeout
        while True:
            self.srv.check()
            try:
                self.client.call("/v3/kv/range", {"key": B.b64("health")})
                return
            except (OSError, RuntimeError):
                if time.monotonic() > end:
                    raise RuntimeError(f"etcd {self.name} not answering after {timeout}s; "
                                       f"see {self.log}")
                time.sleep(0.1)

    def config(self, d):
        path = os.path.join(d, self.name)
        with open(path, "w") as f:
            f.write(f"endpoints:\n- {self.url}\n")
        return path


def load(etcd, remote):
    """Put every record of the cluster, TXN per transaction; (puts, seconds)."""
    cl = B.EtcdHttp(etcd.url, timeout=120)
    t0, n, batch = time.monotonic(), 0, []
    for kv in remote.records():
        batch.append(kv)
        if len(batch) == TXN:
            cl.put_many(batch)
            n += len(batch)
            batch = []
    if batch:
        cl.put_many(batch)
        n += len(batch)
    cl.close()
    return n, time.monotonic() - t0


def start_kapi(cleanup, scratch, n_services):
    d = os.path.join(scratch, "kapi")
    os.makedirs(d)
    state = os.path.join(d, "state.json")
    B.write_json(state, kapi_state(n_services))
    errf = open(os.path.join(d, "kapi.err"), "w")
    cleanup.push("kapi stderr", errf.close)
    srv = B.Server(cleanup, "kapi", [sys.executable, KAPI, "--listen", f"127.0.0.1:{KAPI_PORT}",
                                     "--cluster", LOCAL[0], "--service-cidr", SERVICE_CIDR,
                                     "--state-file", state,
                                     "--log-file", os.path.join(d, "kapi.log")], stderr=errf)
    end = time.monotonic() + 30
    while True:
        srv.check()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{KAPI_PORT}/readyz", timeout=2):
                return srv
        except OSError:
            if time.monotonic() > end:
                raise RuntimeError(f"kapi not ready after 30 s; see {d}/kapi.log")
            time.sleep(0.1)


# --- one helper start ----------------------------------------------------------------

def lpm_key(ip, plen=32):
    return B.struct.pack("=I4s", plen, socket.inet_aton(ip))


def ipcache_value(identity, tunnel_ip, cluster_id):
    """struct cw_ipcache_info without its flags: identity, tunnel_ip, cluster_id."""
    return B.struct.pack("=I4sH", identity, socket.inet_aton(tunnel_ip), cluster_id)


REMOTE_NODE = 6  # the reserved identity of another node's address (tunnel mode)


def expected_ipcache(remotes):
    """{lpm key: ipcache_value()} of every remote endpoint, and of every remote node's
    address (tunnel routing: behind itself, with the remote-node identity)."""
    want = {lpm_key(r.pod_ip(e)): ipcache_value(r.identity(e), r.node_ip(e // r.per_node), r.id)
            for r in remotes for e in range(r.n_eps)}
    want.update({lpm_key(r.node_ip(j)): ipcache_value(REMOTE_NODE, r.node_ip(j), r.id)
                 for r in remotes for j in range(r.n_nodes)})
    return want


def ipcache_sample(want, n=SAMPLE):
    """n entries to poll for, the one the helper's sorted write (datapath.c's
    cmp_key: the address as a host-order u32) reaches last among them."""
    import random
    keys = random.Random(1).sample(sorted(want), min(n - 1, len(want)))
    keys.append(max(want, key=lambda k: int.from_bytes(k[4:], sys.byteorder)))
    return [(k, want[k]) for k in keys]


def expected_tunnels(remotes):
    return {B.struct.pack("=I4s", 24, socket.inet_aton(f"10.{100 + r.id}.{j}.0")):
            socket.inet_aton(r.node_ip(j)) for r in remotes for j in range(r.n_nodes)}


def lb_key(ip, port=80, proto=6):
    return socket.inet_aton(ip) + port.to_bytes(2, "big") + bytes((proto, 0))


def expected_services(remotes, n_local):
    """{frontend key: sorted [(backend IP bytes, port, cluster id)]} of the local Services."""
    want = {}
    for s in range(n_local):
        bes = sorted((socket.inet_aton(ip), 8080, r.id) for r in remotes if s < r.n_svcs
                     for ip in r.backends(s))
        want[lb_key(str(ipaddress.IPv4Address(SVC_IP0 + s)))] = bes
    return want


class Round:
    def __init__(self, n, mode):
        self.n, self.mode = n, mode
        self.t = {}              # event -> seconds since the helper's start
        self.fig = {}


def open_map(root, name):
    try:
        return B.BpfMap(os.path.join(root, name))
    except OSError:
        return None


def run_round(cleanup, ctx, rnd):
    tag = f"{ctx.prefix}-{rnd.n}"
    root = B.bpf_root(cleanup, tag)
    state = os.path.join(ctx.scratch, f"round-{rnd.n}")
    os.makedirs(state)
    sock = os.path.join(state, "helper.sock")
    log = os.path.join(state, "helper.log")
    # the heartbeats must be younger than the eviction timeout (120 s)
    for r, e in zip(ctx.remotes, ctx.etcds[1:]):
        e.client.put("cilium/.heartbeat", heartbeat())
    argv = [B.HELPER, "node", "--cluster-name", LOCAL[0], "--cluster-id", str(LOCAL[1]),
            "--node-name", NODE_NAME, "--etcd-config", ctx.local_cfg, "--bpf-root", root,
            "--state-dir", state, "--socket", sock, "--routing", "tunnel",
            "--node-ip", NODE_IP, "--pod-cidr", NODE_CIDR,
            "--clustermesh-config", ctx.mesh_dir, "--log-file", log]
    argv += ["--no-k8s"] if rnd.mode == "none" else ["--k8s-api", f"http://127.0.0.1:{KAPI_PORT}"]
    want_eps = len(ctx.want_ipc)
    want_fes = len(ctx.want_svc) if rnd.mode == "kapi" else 0

    errf = open(os.path.join(state, "helper.err"), "w")
    cleanup.push("helper stderr", errf.close)
    t0 = time.monotonic()
    helper = B.Server(cleanup, f"helper round {rnd.n} (log {log})", argv, stderr=errf)
    pid = helper.proc.pid
    poller = SocketPoller(sock, t0, len(ctx.remotes))
    ipc = svcs = None
    reads, sample_ok, t_sample = [], False, None
    try:
        while True:
            t = time.monotonic() - t0
            helper.check()
            if t > SYNC_TIMEOUT:
                raise RuntimeError(f"round {rnd.n} ({rnd.mode}): no full sync after "
                                   f"{SYNC_TIMEOUT:.0f} s (reached: {sorted(rnd.t)}); see {log}")
            for k in ("socket", "remotes"):
                if k not in rnd.t and poller.t.get(k) is not None:
                    rnd.t[k] = poller.t[k]
            if "ipcache" not in rnd.t:
                ipc = ipc or open_map(root, "cw_ipcache")
                # a sample each poll (cheap); the whole map once the sample is all
                # there, to confirm (a read of 100,000 entries takes ~0.1 s)
                if ipc and (sample_ok or all((ipc.lookup(k) or b"")[:10] == v
                                             for k, v in ctx.sample)):
                    if not sample_ok:
                        sample_ok, t_sample = True, t
                    r0 = time.monotonic()
                    n = sum(1 for k, v in ipc.items() if ctx.want_ipc.get(k) == v[:10])
                    r1 = time.monotonic()
                    reads.append(r1 - r0)
                    if n == want_eps:
                        # all there when the sample was, unless the first read
                        # said otherwise: then when the read that saw them ended
                        rnd.t["ipcache"] = t_sample if len(reads) == 1 else r1 - t0
            if want_fes and "services" not in rnd.t:
                # a frontend is written after its slots (lib's cw_lb4_service_set),
                # so all frontends with their full count means all slots too
                svcs = svcs or open_map(root, "cw_lb4_services")
                if svcs and sum(1 for k, v in svcs.items()
                                if v[:2] == ctx.want_count.get(k)) == want_fes:
                    rnd.t["services"] = t
            if all(k in rnd.t for k in ("socket", "remotes", "ipcache")) and \
                    (not want_fes or "services" in rnd.t):
                rnd.t["full"] = max(rnd.t.values())
                rnd.cpu_full = B.proc_cpu_seconds(pid)
                break
            time.sleep(POLL_S)
        rnd.sock_max = poller.stop()
        rnd.reads = reads
        time.sleep(SETTLE_S)
        helper.check()
        st = B.proc_status(pid)
        rnd.hwm_mib, rnd.rss_mib = st["VmHWM"] / 1024, st["VmRSS"] / 1024
        rnd.cpu_total = B.proc_cpu_seconds(pid)
        rnd.checks = check_state(ctx, rnd, root, sock, ipc)
        rnd.changes = changes(ctx, rnd, root, ctx.n_changes)
        if rnd.changes["lost"]:
            rnd.checks.append(f"{rnd.changes['lost']} single changes not in the maps after "
                              f"{CHANGE_TIMEOUT:.0f} s")
    finally:
        for m in (ipc, svcs):
            if m:
                m.close()
        poller.stop()
        stop_helper(helper)
    rc = helper.proc.returncode
    if rc not in (0, None):
        rnd.checks.append(f"the helper exited {rc} on SIGTERM")
    if ctx.logs:
        os.makedirs(ctx.logs, exist_ok=True)
        shutil.copy(log, os.path.join(ctx.logs, f"round-{rnd.n}-{rnd.mode}.log"))
    # the next round starts from nothing: no pins (B.remove_pins), no state
    B.remove_pins(root)
    shutil.rmtree(state, ignore_errors=True)
    return rnd


class SocketPoller:
    """A thread asking the helper's socket "clusters" (what `causeway-helper
    clusters -o json` asks) one request after another: when it first
    answers, when an answer first shows every remote connected and synced,
    and the longest wait for an answer (the helper's loop serves the
    socket between its other work)."""

    def __init__(self, sock, t0, n_remotes):
        import threading
        self.sock, self.t0, self.n = sock, t0, n_remotes
        self.t = {}
        self.waits = []
        self._stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self._stop:
            ts = time.monotonic()
            try:
                doc = B.helper_request(self.sock, "clusters", timeout=60)
            except (OSError, ValueError):
                time.sleep(POLL_S)
                continue
            tr = time.monotonic()
            self.waits.append(tr - ts)
            self.t.setdefault("socket", tr - self.t0)
            if "remotes" not in self.t and len(doc) == self.n and all(
                    c.get("state") == "connected" and c.get("synced") for c in doc):
                self.t["remotes"] = tr - self.t0
            time.sleep(POLL_S)

    def stop(self):
        """Stops the thread; the longest wait for an answer, in seconds."""
        self._stop = True
        self.th.join(timeout=70)
        return max(self.waits, default=0.0)


def stop_helper(helper):
    p = helper.proc
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(pred, t0, timeout=CHANGE_TIMEOUT):
    """Seconds from t0 until pred() holds, polled every ~0.5 ms; None after timeout."""
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(0.0005)


def slots_of(svcs, bes, key):
    """The backend IPs (bytes) in the slots of frontend key."""
    v = svcs.lookup(key)
    if v is None:
        return []
    count, rid = B.struct.unpack_from("=HH", v)
    out = []
    for s in range(1, count + 1):
        b = bes.lookup(B.struct.pack("=HH", rid, s))
        if b:
            out.append(b[:4])
    return out


def changes(ctx, rnd, root, n):
    """With everything synced: n single changes in cluster2's etcd, each
    timed from the put to the map.  Service records (kapi rounds): one
    backend added to a record, then removed again; ip/v1 records: one put,
    then deleted.  The cost of one change at this scale."""
    r, etcd = ctx.remotes[0], ctx.etcds[1].client
    ipc = B.BpfMap(os.path.join(root, "cw_ipcache"))
    res = {"svc_add": [], "svc_del": [], "ip_put": [], "ip_del": [], "lost": 0}
    svcs = bes = None
    if rnd.mode == "kapi" and r.n_svcs:
        svcs = B.BpfMap(os.path.join(root, "cw_lb4_services"))
        bes = B.BpfMap(os.path.join(root, "cw_lb4_backends"))
    try:
        for i in range(n):
            if svcs:
                s = (i * 7919) % r.n_svcs
                key = lb_key(str(ipaddress.IPv4Address(SVC_IP0 + s)))
                extra = f"10.{100 + r.id}.255.{i % 250 + 1}"
                xb = socket.inet_aton(extra)
                t0 = time.monotonic()
                etcd.put(*r.service(s, [extra]))
                t = wait_for(lambda: xb in slots_of(svcs, bes, key), t0)
                res["svc_add"].append(t) if t is not None else None
                t0 = time.monotonic()
                etcd.put(*r.service(s))
                t2 = wait_for(lambda: xb not in slots_of(svcs, bes, key), t0)
                res["svc_del"].append(t2) if t2 is not None else None
                res["lost"] += (t is None) + (t2 is None)
            ip = f"10.{100 + r.id}.254.{i % 250 + 1}"
            k, v = r.ip_record(ip, 0)
            want = ipcache_value(r.identity(0), r.node_ip(0), r.id)
            lk = lpm_key(ip)
            t0 = time.monotonic()
            etcd.put(k, v)
            t = wait_for(lambda: (ipc.lookup(lk) or b"")[:10] == want, t0)
            res["ip_put"].append(t) if t is not None else None
            t0 = time.monotonic()
            etcd.delete(k)
            t2 = wait_for(lambda: (ipc.lookup(lk) or b"")[:10] != want, t0)
            res["ip_del"].append(t2) if t2 is not None else None
            res["lost"] += (t is None) + (t2 is None)
    finally:
        for m in (ipc, svcs, bes):
            if m:
                m.close()
    return res


def check_state(ctx, rnd, root, sock, ipc):
    """Every entry the helper wrote, against the data: a list of findings."""
    out = []
    got = dict(ipc.items()) if ipc else {}
    wrong = missing = 0
    examples = []
    for k, want in ctx.want_ipc.items():
        v = got.get(k)
        if v is None:
            missing += 1
            continue
        if v[:10] != want:
            wrong += 1
            if len(examples) < 3:
                gi, gt, gc = B.struct.unpack_from("=I4sH", v)
                wi, wt, wc = B.struct.unpack_from("=I4sH", want)
                examples.append(f"{socket.inet_ntoa(k[4:])}: identity {gi} tunnel "
                                f"{socket.inet_ntoa(gt)} cluster {gc}, want {wi} "
                                f"{socket.inet_ntoa(wt)} {wc}")
    extra = [k for k, v in got.items() if k not in ctx.want_ipc and
             B.struct.unpack_from("=H", v, 8)[0] != LOCAL[1]]
    rnd.fig["ipcache_entries"] = len(got)
    if wrong or missing or extra:
        out.append(f"ipcache: {missing} missing, {wrong} wrong, {len(extra)} not in the data"
                   + (": " + "; ".join(examples) if examples else ""))
    tun = open_map(root, "cw_tunnel")
    if tun:
        have = dict(tun.items())
        tun.close()
        bad = sum(1 for k, ip in ctx.want_tun.items() if have.get(k, b"")[:4] != ip)
        rnd.fig["tunnel_entries"] = len(have)
        if bad or len(have) != len(ctx.want_tun):
            out.append(f"tunnel map: {len(have)} entries, {bad} of the {len(ctx.want_tun)} "
                       "remote PodCIDRs missing or pointing elsewhere")
    st = B.helper_request(sock, "status")
    cnt = st.get("counters", {})
    rnd.fig["invalid_records"] = cnt.get("invalidRecords")
    rnd.fig["reconciles"] = cnt.get("reconciles")
    if cnt.get("invalidRecords"):
        out.append(f"the helper counted {cnt['invalidRecords']} invalid records (see its log)")
    if st.get("lastError"):
        out.append(f"helper lastError: {st['lastError']}")
    cl = B.helper_request(sock, "clusters")
    rnd.fig["clusters"] = {c["name"]: {k: c.get(k) for k in ("nodes", "endpoints", "identities",
                                                             "services")} for c in cl}
    for c, r in zip(sorted(cl, key=lambda c: c["name"]), ctx.remotes):
        want = {"nodes": r.n_nodes, "endpoints": r.n_eps, "identities": r.n_ids,
                "services": r.n_svcs}
        got_c = {k: c.get(k) for k in want}
        if got_c != want:
            out.append(f"clusters: {c['name']} reports {got_c}, the data has {want}")
    if rnd.mode == "kapi":
        svcs = open_map(root, "cw_lb4_services")
        bes = open_map(root, "cw_lb4_backends")
        fes = dict(svcs.items())
        slots = dict(bes.items())
        svcs.close()
        bes.close()
        bad = 0
        for k, want in ctx.want_svc.items():
            v = fes.get(k)
            if v is None:
                bad += 1
                continue
            count, rid = B.struct.unpack_from("=HH", v)
            have = []
            for s in range(1, count + 1):
                b = slots.get(B.struct.pack("=HH", rid, s))
                if b:
                    a, p, c = B.struct.unpack_from("=4s2sH", b)
                    have.append((a, int.from_bytes(p, "big"), c))
            if sorted(have) != want:
                bad += 1
        rnd.fig["frontends"] = sum(1 for k in fes if k in ctx.want_svc)
        rnd.fig["slots"] = len(slots)
        if bad:
            out.append(f"services: {bad} of {len(ctx.want_svc)} frontends missing or with "
                       "slots other than the records' backends")
    return out


# --- report --------------------------------------------------------------------------

def fmt_range(vals, unit, digits=2):
    if not vals:
        return "-"
    m = B.median(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f} {unit}"
    return f"{m:.{digits}f} {unit} ({min(vals):.{digits}f}-{max(vals):.{digits}f})"


def verdict(v, goal):
    return "met" if v < goal else "NOT MET"


def main():
    args = parse_args()
    preflight()
    cleanup = B.Cleanup()
    ctx = argparse.Namespace()
    ctx.prefix = f"cwbench-mesh-{os.getpid()}"
    ctx.logs = args.logs
    ctx.n_changes = args.changes
    netns = ctx.prefix
    B.netns_add(cleanup, netns)
    B.enter_netns(B.netns_path(netns))
    # the node's underlay: a veth pair whose both ends stay in the namespace
    # (this kernel has no dummy driver); the helper finds its node IP on eth0
    B.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    B.sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
    B.sh("ip", "link", "set", "eth0-peer", "up")
    B.sh("ip", "link", "set", "eth0", "up")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    ctx.scratch = tempfile.mkdtemp(prefix=ctx.prefix + "-", dir=shm)
    cleanup.push(f"dir {ctx.scratch}", shutil.rmtree, ctx.scratch, True)
    ctx.remotes = [Remote(i, args) for i in range(args.clusters)]
    modes = ["kapi", "none"] if args.k8s == "both" else [args.k8s]
    n_local = max((r.n_svcs for r in ctx.remotes), default=0)

    t_setup = time.monotonic()
    ctx.etcds = [Etcd(cleanup, ctx.scratch, LOCAL[0], ETCD_PORT0)] + \
        [Etcd(cleanup, ctx.scratch, r.name, r.port) for r in ctx.remotes]
    for e in ctx.etcds:
        e.wait()
    ctx.local_cfg = ctx.etcds[0].config(ctx.scratch)
    ctx.mesh_dir = os.path.join(ctx.scratch, "clustermesh")
    os.makedirs(ctx.mesh_dir)
    for e in ctx.etcds[1:]:
        e.config(ctx.mesh_dir)
    B.log(f"bench: {len(ctx.etcds)} etcds up; loading the remote clusters' records")
    t_load = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(ctx.remotes)) as ex:
        loaded = list(ex.map(load, ctx.etcds[1:], ctx.remotes))
    load_s = time.monotonic() - t_load
    puts = sum(n for n, _ in loaded)
    B.log(f"bench: {puts} keys loaded in {load_s:.1f}s")
    if "kapi" in modes:
        start_kapi(cleanup, ctx.scratch, n_local)
    ctx.want_ipc = expected_ipcache(ctx.remotes)
    ctx.want_tun = expected_tunnels(ctx.remotes)
    ctx.want_svc = expected_services(ctx.remotes, n_local)
    ctx.want_count = {k: B.struct.pack("=H", len(v)) for k, v in ctx.want_svc.items()}
    ctx.sample = ipcache_sample(ctx.want_ipc)
    setup_s = time.monotonic() - t_setup

    rounds = []
    for i in range(args.rounds):
        # alternate which mode goes first, so neither always runs on a warmer machine
        for mode in (modes if i % 2 == 0 else modes[::-1]):
            n = len(rounds) + 1
            B.log(f"bench: round {n} ({'--no-k8s' if mode == 'none' else 'kapi'})")
            rnd = run_round(cleanup, ctx, Round(n, mode))
            B.log(f"bench: round {n}: full sync {rnd.t['full']:.2f}s, VmHWM "
                  f"{rnd.hwm_mib:.1f} MiB" + (f"; {'; '.join(rnd.checks)}" if rnd.checks else ""))
            rounds.append(rnd)

    # --- report ---
    eps, ids = sum(r.n_eps for r in ctx.remotes), sum(r.n_ids for r in ctx.remotes)
    nsv, nodes = sum(r.n_svcs for r in ctx.remotes), sum(r.n_nodes for r in ctx.remotes)
    print()
    print(f"Mesh scale: one node helper ({LOCAL[0]}, id {LOCAL[1]}, tunnel routing) connected "
          f"to {len(ctx.remotes)} remote clusters (ids 2..{1 + len(ctx.remotes)}), each its own "
          f"etcd 3.4 (plain http, this benchmark's netns, tmpfs)")
    print(f"remote data: {eps:,} endpoints (ip/v1), {ids:,} identities (id/), {nsv:,} services "
          f"(services/v1: {n_local:,} names, each published by every cluster, {BACKENDS} "
          f"backends each), {nodes:,} nodes with PodCIDRs; {puts:,} keys loaded in "
          f"{load_s:.1f} s ({TXN} puts per transaction)")
    if "kapi" in modes:
        print(f"kapi rounds: the local API (kapi.py) holds {n_local:,} global Services of the "
              f"same names (no local endpoints): {len(ctx.want_svc):,} frontends, "
              f"{sum(len(v) for v in ctx.want_svc.values()):,} slots to program")
    if "none" in modes:
        print("--no-k8s rounds: no local Service to match, so the service records are only "
              "mirrored and validated; nothing of them reaches the maps")
    if args.quick or eps < 100000 or ids < 5000 or nsv < 10000 or len(ctx.remotes) != 4:
        print("NOTE: not the goal's scale (4 clusters, 100,000 endpoints, 5,000 identities, "
              "10,000 services): the goals below do not apply to these figures")
    print(f"{args.rounds} round(s) per mode, interleaved; median (min-max); times from the "
          f"helper's start (exec), polled every {POLL_S * 1000:.0f} ms")
    print()
    out = {"endpoints": eps, "identities": ids, "services": nsv, "nodes": nodes,
           "clusters": len(ctx.remotes), "load_s": round(load_s, 2), "modes": {}}
    labels = {"kapi": "kapi (Services)", "none": "--no-k8s"}
    cols = [m for m in ("kapi", "none") if m in modes]
    print(f"  {'':52}" + "".join(f"{labels[m]:>24}" for m in cols))

    def line(label, fn):
        print(f"  {label:52}" + "".join(f"{fn([r for r in rounds if r.mode == m]):>24}"
                                         for m in cols))

    for key, label in (("socket", "start -> socket answers"),
                       ("remotes", "start -> every remote connected and synced"),
                       ("ipcache", f"start -> ipcache holds all {eps:,} endpoints (+ nodes)"),
                       ("services", "start -> frontends and slots all programmed"),
                       ("full", "TIME TO FULL SYNC (the last of these)")):
        line(label, lambda rs, k=key: fmt_range([r.t[k] for r in rs if k in r.t], "s"))
    line("peak resident memory (VmHWM)", lambda rs: fmt_range([r.hwm_mib for r in rs], "MiB", 1))
    line(f"resident memory {SETTLE_S:.0f} s after sync (VmRSS)",
         lambda rs: fmt_range([r.rss_mib for r in rs], "MiB", 1))
    line("helper CPU time until full sync", lambda rs: fmt_range([r.cpu_full for r in rs], "s"))
    line("longest wait for a socket answer until sync", lambda rs: fmt_range(
        [r.sock_max for r in rs], "s"))
    line("full ipcache read by this benchmark",
         lambda rs: fmt_range([x * 1000 for r in rs for x in r.reads], "ms", 0))
    print(f"  after sync, one change at a time in {ctx.remotes[0].name}'s etcd "
          f"({args.changes} per round), put -> map:")
    for key, label in (("svc_add", "a backend added to a services/v1 record -> slot"),
                       ("svc_del", "the backend removed again -> slot gone"),
                       ("ip_put", "an ip/v1 record put -> ipcache entry"),
                       ("ip_del", "the ip/v1 record deleted -> entry gone")):
        line(f"  {label}", lambda rs, k=key: fmt_range(
            [x * 1000 for r in rs for x in r.changes[k]], "ms", 1))
    print()
    for m in cols:
        rs = [r for r in rounds if r.mode == m]
        full = B.median([r.t["full"] for r in rs])
        hwm = max(r.hwm_mib for r in rs)
        out["modes"][m] = {
            "full_sync_s": round(full, 3), "peak_rss_mib_max": round(hwm, 1),
            "rounds": [{"t": {k: round(v, 3) for k, v in r.t.items()},
                        "vmhwm_mib": round(r.hwm_mib, 1), "vmrss_mib": round(r.rss_mib, 1),
                        "cpu_full_s": round(r.cpu_full, 2),
                        "socket_longest_wait_s": round(r.sock_max, 3), "checks": r.checks,
                        "changes_ms": {k: [round(x * 1000, 2) for x in v]
                                       for k, v in r.changes.items() if k != "lost"},
                        **r.fig}
                       for r in rs]}
        print(f"  {labels[m]}: full sync {full:.2f} s (median): goal < {GOAL_S:.0f} s "
              f"{verdict(full, GOAL_S)}; peak memory {hwm:.1f} MiB (highest round): goal < "
              f"{GOAL_MIB:.0f} MiB {verdict(hwm, GOAL_MIB)}")
    print()
    bad = [(r, c) for r in rounds for c in r.checks]
    if bad:
        for r, c in bad:
            print(f"  CHECK round {r.n} ({labels[r.mode]}): {c}")
    else:
        print("  checks: every ipcache entry (identity, tunnel endpoint, cluster), every tunnel "
              "map entry" + (", every frontend's slots" if "kapi" in modes else "") +
              " as the data says; no invalid record counted; clusters' counts right")
    print(f"(setup {setup_s:.0f} s, of which loading {load_s:.0f} s)")
    if args.json:
        B.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        B.log(f"bench: mesh_scale failed: {exc}")
        sys.exit(1)
