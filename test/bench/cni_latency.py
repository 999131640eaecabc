#!/usr/bin/env python3
"""CNI ADD/DEL latency: Causeway against the reference ptp + host-local.

Both plugins are driven through build/cnirunner (libcni, as containerd or
CRI-O would drive them) and the whole runner invocation is timed, since that
is what a runtime waits for.  The two plugins are interleaved pod by pod, with
the order swapped every pod, so that drift on this shared machine (another
job, frequency changes, page cache) lands on both alike.

All pods live for the whole ADD phase (N endpoints in place when the last ADD
runs), then all are deleted.  The pod network namespaces are made before
the clock starts; the runner and plugins run in a private "node" namespace
so that nothing touches the host's routes.

Usage: cni_latency.py [--pods N] [--json FILE]
"""

import argparse
import json
import os
import re
import shutil
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
import benchlib as B  # noqa: E402

CW_CIDR = "10.231.0.0/23"     # 509 addresses for Causeway's built-in IPAM
PTP_SUBNET = "10.232.0.0/23"  # and as many for host-local
WARMUP = 2                    # ADD+DEL pairs per plugin, not measured

GOALS = {"ADD p50": 0.3, "DEL p50": 0.2}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=200,
                    help="pods per plugin (default 200)")
    ap.add_argument("--json", metavar="FILE",
                    help="also write the figures as JSON to FILE")
    args = ap.parse_args()
    if not 1 <= args.pods <= 500:
        ap.error("--pods must be within 1..500 (the pools are /23)")
    return args


_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def leftovers(state_dir, data_dir):
    """What the DELs left behind, for the report (not a failure here):
    links in the node netns, Causeway endpoint state files and address
    allocations, host-local leases.  Lock files and host-local's
    last_reserved_ip are bookkeeping, not leaks."""
    found = []
    for line in B.sh("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name != "lo":
            found.append(f"link {name}")
    for dirpath, _dirs, files in os.walk(os.path.join(state_dir, "endpoints")):
        found += [f"causeway endpoint file {os.path.join(dirpath, f)}" for f in files]
    for root, what in ((os.path.join(state_dir, "ipam"), "causeway allocation"),
                       (data_dir, "host-local lease")):
        for dirpath, _dirs, files in os.walk(root):
            found += [f"{what} {os.path.join(dirpath, f)}" for f in files
                      if _IPV4.match(f)]
    return found


LINK_GONE_TIMEOUT = 10.0


def host_ifname(result):
    """The host-side interface of a CNI result: the one without a sandbox."""
    for itf in result.get("interfaces", []):
        if not itf.get("sandbox"):
            return itf.get("name")
    return None


def wait_link_gone(name, timeout=LINK_GONE_TIMEOUT):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            socket.if_nametoindex(name)
        except OSError:
            return True
        time.sleep(0.0005)
    return False


def veth_delete_reference(pod_ns, samples=20):
    """How long the kernel takes to delete a veth whose peer sits in a pod
    netns, timed around the bare RTM_DELLINK.  Both plugins' DEL contain
    one; it explains the part of DEL no plugin code can save.  (A link
    left by an exception goes with the node netns.)"""
    out = []
    for i in range(samples):
        name = f"cwbref{i}"
        B.sh("ip", "link", "add", name, "type", "veth", "peer", "name", "eth9",
             "netns", pod_ns)
        B.sh("ip", "link", "set", name, "up")
        ifindex = socket.if_nametoindex(name)  # /sys shows the host netns
        t0 = time.perf_counter()
        B.netlink_del_link(ifindex)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def main():
    args = parse_args()
    B.preflight()
    cleanup = B.Cleanup()
    tag = f"cwbench-lat-{os.getpid()}"

    work = B.scratch_dir(cleanup, tag + "-")
    state_dir = os.path.join(work, "causeway-state")
    hl_dir = os.path.join(work, "host-local")
    cache_dir = os.path.join(work, "libcni-cache")
    bpf_root = B.bpf_root(cleanup, tag)

    node = B.netns_add(cleanup, tag + "-node")
    B.enter_netns(node)

    cw_conf = B.write_json(os.path.join(work, "causeway.conf"),
                           B.causeway_conf("cwbench-cw", CW_CIDR, bpf_root, state_dir))
    ptp_conf = B.write_json(os.path.join(work, "ptp.conf"),
                            B.ptp_conf("cwbench-ptp", PTP_SUBNET, hl_dir))
    # The floor: DEL of a plugin that is /bin/true.  It costs the runner's
    # own start, libcni and one exec, which every plugin pays too, so it
    # bounds how small a ratio can get.
    noop_dir = os.path.join(work, "noop-bin")
    os.mkdir(noop_dir)
    os.symlink(shutil.which("true") or "/bin/true", os.path.join(noop_dir, "cwbench-noop"))
    noop_conf = B.write_json(os.path.join(work, "noop.conf"),
                             {"cniVersion": B.CNI_VERSION, "name": "cwbench-noop",
                              "type": "cwbench-noop"})
    runner = B.Runner(cache_dir, extra_path=noop_dir)
    plugins = [("causeway", cw_conf, "c"), ("ptp", ptp_conf, "p")]

    n = args.pods
    B.log(f"bench: creating {2 * (n + WARMUP)} pod netns (not timed)")
    netns = {}
    for _, _, letter in plugins:
        for i in range(-WARMUP, n):
            name = f"{tag}-{letter}{i}"
            netns[(letter, i)] = B.netns_add(cleanup, name, lo_up=False)

    preloaded = B.preload_bpf(bpf_root, state_dir)

    def cid(letter, i):
        return f"{tag}-{letter}{i}"

    host_if = {}
    orphans = {p: 0 for p, _, _ in plugins}
    B.become_subreaper()

    def add(pname, conf, letter, i):
        secs, out = runner.timed(conf, "add", cid(letter, i), netns[(letter, i)])
        result = json.loads(out)
        if not result.get("ips"):
            raise RuntimeError(f"{pname} ADD {cid(letter, i)} returned no ips: {out}")
        host_if[(letter, i)] = host_ifname(result)
        return secs

    def delete(pname, conf, letter, i):
        """DEL; then wait for every process it left behind (we are their
        subreaper) and for the host veth to be gone, so that deferred work
        is measured and cannot spill into the next timed command.
        Returns (DEL seconds, seconds until all of it was done)."""
        t0 = time.perf_counter()
        secs, _ = runner.timed(conf, "del", cid(letter, i), netns[(letter, i)])
        orphans[pname] += B.reap_orphans()
        name = host_if.get((letter, i))
        if name and not wait_link_gone(name):
            raise RuntimeError(f"{pname} DEL {cid(letter, i)}: host veth {name} still "
                               f"there {LINK_GONE_TIMEOUT} s after DEL returned")
        return secs, time.perf_counter() - t0

    # Warm-up: the first Causeway ADD may load the BPF programs (if the
    # helper did not), and every binary's first exec pays for the page cache.
    for i in range(-WARMUP, 0):
        for pname, conf, letter in plugins:
            add(pname, conf, letter, i)
            delete(pname, conf, letter, i)

    times = {(p, cmd): [] for p, _, _ in plugins for cmd in ("ADD", "DEL", "GONE")}
    floor = []
    for cmd in ("ADD", "DEL"):
        B.log(f"bench: {cmd} x {n} per plugin, interleaved")
        for i in range(n):
            order = plugins if i % 2 == 0 else plugins[::-1]
            for pname, conf, letter in order:
                if cmd == "ADD":
                    times[(pname, "ADD")].append(add(pname, conf, letter, i) * 1000.0)
                else:
                    secs, gone = delete(pname, conf, letter, i)
                    times[(pname, "DEL")].append(secs * 1000.0)
                    times[(pname, "GONE")].append(gone * 1000.0)
            if cmd == "DEL":
                secs, _ = runner.timed(noop_conf, "del", cid("n", i), netns[("c", i)])
                floor.append(secs * 1000.0)

    left = leftovers(state_dir, hl_dir)
    veth_del = veth_delete_reference(netns[("c", 0)])

    fig = {}
    for pname, _, _ in plugins:
        for cmd in ("ADD", "DEL", "GONE"):
            s = times[(pname, cmd)]
            fig[(pname, f"{cmd} p50")] = B.percentile(s, 50)
            fig[(pname, f"{cmd} p99")] = B.percentile(s, 99)

    print()
    print(f"CNI latency: {n} pods per plugin, interleaved, timed around build/cnirunner "
          f"(libcni, cniVersion {B.CNI_VERSION})")
    print(f"causeway: built-in IPAM {CW_CIDR}, programs "
          f"{'pre-loaded by causeway-helper' if preloaded else 'loaded by the warm-up ADD'}")
    print(f"ptp:      host-local {PTP_SUBNET}")
    print()
    f50, f99 = B.percentile(floor, 50), B.percentile(floor, 99)
    hdr = (f"{'':10} {'causeway':>10} {'ptp':>10} {'cw/ptp':>8} {'net':>7}   goal  (ms)")
    print(hdr)
    print("-" * (len(hdr) + 18))
    out_json = {"pods": n, "cniVersion": B.CNI_VERSION, "figures": {},
                "floor_ms": {"p50": round(f50, 3), "p99": round(f99, 3)}}
    for row in ("ADD p50", "ADD p99", "DEL p50", "DEL p99", "DEL+bg p50", "DEL+bg p99"):
        key = row.replace("DEL+bg", "GONE")
        cw, ptp = fig[("causeway", key)], fig[("ptp", key)]
        ratio = cw / ptp if ptp > 0 else float("inf")
        entry = {"causeway_ms": round(cw, 3), "ptp_ms": round(ptp, 3),
                 "ratio": round(ratio, 3)}
        net = ""
        if row.endswith("p50") and ptp > f50:
            # the plugins' own share: both minus what the runner costs alone
            net_ratio = max(cw - f50, 0.0) / (ptp - f50)
            net = f"{net_ratio:7.3f}"
            entry["net_ratio"] = round(net_ratio, 3)
        goal = ""
        if row in GOALS:
            met = ratio <= GOALS[row]
            goal = f"<= {GOALS[row]:.2f}x  {'met' if met else 'NOT MET'}"
            entry.update(goal=GOALS[row], met=met)
        print(f"{row:10} {cw:10.2f} {ptp:10.2f} {ratio:8.3f} {net:>7}   {goal}")
        out_json["figures"][row] = entry
    print()
    print(f"runner floor: p50 {f50:.2f} ms, p99 {f99:.2f} ms (cnirunner + libcni + exec of "
          "/bin/true as a no-op DEL).")
    print(f"Both plugins pay it, so cw/ptp cannot go below floor/ptp: ADD p50 "
          f"{f50 / fig[('ptp', 'ADD p50')]:.2f}, DEL p50 {f50 / fig[('ptp', 'DEL p50')]:.2f}.")
    print("net = (causeway - floor) / (ptp - floor), the plugins' own time; goals are "
          "judged on cw/ptp.")
    print("DEL+bg = from the start of DEL until the processes it left running have "
          "exited and the")
    print(f"         host veth is gone (detached after DEL: causeway {orphans['causeway']}, "
          f"ptp {orphans['ptp']} processes in all);")
    print("         the next timed command starts only then.")
    v50, v99 = B.percentile(veth_del, 50), B.percentile(veth_del, 99)
    print(f"kernel veth delete (bare RTM_DELLINK, peer in a pod netns): p50 {v50:.2f} ms, "
          f"p99 {v99:.2f} ms;")
    print("A DEL that deletes the veth itself waits for this; one that hands it to a "
          "detached process")
    print("returns sooner, and the work shows in DEL+bg.")
    out_json["veth_delete_ms"] = {"p50": round(v50, 3), "p99": round(v99, 3)}
    print()
    if left:
        print(f"after all DELs, {len(left)} objects were left behind (plugin bug?):")
        for item in left[:20]:
            print("  " + item)
        out_json["leftovers"] = left
    else:
        print("after all DELs: no links, state files or host-local leases left")

    if args.json:
        B.write_json(args.json, out_json)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        B.log(f"bench: cni_latency failed: {exc}")
        sys.exit(1)
