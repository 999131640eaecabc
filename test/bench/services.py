#!/usr/bin/env python3
"""ClusterIP service load balancing: the request/response rate through a
service's ClusterIP against the same backend by pod IP, with 2 services and
with --services (10,000) loaded, and against kube-proxy-style iptables DNAT
for the same services, in the same run.

Three pairs of node namespaces, each pair joined by an underlay veth with
VXLAN over it; on node 1 of each pair a client pod and a backend pod, on
node 2 a second backend pod:

  cw    Causeway (the node frame of test/bpf/tunnel_netns.py: pods made by
        the real plugin through build/cnirunner, the service maps written
        with bpftool as bytes laid out by include/causeway/datapath.h, as
        test/bpf/lb_netns.py does), in two states: cw-2, holding only the
        two measured services, svc-local (its backend on node 1) and
        svc-remote (on node 2); cw-N, with N - 2 other services (two
        backends each) beside them, added and removed with one
        `bpftool batch file` per node whenever the state changes;
  kp-N  no Causeway: pods wired by the reference plugins (ptp + host-local),
        flannel-style plain VXLAN between the nodes, and on both nodes the
        same N services as kube-proxy's iptables mode writes them
        (iptables-restore), the measured service ports last in KUBE-SERVICES;
  ptp-0 the same ptp nodes without any rule: the reference for kp-N.

Each round measures, client pod -> backend, same-node and cross-node, with
the order of the paths reversed every other round:

  RR   sockperf TCP ping-pong on one connection (round trips/s);
  CRR  a new TCP connection per request/response (connections/s), the
       figure that iptables' rule walk moves: netfilter consults the nat
       table only for the first packet of a connection.

Ratios are medians of the per-round ratios.  Clients on CPU 0, servers on
CPU 1.  Everything made is removed at the end, also on failure or Ctrl-C.

Usage: services.py [--rounds N] [--seconds S] [--services N] [--quick] [--json FILE]
(defaults: 9 rounds of 1 s per measurement, 10,000 services: about 8 minutes)
"""

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
import benchlib as B  # noqa: E402

# cwlib (test/node) reads the build to drive from CAUSEWAY_BUILD.
os.environ.setdefault("CAUSEWAY_BUILD", B.BUILD)
sys.path.insert(0, os.path.join(B.REPO, "test", "bpf"))
import tunnel_netns as tn  # noqa: E402  (imports netnslib, which puts cwlib on the path)
import lb_netns as lb  # noqa: E402
import cwlib  # noqa: E402

GOAL = 0.95
# The backend pods' servers: the services' target ports, and separate ones
# for the direct (pod IP) paths.  They must differ: a direct connection that
# reuses the client port of a service flow to the same backend port, open or
# closed less than CW_CT_LIFETIME_TCP_CLOSE ago, has its replies rewritten
# to the frontend by the flow's reply index and never opens (a datapath
# bug, found by this benchmark).
RR_PORT, CRR_PORT = 11111, 7001
RR_DIRECT, CRR_DIRECT = 11112, 7002
PORTS = (("rr", 80, RR_PORT), ("crr", 81, CRR_PORT))  # (name, frontend port, target port)
FRONTEND = {"same": "10.96.0.10", "cross": "10.96.0.11"}  # svc-local, svc-remote
MEASURED = ("svc-local", "svc-remote")
OTHER_FE0 = ipaddress.IPv4Address("10.96.1.0")   # the other services' ClusterIPs ...
OTHER_BE0 = ipaddress.IPv4Address("10.250.0.0")  # ... and backends (no pod holds them)
OTHER_BE_PORT = 8080
CLUSTER_CIDR = "10.249.0.0/16"       # every pod of the benchmark; kube-proxy's --cluster-cidr
CIDRS = {"cw": ("10.249.1.0/24", "10.249.2.0/24"),
         "kp-N": ("10.249.5.0/24", "10.249.6.0/24"),
         "ptp-0": ("10.249.7.0/24", "10.249.8.0/24")}
UNDERLAY = ("192.168.77.1", "192.168.77.2")  # tunnel_netns.py's, inside each pair only
KP_VXLAN = "cwb_vxlan"
CRR_MSG = 64  # bytes each way


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Many short rounds: on a shared machine the noise comes in bursts of
    # seconds, and the median of the per-round ratios needs rounds to choose from.
    ap.add_argument("--rounds", type=int, help="rounds (default 9; --quick: 1)")
    ap.add_argument("--seconds", type=int, help="seconds per measurement (default 1)")
    ap.add_argument("--services", type=int,
                    help="services on cw-N and kp-N, the 2 measured ones included "
                    "(default 10000; --quick: 1000)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke check: 1 round of 1 s, 1000 services (figures are noise)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 9)
    args.seconds = args.seconds or 1
    args.services = args.services or (1000 if args.quick else 10000)
    if not 1 <= args.rounds <= 20 or not 1 <= args.seconds <= 60:
        ap.error("--rounds within 1..20, --seconds within 1..60")
    # rev_nat ids are 16 bits: the others, plus the measured 2 x 2 ports
    if not 2 <= args.services <= 60000:
        ap.error("--services within 2..60000")
    return args


# --- the services ------------------------------------------------------------

class Service:
    """One Service: a ClusterIP, its ports (name, port, targetPort), its backends."""

    def __init__(self, name, cluster_ip, ports, backends):
        self.name, self.cluster_ip, self.ports, self.backends = name, cluster_ip, ports, backends


def other_services(n):
    """n services that nobody calls: one port each, two backends each."""
    return [Service(f"svc-{i}", str(OTHER_FE0 + i), (("http", 80, OTHER_BE_PORT),),
                    [str(OTHER_BE0 + 2 * i + 1), str(OTHER_BE0 + 2 * i + 2)])
            for i in range(n)]


def measured_services(local_ip, remote_ip):
    return [Service(MEASURED[0], FRONTEND["same"], PORTS, [local_ip]),
            Service(MEASURED[1], FRONTEND["cross"], PORTS, [remote_ip])]


def lb_batch(services, pin, first_id):
    """bpftool batch lines (adding, removing) the services as the helper
    does: lib/dp.c's cw_lb4_service_set order (reverse NAT and slots, then
    the frontend) and the reverse to remove (the frontend first, so no new
    flow finds a half-removed service).  rev_nat ids from first_id on."""
    add, remove, rid = [], [], first_id
    for svc in services:
        for _name, port, target in svc.ports:
            ents = [(lb.MAP_REVNAT, struct.pack("<H", rid), lb.revnat_value(svc.cluster_ip, port))]
            for slot, be in enumerate(svc.backends, 1):
                ents.append((lb.MAP_BACKENDS, lb.slot_key(rid, slot), lb.backend_value(be, target)))
            ents.append((lb.MAP_SERVICES, lb.lb4_key(lb.IPPROTO_TCP, svc.cluster_ip, port),
                         lb.service_value(len(svc.backends), rid)))
            for m, k, v in ents:
                add.append(f"map update pinned {pin(m)} key hex {' '.join(tn.hexargs(k))} "
                           f"value hex {' '.join(tn.hexargs(v))}")
            for m, k, _v in reversed(ents):
                remove.append(f"map delete pinned {pin(m)} key hex {' '.join(tn.hexargs(k))}")
            rid += 1
    return add, remove


def _kube_hash(s):
    # kube-proxy's chain names: base32 of SHA-256, first 16 characters
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:16]


def kube_proxy_rules(services, cluster_cidr=CLUSTER_CIDR):
    """The filter and nat tables kube-proxy's iptables mode writes for these
    ClusterIP services (ns "default", every backend ready, no session
    affinity), for iptables-restore, in the services' order: the last
    service's ports are the last rules of KUBE-SERVICES before the NodePort
    tail call.  Returns (text, {(service, port name): KUBE-SEP chains})."""
    chains = {"filter": ["KUBE-PROXY-FIREWALL", "KUBE-FORWARD", "KUBE-SERVICES",
                         "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"],
              "nat": ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]}
    filt = [
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible '
        'service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
        '-j KUBE-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible '
        'service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
        '-j KUBE-SERVICES',
        '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        '-m mark --mark 0x4000/0x4000 -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    ]
    nat = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
        '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
        '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        '-j MASQUERADE --random-fully',
    ]
    services_rules, per_service = [], []
    seps = {}
    for svc in services:
        for pname, port, target in svc.ports:
            spn = f"default/{svc.name}:{pname}"
            svc_chain = "KUBE-SVC-" + _kube_hash(spn + "tcp")
            chains["nat"].append(svc_chain)
            match = f"-p tcp -m comment --comment \"{spn} cluster IP\" -m tcp --dport {port}"
            services_rules.append(f"-A KUBE-SERVICES -d {svc.cluster_ip}/32 {match} -j {svc_chain}")
            per_service.append(f"-A {svc_chain} ! -s {cluster_cidr} -d {svc.cluster_ip}/32 {match} "
                               "-j KUBE-MARK-MASQ")
            n = len(svc.backends)
            for i, be in enumerate(svc.backends):
                ep = f"{be}:{target}"
                sep = "KUBE-SEP-" + _kube_hash(spn + "tcp" + ep)
                chains["nat"].append(sep)
                seps.setdefault((svc.name, pname), []).append(sep)
                prob = (f" -m statistic --mode random --probability {1.0 / (n - i):.10f}"
                        if i < n - 1 else "")
                per_service.append(f"-A {svc_chain} -m comment --comment \"{spn} -> {ep}\"{prob} "
                                   f"-j {sep}")
                per_service.append(f"-A {sep} -s {be}/32 -m comment --comment \"{spn}\" "
                                   "-j KUBE-MARK-MASQ")
                per_service.append(f"-A {sep} -p tcp -m comment --comment \"{spn}\" -m tcp "
                                   f"-j DNAT --to-destination {ep}")
    services_rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; '
                          'NOTE: this must be the last rule in this chain" -m addrtype '
                          '--dst-type LOCAL -j KUBE-NODEPORTS')
    out = []
    for table, rules in (("filter", filt), ("nat", nat + services_rules + per_service)):
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in chains[table]]
        out += rules
        out.append("COMMIT")
    return "\n".join(out) + "\n", seps


# --- the node pairs ----------------------------------------------------------

class CausewayPair:
    """Two Causeway nodes (tunnel_netns.py's Side) over VXLAN; client and
    same-node backend on a, cross-node backend on b."""

    def __init__(self, name, sides):
        self.name = name
        cidr_a, cidr_b = CIDRS[name]
        # each Side makes its namespace at once: into `sides` before the next
        self.a = tn.Side("a", UNDERLAY[0], cidr_a, 70001)
        sides.append(self.a)
        self.b = tn.Side("b", UNDERLAY[1], cidr_b, 70002)
        sides.append(self.b)
        self.nodes = (self.a, self.b)

    def setup(self):
        a, b = self.a, self.b
        tn.setup(a, b)  # underlay, cw_vxlan + from_overlay, one pod per node (real plugin)
        self.client, self.remote = a.pod, b.pod
        self.local = a.node.make_pod()
        a.node.add(self.local, a.node.conflist([a.node.conf(podCIDR=a.pod_cidr, mtu=tn.POD_MTU)]))
        a.map_update(tn.MAP_TUNNEL, tn.lpm_key(b.pod_cidr), tn.tunnel_value(b.underlay_ip))
        b.map_update(tn.MAP_TUNNEL, tn.lpm_key(a.pod_cidr), tn.tunnel_value(a.underlay_ip))
        tn.ipcache_peer(a, b)
        tn.ipcache_peer(b, a)

    def prepare(self, measured, others):
        """The measured services into both nodes' maps, as every node's
        helper would hold them, and the batch files that add and remove the
        others (ids after the measured ones', which keep theirs)."""
        self.n_measured = sum(len(svc.ports) for svc in measured)
        self.n_others = sum(len(svc.ports) for svc in others)
        self.batches = {}
        for s in self.nodes:
            add, _ = lb_batch(measured, s.pin, 1)
            self._batch(s, "measured", add)
            add, remove = lb_batch(others, s.pin, 1 + self.n_measured)
            self.batches[s.label] = {"others-add": add, "others-remove": remove}
        self.large = False

    def _batch(self, side, what, lines):
        if not lines:
            return
        path = side.node.tmp / f"{what}.batch"
        path.write_text("\n".join(lines) + "\n")
        res = B.sh("bpftool", "batch", "file", str(path))
        if f"processed {len(lines)} commands" not in res.stdout + res.stderr:
            raise RuntimeError(f"{self.name} {side.label}: bpftool batch {what}: "
                               f"{(res.stdout + res.stderr)[-300:]}")

    def set_large(self, large):
        """cw-N (the others loaded) or cw-2; returns the seconds it took on
        the slower node (0 when already so).  Checks the frontend count."""
        if large == self.large:
            return 0.0
        what = "others-add" if large else "others-remove"
        worst = 0.0
        for s in self.nodes:
            t0 = time.monotonic()
            self._batch(s, what, self.batches[s.label][what])
            worst = max(worst, time.monotonic() - t0)
        self.large = large
        return worst

    def frontends(self):
        return len(self.a.map_keys(lb.MAP_SERVICES))

    def counters(self):
        return {s.label: s.counters() for s in self.nodes}


class BareSide:
    """A node namespace without Causeway (cwlib's Node), in the shape
    tunnel_netns.cleanup expects."""

    def __init__(self, label, underlay_ip, pod_cidr):
        self.label = label
        self.node = cwlib.Node(label)
        self.underlay_ip = underlay_ip
        self.pod_cidr = pod_cidr

    @property
    def path(self):
        return self.node.node_path

    def ptp_pod(self):
        conf = B.ptp_conf("cwbench-svc-ptp", self.pod_cidr, str(self.node.tmp / "host-local"))
        conf["mtu"] = tn.POD_MTU
        pod = self.node.make_pod()
        self.node.add(pod, self.node.conflist([conf]))
        return pod


class PtpPair:
    """Two nodes with pods wired by ptp + host-local, plain VXLAN between them
    (static FDB, neighbour and route entries: flannel's vxlan backend by
    hand); kp-N gets kube-proxy's iptables rules on both (load), ptp-0
    none."""

    def __init__(self, name, sides):
        self.name = name
        cidr_a, cidr_b = CIDRS[name]
        self.a = BareSide(f"{name}-1", UNDERLAY[0], cidr_a)
        sides.append(self.a)
        self.b = BareSide(f"{name}-2", UNDERLAY[1], cidr_b)
        sides.append(self.b)
        self.nodes = (self.a, self.b)

    def setup(self):
        a, b = self.a, self.b
        B.sh("ip", "-n", a.node.node_ns, "link", "add", tn.UNDERLAY_DEV, "type", "veth",
             "peer", "name", tn.UNDERLAY_DEV, "netns", b.node.node_ns)
        plen = ipaddress.ip_network(tn.UNDERLAY_NET).prefixlen
        for s in self.nodes:
            B.ns_sh(s.path, "ip", "addr", "add", f"{s.underlay_ip}/{plen}", "dev", tn.UNDERLAY_DEV)
            B.ns_sh(s.path, "ip", "link", "set", tn.UNDERLAY_DEV, "up")
            B.ns_sh(s.path, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                  "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        self.client, self.local = a.ptp_pod(), a.ptp_pod()
        self.remote = b.ptp_pod()
        B.plain_vxlan([{"ns": s.path, "ip": s.underlay_ip, "cidr": s.pod_cidr} for s in self.nodes],
                      KP_VXLAN, tn.VXLAN_PORT, tn.POD_MTU, underlay=tn.UNDERLAY_DEV)

    def load(self, text):
        """kube-proxy's tables into both nodes; the slower node's seconds."""
        worst = 0.0
        for s in self.nodes:
            t0 = time.monotonic()
            res = subprocess.run(B.in_netns(s.path, ["iptables-restore", "-w", "30"]), input=text,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 timeout=300)
            worst = max(worst, time.monotonic() - t0)
            if res.returncode != 0:
                raise RuntimeError(f"{self.name} node {s.label}: iptables-restore exited "
                                   f"{res.returncode}: {res.stderr.strip()[-500:]}")
        return worst

    def dnat_packets(self, seps):
        """{(service, port name): packets} of the measured DNAT rules on node 1:
        netfilter's nat table sees only a connection's first packet."""
        res = B.ns_sh(self.a.path, "iptables-save", "-c", "-t", "nat")
        by_chain = {}
        for line in res.stdout.splitlines():
            if "-j DNAT" in line and line.startswith("["):
                cnt, rest = line[1:].split("]", 1)
                by_chain[rest.split()[1]] = int(cnt.split(":")[0])
        return {k: sum(by_chain.get(c, 0) for c in v) for k, v in seps.items()
                if k[0] in MEASURED}


# --- traffic -----------------------------------------------------------------

CRR_SERVER = r"""
import socket, sys
import select
n = int(sys.argv[2])
socks = []
for port in sys.argv[3:]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[1], int(port)))
    srv.listen(1024)
    socks.append(srv)
while True:
    ready, _, _ = select.select(socks, [], [])
    c, _ = ready[0].accept()
    try:
        data = b""
        while len(data) < n:
            b = c.recv(n - len(data))
            if not b:
                break
            data += b
        c.sendall(data)
    except OSError:
        pass
    finally:
        c.close()
"""

# One connection per transaction: connect, request, response, close.  The
# client closes with SO_LINGER 0 (RST) after the server's FIN, so no side
# keeps TIME_WAIT state and the ephemeral ports never run out.
CRR_CLIENT = r"""
import json, socket, struct, sys, time
ip, port, secs, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
linger = struct.pack("ii", 1, 0)
msg = b"x" * n
done = errors = 0
t0 = time.perf_counter()
end = t0 + secs
while True:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(3)
    try:
        s.connect((ip, port))
        s.sendall(msg)
        got = 0
        while got < n:
            b = s.recv(n - got)
            if not b:
                break
            got += len(b)
        if got == n:
            done += 1
        else:
            errors += 1
    except OSError:
        errors += 1
    finally:
        s.close()
    t = time.perf_counter()
    if t >= end:
        break
print(json.dumps({"done": done, "errors": errors, "seconds": t - t0}))
"""


def start_servers(cleanup, pod, cpu):
    """A sockperf server per RR port, one CRR server on both CRR ports."""
    procs = [B.Server(cleanup, f"sockperf server {pod.ip}:{port}", B.in_netns(pod.path, B.pinned(
        cpu, ["sockperf", "server", "--tcp", "-i", pod.ip, "-p", str(port)])))
        for port in (RR_PORT, RR_DIRECT)]
    procs.append(B.Server(cleanup, f"CRR server {pod.ip}", B.in_netns(pod.path, B.pinned(cpu, [
        sys.executable, "-c", CRR_SERVER, pod.ip, str(CRR_MSG), str(CRR_PORT), str(CRR_DIRECT)]))))
    for port in (RR_PORT, RR_DIRECT, CRR_PORT, CRR_DIRECT):
        B.wait_port(pod.path, pod.ip, port)
    for proc in procs:
        proc.check()


def tcp_crr(client_ns, ip, port, seconds, cpu):
    """Connections per second, each one request/response; and how many failed."""
    argv = B.in_netns(client_ns, B.pinned(cpu, [sys.executable, "-c", CRR_CLIENT, ip, str(port),
                                                str(seconds), str(CRR_MSG)]))
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=seconds + 30)
    try:
        doc = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"CRR client to {ip}:{port} failed (exit {res.returncode}): "
                           f"{res.stderr.strip()[-400:]}")
    return {"crr_per_s": doc["done"] / doc["seconds"], "errors": doc["errors"]}


# --- the measurement ---------------------------------------------------------

# What each round measures, per scene (same-node, cross-node): setup, and
# whether through the ClusterIP or to the backend pod directly.
PATHS = (("cw-2", "svc"), ("cw-2", "pod"), ("cw-N", "svc"), ("kp-N", "svc"), ("kp-N", "pod"),
         ("ptp-0", "pod"))
PAIR = {"cw-2": "cw", "cw-N": "cw", "kp-N": "kp-N", "ptp-0": "ptp-0"}
SCENES = ("same", "cross")
METRICS = (("rr", "rr_per_s", "TCP RR", "round trips/s"),
           ("crr", "crr_per_s", "TCP CRR", "connections/s"))


def target(pair, scene, via, kind):
    """(ip, port) the client dials."""
    if via == "svc":
        return FRONTEND[scene], dict((n, p) for n, p, _ in PORTS)[kind]
    be = pair.local if scene == "same" else pair.remote
    return be.ip, RR_DIRECT if kind == "rr" else CRR_DIRECT


# The comparisons: (label, numerator path, denominator path, goal or None, meaning)
def comparisons(n):
    return (
        ("ClusterIP / pod IP", ("cw-2", "svc"), ("cw-2", "pod"), GOAL,
         "Causeway, the service's ClusterIP against its backend by pod IP"),
        (f"{n} services / 2", ("cw-N", "svc"), ("cw-2", "svc"), GOAL,
         f"Causeway's ClusterIP with {n} services loaded against with 2"),
        ("Causeway / iptables", ("cw-N", "svc"), ("kp-N", "svc"), 1.0,
         f"ClusterIP with {n} services: Causeway against kube-proxy's iptables (ptp pods)"),
        ("iptables ClusterIP / plain ptp", ("kp-N", "svc"), ("ptp-0", "pod"), None,
         f"for reference, what kube-proxy's rules cost: kp-N's ClusterIP against the pod IP "
         f"on ptp nodes without them"),
        ("iptables pod IP / plain ptp", ("kp-N", "pod"), ("ptp-0", "pod"), None,
         "for reference, the same for traffic to the pod IP: every new connection walks "
         "KUBE-SERVICES, whatever its destination"),
    )


def verdict(ratio, goal):
    if goal is None:
        return "no goal"
    if goal == 1.0:
        return f"goal > 1 (Causeway ahead): {'met' if ratio > 1.0 else 'NOT MET'}"
    return f"goal >= {goal:.2f}x: {'met' if ratio >= goal else 'NOT MET'}"


def counters_delta(before, after):
    """{node: {"forwarded in/out": n, "<drop reason>/<dir>": n}} grown during the rounds."""
    out = {}
    for node in after:
        d = {}
        for (reason, direction), n in after[node].items():
            grew = n - before[node].get((reason, direction), 0)
            if not grew:
                continue
            name = ("forwarded " + ("in" if direction == tn.DIR_INGRESS else "out")
                    if reason == tn.FORWARDED else
                    f"{tn.DROPS.get(reason, reason)}/{'in' if direction == tn.DIR_INGRESS else 'out'}")
            d[name] = grew
        out[node] = d
    return out


def main():
    args = parse_args()
    B.preflight(need_tools=("sockperf", "bpftool", "iptables-restore", "iptables-save", "ss",
                            "bridge", "tc", "ethtool"))
    cleanup = B.Cleanup()
    cpu_client, cpu_server = B.client_server_cpus()
    load_start = os.getloadavg()
    t_start = time.monotonic()

    sides = []
    root_links = cwlib.Node.links_in_root()

    def remove_nodes():
        problems = tn.cleanup(sides, root_links)
        if problems:
            B.log("bench: cleanup problems: " + "; ".join(problems))

    cleanup.push("node namespaces", remove_nodes)

    B.log(f"bench: services: 3 node pairs, {args.services} services on cw-N and kp-N")
    pairs = {"cw": CausewayPair("cw", sides), "kp-N": PtpPair("kp-N", sides),
             "ptp-0": PtpPair("ptp-0", sides)}
    for p in pairs.values():
        p.setup()
        B.log(f"bench: {p.name}: client {p.client.ip}, backends {p.local.ip} (same node), "
              f"{p.remote.ip} (other node)")

    others = other_services(args.services - 2)
    load_s = {}
    cw = pairs["cw"]
    cw.prepare(measured_services(cw.local.ip, cw.remote.ip), others)
    for large in (True, False):
        load_s["cw-N" if large else "cw-2"] = cw.set_large(large)
        want = cw.n_measured + (cw.n_others if large else 0)
        if cw.frontends() != want:
            raise RuntimeError(f"cw: cw_lb4_services holds {cw.frontends()} frontends, "
                               f"expected {want}")
    kp = pairs["kp-N"]
    rules, seps = kube_proxy_rules(others + measured_services(kp.local.ip, kp.remote.ip))
    load_s["kp-N"] = kp.load(rules)
    n_kube_services = sum(1 for line in rules.splitlines() if line.startswith("-A KUBE-SERVICES"))
    B.log(f"bench: loaded: cw-N bpftool batch {load_s['cw-N']:.2f}s (removal "
          f"{load_s['cw-2']:.2f}s), kp-N iptables-restore "
          f"{load_s['kp-N']:.2f}s ({len(rules.splitlines())} lines, KUBE-SERVICES "
          f"{n_kube_services} rules)")

    for p in pairs.values():
        for be in (p.local, p.remote):
            start_servers(cleanup, be, cpu_server)
    for name, via in PATHS:
        p = pairs[PAIR[name]]
        if p is cw:
            cw.set_large(name == "cw-N")
        for scene in SCENES:
            for kind in ("rr", "crr"):
                ip, port = target(p, scene, via, kind)
                ok, why = B.tcp_reach(p.client.path, ip, port)
                if not ok:
                    raise RuntimeError(f"{p.name}: client {p.client.ip} cannot open TCP to "
                                       f"{ip}:{port} ({scene}-node {via}): {why}")

    cw.set_large(False)
    cw_before = cw.counters()
    dnat_before = kp.dnat_packets(seps)
    setup_s = time.monotonic() - t_start

    res = {f"{scene} {s}/{v}": {"rr_per_s": [], "p50_us": [], "p99_us": [], "crr_per_s": [],
                                "crr_errors": []}
           for scene in SCENES for s, v in PATHS}
    # The groups (scene, RR or CRR) of a round run the paths in snake order,
    # forward then backward, so cw changes state once per group; the next
    # round starts from the other end, so each path swaps places with its
    # neighbours from round to round.
    toggles, toggle_s = 0, 0.0
    for r in range(args.rounds):
        scenes = SCENES if r % 2 == 0 else SCENES[::-1]
        groups = [(scene, kind) for scene in scenes for kind in ("rr", "crr")]
        for gi, (scene, kind) in enumerate(groups):
            for s, v in (PATHS if (r + gi) % 2 == 0 else PATHS[::-1]):
                p = pairs[PAIR[s]]
                if p is cw and cw.large != (s == "cw-N"):
                    toggle_s += cw.set_large(s == "cw-N")
                    toggles += 1
                ip, port = target(p, scene, v, kind)
                key = f"{scene} {s}/{v}"
                if kind == "rr":
                    pp = B.sockperf_rr(p.client.path, ip, port, args.seconds, cpu_client)
                    for f in ("rr_per_s", "p50_us", "p99_us"):
                        res[key][f].append(pp[f])
                else:
                    c = tcp_crr(p.client.path, ip, port, args.seconds, cpu_client)
                    res[key]["crr_per_s"].append(c["crr_per_s"])
                    res[key]["crr_errors"].append(c["errors"])
        B.log(f"bench: round {r + 1}/{args.rounds}: " + "; ".join(
            f"{scene} " + ", ".join(f"{s}/{v} {res[f'{scene} {s}/{v}']['rr_per_s'][-1]:.0f} RR "
                                    f"{res[f'{scene} {s}/{v}']['crr_per_s'][-1]:.0f} CRR"
                                    for s, v in PATHS) for scene in SCENES))

    cw_after = cw.counters()
    dnat_after = kp.dnat_packets(seps)
    load_end = os.getloadavg()

    # --- report ---
    n = args.services
    ipt = B.sh("iptables-restore", "--version", check=False).stdout.strip()
    print()
    print(f"ClusterIP services, {args.rounds} rounds x {args.seconds}s per measurement; client "
          f"CPU {cpu_client}, server CPU {cpu_server}; pod MTU {tn.POD_MTU}, VXLAN between nodes")
    print(f"cw-2: Causeway, the 2 measured services only; cw-N: the same nodes with {n} services "
          f"(bpftool batch {load_s['cw-N']:.2f}s per node to add the others, "
          f"{load_s['cw-2']:.2f}s to remove them; {toggles} changes during the rounds, "
          f"{toggle_s:.0f}s); kp-N: ptp pods, kube-proxy iptables "
          f"rules for the same {n} services ({ipt}; iptables-restore {load_s['kp-N']:.2f}s per "
          f"node; KUBE-SERVICES {n_kube_services} rules, the measured ones last); ptp-0: ptp "
          "pods, no rules")
    print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_start)} at the start, "
          f"{' '.join(f'{x:.2f}' for x in load_end)} at the end")
    print("RR: sockperf TCP ping-pong, one connection; CRR: a new connection per request/response")
    print("figures: median over rounds; ratio: median of the per-round ratios")
    print()
    out = {"rounds": args.rounds, "seconds": args.seconds, "services": n,
           "iptables": ipt, "load_seconds": {k: round(v, 3) for k, v in load_s.items()},
           "kube_services_rules": n_kube_services,
           "loadavg_start": load_start, "loadavg_end": load_end,
           "figures": {}, "raw": res}
    for label, num, den, goal, meaning in comparisons(n):
        print(f"{label}: {meaning}")
        for scene in SCENES:
            for m, key, mlabel, unit in METRICS:
                a = res[f"{scene} {num[0]}/{num[1]}"][key]
                b = res[f"{scene} {den[0]}/{den[1]}"][key]
                ratios = [x / y if y else float("inf") for x, y in zip(a, b)]
                ratio = B.median(ratios)
                print(f"  {scene:5} {mlabel:7}: {num[0]}/{num[1]} {B.median(a):.0f} vs "
                      f"{den[0]}/{den[1]} {B.median(b):.0f} {unit} = {ratio:.3f}x  "
                      f"({verdict(ratio, goal)}; ratios {min(ratios):.3f}..{max(ratios):.3f}, "
                      f"spread {B.spread(a):.0%} / {B.spread(b):.0%})")
                if m == "rr":
                    # a stall moves the rate, not the median round trip
                    pa = res[f"{scene} {num[0]}/{num[1]}"]["p50_us"]
                    pb = res[f"{scene} {den[0]}/{den[1]}"]["p50_us"]
                    p50_ratio = B.median([y / x for x, y in zip(pa, pb) if x])
                    print(f"  {scene:5} {'':7}  one-way p50 {B.median(pa):.1f} vs "
                          f"{B.median(pb):.1f} us: the round trip rate from it "
                          f"{p50_ratio:.3f}x")
                out["figures"][f"{label} {scene} {m}"] = {
                    "numerator": f"{num[0]}/{num[1]}", "denominator": f"{den[0]}/{den[1]}",
                    "value": round(B.median(a), 1), "baseline": round(B.median(b), 1),
                    "ratio": round(ratio, 3), "round_ratios": [round(x, 3) for x in ratios],
                    "goal": goal, "met": None if goal is None else
                    (ratio > goal if goal == 1.0 else ratio >= goal)}
                if m == "rr":
                    out["figures"][f"{label} {scene} {m}"]["p50_ratio"] = round(p50_ratio, 3)
        print()
    print("RR one-way (sockperf half round trip, p50 / p99 us; no goal):")
    for scene in SCENES:
        print(f"  {scene:5} " + "  ".join(
            f"{s}/{v} {B.median(res[f'{scene} {s}/{v}']['p50_us']):.1f}/"
            f"{B.median(res[f'{scene} {s}/{v}']['p99_us']):.1f}" for s, v in PATHS))
    print()
    print("per round (spread = (max - min) / median):")
    for scene in SCENES:
        for m, key, mlabel, _unit in METRICS:
            for s, v in PATHS:
                vals = res[f"{scene} {s}/{v}"][key]
                print(f"  {scene:5} {m:3} {s}/{v:3} {' '.join(f'{x:.0f}' for x in vals)}"
                      f"  spread {B.spread(vals):.0%}")

    print()
    print("path check:")
    warn = []
    errors = {k: sum(v["crr_errors"]) for k, v in res.items() if sum(v["crr_errors"])}
    print(f"  CRR connections that failed (timeout, reset, short answer): "
          f"{', '.join(f'{k} {v}' for k, v in errors.items()) or 'none'}")
    if errors:
        warn.append(f"CRR connections failed: {errors}")
    deltas = {}
    d = counters_delta(cw_before, cw_after)
    deltas["cw"] = d
    for node, c in d.items():
        fwd = {k: v for k, v in c.items() if k.startswith("forwarded")}
        drp = {k: v for k, v in c.items() if not k.startswith("forwarded")}
        print(f"  cw node {node} datapath counters during the rounds: "
              f"{', '.join(f'{k} {v}' for k, v in sorted(fwd.items())) or 'nothing forwarded'}; "
              f"dropped: {', '.join(f'{k} {v}' for k, v in drp.items()) or 'none'}")
        if drp:
            warn.append(f"cw node {node} dropped {drp}")
    if not any(v for k, v in d.get("a", {}).items() if k.startswith("forwarded")):
        warn.append("no packet went through Causeway's programs on cw node a")
    dnat = {f"{s} {p}": dnat_after[(s, p)] - dnat_before[(s, p)] for s, p in dnat_after}
    print(f"  kp-N node 1, packets DNATed by the measured services' KUBE-SEP rules (first packets "
          f"of connections): {', '.join(f'{k} {v}' for k, v in dnat.items())}")
    if not all(dnat.values()):
        warn.append("a measured kube-proxy rule DNATed nothing: the kp-N figures may not be "
                    "of its service path")
    out["datapath_counters"] = deltas
    out["kube_proxy_dnat"] = dnat
    for w in warn:
        print(f"WARNING: {w}")
    print(f"(setup {setup_s:.0f}s, measuring {time.monotonic() - t_start - setup_s:.0f}s)")
    if args.json:
        B.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, AssertionError, tn.netnslib.Failed, subprocess.TimeoutExpired) as exc:
        B.log(f"bench: services failed: {exc}")
        sys.exit(1)
