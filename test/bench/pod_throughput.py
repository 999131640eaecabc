#!/usr/bin/env python3
"""Same-node pod-to-pod throughput and request/response rate:
Causeway against ptp + host-local.

One private "node" netns; two pods wired into it by Causeway (10.233.0.0/24)
and two by ptp (10.234.0.0/24), all through build/cnirunner.  Then, in
several rounds that alternate which plugin goes first:

  - iperf3 TCP bulk throughput, pod A -> pod B (Gbit/s, receiver side);
  - sockperf TCP ping-pong at full rate (--mps=max): round trips per second,
    one message in flight, i.e. a TCP_RR-style request/response rate, plus
    its median and p99 one-way latency.

In every round each measurement runs for both plugins back to back.  The
client runs on CPU 0 and the server on CPU 1 (when there are two), the same
for both plugins.  A plugin's figure is its median over rounds; cw/ptp is
the median of the per-round ratios, which cancels drift between rounds.

Usage: pod_throughput.py [--rounds N] [--seconds S] [--json FILE]
(defaults: 7 rounds of 2 s per measurement, about 75 s in all)
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
import benchlib as B  # noqa: E402

CW_CIDR = "10.233.0.0/24"
PTP_SUBNET = "10.234.0.0/24"
IPERF_PORT = 5201
SOCKPERF_PORT = 11111
GOAL = 0.95


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--seconds", type=int, default=2,
                    help="seconds per iperf3/sockperf run (default 2; iperf3 "
                    "runs one more, omitted, to settle)")
    ap.add_argument("--json", metavar="FILE",
                    help="also write the figures as JSON to FILE")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20 or not 2 <= args.seconds <= 60:
        ap.error("--rounds within 1..20, --seconds within 2..60")
    return args


def pinned(cpu, argv):
    if cpu is None:
        return argv
    return ["taskset", "-c", str(cpu)] + argv


def in_netns(path, argv):
    # nsenter keeps our mount namespace (ip netns exec would remount /sys)
    return ["nsenter", f"--net={path}"] + argv


class Server:
    """A long-running server inside a pod netns, killed at cleanup."""

    def __init__(self, cleanup, what, argv):
        self.what = what
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        cleanup.push(what, self.stop)

    def check(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.what} exited {self.proc.returncode}: "
                               f"{self.proc.stderr.read().strip()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_port(netns, ip, port, timeout=5.0):
    """Wait until something listens on ip:port inside netns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = B.sh(*in_netns(netns, ["ss", "-Htln", "src", f"{ip}:{port}"]),
                   check=False, quiet=True)
        if res.returncode == 0 and res.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {ip}:{port} after {timeout}s")


def iperf3(client_ns, server_ip, seconds, cpu):
    argv = in_netns(client_ns, pinned(cpu, [
        "iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t", str(seconds),
        "-O", "1", "-J"]))
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=seconds + 30)
    try:
        doc = json.loads(res.stdout)
    except json.JSONDecodeError:
        doc = {}
    if res.returncode != 0 or "error" in doc:
        raise RuntimeError(f"iperf3 to {server_ip} failed: "
                           f"{doc.get('error') or res.stderr.strip()}")
    return doc["end"]["sum_received"]["bits_per_second"] / 1e9


_VALID = re.compile(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); "
                    r"ReceivedMessages=(\d+)")
_PCTL = re.compile(r"percentile (\d+\.\d+) =\s+([\d.]+)")


def sockperf_pp(client_ns, server_ip, seconds, cpu):
    argv = in_netns(client_ns, pinned(cpu, [
        "sockperf", "ping-pong", "--tcp", "-i", server_ip, "-p", str(SOCKPERF_PORT),
        "-t", str(seconds), "--mps=max"]))
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=seconds + 30)
    m = _VALID.search(res.stdout)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"sockperf ping-pong to {server_ip} failed "
                           f"(exit {res.returncode}): {res.stdout.strip()[-400:]}")
    runtime, received = float(m.group(1)), int(m.group(3))
    pct = {p: float(v) for p, v in _PCTL.findall(res.stdout)}
    return {"rr_per_s": received / runtime,
            "p50_us": pct.get("50.000"), "p99_us": pct.get("99.000")}


def tcp_reach(netns, ip, port):
    """Can a TCP connection from netns to ip:port be opened?"""
    probe = ("import socket,sys\n"
             f"socket.create_connection(({ip!r}, {port}), timeout=3).close()\n")
    res = B.sh(*in_netns(netns, [sys.executable, "-c", probe]), check=False, quiet=True)
    return res.returncode == 0, (res.stderr.strip().splitlines() or [""])[-1]


def datapath_counters(bpf_root):
    """Causeway's per-reason counters (causeway-helper metrics), to show
    the measured traffic really went through its programs."""
    if not os.access(B.HELPER, os.X_OK):
        return None
    res = B.sh(B.HELPER, "metrics", "--bpf-root", bpf_root, "-o", "json",
               check=False, quiet=True)
    try:
        return json.loads(res.stdout) if res.returncode == 0 else None
    except json.JSONDecodeError:
        return None


def main():
    args = parse_args()
    B.preflight(need_tools=("iperf3", "sockperf", "ss"))
    cleanup = B.Cleanup()
    tag = f"cwbench-tp-{os.getpid()}"
    ncpu = os.cpu_count() or 1
    cpu_client, cpu_server = (0, 1) if ncpu >= 2 and shutil.which("taskset") else (None, None)

    work = B.scratch_dir(cleanup, tag + "-")
    state_dir = os.path.join(work, "causeway-state")
    hl_dir = os.path.join(work, "host-local")
    runner = B.Runner(os.path.join(work, "libcni-cache"))
    bpf_root = B.bpf_root(cleanup, tag)

    node = B.netns_add(cleanup, tag + "-node")
    B.enter_netns(node)
    B.sh("ip", "link", "set", "lo", "up")
    B.preload_bpf(bpf_root, state_dir)

    confs = {
        "causeway": B.write_json(os.path.join(work, "causeway.conf"),
                                 B.causeway_conf("cwbench-cw", CW_CIDR, bpf_root, state_dir)),
        "ptp": B.write_json(os.path.join(work, "ptp.conf"),
                            B.ptp_conf("cwbench-ptp", PTP_SUBNET, hl_dir)),
    }

    pods = {}  # plugin -> [(netns path, container id, ip), ...]
    for pname, conf in confs.items():
        pods[pname] = []
        for side in ("a", "b"):
            cid = f"{tag}-{pname}-{side}"
            ns = B.netns_add(cleanup, cid)
            result = runner.add(conf, cid, ns)
            # DEL before the netns goes (LIFO), as a runtime would
            cleanup.push(f"CNI DEL {cid}", runner.delete, conf, cid, ns)
            pods[pname].append((ns, cid, B.pod_ip(result)))
        B.log(f"bench: {pname}: pod a {pods[pname][0][2]}, pod b {pods[pname][1][2]}")

    for pname in confs:
        ns_b, _, ip_b = pods[pname][1]
        iperf = Server(cleanup, f"iperf3 server {ip_b}", in_netns(ns_b, pinned(cpu_server, [
            "iperf3", "-s", "-B", ip_b, "-p", str(IPERF_PORT)])))
        sperf = Server(cleanup, f"sockperf server {ip_b}", in_netns(ns_b, pinned(cpu_server, [
            "sockperf", "server", "--tcp", "-i", ip_b, "-p", str(SOCKPERF_PORT)])))
        wait_port(ns_b, ip_b, IPERF_PORT)
        wait_port(ns_b, ip_b, SOCKPERF_PORT)
        iperf.check()
        sperf.check()
        ns_a, _, ip_a = pods[pname][0]
        ok, why = tcp_reach(ns_a, ip_b, SOCKPERF_PORT)
        if not ok:
            raise RuntimeError(f"{pname}: pod a ({ip_a}) cannot open TCP to "
                               f"pod b {ip_b}:{SOCKPERF_PORT}: {why}")

    # Each measurement runs for both plugins back to back, in an order that
    # flips every round, so a round's pair shares the machine's state; the
    # ratio reported is the median of the per-round ratios.
    order = list(confs)
    res = {p: {"gbps": [], "rr_per_s": [], "p50_us": [], "p99_us": []} for p in order}
    for r in range(args.rounds):
        this = order if r % 2 == 0 else order[::-1]
        for pname in this:
            gbps = iperf3(pods[pname][0][0], pods[pname][1][2], args.seconds, cpu_client)
            res[pname]["gbps"].append(gbps)
        for pname in this:
            pp = sockperf_pp(pods[pname][0][0], pods[pname][1][2], args.seconds, cpu_client)
            for k in ("rr_per_s", "p50_us", "p99_us"):
                res[pname][k].append(pp[k])
        B.log(f"bench: round {r + 1}/{args.rounds}: " + ", ".join(
            f"{p} {res[p]['gbps'][-1]:.2f} Gbit/s {res[p]['rr_per_s'][-1]:.0f} RR/s"
            for p in this))

    med = {p: {k: B.median(v) for k, v in res[p].items()} for p in order}
    ratios = {k: [c / p if p else float("inf")
                  for c, p in zip(res["causeway"][k], res["ptp"][k])]
              for k in res["causeway"]}
    print()
    print(f"Same-node pod-to-pod, {args.rounds} rounds x {args.seconds}s; client CPU "
          f"{cpu_client}, server CPU {cpu_server}")
    print(f"causeway {CW_CIDR}  vs  ptp+host-local {PTP_SUBNET}")
    print("figures: median over rounds; cw/ptp: median of the per-round ratios")
    print()
    hdr = f"{'':26} {'causeway':>10} {'ptp':>10} {'cw/ptp':>8}   goal"
    print(hdr)
    print("-" * (len(hdr) + 18))
    rows = [
        ("TCP throughput Gbit/s", "gbps", True),
        ("TCP RR round trips/s", "rr_per_s", True),
        ("TCP RR one-way p50 us", "p50_us", False),
        ("TCP RR one-way p99 us", "p99_us", False),
    ]
    out_json = {"rounds": args.rounds, "seconds": args.seconds, "figures": {}, "raw": res}
    for label, key, has_goal in rows:
        cw, ptp = med["causeway"][key], med["ptp"][key]
        ratio = B.median(ratios[key])
        goal = ""
        entry = {"causeway": round(cw, 3), "ptp": round(ptp, 3), "ratio": round(ratio, 3),
                 "round_ratios": [round(x, 3) for x in ratios[key]]}
        if has_goal:
            met = ratio >= GOAL
            goal = f">= {GOAL:.2f}x  {'met' if met else 'NOT MET'}"
            entry.update(goal=GOAL, met=met)
        fmt = "{:10.2f}" if key == "gbps" or key.endswith("_us") else "{:10.0f}"
        print(f"{label:26} {fmt.format(cw)} {fmt.format(ptp)} {ratio:8.3f}   {goal}")
        out_json["figures"][key] = entry
    print("(latency rows: lower is better, shown for reading the RR rate; no goal)")
    print()
    print("per round (spread = (max - min) / median: the noise to read a ratio against):")
    for label, key, unit, fmt in (("throughput", "gbps", "Gbit/s", "{:.2f}"),
                                  ("RR rate", "rr_per_s", "/s", "{:.0f}")):
        for pname in order:
            vals = res[pname][key]
            spread = (max(vals) - min(vals)) / med[pname][key] if med[pname][key] else 0
            print(f"  {label:10} {pname:8} {' '.join(fmt.format(v) for v in vals)} {unit}"
                  f"  spread {spread:.0%}")
        print(f"  {label:10} {'cw/ptp':8} {' '.join(f'{x:.3f}' for x in ratios[key])}")

    counters = datapath_counters(bpf_root)
    print()
    if counters is None:
        print("causeway datapath counters: not available (causeway-helper metrics failed)")
    else:
        fwd = {e["direction"]: e["packets"] for e in counters if e["reason"] == "forwarded"}
        drops = [f"{e['direction']} {e['reason']} {e['packets']:.0f}"
                 for e in counters if e["reason"] != "forwarded" and e["packets"]]
        print("causeway datapath counters: forwarded " + ", ".join(
            f"{d} {n:.0f}" for d, n in sorted(fwd.items())) +
            f"; dropped: {', '.join(drops) or 'none'}")
        if not any(fwd.values()):
            print("WARNING: no packet went through Causeway's programs; the causeway "
                  "figures above are not of its datapath")
        out_json["datapath_counters"] = counters
    if args.json:
        B.write_json(args.json, out_json)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        B.log(f"bench: pod_throughput failed: {exc}")
        sys.exit(1)
