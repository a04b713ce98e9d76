"""Benchmark: this tree against an earlier revision, in one run on the same machine, for the audit and posture
engines (a refactoring must not slow them: the ratio after / before should be at least 0.97).

The earlier revision is checked out with ``git worktree`` into a temporary directory, and each measurement
runs in a fresh Python process with PYTHONPATH pointing at one tree's ``src``, alternating before and after
``--rounds`` times so that drift in the machine's speed hits both alike; the median of each side is compared.

- audit: ``bench/audit.py`` of each tree (1,000,000 replayed real events on one core, stream and report
  passes), events/s.
- posture: ``stockade posture -q -f json`` of each tree on the bench corpora (badPods, Online Boutique, the
  generated 10,000-object snapshot), wall seconds of the whole command.

Usage: python bench/before_after.py [--base REV] [--rounds 3] [--events 1000000]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "bench"))


def run_audit(tree: Path, events: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    out = subprocess.run([sys.executable, str(tree / "bench" / "audit.py"), "--events", str(events)],
                         capture_output=True, text=True, check=True, env=env).stdout  # fmt: skip
    return {m: float(v.replace(",", "")) for m, v in re.findall(r"^(stream|report): ([\d,]+) events/s wall", out, re.M)}


def run_posture(tree: Path, path: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stockade.cli.main", "posture", "-q", "-f", "json", str(path)],
                   capture_output=True, check=True, env=env)  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    from posture import snapshot  # bench/posture.py's generated 10,000-object snapshot

    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="3a3fe13", help="the revision to compare with (default: before issue 17)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-ba-"))
    base = work / "base"
    (work / "shared").symlink_to(SHARED)  # the earlier tree's bench scripts read ../shared beside it
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
                   check=True, capture_output=True)  # fmt: skip
    try:
        trees = {"before": base, "after": ROOT}
        with tarfile.open(SHARED / "data" / "manifests" / "real-manifests.tar.gz") as tf:
            tf.extractall(work, filter="data")
        corpora = {"badPods": work / "badPods", "Online Boutique": work / "release",
                   "10,000 objects": snapshot(work / "release" / "kubernetes-manifests.yaml", work)}  # fmt: skip
        audit: dict[str, dict[str, list[float]]] = {t: {"stream": [], "report": []} for t in trees}
        posture: dict[str, dict[str, list[float]]] = {t: {c: [] for c in corpora} for t in trees}
        for r in range(args.rounds):
            for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
                for mode, v in run_audit(trees[name], args.events).items():
                    audit[name][mode].append(v)
                for label, path in corpora.items():
                    posture[name][label].append(run_posture(trees[name], path))
        print(f"base {args.base}, {args.rounds} rounds alternating, medians; ratio = after / before for events/s, "
              "before / after for seconds (>= 0.97: no slowdown beyond noise)")
        for mode in ("stream", "report"):
            b, a = statistics.median(audit["before"][mode]), statistics.median(audit["after"][mode])
            print(f"audit {mode:7}: before {b:10,.0f} events/s  after {a:10,.0f} events/s  ratio {a / b:.3f}  "
                  f"(all: {audit['before'][mode]} / {audit['after'][mode]})")
        for label in corpora:
            b, a = statistics.median(posture["before"][label]), statistics.median(posture["after"][label])
            print(f"posture {label:16}: before {b:6.3f} s  after {a:6.3f} s  ratio {b / a:.3f}")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()
