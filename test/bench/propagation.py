#!/usr/bin/env python3
"""Endpoint propagation latency: from an endpoint's ip/v1 record being
written to the cluster's mesh etcd (or from a pod's CNI ADD returning) to
its /32 being in another node's ipcache map, beside etcd's own delivery of
the same record to a plain `etcdctl watch` on that node.

One lab (test/lab/lab) of one cluster of two nodes, tunnel routing.  Node A
is the "remote" node, node B the observer: an `etcdctl watch --prefix
cilium/state/ip/v1/default/` runs in node B's netns with the credentials
node B's helper uses (the lab's causeway-local user), and this process reads
node B's pinned ipcache map directly with the bpf(2) syscall (an exact /32
lookup, every --poll-us microseconds).

Phase 1, records (the helper's receive path alone): N ip/v1 records, each
with its own IP in node A's PodCIDR and its own identity, HostIP node A,
put one at a time through etcd's v3 JSON gateway (as the helpers write)
with the causeway-local credentials.  For each: put -> the watch has the
event, put -> node B's ipcache has the entry (that identity, tunnel to node
A).  A /24 holds 250 such IPs, so they go in cycles of 250: put all, then
delete them one at a time, measured the same way (delete -> the watch has
the DELETE, delete -> the entry is gone from the ipcache).

Phase 2, pods (the whole path): pods created one at a time on node A
through the lab's API stand-in and kubelet.  For each: its CNI ADD
returning (libcni writing its result cache file on node A, seen by
inotify) -> its ip/v1 record reaching the watch (node A's helper noticing
the endpoint and publishing it, and etcd delivering it) -> node B's
ipcache having it.

Usage: propagation.py [--records 1000] [--pods 200] [--poll-us 200] [--json FILE]
"""

import argparse
import ctypes
import ipaddress
import json
import os
import platform
import random
import socket
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
import benchlib as B  # noqa: E402

CLUSTER = "prop"
TOPOLOGY = {
    "underlay": "shared",
    "clusters": [{"name": CLUSTER, "id": 1, "podSubnet": "10.247.0.0/16",
                  "serviceSubnet": "10.248.0.0/16", "routing": "tunnel", "nodes": 2}],
}
CLUSTER_ID = 1
KEY_IPS = "cilium/state/ip/v1/default/"
CYCLE = 250          # records per cycle: .2 .. .251 of node A's /24
ID_BASE = 1000       # identities CLUSTER_ID << 16 | (ID_BASE + n): one per record
OP_TIMEOUT = 15.0    # seconds an operation may take before it counts as lost
POD_TIMEOUT = 60.0


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1000,
                    help="ip/v1 records put (and deleted) straight into etcd (default 1000)")
    ap.add_argument("--pods", type=int, default=200,
                    help="pods created on node A, one at a time (default 200; 0: none)")
    ap.add_argument("--poll-us", type=int, default=200,
                    help="ipcache poll period in microseconds (default 200)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = ap.parse_args()
    if not 1 <= args.records <= 5000 or not 0 <= args.pods <= 240 or \
            not 50 <= args.poll_us <= 100000:
        ap.error("--records within 1..5000, --pods within 0..240, --poll-us within 50..100000")
    return args


def preflight():
    B.preflight_lab()


# --- bpf(2): node B's pinned ipcache, read directly ----------------------------------

_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351,
           "riscv64": 280}
BPF_MAP_LOOKUP_ELEM = 1
BPF_OBJ_GET = 7


class Ipcache:
    """Exact /32 lookups in a pinned cw_ipcache (LPM trie: key {u32
    prefixlen, be32 ip}, value {u32 identity, be32 tunnel_ip, u16
    cluster_id, u16 flags}; include/causeway/datapath.h)."""

    def __init__(self, pin):
        nr = _NR_BPF.get(platform.machine())
        if nr is None:
            raise RuntimeError(f"no bpf syscall number known for {platform.machine()}")
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.nr = nr
        path = ctypes.create_string_buffer(pin.encode())
        attr = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(path), 0, 0), 128)
        fd = self.libc.syscall(self.nr, BPF_OBJ_GET, attr, 128)
        if fd < 0:
            err = ctypes.get_errno()
            raise RuntimeError(f"bpf(BPF_OBJ_GET, {pin}): {os.strerror(err)}")
        self.fd = fd
        self.value = ctypes.create_string_buffer(12)
        self._keys = {}

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lookup(self, ip):
        """(identity, tunnel IP) of ip's entry, None if the map has none.
        A missing /32 may answer with a covering prefix: callers compare."""
        k = self._keys.get(ip)
        if k is None:
            key = ctypes.create_string_buffer(struct.pack("=I", 32) + socket.inet_aton(ip), 8)
            attr = ctypes.create_string_buffer(
                struct.pack("=IIQQQ", self.fd, 0, ctypes.addressof(key),
                            ctypes.addressof(self.value), 0), 128)
            k = self._keys[ip] = (key, attr)
        if self.libc.syscall(self.nr, BPF_MAP_LOOKUP_ELEM, k[1], 128) != 0:
            return None
        ident, tun = struct.unpack_from("=I4s", self.value.raw)
        return ident, socket.inet_ntoa(tun)


# --- etcd: the v3 JSON gateway, as the helpers write --------------------------------

# --- the observers --------------------------------------------------------------------

class Op:
    """One measured operation; the observers fill in their times."""

    def __init__(self, kind, ip=None, identity=None, tunnel=None, pod=None):
        self.kind = kind            # "put", "delete" or "pod"
        self.ip, self.identity, self.tunnel, self.pod = ip, identity, tunnel, pod
        self.t0 = self.t_ack = self.t_ep = self.t_add = self.t_watch = self.t_map = None
        self.done = threading.Event()

    def check_done(self):
        # A pod's record can reach node B before libcni has written the
        # ADD's result: a pod is done once all three are seen.
        if self.t_watch is not None and self.t_map is not None and \
                (self.kind != "pod" or self.t_add is not None):
            self.done.set()


class Observers(B.WatchObserver):
    """Three threads, each stamping time.monotonic() the moment it sees
    its event for the current operation: the etcdctl watch reader, the
    ipcache poller (benchlib.WatchObserver), and (for pods) an inotify
    reader on node A's libcni cache and the plugin's endpoint directory."""

    def __init__(self, cleanup, watch_argv, ipcache, poll_s, inotify_dirs=()):
        self.ipcache = ipcache
        self.polls = 0
        self.ino = None
        extra = ()
        if inotify_dirs:
            self.ino = Inotify(inotify_dirs)
            cleanup.push("inotify", self.ino.close)
            extra = (self._inotify_reader,)
        super().__init__(cleanup, watch_argv, poll_s, extra)

    def on_watch(self, t, key, value, op):
        if op is None or op.t_watch is not None or not key.startswith(KEY_IPS):
            return
        ip = key[len(KEY_IPS):]
        if op.kind == "put" and value is not None and ip == op.ip:
            op.t_watch = t
        elif op.kind == "delete" and value is None and ip == op.ip:
            op.t_watch = t
        elif op.kind == "pod" and value is not None:
            try:
                val = json.loads(value)
            except ValueError:
                return
            if val.get("K8sPodName") == op.pod:
                op.t_watch = t
                op.ip = op.ip or ip
        op.check_done()

    def poll(self, op):
        if op.t_map is not None or op.ip is None:
            return False
        v = self.ipcache.lookup(op.ip)
        self.polls += 1
        if op.kind == "delete":
            return v is None or v[0] != op.identity
        return v is not None and v[1] == op.tunnel and (op.identity is None or v[0] == op.identity)

    def on_polled(self, op, t):
        op.t_map = t
        op.check_done()

    def _inotify_reader(self):
        for t, wd, mask, name in self.ino.events(lambda: self.stop):
            d = self.ino.dirs.get(wd)
            with self.lock:
                op = self.cur
                if op is None or op.kind != "pod":
                    continue
                if d == "results" and mask & Inotify.IN_CLOSE_WRITE and op.t_add is None:
                    op.t_add = t
                    op.add_file = os.path.join(self.ino.paths[wd], name)
                    op.check_done()
                elif d == "endpoints" and mask & Inotify.IN_MOVED_TO and op.t_ep is None:
                    op.t_ep = t


class Inotify:
    IN_CLOSE_WRITE = 0x8
    IN_MOVED_TO = 0x80
    IN_CLOEXEC = 0o2000000

    def __init__(self, dirs):
        """dirs: {label: path}."""
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_CLOEXEC)
        if self.fd < 0:
            raise RuntimeError(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.dirs, self.paths = {}, {}
        for label, path in dirs.items():
            wd = self.libc.inotify_add_watch(self.fd, path.encode(),
                                             self.IN_CLOSE_WRITE | self.IN_MOVED_TO)
            if wd < 0:
                raise RuntimeError(f"inotify_add_watch {path}: "
                                   f"{os.strerror(ctypes.get_errno())}")
            self.dirs[wd], self.paths[wd] = label, path

    def events(self, stopped):
        import select
        while not stopped():
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if not r:
                continue
            try:
                buf = os.read(self.fd, 65536)
            except OSError:
                return
            t = time.monotonic()
            off = 0
            while off + 16 <= len(buf):
                wd, mask, _cookie, ln = struct.unpack_from("=iIII", buf, off)
                name = buf[off + 16:off + 16 + ln].split(b"\0", 1)[0].decode(errors="replace")
                off += 16 + ln
                yield t, wd, mask, name

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- phases -----------------------------------------------------------------------------

def record_value(ip, host_ip, identity, n):
    # the helper's own format (helper/records.c, cw_ip_rec_format)
    return json.dumps({"IP": ip, "Mask": None, "HostIP": host_ip, "ID": identity, "Key": 0,
                       "Metadata": "", "K8sNamespace": "cwbench", "K8sPodName": f"rec-{n}"},
                      separators=(",", ":"))


def records_phase(obs, gw, node_a, count):
    """count puts (and as many deletes), one at a time, in cycles of CYCLE IPs."""
    net = ipaddress.IPv4Network(node_a["podCIDR"])
    ips = [str(net[i]) for i in range(2, 2 + CYCLE)]
    puts, dels, lost = [], [], []
    n = 0
    t_phase = time.monotonic()
    while n < count:
        cycle = []
        for ip in ips[:min(CYCLE, count - n)]:
            ident = (CLUSTER_ID << 16) | (ID_BASE + n)
            op = Op("put", ip=ip, identity=ident, tunnel=node_a["ip"])
            val = record_value(ip, node_a["ip"], ident, n)
            if obs.run(op, lambda: gw.put(KEY_IPS + ip, val), OP_TIMEOUT):
                puts.append(op)
            else:
                lost.append(op)
            cycle.append(op)
            n += 1
            time.sleep(random.uniform(0, 0.002))  # no lock-step with the helper's timers
        for p in cycle:
            op = Op("delete", ip=p.ip, identity=p.identity, tunnel=node_a["ip"])
            if obs.run(op, lambda: gw.delete(KEY_IPS + p.ip), OP_TIMEOUT):
                dels.append(op)
            else:
                lost.append(op)
            time.sleep(random.uniform(0, 0.002))
        B.log(f"bench: records: {n}/{count} put and deleted ({time.monotonic() - t_phase:.0f}s)")
    return puts, dels, lost


def pods_phase(lab, obs, node_a, count):
    ops, lost = [], []
    t_phase = time.monotonic()
    for i in range(count):
        name = f"prop-{i}"
        op = Op("pod", pod=name, tunnel=node_a["ip"])
        obs.start(op)
        op.t0 = time.monotonic()
        lab.create_pod(CLUSTER, name, node_a["name"], labels={"app": "cwbench-prop"})
        op.t_ack = time.monotonic()
        # the IP comes from libcni's result (inotify) or the record (watch)
        end = time.monotonic() + POD_TIMEOUT
        while op.ip is None and time.monotonic() < end and not op.done.is_set():
            f = getattr(op, "add_file", None)
            if f:
                try:
                    with open(f) as fh:
                        op.ip = B.pod_ip(json.load(fh)["result"])
                except (OSError, ValueError, KeyError, IndexError):
                    pass
            time.sleep(0.001)
        ok = op.done.wait(max(0.0, end - time.monotonic()))
        obs.start(None)
        (ops if ok and op.t_add is not None else lost).append(op)
        if (i + 1) % 25 == 0 or i + 1 == count:
            B.log(f"bench: pods: {i + 1}/{count} created ({time.monotonic() - t_phase:.0f}s)")
    return ops, lost


# --- report -------------------------------------------------------------------------------

def ms(x):
    return x * 1000.0


def stats(vals):
    return {"p50": B.percentile(vals, 50), "p99": B.percentile(vals, 99), "max": max(vals),
            "n": len(vals)}


def row(label, vals, out, key):
    if not vals:
        print(f"  {label:52} (no samples)")
        return
    s = stats([ms(v) for v in vals])
    out[key] = {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()}
    print(f"  {label:52} p50 {s['p50']:7.2f} ms  p99 {s['p99']:7.2f} ms  max {s['max']:7.2f} ms")


def main():
    args = parse_args()
    preflight()
    cleanup = B.Cleanup()
    t_start = time.monotonic()
    lab = B.Lab(cleanup, TOPOLOGY, prefix="cp").up()
    c = lab.cluster(CLUSTER)
    node_a, node_b = c["nodes"][0], c["nodes"][1]
    cfg_b = node_b["etcdConfig"]   # node B's helper's own credentials (causeway-local)

    ipcache = Ipcache(os.path.join(node_b["bpfRoot"], "cw_ipcache"))
    cleanup.push("ipcache fd", ipcache.close)
    # the cost of one lookup, to read the map times against
    probe = "203.0.113.7"
    ipcache.lookup(probe)
    t = time.perf_counter()
    for _ in range(20000):
        ipcache.lookup(probe)
    lookup_us = (time.perf_counter() - t) / 20000 * 1e6

    results_dir = os.path.join(node_a["cacheDir"], "results")
    os.makedirs(results_dir, exist_ok=True)
    ep_dir = os.path.join(node_a["stateDir"], "endpoints")
    os.makedirs(ep_dir, exist_ok=True)
    watch_argv = B.in_netns(os.path.join(B.NETNS_DIR, node_b["netns"]), B.etcdctl_argv(
        cfg_b, "watch", "--prefix", KEY_IPS, "-w", "json"))
    obs = Observers(cleanup, watch_argv, ipcache, args.poll_us / 1e6,
                    {"results": results_dir, "endpoints": ep_dir} if args.pods else {})
    gw = B.EtcdHttp.from_config(node_a["etcdConfig"], timeout=10)
    cleanup.push("etcd connection", gw.close)

    # Warm-up: one record all the way to node B's ipcache and back out,
    # which also proves the watch is established and node B's helper synced
    # (put again every second until both have it: the watch may not have
    # started yet when the first put lands).
    warm = str(ipaddress.IPv4Network(node_a["podCIDR"])[CYCLE + 2])
    ident = (CLUSTER_ID << 16) | (ID_BASE - 1)
    end = time.monotonic() + 60
    while True:
        op = Op("put", ip=warm, identity=ident, tunnel=node_a["ip"])
        if obs.run(op, lambda: gw.put(KEY_IPS + warm,
                                      record_value(warm, node_a["ip"], ident, -1)), 1.0):
            break
        obs.watch.check()
        if time.monotonic() > end:
            raise RuntimeError(f"a record put in etcd never reached {node_b['name']}'s ipcache "
                               f"(watch saw it: {op.t_watch is not None}); see "
                               f"{node_b['log']}")
    if not obs.run(Op("delete", ip=warm, identity=ident, tunnel=node_a["ip"]),
                   lambda: gw.delete(KEY_IPS + warm), OP_TIMEOUT):
        raise RuntimeError("the warm-up record was not withdrawn from node B's ipcache")
    setup_s = time.monotonic() - t_start

    t1 = time.monotonic()
    puts, dels, lost = records_phase(obs, gw, node_a, args.records)
    rec_s = time.monotonic() - t1

    pods, pods_lost, pod_s = [], [], 0.0
    if args.pods:
        # one pod, unmeasured: node A's PodCIDR published, the label set's
        # identity allocated (every measured pod then shares it)
        lab.create_pod(CLUSTER, "prop-warmup", node_a["name"], labels={"app": "cwbench-prop"})
        lab.wait_pod(CLUSTER, "prop-warmup")
        t1 = time.monotonic()
        pods, pods_lost = pods_phase(lab, obs, node_a, args.pods)
        pod_s = time.monotonic() - t1
    obs.stop = True
    for th in obs.threads[1:2]:
        th.join(timeout=2)

    # --- report ---
    out = {"records": args.records, "pods": args.pods, "poll_us": args.poll_us, "figures": {}}
    print()
    print(f"Endpoint propagation, lab {lab.name}: node A {node_a['name']} ({node_a['ip']}, "
          f"PodCIDR {node_a['podCIDR']}) -> node B {node_b['name']}, tunnel routing")
    print(f"observer on node B: `etcdctl watch --prefix {KEY_IPS}` (node B's netns, the "
          f"helper's credentials) and node B's ipcache read by bpf(2), nearest-rank percentiles")
    print()
    print(f"records: {len(puts)} puts and {len(dels)} deletes, one at a time, through etcd's "
          f"JSON gateway ({rec_s:.0f}s)")
    f = out["figures"]
    row("put -> etcdctl watch has it (etcd's delivery)", [o.t_watch - o.t0 for o in puts],
        f, "put_watch")
    row("put -> in node B's ipcache (the helper's)", [o.t_map - o.t0 for o in puts], f, "put_map")
    row("helper's extra time (ipcache - watch, per record)",
        [o.t_map - o.t_watch for o in puts], f, "put_helper_extra")
    row("put request round trip (for reference)", [o.t_ack - o.t0 for o in puts], f, "put_rtt")
    row("delete -> etcdctl watch has the DELETE", [o.t_watch - o.t0 for o in dels], f, "del_watch")
    row("delete -> gone from node B's ipcache", [o.t_map - o.t0 for o in dels], f, "del_map")
    row("helper's extra time on delete", [o.t_map - o.t_watch for o in dels], f, "del_helper_extra")
    if puts:
        p50 = f["put_map"]["p50"] - f["put_watch"]["p50"]
        p99 = f["put_map"]["p99"] - f["put_watch"]["p99"]
        print(f"  difference of the percentiles, ipcache - watch:       p50 {p50:7.2f} ms  "
              f"p99 {p99:7.2f} ms")
        f["put_difference"] = {"p50": round(p50, 3), "p99": round(p99, 3)}
    if lost:
        print(f"  LOST: {len(lost)} operations not seen within {OP_TIMEOUT:.0f}s "
              f"(watch/ipcache): " + ", ".join(
                  f"{o.kind} {o.ip} ({'w' if o.t_watch else '-'}{'m' if o.t_map else '-'})"
                  for o in lost[:10]))
    out["lost_records"] = len(lost)

    if args.pods:
        print()
        print(f"pods: {len(pods)} created on node A one at a time through the lab's API "
              f"and kubelet ({pod_s:.0f}s; one warm-up pod before them, unmeasured)")
        row("ADD returned -> ip/v1 record at the watch",
            [o.t_watch - o.t_add for o in pods], f, "pod_add_watch")
        row("ADD returned -> in node B's ipcache", [o.t_map - o.t_add for o in pods], f,
            "pod_add_map")
        row("node B helper's extra time (ipcache - watch)",
            [o.t_map - o.t_watch for o in pods], f, "pod_helper_extra")
        row("plugin's endpoint file -> ADD returned",
            [o.t_add - o.t_ep for o in pods if o.t_ep is not None], f, "pod_ep_add")
        row("API create -> ADD returned (kubelet, plugin)", [o.t_add - o.t0 for o in pods], f,
            "pod_create_add")
        if pods_lost:
            print(f"  LOST: {len(pods_lost)} pods not seen all the way within "
                  f"{POD_TIMEOUT:.0f}s: " + ", ".join(
                      f"{o.pod} (add {'y' if o.t_add else '-'} watch {'y' if o.t_watch else '-'} "
                      f"map {'y' if o.t_map else '-'})" for o in pods_lost[:10]))
        out["lost_pods"] = len(pods_lost)

    period = obs.poll_wall / obs.loops * 1e6 if obs.loops else 0
    print()
    print(f"measuring cost: one ipcache lookup {lookup_us:.1f} us; the poller looked "
          f"{obs.polls} times, a loop every {period:.0f} us on average (asked {args.poll_us} us), using {obs.poll_cpu / obs.poll_wall:.1%} of a CPU; so "
          f"ipcache times are late by up to one period, about {period / 2000:.2f} ms on average"
          if obs.poll_wall else "")
    out["lookup_us"] = round(lookup_us, 2)
    out["poll_period_us"] = round(period, 1)
    print(f"(setup {setup_s:.0f}s, records {rec_s:.0f}s, pods {pod_s:.0f}s)")
    if args.json:
        B.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        B.log(f"bench: propagation failed: {exc}")
        sys.exit(1)
