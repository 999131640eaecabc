#!/usr/bin/python3
"""The lab's kubelet: one process per cluster, in the root network namespace.

    kubelet.py CONFIG.json

It list/watches the Pods of the cluster's API (test/lab/kapi.py) and plays
kubelet for those bound to the cluster's nodes, with a network namespace
standing in for the pod sandbox and build/tools/podserve for its containers:

  new pod      record it (pods/<uid>.json, written before anything is made,
               so that whatever exists can be undone), create netns
               cwp-<lab>-<cluster>-…, write /etc/netns/<netns>/resolv.conf
               and hosts as kubelet does for a ClusterFirst pod, CNI ADD
               through build/cnirunner (libcni) inside the node netns with
               the node's conflist, start podserve inside the pod netns on
               every TCP containerPort (80 if none), PATCH pods/NAME/status
               to Running.  A failed ADD is DELed, as runtimes do, and
               retried with backoff (the plugin refuses while the helper has
               not published the node's PodCIDR yet); the error is shown in
               the pod's status conditions.
  pod gone     stop its podserve, CNI DEL, delete the netns and /etc/netns
               dir, forget the record.  A pod being deleted gracefully
               (deletionTimestamp) is torn down, then deleted for good.
  start        reconcile: pods without a sandbox get one, sandboxes (records
               or cwp- namespaces) of pods that no longer exist are removed.

Scheduling is kapi's (it binds pods to Ready nodes).  SIGTERM stops it without touching the pods, as stopping
a real kubelet leaves containers running; the next start adopts them.

The module also holds the small Kubernetes client (Kube) that the lab script
and the tests use.
"""

import http.client
import json
import os
import queue
import random
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import urlencode, urlparse

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")


# --- the Kubernetes client ---------------------------------------------------

class ApiError(Exception):
    def __init__(self, method, path, status, body):
        self.status = status
        self.body = body
        msg = body.get("message") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{method} {path}: HTTP {status}: {msg}")


class Kube:
    """Just enough of a Kubernetes API client: TLS with the lab CA, a bearer token."""

    def __init__(self, server, ca_file, token_file=None, token=None, timeout=30):
        u = urlparse(server)
        self.host, self.port = u.hostname, u.port or 443
        self.ctx = ssl.create_default_context(cafile=str(ca_file))
        if token is None and token_file:
            token = Path(token_file).read_text().strip()
        self.headers = {"Accept": "application/json", "User-Agent": "causeway-lab"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _conn(self, timeout):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method, path, body=None, ctype="application/json", query=None, timeout=None):
        """The decoded JSON reply; raises ApiError on a status >= 300."""
        if query:
            path += "?" + urlencode(query)
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = ctype
        c = self._conn(timeout or self.timeout)
        try:
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
        finally:
            c.close()
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = raw.decode(errors="replace")
        if r.status >= 300:
            raise ApiError(method, path, r.status, doc)
        return doc

    def get(self, path, **q):
        return self.request("GET", path, query=q or None)

    def post(self, path, body):
        return self.request("POST", path, body)

    def merge_patch(self, path, body):
        return self.request("PATCH", path, body, ctype="application/merge-patch+json")

    def delete(self, path, **q):
        return self.request("DELETE", path, query=q or None)

    def watch(self, path, resource_version, timeout_seconds=300):
        """Yield the events of one watch request until the server ends it."""
        q = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
             "timeoutSeconds": str(timeout_seconds)}
        c = self._conn(timeout_seconds + 30)
        try:
            c.request("GET", path + "?" + urlencode(q), headers=self.headers)
            r = c.getresponse()
            if r.status >= 300:
                raw = r.read()
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = raw.decode(errors="replace")
                raise ApiError("GET", path + " (watch)", r.status, doc)
            while True:
                line = r.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            c.close()

    def ready(self):
        try:
            c = self._conn(2)
            try:
                c.request("GET", "/readyz", headers=self.headers)
                return c.getresponse().status == 200
            finally:
                c.close()
        except (OSError, http.client.HTTPException):
            return False


# --- processes and namespaces -------------------------------------------------

def proc_start_time(pid):
    """Start time of pid in clock ticks, None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid, start_time=None):
    st = proc_start_time(pid)
    return st is not None and (start_time is None or st == start_time)


def stop_pid(pid, start_time=None, grace=5.0, child=None):
    """TERM, then KILL after grace seconds; only if pid is still the process we started."""
    if not alive(pid, start_time):
        if child is not None:
            child.poll()
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if child is not None and child.poll() is not None:
            return True
        if not alive(pid, start_time):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    end = time.monotonic() + 5
    while time.monotonic() < end:
        if child is not None and child.poll() is not None:
            return True
        if not alive(pid, start_time):
            return True
        time.sleep(0.05)
    return False


def netns_id(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_netns(paths):
    """{pid: netns path} of the processes living in any of these namespaces."""
    ids = {}
    for p in paths:
        i = netns_id(p)
        if i is not None:
            ids[i] = str(p)
    out = {}
    if not ids:
        return out
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        i = netns_id(d / "ns" / "net")
        if i in ids:
            out[int(d.name)] = ids[i]
    return out


def sh(argv, timeout=60, check=True, input=None):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                       input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}: "
                           f"{(p.stderr or p.stdout).strip()[-1000:]}")
    return p


def write_atomic(path, text, mode=0o644):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def log(msg):
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
    sys.stderr.flush()


# --- the kubelet ---------------------------------------------------------------

class Stop(Exception):
    pass


class Kubelet:
    WORKERS = 4
    RESYNC = 30.0             # seconds between full resyncs of every pod
    BACKOFF = (0.5, 10.0)     # first and longest wait between ADD attempts

    def __init__(self, cfg):
        self.cfg = cfg
        self.cluster = cfg["cluster"]
        self.nodes = cfg["nodes"]
        self.kube = Kube(cfg["server"], cfg["ca"], cfg["tokenFile"])
        self.state = Path(cfg["stateDir"])
        self.pods_dir = self.state / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = cfg["podNetnsPrefix"]
        self.lock = threading.Lock()
        self.desired = {}         # uid -> pod object (bound to one of our nodes)
        self.queue = queue.Queue()
        self.queued, self.running, self.dirty = set(), set(), set()
        self.children = {}        # uid -> Popen of its podserve, when we started it
        self.backoff = {}         # uid -> seconds before the next ADD attempt
        self.last_error = {}      # uid -> last message reported in the pod status
        self.stopping = threading.Event()

    # --- records ---

    def record_path(self, uid):
        return self.pods_dir / f"{uid}.json"

    def load_record(self, uid):
        try:
            return json.loads(self.record_path(uid).read_text())
        except (OSError, ValueError):
            return None

    def save_record(self, rec):
        write_atomic(self.record_path(rec["uid"]), json.dumps(rec, indent=1) + "\n")

    def records(self):
        out = {}
        for f in self.pods_dir.glob("*.json"):
            try:
                rec = json.loads(f.read_text())
                out[rec["uid"]] = rec
            except (OSError, ValueError, KeyError):
                log(f"ignoring unreadable record {f}")
        return out

    def netns_name(self, pod):
        m = pod["metadata"]
        base = f"{self.prefix}{m['namespace']}-{m['name']}"
        # netns names are file names under /run/netns and /etc/netns
        if len(base) > 180:
            base = base[:180]
        return f"{base}-{m['uid'].replace('-', '')[:6]}"

    # --- the work queue: one sync per pod at a time, re-run if it changed meanwhile ---

    def enqueue(self, uid, delay=0.0):
        if delay > 0:
            t = threading.Timer(delay, self.enqueue, (uid,))
            t.daemon = True
            t.start()
            return
        with self.lock:
            if uid in self.running:
                self.dirty.add(uid)
            elif uid not in self.queued:
                self.queued.add(uid)
                self.queue.put(uid)

    def worker(self):
        while not self.stopping.is_set():
            try:
                uid = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self.lock:
                self.queued.discard(uid)
                self.running.add(uid)
            try:
                self.sync(uid)
            except Exception:
                log(f"sync of pod {uid} failed:\n{traceback.format_exc()}")
                self.enqueue(uid, delay=5.0)
            finally:
                with self.lock:
                    self.running.discard(uid)
                    again = uid in self.dirty
                    self.dirty.discard(uid)
                if again:
                    self.enqueue(uid)

    # --- what a pod needs ---

    @staticmethod
    def ports(pod):
        ports = []
        for c in pod["spec"].get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("protocol", "TCP") == "TCP" and p.get("containerPort") and \
                        p["containerPort"] not in ports:
                    ports.append(int(p["containerPort"]))
        return ports or [80]

    def ours(self, pod):
        return pod.get("spec", {}).get("nodeName") in self.nodes

    @staticmethod
    def terminal(pod):
        return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")

    # --- sync ---

    def sync(self, uid):
        with self.lock:
            pod = self.desired.get(uid)
        rec = self.load_record(uid)
        if pod is None or pod["metadata"].get("deletionTimestamp") or self.terminal(pod):
            if rec is not None:
                self.teardown(rec)
            if pod is not None and pod["metadata"].get("deletionTimestamp"):
                self.finish_deletion(pod)
            self.backoff.pop(uid, None)
            self.last_error.pop(uid, None)
            return
        if pod["spec"].get("hostNetwork"):
            self.sync_host_network(pod)
            return
        if rec is None or rec.get("state") != "running":
            self.setup(pod, rec)
        else:
            self.ensure(pod, rec)

    def setup(self, pod, rec):
        m = pod["metadata"]
        uid = m["uid"]
        node = pod["spec"]["nodeName"]
        if rec is None:
            rec = {"uid": uid, "namespace": m["namespace"], "name": m["name"], "node": node,
                   "netns": self.netns_name(pod),
                   # containerd's sandbox ids are 64 hex digits
                   "containerID": secrets.token_hex(32),
                   "state": "creating", "created": now_iso(), "restarts": 0}
            self.save_record(rec)
            log(f"pod {m['namespace']}/{m['name']} on {node}: sandbox {rec['netns']}")
        ns = rec["netns"]
        if not (NETNS_DIR / ns).exists():
            sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        etc = ETC_NETNS / ns
        etc.mkdir(parents=True, exist_ok=True)
        # Kubelet's resolv.conf for dnsPolicy ClusterFirst.
        dom = self.cfg["dnsDomain"]
        write_atomic(etc / "resolv.conf",
                     f"search {m['namespace']}.svc.{dom} svc.{dom} {dom}\n"
                     f"nameserver {self.cfg['dnsServer']}\n"
                     "options ndots:5\n")
        if not (etc / "hosts").exists():
            self.write_hosts(rec, None)

        if rec["state"] == "creating":
            r = self.cni("add", rec)
            if r.returncode != 0:
                msg = self.cni_error(r)
                wait = self.backoff.get(uid, self.BACKOFF[0])
                self.backoff[uid] = min(wait * 2, self.BACKOFF[1])
                log(f"pod {m['namespace']}/{m['name']}: CNI ADD failed, retrying in {wait:.1f}s: {msg}")
                d = self.cni("del", rec)
                if d.returncode != 0:
                    log(f"pod {m['namespace']}/{m['name']}: CNI DEL after the failed ADD failed too: "
                        f"{self.cni_error(d)}")
                self.report_error(pod, "CNIAddFailed", msg)
                self.enqueue(uid, delay=wait * random.uniform(0.8, 1.2))
                return
            res = json.loads(r.stdout)
            ips = [i["address"].split("/")[0] for i in res.get("ips") or []]
            if not ips:
                raise RuntimeError(f"CNI ADD of {ns} returned no IP: {r.stdout.strip()}")
            rec.update(ip=ips[0], ips=ips, state="added", result=res)
            self.save_record(rec)
            self.write_hosts(rec, ips[0])
            self.backoff.pop(uid, None)
            log(f"pod {m['namespace']}/{m['name']}: {ips[0]}")

        if not self.responder_alive(rec):
            self.start_responder(pod, rec)
        rec["state"] = "running"
        rec.setdefault("started", now_iso())
        self.save_record(rec)
        self.report_running(pod, rec)

    def ensure(self, pod, rec):
        if not self.responder_alive(rec):
            log(f"pod {rec['namespace']}/{rec['name']}: podserve is gone, restarting it")
            rec["restarts"] = rec.get("restarts", 0) + 1
            self.start_responder(pod, rec)
            self.save_record(rec)
            self.report_running(pod, rec)
            return
        st = pod.get("status") or {}
        if st.get("phase") != "Running" or st.get("podIP") != rec["ip"] or \
                not any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in st.get("conditions") or []):
            self.report_running(pod, rec)

    def sync_host_network(self, pod):
        """No sandbox of its own: the pod is the node, as far as addresses go."""
        st = pod.get("status") or {}
        ip = self.nodes[pod["spec"]["nodeName"]]["ip"]
        if st.get("phase") != "Running" or st.get("podIP") != ip:
            rec = {"ip": ip, "ips": [ip], "node": pod["spec"]["nodeName"], "containerID": "host",
                   "restarts": 0, "started": now_iso()}
            self.report_running(pod, rec)

    def write_hosts(self, rec, ip):
        lines = ["# Kubernetes-managed hosts file (causeway lab).",
                 "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback"]
        if ip:
            lines.append(f"{ip}\t{rec['name']}")
        write_atomic(ETC_NETNS / rec["netns"] / "hosts", "\n".join(lines) + "\n")

    # --- CNI ---

    def cni_args(self, rec):
        return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={rec['namespace']};K8S_POD_NAME={rec['name']};"
                f"K8S_POD_INFRA_CONTAINER_ID={rec['containerID']};K8S_POD_UID={rec['uid']}")

    def cni(self, cmd, rec):
        n = self.nodes[rec["node"]]
        argv = ["nsenter", f"--net={n['netns']}", self.cfg["runner"], "--path", self.cfg["cniPath"],
                "--cache-dir", n["cacheDir"], "--conflist", n["conflist"], cmd,
                rec["containerID"], str(NETNS_DIR / rec["netns"]), "eth0", "--args", self.cni_args(rec)]
        try:
            return sh(argv, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"CNI {cmd} timed out after 120 s")

    @staticmethod
    def cni_error(r):
        try:
            doc = json.loads(r.stdout)
            msg = doc.get("msg", "")
            if doc.get("details"):
                msg += f" ({doc['details']})"
            return f"code {doc.get('code')}: {msg}"
        except (ValueError, AttributeError):
            return f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[-500:]}"

    # --- the responder ---

    def responder_alive(self, rec):
        pid = rec.get("responderPid")
        if not pid:
            return False
        child = self.children.get(rec["uid"])
        if child is not None and child.poll() is not None:
            return False
        return alive(pid, rec.get("responderStart"))

    def start_responder(self, pod, rec):
        m = pod["metadata"]
        argv = ["nsenter", f"--net={NETNS_DIR / rec['netns']}", self.cfg["podserve"],
                "--name", m["name"], "--namespace", m["namespace"], "--cluster", self.cluster]
        for p in self.ports(pod):
            argv += ["-p", str(p)]
        with open(self.pods_dir / f"{rec['uid']}.log", "ab") as out:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True, close_fds=True)
        # podserve binds before its loop; give it a moment so that Running means listening.
        end = time.monotonic() + 2
        while time.monotonic() < end and child.poll() is None and not self.listening(child.pid):
            time.sleep(0.02)
        if child.poll() is not None:
            raise RuntimeError(f"podserve for {m['namespace']}/{m['name']} exited {child.returncode}: "
                               f"{self.tail(self.pods_dir / (rec['uid'] + '.log'))}")
        self.children[rec["uid"]] = child
        rec.update(responderPid=child.pid, responderStart=proc_start_time(child.pid),
                   ports=self.ports(pod))

    @staticmethod
    def listening(pid):
        """True once pid holds a listening TCP socket (state 0A in /proc/PID/net/tcp)."""
        try:
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            rows = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
        except OSError:
            return False
        return any(r.split()[3] == "0A" and f"socket:[{r.split()[9]}]" in inodes for r in rows)

    @staticmethod
    def tail(path, n=10):
        try:
            return " | ".join(Path(path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # --- teardown ---

    def teardown(self, rec):
        uid = rec["uid"]
        log(f"pod {rec['namespace']}/{rec['name']}: tearing down {rec['netns']}")
        if rec.get("responderPid"):
            if not stop_pid(rec["responderPid"], rec.get("responderStart"),
                            child=self.children.get(uid)):
                log(f"podserve {rec['responderPid']} would not die")
        self.children.pop(uid, None)
        if rec.get("node") in self.nodes:
            for attempt in range(3):
                r = self.cni("del", rec)
                if r.returncode == 0:
                    break
                log(f"pod {rec['namespace']}/{rec['name']}: CNI DEL failed: {self.cni_error(r)}")
                time.sleep(0.5 * (attempt + 1))
        self.remove_netns(rec["netns"])
        self.record_path(uid).unlink(missing_ok=True)
        (self.pods_dir / f"{uid}.log").unlink(missing_ok=True)

    @staticmethod
    def remove_netns(name):
        path = NETNS_DIR / name
        for pid in pids_in_netns([path]):
            stop_pid(pid, proc_start_time(pid))
        if path.exists():
            sh(["ip", "netns", "del", name], check=False)
        shutil.rmtree(ETC_NETNS / name, ignore_errors=True)

    def finish_deletion(self, pod):
        """What kubelet does once the containers are gone: delete with grace period 0."""
        m = pod["metadata"]
        try:
            self.kube.request("DELETE", f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}",
                              body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                    "preconditions": {"uid": m["uid"]}})
        except ApiError as e:
            if e.status not in (404, 409):
                raise

    # --- status ---

    def status_path(self, pod):
        m = pod["metadata"]
        return f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}/status"

    def report_running(self, pod, rec):
        ts = now_iso()
        host_ip = self.nodes[rec["node"]]["ip"]
        conds = [{"type": t, "status": "True", "lastTransitionTime": ts}
                 for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                           "PodScheduled")]
        containers = [{"name": c.get("name", f"c{i}"), "ready": True, "started": True,
                       "restartCount": rec.get("restarts", 0), "image": c.get("image", ""),
                       "imageID": "", "containerID": f"causeway-lab://{rec['containerID']}",
                       "state": {"running": {"startedAt": rec.get("started", ts)}}}
                      for i, c in enumerate(pod["spec"].get("containers") or [])]
        status = {"phase": "Running", "podIP": rec["ip"], "podIPs": [{"ip": ip} for ip in rec["ips"]],
                  "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "startTime": rec.get("started", ts),
                  "conditions": conds, "containerStatuses": containers, "qosClass": "BestEffort"}
        self.patch_status(pod, status)
        self.last_error.pop(pod["metadata"]["uid"], None)

    def report_error(self, pod, reason, msg):
        uid = pod["metadata"]["uid"]
        if self.last_error.get(uid) == msg:
            return
        self.last_error[uid] = msg
        ts = now_iso()
        status = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts},
            {"type": "PodReadyToStartContainers", "status": "False", "reason": reason, "message": msg,
             "lastTransitionTime": ts},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": msg,
             "lastTransitionTime": ts}]}
        self.patch_status(pod, status)

    def patch_status(self, pod, status):
        try:
            self.kube.merge_patch(self.status_path(pod), {"status": status})
        except ApiError as e:
            if e.status != 404:  # deleted meanwhile: its DELETED event follows
                raise

    # --- list/watch ---

    def observe(self, pod):
        """Take one pod object from a list or an event."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            if self.ours(pod):
                self.desired[uid] = pod
            else:
                self.desired.pop(uid, None)
        self.enqueue(uid)

    def forget(self, pod):
        uid = pod["metadata"]["uid"]
        with self.lock:
            self.desired.pop(uid, None)
        self.enqueue(uid)

    def relist(self):
        lst = self.kube.get("/api/v1/pods")
        items = lst.get("items") or []
        seen = {p["metadata"]["uid"] for p in items}
        with self.lock:
            gone = [uid for uid in self.desired if uid not in seen]
        for p in items:
            self.observe(p)
        for uid in gone:
            with self.lock:
                self.desired.pop(uid, None)
            self.enqueue(uid)
        return lst["metadata"]["resourceVersion"]

    def reconcile_local(self):
        """Sandboxes of pods the API no longer has get a sync, which removes them."""
        with self.lock:
            desired = set(self.desired)
        for uid in self.records():
            if uid not in desired:
                self.enqueue(uid)

    def remove_orphans(self):
        """cwp- namespaces no record names: left by a crash between netns add and record.

        Only before the workers start: a sync in progress makes its netns
        after its record, and a scan meanwhile could see the one without the
        other."""
        known = {r["netns"] for r in self.records().values()}
        for d in (NETNS_DIR, ETC_NETNS):
            if not d.is_dir():
                continue
            for f in d.iterdir():
                if f.name.startswith(self.prefix) and f.name not in known:
                    log(f"removing {f}, which belongs to no pod")
                    self.remove_netns(f.name)

    def resync_all(self):
        with self.lock:
            uids = list(self.desired)
        for uid in uids:
            self.enqueue(uid)

    def watch_loop(self):
        rv = None
        delay = 0.5
        while True:
            try:
                if rv is None:
                    rv = self.relist()
                    self.reconcile_local()
                    log(f"listed pods at resourceVersion {rv}")
                for ev in self.kube.watch("/api/v1/pods", rv, timeout_seconds=60):
                    t, obj = ev.get("type"), ev.get("object") or {}
                    if t == "ERROR":
                        # 410 Gone: our resourceVersion is too old to resume from
                        log(f"watch error: {obj.get('message')} (code {obj.get('code')}), relisting")
                        rv = None
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion") or rv
                    if t in ("ADDED", "MODIFIED"):
                        self.observe(obj)
                    elif t == "DELETED":
                        self.forget(obj)
                delay = 0.5
                continue
            except ApiError as e:
                log(f"{e}; relisting in {delay:.1f}s")
                rv = None
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                log(f"API connection: {e!r}; retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 10)

    def ticker(self):
        """Every pod is looked at again now and then: a responder that died, a lost event."""
        while not self.stopping.wait(self.RESYNC):
            self.resync_all()

    def run(self):
        def on_term(signum, frame):
            raise Stop()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(self.WORKERS)]
        threads.append(threading.Thread(target=self.ticker, daemon=True))
        self.remove_orphans()
        for t in threads:
            t.start()
        log(f"kubelet for cluster {self.cluster} (nodes {', '.join(self.nodes)}) against "
            f"{self.cfg['server']}")
        try:
            self.watch_loop()
        except Stop:
            pass
        self.stopping.set()
        # Let a sync in progress finish, so that its record says what exists.
        end = time.monotonic() + 10
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        log("stopped (pods left running)")


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: kubelet.py CONFIG.json\n")
        return 2
    cfg = json.loads(Path(sys.argv[1]).read_text())
    Kubelet(cfg).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
