#!/usr/bin/python3
"""ClusterIP load balancing on real devices: a client pod, backends on its
node and on another node, the frontend rewritten in tc only.

The two nodes of tunnel_netns.py (node namespaces with private bpfRoots,
pods made by the real plugin through build/cnirunner, a VXLAN overlay over
an underlay veth); node a holds the client pod and a backend pod, node b a
second backend.  Each backend pod runs a TCP and a UDP echo server that
names itself and the peer it sees.  The service maps are written with
bpftool, as bytes laid out by include/causeway/datapath.h, as the helper
will write them.

Checked on the wire and at the sockets: the client connects to
FRONTEND:FE_PORT and talks to the backend the slots (or its conntrack
entry) name; the client's socket has the frontend as its peer, the
backend's has the client pod's own address (no NAT visible either side);
same-node (redirect) and cross-node (VXLAN, then native routing through
the host stacks) backends; a long connection keeps its backend while the
slots are rewritten, its backend removed from them, the service left with
none; a service without backends drops new flows and counts them; traffic
to pods directly is not rewritten; with checksum offload off in the pods
(so every receiver verifies), no checksum error anywhere.

Every namespace and pin it makes is removed at the end, also on failure,
and checked gone.

Run as root:  /usr/bin/python3 test/bpf/lb_netns.py
Prints "ok"/"not ok" per check and a closing "lb_netns: N passed, M
failed"; exits 0 when all passed, 1 on a failure, 77 when not root.
"""

import ipaddress
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netnslib  # noqa: E402  (puts test/node, cwlib's, on the path)
import tunnel_netns as tn  # noqa: E402
from cwlib import in_netns, sh  # noqa: E402
from netnslib import Failed, check  # noqa: E402
from tunnel_netns import ip_bytes, lpm_key  # noqa: E402

# From include/causeway/datapath.h.
MAP_SERVICES, MAP_BACKENDS = "cw_lb4_services", "cw_lb4_backends"
MAP_REVNAT, MAP_CT = "cw_lb4_revnat", "cw_lb4_ct"
CT_SERVICE, CT_REPLY = 1, 2
DROP_NO_SERVICE_BACKEND = 140
DIR_EGRESS = tn.DIR_EGRESS
IPPROTO_TCP, IPPROTO_UDP = 6, 17

FRONTEND = "10.96.0.10"  # a ClusterIP: no route, no host holds it
FE_PORT = 80
BE_PORT = 8080
TCP_ID, UDP_ID = 7, 8


# --- map bytes ---------------------------------------------------------------

def port_bytes(port):
    return struct.pack("!H", port)


def lb4_key(proto, addr=FRONTEND, port=FE_PORT):
    return ip_bytes(addr) + port_bytes(port) + bytes([proto, 0])


def service_value(count, rev_nat_id, flags=0):
    return struct.pack("<HHHH", count, rev_nat_id, flags, 0)


def slot_key(rev_nat_id, slot):
    return struct.pack("<HH", rev_nat_id, slot)


def backend_value(addr, port=BE_PORT, cluster_id=1):
    return ip_bytes(addr) + port_bytes(port) + struct.pack("<HHH", cluster_id, 0, 0)


def revnat_value(addr=FRONTEND, port=FE_PORT):
    return ip_bytes(addr) + port_bytes(port) + b"\0\0"


def ct_key(proto, saddr, sport, daddr, dport, kind):
    return (ip_bytes(saddr) + ip_bytes(daddr) + port_bytes(sport) + port_bytes(dport)
            + bytes([proto, kind, 0, 0]))


def parse_ct(v):
    addr, port, rev_nat_id, slot, flags, expires = struct.unpack("<4s2sHHHI", v)
    return {"backend": str(ipaddress.IPv4Address(addr)), "port": struct.unpack("!H", port)[0],
            "id": rev_nat_id, "slot": slot, "flags": flags, "expires": expires}


def set_service(side, proto, rev_nat_id, backends):
    """What the helper will do (lib/dp.c's cw_lb4_service_set order): reverse
    NAT and slots first, then the count, then slots past the count go."""
    side.map_update(MAP_REVNAT, struct.pack("<H", rev_nat_id), revnat_value())
    for i, be in enumerate(backends):
        side.map_update(MAP_BACKENDS, slot_key(rev_nat_id, i + 1), backend_value(be))
    side.map_update(MAP_SERVICES, lb4_key(proto), service_value(len(backends), rev_nat_id))
    for k in side.map_keys(MAP_BACKENDS):
        rid, slot = struct.unpack("<HH", k)
        if rid == rev_nat_id and slot > len(backends):
            side.map_delete(MAP_BACKENDS, k)


def flow_entry(side, proto, client_ip, client_port):
    try:
        v = side.map_lookup(MAP_CT, ct_key(proto, client_ip, client_port, FRONTEND, FE_PORT, CT_SERVICE))
    except AssertionError:
        return None
    return parse_ct(v)


# --- servers and clients -----------------------------------------------------

class Backend:
    """TCP and UDP echo servers on BE_PORT in a pod.  TCP greets with
    "NAME PEERIP:PEERPORT", then answers each line with "NAME line"; UDP
    answers each datagram with "NAME PEERIP:PEERPORT data"."""

    def __init__(self, name, pod):
        self.name, self.pod = name, pod
        self.stop = threading.Event()
        self.threads = []
        with in_netns(pod.path):
            self.tcp = socket.socket()
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((pod.ip, BE_PORT))
        self.tcp.listen(64)
        self.tcp.settimeout(0.2)
        self.udp.bind((pod.ip, BE_PORT))
        self.udp.settimeout(0.2)
        for fn in (self.accept_loop, self.udp_loop):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.threads.append(t)

    def accept_loop(self):
        while not self.stop.is_set():
            try:
                conn, peer = self.tcp.accept()
            except (socket.timeout, OSError):
                continue
            t = threading.Thread(target=self.serve, args=(conn, peer), daemon=True)
            t.start()
            self.threads.append(t)

    def serve(self, conn, peer):
        with conn:
            try:
                conn.settimeout(30)
                conn.sendall(f"{self.name} {peer[0]}:{peer[1]}\n".encode())
                f = conn.makefile("rb")
                for line in f:
                    conn.sendall(self.name.encode() + b" " + line)
            except OSError:
                pass

    def udp_loop(self):
        while not self.stop.is_set():
            try:
                data, peer = self.udp.recvfrom(65536)
                self.udp.sendto(f"{self.name} {peer[0]}:{peer[1]} ".encode() + data, peer)
            except (socket.timeout, OSError):
                continue

    def close(self):
        self.stop.set()
        self.tcp.close()
        self.udp.close()
        for t in self.threads:
            t.join(2)


class Conn:
    """A client TCP connection from a pod; .backend and .seen_as from the greeting."""

    def __init__(self, pod, ip=FRONTEND, port=FE_PORT, timeout=5, sport=0):
        with in_netns(pod.path):
            self.s = socket.socket()
        self.s.settimeout(timeout)
        try:
            if sport:
                self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.s.bind((pod.ip, sport))
            self.s.connect((ip, port))
            self.f = self.s.makefile("rb")
            greet = self.f.readline().decode().split()
        except OSError:
            self.s.close()
            raise
        check(len(greet) == 2, f"TCP greeting from {ip}:{port}: {greet}")
        self.backend, self.seen_as = greet
        self.peer = self.s.getpeername()
        self.local = self.s.getsockname()

    def ask(self, msg):
        self.s.sendall(msg.encode() + b"\n")
        line = self.f.readline().decode().rstrip("\n")
        name, _, echo = line.partition(" ")
        check(echo == msg, f"echo of {len(msg)} bytes came back as {len(echo)} bytes")
        return name

    def close(self):
        self.s.close()


def udp_ask(pod, msg, ip=FRONTEND, port=FE_PORT, tries=5):
    """(backend, seen_as, source address of the answer) of one UDP exchange."""
    with in_netns(pod.path):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(0.5)
        for _ in range(tries):  # the first may wait for the underlay's ARP
            s.sendto(msg.encode(), (ip, port))
            try:
                data, src = s.recvfrom(65536)
            except socket.timeout:
                continue
            name, seen_as, echo = data.decode().split(" ", 2)
            check(echo == msg, f"UDP echo of {len(msg)} bytes came back as {len(echo)}")
            return name, seen_as, src
    raise Failed(f"no UDP answer from {ip}:{port} (pod {pod.ip})")


# --- the test ----------------------------------------------------------------

class Lab:
    def __init__(self, sides):
        self.a, self.b = tn.make_sides(sides)
        self.client = None        # pod on a
        self.local = None         # backend pod on a
        self.remote = None        # backend pod on b
        self.backends = []
        self.names = {}           # backend name -> pod IP
        self.no_backend_drops = 0

    def backend_name(self, ip):
        return next(n for n, i in self.names.items() if i == ip)

    def expect_drops(self):
        return {"NO_SERVICE_BACKEND/out": self.no_backend_drops} if self.no_backend_drops else {}


def setup(lab):
    a, b = lab.a, lab.b
    tn.setup(a, b)
    lab.client, lab.remote = a.pod, b.pod
    lab.local = a.node.make_pod()
    a.node.add(lab.local, a.node.conflist([a.node.conf(podCIDR=a.pod_cidr, mtu=tn.POD_MTU)]))
    # The nodes reach each other's PodCIDRs over VXLAN.
    a.map_update(tn.MAP_TUNNEL, lpm_key(b.pod_cidr), tn.tunnel_value(b.underlay_ip))
    b.map_update(tn.MAP_TUNNEL, lpm_key(a.pod_cidr), tn.tunnel_value(a.underlay_ip))
    tn.ipcache_peer(a, b)
    tn.ipcache_peer(b, a)
    lab.names = {"local": lab.local.ip, "remote": lab.remote.ip}
    lab.backends = [Backend("local", lab.local), Backend("remote", lab.remote)]


def assert_balanced(lab, conn, expect=None):
    """The client sees the frontend, the backend sees the client pod, and the
    backend is the one conntrack recorded (and @expect, when given)."""
    check(conn.peer == (FRONTEND, FE_PORT),
          f"client socket's peer is {conn.peer}, expected the frontend {FRONTEND}:{FE_PORT}")
    check(conn.local[0] == lab.client.ip and conn.seen_as == f"{conn.local[0]}:{conn.local[1]}",
          f"backend {conn.backend} saw the client as {conn.seen_as}, the client is "
          f"{conn.local[0]}:{conn.local[1]} (pod {lab.client.ip})")
    e = flow_entry(lab.a, IPPROTO_TCP, lab.client.ip, conn.local[1])
    check(e is not None, f"no conntrack entry for {conn.local} -> {FRONTEND}:{FE_PORT}")
    check(e["backend"] == lab.names[conn.backend] and e["port"] == BE_PORT and e["id"] == TCP_ID,
          f"conntrack names {e}, the answer came from {conn.backend}")
    if expect:
        check(conn.backend == expect, f"answered by {conn.backend}, expected {expect}")


def check_one_backend(lab, name):
    ip = lab.names[name]
    rx = lab.b.vxlan_stats()[0]
    set_service(lab.a, IPPROTO_TCP, TCP_ID, [ip])
    set_service(lab.a, IPPROTO_UDP, UDP_ID, [ip])
    conn = Conn(lab.client)
    try:
        assert_balanced(lab, conn, name)
        for i in range(3):
            check(conn.ask(f"round {i}") == name, "the connection changed backend")
    finally:
        conn.close()
    got, seen_as, src = udp_ask(lab.client, "over udp")
    check(got == name, f"UDP answered by {got}, expected {name}")
    check(src == (FRONTEND, FE_PORT), f"UDP answer came from {src}, expected the frontend")
    check(seen_as.split(":")[0] == lab.client.ip, f"backend saw the UDP client as {seen_as}")
    moved = lab.b.vxlan_stats()[0] > rx
    check(moved == (name == "remote"),
          f"b's VXLAN rx {'did not move' if not moved else 'moved'} for the {name} backend")


def check_spread(lab):
    set_service(lab.a, IPPROTO_TCP, TCP_ID, [lab.local.ip, lab.remote.ip])
    seen = {}
    for _ in range(24):
        conn = Conn(lab.client)
        try:
            assert_balanced(lab, conn)
            check(conn.ask("hi") == conn.backend, "answered by another backend than the greeting")
            seen[conn.backend] = seen.get(conn.backend, 0) + 1
        finally:
            conn.close()
    # 24 flows hashed over two slots: one backend only has odds 2^-23
    check(len(seen) == 2, f"24 connections over two slots all went to {seen}")


def check_long_connection(lab):
    set_service(lab.a, IPPROTO_TCP, TCP_ID, [lab.local.ip, lab.remote.ip])
    conns = []
    try:
        # until both backends hold one: 6 flows over two slots all land on one
        # backend 1 time in 32, 40 only 1 time in 2^39
        by = {}
        while len(by) < 2 and len(conns) < 40:
            conns.append(Conn(lab.client))
            by.setdefault(conns[-1].backend, conns[-1])
        check(len(by) == 2, f"{len(conns)} connections all went to {list(by)}")
        for name, conn in by.items():
            other = "remote" if name == "local" else "local"
            # the slots now hold only the other backend: this one left them
            set_service(lab.a, IPPROTO_TCP, TCP_ID, [lab.names[other]])
            check(conn.ask("after the slots changed") == name,
                  f"a connection to {name} moved when {name} left the slots")
            fresh = Conn(lab.client)
            try:
                assert_balanced(lab, fresh, other)
            finally:
                fresh.close()
            # no backend at all: established connections still reach theirs
            set_service(lab.a, IPPROTO_TCP, TCP_ID, [])
            check(conn.ask("with no backend in the slots") == name,
                  f"a connection to {name} broke when the service lost every backend")
            e = flow_entry(lab.a, IPPROTO_TCP, lab.client.ip, conn.local[1])
            check(e and e["backend"] == lab.names[name] and e["flags"] & 1,
                  f"conntrack of the long connection: {e}")
        for conn in conns:
            check(conn.ask("still there") == conn.backend, "a connection changed backend")
    finally:
        for c in conns:
            c.close()


def check_no_backend(lab):
    set_service(lab.a, IPPROTO_TCP, TCP_ID, [])
    set_service(lab.a, IPPROTO_UDP, UDP_ID, [])
    before = lab.a.counters().get((DROP_NO_SERVICE_BACKEND, DIR_EGRESS), 0)
    try:
        Conn(lab.client, timeout=1.5).close()
        raise Failed("a connection to a service without backends succeeded")
    except (socket.timeout, TimeoutError):
        pass
    try:
        udp_ask(lab.client, "anyone?", tries=1)
        raise Failed("a service without backends answered over UDP")
    except Failed as e:
        if "no UDP answer" not in str(e):
            raise
    after = lab.a.counters().get((DROP_NO_SERVICE_BACKEND, DIR_EGRESS), 0)
    # the SYN, its retransmission after one second, the datagram
    check(after - before >= 2, f"NO_SERVICE_BACKEND counted {after - before} drops")
    lab.no_backend_drops += after - before


def check_direct_untouched(lab):
    set_service(lab.a, IPPROTO_TCP, TCP_ID, [lab.local.ip, lab.remote.ip])
    for name, ip in lab.names.items():
        conn = Conn(lab.client, ip, BE_PORT)
        try:
            check(conn.backend == name, f"{ip} answered as {conn.backend}")
            check(conn.peer == (ip, BE_PORT), f"direct connection's peer is {conn.peer}")
            check(conn.seen_as == f"{lab.client.ip}:{conn.local[1]}",
                  f"{name} saw the direct client as {conn.seen_as}")
            check(flow_entry(lab.a, IPPROTO_TCP, lab.client.ip, conn.local[1]) is None,
                  "a direct connection got a service conntrack entry")
        finally:
            conn.close()
        got, _, src = udp_ask(lab.client, "direct", ip, BE_PORT)
        check(got == name and src == (ip, BE_PORT), f"direct UDP to {ip}: {got} from {src}")


def check_direct_after_service(lab):
    """A direct connection to a backend from the client port a service flow to that
    backend just used (the flow closed, its conntrack entries still aging) is its own
    connection: its replies are not taken for the old flow's and rewritten."""
    set_service(lab.a, IPPROTO_TCP, TCP_ID, [lab.local.ip, lab.remote.ip])
    for sport in (40001, 40002, 40003, 40004):
        conn = Conn(lab.client, sport=sport)
        backend = conn.backend
        check(conn.ask("via the service") == backend, "the service connection changed backend")
        conn.close()
        time.sleep(0.2)
        check(flow_entry(lab.a, IPPROTO_TCP, lab.client.ip, sport) is not None,
              "the closed service flow's conntrack entry is already gone (nothing to test)")
        direct = Conn(lab.client, lab.names[backend], BE_PORT, sport=sport)
        try:
            check(direct.peer == (lab.names[backend], BE_PORT) and direct.backend == backend,
                  f"direct connection from port {sport}: peer {direct.peer}, {direct.backend}")
            check(direct.ask("direct") == backend, "the direct connection's echo")
        finally:
            direct.close()


LOOPBACK = "169.254.42.1"  # CW_LB_LOOPBACK4


def check_hairpin(lab):
    """The client is its own backend: it reaches itself through the frontend;
    its server side sees the service loopback address, not its own."""
    lab.backends.append(Backend("self", lab.client))
    lab.names["self"] = lab.client.ip
    set_service(lab.a, IPPROTO_TCP, TCP_ID, [lab.client.ip])
    set_service(lab.a, IPPROTO_UDP, UDP_ID, [lab.client.ip])
    conn = Conn(lab.client)
    try:
        check(conn.backend == "self", f"answered by {conn.backend}")
        check(conn.peer == (FRONTEND, FE_PORT), f"client socket's peer is {conn.peer}")
        check(conn.seen_as == f"{LOOPBACK}:{conn.local[1]}",
              f"the pod's server saw its client as {conn.seen_as}, expected {LOOPBACK}")
        for i in range(3):
            check(conn.ask(f"round {i}") == "self", "the hairpin connection changed backend")
    finally:
        conn.close()
    got, seen_as, src = udp_ask(lab.client, "to myself")
    check(got == "self" and src == (FRONTEND, FE_PORT) and seen_as.startswith(LOOPBACK + ":"),
          f"hairpin UDP: {got} from {src}, seen as {seen_as}")


def snmp_csum_errors(pod):
    """InCsumErrors of TCP and UDP as the pod's stack counts them."""
    lines = sh(["nsenter", f"--net={pod.path}", "cat", "/proc/net/snmp"]).stdout.splitlines()
    out = {}
    for head, vals in zip(lines[::2], lines[1::2]):
        proto = head.split(":")[0]
        if proto in ("Tcp", "Udp"):
            d = dict(zip(head.split()[1:], vals.split()[1:]))
            out[proto] = int(d.get("InCsumErrors", 0))
    return out


def check_checksums(lab):
    """With TX checksum offload off, each pod's stack sends complete checksums
    and the receiving stack verifies them (veth keeps CHECKSUM_NONE), so a
    wrong incremental update is a lost packet and a counted error."""
    pods = (lab.client, lab.local, lab.remote)
    for p in pods:
        sh(["nsenter", f"--net={p.path}", "ethtool", "-K", "eth0", "tx", "off"])
    before = {p.name: snmp_csum_errors(p) for p in pods}
    bulk = os.urandom(48 * 1024).hex()  # full-sized segments, no GSO without offload
    for name in lab.names:  # the hairpin's double rewrite too, when it ran
        set_service(lab.a, IPPROTO_TCP, TCP_ID, [lab.names[name]])
        set_service(lab.a, IPPROTO_UDP, UDP_ID, [lab.names[name]])
        conn = Conn(lab.client)
        try:
            if name != "self":
                assert_balanced(lab, conn, name)
            check(conn.backend == name, f"answered by {conn.backend}, expected {name}")
            check(conn.ask(bulk) == name, "bulk answer from another backend")
        finally:
            conn.close()
        for size in (1, 2, 3, 777, 1300):  # odd and even UDP lengths
            got, _, src = udp_ask(lab.client, "x" * size)
            check(got == name and src == (FRONTEND, FE_PORT), f"UDP {size}: {got} from {src}")
    for p in pods:
        now = snmp_csum_errors(p)
        check(now == before[p.name], f"pod {p.ip} counted checksum errors: {before[p.name]} -> {now}")


def check_native(lab):
    """No tunnel: the remote backend's traffic crosses the host stacks, and its
    replies reach to_container from the stack, not from a redirect."""
    a, b = lab.a, lab.b
    tn.go_native(a, b)
    rx = (a.vxlan_stats()[0], b.vxlan_stats()[0])
    set_service(a, IPPROTO_TCP, TCP_ID, [lab.remote.ip])
    set_service(a, IPPROTO_UDP, UDP_ID, [lab.remote.ip])
    conn = Conn(lab.client)
    try:
        assert_balanced(lab, conn, "remote")
        check(conn.ask("natively") == "remote", "native: another backend answered")
    finally:
        conn.close()
    got, _, src = udp_ask(lab.client, "natively")
    check(got == "remote" and src == (FRONTEND, FE_PORT), f"native UDP: {got} from {src}")
    rx2 = (a.vxlan_stats()[0], b.vxlan_stats()[0])
    check(rx2 == rx, f"native traffic went through VXLAN (rx {rx} -> {rx2})")


def check_drops(lab):
    for s in (lab.a, lab.b):
        d = tn.drops(s)
        want = lab.expect_drops() if s is lab.a else {}
        check(d == want, f"node {s.label} counted drops {d}, expected {want}")


def main():
    labs = []

    def steps(run, sides):
        lab = Lab(sides)
        labs.append(lab)
        if run.step("two nodes over VXLAN; client and backend pods (real plugin); TCP and UDP "
                    "echo servers in the backends", setup, lab):
            run.step("one slot, the same-node backend: the client talks to the frontend, the "
                     "backend sees the client pod; TCP and UDP", check_one_backend, lab, "local")
            run.step("one slot, the backend on the other node (VXLAN): the same",
                     check_one_backend, lab, "remote")
            run.step("two slots: 24 connections spread over both, each answered by the backend "
                     "its conntrack entry names", check_spread, lab)
            run.step("long connections keep their backend while the slots are rewritten, their "
                     "backend leaves them, the service has none; new ones take the new slots",
                     check_long_connection, lab)
            run.step("no backend: a new connection gets no answer, drops counted as "
                     "NO_SERVICE_BACKEND", check_no_backend, lab)
            run.step("direct traffic to the backend pods is not rewritten",
                     check_direct_untouched, lab)
            run.step("a direct connection reusing a closed service flow's client port works",
                     check_direct_after_service, lab)
            run.step("the client is its own backend (hairpin): it reaches itself through the "
                     "frontend, its server sees the service loopback address", check_hairpin, lab)
            run.step("checksum offload off in the pods: bulk TCP and odd/even UDP through every "
                     "backend, no checksum error in any pod", check_checksums, lab)
            run.step("no drops but those caused on purpose", check_drops, lab)
            run.step("native routing: the remote backend through the host stacks, replies "
                     "reverse-NATed from the stack's path", check_native, lab)

    def cleanup(sides, root_links):
        for lab in labs:
            for be in lab.backends:
                be.close()
        return tn.cleanup(sides, root_links)

    return netnslib.main("lb_netns", steps, cleanup)


if __name__ == "__main__":
    sys.exit(main())
