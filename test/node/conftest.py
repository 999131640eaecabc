"""Fixtures for the node tests (run as root: python3 -m pytest -q test/node).

Each test gets a private Node (see cwlib.py): its own node netns, pod
namespaces, bpfRoot under /sys/fs/bpf and stateDir.  Teardown always runs:
it DELs what is still attached (as a runtime would), deletes the namespaces,
the bpfRoot and the temporary directory, and fails the test if any of them,
or a host veth in the wrong netns, is left.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cwlib  # noqa: E402

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="node tests need root (network namespaces, veths, bpffs pins)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def binaries():
    missing = [str(p) for p in (cwlib.PLUGIN, cwlib.RUNNER) if not p.is_file()]
    if missing:
        pytest.fail(f"not built: {', '.join(missing)} (run make first)")


@pytest.fixture(scope="session")
def meshcheck_bin():
    if not cwlib.MESHCHECK.is_file():
        pytest.fail(f"not built: {cwlib.MESHCHECK} (run make first)")
    return cwlib.MESHCHECK


@pytest.fixture
def node(request, binaries):
    n = cwlib.Node(request.node.name)
    try:
        yield n
    finally:
        problems = n.cleanup()
    assert not problems, f"cleanup of {n.prefix}: {problems}"
