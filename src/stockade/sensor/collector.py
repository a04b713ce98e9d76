"""The sensor process: runs bpftrace with stockade's probes, reads its events through a bounded queue (drops
are counted, never blocking the kernel side), decodes, detects and publishes alerts in batches, within a
CPU share."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

from stockade.model import Alert, StockadeError
from stockade.sensor.detect import Detector
from stockade.sensor.events import Decoder


class SensorError(StockadeError):
    pass


@dataclass(slots=True)
class Counters:
    lines: int = 0
    events: int = 0
    dropped: int = 0
    alerts: int = 0
    throttled_s: float = 0.0
    memory_sheds: int = 0
    peak_rss_mb: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)


def check_ebpf() -> str:
    """The bpftrace binary, or a clear error saying why eBPF is not available here."""
    bt = shutil.which("bpftrace")
    if bt is None:
        raise SensorError("eBPF is not available: bpftrace is not installed (Debian: apt-get install bpftrace)")
    if os.geteuid() != 0:
        raise SensorError("eBPF is not available: the sensor needs root (CAP_BPF and CAP_PERFMON)")
    tracing = Path("/sys/kernel/tracing")
    if not (tracing / "events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(tracing)], capture_output=True, check=False)
        if not (tracing / "events").is_dir():
            raise SensorError("eBPF is not available: tracefs is not mounted at /sys/kernel/tracing and cannot be")
    return bt


def probes_path() -> Path:
    return Path(str(importlib_resources.files("stockade.sensor") / "probes.bt"))


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes, in MiB (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


class Sensor:
    """``memory_mb``: the most resident memory the sensor (this process and bpftrace) may use. Above it the
    sensor sheds its caches (process table, written files, open bursts, baselines) and the queued events
    (counted as dropped); when it is still above after ``SHED_LIMIT`` checks in a row it stops with an error
    (``failed``), so that the orchestrator restarts it instead of the kernel killing it or the node."""

    SHED_LIMIT = 5

    def __init__(self, detector: Detector, decoder: Decoder, publish: Callable[[list[Alert]], None],
                 queue_size: int = 65536, cpu_share: float = 0.5, batch: int = 64, memory_mb: float = 0.0,
                 command: list[str] | None = None) -> None:  # fmt: skip
        self.detector, self.decoder, self.publish = detector, decoder, publish
        self.q: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        self.cpu_share, self.batch, self.memory_mb = cpu_share, batch, memory_mb
        self.command = command  # the event source (default: bpftrace with the probes; tests replay a file)
        self.counters = Counters()
        self.proc: subprocess.Popen[str] | None = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self.failed = ""
        self._threads: list[threading.Thread] = []
        self._over = 0

    def start(self) -> None:
        env = {**os.environ, "BPFTRACE_STRLEN": "128"}  # paths longer than bpftrace's default 64 bytes
        cmd = self.command or [check_ebpf(), str(probes_path())]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, errors="replace", env=env,
        )  # fmt: skip
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._work, daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 30
        while not self.ready.is_set():
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else "").strip()
                raise SensorError(
                    f"eBPF is not available: bpftrace exited ({err.splitlines()[-1] if err else 'no output'})"
                )
            if time.monotonic() > deadline:
                raise SensorError("eBPF probes did not attach within 30 s")
            time.sleep(0.05)

    def _check_memory(self) -> None:
        rss = rss_mb([os.getpid()] + ([self.proc.pid] if self.proc else []))
        self.counters.peak_rss_mb = max(self.counters.peak_rss_mb, round(rss, 1))
        if not self.memory_mb or rss <= self.memory_mb:
            self._over = 0
            return
        self._over += 1
        self.counters.memory_sheds += 1
        self.decoder.shed()
        self.detector.shed()
        while True:  # the backlog goes too: dropped, and counted
            try:
                line = self.q.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self.q.put(None)
                break
            self.counters.dropped += 1
        if self._over >= self.SHED_LIMIT:
            self.failed = (f"memory limit exceeded: {rss:.0f} MiB resident, limit {self.memory_mb:.0f} MiB, "
                           f"after shedding caches {self._over} times")  # fmt: skip
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.counters.lines += 1
            if line.startswith("READY"):
                self.ready.set()
                continue
            try:
                self.q.put_nowait(line)
            except queue.Full:
                self.counters.dropped += 1  # bounded: the reader never blocks bpftrace's output
        self.q.put(None)

    def _work(self) -> None:
        pending: list[Alert] = []
        cpu0, wall0 = time.process_time(), time.monotonic()
        while True:
            try:
                line = self.q.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                ev = self.decoder.decode(line)
                if ev is not None:
                    self.counters.events += 1
                    pending += self.detector.process(ev)
            if pending and (len(pending) >= self.batch or not line):
                self.counters.alerts += len(pending)
                self.publish(pending)
                pending = []
            # CPU share: when this process used more than its share since the last check, pause (the queue
            # absorbs the burst, and drops what it cannot hold); memory: shed above the limit
            wall = time.monotonic() - wall0
            if wall > 0.5:
                self._check_memory()
                used = time.process_time() - cpu0
                if used > self.cpu_share * wall:
                    pause = used / self.cpu_share - wall
                    self.counters.throttled_s += pause
                    time.sleep(min(pause, 1.0))
                cpu0, wall0 = time.process_time(), time.monotonic()
        if pending:
            self.counters.alerts += len(pending)
            self.publish(pending)
        self.done.set()

    def stop(self) -> dict[str, Any]:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for t in self._threads:
            t.join(timeout=10)
        c = self.counters
        out: dict[str, Any] = {
            "lines": c.lines, "events": c.events, "dropped": c.dropped, "alerts": c.alerts,
            "throttled_s": round(c.throttled_s, 2), "malformed": self.decoder.malformed,
            "memory_sheds": c.memory_sheds, "peak_rss_mb": c.peak_rss_mb,
        }  # fmt: skip
        if self.failed:
            out["error"] = self.failed
        return out
