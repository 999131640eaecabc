"""Helpers for the node tests: one private "node" per test.

A Node is a network namespace playing the node's host netns, with its own
bpfRoot under the host bpffs, its own stateDir and libcni cache under a
private temporary directory, and pod namespaces beside it.  Every plugin call
runs inside the node netns through `nsenter --net`, which keeps our mount
namespace (`ip netns exec` would mount a fresh /sys and hide the bpffs).

Keeping the host side in a private netns means the pods' host routes, the
plugin's ip_forward=1, portmap's iptables rules and bandwidth's devices never
touch the machine's own netns, and a packet to an address no pod holds dies
there (the node netns has no default route) instead of leaving the machine.
"""

import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# CAUSEWAY_BUILD runs the suite against another build tree (make SAN=1 BUILD=...).
BUILD = Path(os.environ.get("CAUSEWAY_BUILD", ROOT / "build")).resolve()
PLUGIN = BUILD / "causeway"
RUNNER = BUILD / "cnirunner"
HELPER = BUILD / "causeway-helper"
MESHCHECK = BUILD / "tools" / "meshcheck"
CNI_PATH = f"{BUILD}:/usr/lib/cni"
NETNS_DIR = Path("/var/run/netns")
BPFFS = Path("/sys/fs/bpf")
NODE_IP = "198.18.0.1"  # RFC 2544 benchmarking range; lives only in our node netns

# The contract's pins and files.
MAP_ENDPOINTS = "cw_endpoints"
MAP_METRICS = "cw_metrics"
TC_HANDLE = 0xC5A1
TC_PRIORITY = 1

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def host_veth(container_id, ifname):
    """The contract's host veth name: cw + FNV-1a 64 of "CID/IFNAME", low 48 bits."""
    h = 0xCBF29CE484222325
    for b in f"{container_id}/{ifname}".encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "cw%012x" % (h & 0xFFFFFFFFFFFF)


def one_json(text, what="stdout"):
    """stdout must be exactly one JSON document (contract, "Errors")."""
    assert text.strip(), f"{what} is empty, expected one JSON document"
    try:
        return json.loads(text)  # refuses trailing data ("Extra data")
    except json.JSONDecodeError as e:
        raise AssertionError(f"{what} is not exactly one JSON document ({e}): {text!r}") from None


@contextmanager
def in_netns(path):
    """Run the block with this thread in netns `path`; sockets made there stay there."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.open(str(path), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
        try:
            yield
        finally:
            if _libc.setns(orig, CLONE_NEWNET) != 0:
                # Carrying on in the wrong netns would poison every later test.
                os._exit(99)
    finally:
        os.close(fd)
        os.close(orig)


def sh(argv, *, input=None, timeout=60, check=True, env=None):
    p = subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {p.returncode}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


@dataclass
class Result:
    """One plugin or runner call: exit status, output, and stdout parsed as JSON."""
    argv: list
    rc: int
    out: str
    err: str
    doc: object = None
    log: str = ""

    def __str__(self):
        s = f"{' '.join(map(str, self.argv))}\n  exit {self.rc}\n  stdout: {self.out.strip()}"
        if self.err.strip():
            s += f"\n  stderr: {self.err.strip()[-2000:]}"
        if self.log:
            s += f"\n  plugin log (tail):\n{self.log}"
        return s

    @property
    def code(self):
        return self.doc.get("code") if isinstance(self.doc, dict) else None

    @property
    def msg(self):
        return self.doc.get("msg", "") if isinstance(self.doc, dict) else ""


@dataclass(eq=False)
class Pod:
    name: str           # netns name
    cid: str
    ifname: str = "eth0"
    result: dict = None
    ip: str = None
    conf: Path = None   # the config it was added with, for DEL at cleanup

    @property
    def path(self):
        return str(NETNS_DIR / self.name)

    @property
    def veth(self):
        return host_veth(self.cid, self.ifname)


class Node:
    def __init__(self, label="node"):
        self.prefix = "cwt" + secrets.token_hex(3)
        self.label = label
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.state_dir = self.tmp / "state"
        self.cache_dir = self.tmp / "cache"
        self.log_file = self.tmp / "plugin.log"
        self.bpf_root = BPFFS / f"cwtest-{secrets.token_hex(4)}"
        self.net = f"cwnet-{self.prefix}"
        self.node_ns = f"{self.prefix}-node"
        self.netns = [self.node_ns]      # every netns this node made
        self.pods = []
        self.live = set()                # pods a runtime would still DEL
        self.veths = set()               # every host veth name we caused
        self.npods = 0
        self.nconf = 0
        self._netns_batch("add", [self.node_ns])
        sh(["ip", "-n", self.node_ns, "link", "set", "lo", "up"])
        # The node's own address, as a real node has one on its uplink: NAT
        # (portmap's masquerade) needs a global-scope source address in the
        # netns, and 127.0.0.1 is host scope.
        sh(["ip", "-n", self.node_ns, "addr", "add", f"{NODE_IP}/32", "dev", "lo"])

    # --- namespaces -------------------------------------------------------

    @property
    def node_path(self):
        return str(NETNS_DIR / self.node_ns)

    def nsenter(self, argv, ns=None):
        return ["nsenter", f"--net={ns or self.node_path}", *map(str, argv)]

    @staticmethod
    def _netns_batch(verb, names):
        # -force: a batch goes on past a failed line (a netns already gone).
        script = "".join(f"netns {verb} {n}\n" for n in names)
        return sh(["ip", "-force", "-batch", "-"], input=script, check=(verb == "add"))

    def make_pods(self, n, ifname="eth0"):
        """n new pods, each with its own empty netns (made in one `ip -batch`)."""
        new = []
        for _ in range(n):
            i = self.npods
            self.npods += 1
            # containerd's ids are 64 hex digits; ours are as long and unique per node
            cid = f"{self.prefix}{i:05d}{secrets.token_hex(28)}"
            new.append(Pod(name=f"{self.prefix}-p{i}", cid=cid, ifname=ifname))
        self._netns_batch("add", [p.name for p in new])
        self.netns += [p.name for p in new]
        self.pods += new
        self.veths.update(p.veth for p in new)
        return new

    def make_pod(self, ifname="eth0"):
        return self.make_pods(1, ifname)[0]

    def delete_netns(self, pod):
        self._netns_batch("del", [pod.name])

    # --- configs ----------------------------------------------------------

    def conf(self, version="1.0.0", **over):
        """The causeway plugin entry; a key set to None is left out."""
        c = {
            "cniVersion": version,
            "name": self.net,
            "type": "causeway",
            "bpfRoot": str(self.bpf_root),
            "stateDir": str(self.state_dir),
            "podCIDR": "10.240.0.0/24",
            "logFile": str(self.log_file),
            "logLevel": "info",
        }
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def conflist(self, plugins=None, version="1.0.0", name=None):
        """Write a conflist for the runner; the default is causeway alone."""
        plugins = plugins if plugins is not None else [self.conf(version)]
        entries = [{k: v for k, v in p.items() if k not in ("cniVersion", "name")} for p in plugins]
        self.nconf += 1
        path = self.tmp / f"net{self.nconf}.conflist"
        path.write_text(json.dumps({"cniVersion": version, "name": name or self.net,
                                    "plugins": entries}, indent=1))
        return path

    def write_conf(self, conf):
        self.nconf += 1
        path = self.tmp / f"net{self.nconf}.conf"
        path.write_text(json.dumps(conf, indent=1))
        return path

    def gateway(self, cidr="10.240.0.0/24"):
        return str(ipaddress.ip_network(cidr)[1])

    # --- plugin calls -----------------------------------------------------

    def log_tail(self, lines=25):
        try:
            return "\n".join("    " + l for l in self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def _result(self, argv, p):
        doc = one_json(p.stdout) if p.stdout.strip() else None
        return Result(argv, p.returncode, p.stdout, p.stderr, doc,
                      self.log_tail() if p.returncode else "")

    def runner_argv(self, cmd, pod=None, conf=None, *, cid=None, netns=None, ifname=None,
                    args=None, cap=None, valid=None):
        argv = [RUNNER, "--path", CNI_PATH, "--cache-dir", self.cache_dir,
                "--conflist" if str(conf).endswith(".conflist") else "--conf", conf, cmd]
        if cmd in ("add", "del", "check"):
            argv += [cid if cid is not None else pod.cid,
                     netns if netns is not None else pod.path,
                     ifname if ifname is not None else pod.ifname]
        if args:
            argv += ["--args", args]
        if cap is not None:
            argv += ["--capability-args", json.dumps(cap)]
        if valid is not None:
            argv += ["--valid", json.dumps(valid)]
        return self.nsenter(argv)

    def runner(self, cmd, pod=None, conf=None, timeout=120, **kw):
        """build/cnirunner inside the node netns: libcni as containerd drives it."""
        if cmd == "add" and pod is not None:
            # A runtime DELs after a failed ADD too, so cleanup must as well.
            pod.conf = conf
            self.live.add(pod)
        argv = self.runner_argv(cmd, pod, conf, **kw)
        return self._result(argv, sh(argv, check=False, timeout=timeout))

    def add(self, pod, conf, cap=None, **kw):
        r = self.runner("add", pod, conf, cap=cap, **kw)
        assert r.rc == 0, f"ADD failed:\n{r}"
        pod.result = r.doc
        ips = r.doc.get("ips") or []
        pod.ip = ips[0]["address"].split("/")[0] if ips else None
        return r.doc

    def delete(self, pod, conf=None, **kw):
        r = self.runner("del", pod, conf or pod.conf, **kw)
        assert r.rc == 0, f"DEL failed:\n{r}"
        self.live.discard(pod)
        return r

    def add_many(self, pods, conf, workers=4):
        """ADD several pods, a few at a time as a kubelet would."""
        for p in pods:
            p.conf = conf
            self.live.add(p)
        with ThreadPoolExecutor(workers) as ex:
            results = list(ex.map(lambda p: self.runner("add", p, conf), pods))
        for p, r in zip(pods, results):
            assert r.rc == 0, f"ADD of {p.name} failed:\n{r}"
            p.result = r.doc
            p.ip = r.doc["ips"][0]["address"].split("/")[0]
        return results

    def exec_plugin(self, command, stdin, pod=None, *, env=None, omit=(), timeout=60):
        """build/causeway itself, inside the node netns, with a clean CNI environment.

        stdin is a dict (sent as JSON) or a str (sent as is)."""
        e = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
             "CNI_COMMAND": command, "CNI_PATH": CNI_PATH}
        if pod is not None:
            e.update(CNI_CONTAINERID=pod.cid, CNI_NETNS=pod.path, CNI_IFNAME=pod.ifname)
            if command == "ADD" and isinstance(stdin, dict):
                # Cleanup DELs it through the runner with the same config.
                self.live.add(pod)
                pod.conf = self.write_conf({k: v for k, v in stdin.items() if k != "prevResult"})
        e.update(env or {})
        for k in omit:
            e.pop(k, None)
        data = stdin if isinstance(stdin, str) else json.dumps(stdin)
        argv = self.nsenter([PLUGIN])
        p = sh(argv, input=data, check=False, timeout=timeout, env=e)
        r = self._result(argv + [f"<<< {data[:300]}", f"env {' '.join(f'{k}={v}' for k, v in e.items() if k.startswith('CNI_'))}"], p)
        return r

    # --- what exists ------------------------------------------------------

    def links(self, ns=None):
        out = sh(["ip", "-n", ns or self.node_ns, "-j", "link", "show"]).stdout
        return {l["ifname"]: l for l in json.loads(out or "[]")}

    def cw_links(self):
        """Host veths in the node netns that this test caused (cw + 12 hex)."""
        return {n for n in self.links() if re.fullmatch(r"cw[0-9a-f]{12}", n)}

    def ipam_dir(self, net=None):
        return self.state_dir / "ipam" / (net or self.net)

    def ip_files(self, net=None):
        """{IP: (CONTAINERID, IFNAME)} of the built-in IPAM's allocation files."""
        d = self.ipam_dir(net)
        out = {}
        if d.is_dir():
            for f in d.iterdir():
                try:
                    ipaddress.IPv4Address(f.name)
                except ValueError:
                    continue  # a lock or bookkeeping file, not an allocation
                lines = f.read_text().split("\n")
                out[f.name] = tuple(lines[:2])
        return out

    def state_files(self):
        d = self.state_dir / "endpoints"
        return sorted(f.name for f in d.iterdir()) if d.is_dir() else []

    def state_file(self, pod):
        return self.state_dir / "endpoints" / f"{pod.cid}-{pod.ifname}.json"

    @staticmethod
    def _bytes(v):
        return bytes(int(x, 16) for x in v)

    def endpoints(self):
        """{pod IP: entry} of <bpfRoot>/cw_endpoints, read with bpftool."""
        pin = self.bpf_root / MAP_ENDPOINTS
        if not pin.exists():
            return {}
        raw = json.loads(sh(["bpftool", "map", "dump", "pinned", pin, "-j"]).stdout or "[]")
        out = {}
        for e in raw:
            k, v = self._bytes(e["key"]), self._bytes(e["value"])
            ip = str(ipaddress.IPv4Address(k[:4]))
            out[ip] = {
                "ifindex": int.from_bytes(v[0:4], "little"),
                "identity": int.from_bytes(v[4:8], "little"),
                "ep_id": int.from_bytes(v[8:10], "little"),
                "flags": int.from_bytes(v[10:12], "little"),
                "pod_mac": ":".join("%02x" % b for b in v[12:18]),
                "host_mac": ":".join("%02x" % b for b in v[18:24]),
            }
        return out

    def forwarded_packets(self):
        """Packets counted with reason 0 (forwarded) in cw_metrics, summed over CPUs."""
        pin = self.bpf_root / MAP_METRICS
        if not pin.exists():
            return None
        raw = json.loads(sh(["bpftool", "map", "dump", "pinned", pin, "-j"]).stdout or "[]")
        total = 0
        for e in raw:
            # a per-CPU array, slot = reason << 1 | direction (cw_metrics_index)
            if int.from_bytes(self._bytes(e["key"])[0:4], "little") >> 1 != 0:
                continue
            per_cpu = e.get("values") or [{"value": e["value"]}]
            for c in per_cpu:
                total += int.from_bytes(self._bytes(c["value"])[0:8], "little")
        return total

    def tc_filters(self, dev, direction):
        out = sh(["tc", "-n", self.node_ns, "-j", "filter", "show", "dev", dev, direction],
                 check=False).stdout
        return [f for f in json.loads(out or "[]") if f.get("options")]

    # --- assertions -------------------------------------------------------

    def leftovers(self, pod):
        """What still exists of a pod the plugin should have removed entirely."""
        left = []
        if pod.veth in self.links():
            left.append(f"host veth {pod.veth}")
        ipf = {ip: o for ip, o in self.ip_files().items() if o[0] == pod.cid}
        if ipf:
            left.append(f"IP allocation file(s) {sorted(ipf)}")
        if pod.ip and pod.ip in self.endpoints():
            left.append(f"endpoint map entry {pod.ip}")
        if self.state_file(pod).exists():
            left.append(f"state file {self.state_file(pod)}")
        return left

    def assert_gone(self, pod, settle=3.0):
        """Everything of @pod is gone.  The host veth may take a moment: DEL sets it down
        and a detached child unregisters it (async link delete), so that one is waited for."""
        deadline = time.monotonic() + settle
        left = self.leftovers(pod)
        while left == [f"host veth {pod.veth}"] and time.monotonic() < deadline:
            time.sleep(0.05)
            left = self.leftovers(pod)
        assert not left, f"pod {pod.name} ({pod.cid[:16]}…/{pod.ifname}) left behind: {left}\n{self.log_tail()}"

    def assert_clean(self):
        """No veth, IP file, map entry or state file of any endpoint."""
        left = []
        if self.cw_links():
            left.append(f"host veths {sorted(self.cw_links())}")
        if self.ip_files():
            left.append(f"IP files {sorted(self.ip_files())}")
        if self.endpoints():
            left.append(f"endpoint map entries {sorted(self.endpoints())}")
        if self.state_files():
            left.append(f"state files {self.state_files()}")
        assert not left, f"left behind: {left}\n{self.log_tail()}"

    def check_result(self, res, pod, version, cidr="10.240.0.0/24", gw=None):
        """The ADD result has the contract's shape; returns the pod IP."""
        gw = gw or self.gateway(cidr)
        assert res["cniVersion"] == version, res
        ifs = res["interfaces"]
        assert len(ifs) == 2, res
        assert ifs[0]["name"] == pod.veth, res
        assert not ifs[0].get("sandbox"), res
        assert ifs[1]["name"] == pod.ifname, res
        assert ifs[1]["sandbox"] == pod.path, res
        for i in ifs:
            assert MAC_RE.match(i["mac"]), res
            first = int(i["mac"][:2], 16)
            assert first & 2 and not first & 1, f"{i['mac']} is not locally administered unicast"
        assert len(res["ips"]) == 1, res
        ip = res["ips"][0]
        addr = ipaddress.ip_interface(ip["address"])
        net = ipaddress.ip_network(cidr)
        assert addr.network.prefixlen == 32, res
        assert addr.ip in net and addr.ip not in (net[0], net[1], net[-1]), res
        assert ip["gateway"] == gw and ip["interface"] == 1, res
        if version in ("0.3.1", "0.4.0"):
            assert ip.get("version") == "4", res
        else:
            assert "version" not in ip, res
        assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": gw}], res
        return str(addr.ip)

    def meshcheck(self, pods, *opts, timeout=120):
        data = "".join(f"{p.path} {p.ip}\n" for p in pods)
        return sh([MESHCHECK, *opts], input=data, check=False, timeout=timeout)

    # --- cleanup ----------------------------------------------------------

    def cleanup(self):
        """Undo everything, then report what could not be undone."""
        problems = []
        for pod in list(self.live):
            try:
                if pod.conf is not None:
                    self.runner("del", pod, pod.conf, timeout=60)
            except Exception as e:  # keep cleaning whatever happens
                problems.append(f"DEL {pod.name}: {e}")
        self._netns_batch("del", self.netns)
        shutil.rmtree(self.bpf_root, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

        left = [n for n in self.netns if (NETNS_DIR / n).exists()]
        if left:
            problems.append(f"netns not removed: {left}")
        root_links = self.links_in_root()
        stray = sorted(self.veths & root_links)
        if stray:
            # The plugin made a host veth in the wrong netns: remove it, and say so.
            for v in stray:
                sh(["ip", "link", "del", v], check=False)
            problems.append(f"host veths in the root netns (expected in the node netns): {stray}")
        if self.bpf_root.exists():
            problems.append(f"bpfRoot {self.bpf_root} not removed")
        if self.tmp.exists():
            problems.append(f"{self.tmp} not removed")
        return problems

    @staticmethod
    def links_in_root():
        out = sh(["ip", "-j", "link", "show"]).stdout
        return {l["ifname"] for l in json.loads(out or "[]")}


def wait_for(pred, timeout=5.0, step=0.05):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


SUPPORTED = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")


def assert_error(r, code, msg_re=None, version=None):
    """Exit 1, stdout one JSON error document with the contract's keys.

    version: the config's cniVersion, which the error must repeat ("cniVersion:
    the same value as provided by the configuration", CNI spec, Error)."""
    assert r.rc == 1, f"expected exit status 1:\n{r}"
    assert isinstance(r.doc, dict), f"stdout is not a JSON object:\n{r}"
    for key in ("cniVersion", "code", "msg"):
        assert key in r.doc, f"error document lacks {key!r}:\n{r}"
    assert r.code == code, f"expected code {code}:\n{r}"
    if msg_re:
        assert re.search(msg_re, r.msg, re.I), f"message should match /{msg_re}/:\n{r}"
    if version in SUPPORTED:
        assert r.doc["cniVersion"] == version, \
            f"error cniVersion should repeat the config's {version}:\n{r}"


def assert_error_runner(r, code, msg_re):
    """The runner reports the plugin's error as {"code","msg"} on stdout, exit 1."""
    assert r.rc == 1, f"ADD should have failed:\n{r}"
    assert r.code == code, f"expected code {code}:\n{r}"
    assert re.search(msg_re, r.msg, re.I), f"message should name the step (/{msg_re}/):\n{r}"
