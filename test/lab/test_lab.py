"""The lab: clusters of network namespaces, driven through test/lab/lab.

    /usr/bin/python3 -m pytest -q test/lab/test_lab.py                 # all
    /usr/bin/python3 -m pytest -q test/lab/test_lab.py -m needs_helper # pod traffic across nodes

Most tests share one lab (one-cluster.yaml, rebel-base applied) for the
module; test_up_down makes and removes its own to check that nothing is
left.  Traffic goes only to addresses inside the namespaces the tests made.
"""

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import importlib.util

import pytest


def _conftest():
    """This directory's conftest, by path: `from conftest import` may find another
    directory's conftest (test/node has one) when pytest collects both."""
    spec = importlib.util.spec_from_file_location("causeway_lab_conftest",
                                                  Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_c = _conftest()
MANIFESTS, MESHCHECK, TOPOLOGIES, kl, run, wait_for = (
    _c.MANIFESTS, _c.MESHCHECK, _c.TOPOLOGIES, _c.kl, _c.run, _c.wait_for)

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
BPF_BASE = Path("/sys/fs/bpf/cwlab")


def leftovers(name, procs=()):
    """Everything of lab `name` that exists: empty once `lab down` did its job."""
    left = []
    prefixes = (f"cwl-{name}-", f"cwp-{name}-")
    if NETNS_DIR.is_dir():
        left += [f"netns {n.name}" for n in NETNS_DIR.iterdir() if n.name.startswith(prefixes)]
    if ETC_NETNS.is_dir():
        left += [f"/etc/netns/{n.name}" for n in ETC_NETNS.iterdir() if n.name.startswith(prefixes)]
    links = json.loads(run(["ip", "-j", "link", "show"]).stdout or "[]")
    left += [f"link {l['ifname']}" for l in links
             if l["ifname"] == f"cwl-{name}" or l["ifname"].startswith(f"cwl-{name}-")]
    if (BPF_BASE / name).exists():
        left.append(f"pins under {BPF_BASE / name}")
    left += [f"process {p['role']} {p['pid']}" for p in procs if kl.alive(p["pid"], p.get("start"))]
    needle = f"/run/causeway-lab/{name}/".encode()
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if needle in (d / "cmdline").read_bytes() and kl.alive(int(d.name)):
                    left.append(f"process {d.name} naming the state dir")
            except OSError:
                pass
    if Path(f"/run/causeway-lab/{name}").exists():
        left.append(f"/run/causeway-lab/{name}")
    return left


def pod_body(name, port=None):
    c = {"name": "c", "image": "podserve"}
    if port:
        c["ports"] = [{"containerPort": port}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [c]}}


# --- a lab of its own ----------------------------------------------------------

def test_up_down(make_lab):
    """up builds what the topology says; a second up refuses; down leaves nothing."""
    lab = make_lab(TOPOLOGIES / "one-cluster.yaml")
    r = lab.up()
    assert "export KUBECONFIG=" in r.stdout, r.stdout
    st = lab.state()
    c = st["clusters"][0]
    assert [n["name"] for n in c["nodes"]] == ["cluster1-node1", "cluster1-node2", "cluster1-node3"]
    for n in c["nodes"]:
        assert (NETNS_DIR / n["netns"]).exists()
        assert Path(n["bpfRoot"]).is_dir()
        out = run(["nsenter", f"--net={NETNS_DIR / n['netns']}", "sysctl", "-n", "net.ipv4.ip_forward",
                   "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"]).stdout.split()
        assert out == ["1", "0", "0"], (n["name"], out)
        conf = json.loads(Path(n["conflist"]).read_text())
        assert conf["name"] == "causeway" and conf["cniVersion"] == "1.0.0"
        assert "podCIDR" not in conf["plugins"][0], conf
        assert conf["plugins"][0]["bpfRoot"] == n["bpfRoot"]
    podcidrs = [n["podCIDR"] for n in c["nodes"]]
    assert podcidrs == ["10.10.1.0/24", "10.10.2.0/24", "10.10.3.0/24"]
    for role in ("etcd", "kapi", "dnsmasq", "kubelet"):
        assert any(p["role"] == role and kl.alive(p["pid"], p["start"]) for p in st["procs"]), role

    # the API has the nodes, as the lab described them
    nodes = {n["metadata"]["name"]: n for n in lab.kube("cluster1").get("/api/v1/nodes")["items"]}
    for n in c["nodes"]:
        obj = nodes[n["name"]]
        assert obj["spec"]["podCIDR"] == n["podCIDR"]
        assert obj["metadata"]["labels"]["kubernetes.io/hostname"] == n["name"]
        assert {"type": "InternalIP", "address": n["ip"]} in obj["status"]["addresses"]
        assert any(x["type"] == "Ready" and x["status"] == "True" for x in obj["status"]["conditions"])

    # the remote (read-only) etcd config the next clusters will use
    remote = Path(st["dir"]) / "clustermesh" / "cluster1"
    assert "username: causeway-remote" in remote.read_text()

    again = lab.cli("up", lab.topology, check=False)
    assert again.returncode != 0 and "already up" in again.stderr, again.stderr

    env = lab.cli("env").stdout
    assert f"export KUBECONFIG={lab.dir}/kubeconfig" in env, env
    out = lab.node_exec("cluster1", "cluster1-node2", "ip", "-br", "-4", "addr", "show", "eth0").stdout
    assert f"{c['nodes'][1]['ip']}/" in out, out

    # a pod, so that down has a pod netns, /etc/netns and a responder to remove
    k = lab.kube("cluster1")
    k.post("/api/v1/namespaces/default/pods", pod_body("lonely"))
    lab.wait_running("cluster1", 1)
    rec = lab.pod_records("cluster1")[0]
    assert (ETC_NETNS / rec["netns"] / "resolv.conf").exists()

    # a helper that dies is shown by status, with its log
    helper = next(p for p in st["procs"] if p["role"] == "helper")
    os.kill(helper["pid"], signal.SIGKILL)
    wait_for(lambda: not kl.alive(helper["pid"], helper["start"]), 5, what="the helper to die")
    text = lab.cli("status").stdout
    assert "DEAD" in text, text
    js = lab.status()
    dead = [p for n in js["clusters"][0]["nodes"] for p in n["processes"] if not p["running"]]
    assert [p["pid"] for p in dead] == [helper["pid"]], dead

    procs = st["procs"] + [{"role": "podserve", "pid": rec["responderPid"], "start": rec["responderStart"]}]
    r = lab.down()
    assert r.returncode == 0, r.stderr
    assert leftovers(lab.name, procs) == []


def test_topology_errors(make_lab, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad_Name\nclusters: []\n")
    lab = make_lab(TOPOLOGIES / "one-cluster.yaml")
    r = lab.cli("up", bad, check=False)
    assert r.returncode == 1 and "name" in r.stderr, r.stderr
    bad.write_text("name: x1\nclusters:\n- {name: a, id: 1, podSubnet: 10.10.0.0/16, "
                   "serviceSubnet: 10.10.128.0/17}\n")
    r = lab.cli("up", bad, check=False)
    assert r.returncode == 1 and "overlaps" in r.stderr, r.stderr
    assert leftovers("x1") == []


def test_pick_lab(tmp_path):
    """No lab: say so; one: found; several: ask for a name."""
    env = dict(os.environ, CAUSEWAY_LAB_STATE=str(tmp_path))
    env.pop("CAUSEWAY_LAB", None)
    lab = [sys.executable, TOPOLOGIES.parent / "lab"]
    r = run([*lab, "env"], check=False, env=env)
    assert r.returncode == 1 and "no lab is up" in r.stderr, r.stderr
    for name in ("aa", "bb"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "lab.json").write_text(json.dumps(
            {"name": name, "kubeconfig": f"{tmp_path}/{name}/kubeconfig", "clusters": [{"name": "c"}]}))
        r = run([*lab, "env"], check=False, env=env)
        if name == "aa":
            assert r.returncode == 0 and f"{tmp_path}/aa/kubeconfig" in r.stdout, r
    assert r.returncode == 1 and "several labs are up (aa, bb)" in r.stderr, r.stderr
    r = run([*lab, "--lab", "bb", "env"], env=env)
    assert f"{tmp_path}/bb/kubeconfig" in r.stdout
    r = run([*lab, "env", "cc"], check=False, env=env)
    assert r.returncode == 1 and "no lab named cc" in r.stderr, r.stderr


# --- the module's lab --------------------------------------------------------------

def test_etcd_tls_and_users(one_cluster):
    """The node's etcd config reaches etcd with TLS; causeway-remote may only read."""
    lab = one_cluster
    c = lab.cluster("cluster1")
    node = c["nodes"][0]

    def etcdctl(cfg_file, *args):
        import yaml
        cfg = yaml.safe_load(Path(cfg_file).read_text())
        env = dict(os.environ, ETCDCTL_API="3", ETCDCTL_ENDPOINTS=",".join(cfg["endpoints"]),
                   ETCDCTL_CACERT=cfg["trusted-ca-file"], ETCDCTL_CERT=cfg["cert-file"],
                   ETCDCTL_KEY=cfg["key-file"], ETCDCTL_USER=f"{cfg['username']}:{cfg['password']}",
                   ETCDCTL_DIAL_TIMEOUT="3s", ETCDCTL_COMMAND_TIMEOUT="5s")
        return run(["nsenter", f"--net={NETNS_DIR / node['netns']}", "etcdctl", *args],
                   check=False, env=env)

    assert c["etcd"]["endpoint"] == f"https://{c['cp']['ip']}:2379"
    r = etcdctl(node["etcdConfig"], "put", "causeway/lab-test", "hello")
    assert r.returncode == 0, r.stderr
    r = etcdctl(node["etcdConfig"], "get", "--print-value-only", "causeway/lab-test")
    assert r.stdout.strip() == "hello", r
    remote = Path(lab.state()["dir"]) / "clustermesh" / "cluster1"
    r = etcdctl(remote, "get", "--prefix", "--keys-only", "cilium/")
    assert r.returncode == 0, r.stderr
    r = etcdctl(remote, "put", "cilium/lab-test", "x")
    assert r.returncode != 0 and "permission denied" in r.stderr, r
    r = etcdctl(remote, "get", "causeway/lab-test")
    assert r.returncode != 0 and "permission denied" in r.stderr, r
    # without a client certificate, no TLS session
    cfg_env = dict(os.environ, ETCDCTL_API="3")
    r = run(["nsenter", f"--net={NETNS_DIR / node['netns']}", "etcdctl", "--endpoints",
             c["etcd"]["endpoint"], "--cacert", str(Path(c["etcd"]["dir"]) / "ca.crt"),
             "--dial-timeout", "2s", "--command-timeout", "3s", "get", "cilium/x"],
            check=False, env=cfg_env)
    assert r.returncode != 0, r


def test_deployment_runs(one_cluster):
    """kubectl apply of rebel-base: every pod Running, its IP in its node's PodCIDR."""
    lab = one_cluster
    rebels = lab.wait_running("cluster1", 2, {"name": "rebel-base"})
    wings = lab.wait_running("cluster1", 2, {"name": "x-wing"})
    cidrs = {n["metadata"]["name"]: ipaddress.ip_network(n["spec"]["podCIDR"])
             for n in lab.kube("cluster1").get("/api/v1/nodes")["items"]}
    st = lab.cluster("cluster1")
    node_ips = {n["name"]: n["ip"] for n in st["nodes"]}
    recs = {r["uid"]: r for r in lab.pod_records("cluster1")}
    for p in rebels + wings:
        node = p["spec"]["nodeName"]
        ip = ipaddress.ip_address(p["status"]["podIP"])
        assert ip in cidrs[node], f"{p['metadata']['name']}: {ip} not in {node}'s {cidrs[node]}"
        assert p["status"]["hostIP"] == node_ips[node]
        assert p["status"]["podIPs"] == [{"ip": str(ip)}]
        conds = {c["type"]: c["status"] for c in p["status"]["conditions"]}
        for t in ("Ready", "ContainersReady", "PodScheduled", "Initialized"):
            assert conds.get(t) == "True", (p["metadata"]["name"], conds)
        assert all(cs["ready"] for cs in p["status"]["containerStatuses"])
        rec = recs[p["metadata"]["uid"]]
        assert (NETNS_DIR / rec["netns"]).exists()
        assert (ETC_NETNS / rec["netns"] / "resolv.conf").read_text() == (
            "search default.svc.cluster.local svc.cluster.local cluster.local\n"
            f"nameserver {st['dns']}\noptions ndots:5\n")
    out = lab.kubectl("cluster1", "get", "pods", "-o", "wide").stdout
    assert out.count("Running") == 4, out
    # The plugin (through nsenter) and the node's helper CLI see the same pins.
    for n in st["nodes"]:
        out = lab.cli("helper", "cluster1", n["name"], "bpf-endpoints").stdout
        want = {p["status"]["podIP"] for p in rebels + wings if p["spec"]["nodeName"] == n["name"]}
        assert want <= set(out.split()), f"{n['name']}: {want} not all in\n{out}"


def test_same_node_curl(one_cluster):
    """A pod reaches another pod of its node by IP and gets that pod's JSON."""
    lab = one_cluster
    pods = lab.wait_running("cluster1", 2, {"name": "rebel-base"}) + \
        lab.wait_running("cluster1", 2, {"name": "x-wing"})
    by_node = {}
    for p in pods:
        by_node.setdefault(p["spec"]["nodeName"], []).append(p)
    a, b = next(v for v in by_node.values() if len(v) >= 2)[:2]  # 4 pods on 3 nodes
    r = lab.exec("cluster1", a["metadata"]["name"], "curl", "-sS", "-m", "5",
                 f"http://{b['status']['podIP']}/")
    assert json.loads(r.stdout) == {"pod": b["metadata"]["name"], "namespace": "default",
                                    "cluster": "cluster1"}


def test_dns_resolves_service(one_cluster):
    """Inside a pod, rebel-base resolves (search path, ndots) to the Service's ClusterIP."""
    lab = one_cluster
    wing = lab.wait_running("cluster1", 2, {"name": "x-wing"})[0]["metadata"]["name"]
    svc = lab.kube("cluster1").get("/api/v1/namespaces/default/services/rebel-base")
    ip = svc["spec"]["clusterIP"]

    def resolved():
        r = lab.exec("cluster1", wing, "getent", "hosts", "rebel-base", check=False)
        return r.returncode == 0 and r.stdout.split()[0] == ip and r
    r = wait_for(resolved, 10, what=f"rebel-base to resolve to {ip}")
    assert "rebel-base.default.svc.cluster.local" in r.stdout
    r = lab.exec("cluster1", wing, sys.executable, "-c",
                 "import socket; print(socket.gethostbyname('rebel-base.default'))")
    assert r.stdout.strip() == ip
    r = lab.exec("cluster1", wing, "getent", "hosts", "no-such-service", check=False)
    assert r.returncode != 0


def test_exec_namespace_and_ports(one_cluster):
    """-n picks the pod's namespace; podserve listens on the pod's containerPort."""
    lab = one_cluster
    lab.kubectl("cluster1", "create", "namespace", "tie")
    k = lab.kube("cluster1")
    k.post("/api/v1/namespaces/tie/pods", pod_body("fighter", port=8080))
    lab.wait_running("cluster1", 1, namespace="tie")
    r = lab.exec("cluster1", "fighter", "cat", "/etc/resolv.conf", namespace="tie")
    assert r.stdout.startswith("search tie.svc.cluster.local svc.cluster.local cluster.local\n"), r.stdout
    r = lab.exec("cluster1", "fighter", "curl", "-sS", "-m", "5", "http://127.0.0.1:8080/", namespace="tie")
    assert json.loads(r.stdout) == {"pod": "fighter", "namespace": "tie", "cluster": "cluster1"}
    r = lab.exec("cluster1", "fighter", "true", check=False)  # not in default
    assert r.returncode != 0 and "no pod default/fighter" in r.stderr
    lab.kubectl("cluster1", "delete", "pod", "-n", "tie", "fighter", "--wait=false")


def test_pod_deletion_removes_netns(one_cluster):
    lab = one_cluster
    victim = lab.wait_running("cluster1", 2, {"name": "rebel-base"})[0]
    rec = next(r for r in lab.pod_records("cluster1") if r["uid"] == victim["metadata"]["uid"])
    lab.kubectl("cluster1", "delete", "pod", victim["metadata"]["name"], "--wait=false")
    wait_for(lambda: not (NETNS_DIR / rec["netns"]).exists() and not (ETC_NETNS / rec["netns"]).exists()
             and not kl.alive(rec["responderPid"], rec["responderStart"]), 15,
             what=f"{rec['netns']} and its responder to go")
    # the Deployment replaces it
    lab.wait_running("cluster1", 2, {"name": "rebel-base"})


def test_kubelet_reconciles_on_start(one_cluster):
    """A kubelet started after changes it missed removes and creates what it must."""
    lab = one_cluster
    st = lab.state()
    kubelet = next(p for p in st["procs"] if p["role"] == "kubelet")
    os.kill(kubelet["pid"], signal.SIGTERM)
    wait_for(lambda: not kl.alive(kubelet["pid"], kubelet["start"]), 15, what="the kubelet to stop")

    wing = lab.wait_running("cluster1", 2, {"name": "x-wing"})[0]
    rec = next(r for r in lab.pod_records("cluster1") if r["uid"] == wing["metadata"]["uid"])
    lab.kubectl("cluster1", "delete", "pod", wing["metadata"]["name"], "--wait=false")
    orphan = f"cwp-{lab.name}-cluster1-orphan"
    run(["ip", "netns", "add", orphan])
    time.sleep(0.5)
    assert (NETNS_DIR / rec["netns"]).exists()  # nobody removed it meanwhile

    cfg = lab.dir / "cluster1" / "kubelet" / "config.json"
    with open(lab.dir / "cluster1" / "kubelet.log", "ab") as log:
        p = subprocess.Popen([sys.executable, Path(kl.__file__), cfg], stdout=log, stderr=log,
                             start_new_session=True)
    try:
        wait_for(lambda: not (NETNS_DIR / rec["netns"]).exists() and not (NETNS_DIR / orphan).exists(),
                 15, what="the stale and the orphan netns to go")
        lab.wait_running("cluster1", 2, {"name": "x-wing"})
        names = {r["name"] for r in lab.pod_records("cluster1")}
        assert wing["metadata"]["name"] not in names
    finally:
        p.terminate()
        p.wait(15)
        run(["ip", "netns", "del", orphan], check=False)


# --- traffic between nodes: the helper's work ---------------------------------------

ROUTED = [("one-cluster.yaml", "tunnel"), ("one-cluster.yaml", "native"),
          ("one-cluster.yaml", "hybrid"), ("two-clusters-routed.yaml", None)]


@pytest.mark.needs_helper
@pytest.mark.parametrize("topology,routing", ROUTED, ids=[f"{t[:-5]}-{r or 'as-written'}" for t, r in ROUTED])
def test_pods_reach_pods_on_other_nodes(make_lab, topology, routing):
    """Every ordered pair of pods of a cluster connects (meshcheck), across nodes included."""
    lab = make_lab(TOPOLOGIES / topology, routing)
    lab.up()
    for c in lab.state()["clusters"]:
        lab.kubectl(c["name"], "apply", "-f", MANIFESTS / "rebel-base.yaml")
    for c in lab.state()["clusters"]:
        pods = lab.wait_running(c["name"], 2, {"name": "rebel-base"}) + \
            lab.wait_running(c["name"], 2, {"name": "x-wing"})
        assert len({p["spec"]["nodeName"] for p in pods}) == len(c["nodes"]), "pods on every node"
        recs = {r["uid"]: r for r in lab.pod_records(c["name"])}
        lines = "".join(f"{NETNS_DIR / recs[p['metadata']['uid']]['netns']} {p['status']['podIP']}\n"
                        for p in pods)
        r = run([MESHCHECK, "-a", "-t", "5"], check=False, input=lines, timeout=120)
        assert r.returncode == 0, f"{c['name']} ({c['routing']}):\n{r.stdout}{r.stderr}"
