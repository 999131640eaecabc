"""What ADD makes in the kernel, and CHECK finding it missing."""

import json
import re

from cwlib import TC_HANDLE, TC_PRIORITY, sh


def ipj(ns, *args):
    return json.loads(sh(["ip", "-n", ns, "-j", *args]).stdout or "[]")


def test_add_makes_what_the_contract_says(node):
    conf = node.conflist([node.conf(mtu=1400)])
    pod = node.make_pod()
    res = node.add(pod, conf)
    ip = node.check_result(res, pod, "1.0.0")
    gw = node.gateway()
    host_mac, pod_mac = res["interfaces"][0]["mac"], res["interfaces"][1]["mac"]

    # pod side
    link = ipj(pod.name, "link", "show", "eth0")[0]
    assert link["address"] == pod_mac and link["mtu"] == 1400 and "UP" in link["flags"]
    addrs = [(a["local"], a["prefixlen"]) for a in ipj(pod.name, "-4", "addr", "show", "eth0")[0]["addr_info"]]
    assert addrs == [(ip, 32)]
    routes = ipj(pod.name, "-4", "route", "show")
    assert {"dst": "default", "gateway": gw, "dev": "eth0"}.items() <= \
        next(r for r in routes if r["dst"] == "default").items(), routes
    gw_route = next(r for r in routes if r["dst"] == gw)
    assert gw_route["dev"] == "eth0" and gw_route.get("scope") == "link", routes
    neigh = next(n for n in ipj(pod.name, "neigh", "show", "dev", "eth0") if n["dst"] == gw)
    assert neigh["lladdr"] == host_mac and "PERMANENT" in neigh["state"], neigh

    # host side (the node netns)
    hl = node.links()[pod.veth]
    assert hl["address"] == host_mac and hl["mtu"] == 1400 and "UP" in hl["flags"]
    hr = next(r for r in ipj(node.node_ns, "-4", "route", "show") if r["dst"] == ip)
    assert hr["dev"] == pod.veth and hr.get("scope") == "link", hr
    hn = next(n for n in ipj(node.node_ns, "neigh", "show", "dev", pod.veth) if n["dst"] == ip)
    assert hn["lladdr"] == pod_mac and "PERMANENT" in hn["state"], hn
    fwd = sh(node.nsenter(["cat", "/proc/sys/net/ipv4/ip_forward"])).stdout.strip()
    assert fwd == "1"

    # tc: one filter each way at the contract's handle and priority
    for direction, prog in (("ingress", "from_container"), ("egress", "to_container")):
        f = node.tc_filters(pod.veth, direction)
        assert len(f) == 1, f
        assert f[0]["pref"] == TC_PRIORITY and f[0]["kind"] == "bpf", f
        assert int(f[0]["options"]["handle"], 16) == TC_HANDLE, f
        assert f[0]["options"].get("direct-action"), f
        assert prog in json.dumps(f[0]["options"]), f"{direction} filter is not {prog}: {f}"

    # state file
    st = json.loads(node.state_file(pod).read_text())
    assert pod.cid in json.dumps(st) and ip in json.dumps(st), st

    node.delete(pod)
    node.assert_clean()


def check_fails(node, pod, conf, msg_re):
    r = node.runner("check", pod, conf)
    assert r.rc == 1, f"CHECK should fail:\n{r}"
    assert r.code == 104, f"CHECK should fail with code 104:\n{r}"
    assert re.search(msg_re, r.msg, re.I), f"CHECK message should name /{msg_re}/:\n{r}"


def test_check(node):
    conf = node.conflist()
    pods = node.make_pods(3)
    for p in pods:
        node.add(p, conf)
        r = node.runner("check", p, conf)
        assert r.rc == 0, f"CHECK right after ADD failed:\n{r}"

    # the pod's default route is gone
    sh(["ip", "-n", pods[0].name, "route", "del", "default"])
    check_fails(node, pods[0], conf, r"route")

    # the ingress program is detached from the host veth
    sh(["tc", "-n", node.node_ns, "filter", "del", "dev", pods[1].veth, "ingress"])
    check_fails(node, pods[1], conf, r"\btc\b|from_container|filter|program")

    # the endpoint map entry is gone
    key = [str(int(b)) for b in pods[2].ip.split(".")]
    sh(["bpftool", "map", "delete", "pinned", node.bpf_root / "cw_endpoints", "key", *key])
    check_fails(node, pods[2], conf, r"map|endpoint")

    # a broken attachment still DELs completely
    for p in pods:
        node.delete(p)
    node.assert_clean()
