#!/usr/bin/env python3
"""Cross-node pod-to-pod throughput and request/response rate: Causeway's
tunnel and native routing modes, each against a plain-kernel baseline
between the same namespaces, in the same run.

One lab (test/lab/lab) of three clusters of two nodes on one shared
underlay bridge: cluster `xtun` routes pods over Causeway's VXLAN tunnel,
the datapath encapsulating pods' packets itself (the default), cluster
`xstk` over the same tunnel with the helpers' --tunnel-through-stack (the
VXLAN device encapsulates, through the node's IP stack), cluster `xnat`
natively.  In each, pod a on node 1 and pod b on node 2, made by the lab's
kubelet through the real plugin.

The baselines (the goal's figures) run between the same namespaces as
Causeway: pod a and pod b of the Causeway cluster each get a second, plain
veth (no BPF on either end, the pods' MTU, an address of 10.250.j.0/24 for
the tunnel, 10.251.j.0/24 for native) to their own lab node, and between
those two nodes

  tunnel baseline: a plain kernel VXLAN device per node (VNI 1, UDP 4789
                   beside cw_vxlan's 8472, no UDP checksum, as Causeway's
                   tunnel key asks) with static FDB, neighbour and route
                   entries: flannel's vxlan backend, written by hand; its
                   outer packets are exempt from conntrack as Causeway's
                   nodes exempt their own (a raw-table notrack rule);
  native baseline: static routes to the other node's baseline subnet via
                   its underlay address, as Causeway's native mode
                   installs (the native nodes' underlay carries Causeway's
                   netdev programs, which pass these packets on to the
                   stack after a map lookup: the baseline pays that).

So Causeway and its baseline share the pods' namespaces, the nodes and
everything on them (the helper's netfilter rules, which make the node's
stack conntrack what it forwards: the baseline's packets pay that, as on
any node whose CNI forwards through the stack and masquerades; run with
--no-masquerade for nodes without nat rules).

A stricter figure, "bare", takes the nodes' surroundings away too: two
"bare" node namespaces plugged into the same lab bridge the same way the
lab plugs its nodes (a veth, the same /16, the same sysctls), with no
Causeway and no netfilter rules anywhere: pods wired by the reference
plugins (ptp + host-local, same MTU as the lab's pods), and between the
nodes the same plain VXLAN device (UDP 8472 there) or the same static
routes.  causeway/bare is Causeway against a plain kernel on nodes that
run nothing else.

For the tunnel mode, two more figures: the tunnel through the stack
(cluster xstk, above), and the collect-metadata floor: a third pair of ptp
pods on the bare nodes, joined by a collect-metadata ("external") VXLAN
device per node (UDP 8473, beside the bare tunnel's 8472) and
test/bench/floor.bpf.c, the least a BPF datapath on such a device does
(set the tunnel key and redirect out; rewrite the MACs and redirect in; no
map, no check, no counter).  floor/bare is what sending through a
collect-metadata device costs against a VXLAN device the stack routes to,
on this kernel; stack/floor is what Causeway's programs and its nodes'
surroundings add on that path.  causeway/baseline is the goal's figure;
causeway/bare is judged against the same goal.

Each round runs, for every mode and for Causeway and its baseline back to
back (the order flipping every round): iperf3 TCP bulk throughput and
sockperf TCP ping-pong, pod a -> pod b, client on CPU 0, server on CPU 1.
The ratio reported is the median of the per-round ratios.

Usage: cross_node.py [--rounds N] [--seconds S] [--json FILE]
(defaults: 5 rounds of 2 s per measurement, about 4 minutes in all)
"""

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
import benchlib as B  # noqa: E402

GOAL = 0.95
IPERF_PORT = 5201
SOCKPERF_PORT = 11111
MODES = ("tunnel", "native")
CLUSTER = {"tunnel": "xtun", "native": "xnat"}
STACK_CLUSTER = "xstk"  # tunnel mode, --tunnel-through-stack
TOPOLOGY = {
    "underlay": "shared",
    "clusters": [
        {"name": "xtun", "id": 1, "podSubnet": "10.241.0.0/16",
         "serviceSubnet": "10.243.0.0/16", "routing": "tunnel", "nodes": 2},
        {"name": "xnat", "id": 2, "podSubnet": "10.242.0.0/16",
         "serviceSubnet": "10.244.0.0/16", "routing": "native", "nodes": 2},
        {"name": "xstk", "id": 3, "podSubnet": "10.248.0.0/16",
         "serviceSubnet": "10.249.0.0/16", "routing": "tunnel", "nodes": 2,
         "tunnelThroughStack": True},
    ],
}
# Baseline pod subnets, per bare node j (1, 2): they exist only inside the
# bare namespaces.
BASE_SUBNET = {"tunnel": "10.245.{j}.0/24", "native": "10.246.{j}.0/24",
               "floor": "10.247.{j}.0/24"}
# The same-namespace baselines' addresses, per lab node j (1, 2): pod side .2,
# node side .1 (and, for the tunnel, the VTEP .0).
SAME_SUBNET = {"tunnel": "10.250.{j}.0/24", "native": "10.251.{j}.0/24"}
SAME_VETH = "cwbs"      # + j: the node end of a pod's baseline veth
SAME_POD_IF = "base0"   # its end in the pod
SAME_VXLAN = "cwbs_vxlan"
SAME_PORT = 4789        # beside cw_vxlan's 8472 in the same node
BARE_ROW = 200      # bare node j gets <underlay>.200.(10 + j)
BARE_VXLAN = "cwb_vxlan"
VXLAN_PORT = 8472   # Causeway's (and Linux/Cilium's) VXLAN port
VNI = 1
FLOOR_VXLAN = "cwb_vxmd"
FLOOR_PORT = 8473   # the baseline's device holds 8472 in the same namespace
FLOOR_ATTACH = os.path.join(B.BUILD, "bench", "floor-attach")
# What is measured per mode: Causeway, its baseline, and for the tunnel the floor.
KINDS = {"tunnel": ("causeway", "stack", "baseline", "bare", "floor"),
         "native": ("causeway", "baseline", "bare")}
# The per-round ratios printed besides causeway/baseline.
OTHER_RATIOS = {"tunnel": (("causeway", "bare"), ("causeway", "stack"), ("stack", "floor"),
                           ("floor", "bare")),
                "native": (("causeway", "bare"),)}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--seconds", type=int, default=2,
                    help="seconds per iperf3/sockperf run (default 2; iperf3 runs one "
                    "more, omitted, to settle)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    ap.add_argument("--no-masquerade", action="store_true",
                    help="run the helpers with --no-masquerade: no nat rules, so no conntrack, "
                    "in the Causeway nodes (what masquerading costs)")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20 or not 2 <= args.seconds <= 60:
        ap.error("--rounds within 1..20, --seconds within 2..60")
    return args


def preflight():
    B.preflight_lab(need_tools=("iperf3", "sockperf", "ss", "bridge", "nft"))


# --- the bare baseline nodes ------------------------------------------------------

class BareNodes:
    """Two node namespaces on the lab's underlay bridge, without Causeway.

    Plugged in as test/lab/lab plugs its nodes (wire(): a veth from the
    bridge, named eth0 inside, an address of the underlay /16) with the
    lab's node sysctls, so the underlay path is the lab nodes' own.
    """

    def __init__(self, cleanup, lab_state, work, mtu):
        self.cleanup = cleanup
        self.work = work
        self.mtu = mtu
        tag = f"cwbench-xn-{os.getpid()}"
        bridge = lab_state["bridges"][0]["name"]
        net = ipaddress.IPv4Network(lab_state["subnet"])
        self.nodes = []
        for j in (1, 2):
            ip = str(net.network_address + BARE_ROW * 256 + 10 + j)
            ns = B.netns_add(cleanup, f"{tag}-n{j}")
            veth = f"cwbx{os.getpid()}n{j}"
            B.sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                 "netns", os.path.basename(ns))
            cleanup.push(f"link {veth}", lambda v=veth: B.sh("ip", "link", "del", v,
                                                             check=False, quiet=True))
            B.sh("ip", "link", "set", veth, "master", bridge, "up")
            B.ns_sh(ns, "ip", "addr", "add", f"{ip}/{net.prefixlen}", "dev", "eth0")
            B.ns_sh(ns, "ip", "link", "set", "eth0", "up")
            B.ns_sh(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                       "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
            d = os.path.join(work, f"bare-n{j}")
            os.makedirs(d)
            self.nodes.append({"j": j, "ns": ns, "ip": ip, "dir": d, "pods": {},
                               "runner": B.Runner(os.path.join(d, "libcni-cache"))})

    def cni(self, node, conf_file, cmd, cid, pod_ns):
        """cnirunner (libcni) inside the bare node's netns, as a runtime on it would."""
        argv = B.in_netns(node["ns"], node["runner"].argv(conf_file, cmd, cid, pod_ns))
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"ptp {cmd} {cid} exited {res.returncode}: "
                               f"{res.stderr.strip() or res.stdout.strip()}")
        return res.stdout

    def pod(self, mode, node):
        """A pod wired by ptp + host-local on a bare node; returns (netns, ip)."""
        name = f"cwbench-xn-{mode[:3]}"
        cid = f"cwbench-xn-{os.getpid()}-{mode[:3]}-{node['j']}"
        conf = B.ptp_conf(name, BASE_SUBNET[mode].format(j=node["j"]),
                          os.path.join(node["dir"], "host-local"))
        conf["mtu"] = self.mtu
        conf_file = B.write_json(os.path.join(node["dir"], f"{name}.conf"), conf)
        pod_ns = B.netns_add(self.cleanup, cid)
        out = json.loads(self.cni(node, conf_file, "add", cid, pod_ns))
        self.cleanup.push(f"ptp DEL {cid}", self.cni, node, conf_file, "del", cid, pod_ns)
        node["pods"][mode] = out
        return pod_ns, B.pod_ip(out)

    def paths(self, mode):
        """The bare nodes as B.plain_vxlan and B.plain_routes take them, with mode's subnets."""
        return [{"ns": n["ns"], "ip": n["ip"], "cidr": BASE_SUBNET[mode].format(j=n["j"])}
                for n in self.nodes]

    def tunnel(self):
        """Plain VXLAN between the two bare nodes, static entries only."""
        B.plain_vxlan(self.paths("tunnel"), BARE_VXLAN, VXLAN_PORT, self.mtu, vni=VNI)

    def floor(self):
        """The collect-metadata floor: an external VXLAN device per node and
        floor.bpf.c on it and on the floor pod's host veth."""
        for n in self.nodes:
            B.ns_sh(n["ns"], "ip", "link", "add", FLOOR_VXLAN, "type", "vxlan", "external",
                       "dstport", str(FLOOR_PORT))
            B.ns_sh(n["ns"], "ip", "link", "set", FLOOR_VXLAN, "mtu", str(self.mtu), "up")
        for n in self.nodes:
            res = n["pods"]["floor"]
            host = next(i for i in res["interfaces"] if not i.get("sandbox"))
            pod = next(i for i in res["interfaces"] if i.get("sandbox"))
            for o in self.nodes:
                if o is not n:
                    B.sh(FLOOR_ATTACH, "tx", n["ns"], host["name"], FLOOR_VXLAN, o["ip"],
                         BASE_SUBNET["floor"].format(j=o["j"]), str(VNI))
            B.sh(FLOOR_ATTACH, "rx", n["ns"], FLOOR_VXLAN, host["name"], pod["mac"])

    def native(self):
        """Static routes to the other node's baseline pod subnet over the underlay."""
        B.plain_routes(self.paths("native"))


# --- the baselines between Causeway's own pod namespaces --------------------------

class SameNamespaces:
    """Plain-kernel paths between the namespaces of Causeway's bench pods.

    Each pod gets a second veth to its node, with nothing attached to
    either end, so its traffic to the other pod's baseline address goes
    through the pods' and nodes' stacks only: the same namespaces, the same
    nodes, no BPF.
    """

    def __init__(self, cleanup, mtu):
        self.cleanup = cleanup
        self.mtu = mtu

    def pods(self, mode, lab_nodes, pods):
        """lab_nodes: the two lab nodes' state; pods: {"a": (netns, ip), "b": ...} of
        Causeway's pods on them.  Returns the same namespaces with their baseline
        addresses."""
        nodes = []
        out = {}
        for j, (side, node) in enumerate(zip(("a", "b"), lab_nodes), 1):
            ns = os.path.join(B.NETNS_DIR, node["netns"])
            pod_ns = pods[side][0]
            net = ipaddress.IPv4Network(SAME_SUBNET[mode].format(j=j))
            veth = f"{SAME_VETH}{mode[0]}{j}"
            B.ns_sh(ns, "ip", "link", "add", veth, "type", "veth", "peer", "name", SAME_POD_IF,
                    "netns", os.path.basename(pod_ns))
            self.cleanup.push(f"link {veth}", lambda n=ns, v=veth: B.ns_sh(
                n, "ip", "link", "del", v, check=False, quiet=True))
            for dev, where, addr in ((veth, ns, net[1]), (SAME_POD_IF, pod_ns, net[2])):
                B.ns_sh(where, "ip", "link", "set", dev, "mtu", self.mtu, "up")
                B.ns_sh(where, "ip", "addr", "add", f"{addr}/{net.prefixlen}", "dev", dev)
            B.ns_sh(ns, "sysctl", "-q", "-w", f"net.ipv4.conf.{veth}.rp_filter=0")
            # the other pod's baseline subnet, through this node
            B.ns_sh(pod_ns, "ip", "route", "add", SAME_SUBNET[mode].format(j=3 - j), "via",
                    net[1], "dev", SAME_POD_IF)
            nodes.append({"ns": ns, "ip": node["ip"], "cidr": str(net)})
            out[side] = (pod_ns, str(net[2]))
        if mode == "tunnel":
            B.plain_vxlan(nodes, SAME_VXLAN, SAME_PORT, self.mtu, vni=VNI)
            for n in nodes:
                self.notrack(n["ns"])
        else:
            B.plain_routes(nodes)
        return out

    @staticmethod
    def notrack(ns):
        """The tunnel baseline's outer packets exempt from conntrack, as cw_vxlan's are."""
        rules = ("table ip cwbench {\n"
                 f" chain pre {{ type filter hook prerouting priority raw; "
                 f"udp dport {SAME_PORT} notrack; }}\n"
                 f" chain out {{ type filter hook output priority raw; "
                 f"udp dport {SAME_PORT} notrack; }}\n}}\n")
        res = subprocess.run(B.in_netns(ns, ["nft", "-f", "-"]), input=rules,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"nft (the baseline's notrack rule): {res.stderr.strip()}")


# --- the measurement ----------------------------------------------------------------

def start_servers(cleanup, pod_ns, ip, cpu):
    iperf = B.Server(cleanup, f"iperf3 server {ip}", B.in_netns(pod_ns, B.pinned(cpu, [
        "iperf3", "-s", "-B", ip, "-p", str(IPERF_PORT)])))
    sperf = B.Server(cleanup, f"sockperf server {ip}", B.in_netns(pod_ns, B.pinned(cpu, [
        "sockperf", "server", "--tcp", "-i", ip, "-p", str(SOCKPERF_PORT)])))
    B.wait_port(pod_ns, ip, IPERF_PORT)
    B.wait_port(pod_ns, ip, SOCKPERF_PORT)
    iperf.check()
    sperf.check()


def vxlan_tx(ns, dev):
    st = B.link_stats(ns, dev)
    return st[0] if st else None


def helper_metrics(lab, cluster, node):
    res = lab.helper(cluster, node, "metrics", "-o", "json", check=False)
    try:
        return json.loads(res.stdout) if res.returncode == 0 else None
    except json.JSONDecodeError:
        return None


def forwarded(counters):
    if counters is None:
        return None
    fwd = {}
    for e in counters:
        if e["reason"] == "forwarded":
            fwd[e["direction"]] = fwd.get(e["direction"], 0) + e["packets"]
    return fwd


def drops(counters):
    return {f"{e['direction']} {e['reason']}": e["packets"] for e in counters or []
            if e["reason"] != "forwarded" and e["packets"]}


def ratios_of(num, den):
    """Per-round ratios of two series measured round by round."""
    return [n / d if d else float("inf") for n, d in zip(num, den)]


def ratio_of(num, den):
    """The figure reported: the median of the per-round ratios."""
    return B.median(ratios_of(num, den))


def floor_figures(res, out):
    """The tunnel through the VXLAN device (Causeway's --tunnel-through-stack,
    and the collect-metadata floor) against the datapath's own encapsulation
    and the baseline."""
    cw, stk = res["tunnel/causeway"], res["tunnel/stack"]
    base, bare, floor = res["tunnel/baseline"], res["tunnel/bare"], res["tunnel/floor"]
    for label, key, unit, fmt in (("throughput", "gbps", "Gbit/s", "{:.2f}"),
                                  ("TCP RR", "rr_per_s", "round trips/s", "{:.0f}")):
        print(f"{'':6} {'  stack':10}: through the device (--tunnel-through-stack) "
              f"{fmt.format(B.median(stk[key]))} {unit}: stack/baseline "
              f"{ratio_of(stk[key], base[key]):.3f}x, causeway/stack "
              f"{ratio_of(cw[key], stk[key]):.3f}x (what encapsulating in the datapath gains)")
        print(f"{'':6} {'  floor':10}: collect-metadata floor {fmt.format(B.median(floor[key]))} "
              f"{unit}: floor/bare {ratio_of(floor[key], bare[key]):.3f}x (the device's "
              f"cost), stack/floor {ratio_of(stk[key], floor[key]):.3f}x (Causeway's programs "
              "and its nodes' surroundings on that path)")
        out["figures"][f"tunnel stack {key}"] = {
            "stack": round(B.median(stk[key]), 3),
            "stack_vs_baseline": round(ratio_of(stk[key], base[key]), 3),
            "causeway_vs_stack": round(ratio_of(cw[key], stk[key]), 3),
            "spread_stack": round(B.spread(stk[key]), 3)}
        out["figures"][f"tunnel floor {key}"] = {
            "floor": round(B.median(floor[key]), 3),
            "floor_vs_bare": round(ratio_of(floor[key], bare[key]), 3),
            "stack_vs_floor": round(ratio_of(stk[key], floor[key]), 3),
            "spread_floor": round(B.spread(floor[key]), 3)}


def main():
    args = parse_args()
    preflight()
    cleanup = B.Cleanup()
    cpu_client, cpu_server = B.client_server_cpus()
    work = B.scratch_dir(cleanup, f"cwbench-xn-{os.getpid()}-")
    t_start = time.monotonic()

    # The lab first: `lab down` is registered before anything of ours, so it
    # runs last, after our namespaces are gone from its bridge.
    topo = json.loads(json.dumps(TOPOLOGY))
    for c in topo["clusters"]:
        c["masquerade"] = not args.no_masquerade
    lab = B.Lab(cleanup, topo, prefix="cx").up()
    st = lab.state()
    nodes = {m: [n["name"] for n in lab.cluster(CLUSTER[m])["nodes"]] for m in MODES}
    stack_nodes = [n["name"] for n in lab.cluster(STACK_CLUSTER)["nodes"]]
    with open(lab.cluster("xtun")["nodes"][0]["conflist"]) as f:
        mtu = json.load(f)["plugins"][0].get("mtu", 1500)

    setups = {}  # (mode, "causeway"|"baseline") -> {"a": (ns, ip), "b": (ns, ip), ...}
    lab_setups = [(m, "causeway", CLUSTER[m], nodes[m]) for m in MODES] + \
        [("tunnel", "stack", STACK_CLUSTER, stack_nodes)]
    for _, _, cluster, ns in lab_setups:
        for side, node in (("a", ns[0]), ("b", ns[1])):
            lab.create_pod(cluster, f"bench-{side}", node)
    for m, k, cluster, ns in lab_setups:
        pods = {}
        for side in ("a", "b"):
            rec = lab.wait_pod(cluster, f"bench-{side}")
            pods[side] = (os.path.join(B.NETNS_DIR, rec["netns"]), rec["ip"])
        setups[(m, k)] = pods
        B.log(f"bench: {k} {m} (cluster {cluster}): pod a {pods['a'][1]} on {ns[0]}, "
              f"pod b {pods['b'][1]} on {ns[1]}")

    same = SameNamespaces(cleanup, mtu)
    for m in MODES:
        p = setups[(m, "baseline")] = same.pods(m, lab.cluster(CLUSTER[m])["nodes"],
                                                setups[(m, "causeway")])
        B.log(f"bench: baseline {m}: pod a {p['a'][1]}, pod b {p['b'][1]}: Causeway's pods "
              f"in cluster {CLUSTER[m]}, over a plain veth each")

    bare = BareNodes(cleanup, st, work, mtu)
    for m in MODES + ("floor",):
        key = ("tunnel", "floor") if m == "floor" else (m, "bare")
        setups[key] = {"a": bare.pod(m, bare.nodes[0]), "b": bare.pod(m, bare.nodes[1])}
    bare.tunnel()
    bare.native()
    bare.floor()
    for m, k in [(m, "bare") for m in MODES] + [("tunnel", "floor")]:
        p = setups[(m, k)]
        B.log(f"bench: {k} {m}: pod a {p['a'][1]} on bare node {bare.nodes[0]['ip']}, "
              f"pod b {p['b'][1]} on bare node {bare.nodes[1]['ip']}")

    for key, pods in setups.items():
        start_servers(cleanup, pods["b"][0], pods["b"][1], cpu_server)
        ok, why = B.tcp_reach(pods["a"][0], pods["b"][1], SOCKPERF_PORT)
        if not ok:
            raise RuntimeError(f"{key[1]} {key[0]}: pod a ({pods['a'][1]}) cannot open TCP to "
                               f"pod b {pods['b'][1]}:{SOCKPERF_PORT}: {why}")

    # Which way the packets went: the tunnel devices' counters, before and after.
    lab_node1 = {m: os.path.join(B.NETNS_DIR, lab.cluster(CLUSTER[m])["nodes"][0]["netns"])
                 for m in MODES}
    stack_node1 = os.path.join(B.NETNS_DIR, lab.cluster(STACK_CLUSTER)["nodes"][0]["netns"])
    tx_dev = {("tunnel", "causeway"): (lab_node1["tunnel"], "cw_vxlan"),
              ("tunnel", "causeway-underlay"): (lab_node1["tunnel"], "eth0"),
              ("tunnel", "stack"): (stack_node1, "cw_vxlan"),
              ("native", "causeway"): (lab_node1["native"], "cw_vxlan"),
              ("tunnel", "baseline"): (lab_node1["tunnel"], SAME_VXLAN),
              ("tunnel", "bare"): (bare.nodes[0]["ns"], BARE_VXLAN),
              ("tunnel", "floor"): (bare.nodes[0]["ns"], FLOOR_VXLAN)}
    tx0 = {k: vxlan_tx(*d) for k, d in tx_dev.items()}
    setup_s = time.monotonic() - t_start

    res = {f"{m}/{k}": {"gbps": [], "rr_per_s": [], "p50_us": [], "p99_us": []}
           for m in MODES for k in KINDS[m]}
    for r in range(args.rounds):
        modes = MODES if r % 2 == 0 else MODES[::-1]
        for m in modes:
            order = KINDS[m] if r % 2 == 0 else KINDS[m][::-1]
            for k in order:
                a, b = setups[(m, k)]["a"], setups[(m, k)]["b"]
                res[f"{m}/{k}"]["gbps"].append(
                    B.iperf3_gbps(a[0], b[1], IPERF_PORT, args.seconds, cpu_client))
            for k in order:
                a, b = setups[(m, k)]["a"], setups[(m, k)]["b"]
                pp = B.sockperf_rr(a[0], b[1], SOCKPERF_PORT, args.seconds, cpu_client)
                for f in ("rr_per_s", "p50_us", "p99_us"):
                    res[f"{m}/{k}"][f].append(pp[f])
        B.log(f"bench: round {r + 1}/{args.rounds}: " + "; ".join(
            f"{m} cw {res[f'{m}/causeway']['gbps'][-1]:.2f}/base "
            f"{res[f'{m}/baseline']['gbps'][-1]:.2f} Gbit/s, cw "
            f"{res[f'{m}/causeway']['rr_per_s'][-1]:.0f}/base "
            f"{res[f'{m}/baseline']['rr_per_s'][-1]:.0f} RR/s" for m in MODES) +
            "; bare " + ", ".join(f"{m} {res[f'{m}/bare']['gbps'][-1]:.2f} Gbit/s "
                                  f"{res[f'{m}/bare']['rr_per_s'][-1]:.0f} RR/s" for m in MODES) +
            f"; tunnel through the stack {res['tunnel/stack']['gbps'][-1]:.2f} Gbit/s, "
            f"{res['tunnel/stack']['rr_per_s'][-1]:.0f} RR/s"
            f"; tunnel floor {res['tunnel/floor']['gbps'][-1]:.2f} Gbit/s, "
            f"{res['tunnel/floor']['rr_per_s'][-1]:.0f} RR/s")

    tx1 = {k: vxlan_tx(*d) for k, d in tx_dev.items()}
    counters = {m: helper_metrics(lab, CLUSTER[m], nodes[m][0]) for m in MODES}
    counters_b = {m: helper_metrics(lab, CLUSTER[m], nodes[m][1]) for m in MODES}

    # --- report ---
    print()
    print(f"Cross-node pod-to-pod, {args.rounds} rounds x {args.seconds}s per measurement; "
          f"client CPU {cpu_client}, server CPU {cpu_server}; pod MTU {mtu} everywhere")
    print(f"lab {lab.name}, underlay {st['subnet']} (bridge {st['bridges'][0]['name']}): "
          f"causeway tunnel = cluster xtun (through the stack: {STACK_CLUSTER}), native = "
          f"cluster xnat; baselines between the same pods and nodes (plain veths, plain VXLAN "
          f"on UDP {SAME_PORT} / static routes); bare: bare nodes {bare.nodes[0]['ip']}, "
          f"{bare.nodes[1]['ip']} (plain VXLAN / static routes, ptp pods, no netfilter)")
    print("figures: median over rounds; ratio: median of the per-round causeway/baseline ratios")
    print()
    out = {"rounds": args.rounds, "seconds": args.seconds, "mtu": mtu, "figures": {},
           "raw": res}
    for m in MODES:
        cw, base = res[f"{m}/causeway"], res[f"{m}/baseline"]
        for label, key, unit, fmt in (("throughput", "gbps", "Gbit/s", "{:.2f}"),
                                      ("TCP RR", "rr_per_s", "round trips/s", "{:.0f}")):
            ratios = ratios_of(cw[key], base[key])
            ratio = B.median(ratios)
            met = ratio >= GOAL
            print(f"{m:6} {label:10}: causeway {fmt.format(B.median(cw[key]))} {unit} vs "
                  f"baseline {fmt.format(B.median(base[key]))} {unit} = {ratio:.3f}x  "
                  f"(goal >= {GOAL:.2f}x: {'met' if met else 'NOT MET'}; ratios "
                  f"{min(ratios):.3f}..{max(ratios):.3f}, spread cw {B.spread(cw[key]):.0%} "
                  f"base {B.spread(base[key]):.0%})")
            out["figures"][f"{m} {key}"] = {
                "causeway": round(B.median(cw[key]), 3), "baseline": round(B.median(base[key]), 3),
                "ratio": round(ratio, 3), "round_ratios": [round(x, 3) for x in ratios],
                "spread_causeway": round(B.spread(cw[key]), 3),
                "spread_baseline": round(B.spread(base[key]), 3), "goal": GOAL, "met": met}
            # The stricter comparison, held to the same goal: a plain kernel on
            # nodes with nothing else on them.
            bare = res[f"{m}/bare"]
            bare_ratios = ratios_of(cw[key], bare[key])
            bare_met = B.median(bare_ratios) >= GOAL
            print(f"{'':6} {'  bare':10}: bare nodes {fmt.format(B.median(bare[key]))} {unit}: "
                  f"causeway/bare {B.median(bare_ratios):.3f}x (goal >= {GOAL:.2f}x: "
                  f"{'met' if bare_met else 'NOT MET'}; ratios {min(bare_ratios):.3f}.."
                  f"{max(bare_ratios):.3f}), baseline/bare {ratio_of(base[key], bare[key]):.3f}x "
                  "(what the nodes' surroundings cost the plain path)")
            out["figures"][f"{m} bare {key}"] = {
                "bare": round(B.median(bare[key]), 3),
                "causeway_vs_bare": round(B.median(bare_ratios), 3),
                "round_ratios": [round(x, 3) for x in bare_ratios],
                "baseline_vs_bare": round(ratio_of(base[key], bare[key]), 3),
                "spread_bare": round(B.spread(bare[key]), 3), "goal": GOAL, "met": bare_met}
        if m == "tunnel":
            floor_figures(res, out)
        print(f"{m:6} {'RR one-way':10}: causeway p50 {B.median(cw['p50_us']):.1f} us "
              f"p99 {B.median(cw['p99_us']):.1f} us vs baseline p50 "
              f"{B.median(base['p50_us']):.1f} us p99 {B.median(base['p99_us']):.1f} us "
              "(sockperf half round trip; no goal)")
    print()
    print("per round (spread = (max - min) / median):")
    for m in MODES:
        for label, key, fmt in (("Gbit/s", "gbps", "{:.2f}"), ("RR/s", "rr_per_s", "{:.0f}")):
            for k in KINDS[m]:
                vals = res[f"{m}/{k}"][key]
                print(f"  {m:6} {label:6} {k:8} {' '.join(fmt.format(v) for v in vals)}"
                      f"  spread {B.spread(vals):.0%}")
            ratios = ratios_of(res[f"{m}/causeway"][key], res[f"{m}/baseline"][key])
            print(f"  {m:6} {label:6} {'ratio':8} {' '.join(f'{x:.3f}' for x in ratios)}")
            for num, den in OTHER_RATIOS[m]:
                ratios = ratios_of(res[f"{m}/{num}"][key], res[f"{m}/{den}"][key])
                print(f"  {m:6} {label:6} {num[:2] + '/' + den[:4]:8} "
                      f"{' '.join(f'{x:.3f}' for x in ratios)}")

    print()
    print("path check (packets sent by node 1's VXLAN device, or underlay, during the rounds):")
    for k, label in ((("tunnel", "causeway"), "causeway tunnel, cw_vxlan"),
                     (("tunnel", "causeway-underlay"), "causeway tunnel, eth0"),
                     (("tunnel", "stack"), "through the stack, cw_vxlan"),
                     (("native", "causeway"), "causeway native, cw_vxlan"),
                     (("tunnel", "baseline"), f"baseline tunnel, {SAME_VXLAN}"),
                     (("tunnel", "bare"), f"bare tunnel, {BARE_VXLAN}"),
                     (("tunnel", "floor"), f"floor tunnel, {FLOOR_VXLAN}")):
        d = tx1[k] - tx0[k] if tx0[k] is not None and tx1[k] is not None else None
        print(f"  {label:28} {d if d is not None else '?'}")
    warn = []

    def sent(k):
        return (tx1[k] or 0) - (tx0[k] or 0)

    # The datapath encapsulates pods' packets itself and sends them out of
    # the underlay; only the node's own traffic would use cw_vxlan.
    if sent(("tunnel", "causeway")) > 100:
        warn.append("causeway tunnel mode sent pods' traffic over cw_vxlan, not encapsulated "
                    "by the datapath")
    if not sent(("tunnel", "causeway-underlay")):
        warn.append("causeway tunnel mode sent nothing out of the underlay")
    if not sent(("tunnel", "stack")):
        warn.append("--tunnel-through-stack sent nothing over cw_vxlan")
    for k, dev in (("floor", FLOOR_VXLAN), ("baseline", SAME_VXLAN), ("bare", BARE_VXLAN)):
        if not sent(("tunnel", k)):
            warn.append(f"the {k} tunnel sent nothing over {dev}")
    if (tx1[("native", "causeway")] or 0) - (tx0[("native", "causeway")] or 0) > 100:
        warn.append("causeway native mode sent traffic over cw_vxlan")
    for m in MODES:
        fa, fb = forwarded(counters[m]), forwarded(counters_b[m])
        dr = {**drops(counters[m]), **{f"node2 {k}": v for k, v in drops(counters_b[m]).items()}}
        print(f"  causeway {m} datapath counters: node 1 forwarded "
              f"{', '.join(f'{d} {n:.0f}' for d, n in sorted((fa or {}).items())) or '?'}; "
              f"node 2 forwarded "
              f"{', '.join(f'{d} {n:.0f}' for d, n in sorted((fb or {}).items())) or '?'}; "
              f"dropped: {', '.join(f'{k} {v:.0f}' for k, v in dr.items()) or 'none'}")
        if fa is not None and not any(fa.values()):
            warn.append(f"no packet went through Causeway's programs on {nodes[m][0]}")
        out["datapath_counters_" + m] = {"node1": counters[m], "node2": counters_b[m]}
    for w in warn:
        print(f"WARNING: {w}; the figures may not be of the paths they name")
    print(f"(setup {setup_s:.0f}s, measuring {time.monotonic() - t_start - setup_s:.0f}s)")
    if args.json:
        B.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        B.log(f"bench: cross_node failed: {exc}")
        sys.exit(1)
