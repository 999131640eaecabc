"""Pins an older release left behind: what the plugin cannot adopt it replaces.

Releases before the per-CPU array pinned cw_metrics as a per-CPU hash.
libbpf refuses to adopt a pin of another map type, so without the
replacement the first ADD after an upgrade would fail to load the
datapath; and readers looking slots up by index would find nothing.
"""

import json

from cwlib import MAP_METRICS, sh


def metrics_layout(node):
    info = json.loads(sh(["bpftool", "-j", "map", "show", "pinned",
                          str(node.bpf_root / MAP_METRICS)]).stdout)
    return info["type"], info["bytes_key"], info["bytes_value"], info["max_entries"]


def pin_old_metrics(node):
    """cw_metrics as an earlier release pinned it: a per-CPU hash, 4-byte keys."""
    pin = node.bpf_root / MAP_METRICS
    node.bpf_root.mkdir(parents=True, exist_ok=True)
    pin.unlink(missing_ok=True)
    sh(["bpftool", "map", "create", str(pin), "type", "percpu_hash", "key", "4", "value", "16",
        "entries", "512", "name", MAP_METRICS])
    assert metrics_layout(node)[0] == "percpu_hash"


CURRENT = ("percpu_array", 4, 16, 512)


def test_old_metrics_pin_before_the_first_add(node):
    pin_old_metrics(node)
    conf = node.conflist()
    a, b = node.make_pods(2)
    node.add(a, conf)
    node.add(b, conf)
    assert metrics_layout(node) == CURRENT
    before = node.forwarded_packets()
    r = node.meshcheck([a, b], "-a", "-t", "5")
    assert r.returncode == 0, f"meshcheck:\n{r.stdout[-2000:]}\n{r.stderr}\n{node.log_tail()}"
    assert node.forwarded_packets() - before >= 2, "the replaced map counts nothing"
    for p in (a, b):
        node.delete(p)
    node.assert_clean()


def test_old_metrics_pin_beside_current_pins_reloads(node):
    conf = node.conflist()
    a, b = node.make_pods(2)
    node.add(a, conf)
    assert metrics_layout(node) == CURRENT
    pin_old_metrics(node)   # every other pin is this release's
    node.add(b, conf)       # the datapath counts as not loaded: reloaded, the pin replaced
    assert metrics_layout(node) == CURRENT
    before = node.forwarded_packets()
    r = node.meshcheck([a, b], "-a", "-t", "5")
    assert r.returncode == 0, f"meshcheck:\n{r.stdout[-2000:]}\n{r.stderr}\n{node.log_tail()}"
    # b's programs are the reloaded ones and count into the new map
    assert node.forwarded_packets() - before >= 1
    for p in (a, b):
        node.delete(p)
    node.assert_clean()
