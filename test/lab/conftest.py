"""Fixtures for the lab tests (run as root: /usr/bin/python3 -m pytest -q test/lab/test_lab.py).

Each lab a test makes has a name of its own (t + 6 hex digits) and an
underlay subnet no other lab or route of this machine uses, so the tests
can run beside a lab someone brought up by hand.  Teardown is `lab down`,
which fails when anything with the lab's prefixes is left; the fixture
turns that into a test error.

Tests marked needs_helper check what only a working causeway-helper gives
(pod traffic between nodes); `-m needs_helper` runs just those.
"""

import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
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
