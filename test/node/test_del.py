"""DEL is idempotent and succeeds whatever is already gone (contract, DEL)."""

from cwlib import wait_for


def test_del_with_empty_netns(node):
    conf = node.conflist()
    pod = node.make_pod()
    node.add(pod, conf)
    # A runtime that lost the sandbox passes CNI_NETNS="": the host side is
    # still found by name, and the pod side goes with its veth peer.
    r = node.runner("del", pod, conf, netns="")
    assert r.rc == 0, f"DEL with empty CNI_NETNS failed:\n{r}"
    node.live.discard(pod)
    node.assert_gone(pod)
    assert "eth0" not in node.links(ns=pod.name), "the pod side of the veth survived"
    node.assert_clean()


def test_del_after_netns_deleted(node):
    conf = node.conflist()
    pod = node.make_pod()
    node.add(pod, conf)
    node.delete_netns(pod)
    node.delete(pod)  # CNI_NETNS names a path that no longer exists
    # The veth goes with the netns too, and the kernel may take a moment to
    # reap it: wait for that before looking for leftovers.
    assert wait_for(lambda: pod.veth not in node.links()), node.links()
    node.assert_gone(pod)
    node.assert_clean()


def test_repeated_del(node):
    conf = node.conflist()
    pod = node.make_pod()
    node.add(pod, conf)
    for _ in range(3):
        node.delete(pod)
        node.assert_gone(pod)
    # and DEL of an attachment that never existed
    never = node.make_pod()
    node.delete(never, conf)
    node.delete(never, conf, netns="")
    node.assert_clean()


def test_readd_after_del_reuses_nothing_stale(node):
    """ADD, DEL, ADD of the same attachment works: DEL left no state behind
    that would make the second ADD trip over the first."""
    conf = node.conflist()
    pod = node.make_pod()
    first = node.add(pod, conf)
    node.delete(pod)
    second = node.add(pod, conf)
    node.check_result(second, pod, "1.0.0")
    assert second["interfaces"][0]["name"] == first["interfaces"][0]["name"]
    node.delete(pod)
    node.assert_clean()
