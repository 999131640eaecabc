"""faultapi: a tiny API server for one collection that misbehaves on cue.

kapi.py is a faithful stand-in; this one exists for the paths a faithful
server seldom takes: an expired continue token, a watch refused with HTTP
410 or 500, an ERROR event other than 410, a stream with a line that is not
JSON or an event without a name, a watch that ends at once, events dribbled
a few bytes per write.  test/k8s/run drives it in-process.

Only GET of one collection path is served: a list (limit/continue) or a
watch (resourceVersion, timeoutSeconds); the state is changed by calling
put()/delete() from the test.  List pages are read from the state of the
moment, not from the first page's snapshot: harsher than a real server.
"""

import http.server
import json
import queue
import threading
import time
import urllib.parse


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FaultApi:
    def __init__(self, path="/api/v1/pods"):
        self.path = path
        self.lock = threading.Lock()
        self.objs = {}           # "ns/name" -> object
        self.rv = 100
        self.hist = []           # (rv, type, object)
        self.floor = self.rv     # watches from below this get 410
        self.faults = []         # (kind, what): "list-continue" or "watch"
        self.watchers = []       # queues of live watches
        self.log = []            # (kind, query) of every request
        self.gen = 0             # kick(): watches of an older generation end
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.kick()
        self.srv.shutdown()
        self.srv.server_close()

    # ---- state --------------------------------------------------------

    def _commit(self, etype, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.hist.append((self.rv, etype, json.loads(json.dumps(obj))))
        for q in self.watchers:
            q.put((etype, obj, self.rv))

    def put(self, ns, name, labels=None, annotations=None):
        with self.lock:
            key = "%s/%s" % (ns, name)
            old = self.objs.get(key)
            obj = {"kind": "Pod", "apiVersion": "v1",
                   "metadata": {"name": name, "namespace": ns, "labels": labels or {},
                                "annotations": annotations or {}}}
            self.objs[key] = obj
            self._commit("MODIFIED" if old else "ADDED", obj)

    def delete(self, ns, name):
        with self.lock:
            obj = self.objs.pop("%s/%s" % (ns, name))
            self._commit("DELETED", obj)

    def expire(self):
        """Forget the history: every watch from an older version gets 410."""
        with self.lock:
            self.hist = []
            self.floor = self.rv

    def fault(self, kind, what):
        with self.lock:
            self.faults.append((kind, what))

    def kick(self):
        """End the running watches, as a server restart would."""
        with self.lock:
            self.gen += 1
            for q in self.watchers:
                q.put(None)

    def take_fault(self, kind):
        with self.lock:
            for i, (k, what) in enumerate(self.faults):
                if k == kind:
                    del self.faults[i]
                    return what
        return None

    def requests(self, kind):
        with self.lock:
            return [q for k, q in self.log if k == kind]

    # ---- HTTP ---------------------------------------------------------

    def _handler(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def send_json(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                if url.path != api.path:
                    return self.send_json(404, status(404, "NotFound", "no such path"))
                if q.get("watch") in ("1", "true"):
                    with api.lock:
                        api.log.append(("watch", q))
                    return self.watch(q)
                with api.lock:
                    api.log.append(("list", q))
                return self.list(q)

            def list(self, q):
                if q.get("continue") and api.take_fault("list-continue") == "410":
                    return self.send_json(410, status(410, "Expired",
                                                      "The provided continue parameter is too old"))
                with api.lock:
                    keys = sorted(api.objs)
                    rv = api.rv
                    items = [json.loads(json.dumps(api.objs[k])) for k in keys]
                for it in items:  # as a real list: items without kind
                    it.pop("kind", None)
                    it.pop("apiVersion", None)
                if q.get("continue"):
                    last = json.loads(q["continue"])["k"]
                    items = [it for it, k in zip(items, keys) if k > last]
                    keys = [k for k in keys if k > last]
                meta = {"resourceVersion": str(rv)}
                limit = int(q.get("limit") or 0)
                if 0 < limit < len(items):
                    items, keys = items[:limit], keys[:limit]
                    meta["continue"] = json.dumps({"k": keys[-1]})
                self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta,
                                     "items": items})

            def chunk(self, data, dribble=0):
                if not dribble:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    return
                for i in range(0, len(data), dribble):
                    part = data[i:i + dribble]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.flush()

            def watch(self, q):
                what = api.take_fault("watch")
                if what == "http410":
                    return self.send_json(410, status(410, "Gone", "too old resource version"))
                if what == "http500":
                    return self.send_json(500, status(500, "InternalError", "etcd is unwell"))
                rv = int(q.get("resourceVersion") or 0)
                deadline = time.time() + float(q.get("timeoutSeconds") or 30)
                mine = queue.Queue()
                with api.lock:
                    gen = api.gen
                    backlog = [(t, o, r) for (r, t, o) in api.hist if r > rv]
                    expired = rv < api.floor
                    api.watchers.append(mine)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.close_connection = True
                dribble = 7 if what == "dribble" else 0
                try:
                    def send(ev):
                        self.chunk((json.dumps(ev) + "\n").encode(), dribble)

                    if what == "empty":
                        pass
                    elif expired or what == "error410":
                        send({"type": "ERROR", "object": status(410, "Expired",
                                                                "too old resource version: %d (%d)"
                                                                % (rv, api.floor))})
                    elif what == "error500":
                        send({"type": "ERROR", "object": status(500, "InternalError",
                                                                "etcd is unwell")})
                    elif what == "garbage":
                        self.chunk(b"this is not json\n")
                    elif what == "noname":
                        send({"type": "ADDED", "object": {"metadata": {"resourceVersion": "1"}}})
                    else:
                        for t, o, r in backlog:
                            send({"type": t, "object": o})
                        while time.time() < deadline:
                            try:
                                item = mine.get(timeout=0.1)
                            except queue.Empty:
                                if api.gen != gen:
                                    break
                                continue
                            if item is None:
                                break
                            t, o, r = item
                            send({"type": t, "object": o})
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    pass
                finally:
                    with api.lock:
                        api.watchers.remove(mine)

        return Handler
