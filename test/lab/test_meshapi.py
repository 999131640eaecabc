"""The mesh-apiserver (causeway-helper mesh-apiserver) publishing global services,
on a lab of one cluster: topologies/one-cluster.yaml with manifests/rebel-base.yaml
applied through the real kubectl.

    /usr/bin/python3 -m pytest -q test/lab/test_meshapi.py

What is checked, in the cluster's mesh etcd (etcdctl, the lab's causeway-local
credentials, from the control plane's namespace):

  record         cilium/state/services/v1/cluster1/default/rebel-base: cluster,
                 clusterID, namespace, name, the ClusterIP frontend, and as
                 backends exactly the ready rebel-base pod IPs
  scaling        kubectl scale changes the backends, both ways
  shared=false   kubectl annotate withdraws the key; removing it brings it back
  not global     a Service without the annotation (or with it "false", or
                 headless) is never written, not even briefly (etcd history)
  alias          io.cilium/global-service publishes too
  deletion       kubectl delete of the Service, or of its namespace, withdraws it
  canaries       cilium/synced/cluster1/cilium/state/{services,nodes,ip,identities}/v1,
                 each an RFC 3339 time as Cilium writes it
  restart        a stale key planted under cluster1's prefix and a wrong value of
                 a live one survive while the mesh-apiserver runs and are fixed by
                 its restart; another cluster's keys are never touched; a
                 restart with nothing to change writes no record
  etcd down      changes made while etcd is stopped are all published once it is
                 back (the writes are retried with backoff)

The module shares one lab; each test leaves rebel-base as it found it.
"""

import base64
import importlib.util
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml


def _conftest():
    """This directory's conftest, by path (test_lab.py explains why)."""
    spec = importlib.util.spec_from_file_location("causeway_lab_conftest_meshapi",
                                                  Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_c = _conftest()
Lab, TOPOLOGIES, MANIFESTS, ROOT, run = _c.Lab, _c.TOPOLOGIES, _c.MANIFESTS, _c.ROOT, _c.run

TOPO = TOPOLOGIES / "one-cluster.yaml"
FIXTURE = ROOT / "test" / "etcd" / "fixture"
NETNS_DIR = Path("/run/netns")
CLUSTER = "cluster1"
CLUSTER_ID = 1
PREFIX = f"cilium/state/services/v1/{CLUSTER}/"
REBEL_KEY = PREFIX + "default/rebel-base"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


def wait_until(pred, timeout, what, step=0.2, diag=None):
    """pred() until truthy (returned), else an AssertionError naming what, with diag()."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            msg = f"timed out after {timeout}s waiting for {what}"
            if diag:
                msg += "\n" + diag()
            raise AssertionError(msg)
        time.sleep(step)


class MLab:
    def __init__(self, lab):
        self.lab = lab
        st = lab.state()
        self.c = st["clusters"][0]
        self.cp = self.c["cp"]["netns"]
        self.etcd_dir = self.c["etcd"]["dir"]
        cfg = yaml.safe_load(Path(self.c["nodes"][0]["etcdConfig"]).read_text())
        self.etcd_env = dict(os.environ, ETCDCTL_API="3", ETCDCTL_ENDPOINTS=",".join(cfg["endpoints"]),
                             ETCDCTL_CACERT=cfg["trusted-ca-file"], ETCDCTL_CERT=cfg["cert-file"],
                             ETCDCTL_KEY=cfg["key-file"],
                             ETCDCTL_USER=f"{cfg['username']}:{cfg['password']}",
                             ETCDCTL_DIAL_TIMEOUT="2s", ETCDCTL_COMMAND_TIMEOUT="5s")

    # etcd
    def etcdctl(self, *args, check=True, timeout=20):
        return run(["nsenter", f"--net={NETNS_DIR / self.cp}", "etcdctl", *args], check=check,
                   timeout=timeout, env=self.etcd_env)

    def etcd_get(self, prefix):
        """key -> value under prefix."""
        doc = json.loads(self.etcdctl("get", "--prefix", prefix, "-w", "json").stdout)
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in doc.get("kvs") or []}

    def record(self, key=REBEL_KEY):
        v = self.etcd_get(key).get(key)
        return json.loads(v) if v is not None else None

    def revision(self):
        return json.loads(self.etcdctl("get", "--prefix", "cilium/", "--limit", "1", "-w", "json").stdout
                          )["header"]["revision"]

    def history(self, prefix, since_rev, listen=1.0):
        """(type, key) of every event under prefix from since_rev on."""
        p = subprocess.run(["timeout", "-s", "INT", str(listen), "nsenter", f"--net={NETNS_DIR / self.cp}",
                            "etcdctl", "watch", "--prefix", prefix, "--rev", str(since_rev), "-w", "json"],
                           capture_output=True, text=True, env=self.etcd_env, timeout=listen + 10)
        out = []
        for line in p.stdout.splitlines():
            if line.strip().startswith("{"):
                for ev in json.loads(line).get("Events") or []:
                    out.append(("DELETE" if ev.get("type") == 1 else "PUT",
                                base64.b64decode(ev["kv"]["key"]).decode()))
        return out

    # kubernetes
    def kubectl(self, *args, **kw):
        return self.lab.kubectl(CLUSTER, *args, **kw)

    def apply(self, doc):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(doc, f)
            f.flush()
            self.kubectl("apply", "-f", f.name)

    def cluster_ip(self, name="rebel-base", namespace="default"):
        return json.loads(self.kubectl("get", "service", name, "-n", namespace, "-o", "json").stdout
                          )["spec"]["clusterIP"]

    def ready_ips(self, selector="rebel-base"):
        """IPs of the pods name=selector that are Ready and not being deleted."""
        pods = json.loads(self.kubectl("get", "pods", "-l", f"name={selector}", "-o", "json").stdout)["items"]
        return sorted(p["status"]["podIP"] for p in pods
                      if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP")
                      and any(c["type"] == "Ready" and c["status"] == "True"
                              for c in p["status"].get("conditions") or []))

    # the mesh-apiserver
    def proc(self):
        return next(r for r in self.lab.state()["procs"] if r["role"] == "mesh-apiserver")

    def log_tail(self, n=20):
        argv = self.proc()["argv"]
        log = Path(argv[argv.index("--log-file") + 1])
        try:
            return "mesh-apiserver.log (tail):\n" + "\n".join(
                "  " + l for l in log.read_text(errors="replace").splitlines()[-n:])
        except OSError as e:
            return f"mesh-apiserver.log: {e}"

    def pids(self):
        """Running mesh-apiserver processes of this lab."""
        needle = str(self.proc()["argv"][self.proc()["argv"].index("--etcd-config") + 1]).encode()
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if needle in cmd and b"mesh-apiserver" in cmd:
                    out.append(int(p.name))
        return out

    def restart_meshapi(self, argv=None):
        """SIGTERM, wait for it to go, start it again with the command line `lab up` used
        (or @argv)."""
        rec = self.proc()
        for pid in self.pids():
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not self.pids(), 10, "the mesh-apiserver to exit")
        with open(rec["log"], "ab") as out:
            subprocess.Popen(argv or rec["argv"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True, close_fds=True)
        wait_until(lambda: self.pids(), 5, "the mesh-apiserver to start")


def backends(rec):
    return sorted(rec["backends"])


def published_with(m, ips, timeout=45):
    """The rebel-base record once its backends are exactly ips (each serving port 80)."""
    def probe():
        rec = m.record()
        return rec if rec and backends(rec) == ips else None
    rec = wait_until(probe, timeout, f"{REBEL_KEY} with backends {ips}",
                     diag=lambda: f"record now: {m.record()}\n{m.log_tail()}")
    for ip in ips:
        assert rec["backends"][ip] == {"": {"Protocol": "TCP", "Port": 80}}, rec
    return rec


def settled_ready(m, count, timeout=60):
    """The ready rebel-base IPs once there are count of them."""
    return wait_until(lambda: (lambda ips: ips if len(ips) == count else None)(m.ready_ips()),
                      timeout, f"{count} ready rebel-base pods")


@pytest.fixture(scope="module")
def m(built, tmp_path_factory):
    lab = Lab(TOPO, tmp=tmp_path_factory.mktemp("meshapilab"))
    try:
        lab.up()
        ml = MLab(lab)
        lab.kubectl(CLUSTER, "apply", "-f", MANIFESTS / "rebel-base.yaml")
        ml.replicas = json.loads(lab.kubectl(CLUSTER, "get", "deployment", "rebel-base", "-o", "json").stdout
                                 )["spec"]["replicas"]
        yield ml
    finally:
        if lab.is_up or lab.dir.exists():
            r = lab.down()
            assert r.returncode == 0, f"lab down {lab.name}:\n{r.stderr}"


def test_global_service_record(m):
    ips = settled_ready(m, m.replicas)
    rec = published_with(m, ips)
    assert rec["cluster"] == CLUSTER
    assert rec["clusterID"] == CLUSTER_ID
    assert rec["namespace"] == "default" and rec["name"] == "rebel-base"
    assert rec["frontends"] == {m.cluster_ip(): {"": {"Protocol": "TCP", "Port": 80}}}, rec
    assert rec["shared"] is True and rec["includeExternal"] is True, rec
    # the only record under the cluster's prefix is the one global Service of the cluster
    assert list(m.etcd_get(PREFIX)) == [REBEL_KEY]


def test_scaling_changes_backends(m):
    try:
        m.kubectl("scale", "deployment", "rebel-base", f"--replicas={m.replicas + 1}")
        published_with(m, settled_ready(m, m.replicas + 1))
        m.kubectl("scale", "deployment", "rebel-base", "--replicas=1")
        published_with(m, settled_ready(m, 1))
    finally:
        m.kubectl("scale", "deployment", "rebel-base", f"--replicas={m.replicas}")
    published_with(m, settled_ready(m, m.replicas))


def test_shared_false_withdraws(m):
    ips = settled_ready(m, m.replicas)
    published_with(m, ips)
    try:
        m.kubectl("annotate", "service", "rebel-base", "service.cilium.io/shared=false", "--overwrite")
        wait_until(lambda: m.record() is None, 20, f"{REBEL_KEY} withdrawn after shared=false",
                   diag=m.log_tail)
    finally:
        m.kubectl("annotate", "service", "rebel-base", "service.cilium.io/shared-")
    published_with(m, ips, timeout=20)


def test_not_global_never_published(m):
    rev = m.revision() + 1
    base = {"apiVersion": "v1", "kind": "Service",
            "spec": {"type": "ClusterIP", "ports": [{"port": 80}], "selector": {"name": "rebel-base"}}}
    plain = dict(base, metadata={"name": "plain"})
    off = dict(base, metadata={"name": "off", "annotations": {"service.cilium.io/global": "false",
                                                              "io.cilium/global-service": "true"}})
    headless = dict(base, metadata={"name": "headless", "annotations": {"service.cilium.io/global": "true"}},
                    spec=dict(base["spec"], clusterIP="None"))
    alias = dict(base, metadata={"name": "alias", "annotations": {"io.cilium/global-service": "true"}})
    try:
        for doc in (plain, off, headless):
            m.apply(doc)
        # created after the others: once it is published, they have all been seen
        m.apply(alias)
        published = wait_until(lambda: m.record(PREFIX + "default/alias"), 30,
                               "the Service annotated with the alias io.cilium/global-service",
                               diag=m.log_tail)
        assert sorted(published["backends"]) == m.ready_ips()
        events = m.history(PREFIX, rev)
        written = {k for t, k in events if t == "PUT"}
        assert written == {PREFIX + "default/alias"}, f"written since the Services were made: {events}"
    finally:
        m.kubectl("delete", "service", "plain", "off", "headless", "alias", "--ignore-not-found")
    wait_until(lambda: m.record(PREFIX + "default/alias") is None, 20, "alias withdrawn")


def test_delete_withdraws(m):
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "ephemeral", "annotations": {"service.cilium.io/global": "true"}},
           "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 80}],
                    "selector": {"name": "rebel-base"}}}
    m.apply(svc)
    key = PREFIX + "default/ephemeral"
    rec = wait_until(lambda: m.record(key), 30, f"{key} published", diag=m.log_tail)
    assert rec["frontends"] == {m.cluster_ip("ephemeral"): {"http": {"Protocol": "TCP", "Port": 8080}}}
    m.kubectl("delete", "service", "ephemeral")
    wait_until(lambda: m.record(key) is None, 20, f"{key} withdrawn after kubectl delete", diag=m.log_tail)
    assert m.record() is not None, "rebel-base went with it"

    # a namespace's deletion takes its global services out of the mesh
    m.kubectl("create", "namespace", "outpost")
    m.apply(dict(svc, metadata=dict(svc["metadata"], namespace="outpost")))
    key = PREFIX + "outpost/ephemeral"
    wait_until(lambda: m.record(key), 30, f"{key} published", diag=m.log_tail)
    m.kubectl("delete", "namespace", "outpost", "--wait=false")
    wait_until(lambda: m.record(key) is None, 30, f"{key} withdrawn after its namespace's deletion",
               diag=m.log_tail)


def test_synced_canaries(m):
    want = {f"cilium/synced/{CLUSTER}/cilium/state/{k}/v1" for k in ("services", "nodes", "ip", "identities")}
    got = wait_until(lambda: (lambda g: g if set(g) == want else None)(m.etcd_get(f"cilium/synced/{CLUSTER}/")),
                     30, f"the synced canaries {sorted(want)}",
                     diag=lambda: f"now: {sorted(m.etcd_get('cilium/synced/'))}\n{m.log_tail()}")
    for k, v in got.items():
        assert RFC3339.match(v), f"{k} = {v!r} is not an RFC 3339 time"


def test_stale_keys_removed_on_restart(m):
    ips = settled_ready(m, m.replicas)
    good = published_with(m, ips)
    stale = PREFIX + "default/gone-before-restart"
    theirs = "cilium/state/services/v1/cluster2/default/rebel-base"
    bogus = dict(good, backends={"10.10.99.99": {"": {"Protocol": "TCP", "Port": 80}}})
    m.etcdctl("put", stale, json.dumps(dict(good, name="gone-before-restart")))
    m.etcdctl("put", theirs, json.dumps(dict(good, cluster="cluster2", clusterID=2)))
    m.etcdctl("put", REBEL_KEY, json.dumps(bogus))
    try:
        # the running one does not watch etcd: what was planted stays until it restarts
        time.sleep(2)
        assert stale in m.etcd_get(stale) and m.record() == bogus
        m.restart_meshapi()
        wait_until(lambda: stale not in m.etcd_get(stale), 30, f"{stale} removed after the restart",
                   diag=m.log_tail)
        published_with(m, ips, timeout=20)
        assert theirs in m.etcd_get(theirs), "another cluster's record was touched"
        assert set(m.etcd_get(PREFIX)) == {REBEL_KEY}

        # restarted with nothing to change, it writes no record, only its canary again
        rev = m.revision() + 1
        canary = f"cilium/synced/{CLUSTER}/cilium/state/services/v1"
        m.restart_meshapi()
        wait_until(lambda: ("PUT", canary) in m.history(canary, rev), 30,
                   "the services canary written by the restarted mesh-apiserver", diag=m.log_tail)
        assert m.history(PREFIX, rev) == [], "records rewritten although nothing changed"
    finally:
        m.etcdctl("del", theirs, check=False)
        m.etcdctl("del", stale, check=False)


def test_etcd_down_nothing_lost(m):
    ips = settled_ready(m, m.replicas)
    published_with(m, ips)
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "late", "annotations": {"service.cilium.io/global": "true"}},
           "spec": {"ports": [{"port": 80}], "selector": {"name": "rebel-base"}}}
    run([FIXTURE, "stop", m.etcd_dir], timeout=60)
    try:
        m.apply(svc)
        m.kubectl("scale", "deployment", "rebel-base", f"--replicas={m.replicas + 1}")
        more = settled_ready(m, m.replicas + 1)
        time.sleep(3)  # a few failed attempts
    finally:
        run([FIXTURE, "restart", m.etcd_dir], timeout=60)
    try:
        published_with(m, more, timeout=60)
        late = wait_until(lambda: m.record(PREFIX + "default/late"), 60, "the Service made while etcd was down",
                          diag=m.log_tail)
        assert sorted(late["backends"]) == more
    finally:
        m.kubectl("delete", "service", "late", "--ignore-not-found")
        m.kubectl("scale", "deployment", "rebel-base", f"--replicas={m.replicas}")
    published_with(m, settled_ready(m, m.replicas))
    wait_until(lambda: m.record(PREFIX + "default/late") is None, 30, "late withdrawn")


ID_PREFIX = "cilium/state/identities/v1/id/"
VALUE_PREFIX = "cilium/state/identities/v1/value/"


def test_identity_gc(m):
    """The mesh-apiserver's identity garbage collection (here every second, --identity-gc 1):
    an id/ key of this cluster that no value/ reference names is removed once two scans in a
    row found it so; one that a reference names stays, and so does another cluster's.  The
    scan's listings and deletes run on the loop (cw_kv_req_list)."""
    argv = list(m.proc()["argv"])
    orphan, kept, theirs = 65536 + 60001, 65536 + 60002, 2 * 65536 + 60003
    labels = {orphan: "k8s:app=gc-orphan;", kept: "k8s:app=gc-kept;", theirs: "k8s:app=gc-theirs;"}
    ref = VALUE_PREFIX + labels[kept] + "/somenode"
    try:
        for i, l in labels.items():
            m.etcdctl("put", ID_PREFIX + str(i), l)
        m.etcdctl("put", ref, str(kept))
        m.restart_meshapi(argv + ["--identity-gc", "1"])
        wait_until(lambda: ID_PREFIX + str(orphan) not in m.etcd_get(ID_PREFIX), 15,
                   "the unreferenced identity removed", diag=m.log_tail)
        time.sleep(3)  # three more scans
        left = m.etcd_get(ID_PREFIX)
        assert ID_PREFIX + str(kept) in left, f"a referenced identity was removed: {sorted(left)}"
        assert ID_PREFIX + str(theirs) in left, f"another cluster's identity was removed: {sorted(left)}"
    finally:
        m.restart_meshapi(argv)
        for k in [ID_PREFIX + str(i) for i in labels] + [ref]:
            m.etcdctl("del", k, check=False)

