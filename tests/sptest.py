"""Shared scaffolding of the Python reference tests (run by ctest through
Debian's /usr/bin/python3): the paths ctest passes in the environment, a
check counter, and the closing line 'N passed, M failed'."""
import os
import sys

BIN = os.environ.get("SLIDEPIPE_BIN", "")
SYNTH = os.environ.get("SLIDEPIPE_SYNTH", "")
DATA = os.environ.get("SLIDEPIPE_TESTDATA") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
    "testdata")

_counts = {"passed": 0, "failed": 0}


def check(cond, what):
    """Count one check; report a failure on stderr. Returns `cond`."""
    if cond:
        _counts["passed"] += 1
    else:
        _counts["failed"] += 1
        print("FAIL:", what, file=sys.stderr, flush=True)
    return cond


def failures():
    return _counts["failed"]


def finish():
    """Print the closing line; the exit status for sys.exit."""
    print(f"{_counts['passed']} passed, {_counts['failed']} failed")
    return 1 if _counts["failed"] else 0


def files_of(d):
    """relative path -> bytes of every file under d"""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out
