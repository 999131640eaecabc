"""Fixtures for the lab tests (run as root: /usr/bin/python3 -m pytest -q test/lab/test_lab.py).

Each lab a test makes has a name of its own (t + 6 hex digits) and an
underlay subnet no other lab or route of this machine uses, so the tests
can run beside a lab someone brought up by hand.  Teardown is `lab down`,
which fails when anything with the lab's prefixes is left; the fixture
turns that into a test error.

Tests marked needs_helper check what only a working causeway-helper gives
(pod traffic between nodes); `-m needs_helper` runs just those.
"""

import contextlib
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import kubelet as kl  # noqa: E402

LAB = HERE / "lab"
TOPOLOGIES = HERE / "topologies"
MANIFESTS = HERE / "manifests"
BUILD = Path(os.environ.get("CAUSEWAY_BUILD", ROOT / "build")).resolve()
MESHCHECK = BUILD / "tools" / "meshcheck"
STATE_ROOT = Path(os.environ.get("CAUSEWAY_LAB_STATE", "/run/causeway-lab"))


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_helper: needs causeway-helper's node role "
                                       "(pod traffic between nodes)")


def pytest_collection_modifyitems(config, items):
    mine = [i for i in items if HERE in Path(str(i.fspath)).resolve().parents]
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="lab tests need root (namespaces, links, bpffs)")
        for item in mine:
            item.add_marker(skip)
        return


def run(argv, check=True, timeout=120, env=None, input=None):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                       env=env, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {p.returncode}\n"
                             f"stdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}")
    return p


def wait_for(pred, timeout, step=0.2, what="condition"):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def taken_subnets():
    """Underlays of labs that are up, and this machine's routes."""
    nets = []
    if STATE_ROOT.is_dir():
        for f in STATE_ROOT.glob("*/lab.json"):
            try:
                nets.append(ipaddress.IPv4Network(json.loads(f.read_text())["subnet"]))
            except (OSError, ValueError, KeyError):
                pass
    out = run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout
    for r in json.loads(out or "[]"):
        dst = r.get("dst")
        if dst and dst != "default" and r.get("table") != "local":
            try:
                nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
            except ValueError:
                pass
    return nets


def free_subnet():
    taken = taken_subnets()
    # 172.16.0.0/12 less 172.17 (docker's default) and 172.30 (the lab's default)
    candidates = [ipaddress.IPv4Network(f"172.{b}.0.0/16") for b in range(18, 32) if b != 30]
    for net in sorted(candidates, key=lambda _: secrets.randbits(8)):
        if not any(net.overlaps(t) for t in taken):
            return str(net)
    raise AssertionError("no free /16 in 172.16.0.0/12 for a test lab")


class Lab:
    """One lab of the tests, driven through the `lab` command line."""

    def __init__(self, topology, routing=None, tmp=None):
        doc = yaml.safe_load(Path(topology).read_text())
        self.name = "t" + secrets.token_hex(3)
        doc["name"] = self.name
        doc["underlaySubnet"] = free_subnet()
        if routing:
            for c in doc["clusters"]:
                c["routing"] = routing
        self.topology = Path(tmp) / f"{self.name}.yaml"
        self.topology.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.dir = STATE_ROOT / self.name
        self.up_result = None
        self.is_up = False

    def cli(self, *args, check=True, timeout=120):
        return run([sys.executable, LAB, "--lab", self.name, *args], check=check, timeout=timeout)

    def up(self, *extra):
        self.up_result = self.cli("up", self.topology, *extra, timeout=300)
        self.is_up = True
        return self.up_result

    def down(self):
        self.is_up = False
        return self.cli("down", self.name, check=False, timeout=300)

    def state(self):
        return json.loads((self.dir / "lab.json").read_text())

    def status(self):
        return json.loads(self.cli("status", "-o", "json").stdout)

    @property
    def kubeconfig(self):
        return str(self.dir / "kubeconfig")

    def kubectl(self, cluster, *args, check=True, timeout=60):
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        return run(["kubectl", "--context", f"kind-{cluster}", *args], check=check, timeout=timeout,
                   env=env)

    def cluster(self, name):
        return next(c for c in self.state()["clusters"] if c["name"] == name)

    def kube(self, cluster):
        c = self.cluster(cluster)
        return kl.Kube(c["api"], self.state()["ca"], c["token"])

    def exec(self, cluster, pod, *cmd, namespace="default", check=True, timeout=30):
        return self.cli("exec", "-n", namespace, cluster, pod, *cmd, check=check, timeout=timeout)

    def node_exec(self, cluster, node, *cmd, check=True, timeout=30):
        return self.cli("node", cluster, node, *cmd, check=check, timeout=timeout)

    def pods(self, cluster, namespace="default"):
        return self.kube(cluster).get(f"/api/v1/namespaces/{namespace}/pods")["items"]

    def pod_records(self, cluster):
        d = self.dir / cluster / "kubelet" / "pods"
        return [json.loads(f.read_text()) for f in d.glob("*.json")]

    def wait_running(self, cluster, count, selector=None, namespace="default", timeout=60):
        """The pods (of a label selector) once count of them are Running with an IP."""
        def ready():
            pods = [p for p in self.pods(cluster, namespace)
                    if not p["metadata"].get("deletionTimestamp")
                    and all(p["metadata"].get("labels", {}).get(k) == v
                            for k, v in (selector or {}).items())]
            running = [p for p in pods if p.get("status", {}).get("phase") == "Running"
                       and p["status"].get("podIP")]
            return running if len(running) == count and len(pods) == count else None
        try:
            return wait_for(ready, timeout, what=f"{count} running pods {selector or ''} in {cluster}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnose(cluster)}") from None

    def diagnose(self, cluster):
        out = []
        for p in self.pods(cluster):
            st = p.get("status", {})
            conds = "; ".join(f"{c['type']}={c['status']} {c.get('message', '')}"
                              for c in st.get("conditions") or [])
            out.append(f"  {p['metadata']['name']} node={p['spec'].get('nodeName')} "
                       f"phase={st.get('phase')} ip={st.get('podIP')} {conds}")
        log = self.dir / cluster / "kubelet.log"
        if log.exists():
            out.append("  kubelet.log (tail):")
            out += ["    " + l for l in log.read_text().splitlines()[-25:]]
        return "\n".join(out)


@pytest.fixture(scope="session")
def built():
    missing = [str(p) for p in (BUILD / "causeway", BUILD / "causeway-helper", BUILD / "cnirunner",
                                BUILD / "tools" / "podserve", MESHCHECK) if not p.is_file()]
    if missing:
        pytest.fail(f"not built: {', '.join(missing)} (run make first)")


@pytest.fixture
def make_lab(built, tmp_path):
    """Labs made by one test; each is downed at the end, and must leave nothing."""
    labs = []

    def make(topology, routing=None):
        lab = Lab(topology, routing, tmp_path)
        labs.append(lab)
        return lab

    yield make
    problems = []
    for lab in labs:
        if lab.is_up or lab.dir.exists():
            r = lab.down()
            if r.returncode != 0:
                problems.append(f"lab down {lab.name}: {r.stderr.strip()}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def one_cluster(built, tmp_path_factory):
    """one-cluster.yaml up for the whole module, with rebel-base applied."""
    lab = Lab(TOPOLOGIES / "one-cluster.yaml", tmp=tmp_path_factory.mktemp("lab"))
    try:
        lab.up()
        lab.kubectl("cluster1", "apply", "-f", MANIFESTS / "rebel-base.yaml")
        yield lab
    finally:
        if lab.is_up or lab.dir.exists():
            r = lab.down()
            assert r.returncode == 0, f"lab down {lab.name}:\n{r.stderr}"


# --- meshes: connected clusters running the walkthrough's application -----------------------

REBEL_BASE = MANIFESTS / "rebel-base.yaml"
REPLICAS = 2  # of rebel-base and of x-wing in rebel-base.yaml, as in the walkthrough
NETNS_DIR = Path("/run/netns")

# n requests from one pod, each a new connection (so a new source port, a new flow to
# balance): one line per request, the answer or "FAIL <curl's exit status> dns=<s>
# connect=<s>", the times curl's name lookup and TCP connect had finished at (0: they had
# not), which tell a lost DNS answer from a lost connection.
SHOOT = ('i=0; while [ $i -lt {n} ]; do curl -s -m {t} -w "%{{onerror}}FAIL %{{exitcode}} '
         'dns=%{{time_namelookup}}s connect=%{{time_connect}}s" http://{target}/; echo; '
         'i=$((i+1)); done')


class Mesh:
    """A lab of connected clusters, each running rebel-base.yaml, seen as the ClusterMesh
    walkthrough's user sees it: kubectl per context, curl from the x-wing pods (through
    `lab exec`, so with the pod's resolv.conf and the cluster's DNS), and the helpers' CLI
    (`lab helper`)."""

    def __init__(self, lab):
        self.lab = lab
        st = lab.state()
        self.names = [c["name"] for c in st["clusters"]]
        self.ids = {c["name"]: c["id"] for c in st["clusters"]}
        self.cl = {c["name"]: c for c in st["clusters"]}

    # kubectl and the API
    def kubectl(self, cluster, *args, **kw):
        return self.lab.kubectl(cluster, *args, **kw)

    def apply(self):
        for c in self.names:
            self.kubectl(c, "apply", "-f", REBEL_BASE)
        self.wait_replicas({c: REPLICAS for c in self.names})
        for c in self.names:
            self.lab.wait_running(c, REPLICAS, {"name": "x-wing"})

    def wait_replicas(self, want, timeout=60):
        """{cluster: n}: rebel-base pods running, none left terminating."""
        for c, n in want.items():
            if n:
                self.lab.wait_running(c, n, {"name": "rebel-base"}, timeout=timeout)
            wait_for(lambda: len([p for p in self.lab.pods(c)
                                  if p["metadata"].get("labels", {}).get("name") == "rebel-base"]) == n,
                     timeout, what=f"{c}'s rebel-base pods to be {n}, none terminating")

    def running(self, cluster, app):
        """name -> pod IP of the app's pods that run, ready, and are not being deleted."""
        return {p["metadata"]["name"]: p["status"]["podIP"] for p in self.lab.pods(cluster)
                if p["metadata"].get("labels", {}).get("name") == app
                and not p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")}

    def rebels(self, cluster):
        return self.running(cluster, "rebel-base")

    def xwings(self, cluster):
        return sorted(self.running(cluster, "x-wing"))

    def cluster_ip(self, cluster, name="rebel-base"):
        return self.kubectl(cluster, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}").stdout.strip()

    # traffic
    def shoot(self, cluster, n, target="rebel-base", timeout=2, pods=None):
        """{x-wing pod: Counter of answering clusters ("failed": no answer)}: n requests from
        every x-wing pod of cluster (all at once), each a new TCP connection."""
        loop = SHOOT.format(n=n, t=timeout, target=target)
        procs = {pod: subprocess.Popen([sys.executable, LAB, "--lab", self.lab.name, "exec", cluster, pod,
                                        "--", "sh", "-c", loop], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
                 for pod in pods or self.xwings(cluster)}
        out = {}
        for pod, p in procs.items():
            try:
                so, se = p.communicate(timeout=n * (timeout + 1) + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                so, se = p.communicate()
            tally = Counter()
            for line in so.splitlines():
                line = line.strip()
                if not line:
                    continue
                if line.startswith("FAIL"):
                    tally[f"failed(curl exit {line[4:].strip()})"] += 1
                    continue
                try:
                    tally[json.loads(line)["cluster"]] += 1
                except (ValueError, KeyError, TypeError):
                    tally["garbage"] += 1
            if p.returncode != 0 or sum(tally.values()) != n:
                tally["exec-error"] += 1
                print(f"lab exec {cluster} {pod} exited {p.returncode}: {se.strip()[-300:]}")
            out[pod] = tally
        return out

    def answered_by(self, tallies):
        """The clusters that answered, per pod; None for a pod with a request not answered
        (failed: curl's exit status; garbage: not podserve's answer; exec-error)."""
        return {pod: (None if set(t) - set(self.names) else {c for c, k in t.items() if k})
                for pod, t in tallies.items()}

    def expect(self, want, n=24, timeout=40, what="", target="rebel-base"):
        """want: {client cluster: set of clusters that must answer}.  Waits (bounded) until a
        batch of requests from every x-wing pod of each client cluster is answered by exactly
        those clusters, then sends n requests from each pod: every one answered, by exactly
        those clusters — all of them, and no other.  Returns the tallies."""
        last = {}

        def converged():
            for c, clusters in want.items():
                last[c] = self.shoot(c, 8, target)
                if any(v != clusters for v in self.answered_by(last[c]).values()):
                    return False
            return True

        try:
            wait_for(converged, timeout, step=0.5, what=f"{what}: answers from {want}")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast batch: {fmt_tallies(last)}\n{self.diag()}") from None
        final = {c: self.shoot(c, n, target) for c in want}
        for c, clusters in want.items():
            for pod, tally in final[c].items():
                assert self.answered_by({pod: tally})[pod] == clusters and sum(tally.values()) == n, \
                    f"{what}: {n} requests from {c}/{pod}: {dict(tally)}, want every one answered by " \
                    f"{sorted(clusters)} (each of them at least once)\n{fmt_tallies(final)}\n{self.diag()}"
        print(f"{what}: {fmt_tallies(final)}")
        return final

    # the helpers
    def nodes(self, cluster):
        return [n["name"] for n in self.cl[cluster]["nodes"]]

    def node(self, cluster, name):
        return next(n for n in self.cl[cluster]["nodes"] if n["name"] == name)

    def helper(self, cluster, node, *args, check=True):
        r = self.lab.cli("helper", cluster, node, *args, check=False, timeout=20)
        if check and r.returncode != 0:
            said = (r.stderr or r.stdout).strip().splitlines() or [""]
            raise AssertionError(f"causeway-helper {' '.join(args)} on {node} exited {r.returncode}: "
                                 f"{said[0][:300]}")
        return r

    def helper_json(self, cluster, node, *args):
        return json.loads(self.helper(cluster, node, *args, "-o", "json").stdout)

    def services(self, cluster, node):
        """(namespace, name) -> entry of `causeway-helper services -o json`."""
        doc = self.helper_json(cluster, node, "services")
        return {(s["namespace"], s["name"]): s for s in doc["services"]}

    def clusters(self, cluster, node):
        """remote cluster name -> entry of `causeway-helper clusters -o json`."""
        doc = self.helper_json(cluster, node, "clusters")
        if isinstance(doc, dict):
            doc = doc.get("clusters", [])
        return {c["name"]: c for c in doc}

    def status(self, cluster, node):
        return self.helper_json(cluster, node, "status")

    def ipcache(self, cluster, node):
        return {e["prefix"]: (e["identity"], e["tunnel"], e["clusterID"])
                for e in self.helper_json(cluster, node, "ipcache")}

    def tunnels(self, cluster, node):
        return {e["prefix"]: e["node"] for e in self.helper_json(cluster, node, "tunnels")}

    def routes(self, cluster, node):
        """The helper's routes (proto 193) in the node's main table: dst -> (gateway, dev)."""
        r = self.lab.node_exec(cluster, node, "ip", "-j", "route", "show", "table", "main")
        return {x["dst"]: (x.get("gateway"), x.get("dev")) for x in json.loads(r.stdout or "[]")
                if str(x.get("protocol")) == "193"}

    def bpf_map(self, cluster, node, name):
        """A pinned map's entries (bpftool), as sorted (key, value) byte strings."""
        path = Path(self.node(cluster, node)["bpfRoot"]) / name
        out = json.loads(run(["bpftool", "-j", "map", "dump", "pinned", path]).stdout or "[]")
        return sorted((" ".join(e["key"]), " ".join(e["value"])) for e in out if "key" in e)

    def maps(self, cluster, node, lb=True):
        """What a node's datapath holds of the mesh: ipcache, tunnel map, routes and, with lb,
        the service maps exactly as pinned (conntrack excluded: it changes with traffic)."""
        m = {"ipcache": self.ipcache(cluster, node), "tunnels": self.tunnels(cluster, node),
             "routes": self.routes(cluster, node)}
        if lb:
            for name in ("cw_lb4_services", "cw_lb4_backends", "cw_lb4_revnat"):
                m[name] = self.bpf_map(cluster, node, name)
        return m

    def expected_backends(self, ann):
        """cluster -> the (address, cluster) backends its nodes must balance rebel-base over,
        from the running pods and ann ({cluster: {"shared": bool, "affinity": str}}): local
        backends, plus those of every other cluster whose service is shared; affinity local
        keeps the local ones if there are any, remote the remote ones if there are any."""
        out = {}
        for c in self.names:
            local = {(ip, c) for ip in self.rebels(c).values()}
            remote = {(ip, o) for o in self.names if o != c and ann.get(o, {}).get("shared", True)
                      for ip in self.rebels(o).values()}
            aff = ann.get(c, {}).get("affinity", "none")
            if aff == "local":
                out[c] = local or remote
            elif aff == "remote":
                out[c] = remote or local
            else:
                out[c] = local | remote
        return out

    def check_services(self, ann, timeout=15, what=""):
        """Every node's `services -o json` shows rebel-base as global, with the shared flag and
        affinity in force and one frontend (ClusterIP:80/TCP) balancing over exactly the
        backends expected_backends(ann) gives, each named with its cluster and id."""
        problems = {}

        def agree():
            problems.clear()
            want = self.expected_backends(ann)
            for c in self.names:
                ip = self.cluster_ip(c)
                for node in self.nodes(c):
                    try:
                        svc = self.services(c, node).get(("default", "rebel-base"))
                    except (AssertionError, ValueError, KeyError) as e:
                        problems[node] = f"no usable services -o json: {e}"
                        continue
                    a = ann.get(c, {})
                    head = svc and {k: svc.get(k) for k in ("global", "shared", "affinity")}
                    if head != {"global": True, "shared": a.get("shared", True),
                                "affinity": a.get("affinity", "none")}:
                        problems[node] = f"rebel-base is {svc}"
                        continue
                    fes = [(f.get("address"), f.get("port"), f.get("protocol")) for f in svc.get("frontends", [])]
                    if fes != [(ip, 80, "TCP")]:
                        problems[node] = f"frontends {fes}, want [({ip!r}, 80, 'TCP')]"
                        continue
                    bes = svc["frontends"][0].get("backends", [])
                    got = {(b.get("address"), b.get("cluster")) for b in bes}
                    bad = [b for b in bes if b.get("port") != 80 or b.get("clusterID") != self.ids.get(b.get("cluster"))]
                    if got != want[c] or bad or len(bes) != len(got):
                        problems[node] = f"backends {sorted(got)} (entries {bes}), want {sorted(want[c])}"
            return not problems

        try:
            wait_for(agree, timeout, step=0.5, what=f"{what}: every node's services -o json to agree")
        except AssertionError as e:
            raise AssertionError(f"{e}\n" + "\n".join(f"  {n}: {p}" for n, p in problems.items())) from None

    # etcd of a cluster: root (the lab keeps its password), or the read-only remote user
    def etcdctl(self, cluster, *args, user="root", check=True):
        c = self.cl[cluster]
        d = Path(c["etcd"]["dir"])
        who = "remote" if user == "remote" else "local"
        name = {"root": "root", "local": "causeway-local", "remote": "causeway-remote"}[user]
        env = dict(os.environ, ETCDCTL_API="3", ETCDCTL_ENDPOINTS=c["etcd"]["endpoint"],
                   ETCDCTL_CACERT=str(d / "ca.crt"), ETCDCTL_CERT=str(d / f"{who}.crt"),
                   ETCDCTL_KEY=str(d / f"{who}.key"),
                   ETCDCTL_USER=f"{name}:{(d / f'{user}.password').read_text().strip()}",
                   ETCDCTL_DIAL_TIMEOUT="2s", ETCDCTL_COMMAND_TIMEOUT="5s")
        return run(["nsenter", f"--net={NETNS_DIR / c['cp']['netns']}", "etcdctl", *args], check=check,
                   env=env, timeout=20)

    def etcd_keys(self, cluster, prefix):
        out = self.etcdctl(cluster, "get", "--prefix", "--keys-only", prefix, user="remote").stdout
        return [k for k in out.splitlines() if k.strip()]

    def diag(self):
        out = []
        for c in self.names:
            r = self.kubectl(c, "get", "pods,endpointslices", "-o", "wide", check=False)
            out.append(f"--- kubectl --context kind-{c} get pods,endpointslices -o wide\n{r.stdout}{r.stderr}")
            for node in self.nodes(c)[:1]:
                for cmd in ("services", "clusters", "metrics"):
                    r = self.helper(c, node, cmd, check=False)
                    said = r.stdout[-2500:] if r.returncode == 0 else (r.stderr or r.stdout).strip()[:300]
                    out.append(f"--- {node}: causeway-helper {cmd} (exit {r.returncode})\n{said}")
            # A request failed with dns=0s never had its name resolved: the cluster's DNS
            # log shows whether the query arrived and was answered.
            log = self.lab.dir / c / "dnsmasq.log"
            if log.exists():
                with log.open("rb") as f:
                    f.seek(max(0, log.stat().st_size - 3000))
                    tail = f.read().decode(errors="replace").splitlines()[1:]
                out.append(f"--- {c}: dnsmasq.log (tail)\n" + "\n".join(tail[-20:]))
        return "\n".join(out)


def fmt_tallies(t):
    """{client cluster: {pod: Counter}} as 'cluster1 x-wing-…: cluster1=12 cluster2=12'."""
    return "; ".join(f"{c} {pod}: " + " ".join(f"{k}={v}" for k, v in sorted(tally.items()))
                     for c, pods in t.items() for pod, tally in pods.items())


@contextlib.contextmanager
def mesh_lab(topology, tmp):
    """A mesh for a test module: the lab up with @topology, rebel-base.yaml applied in every
    cluster; taken down at the end, which must leave nothing behind."""
    lab = Lab(topology, tmp=tmp)
    try:
        lab.up()
        m = Mesh(lab)
        m.apply()
        yield m
    finally:
        if lab.is_up or lab.dir.exists():
            r = lab.down()
            assert r.returncode == 0, f"lab down {lab.name}:\n{r.stderr}"


@pytest.fixture
def make_mesh(make_lab):
    """A mesh of a test's own: lab up with the topology, rebel-base.yaml applied everywhere."""
    def make(topology, routing=None):
        lab = make_lab(topology, routing)
        lab.up()
        m = Mesh(lab)
        m.apply()
        return m
    return make
