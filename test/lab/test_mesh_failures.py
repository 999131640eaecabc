"""ClusterMesh under failure and bad input (issue 4, "Failure and bad input"), on the
walkthrough's two clusters with a short --remote-eviction-timeout
(topologies/two-clusters-eviction.yaml, 10 s), rebel-base.yaml applied to both:

    /usr/bin/python3 -m pytest -q test/lab/test_mesh_failures.py

  healthy remote    connected for longer than the eviction timeout: never evicted
  etcd outage       cluster2's etcd stopped (test/etcd/fixture stop): cluster1 keeps
                    cluster2's state and its requests keep reaching cluster2 until the
                    timeout, `clusters -o json` counting the deadline down; then cluster2
                    is evicted (no route, endpoint or backend of it left) and cluster1's
                    requests stay home; etcd back, everything as before, nothing stale
  frozen etcd       cluster2's etcd SIGSTOPped (streams stay open, nothing answers):
                    the helper's periodic read notices within two 5 s probes, evicts at
                    the timeout, takes cluster2 back when it answers again
  short outage      cluster2 changes (scaled down) while its etcd is down for less than
                    the timeout: once back, cluster1 has exactly cluster2's new state,
                    and never dropped what was still valid meanwhile
  hostile remote    cluster2's etcd written as root (the lab keeps the root password in
                    <state>/cluster2/etcd/root.password): records out of cluster2's
                    identity range, claiming cluster1's name or id, unparsable, or a
                    cluster1 pod's IP; cluster1's maps and services do not move, the
                    invalid-records counter and the log say why, a valid record after
                    them still arrives
  helper SIGKILL    a cluster1 helper killed (`lab restart-helper --kill`) under long
                    keep-alive connections through the service: every connection keeps
                    its backend and loses nothing, the maps are the same afterwards

Everything that involves the global service fails until the node role load-balances
services and the mesh-apiserver publishes them.  The module shares one lab; each test
starts from the walkthrough's starting point and leaves etcd running.
"""

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml


def _conftest():
    """This directory's conftest, by path (test_lab.py explains why)."""
    spec = importlib.util.spec_from_file_location("causeway_lab_conftest_mesh_failures",
                                                  Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_c = _conftest()
TOPOLOGIES, REPLICAS, ROOT, run, wait_for = (
    _c.TOPOLOGIES, _c.REPLICAS, _c.ROOT, _c.run, _c.wait_for)

TOPO = TOPOLOGIES / "two-clusters-eviction.yaml"
EVICT = yaml.safe_load(TOPO.read_text())["clusters"][0]["remoteEvictionTimeout"]
FIXTURE = ROOT / "test" / "etcd" / "fixture"
C1, C2 = "cluster1", "cluster2"
BOTH = {C1, C2}
K_IPS = "cilium/state/ip/v1/default/"
K_ID = "cilium/state/identities/v1/id/"
K_NODES = "cilium/state/nodes/v1/"
K_SVCS = "cilium/state/services/v1/"


@pytest.fixture(scope="module")
def mesh(built, tmp_path_factory):
    with _c.mesh_lab(TOPO, tmp_path_factory.mktemp("meshfail")) as m:
        yield m


def start(m):
    """The walkthrough's starting point, with cluster2's etcd up and every pod of both
    clusters in every cluster1 node's ipcache, with its cluster's id."""
    etcd_up(m)
    for c in m.names:
        m.kubectl(c, "annotate", "service", "rebel-base", "service.cilium.io/shared-",
                  "service.cilium.io/affinity-")
        m.kubectl(c, "scale", "deployment", "rebel-base", f"--replicas={REPLICAS}")
    m.wait_replicas({c: REPLICAS for c in m.names})
    missing = {}

    def settled():
        missing.clear()
        want = {f"{ip}/32": m.ids[c] for c in m.names for ip in remote_pod_ips(m, c)}
        for node in m.nodes(C1):
            ipc = m.ipcache(C1, node)
            bad = sorted(k for k, cid in want.items() if ipc.get(k, (0, 0, 0))[2] != cid)
            if bad:
                missing[node] = bad
        return not missing

    try:
        wait_for(settled, 20, step=0.3, what="every pod of both clusters in every cluster1 ipcache")
    except AssertionError as e:
        raise AssertionError(f"starting point: {e}: missing or wrong {missing}") from None


def etcd_dir(m, cluster):
    return m.cl[cluster]["etcd"]["dir"]


def etcd_up(m, cluster=C2):
    if m.etcdctl(cluster, "endpoint", "health", check=False).returncode != 0:
        run([FIXTURE, "restart", etcd_dir(m, cluster)], timeout=60)


def remote_pod_ips(m, cluster=C2):
    return {p["status"]["podIP"] for p in m.lab.pods(cluster)
            if p.get("status", {}).get("podIP") and not p["metadata"].get("deletionTimestamp")}


def podcidrs(m, cluster):
    return {n["podCIDR"] for n in m.cl[cluster]["nodes"]}


def snapshot(m, cluster=C1, svc=True):
    """Every node of cluster: its maps (conftest Mesh.maps: ipcache, tunnel map, routes,
    service maps) and, with svc, its rebel-base entry of services -o json."""
    out = {}
    for node in m.nodes(cluster):
        out[node] = m.maps(cluster, node)
        if svc:
            out[node]["rebel-base"] = m.services(cluster, node).get(("default", "rebel-base"))
    return out


def evicted(m, node, cluster=C1, remote=C2, svc=True):
    """node shows nothing of the remote: no ipcache entry, tunnel or route to its pods and,
    with svc, no backend of it in rebel-base."""
    ips = {f"{ip}/32" for ip in remote_pod_ips(m, remote)}
    cidrs = podcidrs(m, remote)
    if ips & set(m.ipcache(cluster, node)) or cidrs & set(m.tunnels(cluster, node)) \
            or cidrs & set(m.routes(cluster, node)):
        return False
    if not svc:
        return True
    entry = m.services(cluster, node).get(("default", "rebel-base")) or {}
    return remote not in {b.get("cluster") for f in entry.get("frontends", []) for b in f.get("backends", [])}


def by_ip(m, src=C1, dst=C2):
    """{x-wing pod of src: {rebel-base pod of dst: its answer's pod name, or None}}: curl by IP."""
    out = {}
    for pod in m.xwings(src):
        out[pod] = {}
        for name, ip in m.rebels(dst).items():
            r = m.lab.exec(src, pod, "curl", "-sS", "-m", "2", f"http://{ip}/", check=False)
            try:
                out[pod][name] = json.loads(r.stdout)["pod"]
            except (ValueError, KeyError, TypeError):
                out[pod][name] = None
    return out


def outage_start(m):
    t0 = time.monotonic()
    run([FIXTURE, "stop", etcd_dir(m, C2)], timeout=60)
    return t0


def resync(m, before, svc):
    """etcd of cluster2 restarted: wait until every cluster1 node's snapshot is before's and
    cluster2 is connected with no eviction deadline."""
    diff = {}

    def same():
        diff.clear()
        now = snapshot(m, svc=svc)
        for node in m.nodes(C1):
            e = remote_entry(m, node)
            if now[node] != before[node] or e.get("state") != "connected" or e.get("evictionDeadline") is not None:
                diff[node] = (now[node], {k: v for k, v in e.items() if k != "kvstore"})
        return not diff

    try:
        wait_for(same, 30, step=0.3, what="cluster1's maps as before the outage")
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(f"  {n}: before {before[n]}\n  {n}: now    {d}"
                                                   for n, d in diff.items())) from None


def timed_status(m, node, cluster=C1):
    """Seconds a `causeway-helper status` of node took, through the lab's CLI."""
    t = time.monotonic()
    m.status(cluster, node)
    return time.monotonic() - t


def remote_entry(m, node, cluster=C1, remote=C2):
    return m.clusters(cluster, node).get(remote) or {}


def invalid_records(m, cluster=C1):
    return {node: m.status(cluster, node)["counters"]["invalidRecords"] for node in m.nodes(cluster)}


# --- a healthy remote ------------------------------------------------------------------------

def test_healthy_remote_is_never_evicted(mesh):
    """For longer than the eviction timeout (and whatever the age of its heartbeat, which
    the mesh-apiserver rewrites once a minute): cluster2 stays connected on every cluster1
    node, its pods and PodCIDRs stay in the maps, no eviction deadline runs."""
    m = mesh
    start(m)
    t0 = time.monotonic()
    ips = {f"{ip}/32" for ip in remote_pod_ips(m)}
    samples = 0
    while time.monotonic() - t0 < EVICT + 3:
        for node in m.nodes(C1):
            e = remote_entry(m, node)
            assert e.get("state") == "connected" and e.get("evictionDeadline") is None \
                and not e.get("evicted"), \
                f"{time.monotonic() - t0:.1f}s: {node} sees cluster2 as " \
                f"{ {k: v for k, v in e.items() if k != 'kvstore'} }"
            assert ips <= set(m.ipcache(C1, node)) and podcidrs(m, C2) <= set(m.tunnels(C1, node)), \
                f"{time.monotonic() - t0:.1f}s: {node} dropped cluster2's pods or PodCIDRs"
        samples += 1
        time.sleep(0.5)
    for node in m.nodes(C1):
        e = remote_entry(m, node)
        assert "evictionDeadline" in e and e["evictionDeadline"] is None, \
            f"{node}: clusters -o json lacks evictionDeadline (null while connected): {sorted(e)}"
    print(f"{samples} samples over {EVICT + 3} s: cluster2 connected throughout")


# --- cluster2's etcd down ---------------------------------------------------------------------

def test_remote_etcd_down_keeps_state_until_eviction(mesh):
    """cluster2's etcd stopped: until the eviction timeout cluster1's maps do not move, its
    pods reach cluster2's by IP, and `clusters -o json` shows cluster2 disconnected with an
    evictionDeadline counting down from the timeout; at the timeout (not before) cluster2's
    ipcache entries, tunnels and routes leave every cluster1 node.  etcd started again:
    the maps are exactly as before the outage, nothing stale, nothing missing."""
    m = mesh
    start(m)
    wait_for(lambda: all({f"{ip}/32" for ip in remote_pod_ips(m)} <= set(m.ipcache(C1, n)) for n in m.nodes(C1)),
             20, what="cluster2's pods in every cluster1 ipcache")
    before = snapshot(m, svc=False)
    t0 = outage_start(m)
    try:
        deadlines = {n: [] for n in m.nodes(C1)}
        shown = {n: set() for n in m.nodes(C1)}
        reached = []
        while time.monotonic() - t0 < EVICT - 2:
            now = snapshot(m, svc=False)
            for node in m.nodes(C1):
                e = remote_entry(m, node)
                d = e.get("evictionDeadline")
                if isinstance(d, (int, float)) and not isinstance(d, bool):
                    deadlines[node].append((round(time.monotonic() - t0, 1), d))
                    shown[node].add((e.get("state"), e.get("unhealthy") or e.get("reason")))
                assert now[node] == before[node], \
                    f"{time.monotonic() - t0:.1f}s into the outage, {node}'s maps changed:\n" \
                    f"before {before[node]}\nnow    {now[node]}"
            if time.monotonic() - t0 < EVICT - 3:
                answers = by_ip(m)
                assert all(a == n for v in answers.values() for n, a in v.items()), \
                    f"{time.monotonic() - t0:.1f}s into the outage, cluster1 -> cluster2 by IP: {answers}"
                reached.append(round(time.monotonic() - t0, 1))
        assert reached, "no traffic check ran during the outage"
        for node, ds in deadlines.items():
            assert ds, f"{node}: clusters -o json never showed an evictionDeadline for cluster2"
            vals = [d for _, d in ds]
            assert all(0 < d <= EVICT for d in vals) and vals == sorted(vals, reverse=True) and vals[0] > vals[-1], \
                f"{node}: evictionDeadline (s into the outage, value): {ds}"
            assert all(why for _, why in shown[node]), f"{node}: a deadline without a reason: {shown[node]}"
        print(f"pods reached by IP at {reached} s; deadlines {deadlines}; shown as {shown}")
        wait_for(lambda: all(evicted(m, n, svc=False) for n in m.nodes(C1)), EVICT + 8, step=0.2,
                 what="cluster2's entries, tunnels and routes to leave every cluster1 node")
        took = time.monotonic() - t0
        assert took >= EVICT - 0.5, f"cluster2 evicted {took:.1f}s after its etcd stopped (timeout {EVICT}s)"
        print(f"cluster2 evicted {took:.1f}s after its etcd stopped")
        for node in m.nodes(C1):
            e = remote_entry(m, node)
            assert e.get("evictionDeadline") in (None, 0) and e.get("unhealthy"), \
                f"{node}: after eviction, clusters -o json says {e}"
            shown[node].add((e.get("state"), e.get("unhealthy")))
            assert podcidrs(m, C1) - {m.node(C1, node)["podCIDR"]} <= set(m.tunnels(C1, node)), \
                f"{node}: the eviction of cluster2 took cluster1's own tunnels"
    finally:
        run([FIXTURE, "restart", etcd_dir(m, C2)], timeout=60)
    resync(m, before, svc=False)
    answers = by_ip(m)
    assert all(a == n for v in answers.values() for n, a in v.items()), f"after the resync, by IP: {answers}"
    # "connected or not and why" (the issue): not connected while its etcd was down
    for node, states in shown.items():
        assert all(st != "connected" for st, _ in states), \
            f"{node}: clusters -o json called cluster2 {sorted(states)} while its etcd was down and its " \
            "eviction deadline ran: it was not connected"


def etcd_pid(m, cluster=C2):
    env = dict(line.split("=", 1) for line in
               (Path(etcd_dir(m, cluster)) / "env").read_text().split() if "=" in line)
    return int(env["ETCD_PID"])


def test_remote_etcd_hung_is_noticed_and_evicted(mesh):
    """cluster2's etcd frozen (SIGSTOP): it still accepts connections and its watch streams
    stay open and silent, so only the helper's periodic read of the store (5 s apart, 5 s to
    answer) can tell.  cluster1 shows cluster2 unhealthy, "etcd does not answer", within two
    probe periods, with the eviction deadline running; evicts it at the timeout, not
    before; and once etcd answers again (SIGCONT) everything is as before.  Without the probe
    only the heartbeat would age, after 120 s."""
    m = mesh
    start(m)
    wait_for(lambda: all({f"{ip}/32" for ip in remote_pod_ips(m)} <= set(m.ipcache(C1, n)) for n in m.nodes(C1)),
             20, what="cluster2's pods in every cluster1 ipcache")
    before = snapshot(m, svc=False)
    pid = etcd_pid(m)
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        def noticed():
            return all("does not answer" in (remote_entry(m, n).get("unhealthy") or "") and
                       remote_entry(m, n).get("evictionDeadline") is not None for n in m.nodes(C1))
        wait_for(noticed, 2 * 5 + 3, step=0.3, what="cluster1 to see cluster2's etcd not answering")
        seen = time.monotonic() - t0
        # A helper that starts now must connect to the frozen etcd (its cluster-config read
        # first): that waits on the loop, so its socket keeps answering.  Each `status` goes
        # through the lab's CLI, whose own start-up is in the figure; a blocking read held
        # the socket for its 2 s timeout per attempt.
        node = m.nodes(C1)[0]
        quick = max(timed_status(m, node) for _ in range(3))
        m.lab.cli("restart-helper", C1, node)
        worst, end = 0.0, time.monotonic() + 8
        while time.monotonic() < end:
            worst = max(worst, timed_status(m, node))
        print(f"restarted helper's status while the remote etcd was frozen: worst {worst:.2f}s "
              f"(before: {quick:.2f}s)")
        assert worst < quick + 1.0, \
            f"a status answer took {worst:.2f}s while connecting to a frozen etcd (usually {quick:.2f}s)"
        assert remote_entry(m, node).get("state") == "connecting", remote_entry(m, node)
        wait_for(lambda: all(evicted(m, n, svc=False) for n in m.nodes(C1)), EVICT + 15, step=0.2,
                 what="cluster2's entries, tunnels and routes to leave every cluster1 node")
        took = time.monotonic() - t0
        assert took >= EVICT - 0.5, f"cluster2 evicted {took:.1f}s after its etcd froze (timeout {EVICT}s)"
        print(f"frozen etcd noticed after {seen:.1f}s, cluster2 evicted after {took:.1f}s")
    finally:
        os.kill(pid, signal.SIGCONT)
    resync(m, before, svc=False)


def test_remote_etcd_down_service_fails_over_at_eviction(mesh):
    """The same outage, seen through the global service: until the timeout every request
    from cluster1 to rebel-base is answered, cluster2 among them, and the service maps do
    not move; once cluster2 is evicted its backends leave rebel-base on every cluster1 node
    and cluster1 answers all of cluster1's requests; etcd back, rebel-base is as before
    and both clusters answer again."""
    m = mesh
    start(m)
    m.expect({C1: BOTH}, what="before the outage")
    m.check_services({}, what="before the outage")
    before = snapshot(m)
    t0 = outage_start(m)
    try:
        answered = {}
        while time.monotonic() - t0 < EVICT - 2:
            for pod, tally in m.shoot(C1, 6).items():
                assert m.answered_by({pod: tally})[pod] is not None, \
                    f"{time.monotonic() - t0:.1f}s into the outage, a request from {pod} went unanswered: " \
                    f"{dict(tally)}"
                answered.setdefault(pod, set()).update(k for k, v in tally.items() if v)
            now = snapshot(m)
            assert now == before, f"{time.monotonic() - t0:.1f}s into the outage, maps or services changed:\n" \
                                  f"before {before}\nnow    {now}"
        assert answered and all(v == BOTH for v in answered.values()), \
            f"during the outage, before the timeout, requests from cluster1 were answered by {answered}"
        print(f"during the outage: answered by {answered}")
        wait_for(lambda: all(evicted(m, n) for n in m.nodes(C1)), EVICT + 8, step=0.2,
                 what="cluster2's backends to leave rebel-base on every cluster1 node")
        assert time.monotonic() - t0 >= EVICT - 0.5
        m.expect({C1: {C1}}, what="after eviction")
    finally:
        run([FIXTURE, "restart", etcd_dir(m, C2)], timeout=60)
    resync(m, before, svc=True)
    m.expect({C1: BOTH, C2: BOTH}, what="etcd back")


def test_short_outage_resyncs_without_stale_entries(mesh):
    """cluster2's etcd down for less than the timeout while cluster2 scales rebel-base to 1:
    once it is back, every cluster1 node has cluster2's new state exactly (the pod that went
    is in no ipcache and no service), and what stayed valid was never withdrawn meanwhile
    (the resync waits for the synced canaries before deleting anything)."""
    m = mesh
    start(m)
    wait_for(lambda: all({f"{ip}/32" for ip in remote_pod_ips(m)} <= set(m.ipcache(C1, n)) for n in m.nodes(C1)),
             20, what="cluster2's pods in every cluster1 ipcache")
    stayed = set()
    t0 = outage_start(m)
    try:
        old = m.rebels(C2)
        m.kubectl(C2, "scale", "deployment", "rebel-base", "--replicas=1")
        m.wait_replicas({C2: 1}, timeout=EVICT)
        gone = set(old.values()) - set(m.rebels(C2).values())
        stayed = remote_pod_ips(m) - gone
        assert len(gone) == 1, (old, m.rebels(C2))
    finally:
        run([FIXTURE, "restart", etcd_dir(m, C2)], timeout=60)
    outage = time.monotonic() - t0
    assert outage < EVICT - 1, f"the outage took {outage:.1f}s, too close to the {EVICT}s timeout to test a resync"
    samples = 0

    def current():
        nonlocal samples
        ok = True
        for node in m.nodes(C1):
            ipc = set(m.ipcache(C1, node))
            samples += 1
            lost = {f"{ip}/32" for ip in stayed} - ipc
            assert not lost, f"{node} withdrew {sorted(lost)} (still valid) during the resync"
            if {f"{ip}/32" for ip in gone} & ipc or remote_entry(m, node).get("state") != "connected":
                ok = False
        return ok

    wait_for(current, 30, step=0.1, what=f"the gone pod {gone} to leave every cluster1 ipcache")
    print(f"outage {outage:.1f}s; {samples} ipcache samples during the resync")
    m.check_services({}, what="after the resync")
    m.expect({C1: BOTH, C2: BOTH}, what="after the resync")
    m.kubectl(C2, "scale", "deployment", "rebel-base", f"--replicas={REPLICAS}")


# --- a hostile remote -------------------------------------------------------------------------

def ip_record(ip, ident, host, **kw):
    return json.dumps(dict({"IP": ip, "Mask": None, "HostIP": host, "ID": ident, "Key": 0, "Metadata": "",
                            "K8sNamespace": "default", "K8sPodName": "evil"}, **kw))


def put_one_by_one(m, records, counted):
    """Put each (key, value) into cluster2's etcd as root; for those counted, wait until every
    cluster1 node has counted one more invalid record before the next."""
    for key, value in records:
        base = invalid_records(m)
        m.etcdctl(C2, "put", key, value)
        if counted:
            try:
                wait_for(lambda: all(v > base[n] for n, v in invalid_records(m).items()), 10,
                         what=f"every cluster1 node to count {key} = {value[:80]!r} as invalid")
            except AssertionError as e:
                raise AssertionError(f"{e}\n{m.diag()}") from None


def test_hostile_remote_records_change_nothing(mesh):
    """Records cluster2 has no right to publish: pod IPs with identities out of its range
    (cluster1's, a reserved one, more than 24 bits), unparsable ones, a key and value that
    disagree, an identity in cluster1's range, a node record claiming to be cluster1's, an
    unparsable node record.  Every cluster1 node counts each as invalid and logs its key;
    no map and no service changes; a valid record put afterwards still arrives, and leaves
    again."""
    m = mesh
    start(m)
    node2 = m.cl[C2]["nodes"][0]
    xwing_ip = m.running(C2, "x-wing")[m.xwings(C2)[0]]
    n1 = m.nodes(C1)[0]
    wait_for(lambda: f"{xwing_ip}/32" in m.ipcache(C1, n1), 20, what="cluster2's pods in cluster1's ipcache")
    good_id = m.ipcache(C1, n1)[f"{xwing_ip}/32"][0]
    assert good_id >> 16 == 2, good_id
    bad = [
        (K_IPS + "10.20.99.1", ip_record("10.20.99.1", (1 << 16) | 300, node2["ip"])),   # cluster1's range
        (K_IPS + "10.20.99.2", ip_record("10.20.99.2", (2 << 16) | 100, node2["ip"])),   # reserved
        (K_IPS + "10.20.99.3", ip_record("10.20.99.3", 1 << 24, node2["ip"])),           # > 24 bits
        (K_IPS + "10.20.99.4", "{unparsable"),
        (K_IPS + "10.20.99.5", ip_record("10.20.99.6", good_id, node2["ip"])),           # key != value
        (K_ID + str((1 << 16) | 300), "k8s:app=evil;k8s:io.cilium.k8s.policy.cluster=cluster2;"
                                     "k8s:io.kubernetes.pod.namespace=default;"),
        (K_NODES + f"{C2}/evil", json.dumps({"Name": "evil", "Cluster": C1, "ClusterID": 1,
                                              "IPAddresses": [{"Type": "InternalIP", "IP": node2["ip"]}],
                                              "IPv4AllocCIDR": {"IP": "10.10.250.0", "Mask": "////AA=="}})),
        (K_NODES + f"{C2}/broken", "["),
    ]
    before = snapshot(m, svc=False)
    logs = {n: Path(m.node(C1, n)["log"]) for n in m.nodes(C1)}
    log0 = {n: f.stat().st_size for n, f in logs.items()}
    invalid0 = invalid_records(m)
    good_key = K_IPS + "10.20.99.10"
    try:
        put_one_by_one(m, bad, counted=True)
        for node in m.nodes(C1):
            n_invalid = invalid_records(m)[node] - invalid0[node]
            assert n_invalid >= len(bad), f"{node} counted {n_invalid} invalid records of {len(bad)}"
            with open(logs[node], errors="replace") as f:
                f.seek(log0[node])
                text = f.read()
            missing = [k for k, _ in bad if k not in text]
            assert not missing, f"{node}: no log line names {missing}"
        now = snapshot(m, svc=False)
        assert now == before, f"hostile records changed cluster1's maps:\nbefore {before}\nnow    {now}"
        m.etcdctl(C2, "put", good_key, ip_record("10.20.99.10", good_id, node2["ip"]))
        wait_for(lambda: all(m.ipcache(C1, n).get("10.20.99.10/32") == (good_id, node2["ip"], 2)
                             for n in m.nodes(C1)), 10, what="a valid record after the hostile ones")
    finally:
        for k, _ in bad + [(good_key, "")]:
            m.etcdctl(C2, "del", k, check=False)
    wait_for(lambda: snapshot(m, svc=False) == before, 10, what="cluster1's maps as before once the records are gone")


DECOY = """\
apiVersion: v1
kind: Service
metadata:
  name: decoy
  annotations:
    service.cilium.io/global: "true"
spec:
  ports:
  - port: 80
  selector:
    name: rebel-base
"""


def svc_record(cluster, cid, backends, name="decoy", **kw):
    port = {"": {"Protocol": "TCP", "Port": 80}}
    return json.dumps(dict({"cluster": cluster, "namespace": "default", "name": name,
                            "frontends": {"10.21.0.250": port}, "backends": {ip: port for ip in backends},
                            "labels": {}, "selector": {"name": "rebel-base"}, "includeExternal": False,
                            "shared": True, "clusterID": cid}, **kw))


def test_hostile_remote_service_records_change_nothing(mesh, tmp_path):
    """A global Service decoy exists in cluster1 only.  cluster2 publishes records for it
    that are not its to publish: under cluster1's name, naming cluster1 (name and id) in
    the value, with another cluster id, unparsable, with a backend that is no IP.  decoy
    keeps cluster1's backends alone on every cluster1 node, requests to it stay in cluster1,
    the invalid ones are counted; then a valid record of cluster2 adds its backends, and
    its deletion takes them away again."""
    m = mesh
    start(m)
    f = tmp_path / "decoy.yaml"
    f.write_text(DECOY)
    m.kubectl(C1, "apply", "-f", f)
    key = K_SVCS + f"{C2}/default/decoy"
    c2_backends = sorted(m.rebels(C2).values())
    evil = ["10.20.99.20"]
    try:
        m.expect({C1: {C1}}, n=8, what="decoy, cluster1's alone", target="decoy")

        def decoy_backends():
            return {n: sorted((b["address"], b["cluster"]) for fe in
                              (m.services(C1, n).get(("default", "decoy")) or {}).get("frontends", [])
                              for b in fe.get("backends", [])) for n in m.nodes(C1)}

        home = {n: sorted((ip, C1) for ip in m.rebels(C1).values()) for n in m.nodes(C1)}
        wait_for(lambda: decoy_backends() == home, 10, what="decoy balanced over cluster1's pods")
        before = snapshot(m)
        m.etcdctl(C2, "put", K_SVCS + f"{C1}/default/decoy", svc_record(C1, 1, evil))  # cluster1's key
        put_one_by_one(m, [
            (key, svc_record(C1, 1, evil)),                        # cluster1's name and id in the value
            (key, svc_record(C2, 3, evil)),                        # another cluster id
            (key, "{unparsable"),
            (key, svc_record(C2, 2, ["not-an-ip"])),
        ], counted=True)
        assert decoy_backends() == home, f"hostile records changed decoy: {decoy_backends()}"
        assert snapshot(m) == before, "hostile service records changed cluster1's maps"
        m.expect({C1: {C1}}, what="decoy after the hostile records", target="decoy")

        m.etcdctl(C2, "put", key, svc_record(C2, 2, c2_backends))
        want = {n: sorted(home[n] + [(ip, C2) for ip in c2_backends]) for n in m.nodes(C1)}
        wait_for(lambda: decoy_backends() == want, 10, what="cluster2's valid record of decoy to add its pods")
        m.expect({C1: BOTH}, what="decoy with cluster2's valid record", target="decoy")
        m.etcdctl(C2, "del", key)
        wait_for(lambda: decoy_backends() == home, 10, what="cluster2's backends of decoy to go with its record")
    finally:
        m.etcdctl(C2, "del", key, check=False)
        m.etcdctl(C2, "del", K_SVCS + f"{C1}/default/decoy", check=False)
        m.kubectl(C1, "delete", "service", "decoy", "--ignore-not-found")


# --- a helper killed mid-scenario ------------------------------------------------------------

KEEPALIVE = r'''
import json, re, signal, socket, struct, sys, time

def retrans(s):
    # struct tcp_info (linux/tcp.h): tcpi_total_retrans is the u32 at offset 100
    return struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 100)[0]

def ask(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: rebel-base\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise EOFError("closed by the peer")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < n:
        d = s.recv(4096)
        if not d:
            raise EOFError("closed by the peer mid-body")
        body += d
    a = json.loads(body[:n])
    return a["cluster"] + "/" + a["pod"]

stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
host, port, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
try:
    for i in range(k):
        s = socket.create_connection((host, port), timeout=3)
        s.settimeout(5)
        conns.append({"s": s, "sent": 0, "ok": 0, "backends": set(), "maxGapMs": 0.0, "error": None,
                      "last": time.monotonic()})
        conns[-1]["backends"].add(ask(s))
except Exception as e:
    print(json.dumps({"error": f"connection {len(conns)} through {host}:{port}: {e!r}"}), flush=True)
    sys.exit(1)
print("connected", flush=True)
while not stop:
    for c in conns:
        if c["error"]:
            continue
        try:
            c["sent"] += 1
            c["backends"].add(ask(c["s"]))
            c["ok"] += 1
            now = time.monotonic()
            c["maxGapMs"] = max(c["maxGapMs"], round((now - c["last"]) * 1000, 1))
            c["last"] = now
        except Exception as e:
            c["error"] = repr(e)
    time.sleep(0.02)
print(json.dumps([{"sent": c["sent"], "ok": c["ok"], "backends": sorted(c["backends"]), "maxGapMs": c["maxGapMs"],
                   "error": c["error"], "retrans": retrans(c["s"])} for c in conns]), flush=True)
'''


def healthy(m, cluster, node):
    r = m.helper(cluster, node, "status", "-o", "json", check=False)
    if r.returncode != 0:
        return False
    s = json.loads(r.stdout)
    return (s["datapathReady"] and s["datapathSynced"] and s["nodePublished"]
            and all(w["synced"] and w["streaming"] for w in s["kvstore"])
            and all(k["synced"] and k["connected"] for k in s["kubernetes"]))


def test_helper_sigkill_keeps_connections_and_maps(mesh, tmp_path):
    """Six keep-alive connections from an x-wing pod of cluster1 to rebel-base's ClusterIP,
    a request on each every 20 ms; the helper of that pod's node (the one balancing them)
    killed with SIGKILL and started again (`lab restart-helper --kill`).  Every connection
    lives on, answered by the same backend throughout, no request lost, no retransmission;
    the node's ipcache, tunnel map, routes, service maps and services -o json are the same
    afterwards, and cluster2 is connected again with the same counts."""
    m = mesh
    start(m)
    m.expect({C1: BOTH}, what="before the kill")
    pod = m.xwings(C1)[0]
    node = next(p["spec"]["nodeName"] for p in m.lab.pods(C1) if p["metadata"]["name"] == pod)
    netns = next(r["netns"] for r in m.lab.pod_records(C1) if r["name"] == pod and r.get("state") == "running")
    before = snapshot(m)[node]
    counts = {k: remote_entry(m, node).get(k) for k in ("nodes", "endpoints", "identities", "services")}
    script = tmp_path / "keepalive.py"
    script.write_text(KEEPALIVE)
    client = subprocess.Popen(["nsenter", f"--net={_c.NETNS_DIR / netns}", "/usr/bin/python3", str(script),
                               m.cluster_ip(C1), "80", "6"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        first = client.stdout.readline().strip()
        assert first == "connected", f"keep-alive connections through the service: {first}"
        time.sleep(0.5)
        t0 = time.monotonic()
        m.lab.cli("restart-helper", "--kill", C1, node)
        wait_for(lambda: healthy(m, C1, node), 20, what=f"{node}'s helper synced again")
        print(f"{node}'s helper synced {time.monotonic() - t0:.2f}s after the kill")
        time.sleep(0.5)
        client.send_signal(signal.SIGTERM)
        out, _ = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    conns = json.loads(out.strip().splitlines()[-1])
    print(f"connections: {conns}")
    for i, c in enumerate(conns):
        assert c["error"] is None and c["ok"] == c["sent"] and c["sent"] >= 20, f"connection {i}: {c}"
        assert len(c["backends"]) == 1, f"connection {i} changed backend: {c}"
        assert c["retrans"] == 0 and c["maxGapMs"] < 1000, f"connection {i} was disturbed: {c}"
    after = snapshot(m)[node]
    lost = {k: sorted(set(before[k]) - set(after[k])) for k in before
            if isinstance(before[k], (dict, list)) and set(before[k]) - set(after[k])}
    assert not lost, f"{node} lost entries across the restart: {lost}"
    assert after == before, f"{node}'s maps differ after the restart:\nbefore {before}\nafter  {after}"
    wait_for(lambda: remote_entry(m, node).get("state") == "connected" and
             {k: remote_entry(m, node).get(k) for k in counts} == counts, 15,
             what=f"{node} connected to cluster2 again with counts {counts}")


# --- last: a hijack that works damages cluster1 until its helpers restart -------------------

def test_remote_podcidr_overlap_is_reported_not_routed(mesh):
    """cluster2 publishes a node whose PodCIDR overlaps a cluster1 node's (10.10.1.0/24):
    every cluster1 node counts it as invalid, `clusters -o json` reports the overlap on
    cluster2, and the tunnel map keeps routing 10.10.1.0/24 to cluster1's own node.  Removed,
    the report clears."""
    m = mesh
    start(m)
    node2 = m.cl[C2]["nodes"][0]
    n1, n2 = m.nodes(C1)[:2]
    own = m.node(C1, n1)
    cidr = own["podCIDR"]
    net, bits = cidr.split("/")
    before = {n: m.tunnels(C1, n) for n in m.nodes(C1)}
    key = K_NODES + f"{C2}/ghost"
    rec = json.dumps({"Name": "ghost", "Cluster": C2, "ClusterID": 2,
                      "IPAddresses": [{"Type": "InternalIP", "IP": node2["ip"]}],
                      "IPv4AllocCIDR": {"IP": net, "Mask": "////AA=="}})
    assert bits == "24", cidr
    try:
        put_one_by_one(m, [(key, rec)], counted=True)
        for node in m.nodes(C1):
            wait_for(lambda: "overlaps" in remote_entry(m, node).get("podCIDROverlap", ""), 10,
                     what=f"{node} to report cluster2's ghost PodCIDR {cidr} as overlapping")
            said = remote_entry(m, node)["podCIDROverlap"]
            assert cidr in said and "ghost" in said, said
        time.sleep(1)
        after = {n: m.tunnels(C1, n) for n in m.nodes(C1)}
        assert after == before, f"tunnel maps changed:\nbefore {before}\nafter  {after}"
        assert after[n2].get(cidr) == own["ip"], after[n2]
    finally:
        m.etcdctl(C2, "del", key)
    for node in m.nodes(C1):
        wait_for(lambda: not remote_entry(m, node).get("podCIDROverlap"), 10,
                 what=f"{node} to clear the overlap report")


def test_remote_cannot_take_over_a_local_pod_ip(mesh):
    """cluster2 publishing one of cluster1's pod IPs, with one of its own identities and its
    node as the tunnel endpoint: the IP is cluster1's (inside its PodCIDRs, a local
    endpoint), so every cluster1 node keeps its own entry and the pod stays reachable."""
    m = mesh
    start(m)
    node2 = m.cl[C2]["nodes"][0]
    victim, vip = sorted(m.rebels(C1).items())[0]
    n1 = m.nodes(C1)[0]
    c2_ip = next(iter(m.rebels(C2).values()))
    wait_for(lambda: f"{c2_ip}/32" in m.ipcache(C1, n1), 20, what="cluster2's pods in cluster1's ipcache")
    c2_id = m.ipcache(C1, n1)[f"{c2_ip}/32"][0]
    before = snapshot(m, svc=False)
    key = K_IPS + vip
    try:
        m.etcdctl(C2, "put", key, ip_record(vip, c2_id, node2["ip"], K8sPodName=victim))
        # a valid record after it: once that is everywhere, the hijack has been processed
        m.etcdctl(C2, "put", K_IPS + "10.20.99.11", ip_record("10.20.99.11", c2_id, node2["ip"]))
        wait_for(lambda: all("10.20.99.11/32" in m.ipcache(C1, n) for n in m.nodes(C1)), 10,
                 what="the record put after the hijack")
        for node in m.nodes(C1):
            assert m.ipcache(C1, node)[f"{vip}/32"] == before[node]["ipcache"][f"{vip}/32"], \
                f"{node}: cluster2 took over {victim}'s {vip}: {m.ipcache(C1, node)[f'{vip}/32']}, " \
                f"was {before[node]['ipcache'][f'{vip}/32']}"
        for pod in m.xwings(C1):
            r = m.lab.exec(C1, pod, "curl", "-sS", "-m", "3", f"http://{vip}/", check=False)
            assert r.returncode == 0 and json.loads(r.stdout)["pod"] == victim, (pod, r.stdout, r.stderr)
    finally:
        m.etcdctl(C2, "del", key, check=False)
        m.etcdctl(C2, "del", K_IPS + "10.20.99.11", check=False)
        try:
            wait_for(lambda: snapshot(m, svc=False) == before, 10, what="cluster1's maps as before")
        except AssertionError:
            # What cluster2 did is not undone by deleting its record: the local pod's entry
            # may be gone too.  Restarted helpers republish it, for the tests after this one.
            m.lab.cli("restart-helper", C1, *m.nodes(C1))
            raise
