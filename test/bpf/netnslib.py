"""What tunnel_netns.py and lb_netns.py share: the checks' outcome (Failed,
check), the numbered "ok"/"not ok" steps (Run), and main's frame around
them (root, a built plugin, bpffs, SIGTERM, cleanup always, the closing
"NAME: N passed, M failed" line that test/run reads).
"""

import os
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

import cwlib  # noqa: E402
from cwlib import Node, sh  # noqa: E402


class Failed(Exception):
    pass


class Interrupted(BaseException):
    """SIGTERM or ^C: stop the checks, still clean up."""


def check(cond, msg):
    if not cond:
        raise Failed(msg)


class Run:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.n = 0
        self.interrupted = False

    def step(self, desc, fn, *args):
        self.n += 1
        try:
            fn(*args)
        except (Interrupted, KeyboardInterrupt):
            self.failed += 1
            self.interrupted = True
            print(f"not ok {self.n} - {desc}: interrupted", flush=True)
            raise
        except Failed as e:
            self.failed += 1
            print(f"not ok {self.n} - {desc}: {e}", flush=True)
            return False
        except Exception as e:  # a broken step is a failed step, and the rest still runs
            self.failed += 1
            print(f"not ok {self.n} - {desc}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
            return False
        self.passed += 1
        print(f"ok {self.n} - {desc}", flush=True)
        return True


def main(name, body, cleanup):
    """Run `body(run, sides)`, which makes the node sides (appending each to
    `sides` as soon as it exists) and runs the steps; then, whatever
    happened, `cleanup(sides, root_links)`, whose list of problems is the
    last check.  The exit status: 0 when all passed, 1 on a failure, 77
    when not root."""
    if os.geteuid() != 0:
        print(f"{name}: skipped, needs root (namespaces, BPF, bpffs)", file=sys.stderr)
        return 77
    for p in (cwlib.PLUGIN, cwlib.RUNNER):
        if not p.is_file():
            print(f"{name}: {p} not built (run make)", file=sys.stderr)
            return 1
    if not os.path.ismount(cwlib.BPFFS):
        sh(["mount", "-t", "bpf", "bpf", cwlib.BPFFS])

    # SIGTERM (a test runner's timeout) must still clean up.
    def on_term(*_):
        raise Interrupted()
    signal.signal(signal.SIGTERM, on_term)

    run = Run()
    root_links = Node.links_in_root()
    sides = []
    try:
        body(run, sides)
    except (Interrupted, KeyboardInterrupt):
        print(f"{name}: interrupted, cleaning up", file=sys.stderr)
        if not run.interrupted:
            run.failed += 1
    except Exception as e:  # setup outside a step (Node creation) failed
        print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
        run.failed += 1
    finally:
        problems = cleanup(sides, root_links)
        run.n += 1
        if problems:
            run.failed += 1
            print(f"not ok {run.n} - cleanup: {problems}")
        else:
            run.passed += 1
            print(f"ok {run.n} - cleanup: namespaces, devices and pins gone")
    print(f"{name}: {run.passed} passed, {run.failed} failed")
    return 0 if run.failed == 0 and run.passed > 0 else 1
