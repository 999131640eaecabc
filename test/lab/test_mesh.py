"""The ClusterMesh walkthrough (issue 4, "The walkthrough, in the lab"), step by step, on
two clusters of two nodes (topologies/two-clusters.yaml: cluster1 id 1, pods 10.10/16,
services 10.11/16; cluster2 id 2, pods 10.20/16, services 10.21/16; one L2 segment),
connected both ways, rebel-base.yaml applied to both, driven as its users drive it:

    /usr/bin/python3 -m pytest -q test/lab/test_mesh.py        # -s prints the tallies

  kubectl     the real kubectl, --context kind-clusterN, against the lab's API:
              scale, annotate --overwrite, annotate KEY- (removal)
  requests    curl http://rebel-base/ from every x-wing pod (`lab exec`, so the
              pod's resolv.conf and its cluster's DNS, which gives that cluster's
              ClusterIP), a new connection each; the answer (podserve) names the
              cluster that served it
  the helper  `causeway-helper services -o json` and `clusters -o json` on every node

How requests are judged: after a change, a bounded wait until a batch of 8 requests from
every x-wing pod is answered by exactly the expected clusters; then 24 more from each pod,
and every one of those must be answered, by exactly the expected clusters.  "Both
clusters" with 4 backends, 2 in each, fails by chance with probability 2^-23 per pod;
"only X" is absolute (a single answer from elsewhere, or no answer, fails).

Beside the steps: a Terminating backend (its kubelet stopped, so it stays and still
answers) takes no request; the older annotations (io.cilium/global-service,
io.cilium/service-affinity) work, a Service that is not global stays local; `clusters
-o json` counts what the remote etcd holds.  Step 6 (pods by IP across clusters) is
parametrized over tunnel, native and hybrid routing, and hybrid across two L2 segments.

The walkthrough's steps share one lab for the module; each starts from the walkthrough's
starting point (no shared/affinity annotation, 2 rebel-base replicas per cluster) and
puts back what it changed, as the walkthrough does ("Scale back", "Remove the
annotation").
"""

import importlib.util
import ipaddress
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def _conftest():
    """This directory's conftest, by path (test_lab.py explains why)."""
    spec = importlib.util.spec_from_file_location("causeway_lab_conftest_mesh",
                                                  Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_c = _conftest()
TOPOLOGIES, MESHCHECK, REPLICAS, run, wait_for = (
    _c.TOPOLOGIES, _c.MESHCHECK, _c.REPLICAS, _c.run, _c.wait_for)

TOPO = TOPOLOGIES / "two-clusters.yaml"
C1, C2 = "cluster1", "cluster2"
BOTH = {C1, C2}
GLOBAL, SHARED, AFFINITY = "service.cilium.io/global", "service.cilium.io/shared", "service.cilium.io/affinity"
SVC_RECORD = "cilium/state/services/v1/{}/default/rebel-base"


@pytest.fixture(scope="module")
def mesh(built, tmp_path_factory):
    with _c.mesh_lab(TOPO, tmp_path_factory.mktemp("mesh")) as m:
        yield m


def start(m):
    """The walkthrough's starting point: no shared or affinity annotation, 2 replicas each."""
    for c in m.names:
        m.kubectl(c, "annotate", "service", "rebel-base", f"{SHARED}-", f"{AFFINITY}-")
        m.kubectl(c, "scale", "deployment", "rebel-base", f"--replicas={REPLICAS}")
    m.wait_replicas({c: REPLICAS for c in m.names})


def record_present(m, cluster):
    """Whether cluster's etcd holds its service record of rebel-base (as the read-only user)."""
    key = SVC_RECORD.format(cluster)
    return key in m.etcd_keys(cluster, key)


# --- step 1 ---------------------------------------------------------------------------------

def test_step1_requests_reach_both_clusters(mesh):
    """Both clusters answer requests to rebel-base from x-wing in cluster1, and from cluster2.
    The name resolves, through the pod's resolv.conf and its cluster's DNS, to the ClusterIP
    of the pod's own cluster; both clusters publish their record; every node's services -o json
    shows one global service balanced over the four pods."""
    m = mesh
    start(m)
    for c in m.names:
        ip = m.cluster_ip(c)
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(m.cl[c]["serviceSubnet"]), (c, ip)
        r = m.lab.exec(c, "deployment/x-wing", "cat", "/etc/resolv.conf")
        assert r.stdout == ("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                            f"nameserver {m.cl[c]['dns']}\noptions ndots:5\n"), r.stdout
        r = m.lab.exec(c, "deployment/x-wing", "getent", "hosts", "rebel-base")
        assert r.stdout.split()[:2] == [ip, "rebel-base.default.svc.cluster.local"], r.stdout
    m.expect({C1: BOTH, C2: BOTH}, what="step 1")
    m.check_services({}, what="step 1")
    for c in m.names:
        wait_for(lambda: record_present(m, c), 10, what=f"{c}'s record {SVC_RECORD.format(c)}")
        rec = json.loads(m.etcdctl(c, "get", "--print-value-only", SVC_RECORD.format(c), user="remote").stdout)
        assert (rec["cluster"], rec["clusterID"], rec["namespace"], rec["name"], rec["shared"]) == \
            (c, m.ids[c], "default", "rebel-base", True), rec
        assert set(rec["frontends"]) == {m.cluster_ip(c)}, rec
        assert set(rec["backends"]) == set(m.rebels(c).values()), rec


# --- step 2 ---------------------------------------------------------------------------------

def test_step2_scale_cluster2_to_zero_fails_over_to_cluster1(mesh):
    """kubectl --context kind-cluster2 scale deployment rebel-base --replicas=0: cluster1
    answers every request, from cluster1 and from cluster2 (failover across clusters).
    Scaled back, both answer again."""
    m = mesh
    start(m)
    m.expect({C1: BOTH, C2: BOTH}, what="step 2, before")
    m.kubectl(C2, "scale", "deployment", "rebel-base", "--replicas=0")
    m.wait_replicas({C2: 0})
    m.expect({C1: {C1}, C2: {C1}}, what="step 2: cluster2 scaled to 0")
    m.check_services({}, what="step 2: cluster2 scaled to 0")
    m.kubectl(C2, "scale", "deployment", "rebel-base", f"--replicas={REPLICAS}")
    m.wait_replicas({C2: REPLICAS})
    m.expect({C1: BOTH, C2: BOTH}, what="step 2: cluster2 scaled back")
    m.check_services({}, what="step 2: cluster2 scaled back")


# --- step 3 ---------------------------------------------------------------------------------

def test_step3_shared_false_keeps_cluster1_backends_home(mesh):
    """service.cilium.io/shared="false" on cluster1 (annotate --overwrite): from cluster1 both
    clusters still answer, from cluster2 only cluster2; cluster1's record leaves its etcd.
    The annotation removed (KEY-): the record returns and both answer everywhere."""
    m = mesh
    start(m)
    m.expect({C1: BOTH, C2: BOTH}, what="step 3, before")
    m.kubectl(C1, "annotate", "service", "rebel-base", f'{SHARED}=false', "--overwrite")
    m.expect({C1: BOTH, C2: {C2}}, what="step 3: shared=false on cluster1")
    m.check_services({C1: {"shared": False}}, what="step 3: shared=false on cluster1")
    wait_for(lambda: not record_present(m, C1), 10, what=f"{SVC_RECORD.format(C1)} to be withdrawn")
    assert record_present(m, C2)
    m.kubectl(C1, "annotate", "service", "rebel-base", f"{SHARED}-")
    m.expect({C1: BOTH, C2: BOTH}, what="step 3: annotation removed")
    m.check_services({}, what="step 3: annotation removed")
    wait_for(lambda: record_present(m, C1), 10, what=f"{SVC_RECORD.format(C1)} to return")


# --- step 4 ---------------------------------------------------------------------------------

def test_step4_affinity_local_then_failover(mesh):
    """service.cilium.io/affinity=local on cluster1: from cluster1 only cluster1 answers, from
    cluster2 both.  Cluster1's rebel-base scaled to 0: cluster1's requests fail over to
    cluster2.  Scaled back, cluster1 keeps its requests home again."""
    m = mesh
    start(m)
    m.expect({C1: BOTH, C2: BOTH}, what="step 4, before")
    m.kubectl(C1, "annotate", "service", "rebel-base", f"{AFFINITY}=local", "--overwrite")
    m.expect({C1: {C1}, C2: BOTH}, what="step 4: affinity=local on cluster1")
    m.check_services({C1: {"affinity": "local"}}, what="step 4: affinity=local on cluster1")
    m.kubectl(C1, "scale", "deployment", "rebel-base", "--replicas=0")
    m.wait_replicas({C1: 0})
    m.expect({C1: {C2}, C2: {C2}}, what="step 4: affinity=local, cluster1 scaled to 0")
    m.check_services({C1: {"affinity": "local"}}, what="step 4: affinity=local, cluster1 scaled to 0")
    m.kubectl(C1, "scale", "deployment", "rebel-base", f"--replicas={REPLICAS}")
    m.wait_replicas({C1: REPLICAS})
    m.expect({C1: {C1}, C2: BOTH}, what="step 4: affinity=local, cluster1 scaled back")
    m.kubectl(C1, "annotate", "service", "rebel-base", f"{AFFINITY}-")
    m.expect({C1: BOTH, C2: BOTH}, what="step 4: annotation removed")


# --- step 5 ---------------------------------------------------------------------------------

def test_step5_affinity_remote(mesh):
    """service.cilium.io/affinity=remote on cluster1: from cluster1 only cluster2 answers
    (cluster2 still uses both).  The mirror image of local: with cluster2 scaled to 0,
    cluster1 falls back to its own backends."""
    m = mesh
    start(m)
    m.expect({C1: BOTH, C2: BOTH}, what="step 5, before")
    m.kubectl(C1, "annotate", "service", "rebel-base", f"{AFFINITY}=remote", "--overwrite")
    m.expect({C1: {C2}, C2: BOTH}, what="step 5: affinity=remote on cluster1")
    m.check_services({C1: {"affinity": "remote"}}, what="step 5: affinity=remote on cluster1")
    m.kubectl(C2, "scale", "deployment", "rebel-base", "--replicas=0")
    m.wait_replicas({C2: 0})
    m.expect({C1: {C1}, C2: {C1}}, what="step 5: affinity=remote, cluster2 scaled to 0")
    m.check_services({C1: {"affinity": "remote"}}, what="step 5: affinity=remote, cluster2 scaled to 0")
    m.kubectl(C2, "scale", "deployment", "rebel-base", f"--replicas={REPLICAS}")
    m.wait_replicas({C2: REPLICAS})
    m.kubectl(C1, "annotate", "service", "rebel-base", f"{AFFINITY}-")
    m.expect({C1: BOTH, C2: BOTH}, what="step 5: annotation removed")


# --- beside the walkthrough: what the steps rely on ----------------------------------------

def test_terminating_backends_leave_at_once(mesh):
    """Scaled down, a pod is Terminating before it is gone: its EndpointSlice entry turns
    ready=false, terminating=true (serving still true) at once, as the real API server's
    EndpointSlice controller does.  With cluster2's kubelet stopped, its rebel-base pods
    stay Terminating and keep answering; still no request from either cluster reaches them,
    and no node balances over them: a backend that is not ready leaves the slots at once."""
    m = mesh
    start(m)
    m.expect({C1: BOTH, C2: BOTH}, what="before")
    kubelet = next(p for p in m.lab.state()["procs"] if p["role"] == "kubelet" and p["cluster"] == C2)
    cfg = m.lab.dir / C2 / "kubelet" / "config.json"
    doomed = m.rebels(C2)
    os.kill(kubelet["pid"], signal.SIGTERM)
    wait_for(lambda: not _c.kl.alive(kubelet["pid"], kubelet["start"]), 15, what="cluster2's kubelet to stop")
    again = None
    try:
        m.kubectl(C2, "scale", "deployment", "rebel-base", "--replicas=0")
        pods = {p["metadata"]["name"]: p for p in m.lab.pods(C2) if p["metadata"]["name"] in doomed}
        assert set(pods) == set(doomed) and all(p["metadata"].get("deletionTimestamp") for p in pods.values()), \
            f"scaled to 0, the bound pods should stay Terminating until their kubelet deletes them: {sorted(pods)}"
        out = m.kubectl(C2, "get", "pods", "-l", "name=rebel-base", "--no-headers").stdout
        assert out.count("Terminating") == len(doomed), out
        eps = {e["addresses"][0]: e["conditions"] for s in json.loads(m.kubectl(
            C2, "get", "endpointslices", "-l", "kubernetes.io/service-name=rebel-base", "-o", "json").stdout)["items"]
            for e in s.get("endpoints") or []}
        assert eps == {ip: {"ready": False, "serving": True, "terminating": True} for ip in doomed.values()}, eps
        for name, ip in doomed.items():  # still there, still answering
            r = m.lab.exec(C1, "deployment/x-wing", "curl", "-sS", "-m", "3", f"http://{ip}/")
            assert json.loads(r.stdout)["pod"] == name, r.stdout
        m.expect({C1: {C1}, C2: {C1}}, what="cluster2's rebel-base Terminating")
        m.check_services({}, what="cluster2's rebel-base Terminating")
    finally:
        # A kubelet again (lab down stops it with the lab): it finishes the deletions.
        with open(m.lab.dir / C2 / "kubelet.log", "ab") as log:
            again = subprocess.Popen([sys.executable, Path(_c.kl.__file__), cfg], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
    m.wait_replicas({C2: 0})
    assert again.poll() is None, "the new kubelet of cluster2 exited"
    m.kubectl(C2, "scale", "deployment", "rebel-base", f"--replicas={REPLICAS}")
    m.wait_replicas({C2: REPLICAS})
    m.expect({C1: BOTH, C2: BOTH}, what="cluster2 scaled back")


EXTRA = """\
apiVersion: v1
kind: Service
metadata:
  name: rebel-alias
  annotations:
    io.cilium/global-service: "true"
    {affinity}
spec:
  ports:
  - port: 80
  selector:
    name: rebel-base
---
apiVersion: v1
kind: Service
metadata:
  name: rebel-local
  annotations:
    service.cilium.io/affinity: remote
spec:
  ports:
  - port: 80
  selector:
    name: rebel-base
"""


def test_annotation_aliases_and_local_services(mesh, tmp_path):
    """The older annotations (io.cilium/global-service, io.cilium/service-affinity) mean what
    the new ones do; a Service without the global annotation stays local, whatever the
    other cluster has under the same name, and its affinity annotation is ignored."""
    m = mesh
    start(m)
    for c in m.names:
        f = tmp_path / f"{c}.yaml"
        aff = "io.cilium/service-affinity: local" if c == C1 else ""
        f.write_text(EXTRA.format(affinity=aff))
        m.kubectl(c, "apply", "-f", f)
    try:
        m.expect({C1: {C1}, C2: BOTH}, what="rebel-alias (io.cilium/global-service, io.cilium/service-affinity "
                 "local on cluster1)", target="rebel-alias")
        m.expect({C1: {C1}, C2: {C2}}, what="rebel-local (not global)", target="rebel-local")
        for c in m.names:
            for node in m.nodes(c):
                svcs = m.services(c, node)
                a, lo = svcs.get(("default", "rebel-alias")), svcs.get(("default", "rebel-local"))
                assert a and a["global"] and a["affinity"] == ("local" if c == C1 else "none"), (node, a)
                assert lo and not lo["global"] and lo["affinity"] == "none", (node, lo)
                assert {b["cluster"] for f in lo["frontends"] for b in f["backends"]} == {c}, (node, lo)
    finally:
        for c in m.names:
            m.kubectl(c, "delete", "service", "rebel-alias", "rebel-local", "--ignore-not-found")


def test_clusters_json_counts(mesh):
    """Every node's `clusters -o json`: the other cluster connected and synced, with as many
    nodes, endpoints, identities and services as its etcd holds (read as the read-only user
    the node has), and no eviction deadline (null while connected)."""
    m = mesh
    start(m)
    prefixes = {"nodes": "cilium/state/nodes/v1/{}/", "endpoints": "cilium/state/ip/v1/",
                "identities": "cilium/state/identities/v1/id/", "services": "cilium/state/services/v1/{}/"}
    problems = {}

    def agree():
        problems.clear()
        for c in m.names:
            other = next(o for o in m.names if o != c)
            want = {k: len(m.etcd_keys(other, p.format(other))) for k, p in prefixes.items()}
            for node in m.nodes(c):
                e = m.clusters(c, node).get(other)
                got = e and {k: e.get(k) for k in want}
                if not e or e.get("id") != m.ids[other] or e.get("state") != "connected" or not e.get("synced") \
                        or "evictionDeadline" not in e or e["evictionDeadline"] is not None or got != want:
                    problems[node] = f"{other}: {e and {k: v for k, v in e.items() if k != 'kvstore'}}; " \
                                     f"its etcd holds {want}"
        return not problems

    try:
        wait_for(agree, 20, step=0.5, what="clusters -o json to agree with the remote etcds")
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(f"  {n}: {p}" for n, p in problems.items())) from None
    # the walkthrough's pods are there: 2 nodes, 4 endpoints, 2 identities, 1 global service
    e = m.clusters(C1, m.nodes(C1)[0])[C2]
    assert (e["nodes"], e["endpoints"], e["identities"], e["services"]) == (2, 4, 2, 1), e


# --- step 6 ---------------------------------------------------------------------------------

ROUTED = [("two-clusters.yaml", "tunnel"), ("two-clusters.yaml", "native"), ("two-clusters.yaml", "hybrid"),
          ("two-clusters-routed.yaml", None)]


def between(m, a, b):
    """How node a reaches node b's PodCIDR: "tunnel" or "native" (DESIGN.md, routing modes)."""
    routing = m.cl[a["cluster"]]["routing"]
    if routing != "hybrid":
        return routing
    same_segment = m.lab.state()["underlay"] == "shared" or a["cluster"] == b["cluster"]
    return "native" if same_segment else "tunnel"


@pytest.mark.needs_helper
@pytest.mark.parametrize("topology,routing", ROUTED,
                         ids=[f"{t[:-5]}-{r or 'as-written'}" for t, r in ROUTED])
def test_step6_pods_reach_pods_across_clusters(request, make_mesh, topology, routing):
    """Every pod of both clusters reaches every other by IP (meshcheck, all 56 ordered pairs),
    curl from x-wing to the other cluster's rebel-base pods by IP gets their answer; every
    node has every other node's PodCIDR as its routing mode says (tunnel: a tunnel map entry,
    a proto 193 route into cw_vxlan for the node's own traffic and the node's address in the
    ipcache behind itself; native: a proto 193 route via the node), and every pod in its ipcache with its cluster's id, an identity
    in that cluster's range, and the tunnel endpoint the mode calls for."""
    if routing == "tunnel" and topology == "two-clusters.yaml":
        m = request.getfixturevalue("mesh")  # the walkthrough's own lab
        start(m)
    else:
        m = make_mesh(TOPOLOGIES / topology, routing)
    nodes = [dict(n, cluster=c) for c in m.names for n in m.cl[c]["nodes"]]
    node_of = {}
    lines = []
    for c in m.names:
        recs = {r["uid"]: r for r in m.lab.pod_records(c)}
        for p in m.lab.pods(c):
            if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
                node_of[p["status"]["podIP"]] = (c, p["spec"]["nodeName"])
                lines.append(f"{_c.NETNS_DIR / recs[p['metadata']['uid']]['netns']} {p['status']['podIP']}\n")
    assert len(lines) == 4 * len(m.names), lines
    r = run([MESHCHECK, "-a", "-t", "5"], check=False, input="".join(lines), timeout=120)
    assert r.returncode == 0, f"{topology} {routing}:\n{r.stdout}{r.stderr}"

    for c in m.names:
        other = next(o for o in m.names if o != c)
        for name, ip in m.rebels(other).items():
            r = m.lab.exec(c, "deployment/x-wing", "curl", "-sS", "-m", "5", f"http://{ip}/")
            assert json.loads(r.stdout) == {"pod": name, "namespace": "default", "cluster": other}, r.stdout

    for n in nodes:
        tunnels, routes, ipc = m.tunnels(n["cluster"], n["name"]), m.routes(n["cluster"], n["name"]), \
            m.ipcache(n["cluster"], n["name"])
        for o in nodes:
            if o is n:
                continue
            how = between(m, n, o)
            if how == "tunnel":
                # pods by the tunnel map; the node's own traffic by a route into cw_vxlan
                assert tunnels.get(o["podCIDR"]) == o["ip"] and \
                    routes.get(o["podCIDR"]) == (None, "cw_vxlan") and \
                    ipc.get(f"{o['ip']}/32") == (6, o["ip"], m.ids[o["cluster"]]), \
                    f"{n['name']} -> {o['name']} ({how}): tunnels {tunnels}, routes {routes}"
            else:
                assert routes.get(o["podCIDR"]) == (o["ip"], "eth0") and o["podCIDR"] not in tunnels, \
                    f"{n['name']} -> {o['name']} ({how}): tunnels {tunnels}, routes {routes}"
        for ip, (c, node) in node_of.items():
            o = next(x for x in nodes if x["name"] == node)
            ident, tunnel, cid = ipc.get(f"{ip}/32", (None, None, None))
            want_tunnel = o["ip"] if o is not n and between(m, n, o) == "tunnel" else ""
            assert cid == m.ids[c] and ident is not None and ident >> 16 == m.ids[c] and ident & 0xFFFF >= 256 \
                and tunnel == want_tunnel, \
                f"{n['name']}: ipcache {ip}/32 is {(ident, tunnel, cid)}, want an identity of cluster " \
                f"{m.ids[c]} ({c}), tunnel {want_tunnel or '-'}"
