"""CNI versions: result shapes for 0.3.1 .. 1.1.0, and 1.1.0's GC and STATUS.

libcni 1.1.2 (the runner) cannot parse 1.1.0 results, so 1.1.0 is tested by
executing build/causeway directly, as a 1.1.0 runtime would.
"""

import json

import pytest

from cwlib import assert_error


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_result_shape_through_runner(node, version):
    conf = node.conflist(version=version)
    pod, raw_pod = node.make_pods(2)
    res = node.add(pod, conf)
    node.check_result(res, pod, version)
    if version != "0.3.1":  # CHECK exists from 0.4.0 on
        r = node.runner("check", pod, conf)
        assert r.rc == 0, f"CHECK failed:\n{r}"

    # The plugin's own bytes, before libcni re-encodes them.
    plain = node.conf(version)
    r = node.exec_plugin("ADD", plain, raw_pod)
    assert r.rc == 0, str(r)
    node.check_result(r.doc, raw_pod, version)
    delconf = dict(plain, prevResult=r.doc) if version != "0.3.1" else plain
    r = node.exec_plugin("DEL", delconf, raw_pod)
    assert r.rc == 0 and r.out.strip() == "", str(r)
    node.live.discard(raw_pod)

    node.delete(pod)
    node.assert_clean()


def test_single_conf_file(node):
    """A .conf (not a list) goes through libcni as a one-plugin list."""
    conf = node.write_conf(node.conf("1.0.0"))
    pod = node.make_pod()
    # CNI_ARGS as containerd sends them for a Kubernetes pod
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID={pod.cid}"
    node.check_result(node.add(pod, conf, args=args), pod, "1.0.0")
    assert node.runner("check", pod, conf).rc == 0
    node.delete(pod)
    node.assert_clean()


def add_direct(node, pod, conf):
    r = node.exec_plugin("ADD", conf, pod)
    assert r.rc == 0, f"ADD failed:\n{r}"
    pod.result = r.doc
    pod.ip = r.doc["ips"][0]["address"].split("/")[0]
    return r.doc


def test_v110_add_check_del(node):
    conf = node.conf("1.1.0")
    pod = node.make_pod()
    res = add_direct(node, pod, conf)
    node.check_result(res, pod, "1.1.0")
    r = node.exec_plugin("CHECK", dict(conf, prevResult=res), pod)
    assert r.rc == 0 and r.out.strip() == "", str(r)
    r = node.exec_plugin("DEL", dict(conf, prevResult=res), pod)
    assert r.rc == 0 and r.out.strip() == "", str(r)
    node.live.discard(pod)
    node.assert_clean()


def present(node, pod):
    return (node.state_file(pod).is_file() and pod.ip in node.endpoints()
            and node.ip_files().get(pod.ip) == (pod.cid, pod.ifname)
            and pod.veth in node.links())


def test_v110_gc(node, meshcheck_bin):
    conf = node.conf("1.1.0")
    a, b, c = node.make_pods(3)
    for p in (a, b, c):
        add_direct(node, p, conf)

    valid = [{"containerID": p.cid, "ifname": p.ifname} for p in (a, b)]
    r = node.exec_plugin("GC", dict(conf, **{"cni.dev/valid-attachments": valid}))
    assert r.rc == 0 and r.out.strip() == "", f"GC failed:\n{r}"
    node.live.discard(c)
    node.assert_gone(c)
    assert present(node, a) and present(node, b)

    # what GC kept still works
    r = node.meshcheck([a, b], "-a", "-t", "5")
    assert r.returncode == 0, f"meshcheck after GC:\n{r.stdout}\n{r.stderr}"
    r = node.exec_plugin("CHECK", dict(conf, prevResult=a.result), a)
    assert r.rc == 0, str(r)

    # the older key (CNI 1.1.0 drafts) is honoured too
    r = node.exec_plugin("GC", dict(conf, **{"cni.dev/attachments": valid[:1]}))
    assert r.rc == 0, f"GC with cni.dev/attachments failed:\n{r}"
    node.live.discard(b)
    node.assert_gone(b)
    assert present(node, a)

    r = node.exec_plugin("DEL", dict(conf, prevResult=a.result), a)
    assert r.rc == 0, str(r)
    node.live.discard(a)
    node.assert_clean()


def test_v110_status(node):
    conf = node.conf("1.1.0")
    # Nothing is loaded yet, but ADD would load it: available.
    r = node.exec_plugin("STATUS", conf)
    assert r.rc == 0 and r.out == "", f"STATUS on a fresh bpfRoot:\n{r}"

    pod = node.make_pod()
    add_direct(node, pod, conf)
    r = node.exec_plugin("STATUS", conf)
    assert r.rc == 0 and r.out == "", f"STATUS after ADD:\n{r}"

    # A bpfRoot that is not on a bpffs (a plain directory outside /sys/fs/bpf)
    not_bpffs = node.tmp / "not-bpffs"
    not_bpffs.mkdir()
    bad = node.conf("1.1.0", bpfRoot=str(not_bpffs))
    r = node.exec_plugin("STATUS", bad)
    assert_error(r, 50, r"bpf", "1.1.0")
    # and ADD there fails as a datapath error, leaving nothing
    other = node.make_pod()
    r = node.exec_plugin("ADD", bad, other)
    assert_error(r, 102, r"bpf", "1.1.0")
    node.assert_gone(other)
    assert list(not_bpffs.iterdir()) == [], "ADD wrote into a non-bpffs bpfRoot"

    r = node.exec_plugin("DEL", dict(conf, prevResult=pod.result), pod)
    assert r.rc == 0, str(r)
    node.live.discard(pod)
    node.assert_clean()


def test_runner_gc_and_status(node):
    """The runner's gc takes the valid attachments from libcni's cache."""
    conf = node.conflist()
    conf110 = node.conflist([node.conf("1.1.0")], version="1.1.0")
    a, b = node.make_pods(2)
    node.add(a, conf)
    node.add(b, conf)

    # The runtime forgets b (as if its cached result were lost): GC reaps it.
    (node.cache_dir / "results" / f"{node.net}-{b.cid}-{b.ifname}").unlink()
    r = node.runner("gc", None, conf110)
    assert r.rc == 0, f"runner gc failed:\n{r}"
    node.live.discard(b)
    node.assert_gone(b)
    assert present(node, a)
    assert node.runner("check", a, conf).rc == 0

    # --valid overrides the cache: naming a keeps it, an empty list reaps it.
    r = node.runner("gc", None, conf110, valid=[{"containerID": a.cid, "ifname": a.ifname}])
    assert r.rc == 0 and present(node, a), str(r)
    r = node.runner("gc", None, conf110, valid=[])
    assert r.rc == 0, str(r)
    node.live.discard(a)
    node.assert_gone(a)

    r = node.runner("status", None, conf110)
    assert r.rc == 0 and r.out == "", str(r)
    bad = node.conflist([node.conf("1.1.0", bpfRoot=str(node.tmp))], version="1.1.0")
    r = node.runner("status", None, bad)
    assert r.rc == 1 and r.code == 50, str(r)

    node.delete(a)  # DEL after GC is still fine
    node.assert_clean()


def test_runner_version(node):
    r = node.runner("version", None, node.conflist())
    assert r.rc == 0, str(r)
    assert r.doc == {"causeway": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}, r.doc
    assert json.dumps(r.doc)
