#!/usr/bin/python3
"""Cross-node datapath on real devices: two nodes, one VXLAN overlay.

Two node namespaces (test/node/cwlib.py's Node: private bpfRoot, stateDir,
pods made by the real plugin through build/cnirunner) are joined by an
underlay veth (192.168.77.1/24 - 192.168.77.2/24).  Each node gets a
collect-metadata VXLAN device on port 8472 with from_overlay on its tc
ingress, and one pod.  The cross-node maps are written with bpftool, as
bytes laid out by include/causeway/datapath.h, so the layout is checked from
outside the C code too.

What BPF_PROG_RUN cannot show (test_lxc.c) is checked here: the tunnel key
reaches the VXLAN device (outer addresses, VNI = the sender's identity,
zero UDP checksum), from_overlay delivers to the pod, ping and a TCP stream
cross, the ipcache wins over the tunnel map and removing entries stops the
traffic, the host stack gets non-endpoint overlay traffic and natively
routed traffic.

Every address used lives in namespaces this test makes; every namespace
and pin it makes is removed at the end, also on failure, and checked gone.

Run as root:  /usr/bin/python3 test/bpf/tunnel_netns.py
Prints "ok"/"not ok" per check and a closing "tunnel_netns: N passed, M
failed"; exits 0 when all passed, 1 on a failure, 77 when not root.
"""

import hashlib
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time

import netnslib  # puts test/node, cwlib's, on the path
import cwlib
from cwlib import Node, in_netns, sh
from netnslib import check

# From include/causeway/datapath.h.
VXLAN_DEV = "cw_vxlan"
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
MAP_ENDPOINTS, MAP_METRICS = "cw_endpoints", "cw_metrics"
MAP_IPCACHE, MAP_TUNNEL, MAP_CONFIG = "cw_ipcache", "cw_tunnel", "cw_config"
PIN_FROM_OVERLAY = "from_overlay"
FORWARDED = 0
DROPS = {130: "INVALID_PACKET", 131: "UNKNOWN_L3", 132: "INVALID_SOURCE", 133: "TTL_EXCEEDED",
         134: "REDIRECT_FAILED", 135: "FRAG_UNSUPPORTED", 137: "NO_TUNNEL_KEY",
         138: "TUNNEL_FAILED", 139: "NO_TUNNEL_DEV", 140: "NO_SERVICE_BACKEND",
         141: "CT_CREATE_FAILED"}
DROP_NO_TUNNEL_DEV = 139
DIR_INGRESS, DIR_EGRESS = 0, 1
IDENTITY_HOST = 1
TUNNEL_TTL = 64  # bpf/lib/tunnel.h

UNDERLAY_DEV = "cwul0"  # exists only inside the two node namespaces
UNDERLAY_NET = "192.168.77.0/24"
BLACKHOLE = "192.168.77.99"  # on the underlay subnet, held by nobody
NODE_SERVICE_IP = "198.51.100.2"  # TEST-NET-2, on node b's lo: "the node itself"
POD_MTU = 1500 - VXLAN_OVERHEAD
ETH_P_ALL = 0x0003


# --- map bytes (datapath.h layouts, little-endian host) ----------------------

def ip_bytes(ip):
    return ipaddress.IPv4Address(ip).packed


def lpm_key(cidr):
    net = ipaddress.ip_network(cidr)
    return struct.pack("<I", net.prefixlen) + net.network_address.packed


def ipcache_value(identity, tunnel_ip=None, cluster_id=0, flags=0):
    return (struct.pack("<I", identity) + ip_bytes(tunnel_ip or "0.0.0.0")
            + struct.pack("<HH", cluster_id, flags))


def tunnel_value(node_ip, flags=0):
    return ip_bytes(node_ip) + struct.pack("<I", flags)


def config_value(vxlan_ifindex, node_ip, underlay_ifindex=0):
    return (struct.pack("<I", vxlan_ifindex) + ip_bytes(node_ip)
            + struct.pack("<HHI", 0, 0, underlay_ifindex))


def hexargs(b):
    return ["%02x" % x for x in b]


class Side:
    """One node namespace with its underlay address, VXLAN device and pod."""

    def __init__(self, label, underlay_ip, pod_cidr, identity):
        self.label = label
        self.node = Node(f"tunnel-{label}")
        self.underlay_ip = underlay_ip
        self.pod_cidr = pod_cidr
        self.identity = identity
        self.pod = None

    @property
    def ns(self):
        return self.node.node_ns

    def nsenter(self, argv):
        return self.node.nsenter(argv)

    def in_pod(self, argv):
        return ["nsenter", f"--net={self.pod.path}", *map(str, argv)]

    def pin(self, name):
        return self.node.bpf_root / name

    def map_update(self, name, key, value):
        sh(["bpftool", "map", "update", "pinned", self.pin(name),
            "key", "hex", *hexargs(key), "value", "hex", *hexargs(value)])

    def map_delete(self, name, key):
        sh(["bpftool", "map", "delete", "pinned", self.pin(name), "key", "hex", *hexargs(key)])

    def map_lookup(self, name, key):
        out = sh(["bpftool", "-j", "map", "lookup", "pinned", self.pin(name),
                  "key", "hex", *hexargs(key)]).stdout
        return bytes(int(x, 16) for x in json.loads(out)["value"])

    def map_keys(self, name):
        raw = json.loads(sh(["bpftool", "-j", "map", "dump", "pinned", self.pin(name)]).stdout or "[]")
        return [bytes(int(x, 16) for x in e["key"]) for e in raw]

    def ifindex(self, dev):
        return json.loads(sh(["ip", "-n", self.ns, "-j", "link", "show", dev]).stdout)[0]["ifindex"]

    def config(self, vxlan=True, datapath_encap=True):
        """cw_config as the helper writes it: the VXLAN device, and the
        underlay when the datapath encapsulates pods' packets itself."""
        self.map_update(MAP_CONFIG, struct.pack("<I", 0), config_value(
            self.ifindex(VXLAN_DEV) if vxlan else 0, self.underlay_ip,
            self.ifindex(UNDERLAY_DEV) if datapath_encap else 0))

    def vxlan_stats(self):
        out = sh(["ip", "-n", self.ns, "-s", "-j", "link", "show", VXLAN_DEV]).stdout
        s = json.loads(out)[0]["stats64"]
        return s["rx"]["packets"], s["tx"]["packets"]

    def counters(self):
        """{(reason, dir): packets} of cw_metrics, summed over CPUs."""
        raw = json.loads(sh(["bpftool", "-j", "map", "dump", "pinned", self.pin(MAP_METRICS)]).stdout or "[]")
        out = {}
        for e in raw:
            # a per-CPU array, slot = reason << 1 | direction (cw_metrics_index)
            idx = int.from_bytes(bytes(int(x, 16) for x in e["key"])[0:4], "little")
            per_cpu = e.get("values") or [{"value": e["value"]}]
            out[(idx >> 1, idx & 1)] = sum(int.from_bytes(bytes(int(x, 16) for x in c["value"])[0:8], "little")
                                    for c in per_cpu)
        return out


def drops(side):
    return {f"{DROPS.get(r, r)}/{'in' if d == DIR_INGRESS else 'out'}": n
            for (r, d), n in side.counters().items() if r != FORWARDED and n}


# --- traffic -----------------------------------------------------------------

def ping(src, dst_ip, count=3):
    p = sh(src.in_pod(["ping", "-n", "-q", "-c", count, "-i", "0.2", "-W", "1", dst_ip]),
           check=False, timeout=30)
    return p.returncode == 0


def tcp_stream(src_pod_path, dst_pod_path, dst_ip, port=7000, size=512 * 1024):
    """Send `size` bytes from one pod to another; the receiver answers with
    their SHA-256.  Big enough for full-sized and GSO segments through the
    tunnel."""
    data = os.urandom(size)
    result = {}
    with in_netns(dst_pod_path):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((dst_ip, port))
        srv.listen(1)
    srv.settimeout(10)

    def serve():
        try:
            conn, peer = srv.accept()
            with conn:
                conn.settimeout(10)
                h, n = hashlib.sha256(), 0
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
                conn.sendall(h.digest())
                result["peer"], result["n"] = peer[0], n
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        with in_netns(src_pod_path):
            cli = socket.socket()
        with cli:
            cli.settimeout(10)
            cli.connect((dst_ip, port))
            cli.sendall(data)
            cli.shutdown(socket.SHUT_WR)
            digest = b""
            while len(digest) < 32:
                b = cli.recv(32 - len(digest))
                if not b:
                    break
                digest += b
    finally:
        t.join(15)
        srv.close()
    check("error" not in result, f"TCP server in {dst_pod_path}: {result.get('error')}")
    check(result.get("n") == size, f"TCP: {result.get('n')} of {size} bytes arrived")
    check(digest == hashlib.sha256(data).digest(), "TCP: the stream arrived altered")
    return result["peer"]


class Capture:
    """AF_PACKET socket on a node's underlay veth (both directions): reads the
    VXLAN frames on the wire without BPF or tcpdump."""

    def __init__(self, side):
        with in_netns(side.node.node_path):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((UNDERLAY_DEV, 0))
        self.sock.settimeout(0.2)

    def close(self):
        self.sock.close()

    def drain(self):
        try:
            while True:
                self.sock.recv(65535)
        except (socket.timeout, BlockingIOError):
            pass

    def vxlan_frames(self, seconds=1.0):
        """Parsed VXLAN frames seen for `seconds` (or until the socket idles)."""
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                f = self.sock.recv(65535)
            except socket.timeout:
                continue
            v = parse_vxlan(f)
            if v:
                out.append(v)
        return out


def parse_vxlan(f):
    if len(f) < 14 + 20 or f[12:14] != b"\x08\x00":
        return None
    ip = f[14:]
    ihl = (ip[0] & 0xF) * 4
    if ip[0] >> 4 != 4 or ip[9] != 17 or len(ip) < ihl + 8 + 8 + 14 + 20:
        return None
    udp = ip[ihl:]
    sport, dport, _, csum = struct.unpack("!HHHH", udp[:8])
    if dport != VXLAN_PORT:
        return None
    vx = udp[8:16]
    inner = udp[16:]
    iip = inner[14:]
    return {
        "outer_src": str(ipaddress.IPv4Address(ip[12:16])),
        "outer_dst": str(ipaddress.IPv4Address(ip[16:20])),
        "outer_ttl": ip[8],
        "udp_csum": csum,
        "vxlan_flags": vx[0],
        "vni": int.from_bytes(vx[4:7], "big"),
        "inner_type": inner[12:14],
        "inner_src": str(ipaddress.IPv4Address(iip[12:16])),
        "inner_dst": str(ipaddress.IPv4Address(iip[16:20])),
        "inner_ttl": iip[8],
        "inner_proto": iip[9],
    }


# --- the test ----------------------------------------------------------------

def make_sides(sides):
    """The two nodes, each appended to `sides` as soon as it exists."""
    sides.append(Side("a", "192.168.77.1", "10.240.1.0/24", 70001))
    sides.append(Side("b", "192.168.77.2", "10.240.2.0/24", 70002))
    return sides


def setup(a, b):
    """Underlay, VXLAN devices, pods (real plugin), from_overlay, maps."""
    sh(["ip", "-n", a.ns, "link", "add", UNDERLAY_DEV, "type", "veth",
        "peer", "name", UNDERLAY_DEV, "netns", b.ns])
    for s in (a, b):
        plen = ipaddress.ip_network(UNDERLAY_NET).prefixlen
        sh(["ip", "-n", s.ns, "addr", "add", f"{s.underlay_ip}/{plen}", "dev", UNDERLAY_DEV])
        sh(["ip", "-n", s.ns, "link", "set", UNDERLAY_DEV, "up"])
        # What the helper will do on a node: the collect-metadata device.
        sh(["ip", "-n", s.ns, "link", "add", VXLAN_DEV, "type", "vxlan", "external",
            "dstport", VXLAN_PORT])
        sh(["ip", "-n", s.ns, "link", "set", VXLAN_DEV, "up"])
        # Overlay traffic for the node itself arrives on the VXLAN device
        # with a source no route leads back to through it.
        for dev in ("all", VXLAN_DEV):
            sh(s.nsenter(["sysctl", "-q", "-w", f"net.ipv4.conf.{dev}.rp_filter=0"]))

        pod = s.node.make_pod()
        conf = s.node.conflist([s.node.conf(podCIDR=s.pod_cidr, mtu=POD_MTU)])
        s.node.add(pod, conf)
        s.pod = pod

        # The plugin's first ADD loaded and pinned every program, from_overlay too.
        check(s.pin(PIN_FROM_OVERLAY).exists(), f"{s.pin(PIN_FROM_OVERLAY)} not pinned by ADD")
        sh(s.nsenter(["tc", "qdisc", "add", "dev", VXLAN_DEV, "clsact"]))
        sh(s.nsenter(["tc", "filter", "add", "dev", VXLAN_DEV, "ingress", "bpf", "direct-action",
                      "pinned", s.pin(PIN_FROM_OVERLAY)]))

        s.config()
        # The sender's identity, as the helper will resolve it.
        key = ip_bytes(pod.ip)
        ep = bytearray(s.map_lookup(MAP_ENDPOINTS, key))
        ep[4:8] = struct.pack("<I", s.identity)
        s.map_update(MAP_ENDPOINTS, key, bytes(ep))


def ipcache_peer(src, dst, tunnel=True):
    src.map_update(MAP_IPCACHE, lpm_key(f"{dst.pod.ip}/32"),
                   ipcache_value(dst.identity, dst.underlay_ip if tunnel else None))


def check_tunnel_ping_and_tcp(a, b, datapath_encap=True):
    rx_b, tx_b = b.vxlan_stats()
    rx_a, tx_a = a.vxlan_stats()
    check(ping(a, b.pod.ip), f"ping {a.pod.ip} -> {b.pod.ip} over VXLAN failed")
    peer = tcp_stream(a.pod.path, b.pod.path, b.pod.ip)
    check(peer == a.pod.ip, f"TCP peer seen as {peer}, expected {a.pod.ip} (no NAT on this path)")
    rx_b2, tx_b2 = b.vxlan_stats()
    rx_a2, tx_a2 = a.vxlan_stats()
    check(rx_b2 > rx_b and rx_a2 > rx_a,
          f"VXLAN rx counters did not move (a {rx_a}->{rx_a2}, b {rx_b}->{rx_b2})")
    # who encapsulated: the programs send past the device, the device counts what it sends
    sent = (tx_a2 - tx_a, tx_b2 - tx_b)
    if datapath_encap:
        check(sent == (0, 0), f"the VXLAN devices sent {sent} packets: the datapath's own "
              "encapsulation was not used")
    else:
        check(min(sent) > 0, f"the VXLAN devices sent {sent} packets with underlay_ifindex 0")


def check_oversize_through_device(a, b):
    """A packet the underlay cannot carry with the outer headers: the
    datapath leaves it to the device, whose stack fragments the outer
    packet, as the kernel's VXLAN does; it arrives whole."""
    for s in (a, b):
        sh(["ip", "-n", s.ns, "link", "set", UNDERLAY_DEV, "mtu", "1400"])
    try:
        _, tx_a = a.vxlan_stats()
        p = sh(a.in_pod(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-M", "dont",
                         "-s", POD_MTU - 28, b.pod.ip]), check=False, timeout=30)
        _, tx_a2 = a.vxlan_stats()
        check(p.returncode == 0, f"a {POD_MTU}-byte ping over a 1400-byte underlay failed")
        check(tx_a2 - tx_a >= 2, f"a's VXLAN device sent {tx_a2 - tx_a} packets; the oversize "
              "pings should have gone to it")
        check(ping(a, b.pod.ip), "a small ping failed over the 1400-byte underlay")
    finally:
        for s in (a, b):
            sh(["ip", "-n", s.ns, "link", "set", UNDERLAY_DEV, "mtu", "1500"])


def check_through_device(a, b):
    """underlay_ifindex 0 (--tunnel-through-stack, or a config an older
    helper wrote): the device encapsulates, the wire is the same."""
    for s in (a, b):
        s.config(datapath_encap=False)
    try:
        check_tunnel_ping_and_tcp(a, b, datapath_encap=False)
        check_wire(a, b)
    finally:
        for s in (a, b):
            s.config()


def check_wire(a, b):
    caps = {s.label: Capture(s) for s in (a, b)}
    try:
        for c in caps.values():
            c.drain()
        check(ping(a, b.pod.ip, count=2), "ping failed while capturing")
        frames = caps["b"].vxlan_frames(1.0)
    finally:
        for c in caps.values():
            c.close()
    req = [f for f in frames if f["inner_src"] == a.pod.ip and f["inner_dst"] == b.pod.ip]
    rep = [f for f in frames if f["inner_src"] == b.pod.ip and f["inner_dst"] == a.pod.ip]
    check(req and rep, f"no VXLAN frames for both directions on {b.label}'s underlay "
          f"(UDP {VXLAN_PORT}); saw {frames[:4]}")
    for f, src, dst, who in ((req[0], a, b, "request"), (rep[0], b, a, "reply")):
        check(f["vni"] == src.identity,
              f"{who}: VNI {f['vni']}, expected the sender's identity {src.identity}")
        check(f["vxlan_flags"] == 0x08, f"{who}: VXLAN flags {f['vxlan_flags']:#x} (I bit only)")
        check((f["outer_src"], f["outer_dst"]) == (src.underlay_ip, dst.underlay_ip),
              f"{who}: outer {f['outer_src']} -> {f['outer_dst']}, expected "
              f"{src.underlay_ip} -> {dst.underlay_ip} (config node_ip as source)")
        check(f["outer_ttl"] == TUNNEL_TTL, f"{who}: outer TTL {f['outer_ttl']}")
        check(f["udp_csum"] == 0, f"{who}: outer UDP checksum {f['udp_csum']:#x}, expected 0")
        check(f["inner_type"] == b"\x08\x00" and f["inner_proto"] == 1,
              f"{who}: inner frame is not IPv4/ICMP")
        # ping's 64, less the sending node's hop (the receiver's is after the wire)
        check(f["inner_ttl"] == 63, f"{who}: inner TTL {f['inner_ttl']}, expected 63")


def check_no_drops(a, b):
    for s in (a, b):
        d = drops(s)
        check(not d, f"node {s.label} counted drops: {d}")


def check_ipcache_over_tunnel_map(a, b):
    # A PodCIDR route to a node that does not exist: only the ipcache entry can work.
    a.map_update(MAP_TUNNEL, lpm_key(b.pod_cidr), tunnel_value(BLACKHOLE))
    check(ping(a, b.pod.ip), "ipcache /32 did not take precedence over the tunnel map /24")


def check_ipcache_removed_falls_to_tunnel_map(a, b):
    a.map_delete(MAP_IPCACHE, lpm_key(f"{b.pod.ip}/32"))
    check(not ping(a, b.pod.ip, count=2),
          f"traffic still flows with the only route pointing at {BLACKHOLE}")


def check_tunnel_map_route(a, b):
    a.map_update(MAP_TUNNEL, lpm_key(b.pod_cidr), tunnel_value(b.underlay_ip))
    check(ping(a, b.pod.ip), "the tunnel map's PodCIDR route alone does not carry the traffic")
    tcp_stream(a.pod.path, b.pod.path, b.pod.ip, port=7001)


def check_removed_stops(a, b):
    a.map_delete(MAP_TUNNEL, lpm_key(b.pod_cidr))
    check(not a.map_keys(MAP_IPCACHE) and not a.map_keys(MAP_TUNNEL), "maps of a not empty")
    rx_b, _ = b.vxlan_stats()
    check(not ping(a, b.pod.ip, count=2), "traffic still flows with no ipcache or tunnel entry")
    rx_b2, _ = b.vxlan_stats()
    # b's replies would still be tunnelled; a's requests must not be
    check(rx_b2 == rx_b, f"b's VXLAN device still receives ({rx_b} -> {rx_b2})")


def check_no_device_drop(a, b):
    ipcache_peer(a, b)
    before = a.counters().get((DROP_NO_TUNNEL_DEV, DIR_EGRESS), 0)
    a.config(vxlan=False)
    try:
        check(not ping(a, b.pod.ip, count=2), "traffic flows with vxlan_ifindex 0")
    finally:
        a.config()
    after = a.counters().get((DROP_NO_TUNNEL_DEV, DIR_EGRESS), 0)
    check(after - before == 2, f"NO_TUNNEL_DEV counted {after - before} drops, expected 2")
    check(ping(a, b.pod.ip), "traffic does not resume with the device back in the config")


def check_overlay_to_host_stack(a, b):
    """A tunnelled packet for no endpoint: from_overlay hands it to b's stack."""
    sh(["ip", "-n", b.ns, "addr", "add", f"{NODE_SERVICE_IP}/32", "dev", "lo"])
    a.map_update(MAP_IPCACHE, lpm_key(f"{NODE_SERVICE_IP}/32"),
                 ipcache_value(IDENTITY_HOST, b.underlay_ip))
    with in_netns(b.node.node_path):
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with in_netns(a.pod.path):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        srv.bind((NODE_SERVICE_IP, 9000))
        srv.settimeout(0.5)
        got = None
        for _ in range(6):  # UDP: the first may wait for the underlay's ARP
            cli.sendto(b"to-the-node", (NODE_SERVICE_IP, 9000))
            try:
                got = srv.recvfrom(64)
                break
            except socket.timeout:
                continue
    finally:
        srv.close()
        cli.close()
        a.map_delete(MAP_IPCACHE, lpm_key(f"{NODE_SERVICE_IP}/32"))
    check(got is not None, f"UDP from pod {a.pod.ip} to {NODE_SERVICE_IP} on {b.label} "
          "(over VXLAN, no endpoint) never reached the node's stack")
    check(got[0] == b"to-the-node" and got[1][0] == a.pod.ip, f"received {got}")


def go_native(a, b):
    """Every ipcache and tunnel entry gone; each node routes the other's
    PodCIDR over the underlay."""
    for s in (a, b):
        for k in s.map_keys(MAP_IPCACHE):
            s.map_delete(MAP_IPCACHE, k)
        for k in s.map_keys(MAP_TUNNEL):
            s.map_delete(MAP_TUNNEL, k)
    sh(["ip", "-n", a.ns, "route", "add", b.pod_cidr, "via", b.underlay_ip])
    sh(["ip", "-n", b.ns, "route", "add", a.pod_cidr, "via", a.underlay_ip])


def check_native_routing(a, b):
    """No tunnel entries, routes over the underlay: the host stack carries it."""
    go_native(a, b)
    # b knows a's pod natively (an ipcache entry without tunnel_ip)
    ipcache_peer(b, a, tunnel=False)
    rx = (a.vxlan_stats()[0], b.vxlan_stats()[0])
    check(ping(a, b.pod.ip), "natively routed ping failed")
    tcp_stream(a.pod.path, b.pod.path, b.pod.ip, port=7002)
    rx2 = (a.vxlan_stats()[0], b.vxlan_stats()[0])
    check(rx2 == rx, f"native traffic went through VXLAN (rx {rx} -> {rx2})")


def cleanup(sides, root_links_before):
    problems = []
    for s in sides:
        try:
            problems += [f"{s.label}: {p}" for p in s.node.cleanup()]
        except Exception as e:
            problems.append(f"{s.label}: cleanup raised {type(e).__name__}: {e}")
    for s in sides:
        for n in s.node.netns:
            if (cwlib.NETNS_DIR / n).exists():
                problems.append(f"netns {n} still exists")
        if s.node.bpf_root.exists():
            problems.append(f"{s.node.bpf_root} still exists")
    leaked = {UNDERLAY_DEV, VXLAN_DEV} & (Node.links_in_root() - root_links_before)
    if leaked:
        problems.append(f"devices in the root netns: {sorted(leaked)}")
    return problems


def steps(run, sides):
    a, b = make_sides(sides)
    if run.step("two nodes, underlay veth, VXLAN devices, a pod on each (real plugin), "
                "from_overlay attached, maps written", setup, a, b):
        ipcache_peer(a, b)
        ipcache_peer(b, a)
        run.step("ping and a 512 KiB TCP stream pod a -> pod b over VXLAN encapsulated by "
                 "the datapath: VXLAN rx counters move on both nodes, tx counters do not",
                 check_tunnel_ping_and_tcp, a, b)
        run.step(f"underlay carries UDP {VXLAN_PORT}: VNI = sender's identity, node IPs "
                 "outside, outer TTL 64, zero UDP checksum, inner TTL one hop down",
                 check_wire, a, b)
        run.step("underlay_ifindex 0: the VXLAN device encapsulates; ping, TCP and the "
                 "same wire format", check_through_device, a, b)
        run.step("a packet too big for the underlay with the outer headers goes through the "
                 "device, which fragments the outer packet; it arrives", check_oversize_through_device,
                 a, b)
        run.step("no drops counted on either node", check_no_drops, a, b)
        run.step("ipcache /32 wins over a tunnel /24 pointing elsewhere",
                 check_ipcache_over_tunnel_map, a, b)
        run.step("ipcache entry removed: the tunnel /24 decides (traffic to the bad node stops)",
                 check_ipcache_removed_falls_to_tunnel_map, a, b)
        run.step("tunnel map /24 to the right node alone carries ping and TCP",
                 check_tunnel_map_route, a, b)
        run.step("ipcache and tunnel entries removed: traffic stops, nothing reaches b's VXLAN",
                 check_removed_stops, a, b)
        run.step("vxlan_ifindex 0: dropped as NO_TUNNEL_DEV and counted; resumes with the device",
                 check_no_device_drop, a, b)
        run.step("overlay packet for a non-endpoint address reaches the node's stack "
                 "(PACKET_HOST)", check_overlay_to_host_stack, a, b)
        run.step("native routing: no tunnel entries, underlay routes; ping and TCP cross "
                 "without VXLAN", check_native_routing, a, b)


if __name__ == "__main__":
    sys.exit(netnslib.main("tunnel_netns", steps, cleanup))
