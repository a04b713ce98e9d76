"""Benchmark: the node sensor, in one run.

1. Overhead: a process-heavy workload (10,000 short execs of /bin/true from one shell) timed without the
   sensor, then with `stockade sensor run` attached (real eBPF), and the difference in wall time and in CPU
   (the workload's own, and the sensor's: bpftrace plus stockade).
2. Throughput: the events the sensor recorded during that run (bpftrace's raw lines), replayed through the
   decoder and the full rule pack in this process: events per second.

No anchor can run here (Falco and Tetragon are not installable from the registries these machines reach).
Needs root and bpftrace. Usage: python bench/sensor.py [--execs 10000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stockade.sensor.collector import probes_path
from stockade.sensor.detect import Detector
from stockade.sensor.events import Decoder
from stockade.sensor.rules import load


def workload(n: int) -> tuple[float, float]:
    """Wall and CPU seconds (children) of n execs of /bin/true."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(["bash", "-c", f"for i in $(seq {n}); do /bin/true; done"], check=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def cpu_of(pids: list[int]) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tck
        except (OSError, IndexError, ValueError):
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=10_000)
    args = ap.parse_args()
    if os.geteuid() != 0 or shutil.which("bpftrace") is None:
        raise SystemExit("needs root and bpftrace")
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-sensor-"))
    base_wall, base_cpu = workload(args.execs)
    # the sensor as deployed
    sensor = subprocess.Popen([sys.executable, "-m", "stockade.cli.main", "sensor", "run", "-o", str(work / "a.jsonl"),
                               "--stats", str(work / "stats.json")], stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert sensor.stderr is not None
    while "sensor ready" not in (line := sensor.stderr.readline()):  # after "pod lookup: ..." and the like
        if not line:
            raise SystemExit("the sensor did not start")
    kids = [
        int(p) for p in subprocess.run(["pgrep", "-P", str(sensor.pid)], capture_output=True, text=True).stdout.split()
    ]
    c0 = cpu_of([sensor.pid, *kids])
    with_wall, with_cpu = workload(args.execs)
    time.sleep(2.0)  # the sensor drains what is queued
    sensor_cpu = cpu_of([sensor.pid, *kids]) - c0
    sensor.terminate()
    sensor.wait(30)
    stats = (work / "stats.json").read_text()
    # raw events for the throughput replay
    raw = work / "raw.log"
    bt = subprocess.Popen(["bpftrace", str(probes_path())], stdout=raw.open("w"), stderr=subprocess.DEVNULL,
                          env={**os.environ, "BPFTRACE_STRLEN": "128"})  # fmt: skip
    time.sleep(6)
    workload(args.execs // 2)
    time.sleep(1)
    bt.terminate()
    bt.wait(10)
    lines = raw.read_text(errors="replace").splitlines(keepends=True)
    dec, det = Decoder(), Detector(load())
    t = time.perf_counter()
    events = 0
    for line in lines:
        ev = dec.decode(line)
        if ev is not None:
            events += 1
            det.process(ev)
    dt = time.perf_counter() - t
    print(f"workload: {args.execs:,} execs of /bin/true")
    print(f"  without sensor: {base_wall:.2f} s wall, {base_cpu:.2f} s CPU")
    print(f"  with sensor:    {with_wall:.2f} s wall, {with_cpu:.2f} s CPU "
          f"(+{100 * (with_wall / base_wall - 1):.1f}% wall); sensor itself {sensor_cpu:.2f} s CPU; counters {stats}")  # fmt: skip  # noqa: E501
    print(f"throughput: {len(lines):,} raw lines, {events:,} events through {sum(1 for _ in load())} rules in "
          f"{dt:.2f} s: {events / dt:,.0f} events/s ({len(lines) / dt:,.0f} lines/s)")  # fmt: skip


if __name__ == "__main__":
    main()
