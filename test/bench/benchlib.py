"""Shared plumbing for the Causeway benchmarks (test/bench/*.py).

Everything a benchmark creates is registered with a Cleanup object, so that
an interrupted run still removes its network namespaces, bpffs pins and
scratch directories.  Every name carries a per-run prefix
(cwbench-<kind>-<pid>) so two runs, or a run beside the lab tests, never
touch each other's objects.
"""

import atexit
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
