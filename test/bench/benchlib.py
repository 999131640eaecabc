"""Shared plumbing for the Causeway benchmarks (test/bench/*.py).

Everything a benchmark creates is registered with a Cleanup object, so that
an interrupted run still removes its network namespaces, bpffs pins and
scratch directories.  Every name carries a per-run prefix
(cwbench-<kind>-<pid>) so two runs, or a run beside the lab tests, never
touch each other's objects.
"""

import atexit
import base64
import ctypes
import json
import ipaddress
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# CAUSEWAY_BUILD_DIR points the benchmarks at another build (a SAN=1 build,
# an older commit's) holding causeway, causeway-helper and cnirunner.
BUILD = os.environ.get("CAUSEWAY_BUILD_DIR") or os.path.join(REPO, "build")
CAUSEWAY = os.path.join(BUILD, "causeway")
HELPER = os.path.join(BUILD, "causeway-helper")
CNIRUNNER = os.path.join(BUILD, "cnirunner")
REF_CNI_DIR = "/usr/lib/cni"
NETNS_DIR = "/var/run/netns"
BPFFS = "/sys/fs/bpf"

CLONE_NEWNET = 0x40000000
# ptp 1.1.1 (Debian 12) speaks up to 1.0.0, so both plugins are driven with
# the same version and libcni takes the same code path for both.
CNI_VERSION = "1.0.0"

# Exit status of a benchmark that could not run at all (missing binary,
# not root, ...).  test/bench/run turns it into a failed `make bench`.
EXIT_CANNOT_RUN = 2


# stdout carries the report, stderr the progress; keep them in order on a tty
sys.stdout.reconfigure(line_buffering=True)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cannot_run(msg):
    log("bench: cannot run: " + msg)
    sys.exit(EXIT_CANNOT_RUN)


def preflight(need_tools=()):
    if os.geteuid() != 0:
        cannot_run("needs root (network namespaces, veths, bpffs)")
    for path in (CAUSEWAY, CNIRUNNER):
        if not os.access(path, os.X_OK):
            cannot_run(f"{path} is missing: run `make` in {REPO}")
    for name in ("ptp", "host-local"):
        if not os.access(os.path.join(REF_CNI_DIR, name), os.X_OK):
            cannot_run(f"reference plugin {REF_CNI_DIR}/{name} is missing "
                       "(apt-get install containernetworking-plugins)")
    for tool in ("ip", "nsenter") + tuple(need_tools):
        if shutil.which(tool) is None:
            cannot_run(f"`{tool}` is not installed")
    if not os.path.ismount(BPFFS):
        cannot_run(f"no bpffs mounted at {BPFFS}")


class Cleanup:
    """LIFO list of undo actions, run once at exit or on SIGINT/SIGTERM."""

    def __init__(self):
        self._actions = []
        self._done = False
        atexit.register(self.run)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        # Ctrl-C reaches the whole process group, and `timeout` signals the
        # child and then the group: ignore any further signal so that a
        # second one cannot cut the cleanup short (children started by the
        # cleanup inherit the ignore and finish too).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        log(f"bench: signal {signum}, cleaning up")
        self.run()
        sys.exit(128 + signum)

    def push(self, what, fn, *args):
        self._actions.append((what, fn, args))

    def run(self):
        if self._done:
            return
        self._done = True
        while self._actions:
            what, fn, args = self._actions.pop()
            try:
                fn(*args)
            except Exception as exc:  # keep going: remove as much as we can
                log(f"bench: cleanup of {what} failed: {exc}")


def sh(*argv, check=True, quiet=False):
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` exited {res.returncode}: "
                           f"{res.stderr.strip() or res.stdout.strip()}")
    if not quiet and res.returncode != 0:
        log(f"bench: `{' '.join(argv)}` exited {res.returncode}: {res.stderr.strip()}")
    return res


def netns_path(name):
    return os.path.join(NETNS_DIR, name)


def netns_add(cleanup, name, lo_up=True):
    sh("ip", "netns", "add", name)
    cleanup.push(f"netns {name}", netns_del, name)
    if lo_up:
        # a runtime brings lo up (the loopback plugin); traffic tests want it
        sh("ip", "-n", name, "link", "set", "lo", "up")
    return netns_path(name)


def netns_del(name):
    if os.path.exists(netns_path(name)):
        sh("ip", "netns", "del", name, check=False)


_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(path):
    """Move this (single-threaded) process into the netns at path.

    The mount namespace stays the host's, so /sys/fs/bpf remains the host's
    bpffs (`ip netns exec` would remount /sys; see DESIGN.md, The lab).
    Every child started afterwards, the runner and the plugins, sees this
    netns as the node's (the "runtime's") netns.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Processes that our children leave running (a plugin's detached
    helper) are reparented to us instead of to init, so that
    reap_orphans() can wait for them."""
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def reap_orphans(timeout=10.0):
    """Wait until no child of ours is left; return how many were reaped.
    Call only when no child of our own is meant to be running."""
    n = 0
    deadline = time.perf_counter() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return n
        if pid:
            n += 1
        elif time.perf_counter() > deadline:
            raise RuntimeError(f"a process left behind by a plugin is still running "
                               f"{timeout} s later")
        else:
            time.sleep(0.0005)


def scratch_dir(cleanup, prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    cleanup.push(f"dir {path}", shutil.rmtree, path, True)
    return path


def bpf_root(cleanup, name):
    """A private bpfRoot under the host bpffs, removed at exit."""
    path = os.path.join(BPFFS, name)
    cleanup.push(f"bpf pins {path}", remove_pins, path)
    return path


def remove_pins(path):
    if not os.path.exists(path):
        return
    if os.access(HELPER, os.X_OK):
        sh(HELPER, "unload", "--bpf-root", path, check=False, quiet=True)
    # whatever the helper left (or if there is no helper): unlinking a pin
    # drops the reference; programs go once no tc filter holds them.
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        log(f"bench: could not remove {path}")


def preload_bpf(bpf_root_dir, state_dir):
    """Load and pin the programs the way a node's helper would, so that the
    first measured ADD does not pay for the verifier.  Returns True if the
    helper did it; otherwise the warm-up ADD loads them."""
    if not os.access(HELPER, os.X_OK):
        return False
    res = sh(HELPER, "load", "--bpf-root", bpf_root_dir, "--state-dir", state_dir,
             check=False, quiet=True)
    if res.returncode != 0:
        log(f"bench: causeway-helper load exited {res.returncode} "
            f"({res.stderr.strip()}); the warm-up ADD will load the programs")
        return False
    return True


def netlink_del_link(ifindex):
    """RTM_DELLINK by ifindex over a raw rtnetlink socket, waiting for the
    kernel's ack: the kernel's own cost of deleting an interface, without
    an exec around it."""
    import socket
    import struct
    RTM_DELLINK, NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR = 17, 0x1, 0x4, 2
    ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, ifindex, 0, 0)
    msg = struct.pack("=IHHII", 16 + len(ifinfo), RTM_DELLINK,
                      NLM_F_REQUEST | NLM_F_ACK, 1, 0) + ifinfo
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.sendto(msg, (0, 0))
        reply = nl.recv(65536)
    _len, mtype = struct.unpack_from("=IH", reply)
    if mtype == NLMSG_ERROR:
        (err,) = struct.unpack_from("=i", reply, 16)
        if err != 0:
            raise OSError(-err, f"RTM_DELLINK ifindex {ifindex}: {os.strerror(-err)}")


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    return path


def causeway_conf(name, pod_cidr, bpf_root_dir, state_dir, log_file=None):
    conf = {
        "cniVersion": CNI_VERSION,
        "name": name,
        "type": "causeway",
        "bpfRoot": bpf_root_dir,
        "stateDir": state_dir,
        "podCIDR": pod_cidr,
        "mtu": 1500,
    }
    if log_file:
        conf["logFile"] = log_file
    return conf


def ptp_conf(name, subnet, data_dir):
    return {
        "cniVersion": CNI_VERSION,
        "name": name,
        "type": "ptp",
        "ipMasq": False,
        "mtu": 1500,
        "ipam": {
            "type": "host-local",
            "subnet": subnet,
            "dataDir": data_dir,
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    }


class Runner:
    """build/cnirunner, libcni as a real runtime drives it."""

    def __init__(self, cache_dir, extra_path=None):
        self.path = f"{BUILD}:{REF_CNI_DIR}" + (f":{extra_path}" if extra_path else "")
        self.cache_dir = cache_dir

    def argv(self, conf_file, cmd, cid, netns, ifname="eth0"):
        return [CNIRUNNER, "--path", self.path, "--cache-dir", self.cache_dir,
                "--conf", conf_file, cmd, cid, netns, ifname]

    def timed(self, conf_file, cmd, cid, netns, ifname="eth0"):
        """Run one command; return (seconds, stdout).  Raise on failure."""
        argv = self.argv(conf_file, cmd, cid, netns, ifname)
        t0 = time.perf_counter()
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        elapsed = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{os.path.basename(conf_file)} {cmd} {cid} exited "
                               f"{res.returncode}\n  stdout: {res.stdout.strip()}\n"
                               f"  stderr: {res.stderr.strip()}")
        return elapsed, res.stdout

    def add(self, conf_file, cid, netns, ifname="eth0"):
        _, out = self.timed(conf_file, "add", cid, netns, ifname)
        return json.loads(out)

    def delete(self, conf_file, cid, netns, ifname="eth0"):
        self.timed(conf_file, "del", cid, netns, ifname)


def pod_ip(result):
    """IPv4 address (without prefix) of a CNI result's first IP."""
    return result["ips"][0]["address"].split("/")[0]


def percentile(samples, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(samples)
    rank = max(1, -(-len(s) * p // 100))  # ceil(n*p/100), at least 1
    return s[int(rank) - 1]


def median(samples):
    s = sorted(samples)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def spread(samples):
    """(max - min) / median: the noise a ratio is to be read against."""
    m = median(samples)
    return (max(samples) - min(samples)) / m if m else 0.0


# --- traffic tools (iperf3, sockperf) in namespaces ------------------------------
#
# The same measurements as pod_throughput.py, with the ports as arguments,
# for the benchmarks that run them in namespaces they did not create by
# setns (lab pods, bare pod namespaces).

def in_netns(path, argv):
    """argv inside the netns at path; nsenter keeps our mount namespace
    (ip netns exec would remount /sys and hide the bpffs)."""
    return ["nsenter", f"--net={path}"] + list(argv)


def ns_sh(path, *argv, check=True, quiet=False):
    """sh() of argv (each made a string) inside the netns at path."""
    return sh(*in_netns(path, [str(a) for a in argv]), check=check, quiet=quiet)


def plain_vxlan(nodes, dev, port, mtu, underlay="eth0", vni=1):
    """Flannel's vxlan backend written by hand between nodes, each a dict of
    "ns" (its netns path), "ip" (its underlay address) and "cidr" (the pod
    subnet routed to it): a kernel VXLAN device per node (vni, UDP port, no
    learning, no UDP checksum as Causeway's tunnel key asks, mtu) whose
    address, the VTEP, is the subnet's .0, and static neighbour, FDB and
    route entries for every other node."""
    for n in nodes:
        ns_sh(n["ns"], "ip", "link", "add", dev, "type", "vxlan", "id", vni, "dstport", port,
              "local", n["ip"], "dev", underlay, "nolearning", "noudpcsum")
        ns_sh(n["ns"], "ip", "link", "set", dev, "mtu", mtu, "up")
        ns_sh(n["ns"], "sysctl", "-q", "-w", f"net.ipv4.conf.{dev}.rp_filter=0")
        n["vxlan_mac"] = json.loads(ns_sh(n["ns"], "ip", "-j", "link", "show", dev).stdout)[0]["address"]
        n["vtep"] = str(ipaddress.ip_network(n["cidr"])[0])
        ns_sh(n["ns"], "ip", "addr", "add", f"{n['vtep']}/32", "dev", dev)
    for n in nodes:
        for o in nodes:
            if o is not n:
                ns_sh(n["ns"], "ip", "neigh", "replace", o["vtep"], "lladdr", o["vxlan_mac"],
                      "dev", dev, "nud", "permanent")
                ns_sh(n["ns"], "bridge", "fdb", "append", o["vxlan_mac"], "dev", dev,
                      "dst", o["ip"])
                ns_sh(n["ns"], "ip", "route", "add", o["cidr"], "via", o["vtep"], "dev", dev,
                      "onlink")


def plain_routes(nodes, underlay="eth0"):
    """Static routes between nodes (dicts as plain_vxlan's): every other
    node's pod subnet via its underlay address, as native routing installs."""
    for n in nodes:
        for o in nodes:
            if o is not n:
                ns_sh(n["ns"], "ip", "route", "add", o["cidr"], "via", o["ip"], "dev", underlay)


def pinned(cpu, argv):
    return list(argv) if cpu is None else ["taskset", "-c", str(cpu)] + list(argv)


def client_server_cpus():
    """(client CPU, server CPU): 0 and 1 when there are two CPUs and taskset."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return 0, 1
    return None, None


class Server:
    """A long-running process (a traffic server, a watcher), stopped at cleanup."""

    def __init__(self, cleanup, what, argv, stdout=subprocess.DEVNULL, text=True,
                 stderr=subprocess.PIPE):
        self.what = what
        self.proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, text=text,
                                     stdin=subprocess.DEVNULL)
        cleanup.push(what, self.stop)

    def check(self):
        if self.proc.poll() is not None:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            if isinstance(err, bytes):
                err = err.decode(errors="replace")
            raise RuntimeError(f"{self.what} exited {self.proc.returncode}: {err.strip()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WatchObserver:
    """Two threads stamping time.monotonic() the moment each sees its event for
    the current operation: an `etcdctl watch -w json` reader (etcd's own
    delivery, the baseline) and a poller of what the helper made of it.  A
    subclass gives on_watch(t, key, value, op), called under self.lock for
    every event (value: bytes, None for a delete; op: the current operation
    or None), and poll(op) -> bool, called outside the lock for an operation
    that has started (op.t0 set), then on_polled(op, t) under the lock when
    poll said yes.  extra_threads: more readers, started with the two."""

    def __init__(self, cleanup, watch_argv, poll_s, extra_threads=()):
        self.lock = threading.Lock()
        self.cur = None
        self.stop = False
        self.poll_s = poll_s
        self.loops, self.poll_cpu, self.poll_wall, self.watch_events = 0, 0.0, 0.0, 0
        self.watch = Server(cleanup, "etcdctl watch", watch_argv, stdout=subprocess.PIPE,
                            text=False)
        self.threads = [threading.Thread(target=fn, daemon=True)
                        for fn in (self._watch_reader, self._poller, *extra_threads)]
        cleanup.push("observer threads", self.shutdown)
        for t in self.threads:
            t.start()

    def shutdown(self):
        self.stop = True
        self.watch.stop()

    def start(self, op):
        with self.lock:
            self.cur = op

    def run(self, op, action, timeout):
        """Times one operation: op.t0 before action(), op.t_ack after it; then waits up to
        timeout for the observers to set op.done.  Whether they did."""
        self.start(op)
        op.t0 = time.monotonic()
        action()
        op.t_ack = time.monotonic()
        ok = op.done.wait(timeout)
        self.start(None)
        return ok

    def _watch_reader(self):
        f = self.watch.proc.stdout
        while not self.stop:
            line = f.readline()
            t = time.monotonic()
            if not line:
                return
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            for ev in doc.get("Events") or []:
                self.watch_events += 1
                kv = ev.get("kv") or {}
                key = base64.b64decode(kv.get("key", "")).decode(errors="replace")
                value = None if ev.get("type") == 1 else base64.b64decode(kv.get("value", ""))
                with self.lock:
                    self.on_watch(t, key, value, self.cur)

    def _poller(self):
        c0, w0 = time.thread_time(), time.monotonic()
        while not self.stop:
            with self.lock:
                op = self.cur
            if op is not None and op.t0 is not None and self.poll(op):
                t = time.monotonic()
                with self.lock:
                    self.on_polled(op, t)
            self.loops += 1
            time.sleep(self.poll_s)
        self.poll_cpu, self.poll_wall = time.thread_time() - c0, time.monotonic() - w0


def wait_port(netns, ip, port, timeout=5.0):
    """Wait until something listens on TCP ip:port inside netns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = sh(*in_netns(netns, ["ss", "-Htln", "src", f"{ip}:{port}"]), check=False, quiet=True)
        if res.returncode == 0 and res.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {ip}:{port} in {netns} after {timeout}s")


def tcp_reach(netns, ip, port):
    """(True, "") if a TCP connection from netns to ip:port opens, else (False, why)."""
    probe = ("import socket\n"
             f"socket.create_connection(({ip!r}, {port}), timeout=3).close()\n")
    res = sh(*in_netns(netns, [sys.executable, "-c", probe]), check=False, quiet=True)
    return res.returncode == 0, (res.stderr.strip().splitlines() or [""])[-1]


def iperf3_gbps(client_ns, server_ip, port, seconds, cpu=None):
    """One iperf3 TCP stream, client in client_ns: receiver-side Gbit/s,
    the first second omitted (-O 1)."""
    argv = in_netns(client_ns, pinned(cpu, [
        "iperf3", "-c", server_ip, "-p", str(port), "-t", str(seconds), "-O", "1", "-J"]))
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=seconds + 30)
    try:
        doc = json.loads(res.stdout)
    except json.JSONDecodeError:
        doc = {}
    if res.returncode != 0 or "error" in doc:
        raise RuntimeError(f"iperf3 to {server_ip}:{port} failed: "
                           f"{doc.get('error') or res.stderr.strip()}")
    return doc["end"]["sum_received"]["bits_per_second"] / 1e9


_SOCKPERF_VALID = re.compile(r"\[Valid Duration\] RunTime=([\d.]+) sec; "
                             r"SentMessages=(\d+); ReceivedMessages=(\d+)")
_SOCKPERF_PCTL = re.compile(r"percentile (\d+\.\d+) =\s+([\d.]+)")


def sockperf_rr(client_ns, server_ip, port, seconds, cpu=None):
    """sockperf TCP ping-pong at full rate (one message in flight): round
    trips per second, and sockperf's one-way (half round trip) p50/p99 in us."""
    argv = in_netns(client_ns, pinned(cpu, [
        "sockperf", "ping-pong", "--tcp", "-i", server_ip, "-p", str(port),
        "-t", str(seconds), "--mps=max"]))
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=seconds + 30)
    m = _SOCKPERF_VALID.search(res.stdout)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"sockperf ping-pong to {server_ip}:{port} failed "
                           f"(exit {res.returncode}): {res.stdout.strip()[-400:]}")
    pct = {p: float(v) for p, v in _SOCKPERF_PCTL.findall(res.stdout)}
    return {"rr_per_s": int(m.group(3)) / float(m.group(1)),
            "p50_us": pct.get("50.000"), "p99_us": pct.get("99.000")}


def link_stats(netns, dev):
    """(tx_packets, rx_packets) of dev inside netns, None if it has none."""
    res = sh("ip", "-n", os.path.basename(netns), "-j", "-s", "link", "show", "dev", dev,
             check=False, quiet=True)
    try:
        st = json.loads(res.stdout)[0]["stats64"]
        return st["tx"]["packets"], st["rx"]["packets"]
    except (ValueError, IndexError, KeyError):
        return None


# --- the lab (test/lab/lab) -------------------------------------------------------

LAB_CLI = os.path.join(REPO, "test", "lab", "lab")
LAB_STATE = os.environ.get("CAUSEWAY_LAB_STATE", "/run/causeway-lab")
PODSERVE = os.path.join(BUILD, "tools", "podserve")


def _taken_subnets():
    """Underlays of the labs that are up, and the root namespace's routes."""
    import ipaddress
    nets = []
    if os.path.isdir(LAB_STATE):
        for name in os.listdir(LAB_STATE):
            try:
                with open(os.path.join(LAB_STATE, name, "lab.json")) as f:
                    nets.append(ipaddress.IPv4Network(json.load(f)["subnet"]))
            except (OSError, ValueError, KeyError):
                pass
    for r in json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = r.get("dst")
        if dst and dst != "default" and r.get("table") != "local":
            try:
                nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
            except ValueError:
                pass
    return nets


def free_underlay():
    """A 172.x.0.0/16 that no lab and no route of this machine uses, as the
    lab tests pick theirs (test/lab/conftest.py), so a benchmark's lab runs
    beside a lab brought up by hand or by the tests."""
    import ipaddress
    import random
    taken = _taken_subnets()
    # 172.16.0.0/12 less 172.17 (docker's default) and 172.30 (the lab's default)
    cands = [ipaddress.IPv4Network(f"172.{b}.0.0/16") for b in range(18, 32) if b != 30]
    random.shuffle(cands)
    for net in cands:
        if not any(net.overlaps(t) for t in taken):
            return str(net)
    raise RuntimeError("no free /16 in 172.16.0.0/12 for the benchmark's lab")


def preflight_lab(need_tools=()):
    """preflight() for a benchmark that brings up a lab: what `lab up` needs too."""
    preflight(need_tools=("etcd", "etcdctl", "dnsmasq", "openssl") + tuple(need_tools))
    for path in (HELPER, PODSERVE):
        if not os.access(path, os.X_OK):
            cannot_run(f"{path} is missing: run `make` in {REPO}")
    try:
        import yaml  # noqa: F401  (the lab reads its topology with it)
    except ImportError:
        cannot_run("python3-yaml is not installed (the lab needs it)")


class Lab:
    """A lab (test/lab/lab) that a benchmark brings up and always takes down.

    The name is `prefix` + 6 hex digits (the lab's limit is 8 characters),
    the underlay a free /16; `lab up` and `lab down` run against this
    benchmark's build (CAUSEWAY_BUILD = BUILD).  `lab down` is registered
    with the cleanup before `up` starts, and waits for an `up` still
    running (a Ctrl-C reaches it too, and it removes what it made first).
    """

    def __init__(self, cleanup, topology, prefix="cb"):
        import secrets
        self.name = prefix + secrets.token_hex(3)
        self.topology = dict(topology, name=self.name, underlaySubnet=free_underlay())
        self.dir = os.path.join(LAB_STATE, self.name)
        self.env = dict(os.environ, CAUSEWAY_BUILD=BUILD)
        self._up = None
        self._file = None
        cleanup.push(f"lab {self.name}", self.down)

    def cli(self, *args, check=True, timeout=120):
        res = subprocess.run([sys.executable, LAB_CLI, "--lab", self.name, *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=timeout, env=self.env)
        if check and res.returncode != 0:
            raise RuntimeError(f"lab {' '.join(map(str, args))} exited {res.returncode}: "
                               f"{(res.stderr or res.stdout).strip()[-2000:]}")
        return res

    def up(self, timeout=240):
        fd, self._file = tempfile.mkstemp(prefix=f"cwbench-{self.name}-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            json.dump(self.topology, f)  # JSON is YAML
        t0 = time.monotonic()
        self._up = subprocess.Popen([sys.executable, LAB_CLI, "up", self._file],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=self.env)
        try:
            out, err = self._up.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"lab up {self.name} did not finish in {timeout}s")
        if self._up.returncode != 0:
            raise RuntimeError(f"lab up {self.name} exited {self._up.returncode}:\n"
                               f"{(err or out).strip()[-3000:]}")
        log(f"bench: lab {self.name} is up ({time.monotonic() - t0:.1f}s, underlay "
            f"{self.topology['underlaySubnet']})")
        for line in err.splitlines():
            if "left out" not in line:  # the lab's notes about helper options
                log(f"bench: lab up: {line}")
        return self

    def down(self):
        if self._up is not None and self._up.poll() is None:
            # An interrupted `up` removes what it made; let it finish first.
            try:
                self._up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self._up.kill()
                self._up.wait()
        if self._file:
            try:
                os.unlink(self._file)
            except OSError:
                pass
        if self._up is None:
            return
        prefixes = (f"cwl-{self.name}-", f"cwp-{self.name}-")
        if not os.path.exists(self.dir) and not any(
                n.startswith(prefixes) for n in (os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR)
                                                 else [])):
            return  # `up` failed and removed what it made
        for attempt in range(5):
            res = self.cli("down", self.name, check=False, timeout=300)
            if res.returncode == 0:
                log(f"bench: lab {self.name} is down")
                return
            if "another lab command" not in res.stderr:
                break
            time.sleep(1 + attempt)
        log(f"bench: lab down {self.name} exited {res.returncode}: {res.stderr.strip()[-2000:]}")

    def state(self):
        with open(os.path.join(self.dir, "lab.json")) as f:
            return json.load(f)

    def cluster(self, name):
        return next(c for c in self.state()["clusters"] if c["name"] == name)

    def kube(self, cluster):
        sys.path.insert(0, os.path.join(REPO, "test", "lab"))
        try:
            import kubelet
        finally:
            sys.path.pop(0)
        c = self.cluster(cluster)
        return kubelet.Kube(c["api"], self.state()["ca"], c["token"])

    def create_pod(self, cluster, name, node, labels=None, namespace="default"):
        """A Pod bound to node (spec.nodeName): the lab's kubelet makes its
        sandbox through the real plugin, podserve as its container."""
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace,
                            "labels": labels or {"app": "cwbench"}},
               "spec": {"nodeName": node,
                        "containers": [{"name": "c", "image": "cwbench",
                                        "ports": [{"containerPort": 80}]}]}}
        return self.kube(cluster).post(f"/api/v1/namespaces/{namespace}/pods", pod)

    def pod_record(self, cluster, name, namespace="default"):
        """The kubelet's record of a pod (netns, ip, state), None if it has none."""
        d = os.path.join(self.dir, cluster, "kubelet", "pods")
        for f in os.listdir(d) if os.path.isdir(d) else []:
            if not f.endswith(".json"):
                continue
            try:
                with open(os.path.join(d, f)) as fh:
                    rec = json.load(fh)
            except (OSError, ValueError):
                continue
            if rec.get("name") == name and rec.get("namespace") == namespace:
                return rec
        return None

    def wait_pod(self, cluster, name, timeout=60, namespace="default"):
        """The record of a running pod with an IP; raises after timeout."""
        end = time.monotonic() + timeout
        while True:
            rec = self.pod_record(cluster, name, namespace)
            if rec and rec.get("state") == "running" and rec.get("ip"):
                return rec
            if time.monotonic() > end:
                tail = ""
                try:
                    with open(os.path.join(self.dir, cluster, "kubelet.log")) as f:
                        tail = "".join(f.readlines()[-15:])
                except OSError:
                    pass
                raise RuntimeError(f"pod {cluster}/{namespace}/{name} not running after "
                                   f"{timeout}s (record: {rec})\nkubelet.log:\n{tail}")
            time.sleep(0.05)

    def helper(self, cluster, node, *args, check=True):
        """causeway-helper ARGS on a node of the lab (lab helper)."""
        return self.cli("helper", cluster, node, *args, check=check, timeout=30)


# --- BPF maps, read with bpf(2) ----------------------------------------------------
#
# A benchmark that waits for an entry reads the pinned map itself: an exec
# of bpftool or of the helper's CLI costs milliseconds and dumps the whole
# map, a lookup through the syscall costs a microsecond or two.

_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351,
           "riscv64": 280}
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
_BPF_ATTR_SIZE = 128


class BpfMap:
    """A pinned BPF map, opened with BPF_OBJ_GET; its key and value sizes
    come from BPF_OBJ_GET_INFO_BY_FD.  Keys and values are bytes, laid out
    as include/causeway/datapath.h says."""

    def __init__(self, pin):
        import platform
        nr = _NR_BPF.get(platform.machine())
        if nr is None:
            raise RuntimeError(f"no bpf syscall number known for {platform.machine()}")
        self.pin = pin
        self._nr = nr
        self._sys = _libc.syscall
        self._sys.restype = ctypes.c_long
        path = ctypes.create_string_buffer(pin.encode())
        attr = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(path), 0, 0),
                                           _BPF_ATTR_SIZE)
        fd = self._sys(nr, BPF_OBJ_GET, attr, _BPF_ATTR_SIZE)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bpf(BPF_OBJ_GET, {pin}): {os.strerror(err)}")
        self.fd = fd
        info = ctypes.create_string_buffer(80)
        attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, 80, ctypes.addressof(info)),
                                           _BPF_ATTR_SIZE)
        if self._sys(nr, BPF_OBJ_GET_INFO_BY_FD, attr, _BPF_ATTR_SIZE) != 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"bpf(BPF_OBJ_GET_INFO_BY_FD, {pin}): {os.strerror(err)}")
        (self.type, _id, self.key_size, self.value_size,
         self.max_entries) = struct.unpack_from("=IIIII", info.raw)
        self._value = ctypes.create_string_buffer(self.value_size)
        self._prepared = {}
        self._batch_ok = None

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lookup(self, key):
        """The value (bytes) at key, None if absent.  The syscall argument
        for a key is built once and kept, so polling one key is cheap.  (An
        LPM trie answers a missing /32 with its covering prefix: compare.)"""
        attr = self._prepared.get(key)
        if attr is None:
            kbuf = ctypes.create_string_buffer(key, self.key_size)
            attr = ctypes.create_string_buffer(
                struct.pack("=IIQQQ", self.fd, 0, ctypes.addressof(kbuf),
                            ctypes.addressof(self._value), 0), _BPF_ATTR_SIZE)
            attr.kbuf = kbuf  # keep the key buffer alive with its attr
            if len(self._prepared) > 4096:
                self._prepared.clear()
            self._prepared[key] = attr
        if self._sys(self._nr, BPF_MAP_LOOKUP_ELEM, attr, _BPF_ATTR_SIZE) != 0:
            return None
        return self._value.raw

    def keys(self):
        """Every key, by BPF_MAP_GET_NEXT_KEY (one syscall per key)."""
        cur = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        attr = ctypes.create_string_buffer(
            struct.pack("=IIQQ", self.fd, 0, 0, ctypes.addressof(nxt)), _BPF_ATTR_SIZE)
        first = True
        out = []
        while True:
            if self._sys(self._nr, BPF_MAP_GET_NEXT_KEY, attr, _BPF_ATTR_SIZE) != 0:
                return out  # ENOENT: the end
            out.append(nxt.raw)
            if first:
                attr = ctypes.create_string_buffer(
                    struct.pack("=IIQQ", self.fd, 0, ctypes.addressof(cur),
                                ctypes.addressof(nxt)), _BPF_ATTR_SIZE)
                first = False
            ctypes.memmove(cur, nxt, self.key_size)

    def items(self, chunk=4096):
        """Every (key, value): BPF_MAP_LOOKUP_BATCH where the map type has
        it (the kernel walks the map), else keys() and one lookup each."""
        if self._batch_ok is not False:
            try:
                return self._items_batch(chunk)
            except OSError:
                self._batch_ok = False
        out = []
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                out.append((k, v))
        return out

    def _items_batch(self, chunk):
        import errno as _errno
        ks, vs = self.key_size, self.value_size
        keys = ctypes.create_string_buffer(ks * chunk)
        vals = ctypes.create_string_buffer(vs * chunk)
        in_b = ctypes.create_string_buffer(max(ks, 8))
        out_b = ctypes.create_string_buffer(max(ks, 8))
        out, first = [], True
        while True:
            attr = ctypes.create_string_buffer(struct.pack(
                "=QQQQIIQQ", 0 if first else ctypes.addressof(in_b), ctypes.addressof(out_b),
                ctypes.addressof(keys), ctypes.addressof(vals), chunk, self.fd, 0, 0),
                _BPF_ATTR_SIZE)
            rc = self._sys(self._nr, BPF_MAP_LOOKUP_BATCH, attr, _BPF_ATTR_SIZE)
            err = ctypes.get_errno() if rc != 0 else 0
            if rc != 0 and err != _errno.ENOENT:
                if first:
                    raise OSError(err, f"BPF_MAP_LOOKUP_BATCH on {self.pin}: {os.strerror(err)}")
                raise RuntimeError(f"BPF_MAP_LOOKUP_BATCH on {self.pin}: {os.strerror(err)}")
            (count,) = struct.unpack_from("=I", attr.raw, 32)
            kr, vr = keys.raw, vals.raw
            out.extend((kr[i * ks:(i + 1) * ks], vr[i * vs:(i + 1) * vs]) for i in range(count))
            self._batch_ok = True
            if rc != 0:  # ENOENT: that was the last chunk
                return out
            ctypes.memmove(in_b, out_b, len(in_b))
            first = False


# --- etcd's v3 JSON gateway ------------------------------------------------------------

class EtcdHttp:
    """Requests to etcd's v3 JSON gateway over one kept-alive connection:
    plain http, or https with a client certificate and, with a user, the
    token from /v3/auth/authenticate (see DESIGN.md, The mesh store)."""

    def __init__(self, endpoint, ca=None, cert=None, key=None, user=None, password=None,
                 timeout=30):
        from urllib.parse import urlparse
        u = urlparse(endpoint)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or 2379
        self.ctx = None
        if self.https:
            import ssl
            self.ctx = ssl.create_default_context(cafile=ca)
            if cert:
                self.ctx.load_cert_chain(cert, key)
        self.user, self.password, self.timeout = user, password, timeout
        self.conn = None
        self.token = None

    @classmethod
    def from_config(cls, config_file, **kw):
        """From a Cilium-style etcd config (endpoints, trusted-ca-file, ...)."""
        import yaml
        with open(config_file) as f:
            cfg = yaml.safe_load(f)
        return cls(cfg["endpoints"][0], cfg.get("trusted-ca-file"), cfg.get("cert-file"),
                   cfg.get("key-file"), cfg.get("username"), cfg.get("password"), **kw)

    def _post(self, path, body, auth=True):
        import http.client
        if self.conn is None:
            if self.https:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                                        timeout=self.timeout)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.timeout)
        headers = {"Content-Type": "application/json"}
        if auth and self.token:
            headers["Authorization"] = self.token
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        try:
            self.conn.request("POST", path, body=data, headers=headers)
            r = self.conn.getresponse()
            raw = r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        doc = json.loads(raw or b"{}")
        if r.status != 200:
            raise RuntimeError(f"etcd {self.host}:{self.port}{path}: HTTP {r.status}: "
                               f"{str(doc)[:300]}")
        return doc

    def call(self, path, body):
        import http.client
        for attempt in (0, 1):
            try:
                if self.user and self.token is None:
                    self.token = self._post("/v3/auth/authenticate",
                                            {"name": self.user, "password": self.password},
                                            auth=False)["token"]
                return self._post(path, body)
            except (OSError, http.client.HTTPException, RuntimeError):
                if attempt:
                    raise
                self.token = None  # an expired token or a dropped connection: once more

    def put(self, key, value):
        return self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def delete(self, key):
        return self.call("/v3/kv/deleterange", {"key": b64(key)})

    def get(self, key):
        """The value (str) at key, None if absent."""
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def put_many(self, pairs):
        """Put every (key, value) in one transaction (etcd's --max-txn-ops
        bounds how many)."""
        ops = ",".join('{"requestPut":{"key":"%s","value":"%s"}}' % (b64(k), b64(v))
                       for k, v in pairs)
        return self.call("/v3/kv/txn", '{"success":[' + ops + ']}')

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def etcdctl_argv(config_file, *args):
    """etcdctl with the endpoints, TLS and user of a Cilium-style etcd config."""
    import yaml
    with open(config_file) as f:
        cfg = yaml.safe_load(f)
    argv = ["etcdctl", "--endpoints=" + ",".join(cfg["endpoints"]),
            "--cacert=" + cfg["trusted-ca-file"], "--cert=" + cfg["cert-file"],
            "--key=" + cfg["key-file"]]
    if cfg.get("username"):
        argv.append(f"--user={cfg['username']}:{cfg['password']}")
    return argv + list(args)


# --- a running helper ------------------------------------------------------------------

def helper_request(socket_path, request, timeout=10.0):
    """One request to a node helper's unix socket ("status", "clusters",
    "services", "endpoints"), as `causeway-helper REQUEST -o json` sends
    it, without the exec: its JSON answer."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(request.encode() + b"\n")
        chunks = []
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            chunks.append(b)
    return json.loads(b"".join(chunks))


def proc_status(pid):
    """/proc/PID/status as {field: value}; memory fields (VmHWM, VmRSS, ...) in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            v = v.strip()
            out[k] = int(v.split()[0]) if v.endswith(" kB") else v
    return out


def proc_cpu_seconds(pid):
    """User + system CPU time of PID so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
