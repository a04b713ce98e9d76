"""Benchmark: audit events per second through the full rule pack, one core, in one run.

Replays 1,000,000 events mixed from the real audit traces in ../shared (Falco's k8s audit test traces), each
replayed line given an auditID of its own (the engine judges a request once, so repeats of one id would be
skipped early and flatter the figure), with the threat-intelligence lists of ../shared/data/intel loaded into
the rules (`stockade intel update`), read from a file as `stockade audit scan FILE` reads it: every line is
decoded (lazily: the request and response objects only where a rule that can match reads them), indexed and
tested against every rule that can match, and the alerts are deduplicated. Prints events/s and alerts; the
goal is 100,000 events/s on one core.

The anchor, Falco with its k8saudit plugin, cannot be installed on these machines (no package registry
carries it), so it is not run; its rules' expectations are the oracle of tests/test_audit.py instead.

Usage: python bench/audit.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import os
import re
import tarfile
import tempfile
import time
from pathlib import Path

from stockade.audit.detect import Detector, tune_gc
from stockade.audit.events import Stats, read_file
from stockade.audit.rules import load

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run(log: Path, mode: str) -> None:
    """One pass over the replay. stream: each alert written as a JSON line when raised and only the open bursts
    kept, as `audit scan FILE -f jsonl`, `--follow` and `audit serve` run; report: every alert kept for the
    report at the end, as `audit scan FILE` with a table or JSON (the report itself is not timed)."""
    detector, stats = Detector(load(), keep_alerts=mode == "report"), Stats()
    tune_gc()  # as `stockade audit scan` and `audit serve` do
    with open(os.devnull, "wb") as sink:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for _off, ev in read_file(log, stats, wants=detector.wants):  # as `stockade audit scan FILE` reads it
            for a in detector.process(ev):
                if mode == "stream":
                    sink.write(a.to_json() + b"\n")
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    print(f"{mode}: {stats.events / wall:,.0f} events/s wall, {stats.events / cpu:,.0f} events/s per CPU second "
          f"({wall:.2f} s); {detector.raised} alerts for {detector.hits:,} matching events")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-audit-"))
    try:  # the indicator store, as `stockade intel update ../shared/data/intel/*` builds it
        from stockade.intel import update

        os.environ["STOCKADE_INTEL_DIR"] = str(work / "intel")
        update(sorted((SHARED / "data" / "intel").glob("*.tar.gz")), work / "intel")
    except ImportError:  # a checkout from before the indicator store
        pass
    with tarfile.open(SHARED / "data" / "audit" / "falco-k8s-audit-traces.tar.gz") as tf:
        tf.extractall(work, filter="data")
    lines = [
        line
        for p in sorted(work.rglob("*.json"))
        for line in p.read_bytes().splitlines(keepends=True)
        if line.strip() and b'"auditID"' in line
    ]
    size = sum(len(x) for x in lines) / len(lines)
    log = work / "replay.log"
    audit_id = re.compile(rb'"auditID":"([^"]*)"')
    with log.open("wb") as fh:  # the replay, as an API server's log file would hold it: each a request of its own
        for i in range(args.events):
            fh.write(audit_id.sub(b'"auditID":"\\1-' + str(i).encode() + b'"', lines[i % len(lines)], count=1))
    print(f"{len(lines)} distinct real events (mean {size:.0f} bytes), replayed to {args.events:,} events "
          f"({log.stat().st_size / 1e6:.0f} MB), {len(load())} rules")  # fmt: skip
    for mode in ("stream", "report"):
        run(log, mode)
    print("goal: 100,000 events/s on one core; anchor (Falco k8saudit) not installable here")
    log.unlink()


if __name__ == "__main__":
    main()
