#!/usr/bin/env python3
"""kapi.py: a Kubernetes API server stand-in for the Causeway lab.

One process per lab cluster.  The real kubectl (1.32) and the Causeway helper
(libcurl) talk to it.  It keeps every object in memory (optionally in a JSON
state file), serves list/watch/get/create/update/patch/delete with the
Kubernetes API conventions, server-side Table output for `kubectl get`, and
runs the controllers that need no network: Deployments, the scheduler,
EndpointSlices, ClusterIP allocation and a hosts file for DNS.

Pods are deleted as the real API server deletes them: one bound to a node
gets a deletionTimestamp and stays (Terminating, its EndpointSlice entry
ready=false, terminating=true) until its kubelet deletes it with grace
period 0; an unbound or finished pod goes at once.  So a Deployment scaled
down takes its endpoints out of service before they vanish.

Python standard library only.

  kapi.py --listen ADDR:PORT --cluster NAME --service-cidr CIDR
          [--tls-cert F --tls-key F] [--token-file F] [--dns-hosts-dir DIR]
          [--dns-domain cluster.local] [--state-file F] [--log-file F]

Environment knobs (for tests): KAPI_BOOKMARK_SECONDS (default 10),
KAPI_HISTORY (watch history length, default 10000),
KAPI_NS_GRACE_SECONDS (delay before a deleted Namespace's content goes, 1.0).
"""

import argparse
import base64
import calendar
import collections
import hashlib
import http.server
import ipaddress
import json
import os
import queue
import random
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

try:  # only for YAML request bodies; kubectl sends JSON
    import yaml  # type: ignore
except Exception:  # pragma: no cover
    yaml = None

K8S_VERSION = "v1.32.0"
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
BOOKMARK_SECONDS = float(os.environ.get("KAPI_BOOKMARK_SECONDS", "10"))
HISTORY_LEN = int(os.environ.get("KAPI_HISTORY", "10000"))
NS_GRACE_SECONDS = float(os.environ.get("KAPI_NS_GRACE_SECONDS", "1.0"))

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUB_VERBS = ["get", "patch", "update"]

LOG_LOCK = threading.Lock()
LOG_FILE = None


def log(msg):
    line = "%s kapi: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), msg)
    with LOG_LOCK:
        f = LOG_FILE or sys.stderr
        try:
            f.write(line)
            f.flush()
        except Exception:
            pass


# --------------------------------------------------------------------------
# Resource types


class RType:
    def __init__(self, group, version, plural, kind, namespaced, short=(), subs=(),
                 categories=(), generation=False, builtin=True, status_sub=None):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.namespaced = namespaced
        self.short = list(short)
        self.subs = list(subs)
        self.categories = list(categories)
        self.generation = generation
        self.builtin = builtin  # known to kubectl's scheme (strategic merge patch)
        self.status_sub = "status" in self.subs if status_sub is None else status_sub
        self.key = (group, plural)

    @property
    def gv(self):
        return self.version if not self.group else "%s/%s" % (self.group, self.version)

    @property
    def singular(self):
        return self.kind.lower()

    @property
    def qualified(self):  # name used in error messages: pods, deployments.apps
        return self.plural if not self.group else "%s.%s" % (self.plural, self.group)


TYPES = [
    RType("", "v1", "namespaces", "Namespace", False, ["ns"], ["status", "finalize"]),
    RType("", "v1", "nodes", "Node", False, ["no"], ["status"]),
    RType("", "v1", "pods", "Pod", True, ["po"], ["status"], ["all"]),
    RType("", "v1", "services", "Service", True, ["svc"], ["status"], ["all"]),
    RType("", "v1", "configmaps", "ConfigMap", True, ["cm"]),
    RType("", "v1", "secrets", "Secret", True),
    RType("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"]),
    RType("", "v1", "events", "Event", True, ["ev"]),
    RType("apps", "v1", "deployments", "Deployment", True, ["deploy"], ["status", "scale"], ["all"],
          generation=True),
    RType("apps", "v1", "replicasets", "ReplicaSet", True, ["rs"], ["status"], generation=True),
    RType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    RType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ["netpol"],
          generation=True),
    RType("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True,
          ["cnp", "ciliumnp"], ["status"], ["cilium", "ciliumpolicy"], generation=True,
          builtin=False),
    RType("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy",
          False, ["ccnp"], ["status"], ["cilium", "ciliumpolicy"], generation=True,
          builtin=False),
]
BY_KEY = {t.key: t for t in TYPES}
BY_GVR = {(t.group, t.version, t.plural): t for t in TYPES}
T = {t.plural: t for t in TYPES}  # plurals are unique here


def group_versions():
    out = collections.OrderedDict()
    for t in TYPES:
        out.setdefault((t.group, t.version), []).append(t)
    return out


# --------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        Exception.__init__(self, message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            s["details"] = self.details
        return s


def _details(rt, name):
    d = {"kind": rt.plural}
    if name:
        d["name"] = name
    if rt.group:
        d["group"] = rt.group
    return d


def not_found(rt, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (rt.qualified, name), _details(rt, name))


def already_exists(rt, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (rt.qualified, name),
                    _details(rt, name))


def conflict(rt, name):
    return ApiError(409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                    'please apply your changes to the latest version and try again'
                    % (rt.qualified, name), _details(rt, name))


def invalid(rt, name, field, msg):
    kind = rt.kind
    d = _details(rt, name)
    d["kind"] = kind
    d["causes"] = [{"reason": "FieldValueInvalid", "message": msg, "field": field}]
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s: %s' % (kind, name, field, msg), d)


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


# --------------------------------------------------------------------------
# Small helpers


def dcopy(o):
    if isinstance(o, dict):
        return {k: dcopy(v) for k, v in o.items()}
    if isinstance(o, list):
        return [dcopy(v) for v in o]
    return o


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_ts(ts):
    if not ts or not isinstance(ts, str):
        return None
    try:
        return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def human_duration(sec):
    if sec < -1:
        return "<invalid>"
    if sec < 0:
        return "0s"
    s = int(sec)
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm%ds" % (m, s % 60) if s % 60 else "%dm" % m
    if m < 180:
        return "%dm" % m
    h = m // 60
    if h < 8:
        return "%dh%dm" % (h, m % 60) if m % 60 else "%dh" % h
    if h < 48:
        return "%dh" % h
    if h < 24 * 8:
        return "%dd%dh" % (h // 24, h % 24) if h % 24 else "%dd" % (h // 24)
    if h < 24 * 365 * 2:
        return "%dd" % (h // 24)
    if h < 24 * 365 * 8:
        y, dy = h // (24 * 365), (h // 24) % 365
        return "%dy%dd" % (y, dy) if dy else "%dy" % y
    return "%dy" % (h // (24 * 365))


def age(obj):
    t = parse_ts(obj.get("metadata", {}).get("creationTimestamp"))
    if t is None:
        return "<unknown>"
    return human_duration(time.time() - t)


def rand_suffix(n=5):
    return "".join(random.choice(SUFFIX_ALPHABET) for _ in range(n))


def meta(o):
    m = o.get("metadata")
    return m if isinstance(m, dict) else {}


def labels_of(o):
    lb = meta(o).get("labels")
    return lb if isinstance(lb, dict) else {}


def get_path(o, dotted):
    cur = o
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def field_str(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def jdump(o):
    return json.dumps(o, separators=(",", ":"))


NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def cond_true(o, ctype):
    for c in (o.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c.get("status") == "True"
    return False


# --------------------------------------------------------------------------
# Selectors


def _split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


LSEL_SET = re.compile(r"^([^\s=!<>(),]+)\s+(in|notin)\s*\((.*)\)$")
LSEL_CMP = re.compile(r"^([^\s=!<>(),]+)\s*(==|=|!=|>|<)\s*([^\s=!<>(),]*)$")
LSEL_KEY = re.compile(r"^(!?)\s*([^\s=!<>(),]+)$")


def parse_label_selector(s):
    reqs = []
    for term in _split_top(s or ""):
        m = LSEL_SET.match(term)
        if m:
            vals = [v.strip() for v in m.group(3).split(",") if v.strip()]
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = LSEL_CMP.match(term)
        if m:
            op = {"==": "=", "=": "="}.get(m.group(2), m.group(2))
            reqs.append((m.group(1), op, [m.group(3)]))
            continue
        m = LSEL_KEY.match(term)
        if m:
            reqs.append((m.group(2), "!" if m.group(1) else "exists", []))
            continue
        raise bad_request("unable to parse requirement: invalid label selector %r" % s)
    return reqs


def label_match(reqs, labels):
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=":
            if not has or v != vals[0]:
                return False
        elif op == "!=":
            if has and v == vals[0]:
                return False
        elif op == "in":
            if not has or v not in vals:
                return False
        elif op == "notin":
            if has and v in vals:
                return False
        elif op == "exists":
            if not has:
                return False
        elif op == "!":
            if has:
                return False
        elif op in (">", "<"):
            try:
                a, b = int(v), int(vals[0])
            except (TypeError, ValueError):
                return False
            if not ((a > b) if op == ">" else (a < b)):
                return False
    return True


def parse_field_selector(s):
    reqs = []
    for term in [t.strip() for t in (s or "").split(",") if t.strip()]:
        for op in ("!=", "==", "="):
            if op in term:
                k, v = term.split(op, 1)
                reqs.append((k.strip(), "!=" if op == "!=" else "=", v.strip()))
                break
        else:
            raise bad_request("invalid field selector: %r" % s)
    return reqs


def field_match(reqs, obj):
    for path, op, val in reqs:
        got = field_str(get_path(obj, path))
        if (got == val) != (op == "="):
            return False
    return True


def selector_from_object(sel):
    """A LabelSelector object (matchLabels/matchExpressions) as requirement list."""
    reqs = []
    if not isinstance(sel, dict):
        return reqs
    for k, v in (sel.get("matchLabels") or {}).items():
        reqs.append((k, "=", [str(v)]))
    for e in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(e.get("operator"))
        if op:
            reqs.append((e.get("key", ""), op, [str(x) for x in e.get("values") or []]))
    return reqs


def selector_string(sel):
    if not isinstance(sel, dict):
        return ""
    parts = ["%s=%s" % (k, v) for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op, k, vals = e.get("operator"), e.get("key", ""), ",".join(e.get("values") or [])
        if op == "In":
            parts.append("%s in (%s)" % (k, vals))
        elif op == "NotIn":
            parts.append("%s notin (%s)" % (k, vals))
        elif op == "Exists":
            parts.append(k)
        elif op == "DoesNotExist":
            parts.append("!" + k)
    return ",".join(parts)


# --------------------------------------------------------------------------
# Patches


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return dcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _ptr_tokens(ptr):
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise bad_request("invalid JSON pointer %r" % ptr)
    return [t.replace("~1", "/").replace("~0", "~") for t in ptr[1:].split("/")]


def _ptr_parent(doc, ptr):
    toks = _ptr_tokens(ptr)
    if not toks:
        raise bad_request("JSON patch on the document root is not supported")
    cur = doc
    for t in toks[:-1]:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list) and t.isdigit() and int(t) < len(cur):
            cur = cur[int(t)]
        else:
            raise ApiError(422, "Invalid", "jsonpatch: path %s does not exist" % ptr)
    return cur, toks[-1]


def _ptr_get(doc, ptr):
    parent, last = _ptr_parent(doc, ptr)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise ApiError(422, "Invalid", "jsonpatch: path %s does not exist" % ptr)


def _ptr_remove(doc, ptr):
    parent, last = _ptr_parent(doc, ptr)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise ApiError(422, "Invalid", "jsonpatch: remove: path %s does not exist" % ptr)


def _ptr_add(doc, ptr, value, replace=False):
    parent, last = _ptr_parent(doc, ptr)
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise ApiError(422, "Invalid", "jsonpatch: replace: path %s does not exist" % ptr)
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise ApiError(422, "Invalid", "jsonpatch: index out of range in %s" % ptr)
    else:
        raise ApiError(422, "Invalid", "jsonpatch: path %s does not exist" % ptr)


def json_patch(doc, ops):
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    for op in ops:
        if not isinstance(op, dict):
            raise bad_request("json patch operation must be an object")
        kind, path = op.get("op"), op.get("path", "")
        if kind == "add":
            _ptr_add(doc, path, dcopy(op.get("value")))
        elif kind == "remove":
            _ptr_remove(doc, path)
        elif kind == "replace":
            _ptr_add(doc, path, dcopy(op.get("value")), replace=True)
        elif kind == "move":
            v = _ptr_remove(doc, op.get("from", ""))
            _ptr_add(doc, path, v)
        elif kind == "copy":
            _ptr_add(doc, path, dcopy(_ptr_get(doc, op.get("from", ""))))
        elif kind == "test":
            if _ptr_get(doc, path) != op.get("value"):
                raise ApiError(422, "Invalid", "jsonpatch: test operation failed at %s" % path)
        else:
            raise bad_request("unknown json patch operation %r" % kind)
    return doc


# Strategic merge patch: merge keys for the fields kubectl uses.
PRIMITIVE = object()
DELETE = object()
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def smp_merge_key(path, kind):
    if not path:
        return None
    last = path[-1]
    prev = path[-2] if len(path) > 1 else None
    if last in CONTAINER_LISTS:
        return "name"
    if prev in CONTAINER_LISTS:
        return {"ports": "containerPort", "env": "name", "volumeMounts": "mountPath",
                "volumeDevices": "devicePath", "resizePolicy": "resourceName"}.get(last)
    if kind == "Service" and path == ("spec", "ports"):
        return "port"
    if prev == "spec" and last in ("volumes", "imagePullSecrets", "schedulingGates", "resourceClaims"):
        return "name"
    if prev == "spec" and last == "hostAliases":
        return "ip"
    if prev == "spec" and last == "topologySpreadConstraints":
        return "topologyKey"
    if path[0] == "status" and last == "conditions":
        return "type"
    if path[0] == "status" and last in ("podIPs", "hostIPs"):
        return "ip"
    if kind == "Node" and path == ("status", "addresses"):
        return "type"
    if path == ("metadata", "ownerReferences"):
        return "uid"
    if path == ("metadata", "finalizers"):
        return PRIMITIVE
    if kind == "Node" and path == ("spec", "podCIDRs"):
        return PRIMITIVE
    return None


def smp_map(orig, patch, path, kind):
    if not isinstance(orig, dict):
        orig = {}
    directive = patch.get("$patch")
    if directive == "delete":
        return DELETE
    if directive == "replace":
        return smp_map({}, {k: v for k, v in patch.items() if k != "$patch"}, path, kind)
    result = dict(orig)
    orders, deletes = {}, {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k[len("$setElementOrder/"):]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            deletes[k[len("$deleteFromPrimitiveList/"):]] = v
            continue
        if k.startswith("$"):
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            r = smp_map(result.get(k), v, path + (k,), kind)
            if r is DELETE:
                result.pop(k, None)
            else:
                result[k] = r
        elif isinstance(v, list):
            result[k] = smp_list(result.get(k), v, path + (k,), kind)
        else:
            result[k] = v
    for f, vals in deletes.items():
        if isinstance(result.get(f), list) and isinstance(vals, list):
            result[f] = [x for x in result[f] if x not in vals]
    for f, order in orders.items():
        if isinstance(result.get(f), list) and isinstance(order, list):
            result[f] = smp_reorder(result[f], order, smp_merge_key(path + (f,), kind))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def smp_reorder(items, order, key):
    def ident(x):
        if key is None or key is PRIMITIVE:
            return jdump(x)
        return jdump(x.get(key)) if isinstance(x, dict) else jdump(x)
    pos = {}
    for i, o in enumerate(order):
        pos.setdefault(ident(o), i)
    listed = sorted([x for x in items if ident(x) in pos], key=lambda x: pos[ident(x)])
    others = [x for x in items if ident(x) not in pos]
    return listed + others


def smp_list(orig, plist, path, kind):
    orig = orig if isinstance(orig, list) else []
    if any(isinstance(e, dict) and e.get("$patch") == "replace" and len(e) == 1 for e in plist):
        plist = [e for e in plist if not (isinstance(e, dict) and e.get("$patch") == "replace")]
        return [smp_map({}, e, path, kind) if isinstance(e, dict) else e for e in plist]
    key = smp_merge_key(path, kind)
    if key is None:
        return [smp_map({}, e, path, kind) if isinstance(e, dict) else e for e in plist]
    if key is PRIMITIVE:
        result = list(orig)
        for e in plist:
            if e not in result:
                result.append(e)
        return result
    result = list(orig)
    for e in plist:
        if not isinstance(e, dict):
            result.append(e)
            continue
        kv = e.get(key)
        idx = None
        for i, x in enumerate(result):
            if isinstance(x, dict) and x.get(key) == kv:
                idx = i
                break
        if e.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
            continue
        if idx is not None:
            result[idx] = smp_map(result[idx], e, path, kind)
        else:
            result.append(smp_map({}, e, path, kind))
    return result


def strategic_merge(orig, patch, kind):
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    r = smp_map(orig, patch, (), kind)
    return {} if r is DELETE else r


# --------------------------------------------------------------------------
# Protobuf request bodies.  kubectl's typed generators (`kubectl create
# namespace|deployment|configmap|secret|service|serviceaccount`) send
# application/vnd.kubernetes.protobuf: the "k8s\0" magic, then a
# runtime.Unknown {typeMeta{apiVersion=1,kind=2}=1, raw=2} whose raw bytes are
# the object.  Only the messages and fields those commands use are listed
# (field numbers from the k8s.io/api generated.proto files); anything else is
# skipped.  Type codes: s string, b bytes, i int, t bool, m map<string,string>,
# mb map<string,bytes>, mq map<string,Quantity>, is IntOrString, T Time,
# other names are messages; a leading "*" means repeated, a trailing "!" keeps
# a zero value (pointer fields in Go).

PB = {
    "TypeMeta": {1: ("apiVersion", "s"), 2: ("kind", "s")},
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "raw")},
    "ObjectMeta": {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"), 11: ("labels", "m"),
                   12: ("annotations", "m"), 13: ("ownerReferences", "*OwnerReference"),
                   14: ("finalizers", "*s")},
    "OwnerReference": {5: ("apiVersion", "s"), 1: ("kind", "s"), 3: ("name", "s"), 4: ("uid", "s"),
                       6: ("controller", "t"), 7: ("blockOwnerDeletion", "t")},
    "LabelSelector": {1: ("matchLabels", "m"), 2: ("matchExpressions", "*LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: ("key", "s"), 2: ("operator", "s"), 3: ("values", "*s")},
    "Namespace": {1: ("metadata", "ObjectMeta")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "m"), 3: ("binaryData", "mb"),
                  4: ("immutable", "t!")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "mb"), 3: ("type", "s"), 4: ("stringData", "m"),
               5: ("immutable", "t!")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 4: ("automountServiceAccountToken", "t!")},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec")},
    "ServiceSpec": {1: ("ports", "*ServicePort"), 2: ("selector", "m"), 3: ("clusterIP", "s"), 4: ("type", "s"),
                    5: ("externalIPs", "*s"), 7: ("sessionAffinity", "s"), 10: ("externalName", "s"),
                    11: ("externalTrafficPolicy", "s"), 13: ("publishNotReadyAddresses", "t"),
                    18: ("clusterIPs", "*s"), 19: ("ipFamilies", "*s"), 17: ("ipFamilyPolicy", "s"),
                    22: ("internalTrafficPolicy", "s")},
    "ServicePort": {1: ("name", "s"), 2: ("protocol", "s"), 6: ("appProtocol", "s"), 3: ("port", "i"),
                    4: ("targetPort", "is"), 5: ("nodePort", "i")},
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec")},
    "DeploymentSpec": {1: ("replicas", "i!"), 2: ("selector", "LabelSelector"), 3: ("template", "PodTemplateSpec"),
                       4: ("strategy", "DeploymentStrategy"), 5: ("minReadySeconds", "i"),
                       6: ("revisionHistoryLimit", "i!"), 7: ("paused", "t"), 9: ("progressDeadlineSeconds", "i!")},
    "DeploymentStrategy": {1: ("type", "s"), 2: ("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "is"), 2: ("maxSurge", "is")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "Pod": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {2: ("containers", "*Container"), 3: ("restartPolicy", "s"),
                4: ("terminationGracePeriodSeconds", "i!"), 6: ("dnsPolicy", "s"), 7: ("nodeSelector", "m"),
                8: ("serviceAccountName", "s"), 10: ("nodeName", "s"), 11: ("hostNetwork", "t"),
                16: ("hostname", "s"), 17: ("subdomain", "s"), 19: ("schedulerName", "s"),
                20: ("initContainers", "*Container"), 24: ("priorityClassName", "s")},
    "Container": {1: ("name", "s"), 2: ("image", "s"), 3: ("command", "*s"), 4: ("args", "*s"),
                  5: ("workingDir", "s"), 6: ("ports", "*ContainerPort"), 7: ("env", "*EnvVar"),
                  8: ("resources", "ResourceRequirements"), 13: ("terminationMessagePath", "s"),
                  14: ("imagePullPolicy", "s"), 20: ("terminationMessagePolicy", "s"), 16: ("stdin", "t"),
                  17: ("stdinOnce", "t"), 18: ("tty", "t")},
    "ContainerPort": {1: ("name", "s"), 2: ("hostPort", "i"), 3: ("containerPort", "i"), 4: ("protocol", "s"),
                      5: ("hostIP", "s")},
    "EnvVar": {1: ("name", "s"), 2: ("value", "s")},
    "ResourceRequirements": {1: ("limits", "mq"), 2: ("requests", "mq")},
    "Preconditions": {1: ("uid", "s"), 2: ("resourceVersion", "s")},
    "DeleteOptions": {1: ("gracePeriodSeconds", "i!"), 2: ("preconditions", "Preconditions"),
                      3: ("orphanDependents", "t!"), 4: ("propagationPolicy", "s"), 5: ("dryRun", "*s")},
}
PB_KEEP_EMPTY = {"resources"}


def _pb_varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise bad_request("truncated protobuf")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _pb_fields(buf):
    i = 0
    while i < len(buf):
        key, i = _pb_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _pb_varint(buf, i)
        elif wt == 2:
            n, i = _pb_varint(buf, i)
            v = bytes(buf[i:i + n])
            i += n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise bad_request("unsupported protobuf wire type %d" % wt)
        yield num, wt, v


def _pb_scalar(typ, wt, v):
    if typ == "s":
        return v.decode("utf-8", "replace")
    if typ in ("b", "raw"):
        return v if typ == "raw" else base64.b64encode(v).decode()
    if typ == "i":
        return v - (1 << 64) if v >= 1 << 63 else v
    if typ == "t":
        return bool(v)
    raise bad_request("bad protobuf scalar")


def pb_message(buf, name):
    spec = PB[name]
    out = {}
    for num, wt, v in _pb_fields(buf):
        if num not in spec:
            continue
        field, typ = spec[num]
        keep = typ.endswith("!")
        typ = typ.rstrip("!")
        rep = typ.startswith("*")
        typ = typ.lstrip("*")
        if typ in ("m", "mb", "mq"):
            k = val = None
            for n2, wt2, v2 in _pb_fields(v):
                if n2 == 1:
                    k = v2.decode("utf-8", "replace")
                elif n2 == 2:
                    if typ == "m":
                        val = v2.decode("utf-8", "replace")
                    elif typ == "mb":
                        val = base64.b64encode(v2).decode()
                    else:
                        val = next((x.decode() for n3, _, x in _pb_fields(v2) if n3 == 1), "")
            if k is not None:
                out.setdefault(field, {})[k] = val if val is not None else ("" if typ != "mb" else "")
            continue
        if typ == "is":
            kind, iv, sv = 0, 0, ""
            for n2, _, v2 in _pb_fields(v):
                if n2 == 1:
                    kind = v2
                elif n2 == 2:
                    iv = _pb_scalar("i", 0, v2)
                elif n2 == 3:
                    sv = v2.decode()
            val = sv if kind == 1 else iv
            if val in (0, "") and not keep:
                continue
        elif typ == "T":
            continue  # server-owned timestamps
        elif typ in PB:
            val = pb_message(v, typ)
            if not val and field not in PB_KEEP_EMPTY and not rep:
                continue
        else:
            val = _pb_scalar(typ, wt, v)
            if not rep and not keep and val in ("", 0, False):
                continue
        if rep:
            out.setdefault(field, []).append(val)
        else:
            out[field] = val
    return out


def decode_protobuf(raw):
    if not raw.startswith(b"k8s\x00"):
        raise ApiError(415, "UnsupportedMediaType", "protobuf body without the k8s magic")
    env = pb_message(raw[4:], "Unknown")
    tm = env.get("typeMeta") or {}
    kind = tm.get("kind", "")
    if kind not in PB or kind in ("Unknown", "TypeMeta"):
        raise ApiError(415, "UnsupportedMediaType",
                       "protobuf bodies for kind %r are not supported by this server; send JSON" % kind)
    obj = pb_message(env.get("raw") or b"", kind)
    if kind != "DeleteOptions":
        obj = dict({"apiVersion": tm.get("apiVersion", ""), "kind": kind}, **obj)
    return obj


# --------------------------------------------------------------------------
# Tables (server-side printing for kubectl get)


def col(name, typ="string", prio=0, fmt="", desc=None):
    return {"name": name, "type": typ, "format": fmt, "description": desc or name, "priority": prio}


NAME_COL = col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE_COL = col("Age", desc="CreationTimestamp is a timestamp representing the server time when this "
                          "object was created.")


def pod_status_reason(p):
    st = p.get("status") or {}
    reason = st.get("reason") or st.get("phase") or "Unknown"
    for cs in reversed(st.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
    if meta(p).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def pod_cells(p):
    spec, st = p.get("spec") or {}, p.get("status") or {}
    total = len(spec.get("containers") or [])
    css = st.get("containerStatuses") or []
    ready = sum(1 for c in css if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in css)
    gates = spec.get("readinessGates") or []
    return [meta(p).get("name"), "%d/%d" % (ready, total), pod_status_reason(p), restarts, age(p),
            st.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            st.get("nominatedNodeName") or "<none>",
            "%d/%d" % (sum(1 for g in gates if cond_true(p, g.get("conditionType"))), len(gates))
            if gates else "<none>"]


def deploy_cells(d):
    spec, st = d.get("spec") or {}, d.get("status") or {}
    tspec = ((spec.get("template") or {}).get("spec") or {})
    cs = tspec.get("containers") or []
    return [meta(d).get("name"),
            "%d/%d" % (st.get("readyReplicas", 0), spec.get("replicas", 1)),
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), age(d),
            ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs),
            selector_string(spec.get("selector")) or "<none>"]


def svc_ports(spec):
    out = []
    for p in spec.get("ports") or []:
        proto = p.get("protocol", "TCP")
        if p.get("nodePort"):
            out.append("%s:%s/%s" % (p.get("port"), p.get("nodePort"), proto))
        else:
            out.append("%s/%s" % (p.get("port"), proto))
    return ",".join(out) or "<none>"


def svc_cells(s):
    spec, st = s.get("spec") or {}, s.get("status") or {}
    typ = spec.get("type", "ClusterIP")
    ext = list(spec.get("externalIPs") or [])
    for ing in (st.get("loadBalancer") or {}).get("ingress") or []:
        ext.append(ing.get("ip") or ing.get("hostname") or "")
    if typ == "ExternalName":
        ext_s = spec.get("externalName") or "<none>"
    elif typ == "LoadBalancer" and not ext:
        ext_s = "<pending>"
    else:
        ext_s = ",".join(ext) or "<none>"
    sel = spec.get("selector") or {}
    return [meta(s).get("name"), typ, spec.get("clusterIP") or "<none>", ext_s, svc_ports(spec), age(s),
            ",".join("%s=%s" % kv for kv in sorted(sel.items())) or "<none>"]


def node_cells(n):
    spec, st = n.get("spec") or {}, n.get("status") or {}
    status = "Unknown"
    for c in st.get("conditions") or []:
        if c.get("type") == "Ready":
            status = "Ready" if c.get("status") == "True" else "NotReady"
    if spec.get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in labels_of(n)
                   if k.startswith("node-role.kubernetes.io/") and "/" in k)
    if labels_of(n).get("kubernetes.io/role"):
        roles.append(labels_of(n)["kubernetes.io/role"])
    info = st.get("nodeInfo") or {}
    addrs = st.get("addresses") or []
    iip = ",".join(a.get("address", "") for a in addrs if a.get("type") == "InternalIP") or "<none>"
    eip = ",".join(a.get("address", "") for a in addrs if a.get("type") == "ExternalIP") or "<none>"
    return [meta(n).get("name"), status, ",".join(sorted(set(roles))) or "<none>", age(n),
            info.get("kubeletVersion", ""), iip, eip, info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


def eps_cells(e):
    ports = ",".join(str(p.get("port")) for p in e.get("ports") or [] if p.get("port") is not None)
    addrs = [a for ep in e.get("endpoints") or [] for a in ep.get("addresses") or []]
    eps = ",".join(addrs[:3]) + (" + %d more..." % (len(addrs) - 3) if len(addrs) > 3 else "")
    return [meta(e).get("name"), e.get("addressType", ""), ports or "<unset>", eps or "<unset>", age(e)]


TABLES = {
    "pods": ([NAME_COL, col("Ready"), col("Status"), col("Restarts", "integer"), AGE_COL,
              col("IP", prio=1), col("Node", prio=1), col("Nominated Node", prio=1),
              col("Readiness Gates", prio=1)], pod_cells),
    "deployments": ([NAME_COL, col("Ready"), col("Up-to-date", "integer"), col("Available", "integer"),
                     AGE_COL, col("Containers", prio=1), col("Images", prio=1),
                     col("Selector", prio=1)], deploy_cells),
    "services": ([NAME_COL, col("Type"), col("Cluster-IP"), col("External-IP"), col("Port(s)"), AGE_COL,
                  col("Selector", prio=1)], svc_cells),
    "nodes": ([NAME_COL, col("Status"), col("Roles"), AGE_COL, col("Version"), col("Internal-IP", prio=1),
               col("External-IP", prio=1), col("OS-Image", prio=1), col("Kernel-Version", prio=1),
               col("Container-Runtime", prio=1)], node_cells),
    "namespaces": ([NAME_COL, col("Status"), AGE_COL],
                   lambda o: [meta(o).get("name"), (o.get("status") or {}).get("phase", "Active"), age(o)]),
    "endpointslices": ([NAME_COL, col("AddressType"), col("Ports"), col("Endpoints"), AGE_COL], eps_cells),
    "configmaps": ([NAME_COL, col("Data", "integer"), AGE_COL],
                   lambda o: [meta(o).get("name"),
                              len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o)]),
    "secrets": ([NAME_COL, col("Type"), col("Data", "integer"), AGE_COL],
                lambda o: [meta(o).get("name"), o.get("type", "Opaque"),
                           len(o.get("data") or {}) + len(o.get("stringData") or {}), age(o)]),
    "serviceaccounts": ([NAME_COL, col("Secrets", "integer"), AGE_COL],
                        lambda o: [meta(o).get("name"), len(o.get("secrets") or []), age(o)]),
    "networkpolicies": ([NAME_COL, col("Pod-Selector"), AGE_COL],
                        lambda o: [meta(o).get("name"),
                                   selector_string((o.get("spec") or {}).get("podSelector")) or "<none>",
                                   age(o)]),
}
DEFAULT_TABLE = ([NAME_COL, AGE_COL], lambda o: [meta(o).get("name"), age(o)])


def table_row(rt, obj, include):
    cols, cells = TABLES.get(rt.plural, DEFAULT_TABLE)
    try:
        c = cells(obj)
    except Exception:  # never fail a get on odd content
        c = [meta(obj).get("name")] + ["<error>"] * (len(cols) - 1)
    row = {"cells": c}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                         "metadata": obj.get("metadata", {})}
    return row


def make_table(rt, objs, rv, include):
    cols, _ = TABLES.get(rt.plural, DEFAULT_TABLE)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": cols, "rows": [table_row(rt, o, include) for o in objs]}


# --------------------------------------------------------------------------
# Discovery and OpenAPI


def api_resource_list(group, version):
    res = []
    for t in TYPES:
        if t.group != group or t.version != version:
            continue
        r = {"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind,
             "verbs": ALL_VERBS}
        if t.short:
            r["shortNames"] = t.short
        if t.categories:
            r["categories"] = t.categories
        res.append(r)
        for s in t.subs:
            sr = {"name": "%s/%s" % (t.plural, s), "singularName": "", "namespaced": t.namespaced,
                  "kind": t.kind, "verbs": SUB_VERBS}
            if s == "scale":
                sr.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            if s == "finalize":
                sr["verbs"] = ["update"]
            res.append(sr)
    gv = version if not group else "%s/%s" % (group, version)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}


def api_group(group):
    for (g, v) in group_versions():
        if g == group:
            gvd = {"groupVersion": "%s/%s" % (g, v), "version": v}
            return {"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gvd],
                    "preferredVersion": gvd}
    return None


def api_group_list():
    groups = []
    for (g, v) in group_versions():
        if g:
            grp = api_group(g)
            del grp["kind"]
            del grp["apiVersion"]
            groups.append(grp)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _openapi_param(name):
    return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}


def openapi_gv_doc(group, version):
    paths = {}
    prefix = "/api/v1" if not group else "/apis/%s/%s" % (group, version)
    for t in TYPES:
        if t.group != group or t.version != version:
            continue
        gvk = {"group": t.group, "version": t.version, "kind": t.kind}
        base = prefix + ("/namespaces/{namespace}/" if t.namespaced else "/") + t.plural
        write_params = [_openapi_param(p) for p in ("dryRun", "fieldManager", "fieldValidation")]
        patch_types = ["application/json-patch+json", "application/merge-patch+json",
                       "application/apply-patch+yaml"]
        if t.builtin:
            patch_types.append("application/strategic-merge-patch+json")
        obj = {"schema": {"type": "object"}}
        ok = {"200": {"description": "OK"}}

        def op(action, params, body=None):
            o = {"operationId": "%s%s" % (action, t.kind), "x-kubernetes-action": action,
                 "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": ok}
            if body:
                o["requestBody"] = {"content": body}
            return o
        paths[base] = {"get": op("list", []), "post": op("post", write_params, {"application/json": obj})}
        paths[base + "/{name}"] = {
            "get": op("get", []),
            "put": op("put", write_params, {"application/json": obj}),
            "patch": op("patch", write_params + [_openapi_param("force")],
                        {ct: obj for ct in patch_types}),
            "delete": op("delete", [_openapi_param("dryRun")]),
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": K8S_VERSION},
            "paths": paths, "components": {"schemas": {}}}


def openapi_gv_key(group, version):
    return "api/v1" if not group else "apis/%s/%s" % (group, version)


def openapi_index():
    paths = {}
    for (g, v) in group_versions():
        doc = jdump(openapi_gv_doc(g, v)).encode()
        h = hashlib.sha512(doc).hexdigest()[:64].upper()
        key = openapi_gv_key(g, v)
        paths[key] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (key, h)}
    return {"paths": paths}


# --------------------------------------------------------------------------
# The store


class Watcher:
    def __init__(self, rt, ns, lsel, fsel):
        self.rt, self.ns, self.lsel, self.fsel = rt, ns, lsel, fsel
        self.q = queue.SimpleQueue()

    def match(self, obj):
        if obj is None:
            return False
        if self.ns is not None and meta(obj).get("namespace") != self.ns:
            return False
        return label_match(self.lsel, labels_of(obj)) and field_match(self.fsel, obj)

    def translate(self, etype, obj, old):
        """Map a store event to what this (filtered) watch sees, or None."""
        if etype in ("ADDED", "DELETED"):
            return (etype, obj) if self.match(obj) else None
        new_m, old_m = self.match(obj), self.match(old)
        if new_m and old_m:
            return ("MODIFIED", obj)
        if new_m:
            return ("ADDED", obj)
        if old_m:
            gone = dcopy(old)
            gone["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
            return ("DELETED", gone)
        return None


class Store:
    def __init__(self, args):
        self.lock = threading.RLock()
        self.cluster = args.cluster
        self.objs = {t.key: {} for t in TYPES}
        # Resource versions start at the clock in milliseconds, so that a
        # restarted kapi without a state file never reuses an old one: a
        # client still holding one gets 410 Expired and relists.
        self.rv = int(time.time() * 1000)
        self.hist = collections.deque()
        self.floor = self.rv
        self.watchers = set()
        self.seq = {}  # uid -> creation resourceVersion (newest-first scale down)
        self.dirty = set()
        self.gc_pending = False
        self.dns_dirty = True
        self.persist_dirty = False
        self.state_file = args.state_file
        self.dns_dir = args.dns_hosts_dir
        self.dns_domain = args.dns_domain
        self.dns_last = None
        self.listen_port = int(args.listen.rsplit(":", 1)[1])
        net = ipaddress.ip_network(args.service_cidr, strict=False)
        self.svc_net = net
        self.svc_first = int(net.network_address) + 1
        self.svc_last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
        if self.svc_last < self.svc_first + 1:
            raise SystemExit("kapi: --service-cidr %s is too small" % args.service_cidr)
        self.svc_next = self.svc_first + 1
        self.np_next = 30000 + random.randrange(2768)
        if self.state_file and os.path.exists(self.state_file):
            self.load_state()
        self.bootstrap()

    # ---- low-level commit -------------------------------------------------

    def _commit(self, rt, etype, obj, old=None):
        self.rv += 1
        m = obj["metadata"]
        m["resourceVersion"] = str(self.rv)
        # ObjectMeta's maps are omitempty: the last annotation removed (`kubectl
        # annotate … key-`) leaves no "annotations": {} behind.
        for k in ("labels", "annotations"):
            if m.get(k) == {}:
                del m[k]
        key = (m.get("namespace"), m["name"])
        if etype == "DELETED":
            self.objs[rt.key].pop(key, None)
            self.seq.pop(m.get("uid"), None)
            self.gc_pending = True
        else:
            self.objs[rt.key][key] = obj
            if etype == "ADDED":
                self.seq[m.get("uid")] = self.rv
        self.hist.append((self.rv, rt.key, etype, obj, old))
        while len(self.hist) > HISTORY_LEN:
            self.floor = self.hist.popleft()[0]
        for w in list(self.watchers):
            if w.rt is rt:
                ev = w.translate(etype, obj, old)
                if ev:
                    w.q.put((ev[0], ev[1], self.rv))
        self.dirty.add(rt.plural)
        if rt.plural in ("services", "endpointslices"):
            self.dns_dirty = True
        self.persist_dirty = True
        return obj

    def get(self, rt, ns, name):
        return self.objs[rt.key].get((ns if rt.namespaced else None, name))

    def items(self, rt, ns=None):
        d = self.objs[rt.key]
        if ns is None:
            return [d[k] for k in sorted(d, key=lambda k: (k[0] or "", k[1]))]
        return [d[k] for k in sorted(d) if k[0] == ns]

    # ---- bootstrap and persistence ---------------------------------------

    def bootstrap(self):
        with self.lock:
            for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
                if not self.get(T["namespaces"], None, ns):
                    self._create(T["namespaces"], None, {"metadata": {"name": ns}})
            if not self.get(T["services"], "default", "kubernetes"):
                ip = str(ipaddress.ip_address(self.svc_first))
                self._create(T["services"], "default", {
                    "metadata": {"name": "kubernetes", "labels": {"component": "apiserver",
                                                                  "provider": "kubernetes"}},
                    "spec": {"type": "ClusterIP", "clusterIP": ip, "sessionAffinity": "None",
                             "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                        "targetPort": self.listen_port}]}})
            for ns in self.items(T["namespaces"]):  # deletions cut short by a restart
                if meta(ns).get("deletionTimestamp"):
                    threading.Timer(NS_GRACE_SECONDS, self.finalize_namespace,
                                    (meta(ns)["name"], meta(ns).get("uid"))).start()
            self.reconcile()
            self.write_dns()

    def load_state(self):
        with open(self.state_file) as f:
            st = json.load(f)
        for plural, objs in (st.get("objects") or {}).items():
            rt = T.get(plural)
            if not rt:
                continue
            for o in objs:
                m = o["metadata"]
                self.objs[rt.key][(m.get("namespace") if rt.namespaced else None, m["name"])] = o
        self.seq = {k: int(v) for k, v in (st.get("seq") or {}).items()}
        self.rv = int(st.get("rv", 1))
        self.floor = self.rv
        log("loaded %d objects at resourceVersion %d from %s"
            % (sum(len(v) for v in self.objs.values()), self.rv, self.state_file))

    def snapshot(self):
        with self.lock:
            self.persist_dirty = False
            return jdump({"rv": self.rv, "seq": self.seq,
                          "objects": {t.plural: list(self.objs[t.key].values()) for t in TYPES}})

    def save_state(self):
        if not self.state_file:
            return
        data = self.snapshot()
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def persister(self):
        while True:
            time.sleep(0.3)
            if self.persist_dirty:
                try:
                    self.save_state()
                except Exception as e:
                    log("state file: %s" % e)

    # ---- DNS ---------------------------------------------------------------

    def write_dns(self):
        self.dns_dirty = False
        if not self.dns_dir:
            return
        lines = []
        for s in self.items(T["services"]):
            m, spec = meta(s), s.get("spec") or {}
            fqdn = "%s.%s.svc.%s" % (m["name"], m.get("namespace"), self.dns_domain)
            ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
            if not ips and spec.get("clusterIP") == "None":  # headless: the ready endpoints
                for es in self.items(T["endpointslices"], m.get("namespace")):
                    if labels_of(es).get("kubernetes.io/service-name") != m["name"]:
                        continue
                    for ep in es.get("endpoints") or []:
                        if (ep.get("conditions") or {}).get("ready", True):
                            ips.extend(ep.get("addresses") or [])
            for ip in ips:
                lines.append("%s %s\n" % (ip, fqdn))
        content = "".join(sorted(set(lines)))
        if content == self.dns_last:
            return
        try:
            os.makedirs(self.dns_dir, exist_ok=True)
            path = os.path.join(self.dns_dir, "%s.hosts" % self.cluster)
            tmp = os.path.join(self.dns_dir, ".%s.hosts.tmp" % self.cluster)
            with open(tmp, "w") as f:
                f.write(content)
            os.replace(tmp, path)
            self.dns_last = content
        except OSError as e:
            log("dns hosts: %s" % e)

    # ---- object preparation ---------------------------------------------

    def _ns_check(self, rt, ns, name):
        if not rt.namespaced:
            return
        n = self.get(T["namespaces"], None, ns)
        if not n:
            raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ns,
                           {"name": ns, "kind": "namespaces"})
        if meta(n).get("deletionTimestamp"):
            raise ApiError(403, "Forbidden",
                           '%s "%s" is forbidden: unable to create new content in namespace %s '
                           'because it is being terminated' % (rt.qualified, name, ns),
                           _details(rt, name))

    def _default_pod_spec(self, spec):
        if not isinstance(spec, dict):
            return
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("securityContext", {})
        for lst in ("containers", "initContainers"):
            for c in spec.get(lst) or []:
                if not isinstance(c, dict):
                    continue
                img = c.get("image", "")
                tagged = ":" in img.rsplit("/", 1)[-1] or "@" in img
                c.setdefault("imagePullPolicy",
                             "Always" if not tagged or img.endswith(":latest") else "IfNotPresent")
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("resources", {})
                for p in c.get("ports") or []:
                    if isinstance(p, dict):
                        p.setdefault("protocol", "TCP")

    def _svc_ips_in_use(self, skip=None):
        used = set()
        for s in self.items(T["services"]):
            if s is skip:
                continue
            for ip in (s.get("spec") or {}).get("clusterIPs") or [(s.get("spec") or {}).get("clusterIP")]:
                if ip and ip != "None":
                    used.add(ip)
        return used

    def _alloc_ip(self, used):
        span = self.svc_last - self.svc_first + 1
        for _ in range(span):
            cand = self.svc_next
            self.svc_next = self.svc_next + 1 if self.svc_next < self.svc_last else self.svc_first
            ip = str(ipaddress.ip_address(cand))
            if ip not in used:
                return ip
        return None

    def _nodeports_in_use(self, skip=None):
        used = set()
        for s in self.items(T["services"]):
            if s is skip:
                continue
            for p in (s.get("spec") or {}).get("ports") or []:
                if p.get("nodePort"):
                    used.add(p["nodePort"])
        return used

    def _prepare_service(self, obj, old):
        rt, name = T["services"], meta(obj)["name"]
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            raise invalid(rt, name, "spec", "must be an object")
        typ = spec.setdefault("type", "ClusterIP")
        if typ != "ExternalName":
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "targetPort" not in p and "port" in p:
                    p["targetPort"] = p["port"]
        ospec = (old or {}).get("spec") or {}
        if old is not None:
            # clusterIP is immutable; an update that leaves it out keeps it
            if not spec.get("clusterIP") and ospec.get("clusterIP") and typ != "ExternalName" \
                    and ospec.get("type") != "ExternalName":
                spec["clusterIP"] = ospec["clusterIP"]
                spec["clusterIPs"] = ospec.get("clusterIPs") or [ospec["clusterIP"]]
            elif spec.get("clusterIP") and ospec.get("clusterIP") and spec["clusterIP"] != ospec["clusterIP"] \
                    and typ != "ExternalName" and ospec.get("type") != "ExternalName":
                raise invalid(rt, name, "spec.clusterIPs[0]", "Invalid value: %r: may not change once set"
                              % spec["clusterIP"])
        if typ == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            ip = spec.get("clusterIP") or ((spec.get("clusterIPs") or [None])[0])
            if ip == "None":
                spec["clusterIP"] = "None"
                spec["clusterIPs"] = ["None"]
            elif ip:
                try:
                    addr = ipaddress.ip_address(ip)
                except ValueError:
                    raise invalid(rt, name, "spec.clusterIPs[0]", "Invalid value: %r: must be a valid IP" % ip)
                if ospec.get("clusterIP") != ip:
                    if addr not in self.svc_net or int(addr) < self.svc_first or int(addr) > self.svc_last:
                        raise invalid(rt, name, "spec.clusterIPs",
                                      "Invalid value: %r: failed to allocate IP %s: the provided IP (%s) "
                                      "is not in the valid range. The range of valid IPs is %s"
                                      % ([ip], ip, ip, self.svc_net))
                    if ip in self._svc_ips_in_use(skip=old):
                        raise invalid(rt, name, "spec.clusterIPs",
                                      "Invalid value: %r: failed to allocate IP %s: provided IP is "
                                      "already allocated" % ([ip], ip))
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            else:
                ip = self._alloc_ip(self._svc_ips_in_use(skip=old))
                if ip is None:
                    raise ApiError(500, "InternalError", "failed to allocate a serviceIP: range is full")
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            if spec["clusterIP"] != "None":
                fam = "IPv6" if ":" in spec["clusterIP"] else "IPv4"
                spec.setdefault("ipFamilies", [fam])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
        if typ in ("NodePort", "LoadBalancer"):
            used = self._nodeports_in_use(skip=old)
            oldnp = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                     for p in ospec.get("ports") or [] if isinstance(p, dict)}
            for p in spec.get("ports") or []:
                if not isinstance(p, dict) or p.get("nodePort"):
                    continue
                prev = oldnp.get((p.get("port"), p.get("protocol", "TCP")))
                if prev:
                    p["nodePort"] = prev
                    continue
                for _ in range(2768):
                    cand = self.np_next
                    self.np_next = 30000 if self.np_next >= 32767 else self.np_next + 1
                    if cand not in used:
                        p["nodePort"] = cand
                        used.add(cand)
                        break
            spec.setdefault("externalTrafficPolicy", "Cluster")
        else:
            for p in spec.get("ports") or []:
                if isinstance(p, dict):
                    p.pop("nodePort", None)
        if old is None:
            obj["status"] = {"loadBalancer": {}}

    def _prepare(self, rt, obj, old):
        """Type-specific defaults and checks on create (old None) and update."""
        if rt.plural == "pods":
            self._default_pod_spec(obj.setdefault("spec", {}))
            if old is None:
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            elif (old.get("spec") or {}).get("nodeName") and \
                    (obj.get("spec") or {}).get("nodeName") != old["spec"]["nodeName"]:
                raise invalid(rt, meta(obj)["name"], "spec", "Forbidden: pod updates may not change "
                              "fields other than the allowed ones (spec.nodeName is immutable once set)")
        elif rt.plural == "deployments":
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("replicas", 1)
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("progressDeadlineSeconds", 600)
                strat = spec.get("strategy")
                if not isinstance(strat, dict):
                    strat = spec["strategy"] = {}
                strat.setdefault("type", "RollingUpdate")
                if strat["type"] == "RollingUpdate":
                    ru = strat.setdefault("rollingUpdate", {})
                    if isinstance(ru, dict):
                        ru.setdefault("maxUnavailable", "25%")
                        ru.setdefault("maxSurge", "25%")
                tmpl = spec.get("template")
                if isinstance(tmpl, dict):
                    self._default_pod_spec(tmpl.setdefault("spec", {}))
                if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 0:
                    raise invalid(rt, meta(obj)["name"], "spec.replicas",
                                  "Invalid value: %r: must be greater than or equal to 0" % spec.get("replicas"))
            if old is None:
                obj["status"] = {}
        elif rt.plural == "services":
            self._prepare_service(obj, old)
        elif rt.plural == "namespaces":
            if old is None:
                obj["spec"] = {"finalizers": ["kubernetes"]}
                obj["status"] = {"phase": "Active"}
            lb = meta(obj).setdefault("labels", {})
            if isinstance(lb, dict):
                lb["kubernetes.io/metadata.name"] = meta(obj)["name"]
        elif rt.plural == "secrets":
            obj.setdefault("type", "Opaque")
            sd = obj.pop("stringData", None)
            if isinstance(sd, dict):
                data = obj.setdefault("data", {})
                for k, v in sd.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()

    # ---- generic operations (lock held) -----------------------------------

    def _create(self, rt, ns, obj, dry=False):
        if not isinstance(obj, dict):
            raise bad_request("the body of the request was not a JSON object")
        if obj.get("kind") and obj["kind"] != rt.kind:
            raise bad_request("the kind in the data (%s) does not match the resource (%s)"
                              % (obj["kind"], rt.kind))
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.gv
        m = obj.get("metadata")
        if m is None:
            m = obj["metadata"] = {}
        if not isinstance(m, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            if m.get("namespace") and ns and m["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace "
                                  "sent on the request")
            ns = ns or m.get("namespace") or "default"
            m["namespace"] = ns
        else:
            m.pop("namespace", None)
            ns = None
        if not m.get("name"):
            gn = m.get("generateName")
            if not gn:
                raise invalid(rt, "", "metadata.name", "Required value: name or generateName is required")
            for _ in range(100):
                cand = gn[:58] + rand_suffix()
                if not self.get(rt, ns, cand):
                    m["name"] = cand
                    break
        name = m["name"]
        if not isinstance(name, str) or len(name) > 253 or not NAME_RE.match(name):
            raise invalid(rt, str(name), "metadata.name",
                          "Invalid value: %r: a lowercase RFC 1123 subdomain must consist of lower case "
                          "alphanumeric characters, '-' or '.'" % name)
        self._ns_check(rt, ns, name)
        if self.get(rt, ns, name):
            raise already_exists(rt, name)
        m["uid"] = str(uuid.uuid4())
        m["creationTimestamp"] = now_iso()
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
                  "managedFields"):
            m.pop(k, None)
        if rt.generation:
            m["generation"] = 1
        else:
            m.pop("generation", None)
        self._prepare(rt, obj, None)
        if dry:
            return obj
        return self._commit(rt, "ADDED", obj)

    def _update(self, rt, old, new, sub=None, dry=False, internal=False):
        """Write `new` over `old` (both full objects); returns the stored result."""
        if not isinstance(new, dict):
            raise bad_request("the body of the request was not a JSON object")
        om = old["metadata"]
        if sub == "status":
            merged = dcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            nm = new.get("metadata")
            if not isinstance(nm, dict):
                nm = new["metadata"] = {}
            if nm.get("name") and nm["name"] != om["name"]:
                raise bad_request('the name of the object (%s) does not match the name on the URL (%s)'
                                  % (nm["name"], om["name"]))
            if rt.namespaced and nm.get("namespace") and nm["namespace"] != om.get("namespace"):
                raise bad_request("the namespace of the provided object does not match the namespace "
                                  "sent on the request")
            for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
                if k in om:
                    nm[k] = om[k]
                else:
                    nm.pop(k, None)
            nm.pop("managedFields", None)
            new["kind"] = rt.kind
            new["apiVersion"] = rt.gv
            if rt.status_sub and not internal:
                if "status" in old:
                    new["status"] = dcopy(old["status"])
                else:
                    new.pop("status", None)
            self._prepare(rt, new, old)
            if rt.generation and new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = int(om.get("generation") or 1) + 1
        new["metadata"]["resourceVersion"] = om.get("resourceVersion")
        if new == old:
            return old
        if dry:
            return new
        res = self._commit(rt, "MODIFIED", new, old)
        # As the apiserver's shouldDeleteDuringUpdate: an update finishes a deletion
        # once no finalizer is left and the grace period is 0.  A pod in its grace
        # period (deletionGracePeriodSeconds > 0) stays until its kubelet deletes it.
        if meta(res).get("deletionTimestamp") and not meta(res).get("finalizers") \
                and rt.plural != "namespaces" and not meta(res).get("deletionGracePeriodSeconds"):
            return self._delete(rt, res)
        return res

    def _delete(self, rt, old, orphan=False):
        if orphan:
            self._orphan_dependents(om_uid=meta(old).get("uid"))
        gone = dcopy(old)
        return self._commit(rt, "DELETED", gone, None)

    def _orphan_dependents(self, om_uid):
        for t in TYPES:
            for o in list(self.objs[t.key].values()):
                refs = meta(o).get("ownerReferences") or []
                if any(r.get("uid") == om_uid for r in refs):
                    n = dcopy(o)
                    n["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != om_uid]
                    if not n["metadata"]["ownerReferences"]:
                        del n["metadata"]["ownerReferences"]
                    self._commit(t, "MODIFIED", n, o)

    def delete_object(self, rt, old, opts, dry=False):
        """DELETE on one object: finalizers, namespaces, propagation."""
        pre = (opts or {}).get("preconditions") or {}
        m = meta(old)
        if pre.get("uid") and pre["uid"] != m.get("uid"):
            raise ApiError(409, "Conflict", 'Precondition failed: UID in precondition: %s, UID in object '
                           'meta: %s' % (pre["uid"], m.get("uid")), _details(rt, m["name"]))
        if pre.get("resourceVersion") and pre["resourceVersion"] != m.get("resourceVersion"):
            raise ApiError(409, "Conflict", "Precondition failed: ResourceVersion in precondition: %s, "
                           "ResourceVersion in object meta: %s" % (pre["resourceVersion"],
                                                                   m.get("resourceVersion")),
                           _details(rt, m["name"]))
        if dry:
            return old
        if rt.plural == "namespaces":
            if m.get("deletionTimestamp"):
                return old
            n = dcopy(old)
            n["metadata"]["deletionTimestamp"] = now_iso()
            n["metadata"]["deletionGracePeriodSeconds"] = 0
            n.setdefault("status", {})["phase"] = "Terminating"
            res = self._commit(rt, "MODIFIED", n, old)
            threading.Timer(NS_GRACE_SECONDS, self.finalize_namespace, (m["name"], m.get("uid"))).start()
            return res
        orphan = (opts or {}).get("propagationPolicy") == "Orphan" or (opts or {}).get("orphanDependents") is True
        if rt.plural == "pods":
            grace = self.pod_grace(old, (opts or {}).get("gracePeriodSeconds"))
            if grace > 0:
                return self.delete_pod_gracefully(old, grace)
        if m.get("finalizers"):
            if m.get("deletionTimestamp") and not m.get("deletionGracePeriodSeconds"):
                return old
            n = dcopy(old)
            if not m.get("deletionTimestamp"):
                n["metadata"]["deletionTimestamp"] = now_iso()
            n["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(rt, "MODIFIED", n, old)
        return self._delete(rt, old, orphan=orphan)

    @staticmethod
    def pod_grace(pod, requested=None):
        """The grace period a DELETE of this pod gets (the pod strategy's CheckGracefulDelete):
        the one asked for, else spec.terminationGracePeriodSeconds; 0 (deleted at once)
        for a pod bound to no node or already terminal; a negative one counts as 1."""
        spec, st = pod.get("spec") or {}, pod.get("status") or {}
        grace = requested if isinstance(requested, int) and not isinstance(requested, bool) else \
            spec.get("terminationGracePeriodSeconds", 0)
        if not isinstance(grace, int) or isinstance(grace, bool):
            grace = 0
        if not spec.get("nodeName") or st.get("phase") in ("Succeeded", "Failed"):
            grace = 0
        return 1 if grace < 0 else grace

    def delete_pod_gracefully(self, pod, grace):
        """A bound pod is not removed by a DELETE: it gets a deletionTimestamp (now + grace)
        and stays, Terminating, until its kubelet has stopped it and deletes it with grace
        period 0.  Meanwhile the EndpointSlice controller shows it ready=false,
        terminating=true.  A second DELETE may only shorten the grace period."""
        m = meta(pod)
        cur = m.get("deletionGracePeriodSeconds")
        if m.get("deletionTimestamp") and cur is not None and cur <= grace:
            return pod
        n = dcopy(pod)
        n["metadata"]["deletionTimestamp"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + grace))
        n["metadata"]["deletionGracePeriodSeconds"] = grace
        return self._commit(T["pods"], "MODIFIED", n, pod)

    def delete_dependent(self, rt, obj):
        """A controller's DELETE with default options (ReplicaSet scale-down, the garbage
        collector): graceful for a bound pod, as the API server does it."""
        if rt.plural == "pods":
            grace = self.pod_grace(obj)
            if grace > 0:
                return self.delete_pod_gracefully(obj, grace)
        return self._delete(rt, obj)

    def finalize_namespace(self, name, uid):
        with self.lock:
            ns = self.get(T["namespaces"], None, name)
            if not ns or meta(ns).get("uid") != uid:
                return
            for t in TYPES:
                if t.namespaced:
                    for o in self.items(t, name):
                        self._delete(t, o)
            ns = self.get(T["namespaces"], None, name)
            if ns:
                self._delete(T["namespaces"], ns)
            self.reconcile()

    # ---- controllers (lock held) --------------------------------------------

    def reconcile(self):
        for _ in range(100):
            if self.gc_pending:
                self.gc_pending = False
                self.ctl_gc()
            d, self.dirty = self.dirty, set()
            if not d:
                break
            if "nodes" in d:
                self.ctl_podgc()
            if d & {"deployments", "pods"}:
                self.ctl_deployments()
            if d & {"pods", "nodes"}:
                self.ctl_scheduler()
            if d & {"services", "pods", "endpointslices", "nodes"}:
                self.ctl_endpointslices()
        if self.dns_dirty:
            self.write_dns()

    def ctl_gc(self):
        """Delete objects all of whose owners are gone (ownerReferences)."""
        while True:
            uids = set()
            for t in TYPES:
                for o in self.objs[t.key].values():
                    uids.add(meta(o).get("uid"))
            victims = []
            for t in TYPES:
                for o in self.objs[t.key].values():
                    refs = meta(o).get("ownerReferences")
                    if meta(o).get("deletionTimestamp"):
                        continue  # being deleted already (a pod in its grace period)
                    if refs and isinstance(refs, list) and not any(
                            isinstance(r, dict) and r.get("uid") in uids for r in refs):
                        victims.append((t, o))
            if not victims:
                return
            for t, o in victims:
                self.delete_dependent(t, o)

    def ctl_podgc(self):
        """Pods bound to a Node that no longer exists are deleted (as the pod GC does)."""
        nodes = {k[1] for k in self.objs[T["nodes"].key]}
        for p in list(self.objs[T["pods"].key].values()):
            nn = (p.get("spec") or {}).get("nodeName")
            if nn and nn not in nodes:
                self._delete(T["pods"], p)

    def _owned_by(self, o, uid):
        return any(isinstance(r, dict) and r.get("uid") == uid and r.get("controller")
                   for r in meta(o).get("ownerReferences") or [])

    def ctl_deployments(self):
        pods_rt, dep_rt = T["pods"], T["deployments"]
        by_owner = collections.defaultdict(list)
        for p in self.objs[pods_rt.key].values():
            for r in meta(p).get("ownerReferences") or []:
                if isinstance(r, dict) and r.get("controller") and r.get("kind") == "Deployment":
                    by_owner[r.get("uid")].append(p)
        for d in list(self.objs[dep_rt.key].values()):
            dm = meta(d)
            if dm.get("deletionTimestamp"):
                continue
            spec = d.get("spec") or {}
            tmpl = spec.get("template") or {}
            h = hashlib.sha256(json.dumps(tmpl, sort_keys=True).encode()).hexdigest()[:10]
            pods = [p for p in by_owner.get(dm["uid"], []) if not meta(p).get("deletionTimestamp")]
            old = [p for p in pods if labels_of(p).get("pod-template-hash") != h]
            cur = [p for p in pods if labels_of(p).get("pod-template-hash") == h]
            for p in old:  # simple recreate
                self.delete_dependent(pods_rt, p)
            want = spec.get("replicas", 1)
            want = want if isinstance(want, int) and want >= 0 else 1
            if len(cur) > want:
                cur.sort(key=lambda p: (self.seq.get(meta(p).get("uid"), 0), meta(p)["name"]))
                for p in cur[want:][::-1]:
                    self.delete_dependent(pods_rt, p)
                cur = cur[:want]
            ns_obj = self.get(T["namespaces"], None, dm["namespace"])
            if len(cur) < want and ns_obj and not meta(ns_obj).get("deletionTimestamp"):
                tm = tmpl.get("metadata") or {}
                for _ in range(want - len(cur)):
                    lbl = dict(tm.get("labels") or {})
                    lbl["pod-template-hash"] = h
                    pm = {"generateName": "%s-%s-" % (dm["name"], h), "namespace": dm["namespace"],
                          "labels": lbl,
                          "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                               "name": dm["name"], "uid": dm["uid"], "controller": True,
                                               "blockOwnerDeletion": True}]}
                    if tm.get("annotations"):
                        pm["annotations"] = dict(tm["annotations"])
                    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pm,
                           "spec": dcopy(tmpl.get("spec") or {})}
                    try:
                        cur.append(self._create(pods_rt, dm["namespace"], pod))
                    except ApiError as e:
                        log("deployment %s/%s: cannot create pod: %s" % (dm["namespace"], dm["name"], e.message))
                        break
            self._deployment_status(d, cur, want)

    def _deployment_status(self, d, cur, want):
        dm = meta(d)
        spec = d.get("spec") or {}
        all_pods = [p for p in self.objs[T["pods"].key].values()
                    if self._owned_by(p, dm["uid"]) and not meta(p).get("deletionTimestamp")]
        ready = sum(1 for p in cur if cond_true(p, "Ready") and not meta(p).get("deletionTimestamp"))
        mu = ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", "25%")
        if isinstance(mu, str) and mu.endswith("%"):
            try:
                mu = want * int(mu[:-1]) // 100
            except ValueError:
                mu = 0
        elif not isinstance(mu, int):
            mu = 0
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            mu = 0
        old_st = d.get("status") or {}
        oldc = {c.get("type"): c for c in old_st.get("conditions") or []}
        now = now_iso()

        def condition(ctype, status, reason, message):
            prev = oldc.get(ctype)
            if prev and prev.get("status") == status and prev.get("reason") == reason:
                return prev
            return {"type": ctype, "status": status, "lastUpdateTime": now, "lastTransitionTime":
                    prev.get("lastTransitionTime", now) if prev and prev.get("status") == status else now,
                    "reason": reason, "message": message}
        avail_ok = ready >= want - mu
        conds = [
            condition("Available", "True" if avail_ok else "False",
                      "MinimumReplicasAvailable" if avail_ok else "MinimumReplicasUnavailable",
                      "Deployment has minimum availability." if avail_ok
                      else "Deployment does not have minimum availability."),
            condition("Progressing", "True",
                      "NewReplicaSetAvailable" if ready >= want and len(all_pods) == want
                      else "ReplicaSetUpdated",
                      'ReplicaSet "%s" has successfully progressed.' % dm["name"]
                      if ready >= want else 'ReplicaSet "%s" is progressing.' % dm["name"]),
        ]
        st = {"observedGeneration": dm.get("generation", 1)}
        for k, v in (("replicas", len(all_pods)), ("updatedReplicas", len(cur)), ("readyReplicas", ready),
                     ("availableReplicas", ready), ("unavailableReplicas", max(0, want - ready))):
            if v:
                st[k] = v
        st["conditions"] = conds
        if st != old_st:
            n = dcopy(d)
            n["status"] = st
            self._update(T["deployments"], d, n, sub="status")

    def _tolerates(self, pod, taint):
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            return True
        for tol in (pod.get("spec") or {}).get("tolerations") or []:
            if tol.get("effect") and tol.get("effect") != taint.get("effect"):
                continue
            if tol.get("operator") == "Exists":
                if not tol.get("key") or tol.get("key") == taint.get("key"):
                    return True
            elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
                return True
        return False

    def ctl_scheduler(self):
        nodes = [n for n in self.items(T["nodes"])
                 if cond_true(n, "Ready") and not (n.get("spec") or {}).get("unschedulable")
                 and not meta(n).get("deletionTimestamp")]
        pods = list(self.objs[T["pods"].key].values())
        total = collections.Counter()
        owned = collections.Counter()

        def owner(p):
            for r in meta(p).get("ownerReferences") or []:
                if isinstance(r, dict) and r.get("controller"):
                    return r.get("uid")
            return None
        pending = []
        for p in pods:
            nn = (p.get("spec") or {}).get("nodeName")
            if nn:
                total[nn] += 1
                owned[(owner(p), nn)] += 1
            elif not meta(p).get("deletionTimestamp") and \
                    (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                pending.append(p)
        pending.sort(key=lambda p: (self.seq.get(meta(p).get("uid"), 0), meta(p)["name"]))
        for p in pending:
            spec = p.get("spec") or {}
            sel = spec.get("nodeSelector") or {}
            cands = [n for n in nodes
                     if all(labels_of(n).get(k) == v for k, v in sel.items())
                     and all(self._tolerates(p, t) for t in (n.get("spec") or {}).get("taints") or [])]
            o = owner(p)
            if not cands:
                msg = "0/%d nodes are available." % len(self.objs[T["nodes"].key])
                conds = (p.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "PodScheduled" and c.get("message") == msg for c in conds):
                    continue
                n = dcopy(p)
                st = n.setdefault("status", {})
                st["conditions"] = [c for c in conds if c.get("type") != "PodScheduled"] + [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": msg, "lastProbeTime": None, "lastTransitionTime": now_iso()}]
                self._update(T["pods"], p, n, internal=True)
                continue
            best = min(cands, key=lambda n: (owned[(o, meta(n)["name"])], total[meta(n)["name"]],
                                             meta(n)["name"]))
            bn = meta(best)["name"]
            total[bn] += 1
            owned[(o, bn)] += 1
            n = dcopy(p)
            n["spec"]["nodeName"] = bn
            st = n.setdefault("status", {})
            st["conditions"] = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"] + [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": now_iso()}]
            self._update(T["pods"], p, n, internal=True)

    def ctl_endpointslices(self):
        eps_rt = T["endpointslices"]
        pods_by_ns = collections.defaultdict(list)
        for p in self.objs[T["pods"].key].values():
            pods_by_ns[meta(p).get("namespace")].append(p)
        zones = {meta(n)["name"]: labels_of(n).get("topology.kubernetes.io/zone")
                 for n in self.objs[T["nodes"].key].values()}
        managed = collections.defaultdict(list)
        for es in self.objs[eps_rt.key].values():
            lb = labels_of(es)
            if lb.get("endpointslice.kubernetes.io/managed-by") == "endpointslice-controller.k8s.io":
                managed[(meta(es).get("namespace"), lb.get("kubernetes.io/service-name"))].append(es)
        seen = set()
        for svc in list(self.objs[T["services"].key].values()):
            sm, spec = meta(svc), svc.get("spec") or {}
            ns, name = sm.get("namespace"), sm["name"]
            sel = spec.get("selector")
            if not sel or spec.get("type") == "ExternalName":
                continue
            seen.add((ns, name))
            fam = "IPv6" if (spec.get("ipFamilies") or ["IPv4"])[0] == "IPv6" else "IPv4"
            groups = collections.OrderedDict()
            svc_ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]

            def resolve(pod, sp):
                tp = sp.get("targetPort", sp.get("port"))
                if isinstance(tp, int):
                    return tp
                if isinstance(tp, str) and tp.isdigit():
                    return int(tp)
                for c in (pod.get("spec") or {}).get("containers") or []:
                    for cp in c.get("ports") or []:
                        if cp.get("name") == tp and cp.get("protocol", "TCP") == sp.get("protocol", "TCP"):
                            return cp.get("containerPort")
                return None
            for pod in sorted(pods_by_ns.get(ns, []), key=lambda p: meta(p)["name"]):
                if not all(labels_of(pod).get(k) == v for k, v in sel.items()):
                    continue
                pst = pod.get("status") or {}
                if pst.get("phase") in ("Succeeded", "Failed"):
                    continue
                ips = [x.get("ip") for x in pst.get("podIPs") or [] if isinstance(x, dict)] or [pst.get("podIP")]
                ips = [ip for ip in ips if ip and ((":" in ip) == (fam == "IPv6"))]
                if not ips:
                    continue
                ports = []
                for sp in svc_ports:
                    tp = resolve(pod, sp)
                    if tp is not None:
                        ports.append({"name": sp.get("name", ""), "port": tp,
                                      "protocol": sp.get("protocol", "TCP")})
                # podToEndpoint (k8s.io/endpointslice): a terminating pod stays in the
                # slice, serving as its Ready condition says, but never ready (unless
                # publishNotReadyAddresses).
                terminating = bool(meta(pod).get("deletionTimestamp"))
                serving = cond_true(pod, "Ready")
                ep = {"addresses": [ips[0]],
                      "conditions": {"ready": bool(spec.get("publishNotReadyAddresses"))
                                     or (serving and not terminating),
                                     "serving": serving, "terminating": terminating},
                      "targetRef": {"kind": "Pod", "namespace": ns, "name": meta(pod)["name"],
                                    "uid": meta(pod).get("uid")}}
                nn = (pod.get("spec") or {}).get("nodeName")
                if nn:
                    ep["nodeName"] = nn
                    if zones.get(nn):
                        ep["zone"] = zones[nn]
                groups.setdefault(jdump(ports), (ports, []))[1].append(ep)
            if not groups:
                ports = [{"name": sp.get("name", ""), "port": sp.get("targetPort", sp.get("port")),
                          "protocol": sp.get("protocol", "TCP")} for sp in svc_ports
                         if isinstance(sp.get("targetPort", sp.get("port")), int)]
                groups[jdump(ports)] = (ports, [])
            existing = list(managed.get((ns, name), []))
            lbl = dict(labels_of(svc))
            lbl.update({"kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})
            owner = [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": sm.get("uid"),
                      "controller": True, "blockOwnerDeletion": True}]
            pending = []
            for key, (ports, eps) in groups.items():
                match = next((e for e in existing if jdump(e.get("ports") or []) == key), None)
                if match is not None:
                    existing.remove(match)
                pending.append((match, ports, eps))
            for match, ports, eps in pending:
                if match is None and existing:
                    match = existing.pop(0)
                if match is None:
                    body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                            "metadata": {"generateName": name + "-", "namespace": ns, "labels": lbl,
                                         "ownerReferences": owner},
                            "addressType": fam, "endpoints": eps, "ports": ports}
                    self._create(eps_rt, ns, body)
                else:
                    n = dcopy(match)
                    n["metadata"]["labels"] = lbl
                    n["metadata"]["ownerReferences"] = owner
                    n["addressType"] = fam
                    n["endpoints"] = eps
                    n["ports"] = ports
                    self._update(eps_rt, match, n, internal=True)
            for e in existing:
                self._delete(eps_rt, e)
        for key, slices in managed.items():
            if key not in seen:
                for e in slices:
                    if self.get(eps_rt, meta(e).get("namespace"), meta(e)["name"]) is e:
                        self._delete(eps_rt, e)

    # ---- watch registration -------------------------------------------------

    def start_watch(self, rt, ns, lsel, fsel, rv, send_initial):
        """Registers a watcher; returns (watcher, initial events, error status)."""
        w = Watcher(rt, ns, lsel, fsel)
        with self.lock:
            initial = []
            if send_initial or rv in (None, "", "0"):
                for o in self.items(rt, ns if rt.namespaced else None):
                    if w.match(o):
                        initial.append(("ADDED", o, self.rv))
                if send_initial:
                    initial.append(("BOOKMARK-END", None, self.rv))
            else:
                try:
                    n = int(rv)
                except ValueError:
                    raise bad_request("invalid resource version %r" % rv)
                if n < self.floor:
                    return None, [], ApiError(410, "Expired", "too old resource version: %d (%d)"
                                              % (n, self.floor + 1))
                if n > self.rv:  # from before a restart: make the client relist
                    return None, [], ApiError(410, "Expired", "too large resource version: %d, current: %d"
                                              % (n, self.rv))
                for (erv, key, etype, obj, old) in self.hist:
                    if erv <= n or key != rt.key:
                        continue
                    ev = w.translate(etype, obj, old)
                    if ev:
                        initial.append((ev[0], ev[1], erv))
            self.watchers.add(w)
        return w, initial, None

    def stop_watch(self, w):
        with self.lock:
            self.watchers.discard(w)


# --------------------------------------------------------------------------
# HTTP


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kapi"
    sys_version = ""

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        http.server.BaseHTTPRequestHandler.setup(self)

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    # ---- plumbing -------------------------------------------------------

    @property
    def store(self):
        return self.server.store

    def send_json(self, code, obj, ctype="application/json"):
        body = jdump(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._code = code

    def send_text(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._code = code

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def parse_body(self, raw, required=True):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/vnd.kubernetes.protobuf" or raw.startswith(b"k8s\x00"):
            return decode_protobuf(raw)
        if not raw.strip():
            if required:
                raise bad_request("the request body is empty")
            return None
        try:
            return json.loads(raw)
        except ValueError:
            if yaml is not None:
                try:
                    return yaml.safe_load(raw)
                except Exception:
                    pass
            raise bad_request("the request body is not valid JSON")

    def dispatch(self, method):
        t0 = time.time()
        self._code = 0
        self._body = None
        try:
            try:
                self._dispatch(method)
            except ApiError as e:
                self.send_json(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
            self.close_connection = True
        except Exception:
            log("internal error on %s %s:\n%s" % (method, self.path, traceback.format_exc()))
            try:
                self.send_json(500, ApiError(500, "InternalError", "internal error").status())
            except Exception:
                self.close_connection = True
        if not self.path.startswith(("/readyz", "/healthz", "/livez")):
            ct = self.headers.get("Content-Type")
            log("%s %s %s %.1fms%s" % (method, self.path, self._code, (time.time() - t0) * 1000,
                                       " [%s]" % ct if ct and method != "GET" else ""))

    def authorized(self):
        tok = self.server.token
        if tok is None:
            return True
        h = self.headers.get("Authorization", "")
        return h.startswith("Bearer ") and h[7:].strip() == tok

    def accept_mode(self):
        """'table', 'pom' (PartialObjectMetadata) or 'json' from the Accept header."""
        acc = self.headers.get("Accept", "") or "application/json"
        for part in acc.split(","):
            fields = [f.strip() for f in part.split(";")]
            mt = fields[0].lower()
            params = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
            if mt not in ("application/json", "*/*", "application/*"):
                continue
            as_ = params.get("as")
            if as_ == "Table":
                return "table"
            if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList"):
                return "pom"
            if as_ is None:
                return "json"
        return "json"

    # ---- routing --------------------------------------------------------

    def _dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        self.q = q
        if path in ("/readyz", "/healthz", "/livez") or path.startswith(("/readyz/", "/healthz/", "/livez/")):
            return self.send_text(200, "ok")
        if path == "/version":
            return self.send_json(200, {"major": "1", "minor": "32", "gitVersion": K8S_VERSION,
                                        "gitCommit": "0000000000000000000000000000000000000000",
                                        "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z",
                                        "goVersion": "go1.23.3", "compiler": "gc",
                                        "platform": "linux/amd64"})
        if not self.authorized():
            self.read_body()
            return self.send_json(401, ApiError(401, "Unauthorized", "Unauthorized").status())
        raw = self.read_body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        if path == "/api":
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                        "serverAddressByClientCIDRs": [
                                            {"clientCIDR": "0.0.0.0/0",
                                             "serverAddress": self.server.listen}]})
        if path == "/apis":
            return self.send_json(200, api_group_list())
        if path == "/openapi/v3":
            return self.send_json(200, openapi_index())
        if path.startswith("/openapi/v3/"):
            key = path[len("/openapi/v3/"):]
            for (g, v) in group_versions():
                if openapi_gv_key(g, v) == key:
                    return self.send_json(200, openapi_gv_doc(g, v))
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        seg = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
        if seg[0] == "api" and len(seg) >= 2 and seg[1] == "v1":
            group, version, rest = "", "v1", seg[2:]
        elif seg[0] == "apis" and len(seg) >= 2:
            group = seg[1]
            if len(seg) == 2:
                g = api_group(group)
                if g:
                    return self.send_json(200, g)
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            version, rest = seg[2], seg[3:]
            if (group, version) not in group_versions():
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return self.send_json(200, api_resource_list(group, version))
        watch = q.get("watch") in ("1", "true", "True")
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            cand = BY_GVR.get((group, version, rest[2]))
            if cand and cand.namespaced:
                ns, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = BY_GVR.get((group, version, rest[0]))
        if not rt or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub and sub not in rt.subs:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and ns is None and (name or method not in ("GET",)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        dry = q.get("dryRun") == "All"
        if method == "GET":
            if watch:
                return self.do_watch(rt, ns, name)
            if name is None:
                return self.do_list(rt, ns)
            return self.do_get(rt, ns, name, sub)
        if method == "POST":
            if name is not None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource")
            return self.do_create(rt, ns, self.parse_body(raw), dry)
        if method == "PUT":
            if name is None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource")
            return self.do_update(rt, ns, name, sub, self.parse_body(raw), dry)
        if method == "PATCH":
            if name is None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource")
            return self.do_patch(rt, ns, name, sub, raw, dry)
        if method == "DELETE":
            opts = self.parse_body(raw, required=False) or {}
            if not isinstance(opts, dict):
                raise bad_request("DeleteOptions must be an object")
            if q.get("propagationPolicy"):
                opts["propagationPolicy"] = q["propagationPolicy"]
            if q.get("gracePeriodSeconds", "").lstrip("-").isdigit():
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            dry = dry or opts.get("dryRun") == ["All"]
            if name is None:
                return self.do_deletecollection(rt, ns, opts, dry)
            if sub:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource")
            return self.do_delete(rt, ns, name, opts, dry)
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    # ---- verbs ----------------------------------------------------------

    def respond_obj(self, code, rt, obj):
        mode = self.accept_mode()
        if mode == "table" and obj.get("kind") == rt.kind:
            return self.send_json(code, make_table(rt, [obj], meta(obj).get("resourceVersion", ""),
                                                   self.q.get("includeObject", "Metadata")))
        if mode == "pom" and obj.get("kind") == rt.kind:
            return self.send_json(code, {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                         "metadata": obj.get("metadata", {})})
        return self.send_json(code, obj)

    def selectors(self):
        return (parse_label_selector(self.q.get("labelSelector", "")),
                parse_field_selector(self.q.get("fieldSelector", "")))

    def do_list(self, rt, ns):
        lsel, fsel = self.selectors()
        st = self.store
        with st.lock:
            rv = st.rv
            objs = [o for o in st.items(rt, ns if rt.namespaced else None)
                    if label_match(lsel, labels_of(o)) and field_match(fsel, o)]
        cont = self.q.get("continue")
        if cont:
            try:
                last = json.loads(base64.urlsafe_b64decode(cont.encode()).decode()).get("k")
            except (ValueError, UnicodeDecodeError):
                raise bad_request("invalid continue token")
            objs = [o for o in objs if [meta(o).get("namespace") or "", meta(o)["name"]] > last]
        lmeta = {"resourceVersion": str(rv)}
        limit = self.q.get("limit")
        if limit and limit.isdigit() and 0 < int(limit) < len(objs):
            objs, rest = objs[:int(limit)], len(objs) - int(limit)
            lastk = [meta(objs[-1]).get("namespace") or "", meta(objs[-1])["name"]]
            lmeta["continue"] = base64.urlsafe_b64encode(jdump({"k": lastk, "rv": rv}).encode()).decode()
            lmeta["remainingItemCount"] = rest
        mode = self.accept_mode()
        if mode == "table":
            t = make_table(rt, objs, rv, self.q.get("includeObject", "Metadata"))
            t["metadata"] = lmeta
            return self.send_json(200, t)
        if mode == "pom":
            return self.send_json(200, {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                        "metadata": lmeta,
                                        "items": [{"kind": "PartialObjectMetadata",
                                                   "apiVersion": "meta.k8s.io/v1",
                                                   "metadata": o.get("metadata", {})} for o in objs]})
        return self.send_json(200, {"kind": rt.kind + "List", "apiVersion": rt.gv, "metadata": lmeta,
                                    "items": objs})

    def scale_of(self, d):
        m = meta(d)
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": m["name"], "namespace": m.get("namespace"), "uid": m.get("uid"),
                             "resourceVersion": m.get("resourceVersion"),
                             "creationTimestamp": m.get("creationTimestamp")},
                "spec": {"replicas": (d.get("spec") or {}).get("replicas", 1)},
                "status": {"replicas": (d.get("status") or {}).get("replicas", 0),
                           "selector": selector_string((d.get("spec") or {}).get("selector"))}}

    def do_get(self, rt, ns, name, sub):
        st = self.store
        with st.lock:
            o = st.get(rt, ns, name)
        if o is None:
            raise not_found(rt, name)
        if sub == "scale":
            return self.send_json(200, self.scale_of(o))
        return self.respond_obj(200, rt, o)

    def do_create(self, rt, ns, body, dry):
        st = self.store
        with st.lock:
            o = st._create(rt, ns, body, dry)
            if not dry:
                st.reconcile()
        return self.respond_obj(201, rt, o)

    def do_update(self, rt, ns, name, sub, body, dry):
        st = self.store
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON object")
        with st.lock:
            old = st.get(rt, ns, name)
            if old is None:
                raise not_found(rt, name)
            rv = meta(body).get("resourceVersion")
            if rv and rv != meta(old).get("resourceVersion"):
                raise conflict(rt, name)
            if sub == "scale":
                new = dcopy(old)
                new["spec"]["replicas"] = (body.get("spec") or {}).get("replicas", 0)
                res = st._update(rt, old, new, dry=dry)
                if not dry:
                    st.reconcile()
                return self.send_json(200, self.scale_of(res))
            if sub == "finalize":
                new = dcopy(old)
                new.setdefault("spec", {})["finalizers"] = (body.get("spec") or {}).get("finalizers") or []
                res = st._update(rt, old, new, internal=True, dry=dry)
            else:
                res = st._update(rt, old, dcopy(body), sub=sub, dry=dry)
            if not dry:
                st.reconcile()
        return self.respond_obj(200, rt, res)

    def do_patch(self, rt, ns, name, sub, raw, dry):
        st = self.store
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                         "application/json-patch+json", "application/apply-patch+yaml"):
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media types "
                           "include: application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml, application/strategic-merge-patch+json")
        patch = self.parse_body(raw)
        with st.lock:
            old = st.get(rt, ns, name)
            if ctype == "application/apply-patch+yaml":
                return self.server_side_apply(rt, ns, name, sub, old, patch, dry)
            if old is None:
                raise not_found(rt, name)
            base = self.scale_of(old) if sub == "scale" else dcopy(old)
            kind = "Scale" if sub == "scale" else rt.kind
            if ctype == "application/merge-patch+json":
                patched = merge_patch(base, patch)
            elif ctype == "application/strategic-merge-patch+json":
                patched = strategic_merge(base, patch, kind)
            else:
                patched = json_patch(base, patch)
            if not isinstance(patched, dict):
                raise bad_request("patch did not produce an object")
            prv = meta(patched).get("resourceVersion")
            if prv and prv != meta(old).get("resourceVersion"):
                raise conflict(rt, name)
            if sub == "scale":
                new = dcopy(old)
                new["spec"]["replicas"] = (patched.get("spec") or {}).get("replicas", 0)
                res = st._update(rt, old, new, dry=dry)
                if not dry:
                    st.reconcile()
                return self.send_json(200, self.scale_of(res))
            res = st._update(rt, old, patched, sub=sub, dry=dry)
            if not dry:
                st.reconcile()
        return self.respond_obj(200, rt, res)

    def server_side_apply(self, rt, ns, name, sub, old, cfg, dry):
        """A rough server-side apply: create, or merge the applied fields in."""
        st = self.store
        if not isinstance(cfg, dict):
            raise bad_request("apply patch must be an object")
        if old is None:
            if sub:
                raise not_found(rt, name)
            cfg.setdefault("metadata", {})["name"] = name
            res = st._create(rt, ns, cfg, dry)
            if not dry:
                st.reconcile()
            return self.respond_obj(201, rt, res)
        patched = strategic_merge(dcopy(old), cfg, rt.kind)
        res = st._update(rt, old, patched, sub=sub, dry=dry)
        if not dry:
            st.reconcile()
        return self.respond_obj(200, rt, res)

    def do_delete(self, rt, ns, name, opts, dry):
        st = self.store
        with st.lock:
            old = st.get(rt, ns, name)
            if old is None:
                raise not_found(rt, name)
            res = st.delete_object(rt, old, opts, dry)
            if not dry:
                st.reconcile()
        return self.send_json(200, res)

    def do_deletecollection(self, rt, ns, opts, dry):
        lsel, fsel = self.selectors()
        st = self.store
        out = []
        with st.lock:
            for o in st.items(rt, ns if rt.namespaced else None):
                if label_match(lsel, labels_of(o)) and field_match(fsel, o):
                    cur = st.get(rt, meta(o).get("namespace"), meta(o)["name"])
                    if cur is not None:
                        out.append(st.delete_object(rt, cur, opts, dry))
            rv = st.rv
            if not dry:
                st.reconcile()
        return self.send_json(200, {"kind": rt.kind + "List", "apiVersion": rt.gv,
                                    "metadata": {"resourceVersion": str(rv)}, "items": out})

    # ---- watch ----------------------------------------------------------

    def do_watch(self, rt, ns, name):
        lsel, fsel = self.selectors()
        if name:
            fsel = fsel + [("metadata.name", "=", name)]
        table = self.accept_mode() == "table"
        include = self.q.get("includeObject", "Metadata")
        bookmarks = self.q.get("allowWatchBookmarks") in ("1", "true", "True")
        send_initial = self.q.get("sendInitialEvents") in ("1", "true", "True")
        timeout = self.q.get("timeoutSeconds")
        deadline = time.time() + float(timeout) if timeout and timeout.replace(".", "", 1).isdigit() else None
        st = self.store
        w, initial, err = st.start_watch(rt, ns if rt.namespaced else None, lsel, fsel,
                                         self.q.get("resourceVersion"), send_initial)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self._code = 200
        self.close_connection = True
        sock = self.connection

        def chunk(data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def event(etype, obj, rv):
            if etype == "BOOKMARK-END" or etype == "BOOKMARK":
                if table:
                    return
                bm = {"kind": rt.kind, "apiVersion": rt.gv,
                      "metadata": {"resourceVersion": str(rv), "creationTimestamp": None}}
                if etype == "BOOKMARK-END":
                    bm["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
                chunk((jdump({"type": "BOOKMARK", "object": bm}) + "\n").encode())
                return
            if table and obj.get("kind") == rt.kind:
                obj = make_table(rt, [obj], meta(obj).get("resourceVersion", ""), include)
            chunk((jdump({"type": etype, "object": obj}) + "\n").encode())

        try:
            if err is not None:
                chunk((jdump({"type": "ERROR", "object": err.status()}) + "\n").encode())
                return
            for etype, obj, rv in initial:
                event(etype, obj, rv)
            next_bm = time.time() + BOOKMARK_SECONDS
            while True:
                now = time.time()
                if deadline is not None and now >= deadline:
                    break
                wait = 1.0
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if bookmarks:
                    wait = min(wait, max(0.0, next_bm - now))
                try:
                    etype, obj, rv = w.q.get(timeout=max(0.01, wait))
                    event(etype, obj, rv)
                    continue
                except queue.Empty:
                    pass
                if bookmarks and time.time() >= next_bm:
                    with st.lock:
                        brv = st.rv if w.q.empty() else None
                    if brv is not None:
                        event("BOOKMARK", None, brv)
                    next_bm = time.time() + BOOKMARK_SECONDS
                # a client never sends anything during a watch: readable means gone
                try:
                    r, _, _ = select.select([sock], [], [], 0)
                except (ValueError, OSError):
                    break
                if r:
                    break
            chunk_end = b"0\r\n\r\n"
            self.wfile.write(chunk_end)
        finally:
            if w is not None:
                st.stop_watch(w)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, store, sslctx, token, listen):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.store = store
        self.sslctx = sslctx
        self.token = token
        self.listen = listen
        http.server.ThreadingHTTPServer.__init__(self, addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.sslctx is not None:
            sock = self.sslctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ssl.SSLError, ConnectionError, socket.timeout, OSError)):
            log("connection from %s: %s" % (client_address, traceback.format_exc()))


def main(argv=None):
    global LOG_FILE
    ap = argparse.ArgumentParser(description="Kubernetes API server stand-in for the Causeway lab")
    ap.add_argument("--listen", required=True, help="ADDR:PORT")
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--service-cidr", required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--token-file")
    ap.add_argument("--dns-hosts-dir")
    ap.add_argument("--dns-domain", default="cluster.local")
    ap.add_argument("--state-file")
    ap.add_argument("--log-file")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if args.log_file:
        LOG_FILE = open(args.log_file, "a")
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        ap.error("--listen must be ADDR:PORT")
    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    sslctx = None
    if args.tls_cert:
        sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sslctx.load_cert_chain(args.tls_cert, args.tls_key)
        try:
            sslctx.set_alpn_protocols(["http/1.1"])
        except NotImplementedError:
            pass
    store = Store(args)
    srv = Server((host, int(port)), store, sslctx, token, args.listen)
    done = threading.Event()

    def stop(signum, frame):
        done.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=srv.serve_forever, name="http", daemon=True).start()
    if args.state_file:
        threading.Thread(target=store.persister, name="persist", daemon=True).start()
    log("cluster %s listening on %s (%s), service CIDR %s"
        % (args.cluster, args.listen, "https" if sslctx else "http", args.service_cidr))
    while not done.wait(1.0):
        pass
    if args.state_file:
        try:
            store.save_state()
        except Exception as e:
            log("state file: %s" % e)
    log("stopped")
    os._exit(0)


if __name__ == "__main__":
    main()
