#!/usr/bin/env python3
"""Global services across clusters: how long a backend change in cluster2
takes to reach the slots of cluster1's service map, beside etcd's own
delivery of the same record; and how long a client in cluster1 waits,
after its cluster's last backend goes unready, for the first answer from
cluster2 (failover).

One lab (test/lab/lab), two clusters on one underlay: cluster1 (id 1,
pods 10.251/16, services 10.252/16, two nodes) and cluster2 (id 2, pods
10.253/16, services 10.254/16, one node), connected both ways, tunnel
routing.  Node n1 (cluster1-node1) is the observer; every time is
time.monotonic() in this one process.  Observers on n1:

  map    n1's pinned cw_lb4_services and cw_lb4_backends, read by this
         process with bpf(2) every --poll-us: the frontend (ClusterIP,
         port, TCP) of the cluster1 Service, then its slots;
  watch  `etcdctl watch` on cluster2's services/v1 key, in n1's netns with
         the credentials n1's helper has for cluster2 (the read-only
         causeway-remote user): etcd's own delivery of the record to a
         plain watcher on that node, the baseline.

Phase records (--changes, default 1,000): a global Service cwbench-prop in
cluster1 (no selector: no local backend), and in cluster2's etcd its
services/v1 record written directly, through etcd's JSON gateway with
cluster2's writer credentials, as cluster2's mesh-apiserver would write
it.  Each change adds one backend (a backend becoming ready), measured
put -> watch and put -> slot, then removes it again (unready), measured
the same way.  cluster2 has no Service of that name, so its mesh-apiserver
has nothing to publish there; were it to withdraw the record, the watch
sees a change this process did not make and the phase stops, saying so.

Phase ready (--ready, default 50): the whole path.  A global Service
cwbench-ready in both clusters (cluster2's selects app=cwbench-ready);
each change creates one pod on cluster2's node (the lab's kubelet, the
real plugin) and, once in the slots, deletes it.  Stamped by watches on
cluster2's API (pod Ready, EndpointSlice ready), the record watch, and the
map.  Needs cluster2's mesh-apiserver to publish global services.

Phase failover (--failovers, default 10): Service cwbench-fo in both
clusters, service.cilium.io/affinity=local in cluster1 (so its requests
stay home while a local backend is ready); Deployment cwbench-fo with 1
replica on cluster1's second node and 2 on cluster2.  A client pod on n1
sends requests to the ClusterIP continuously, one new TCP connection each
(a Python loop in the pod's netns, stamping every answer with the cluster
that served it).  Each round scales cluster1's Deployment to 0 (as
`kubectl scale` does) and times from the EndpointSlice saying the last
local backend is not ready (and from the scale request) to the first
answer from cluster2; then scales back to 1.

Usage: mesh_services.py [--changes 1000] [--ready 50] [--failovers 10]
                        [--poll-us 200] [--quick] [--json FILE]
(--quick: 100 changes, 5 ready, 3 failovers)
"""

import argparse
import base64
import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
import benchlib as B  # noqa: E402

C1, C2 = "cluster1", "cluster2"
TOPOLOGY = {
    "underlay": "shared",
    "clusters": [
        {"name": C1, "id": 1, "podSubnet": "10.251.0.0/16", "serviceSubnet": "10.252.0.0/16",
         "routing": "tunnel", "nodes": 2},
        {"name": C2, "id": 2, "podSubnet": "10.253.0.0/16", "serviceSubnet": "10.254.0.0/16",
         "routing": "tunnel", "nodes": 1},
    ],
}
NS = "default"
GLOBAL = "service.cilium.io/global"
AFFINITY = "service.cilium.io/affinity"
SVC_KEY = "cilium/state/services/v1/{cluster}/{ns}/{name}"
PROP, READY, FO, CLIENT = "cwbench-prop", "cwbench-ready", "cwbench-fo", "cwbench-client"
BASE_BACKEND = "10.253.200.1"   # the record's backend that stays (no pod holds it)
OP_TIMEOUT = 15.0               # seconds a change may take before it counts as lost
POD_TIMEOUT = 60.0


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, help="backends added (and removed) in cluster2's "
                    "record, one at a time (default 1000; 0: skip)")
    ap.add_argument("--ready", type=int, help="pods made ready (and deleted) in cluster2, one "
                    "at a time (default 50; 0: skip)")
    ap.add_argument("--failovers", type=int, help="failover rounds (default 10; 0: skip)")
    ap.add_argument("--poll-us", type=int, default=200,
                    help="service map poll period in microseconds (default 200)")
    ap.add_argument("--quick", action="store_true", help="100 changes, 5 ready, 3 failovers")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    a = ap.parse_args()
    q = a.quick
    a.changes = a.changes if a.changes is not None else (100 if q else 1000)
    a.ready = a.ready if a.ready is not None else (5 if q else 50)
    a.failovers = a.failovers if a.failovers is not None else (3 if q else 10)
    if not 0 <= a.changes <= 5000 or not 0 <= a.ready <= 200 or not 0 <= a.failovers <= 50 or \
            not 50 <= a.poll_us <= 100000:
        ap.error("--changes 0..5000, --ready 0..200, --failovers 0..50, --poll-us 50..100000")
    return a


# --- cluster1's service map, read with bpf(2) ------------------------------------------

class Lb:
    """A node's cw_lb4_services and cw_lb4_backends (include/causeway/datapath.h)."""

    def __init__(self, bpf_root):
        self.svcs = B.BpfMap(os.path.join(bpf_root, "cw_lb4_services"))
        self.bes = B.BpfMap(os.path.join(bpf_root, "cw_lb4_backends"))

    @staticmethod
    def key(ip, port=80, proto=6):
        return socket.inet_aton(ip) + struct.pack("!H", port) + bytes((proto, 0))

    def slots(self, key):
        """[(backend IP, port, cluster id)] of frontend key; None without the frontend."""
        v = self.svcs.lookup(key)
        if v is None:
            return None
        count, rid = struct.unpack_from("=HH", v)
        out = []
        for s in range(1, count + 1):
            b = self.bes.lookup(struct.pack("=HH", rid, s))
            if b is not None:
                a, p, c = struct.unpack_from("=4s2sH", b)
                out.append((socket.inet_ntoa(a), int.from_bytes(p, "big"), c))
        return out

    def close(self):
        self.svcs.close()
        self.bes.close()


# --- observers ----------------------------------------------------------------------------

class Op:
    """One measured change; the observers fill in their times."""

    def __init__(self, kind, ip):
        self.kind, self.ip = kind, ip     # kind: "add" or "remove"
        self.t0 = self.t_ack = None
        self.t = {}                        # observer -> time
        self.done = threading.Event()
        self.need = ("watch", "map")

    def stamp(self, what, t):
        if what not in self.t:
            self.t[what] = t
            if all(k in self.t for k in self.need):
                self.done.set()


class Observers(B.WatchObserver):
    """etcd's delivery of the service record, and the frontend's slots in
    n1's map (benchlib.WatchObserver); stamps "watch" and "map"."""

    def __init__(self, cleanup, watch_argv, key, lb, fe_key, poll_s):
        self.key = key
        self.lb, self.fe_key = lb, fe_key
        self.mine = set()        # values this process put at the key
        self.foreign = []        # events on the key this process did not cause
        super().__init__(cleanup, watch_argv, poll_s)

    def on_watch(self, t, key, value, op):
        if key != self.key:
            return
        if value is None or value not in self.mine:
            self.foreign.append((t, "DELETE" if value is None else value[:200]))
            return
        if op is None:
            return
        try:
            bes = json.loads(value).get("backends") or {}
        except ValueError:
            return
        if (op.ip in bes) == (op.kind == "add"):
            op.stamp("watch", t)

    def poll(self, op):
        if "map" in op.t:
            return False
        slots = self.lb.slots(self.fe_key) or []
        return any(s[0] == op.ip for s in slots) == (op.kind == "add")

    def on_polled(self, op, t):
        op.stamp("map", t)


class SlotLog:
    """A thread reading one frontend's slots every poll period, logging
    (time, frozenset of (backend IP, cluster id)) whenever they change."""

    def __init__(self, cleanup, lb, fe_key, poll_s):
        self.lb, self.fe_key, self.poll_s = lb, fe_key, poll_s
        self.log = []
        self.lock = threading.Lock()
        self.stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()
        cleanup.push("slot log", self.shutdown)

    def _run(self):
        last = None
        while not self.stop:
            cur = frozenset((a, c) for a, _p, c in self.lb.slots(self.fe_key) or [])
            t = time.monotonic()
            if cur != last:
                with self.lock:
                    self.log.append((t, cur))
                last = cur
            time.sleep(self.poll_s)

    def now(self):
        with self.lock:
            return self.log[-1][1] if self.log else frozenset()

    def events(self):
        with self.lock:
            return list(self.log)

    def shutdown(self):
        self.stop = True
        self.th.join(timeout=2)


class ApiWatch:
    """A watch on one collection of a lab cluster's API, on a thread:
    fn(type, object, time) for every event, re-watched when the server
    ends the request."""

    def __init__(self, cleanup, kube, path, fn):
        self.kube, self.path, self.fn = kube, path, fn
        self.stop = False
        self.rv = kube.get(path)["metadata"]["resourceVersion"]
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()
        cleanup.push(f"watch {path}", self.shutdown)

    def _run(self):
        while not self.stop:
            try:
                for ev in self.kube.watch(self.path, self.rv, timeout_seconds=60):
                    t = time.monotonic()
                    obj = ev.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.rv = rv
                    if ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self.fn(ev["type"], obj, t)
                    if self.stop:
                        return
            except Exception as exc:  # a dropped watch: list again and resume
                if self.stop:
                    return
                B.log(f"bench: watch {self.path}: {exc}; again")
                time.sleep(0.5)
                try:
                    self.rv = self.kube.get(self.path)["metadata"]["resourceVersion"]
                except Exception:
                    pass

    def shutdown(self):
        self.stop = True


# --- the lab's objects ------------------------------------------------------------------

class Objects:
    """API objects this benchmark makes in the lab, deleted at cleanup
    (the lab may be taken down right after, but deleting first lets the
    kubelets tear their pods down the normal way)."""

    def __init__(self, cleanup, lab):
        self.lab = lab
        self.made = []
        cleanup.push("lab objects", self.delete_all)

    def create(self, cluster, path, obj):
        kube = self.lab.kube(cluster)
        out = kube.post(path, obj)
        self.made.append((cluster, f"{path}/{obj['metadata']['name']}"))
        return out

    def delete_all(self):
        for cluster, path in reversed(self.made):
            try:
                self.lab.kube(cluster).delete(path)
            except Exception:
                pass  # gone already
        self.made = []


def service(name, selector=None, annotations=None):
    spec = {"type": "ClusterIP",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]}
    if selector:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": dict({GLOBAL: "true"}, **(annotations or {}))},
            "spec": spec}


def deployment(name, replicas, node):
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                                           "containers": [{"name": "c", "image": "cwbench",
                                                           "ports": [{"containerPort": 80}]}]}}}}


def wait(pred, timeout, what, step=0.05):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def svc_record(cluster, cluster_id, name, frontend, backends):
    """A services/v1 record as the mesh-apiserver writes it (services.c's
    cw_svc_rec_format: Cilium's ClusterService, backends sorted)."""
    return json.dumps({
        "cluster": cluster, "namespace": NS, "name": name,
        "frontends": {frontend: {"http": {"Protocol": "TCP", "Port": 80}}},
        "backends": {ip: {"http": {"Protocol": "TCP", "Port": 80}}
                     for ip in sorted(backends, key=lambda a: ipaddress.IPv4Address(a))},
        "labels": {}, "selector": {}, "includeExternal": True, "shared": True,
        "clusterID": cluster_id}, separators=(",", ":"))


# --- phases ---------------------------------------------------------------------------------

def records_phase(ctx, args):
    """Backends added to and removed from cluster2's record, written
    directly; put -> watch, put -> slot."""
    objs = ctx.objs
    svc = objs.create(C1, f"/api/v1/namespaces/{NS}/services", service(PROP))
    fe = svc["spec"]["clusterIP"]
    fe_key = Lb.key(fe)
    wait(lambda: ctx.lb.slots(fe_key) is not None, 30,
         f"{C1}'s frontend {fe}:80 in {ctx.n1['name']}'s service map")
    key = SVC_KEY.format(cluster=C2, ns=NS, name=PROP)
    gw = B.EtcdHttp.from_config(ctx.m2["etcdConfig"])
    ctx.cleanup.push("etcd writer", gw.close)
    ctx.cleanup.push(f"record {key}", lambda: gw.delete(key))
    watch_argv = B.in_netns(B.netns_path(ctx.n1["netns"]), B.etcdctl_argv(
        ctx.remote_cfg, "watch", key, "-w", "json"))
    obs = Observers(ctx.cleanup, watch_argv, key, ctx.lb, fe_key, args.poll_us / 1e6)
    ctx.cleanup.push("observers", obs.shutdown)
    cfe = "10.254.0.200"  # the record's own frontend: informational for the receiver

    def put(backends):
        v = svc_record(C2, 2, PROP, cfe, backends)
        with obs.lock:
            obs.mine.add(v.encode())
        gw.put(key, v)

    # warm-up: the base record all the way to the map (and the watch running)
    end = time.monotonic() + 60
    while True:
        op = Op("add", BASE_BACKEND)
        if obs.run(op, lambda: put([BASE_BACKEND]), 1.0):
            break
        obs.watch.check()
        if time.monotonic() > end:
            raise RuntimeError(f"{C2}'s record {key} never reached {ctx.n1['name']}'s service "
                               f"map (watch saw it: {'watch' in op.t}); see {ctx.n1['log']}")
    adds, removes, lost = [], [], []
    t_phase = time.monotonic()
    for i in range(args.changes):
        ip = str(ipaddress.IPv4Address("10.253.201.1") + i)
        for kind, bes in (("add", [BASE_BACKEND, ip]), ("remove", [BASE_BACKEND])):
            op = Op(kind, ip)
            if obs.run(op, lambda: put(bes), OP_TIMEOUT):
                (adds if kind == "add" else removes).append(op)
            else:
                lost.append(op)
            time.sleep(random.uniform(0, 0.002))  # no lock-step with the helper's timers
        if obs.foreign:
            raise RuntimeError(f"someone else changed {key} in {C2}'s etcd during the phase "
                               f"(its mesh-apiserver?): {obs.foreign[:3]}")
        if (i + 1) % 250 == 0 or i + 1 == args.changes:
            B.log(f"bench: records: {i + 1}/{args.changes} backends added and removed "
                  f"({time.monotonic() - t_phase:.0f}s)")
    phase_s = time.monotonic() - t_phase
    obs.stop = True
    obs.threads[1].join(timeout=2)
    obs.shutdown()
    gw.delete(key)
    return {"adds": adds, "removes": removes, "lost": lost, "seconds": phase_s,
            "period_us": obs.poll_wall / obs.loops * 1e6 if obs.loops else 0,
            "poll_cpu": obs.poll_cpu / obs.poll_wall if obs.poll_wall else 0}


def first_after(events, t, pred):
    """The time of the first (time, value) event at or after t whose value satisfies pred."""
    return next((te for te, v in events if te >= t and pred(v)), None)


def ready_phase(ctx, args):
    """Pods made ready (and deleted) in cluster2, through its kubelet,
    API, mesh-apiserver and etcd, to cluster1's slots.  The watches log
    every event with its time; each pod's stamps are read from the logs
    afterwards, so no event is missed for arriving before the pod's IP
    was known."""
    lab, objs = ctx.lab, ctx.objs
    svc1 = objs.create(C1, f"/api/v1/namespaces/{NS}/services", service(READY))
    objs.create(C2, f"/api/v1/namespaces/{NS}/services",
                service(READY, selector={"app": READY}))
    fe_key = Lb.key(svc1["spec"]["clusterIP"])
    key = SVC_KEY.format(cluster=C2, ns=NS, name=READY)
    # cluster2's mesh-apiserver publishes the (empty) record first
    rd = B.EtcdHttp.from_config(ctx.remote_cfg)
    ctx.cleanup.push("etcd reader", rd.close)
    try:
        wait(lambda: rd.get(key) is not None, 20, f"{C2}'s mesh-apiserver to publish {key}")
    except RuntimeError:
        return {"skipped": f"{C2}'s mesh-apiserver did not publish {key} within 20 s (does it "
                           "publish global services yet?)"}
    wait(lambda: ctx.lb.slots(fe_key) is not None, 30, f"{C1}'s frontend of {READY}")

    lock = threading.Lock()
    pods, slices, records = [], [], []   # (time, value) logs, appended by the watchers

    def on_pod(typ, pod, t):
        m, st = pod.get("metadata") or {}, pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in st.get("conditions") or [])
        gone = typ == "DELETED" or bool(m.get("deletionTimestamp"))
        with lock:
            pods.append((t, (m.get("name"), st.get("podIP"), ready and not gone, gone)))

    def on_slice(typ, sl, t):
        if ((sl.get("metadata") or {}).get("labels") or {}).get(
                "kubernetes.io/service-name") != READY or typ == "DELETED":
            return
        ready = {a for e in sl.get("endpoints") or [] if (e.get("conditions") or {}).get("ready", True)
                 for a in e.get("addresses") or []}
        with lock:
            slices.append((t, ready))

    k2 = lab.kube(C2)
    ApiWatch(ctx.cleanup, k2, f"/api/v1/namespaces/{NS}/pods", on_pod)
    ApiWatch(ctx.cleanup, k2, f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
             on_slice)
    # from the current revision on: etcdctl takes a moment to start, and a
    # watch without a start revision would miss what happened meanwhile
    rev = int(rd.call("/v3/kv/range", {"key": B.b64(key)})["header"]["revision"])
    watch = B.Server(ctx.cleanup, "etcdctl watch (ready)", B.in_netns(
        B.netns_path(ctx.n1["netns"]), B.etcdctl_argv(ctx.remote_cfg, "watch", key,
                                                    f"--rev={rev + 1}", "-w", "json")),
        stdout=subprocess.PIPE, text=False)

    def watch_reader():
        for line in watch.proc.stdout:
            t = time.monotonic()
            try:
                evs = json.loads(line).get("Events") or []
            except ValueError:
                continue
            for ev in evs:
                try:
                    bes = set(json.loads(base64.b64decode((ev.get("kv") or {}).get("value", "")))
                              .get("backends") or {})
                except ValueError:
                    bes = set()
                with lock:
                    records.append((t, bes))
    threading.Thread(target=watch_reader, daemon=True).start()

    slots = SlotLog(ctx.cleanup, ctx.lb, fe_key, args.poll_us / 1e6)

    def in_slots(ip):
        return any(a == ip for a, _c in slots.now())

    # Warm-up, unmeasured: one pod all the way (the watches running, the
    # label set's identity allocated on cluster2's node)
    name = f"{READY}-warmup"
    lab.create_pod(C2, name, ctx.m2["name"], labels={"app": READY})
    ip = lab.wait_pod(C2, name, timeout=POD_TIMEOUT)["ip"]
    wait(lambda: any(ip in v for _t, v in records) and in_slots(ip), OP_TIMEOUT * 2,
         f"the warm-up pod {ip} in the record watch and in {C1}'s slots")
    k2.delete(f"/api/v1/namespaces/{NS}/pods/{name}")
    wait(lambda: all(p["metadata"]["name"] != name
                     for p in k2.get(f"/api/v1/namespaces/{NS}/pods")["items"])
         and not in_slots(ip), POD_TIMEOUT, f"pod {name} gone")

    done, lost = [], []
    t_phase = time.monotonic()
    for i in range(args.ready):
        name = f"{READY}-{i}"
        x = {"name": name, "create": time.monotonic()}
        lab.create_pod(C2, name, ctx.m2["name"], labels={"app": READY})
        try:
            def ready_ip():
                with lock:
                    return next((v[1] for _, v in pods if v[0] == name and v[2] and v[1]), None)
            ip = x["ip"] = wait(ready_ip, POD_TIMEOUT, f"pod {C2}/{name} ready", step=0.01)
            wait(lambda: in_slots(ip), OP_TIMEOUT, f"{ip} in {C1}'s slots", step=0.001)
            x["delete"] = time.monotonic()
            k2.delete(f"/api/v1/namespaces/{NS}/pods/{name}")
            wait(lambda: not in_slots(ip), OP_TIMEOUT, f"{ip} out of {C1}'s slots", step=0.001)
            # the pod gone from the API before the next one (IPs may be reused)
            wait(lambda: all(p["metadata"]["name"] != name
                             for p in k2.get(f"/api/v1/namespaces/{NS}/pods")["items"]),
                 POD_TIMEOUT, f"pod {name} gone", step=0.1)
            done.append(x)
        except RuntimeError as exc:
            B.log(f"bench: ready: {name}: {exc}")
            lost.append(x)
        if (i + 1) % 10 == 0 or i + 1 == args.ready:
            B.log(f"bench: ready: {i + 1}/{args.ready} pods ({time.monotonic() - t_phase:.0f}s)")
    time.sleep(0.5)  # the last events
    watch.stop()
    slots.shutdown()
    sl = slots.events()
    with lock:
        for x in done:
            ip, t0, td = x["ip"], x["create"], x["delete"]
            x["api_ready"] = first_after(pods, t0, lambda v: v[0] == x["name"] and v[2])
            x["slice_ready"] = first_after(slices, t0, lambda v: ip in v)
            x["record_ready"] = first_after(records, t0, lambda v: ip in v)
            x["api_unready"] = first_after(pods, td, lambda v: v[0] == x["name"] and v[3])
            x["slice_unready"] = first_after(slices, td, lambda v: ip not in v)
            x["record_unready"] = first_after(records, td, lambda v: ip not in v)
            x["map_ready"] = first_after(sl, t0, lambda v: any(a == ip for a, _c in v))
            x["map_unready"] = first_after(sl, td, lambda v: all(a != ip for a, _c in v))
    return {"done": done, "lost": lost, "seconds": time.monotonic() - t_phase}


CLIENT_LOOP = r"""
import socket, sys, time
ip, port, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
req = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"
out = sys.stdout
while True:
    t0 = time.monotonic()
    try:
        s = socket.create_connection((ip, port), timeout=0.5)
        try:
            s.sendall(req)
            buf = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                buf += b
        finally:
            s.close()
        i = buf.find(b'"cluster":"')
        what = buf[i + 11:buf.index(b'"', i + 11)].decode() if i >= 0 else "garbage"
    except Exception as e:
        what = "FAIL:" + type(e).__name__
    out.write("%.6f %.6f %s\n" % (t0, time.monotonic(), what))
    out.flush()
    time.sleep(pause)
"""


class Client:
    """The request loop in the client pod's netns; its answers, stamped."""

    def __init__(self, cleanup, netns, ip, pause=0.002):
        self.answers = []     # (t_sent, t_answered, cluster or FAIL:...)
        self.lock = threading.Lock()
        self.srv = B.Server(cleanup, "client loop", B.in_netns(
            netns, [sys.executable, "-c", CLIENT_LOOP, ip, "80", str(pause)]),
            stdout=subprocess.PIPE)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.srv.proc.stdout:
            p = line.split()
            if len(p) == 3:
                with self.lock:
                    self.answers.append((float(p[0]), float(p[1]), p[2]))

    def since(self, t):
        with self.lock:
            return [a for a in self.answers if a[0] >= t or a[1] >= t]

    def last(self, n):
        with self.lock:
            return self.answers[-n:]


def failover_phase(ctx, args):
    lab, objs = ctx.lab, ctx.objs
    n1b = ctx.c1["nodes"][1]["name"]
    svc1 = objs.create(C1, f"/api/v1/namespaces/{NS}/services",
                       service(FO, selector={"app": FO}, annotations={AFFINITY: "local"}))
    objs.create(C2, f"/api/v1/namespaces/{NS}/services", service(FO, selector={"app": FO}))
    objs.create(C1, f"/apis/apps/v1/namespaces/{NS}/deployments", deployment(FO, 1, n1b))
    objs.create(C2, f"/apis/apps/v1/namespaces/{NS}/deployments",
                deployment(FO, 2, ctx.m2["name"]))
    objs.create(C1, f"/api/v1/namespaces/{NS}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": CLIENT, "labels": {"app": CLIENT}},
        "spec": {"nodeName": ctx.n1["name"],
                 "containers": [{"name": "c", "image": "cwbench", "ports": [{"containerPort": 80}]}]}})
    fe = svc1["spec"]["clusterIP"]
    fe_key = Lb.key(fe)
    rec = lab.wait_pod(C1, CLIENT, timeout=POD_TIMEOUT)
    key = SVC_KEY.format(cluster=C2, ns=NS, name=FO)
    rd = B.EtcdHttp.from_config(ctx.remote_cfg)
    ctx.cleanup.push("etcd reader", rd.close)

    try:
        wait(lambda: (rd.get(key) or "").count('"Protocol"') >= 2, 60,
             f"{C2}'s mesh-apiserver to publish {key} with its 2 backends")
    except RuntimeError:
        return {"skipped": f"{C2}'s mesh-apiserver did not publish {key} with its 2 ready "
                           "backends within 60 s (does it publish global services yet?)"}
    k1 = lab.kube(C1)
    local_state = {"unready": None, "ready": None}
    lock = threading.Lock()

    def on_slice(typ, sl, t):
        if ((sl.get("metadata") or {}).get("labels") or {}).get(
                "kubernetes.io/service-name") != FO:
            return
        n_ready = sum(1 for e in sl.get("endpoints") or []
                      if (e.get("conditions") or {}).get("ready", True))
        with lock:
            if n_ready == 0 and local_state["unready"] is None:
                local_state["unready"] = t
            if n_ready > 0 and local_state["ready"] is None:
                local_state["ready"] = t

    ApiWatch(ctx.cleanup, k1, f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
             on_slice)
    slots = SlotLog(ctx.cleanup, ctx.lb, fe_key, args.poll_us / 1e6)
    client = Client(ctx.cleanup, B.netns_path(rec["netns"]), fe, pause=0.0005)
    dep = f"/apis/apps/v1/namespaces/{NS}/deployments/{FO}"

    def settled_home(n=20):
        last = client.last(n)
        return len(last) == n and all(a[2] == C1 for a in last)

    rounds = []
    for r in range(args.failovers):
        wait(settled_home, POD_TIMEOUT, f"{C1}'s client answered by {C1} only "
             f"(affinity local; last answers {client.last(5)})")
        with lock:
            local_state["unready"] = local_state["ready"] = None
        t_scale = time.monotonic()
        k1.merge_patch(dep, {"spec": {"replicas": 0}})
        wait(lambda: any(a[2] == C2 and a[1] > t_scale for a in client.since(t_scale)),
             OP_TIMEOUT * 2, f"an answer from {C2} after scaling {C1}'s {FO} to 0")
        ans = client.since(t_scale)
        first_remote = next(a for a in ans if a[2] == C2 and a[1] > t_scale)
        t_unready = local_state["unready"]
        fails = [a for a in ans if a[2].startswith("FAIL") and a[1] <= first_remote[1]]
        ref = t_unready or t_scale
        last_local = max((a[1] for a in ans if a[2] == C1), default=None)
        wait(lambda: (lambda v: v and all(c == 2 for _a, c in v))(slots.now()), OP_TIMEOUT,
             f"only {C2}'s backends in {C1}'s slots")
        t_remote_slots = first_after(slots.events(), t_scale,
                                     lambda v: v and all(c == 2 for _a, c in v))
        t_back = time.monotonic()
        k1.merge_patch(dep, {"spec": {"replicas": 1}})
        wait(lambda: any(a[2] == C1 and a[1] > t_back for a in client.since(t_back)),
             POD_TIMEOUT, f"an answer from {C1} after scaling back")
        first_home = next(a for a in client.since(t_back) if a[2] == C1 and a[1] > t_back)
        t_home_slots = first_after(slots.events(), t_back,
                                   lambda v: v and all(c == 1 for _a, c in v))
        rounds.append({
            "scale_to_first_remote": first_remote[1] - t_scale,
            "unready_to_first_remote": first_remote[1] - t_unready if t_unready else None,
            "scale_to_unready": t_unready - t_scale if t_unready else None,
            "unready_to_remote_slots": t_remote_slots - t_unready
            if t_unready and t_remote_slots else None,
            "ready_to_home_slots": t_home_slots - local_state["ready"]
            if local_state["ready"] and t_home_slots else None,
            "failed_requests": len(fails),
            # (why, sent, answered) in ms from the slice saying unready
            "failures": [(a[2][5:], round(ms(a[0] - ref), 2), round(ms(a[1] - ref), 2))
                         for a in fails],
            "last_local_after_scale": last_local - t_scale if last_local else None,
            "ready_to_first_home": first_home[1] - local_state["ready"]
            if local_state["ready"] else None,
            "scale_back_to_first_home": first_home[1] - t_back,
        })
        B.log(f"bench: failover {r + 1}/{args.failovers}: first {C2} answer "
              f"{(first_remote[1] - t_scale) * 1000:.0f} ms after the scale request, "
              f"{len(fails)} failed requests")
    with client.lock:
        n, span = len(client.answers), client.answers[-1][1] - client.answers[0][0]
    return {"rounds": rounds, "requests": n, "rate": n / span if span else 0,
            "failed_total": sum(1 for a in client.answers if a[2].startswith("FAIL"))}


# --- report ---------------------------------------------------------------------------------

def ms(x):
    return x * 1000.0


def row(label, vals, out, key):
    if not vals:
        print(f"  {label:56} (no samples)")
        return
    v = [ms(x) for x in vals]
    s = {"p50": B.percentile(v, 50), "p99": B.percentile(v, 99), "max": max(v), "n": len(v)}
    out[key] = {k: round(x, 3) if isinstance(x, float) else x for k, x in s.items()}
    print(f"  {label:56} p50 {s['p50']:8.2f} ms  p99 {s['p99']:8.2f} ms  max {s['max']:8.2f} ms")


def report_records(res, out):
    print(f"records: {len(res['adds'])} backends added to {C2}'s services/v1 record and "
          f"{len(res['removes'])} removed, one at a time, written to {C2}'s etcd ({res['seconds']:.0f}s)")
    a, r = res["adds"], res["removes"]
    row("put -> etcdctl watch on n1 has it (etcd's delivery)", [o.t["watch"] - o.t0 for o in a],
        out, "add_watch")
    row("put -> the backend in n1's slots (cw_lb4_backends)", [o.t["map"] - o.t0 for o in a], out,
        "add_map")
    row("helper's extra time (slots - watch, per change)", [o.t["map"] - o.t["watch"] for o in a],
        out, "add_helper_extra")
    row("put request round trip (for reference)", [o.t_ack - o.t0 for o in a], out, "put_rtt")
    row("removal put -> etcdctl watch has it", [o.t["watch"] - o.t0 for o in r], out, "rm_watch")
    row("removal put -> the backend out of n1's slots", [o.t["map"] - o.t0 for o in r], out, "rm_map")
    row("helper's extra time on removal", [o.t["map"] - o.t["watch"] for o in r], out,
        "rm_helper_extra")
    if "add_map" in out and "add_watch" in out:
        d50 = out["add_map"]["p50"] - out["add_watch"]["p50"]
        d99 = out["add_map"]["p99"] - out["add_watch"]["p99"]
        print(f"  {'difference of the percentiles, slots - watch (adds)':56} p50 {d50:8.2f} ms  "
              f"p99 {d99:8.2f} ms")
        out["add_difference"] = {"p50": round(d50, 3), "p99": round(d99, 3)}
    if res["lost"]:
        print(f"  LOST: {len(res['lost'])} changes not seen by both within {OP_TIMEOUT:.0f}s: " +
              ", ".join(f"{o.kind} {o.ip} ({'w' if 'watch' in o.t else '-'}"
                        f"{'m' if 'map' in o.t else '-'})" for o in res["lost"][:10]))
    out["lost"] = len(res["lost"])
    print(f"  measuring: the map poller looped every {res['period_us']:.0f} us on average "
          f"(asked {out['poll_us']} us), using {res['poll_cpu']:.1%} of a CPU: slot times are "
          f"late by about half that period")


def report_ready(res, out):
    if "skipped" in res:
        print(f"ready: SKIPPED: {res['skipped']}")
        out["skipped"] = res["skipped"]
        return
    d = res["done"]

    def span(a, b):
        return [x[b] - x[a] for x in d if x.get(a) is not None and x.get(b) is not None]

    print(f"ready: {len(d)} pods created on {C2}'s node one at a time, each deleted once in "
          f"{C1}'s slots ({res['seconds']:.0f}s); stamps: {C2}'s API (pod Ready, EndpointSlice), "
          f"the record watch on n1, n1's slots")
    row("pod Ready in the API -> EndpointSlice ready (kapi)", span("api_ready", "slice_ready"),
        out, "ready_slice")
    row("pod Ready -> record at the watch (mesh-apiserver, etcd)", span("api_ready", "record_ready"),
        out, "ready_record")
    row("pod Ready -> in n1's slots (the end-to-end figure)", span("api_ready", "map_ready"), out,
        "ready_map")
    row("record at the watch -> in n1's slots (n1's helper)", span("record_ready", "map_ready"),
        out, "ready_helper")
    row("pod DELETE request -> out of n1's slots", span("delete", "map_unready"), out,
        "delete_map")
    row("pod DELETE -> record without it at the watch", span("delete", "record_unready"), out,
        "delete_record")
    if res["lost"]:
        print(f"  LOST: {len(res['lost'])} pods not seen all the way")
    out["lost"] = len(res["lost"])


def report_failover(res, out):
    if "skipped" in res:
        print(f"failover: SKIPPED: {res['skipped']}")
        out["skipped"] = res["skipped"]
        return
    rs = res["rounds"]
    print(f"failover: {len(rs)} rounds; the client sent {res['requests']} requests "
          f"({res['rate']:.0f}/s, a new connection each, so an answer time is known to within "
          f"~{1000 / res['rate'] if res['rate'] else 0:.0f} ms)")

    def vals(k):
        return [r[k] for r in rs if r.get(k) is not None]

    row("last local backend unready (slice) -> first answer from cluster2",
        vals("unready_to_first_remote"), out, "unready_to_remote")
    row("last local backend unready -> only cluster2's in n1's slots",
        vals("unready_to_remote_slots"), out, "unready_to_remote_slots")
    row("scale request -> first answer from cluster2", vals("scale_to_first_remote"), out,
        "scale_to_remote")
    row("scale request -> slice says no local backend ready", vals("scale_to_unready"), out,
        "scale_to_unready")
    row("scale request -> last answer from cluster1", vals("last_local_after_scale"), out,
        "scale_to_last_local")
    row("scale back: local pod ready (slice) -> only local slots",
        vals("ready_to_home_slots"), out, "ready_to_home_slots")
    row("scale back: local pod ready (slice) -> first answer home",
        vals("ready_to_first_home"), out, "ready_to_home")
    f = vals("failed_requests")
    out["failed_requests_per_failover"] = f
    print(f"  {'requests failed during a failover (per round)':56} {f}")
    fl = [x for r in rs for x in r["failures"]]
    if fl:
        print(f"  {'failed: (error, sent, failed) ms from slice unready':56} "
              + ", ".join(f"({w}, {a:+.1f}, {b:+.1f})" for w, a, b in fl[:10]))
    print(f"  {'rounds (ms): unready -> first remote answer':56} "
          f"{[round(ms(x)) for x in vals('unready_to_first_remote')]}")


def main():
    args = parse_args()
    B.preflight_lab()
    cleanup = B.Cleanup()
    t_start = time.monotonic()
    ctx = argparse.Namespace(cleanup=cleanup)
    ctx.lab = lab = B.Lab(cleanup, TOPOLOGY, prefix="cm").up()
    ctx.objs = Objects(cleanup, lab)
    ctx.c1, ctx.c2 = lab.cluster(C1), lab.cluster(C2)
    ctx.n1, ctx.m2 = ctx.c1["nodes"][0], ctx.c2["nodes"][0]
    # what n1's helper reads cluster2 with (the lab's read-only user)
    ctx.remote_cfg = os.path.join(lab.dir, C1, "clustermesh", C2)
    wait(lambda: any(c.get("name") == C2 and c.get("synced")
                     for c in B.helper_request(ctx.n1["socket"], "clusters")), 60,
         f"{ctx.n1['name']}'s helper connected to {C2} and synced")
    ctx.lb = Lb(ctx.n1["bpfRoot"])
    cleanup.push("service map fds", ctx.lb.close)
    setup_s = time.monotonic() - t_start

    out = {"changes": args.changes, "ready": args.ready, "failovers": args.failovers,
           "poll_us": args.poll_us, "records": {}, "ready_phase": {}, "failover": {}}
    res_rec = res_ready = res_fo = None
    t = {}
    if args.changes:
        t0 = time.monotonic()
        res_rec = records_phase(ctx, args)
        t["records"] = time.monotonic() - t0
    if args.ready:
        t0 = time.monotonic()
        res_ready = ready_phase(ctx, args)
        t["ready"] = time.monotonic() - t0
    if args.failovers:
        t0 = time.monotonic()
        res_fo = failover_phase(ctx, args)
        t["failover"] = time.monotonic() - t0

    print()
    print(f"Global services across clusters, lab {lab.name}: {C1} (2 nodes) and {C2} (1 node), "
          f"tunnel routing; observer n1 = {ctx.n1['name']} ({ctx.n1['ip']}); nearest-rank "
          f"percentiles")
    print()
    if res_rec:
        out["records"]["poll_us"] = args.poll_us
        report_records(res_rec, out["records"])
        print()
    if res_ready:
        report_ready(res_ready, out["ready_phase"])
        print()
    if res_fo:
        report_failover(res_fo, out["failover"])
        print()
    print(f"(setup {setup_s:.0f}s" + "".join(f", {k} {v:.0f}s" for k, v in t.items()) + ")")
    if args.json:
        B.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        B.log(f"bench: mesh_services failed: {exc}")
        sys.exit(1)
