"""Many pods on one node: reachability, distinct addresses, concurrent ADDs."""

import json
import subprocess
import time


def check_endpoints(node, pods):
    """Every pod has its state file, its IP file and a map entry that points
    at its host veth with the MACs of the result."""
    links = node.links()
    eps = node.endpoints()
    ipf = node.ip_files()
    for p in pods:
        assert node.state_file(p).is_file(), f"no state file for {p.name}"
        assert ipf.get(p.ip) == (p.cid, p.ifname), f"IP file of {p.ip}: {ipf.get(p.ip)}"
        ep = eps.get(p.ip)
        assert ep, f"no endpoint map entry for {p.ip}"
        assert ep["ifindex"] == links[p.veth]["ifindex"], (p.ip, ep)
        assert ep["host_mac"] == p.result["interfaces"][0]["mac"], (p.ip, ep)
        assert ep["pod_mac"] == p.result["interfaces"][1]["mac"], (p.ip, ep)


def test_100_pods_reach_each_other(node, meshcheck_bin):
    conf = node.conflist()
    pods = node.make_pods(100)
    node.add_many(pods, conf, workers=4)

    ips = [node.check_result(p.result, p, "1.0.0") for p in pods]
    assert len(set(ips)) == 100, "pod IPs are not distinct"
    check_endpoints(node, pods)
    assert len(node.cw_links()) == 100

    before = node.forwarded_packets()
    # Every ordered pair (9900, about a second) over TCP, each pod to each.
    r = node.meshcheck(pods, "-a", "-t", "5", "-c", "128")
    assert r.returncode == 0, f"meshcheck:\n{r.stdout[-4000:]}\n{r.stderr}\n{node.log_tail()}"
    assert "pairs=9900 ok=9900 failed=0" in r.stdout
    if before is not None:
        # The programs saw the traffic: it did not bypass the datapath.
        assert node.forwarded_packets() - before >= 9900, "cw_metrics counted no forwarded packets"

    for p in pods:
        node.delete(p)
    node.assert_clean()


def test_50_concurrent_adds(node):
    conf = node.conflist()
    pods = node.make_pods(50)
    for p in pods:
        p.conf = conf
        node.live.add(p)

    # 50 runtimes at once against a fresh bpfRoot: they race for the IPAM lock
    # and for the first load of the programs.
    start = time.monotonic()
    procs = [(p, subprocess.Popen([str(a) for a in node.runner_argv("add", p, conf)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for p in pods]
    failures = []
    for p, proc in procs:
        out, err = proc.communicate(timeout=180)
        if proc.returncode != 0:
            failures.append(f"{p.name}: exit {proc.returncode}: {out.strip()} {err.strip()[-500:]}")
            continue
        p.result = json.loads(out)
        p.ip = p.result["ips"][0]["address"].split("/")[0]
    elapsed = time.monotonic() - start
    assert not failures, f"{len(failures)} of 50 concurrent ADDs failed:\n" + "\n".join(failures) \
        + f"\n{node.log_tail()}"

    ips = [node.check_result(p.result, p, "1.0.0") for p in pods]
    assert len(set(ips)) == 50, f"duplicate IPs: {sorted(ips)}"
    assert len(node.ip_files()) == 50
    check_endpoints(node, pods)
    print(f"50 concurrent ADDs took {elapsed:.2f}s")

    # and 50 concurrent DELs
    procs = [(p, subprocess.Popen([str(a) for a in node.runner_argv("del", p, conf)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for p in pods]
    for p, proc in procs:
        out, err = proc.communicate(timeout=180)
        if proc.returncode != 0:
            failures.append(f"DEL {p.name}: exit {proc.returncode}: {out.strip()} {err.strip()[-500:]}")
        else:
            node.live.discard(p)
    assert not failures, "\n".join(failures)
    node.assert_clean()
