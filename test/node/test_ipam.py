"""Delegated IPAM: ipam.type names a plugin in CNI_PATH (host-local here)."""

SUBNET = "10.241.7.0/24"
GATEWAY = "10.241.7.1"


def host_local_conf(node):
    resolv = node.tmp / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\nsearch cw.test\n")
    ipam = {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
            "dataDir": str(node.tmp / "host-local"), "resolvConf": str(resolv)}
    return node.conf(podCIDR=None, ipam=ipam)


def host_local_files(node):
    d = node.tmp / "host-local" / node.net
    return {f.name: f.read_text() for f in d.iterdir() if f.name[0].isdigit()} if d.is_dir() else {}


def test_delegated_host_local(node, meshcheck_bin):
    conf = node.conflist([host_local_conf(node)])
    pods = node.make_pods(2)
    for p in pods:
        res = node.add(p, conf)
        node.check_result(res, p, "1.0.0", cidr=SUBNET, gw=GATEWAY)
        assert res.get("dns", {}).get("nameservers") == ["192.0.2.53"], res
        assert node.runner("check", p, conf).rc == 0

    files = host_local_files(node)
    assert set(files) == {p.ip for p in pods}, files
    assert all(p.cid in files[p.ip] for p in pods), files
    assert node.ip_files() == {}, "the built-in IPAM allocated too"
    assert set(node.endpoints()) == {p.ip for p in pods}

    r = node.meshcheck(pods, "-a", "-t", "5")
    assert r.returncode == 0, f"meshcheck:\n{r.stdout}\n{r.stderr}"

    node.delete(pods[0])
    assert set(host_local_files(node)) == {pods[1].ip}, "DEL did not release the host-local address"
    node.delete(pods[1])
    assert host_local_files(node) == {}
    node.assert_clean()


def test_delegated_gc_releases_the_address(node):
    """GC of an attachment allocated by a delegated IPAM must free its address
    too (contract: GC removes every IP allocation of a stale attachment)."""
    plain = host_local_conf(node)
    conf = node.conflist([plain])
    a, b = node.make_pods(2)
    node.add(a, conf)
    node.add(b, conf)
    conf110 = dict(plain, cniVersion="1.1.0")
    r = node.exec_plugin("GC", dict(conf110, **{"cni.dev/valid-attachments":
                                                 [{"containerID": a.cid, "ifname": a.ifname}]}))
    assert r.rc == 0, f"GC failed:\n{r}"
    node.live.discard(b)
    node.assert_gone(b)
    assert set(host_local_files(node)) == {a.ip}, "GC did not release b's host-local address"
    node.delete(a)
    assert host_local_files(node) == {}
    node.assert_clean()
