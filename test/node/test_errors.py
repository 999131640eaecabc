"""Error codes for bad input, and ADDs that fail half-way leaving nothing."""

import json

import pytest

from cwlib import assert_error, assert_error_runner, sh


def over(**kw):
    return lambda node: node.conf(**kw)


MALFORMED = {
    # name: (stdin maker, env, env vars to leave out, code, message pattern)
    "not-json": (lambda n: "{not json", {}, (), 6, None),
    "truncated-json": (lambda n: json.dumps(n.conf())[:-5], {}, (), 6, None),
    "json-array": (lambda n: "[1, 2]", {}, (), 6, None),
    "cniVersion-9.9.9": (over(cniVersion="9.9.9"), {}, (), 1, None),
    "cniVersion-0.2.0": (over(cniVersion="0.2.0"), {}, (), 1, None),
    "mtu-67": (over(mtu=67), {}, (), 7, "mtu"),
    "mtu-65536": (over(mtu=65536), {}, (), 7, "mtu"),
    "mtu-string": (over(mtu="big"), {}, (), 7, "mtu"),
    "podCIDR-/33": (over(podCIDR="10.240.0.0/33"), {}, (), 7, "podCIDR"),
    "podCIDR-/30": (over(podCIDR="10.240.0.0/30"), {}, (), 7, "podCIDR"),
    "podCIDR-/7": (over(podCIDR="10.0.0.0/7"), {}, (), 7, "podCIDR"),
    "podCIDR-garbage": (over(podCIDR="ten.240.0.0/24"), {}, (), 7, "podCIDR"),
    "podCIDR-ipv6": (over(podCIDR="fd00:cafe::/64"), {}, (), 7, "podCIDR"),
    "no-CNI_CONTAINERID": (over(), {}, ("CNI_CONTAINERID",), 4, "CNI_CONTAINERID"),
    "no-CNI_IFNAME": (over(), {}, ("CNI_IFNAME",), 4, "CNI_IFNAME"),
    "no-CNI_NETNS": (over(), {}, ("CNI_NETNS",), 4, "CNI_NETNS"),
    "bad-CNI_COMMAND": (over(), {"CNI_COMMAND": "FROB"}, (), 4, "CNI_COMMAND"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input(node, case):
    make, env, omit, code, msg_re = MALFORMED[case]
    pod = node.make_pod()
    stdin = make(node)
    r = node.exec_plugin("ADD", stdin if isinstance(stdin, str) else json.dumps(stdin), pod,
                         env=env, omit=omit)
    version = stdin.get("cniVersion") if isinstance(stdin, dict) else None
    if "CNI_COMMAND" in env:
        version = None  # a plugin may refuse an unknown command before reading stdin
    assert_error(r, code, msg_re, version)
    node.assert_clean()
    assert set(node.links(ns=pod.name)) == {"lo"}, "the failed ADD touched the pod netns"


def test_version_command(node):
    r = node.exec_plugin("VERSION", node.conf())
    assert r.rc == 0, str(r)
    assert r.doc["supportedVersions"] == ["0.3.1", "0.4.0", "1.0.0", "1.1.0"], r.doc


# --- ADDs that fail half-way -----------------------------------------------

def test_add_fails_when_ifname_taken(node):
    """veth creation fails after IPAM allocated: the IP must be released."""
    conf = node.conflist()
    pod = node.make_pod()
    # (this kernel has no dummy driver: a veth pair inside the pod stands in)
    sh(["ip", "-n", pod.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"])
    r = node.runner("add", pod, conf)
    assert_error_runner(r, 101, r"veth|eth0|interface|link")
    node.assert_gone(pod)
    node.assert_clean()
    links = node.links(ns=pod.name)
    assert links.get("eth0", {}).get("link") == "eth0peer", \
        "the plugin removed or replaced an interface it did not create"


def test_add_fails_when_default_route_exists(node):
    """The default route cannot be added after the veth and address exist.

    The pod already has a default route through an interface of its own (a
    veth pair inside the pod: this kernel has no dummy driver)."""
    conf = node.conflist()
    pod = node.make_pod()
    for cmd in (["link", "add", "dum0", "type", "veth", "peer", "name", "dum0peer"],
                ["link", "set", "dum0peer", "up"], ["link", "set", "dum0", "up"],
                ["route", "add", "default", "dev", "dum0"]):
        sh(["ip", "-n", pod.name, *cmd])
    r = node.runner("add", pod, conf)
    assert_error_runner(r, 101, r"route")
    node.assert_gone(pod)
    node.assert_clean()
    assert "eth0" not in node.links(ns=pod.name), "the pod end of the veth was left"
    routes = json.loads(sh(["ip", "-n", pod.name, "-j", "route", "show", "default"]).stdout)
    assert [r_.get("dev") for r_ in routes] == ["dum0"], "the pod's own default route was touched"


def test_pool_exhausted(node):
    """A /29 has 5 addresses for pods (network, gateway, broadcast excluded)."""
    cidr = "10.240.0.0/29"
    conf = node.conflist([node.conf(podCIDR=cidr)])
    pods = node.make_pods(6)
    for p in pods[:5]:
        node.add(p, conf)
        node.check_result(p.result, p, "1.0.0", cidr=cidr)
    assert sorted(p.ip for p in pods[:5]) == [f"10.240.0.{i}" for i in range(2, 7)]

    status = node.conf("1.1.0", podCIDR=cidr)
    r = node.exec_plugin("STATUS", status)
    assert_error(r, 50, None, "1.1.0")

    r = node.runner("add", pods[5], conf)
    assert_error_runner(r, 100, r"exhaust|pool|ipam|no free|available")
    node.assert_gone(pods[5])
    assert len(node.ip_files()) == 5 and len(node.endpoints()) == 5
    assert len(node.state_files()) == 5 and len(node.cw_links()) == 5

    node.delete(pods[5])  # what the runtime does after the failed ADD
    node.delete(pods[0])
    r = node.exec_plugin("STATUS", status)
    assert r.rc == 0 and r.out == "", f"STATUS with a free address:\n{r}"
    for p in pods[1:5]:
        node.delete(p)
    node.assert_clean()
