"""Tests for kapi.py, the lab's Kubernetes API server stand-in.

They start kapi.py on a free loopback port and drive the real kubectl (1.32)
against it the way a user would, plus raw HTTP for the watch semantics the
Causeway helper depends on.  Run:

    /usr/bin/python3 -m pytest -q test/lab/test_kapi.py
"""

import http.client
import ipaddress
import json
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.parse

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
KAPI = os.path.join(HERE, "kapi.py")
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: rebel-base
  namespace: demo
spec:
  replicas: 2
  selector:
    matchLabels: {app: rebel-base}
  template:
    metadata:
      labels: {app: rebel-base}
    spec:
      containers:
      - name: web
        image: docker.io/library/nginx:1.25
        ports:
        - {name: http, containerPort: 8080}
        env:
        - {name: MESSAGE, value: "one"}
---
apiVersion: v1
kind: Service
metadata:
  name: rebel-base
  namespace: demo
  annotations:
    service.cilium.io/global: "true"
spec:
  selector: {app: rebel-base}
  ports:
  - {name: web, port: 80, targetPort: http}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: demo}
data: {color: blue}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: rebel, namespace: demo}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-xwing, namespace: demo}
spec:
  podSelector: {matchLabels: {app: rebel-base}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: x-wing}}
    ports:
    - {port: 8080, protocol: TCP}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cross-cluster, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: rebel-base}}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: x-wing, io.cilium.k8s.policy.cluster: cluster2}
"""

NODE = """\
apiVersion: v1
kind: Node
metadata:
  name: %(name)s
  labels: {kubernetes.io/hostname: %(name)s}
spec:
  podCIDR: %(cidr)s
  podCIDRs: [%(cidr)s]
  unschedulable: %(unsched)s
status:
  addresses: [{type: InternalIP, address: %(ip)s}]
  conditions: [{type: Ready, status: "%(ready)s", reason: KubeletReady}]
  nodeInfo: {kubeletVersion: v1.32.0}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_certs(d):
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    def run(*a):
        subprocess.run(a, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=kapi-test-ca")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=kapi")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return os.path.join(d, "ca.crt"), os.path.join(d, "server.crt"), os.path.join(d, "server.key")


class PortTaken(Exception):
    pass


class Kapi:
    def __init__(self, tmp, tls=False, token=None, env=None, cidr="10.96.0.0/16", state=False):
        self.tmp = str(tmp)
        self.port = free_port()
        self.tls = tls
        self.token = token
        self.cidr = cidr
        self.dns_dir = os.path.join(self.tmp, "dns")
        self.log = os.path.join(self.tmp, "kapi.log")
        self.state = os.path.join(self.tmp, "state.json") if state else None
        self.env = dict(os.environ, **(env or {}))
        args = [sys.executable, KAPI, "--listen", "127.0.0.1:%d" % self.port, "--cluster", "cluster1",
                "--service-cidr", cidr, "--dns-hosts-dir", self.dns_dir, "--log-file", self.log]
        self.ca = None
        if tls:
            self.ca, cert, key = make_certs(self.tmp)
            args += ["--tls-cert", cert, "--tls-key", key]
        if token:
            tf = os.path.join(self.tmp, "token")
            with open(tf, "w") as f:
                f.write(token + "\n")
            args += ["--token-file", tf]
        if self.state:
            args += ["--state-file", self.state]
        self.args = args
        self.proc = None
        for attempt in range(3):
            try:
                self.start()
                break
            except PortTaken:  # someone took the free port meanwhile: another one
                self.port = free_port()
                args[args.index("--listen") + 1] = "127.0.0.1:%d" % self.port
        else:
            raise RuntimeError("kapi could not find a free port")
        self.kubeconfig = os.path.join(self.tmp, "kubeconfig")
        self.write_kubeconfig(self.kubeconfig, token)
        self.cache = os.path.join(self.tmp, "kcache")

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def start(self):
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()
                self.proc.stderr.close()
                if "Address already in use" in err:
                    raise PortTaken(err)
                raise RuntimeError("kapi exited: %s" % err)
            try:
                code, body = self.request("GET", "/readyz", auth=False, raw=True)
                if code == 200 and body == b"ok":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("kapi did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and not self.proc.stderr.closed:
            self.proc.stderr.close()

    def write_kubeconfig(self, path, token):
        cluster = {"server": self.url}
        if self.ca:
            cluster["certificate-authority"] = self.ca
        user = {"token": token} if token else {}
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "kind-cluster1",
               "clusters": [{"name": "kind-cluster1", "cluster": cluster}],
               "users": [{"name": "kind-cluster1", "user": user}],
               "contexts": [{"name": "kind-cluster1",
                             "context": {"cluster": "kind-cluster1", "user": "kind-cluster1"}}]}
        with open(path, "w") as f:
            json.dump(cfg, f)

    # ---- clients --------------------------------------------------------

    def kubectl(self, *args, check=True, stdin=None, kubeconfig=None):
        cmd = [KUBECTL, "--kubeconfig", kubeconfig or self.kubeconfig, "--cache-dir", self.cache] + list(args)
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise AssertionError("%s failed (%d):\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def kjson(self, *args):
        return json.loads(self.kubectl(*(list(args) + ["-o", "json"])).stdout)

    def conn(self, timeout=10):
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.ca)
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=timeout)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def headers(self, auth=True, ctype=None):
        h = {"Accept": "application/json"}
        if auth and self.token:
            h["Authorization"] = "Bearer " + self.token
        if ctype:
            h["Content-Type"] = ctype
        return h

    def request(self, method, path, body=None, ctype="application/json", auth=True, raw=False):
        c = self.conn()
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data, headers=self.headers(auth, ctype if data else None))
            r = c.getresponse()
            out = r.read()
            if raw:
                return r.status, out
            return r.status, json.loads(out) if out else None
        finally:
            c.close()

    def watch(self, path, timeout=10):
        """Opens a watch; returns (connection, iterator of decoded events)."""
        c = self.conn(timeout=timeout)
        c.request("GET", path, headers=self.headers())
        r = c.getresponse()
        assert r.status == 200, r.read()
        assert r.getheader("Transfer-Encoding") == "chunked"

        def events():
            while True:
                line = r.readline()
                if not line:
                    return
                yield json.loads(line)
        return c, events()

    def hosts(self):
        with open(os.path.join(self.dns_dir, "cluster1.hosts")) as f:
            return f.read()


@pytest.fixture
def kapi(tmp_path):
    k = Kapi(tmp_path)
    yield k
    k.stop()


def wait_for(fn, timeout=5.0, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def pods(k, ns="demo", terminating=False):
    """The pods of @ns; those being deleted (Terminating: a bound pod waits for its kubelet,
    and these tests run none) only when asked for."""
    return [p for p in k.kjson("-n", ns, "get", "pods")["items"]
            if terminating or not p["metadata"].get("deletionTimestamp")]


def slices(k, svc, ns="demo"):
    return k.kjson("-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name=" + svc)["items"]


def set_pod_ready(k, ns, name, ip, ready=True):
    st = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                     "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                     "containerStatuses": [{"name": "web", "ready": ready, "restartCount": 0,
                                            "state": {"running": {}}}]}}
    code, obj = k.request("PATCH", "/api/v1/namespaces/%s/pods/%s/status" % (ns, name), st,
                          ctype="application/merge-patch+json")
    assert code == 200, obj
    return obj


# --------------------------------------------------------------------------


def test_kubectl_user_workflow(kapi, tmp_path):
    k = kapi
    mf = tmp_path / "app.yaml"
    mf.write_text(MANIFEST)
    out = k.kubectl("apply", "-f", str(mf)).stdout
    for line in ("namespace/demo created", "deployment.apps/rebel-base created", "service/rebel-base created",
                 "configmap/settings created", "networkpolicy.networking.k8s.io/only-xwing created",
                 "ciliumnetworkpolicy.cilium.io/cross-cluster created"):
        assert line in out

    # two pods from the template, no node yet
    ps = pods(k)
    assert len(ps) == 2
    for p in ps:
        assert p["metadata"]["name"].startswith("rebel-base-")
        h = p["metadata"]["labels"]["pod-template-hash"]
        assert len(h) == 10 and p["metadata"]["name"].split("-")[2] == h
        assert p["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
        assert p["status"]["phase"] == "Pending"
        assert not p["spec"].get("nodeName")

    svc = k.kjson("-n", "demo", "get", "service", "rebel-base")
    ip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/16")
    assert svc["metadata"]["annotations"]["service.cilium.io/global"] == "true"
    assert "%s rebel-base.demo.svc.cluster.local\n" % ip in k.hosts()
    assert "10.96.0.1 kubernetes.default.svc.cluster.local\n" in k.hosts()

    # policies
    cnp = k.kjson("-n", "demo", "get", "cnp", "cross-cluster")
    assert cnp["kind"] == "CiliumNetworkPolicy" and cnp["apiVersion"] == "cilium.io/v2"
    assert cnp["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"]["io.cilium.k8s.policy.cluster"] == "cluster2"
    np = k.kjson("-n", "demo", "get", "netpol", "only-xwing")
    assert np["spec"]["ingress"][0]["ports"][0]["port"] == 8080
    assert "cross-cluster" in k.kubectl("-n", "demo", "get", "ciliumnetworkpolicies").stdout

    # a Ready node appears: the pods get scheduled on it
    nf = tmp_path / "node.yaml"
    nf.write_text(NODE % {"name": "node-a", "cidr": "10.1.1.0/24", "ip": "192.168.1.1", "ready": "True",
                          "unsched": "false"})
    assert "node/node-a created" in k.kubectl("create", "-f", str(nf)).stdout
    nodes_out = k.kubectl("get", "nodes").stdout
    assert "node-a" in nodes_out and "Ready" in nodes_out
    assert all(p["spec"]["nodeName"] == "node-a" for p in pods(k))

    # the kubelet's status writes make them endpoints
    assert slices(k, "rebel-base")[0]["endpoints"] == []
    for i, p in enumerate(sorted(pods(k), key=lambda p: p["metadata"]["name"])):
        set_pod_ready(k, "demo", p["metadata"]["name"], "10.1.1.%d" % (10 + i))
    sl = slices(k, "rebel-base")
    assert len(sl) == 1
    s = sl[0]
    assert s["metadata"]["name"].startswith("rebel-base-") and len(s["metadata"]["name"]) == len("rebel-base-") + 5
    assert s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert s["addressType"] == "IPv4"
    assert s["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    assert sorted(e["addresses"][0] for e in s["endpoints"]) == ["10.1.1.10", "10.1.1.11"]
    for e in s["endpoints"]:
        assert e["conditions"] == {"ready": True, "serving": True, "terminating": False}
        assert e["nodeName"] == "node-a" and e["targetRef"]["kind"] == "Pod"
    dep = k.kjson("-n", "demo", "get", "deployment", "rebel-base")
    assert dep["status"]["readyReplicas"] == 2 and dep["status"]["availableReplicas"] == 2
    assert "2/2" in k.kubectl("-n", "demo", "get", "deployments").stdout
    k.kubectl("-n", "demo", "rollout", "status", "deployment/rebel-base", "--timeout=5s")
    wide = k.kubectl("-n", "demo", "get", "pods", "-o", "wide").stdout
    assert "10.1.1.10" in wide and "node-a" in wide and "Running" in wide

    # not ready any more -> endpoint stays, ready false
    name0 = sorted(p["metadata"]["name"] for p in pods(k))[0]
    set_pod_ready(k, "demo", name0, "10.1.1.10", ready=False)
    eps = {e["addresses"][0]: e for e in slices(k, "rebel-base")[0]["endpoints"]}
    assert eps["10.1.1.10"]["conditions"]["ready"] is False
    assert eps["10.1.1.11"]["conditions"]["ready"] is True

    # annotate, remove the annotation, label
    k.kubectl("-n", "demo", "annotate", "service", "rebel-base", 'service.cilium.io/shared=false', "--overwrite")
    ann = k.kjson("-n", "demo", "get", "service", "rebel-base")["metadata"]["annotations"]
    assert ann["service.cilium.io/shared"] == "false" and ann["service.cilium.io/global"] == "true"
    k.kubectl("-n", "demo", "annotate", "service", "rebel-base", "service.cilium.io/shared-")
    ann = k.kjson("-n", "demo", "get", "service", "rebel-base")["metadata"]["annotations"]
    assert "service.cilium.io/shared" not in ann and ann["service.cilium.io/global"] == "true"
    k.kubectl("-n", "demo", "label", "service", "rebel-base", "tier=front")
    assert k.kubectl("-n", "demo", "get", "svc", "-l", "tier=front", "-o", "name").stdout.strip() == \
        "service/rebel-base"
    assert k.kubectl("-n", "demo", "get", "svc", "-l", "tier!=front", "-o", "name").stdout.strip() == ""
    assert k.kjson("-n", "demo", "get", "service", "rebel-base")["spec"]["clusterIP"] == ip

    # scale to zero: pods go, the slice empties; and back
    k.kubectl("-n", "demo", "scale", "deployment", "rebel-base", "--replicas=0")
    assert pods(k) == []
    sl = slices(k, "rebel-base")
    assert len(sl) == 1 and [e for e in sl[0]["endpoints"] if e["conditions"].get("ready")] == []
    assert all(e["conditions"].get("terminating") for e in sl[0]["endpoints"])
    k.kubectl("-n", "demo", "scale", "deployment", "rebel-base", "--replicas=3")
    assert len(pods(k)) == 3

    # re-apply a changed manifest: new template (pods replaced), new port, annotations kept
    changed = (MANIFEST.replace("replicas: 2", "replicas: 1").replace('value: "one"', 'value: "two"')
               .replace("nginx:1.25", "nginx:1.26").replace("port: 80,", "port: 8080,")
               .replace("color: blue", "color: red"))
    mf.write_text(changed)
    out = k.kubectl("apply", "-f", str(mf)).stdout
    assert "deployment.apps/rebel-base configured" in out and "configmap/settings configured" in out
    assert "namespace/demo unchanged" in out
    ps = pods(k)
    assert len(ps) == 1
    c = ps[0]["spec"]["containers"][0]
    assert c["image"] == "docker.io/library/nginx:1.26" and c["env"] == [{"name": "MESSAGE", "value": "two"}]
    assert ps[0]["spec"]["nodeName"] == "node-a"
    svc = k.kjson("-n", "demo", "get", "service", "rebel-base")
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080]
    assert svc["spec"]["clusterIP"] == ip
    assert svc["metadata"]["labels"] == {"tier": "front"}
    assert k.kjson("-n", "demo", "get", "configmap", "settings")["data"] == {"color": "red"}
    assert "unchanged" in k.kubectl("apply", "-f", str(mf)).stdout

    # get variants
    assert "rebel-base" in k.kubectl("get", "pods", "-A").stdout
    assert k.kubectl("-n", "demo", "get", "deploy", "-o", "name").stdout.strip() == "deployment.apps/rebel-base"
    assert "kind: Service" in k.kubectl("-n", "demo", "get", "svc", "rebel-base", "-o", "yaml").stdout

    # delete -f: everything goes, and the DNS record with it
    out = k.kubectl("delete", "-f", str(mf)).stdout
    assert 'namespace "demo" deleted' in out and 'deployment.apps "rebel-base" deleted' in out
    assert "demo" not in k.kubectl("get", "namespaces", "-o", "name").stdout
    assert k.kjson("get", "pods", "-A")["items"] == []
    assert k.kjson("get", "endpointslices", "-A")["items"] == []
    assert "rebel-base" not in k.hosts()


def test_kubectl_get_watch(kapi, tmp_path):
    k = kapi
    k.kubectl("create", "namespace", "demo")
    k.kubectl("-n", "demo", "create", "deployment", "web", "--image=nginx", "--replicas=1")
    cmd = [KUBECTL, "--kubeconfig", k.kubeconfig, "--cache-dir", k.cache, "-n", "demo", "get", "pods",
           "-w", "--output-watch-events"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "EVENT" in p.stdout.readline()
        assert p.stdout.readline().startswith("ADDED")
        k.kubectl("-n", "demo", "scale", "deployment", "web", "--replicas=2")
        line = p.stdout.readline()
        assert line.startswith("ADDED") and "web-" in line
        k.kubectl("-n", "demo", "delete", "pod", line.split()[1])
        seen = []
        while not any(x.startswith("DELETED") for x in seen):
            seen.append(p.stdout.readline())
    finally:
        p.terminate()
        p.wait(5)
        p.stdout.close()
        p.stderr.close()


def test_https_and_token(tmp_path):
    k = Kapi(tmp_path, tls=True, token="s3cret-token")
    try:
        assert "default" in k.kubectl("get", "namespaces").stdout
        k.kubectl("create", "configmap", "c1", "--from-literal=a=b")
        assert k.kjson("get", "configmap", "c1")["data"] == {"a": "b"}
        # no token / wrong token: 401 Status
        code, st = k.request("GET", "/api/v1/namespaces", auth=False)
        assert code == 401 and st["kind"] == "Status" and st["reason"] == "Unauthorized"
        bad = os.path.join(k.tmp, "bad-kubeconfig")
        k.write_kubeconfig(bad, "wrong")
        p = k.kubectl("get", "pods", check=False, kubeconfig=bad)
        assert p.returncode != 0 and "Unauthorized" in p.stderr + p.stdout
        # a watch over TLS
        code, lst = k.request("GET", "/api/v1/namespaces/default/configmaps")
        c, ev = k.watch("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=" +
                        lst["metadata"]["resourceVersion"])
        k.kubectl("delete", "configmap", "c1")
        e = next(ev)
        c.close()
        assert e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "c1"
        # health needs no token
        assert k.request("GET", "/readyz", auth=False, raw=True) == (200, b"ok")
        code, v = k.request("GET", "/version", auth=False)
        assert code == 200 and v["gitVersion"].startswith("v1.32")
    finally:
        k.stop()


def test_watch_semantics(tmp_path):
    k = Kapi(tmp_path, env={"KAPI_BOOKMARK_SECONDS": "0.3"})
    try:
        base = "/api/v1/namespaces/default/configmaps"
        code, lst = k.request("GET", base)
        assert code == 200 and lst["kind"] == "ConfigMapList" and lst["items"] == []
        rv0 = lst["metadata"]["resourceVersion"]
        # changes after rv0 (plus unrelated kinds in between)
        k.request("POST", base, {"metadata": {"name": "a"}, "data": {"x": "1"}})
        k.request("POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}})
        k.request("PATCH", base + "/a", {"data": {"x": "2"}}, ctype="application/merge-patch+json")
        k.request("POST", base, {"metadata": {"name": "b"}})
        k.request("DELETE", base + "/a")
        c, ev = k.watch(base + "?watch=1&resourceVersion=" + rv0 + "&timeoutSeconds=2")
        got = [(e["type"], e["object"]["metadata"]["name"]) for e in ev]
        c.close()
        assert got == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]

        # many idle watches do not hold up other requests
        idle = [k.watch(base + "?watch=1")[0] for _ in range(30)]
        t0 = time.time()
        for i in range(10):
            assert k.request("GET", base)[0] == 200
        assert time.time() - t0 < 2
        for c in idle:
            c.close()

        # resourceVersion 0: synthetic ADDED for what exists, then the stream; RVs increase
        c, ev = k.watch(base + "?watch=true&resourceVersion=0")
        e = next(ev)
        assert (e["type"], e["object"]["metadata"]["name"]) == ("ADDED", "b")
        k.request("POST", base, {"metadata": {"name": "c"}})
        e2 = next(ev)
        assert (e2["type"], e2["object"]["metadata"]["name"]) == ("ADDED", "c")
        assert int(e2["object"]["metadata"]["resourceVersion"]) > int(e["object"]["metadata"]["resourceVersion"])
        c.close()

        # bookmarks carry the current RV
        code, lst = k.request("GET", base)
        c, ev = k.watch(base + "?watch=1&allowWatchBookmarks=true&resourceVersion=" +
                        lst["metadata"]["resourceVersion"])
        e = next(ev)
        assert e["type"] == "BOOKMARK" and e["object"]["kind"] == "ConfigMap"
        assert int(e["object"]["metadata"]["resourceVersion"]) >= int(lst["metadata"]["resourceVersion"])
        c.close()

        # a filtered watch (as the kubelet does): a pod entering the filter is ADDED
        k.request("POST", "/api/v1/nodes", {"metadata": {"name": "n1"},
                                            "status": {"conditions": [{"type": "Ready", "status": "False"}]}})
        c, ev = k.watch("/api/v1/pods?watch=1&fieldSelector=" + urllib.parse.quote("spec.nodeName=n1"))
        k.request("POST", "/api/v1/namespaces/default/pods",
                  {"metadata": {"name": "p1"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
        k.request("PATCH", "/api/v1/nodes/n1/status", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                  ctype="application/strategic-merge-patch+json")
        e = next(ev)
        assert e["type"] == "ADDED" and e["object"]["spec"]["nodeName"] == "n1"
        # A bound pod is deleted gracefully: MODIFIED (Terminating) while its grace
        # period runs (no kubelet here to finish it), then DELETED when forced.
        k.request("DELETE", "/api/v1/namespaces/default/pods/p1")
        e = next(ev)
        assert e["type"] == "MODIFIED" and e["object"]["metadata"].get("deletionTimestamp")
        k.request("DELETE", "/api/v1/namespaces/default/pods/p1",
                  {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        e = next(ev)
        assert e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "p1"
        c.close()

        # label-selector watch: a label change in and out of the selector
        c, ev = k.watch(base + "?watch=1&labelSelector=team%3Dred")
        k.request("PATCH", base + "/b", {"metadata": {"labels": {"team": "red"}}},
                  ctype="application/merge-patch+json")
        assert next(ev)["type"] == "ADDED"
        k.request("PATCH", base + "/b", {"metadata": {"labels": {"team": "blue"}}},
                  ctype="application/merge-patch+json")
        assert next(ev)["type"] == "DELETED"
        c.close()

        # sendInitialEvents: ADDED for the state, then a bookmark marking its end
        c, ev = k.watch(base + "?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
                        "&resourceVersionMatch=NotOlderThan")
        names = []
        for e in ev:
            if e["type"] == "BOOKMARK":
                assert e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
                break
            names.append(e["object"]["metadata"]["name"])
        assert names == ["b", "c"]
        c.close()
    finally:
        k.stop()


def test_watch_expired_resource_version(tmp_path):
    k = Kapi(tmp_path, env={"KAPI_HISTORY": "20"})
    try:
        base = "/api/v1/namespaces/default/configmaps"
        code, lst = k.request("GET", base)
        old = lst["metadata"]["resourceVersion"]
        for i in range(30):
            k.request("POST", base, {"metadata": {"name": "c%d" % i}})
        # paging with limit/continue sees every object once
        seen, cont = [], ""
        while True:
            code, page = k.request("GET", base + "?limit=7" + ("&continue=" + urllib.parse.quote(cont) if cont else ""))
            seen += [o["metadata"]["name"] for o in page["items"]]
            cont = page["metadata"].get("continue")
            if not cont:
                break
        assert sorted(seen) == sorted("c%d" % i for i in range(30))
        assert len(k.kubectl("get", "configmaps", "--chunk-size=4", "-o", "name").stdout.split()) == 30
        c, ev = k.watch(base + "?watch=1&resourceVersion=" + old)
        e = next(ev)
        c.close()
        assert e["type"] == "ERROR"
        st = e["object"]
        assert st["kind"] == "Status" and st["code"] == 410 and st["reason"] == "Expired"
        assert "too old resource version" in st["message"]
        # an RV from the future (a client of an earlier kapi) must relist too
        c, ev = k.watch(base + "?watch=1&resourceVersion=%d" % (int(lst["metadata"]["resourceVersion"]) + 10 ** 9))
        e = next(ev)
        c.close()
        assert e["type"] == "ERROR" and e["object"]["code"] == 410
        # a fresh list gives an RV that works
        code, lst = k.request("GET", base)
        c, ev = k.watch(base + "?watch=1&timeoutSeconds=1&resourceVersion=" + lst["metadata"]["resourceVersion"])
        assert list(ev) == []
        c.close()
    finally:
        k.stop()


def test_errors_conflicts_and_patches(kapi):
    k = kapi
    base = "/api/v1/namespaces/default/configmaps"
    code, cm = k.request("POST", base, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    assert code == 201 and cm["metadata"]["uid"] and cm["metadata"]["creationTimestamp"]
    code, st = k.request("POST", base, {"metadata": {"name": "c"}})
    assert code == 409 and st["reason"] == "AlreadyExists"
    # update with the current RV works, the stale one is a 409 Conflict
    stale = dict(cm, data={"a": "2"})
    code, cm2 = k.request("PUT", base + "/c", stale)
    assert code == 200 and cm2["data"] == {"a": "2"}
    assert int(cm2["metadata"]["resourceVersion"]) > int(cm["metadata"]["resourceVersion"])
    code, st = k.request("PUT", base + "/c", dict(cm, data={"a": "3"}))
    assert code == 409 and st["reason"] == "Conflict" and st["kind"] == "Status"
    # a no-op update keeps the RV
    code, cm3 = k.request("PUT", base + "/c", cm2)
    assert cm3["metadata"]["resourceVersion"] == cm2["metadata"]["resourceVersion"]
    code, st = k.request("GET", base + "/nope")
    assert code == 404 and st["reason"] == "NotFound" and st["details"]["name"] == "nope"
    code, st = k.request("GET", "/apis/apps/v1/namespaces/default/deployments/nope")
    assert st["message"] == 'deployments.apps "nope" not found'
    # json patch, generateName, dryRun
    code, p = k.request("PATCH", base + "/c", [{"op": "add", "path": "/data/b", "value": "x"},
                                              {"op": "remove", "path": "/data/a"}],
                        ctype="application/json-patch+json")
    assert code == 200 and p["data"] == {"b": "x"}
    code, st = k.request("PATCH", base + "/c", {"data": {}}, ctype="text/plain")
    assert code == 415
    code, g = k.request("POST", base, {"metadata": {"generateName": "gen-"}})
    assert code == 201 and g["metadata"]["name"].startswith("gen-") and len(g["metadata"]["name"]) == 9
    code, d = k.request("POST", base + "?dryRun=All", {"metadata": {"name": "dry"}})
    assert code == 201
    assert k.request("GET", base + "/dry")[0] == 404
    # objects in a missing namespace are refused
    code, st = k.request("POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}})
    assert code == 404
    # strategic merge patch on containers by name and env by name
    dep = {"metadata": {"name": "d"}, "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
           "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
               {"name": "one", "image": "i1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
               {"name": "two", "image": "i2"}]}}}}
    code, _ = k.request("POST", "/apis/apps/v1/namespaces/default/deployments", dep)
    assert code == 201
    smp = {"spec": {"template": {"spec": {"containers": [
        {"name": "two", "image": "i2b"},
        {"name": "one", "env": [{"name": "Y", "value": "3"}, {"name": "X", "$patch": "delete"}]}]}}}}
    code, d = k.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/d", smp,
                        ctype="application/strategic-merge-patch+json")
    assert code == 200, d
    cs = {c["name"]: c for c in d["spec"]["template"]["spec"]["containers"]}
    assert cs["two"]["image"] == "i2b" and cs["one"]["image"] == "i1"
    assert cs["one"]["env"] == [{"name": "Y", "value": "3"}]
    assert d["metadata"]["generation"] == 2
    # status is only written through /status, and /status touches only status
    code, d2 = k.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/d",
                         {"status": {"replicas": 7}}, ctype="application/merge-patch+json")
    assert d2.get("status", {}).get("replicas") != 7
    code, p = k.request("POST", "/api/v1/namespaces/default/pods",
                        {"metadata": {"name": "p", "labels": {"a": "1"}},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}})
    code, p2 = k.request("PATCH", "/api/v1/namespaces/default/pods/p/status",
                         {"metadata": {"labels": {"a": "2"}}, "spec": {"nodeName": "zz"},
                          "status": {"podIP": "10.0.0.9"}}, ctype="application/merge-patch+json")
    assert code == 200 and p2["status"]["podIP"] == "10.0.0.9" and p2["status"]["phase"] == "Pending"
    assert p2["metadata"]["labels"] == {"a": "1"} and not p2["spec"].get("nodeName")
    # deleting a Deployment deletes its pods (ownerReferences)
    k.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/d/scale", {"spec": {"replicas": 2}},
              ctype="application/merge-patch+json")
    code, lst = k.request("GET", "/api/v1/namespaces/default/pods?labelSelector=a%3Db")
    assert len(lst["items"]) == 2
    k.request("DELETE", "/apis/apps/v1/namespaces/default/deployments/d")
    code, lst = k.request("GET", "/api/v1/namespaces/default/pods?labelSelector=a%3Db")
    assert lst["items"] == []


def test_cluster_ips(tmp_path):
    cidr = "10.99.0.0/27"
    k = Kapi(tmp_path, cidr=cidr)
    try:
        net = ipaddress.ip_network(cidr)
        base = "/api/v1/namespaces/default/services"
        code, kube = k.request("GET", base + "/kubernetes")
        assert kube["spec"]["clusterIP"] == "10.99.0.1"
        ips = {kube["spec"]["clusterIP"]}
        code, fixed = k.request("POST", base, {"metadata": {"name": "fixed"},
                                               "spec": {"clusterIP": "10.99.0.20", "ports": [{"port": 1}]}})
        assert code == 201 and fixed["spec"]["clusterIPs"] == ["10.99.0.20"]
        ips.add("10.99.0.20")
        for i in range(20):
            code, s = k.request("POST", base, {"metadata": {"name": "s%d" % i},
                                               "spec": {"selector": {"app": "s%d" % i}, "ports": [{"port": 80}]}})
            assert code == 201, s
            ip = s["spec"]["clusterIP"]
            a = ipaddress.ip_address(ip)
            assert a in net and a != net.network_address and a != net.broadcast_address
            assert ip not in ips
            ips.add(ip)
        code, st = k.request("POST", base, {"metadata": {"name": "dup"},
                                            "spec": {"clusterIP": "10.99.0.20", "ports": [{"port": 1}]}})
        assert code == 422 and st["reason"] == "Invalid"
        code, st = k.request("POST", base, {"metadata": {"name": "out"},
                                            "spec": {"clusterIP": "10.1.2.3", "ports": [{"port": 1}]}})
        assert code == 422
        code, h = k.request("POST", base, {"metadata": {"name": "headless"},
                                           "spec": {"clusterIP": "None", "selector": {"a": "b"}}})
        assert code == 201 and h["spec"]["clusterIP"] == "None"
        # freed addresses are reusable; the CIDR is full otherwise (30 usable, 24 taken)
        k.request("DELETE", base + "/s0")
        hosts = k.hosts()
        assert "s0.default" not in hosts and "10.99.0.20 fixed.default.svc.cluster.local" in hosts
        assert len(hosts.splitlines()) == 21
        # PUT without clusterIP keeps it
        code, s1 = k.request("GET", base + "/s1")
        ip1 = s1["spec"]["clusterIP"]
        del s1["spec"]["clusterIP"]
        del s1["spec"]["clusterIPs"]
        code, s1b = k.request("PUT", base + "/s1", s1)
        assert code == 200 and s1b["spec"]["clusterIP"] == ip1
        # NodePort allocation
        code, np = k.request("POST", base, {"metadata": {"name": "np"},
                                            "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
        assert 30000 <= np["spec"]["ports"][0]["nodePort"] <= 32767
    finally:
        k.stop()


def test_scheduler(kapi, tmp_path):
    k = kapi
    k.kubectl("create", "namespace", "demo")
    f = tmp_path / "nodes.yaml"
    f.write_text("---\n".join(
        NODE % {"name": name, "cidr": "10.2.0.0/24", "ip": "192.168.0.1", "ready": ready, "unsched": unsched}
        for name, ready, unsched in (("n1", "True", "false"), ("n2", "True", "false"),
                                     ("n3", "False", "false"), ("n4", "True", "true"))))
    k.kubectl("create", "-f", str(f))
    k.kubectl("-n", "demo", "create", "deployment", "web", "--image=nginx", "--replicas=4")
    placed = sorted(p["spec"]["nodeName"] for p in pods(k))
    assert placed == ["n1", "n1", "n2", "n2"]
    out = k.kubectl("get", "nodes").stdout
    assert "NotReady" in out and "SchedulingDisabled" in out
    # a second deployment spreads by its own pods first
    k.kubectl("-n", "demo", "create", "deployment", "api", "--image=nginx", "--replicas=2")
    api = [p["spec"]["nodeName"] for p in pods(k) if p["metadata"]["name"].startswith("api-")]
    assert sorted(api) == ["n1", "n2"]
    # scale down removes the newest first
    names = [p["metadata"]["name"] for p in sorted(
        [p for p in pods(k) if p["metadata"]["name"].startswith("web-")],
        key=lambda p: int(p["metadata"]["resourceVersion"]))]
    k.kubectl("-n", "demo", "scale", "deployment", "web", "--replicas=3")
    # the one removed is Terminating (no kubelet here to finish it), as kubectl shows it
    left = {p["metadata"]["name"] for p in pods(k) if p["metadata"]["name"].startswith("web-")}
    assert left == set(names[:3])
    gone = [p for p in pods(k, terminating=True) if p["metadata"]["name"] == names[3]]
    assert gone and gone[0]["metadata"].get("deletionTimestamp")
    # no Ready node left: the pods of the deleted nodes are recreated (pod GC + Deployment)
    # and stay Pending without a node, with an Unschedulable condition
    for n in ("n1", "n2", "n4"):
        k.kubectl("delete", "node", n)
    k.kubectl("-n", "demo", "scale", "deployment", "web", "--replicas=5")
    ps = pods(k)
    assert len(ps) == 7 and not left & {p["metadata"]["name"] for p in ps}
    assert all(not p["spec"].get("nodeName") for p in ps)
    cond = {c["type"]: c for c in ps[0]["status"]["conditions"]}
    assert cond["PodScheduled"]["status"] == "False" and cond["PodScheduled"]["reason"] == "Unschedulable"
    assert "Pending" in k.kubectl("-n", "demo", "get", "pods").stdout
    # a Node that goes away takes its pods with it (pod GC); the Deployment recreates them
    f.write_text(NODE % {"name": "n5", "cidr": "10.2.5.0/24", "ip": "192.168.0.5", "ready": "True",
                         "unsched": "false"})
    k.kubectl("create", "-f", str(f))
    assert {p["spec"].get("nodeName") for p in pods(k)} == {"n5"}
    before = {p["metadata"]["name"] for p in pods(k)}
    k.kubectl("delete", "node", "n5")
    after = pods(k)
    assert len(after) == 7 and not before & {p["metadata"]["name"] for p in after}
    assert all(not p["spec"].get("nodeName") for p in after)


def test_state_file_survives_restart(tmp_path):
    k = Kapi(tmp_path, state=True)
    try:
        k.kubectl("create", "namespace", "keep")
        k.kubectl("-n", "keep", "create", "configmap", "c", "--from-literal=a=b")
        code, lst = k.request("GET", "/api/v1/namespaces/keep/configmaps")
        rv = int(lst["metadata"]["resourceVersion"])
        time.sleep(0.5)
        k.stop()
        k.start()
        assert k.kjson("-n", "keep", "get", "configmap", "c")["data"] == {"a": "b"}
        code, lst = k.request("GET", "/api/v1/namespaces/keep/configmaps")
        assert int(lst["metadata"]["resourceVersion"]) >= rv
        # the history did not survive: an older RV is Expired, the current one works
        c, ev = k.watch("/api/v1/namespaces/keep/configmaps?watch=1&resourceVersion=%d" % (rv - 3))
        assert next(ev)["type"] == "ERROR"
        c.close()
    finally:
        k.stop()


def dns_a(port, name):
    """The A records dnsmasq on 127.0.0.1:port answers for name (a minimal DNS client)."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    try:
        s.sendto(q, ("127.0.0.1", port))
        data = s.recv(1500)
    except OSError:  # not listening yet
        return None
    finally:
        s.close()
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    assert rid == qid

    def skip_name(i):
        while True:
            n = data[i]
            if n == 0:
                return i + 1
            if n & 0xC0 == 0xC0:
                return i + 2
            i += n + 1
    i = 12
    for _ in range(qd):
        i = skip_name(i) + 4
    out = []
    for _ in range(an):
        i = skip_name(i)
        typ, _, _, rdlen = struct.unpack(">HHIH", data[i:i + 10])
        i += 10
        if typ == 1:
            out.append(socket.inet_ntoa(data[i:i + rdlen]))
        i += rdlen
    return sorted(out)


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
def test_dns_through_dnsmasq(kapi):
    """The hosts file drives a real dnsmasq (--hostsdir) as the lab runs it."""
    k = kapi
    while True:  # dnsmasq listens on TCP and UDP: a port free for both
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    cmd = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--no-resolv",
           "--no-hosts", "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1", "--port=%d" % port,
           "--hostsdir=" + k.dns_dir, "--domain=cluster.local", "--local=/cluster.local/", "--log-facility=-"]
    if os.geteuid() == 0:
        cmd.append("--user=root")
    d = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        fq = "web.default.svc.cluster.local"

        def up():
            if d.poll() is not None:
                raise AssertionError("dnsmasq exited: " + d.stderr.read())
            return dns_a(port, "kubernetes.default.svc.cluster.local") == ["10.96.0.1"]
        wait_for(up, timeout=10, what="dnsmasq")
        assert dns_a(port, fq) == []
        code, svc = k.request("POST", "/api/v1/namespaces/default/services",
                              {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
        ip = svc["spec"]["clusterIP"]
        wait_for(lambda: dns_a(port, fq) == [ip], what="the new record")
        k.request("DELETE", "/api/v1/namespaces/default/services/web")
        wait_for(lambda: dns_a(port, fq) == [], what="the record to go")
        code, svc = k.request("POST", "/api/v1/namespaces/default/services",
                              {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
        assert svc["spec"]["clusterIP"] != ip
        wait_for(lambda: dns_a(port, fq) == [svc["spec"]["clusterIP"]], what="the replaced record")
    finally:
        d.terminate()
        d.wait(5)
        d.stderr.close()
