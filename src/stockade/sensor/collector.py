"""The sensor process: runs bpftrace with stockade's probes, reads its events through a bounded queue (drops
are counted, never blocking the kernel side), decodes, detects and publishes alerts in batches, within a
CPU share."""

from __future__ import annotations

import collections
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
from stockade.sensor.events import LOST_EVENTS, Decoder


class SensorError(StockadeError):
    pass


@dataclass(slots=True)
class Counters:
    lines: int = 0
    events: int = 0
    dropped: int = 0
    lost: int = 0  # lost in the kernel (bpftrace's perf buffer overflowed: "Lost N events")
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
                 queue_size: int = 65536, cpu_share: float = 0.5, memory_mb: float = 0.0,
                 command: list[str] | None = None) -> None:  # fmt: skip
        self.detector, self.decoder, self.publish = detector, decoder, publish
        # blocks of lines, read as they come (one wake-up per block, not per event); at most queue_size lines
        self.q: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self.queue_size, self._queued, self._qlock = queue_size, 0, threading.Lock()
        self.cpu_share, self.memory_mb = cpu_share, memory_mb
        self.command = command  # the event source (default: bpftrace with the probes; tests replay a file)
        self.counters = Counters()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.ready = threading.Event()
        self.done = threading.Event()
        self.failed = ""
        self._threads: list[threading.Thread] = []
        self._over = 0

    def start(self) -> None:
        env = {**os.environ, "BPFTRACE_STRLEN": "128"}  # paths longer than bpftrace's default 64 bytes
        cmd = self.command or [check_ebpf(), str(probes_path())]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env=env)
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._work, daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 30
        while not self.ready.is_set():
            if self.proc.poll() is not None:
                self._threads[1].join(2)
                err = self.stderr_tail[-1] if self.stderr_tail else "no output"
                raise SensorError(f"eBPF is not available: bpftrace exited ({err})")
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
                block = self.q.get_nowait()
            except queue.Empty:
                break
            if block is None:
                self.q.put(None)
                break
            with self._qlock:
                self._queued -= len(block)
            self.counters.dropped += len(block)
        if self._over >= self.SHED_LIMIT:
            self.failed = (f"memory limit exceeded: {rss:.0f} MiB resident, limit {self.memory_mb:.0f} MiB, "
                           f"after shedding caches {self._over} times")  # fmt: skip
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd, rest, c = self.proc.stdout.fileno(), b"", self.counters
        while chunk := os.read(fd, 1 << 16):
            rest += chunk
            if b"\n" not in chunk:
                continue
            block, _, rest = rest.rpartition(b"\n")
            lines = block.decode("utf-8", "replace").split("\n")
            c.lines += len(lines)
            if not self.ready.is_set():  # bpftrace's "Attaching N probes...", then the probes' own READY
                kept = [x for x in lines if not x.startswith(("READY", "Attaching "))]
                if any(x.startswith("READY") for x in lines):
                    self.ready.set()
                lines = kept
            with self._qlock:
                if self._queued + len(lines) > self.queue_size:
                    c.dropped += len(lines)  # bounded: the reader never blocks bpftrace's output
                    continue
                self._queued += len(lines)
            self.q.put(lines)
            if len(chunk) < 8192:
                # a trickle: let lines gather for 10 ms rather than wake both threads for each event (bpftrace
                # writes one line at a time); a flood (big reads) is read back to back. The pipe holds ~500
                # events, so this costs at most 10 ms of latency and never blocks bpftrace
                time.sleep(0.01)
        self.q.put(None)

    def _read_stderr(self) -> None:
        """bpftrace's warnings: lost events are counted, the rest kept for error messages."""
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            m = LOST_EVENTS.search(line)
            if m:
                self.counters.lost += int(m.group(1))
            elif line:
                self.stderr_tail.append(line)

    def _work(self) -> None:
        pending: list[Alert] = []
        decode, process, c = self.decoder.decode, self.detector.process, self.counters
        cpu0, wall0 = time.process_time(), time.monotonic()
        while True:
            try:
                block = self.q.get(timeout=0.2)
            except queue.Empty:
                block = []
            if block is None:
                break
            if block:
                with self._qlock:
                    self._queued -= len(block)
                for line in block:
                    ev = decode(line)
                    if ev is not None:
                        c.events += 1
                        new = process(ev)
                        if new:
                            pending += new
            if pending:
                c.alerts += len(pending)
                self.publish(pending)
                pending = []
            # CPU share: when this process used more than its share since the last check, pause (the queue
            # absorbs the burst, and drops what it cannot hold); memory: shed above the limit
            wall = time.monotonic() - wall0
            if wall > 0.5:
                self.publish([])  # the publisher sends what repeats added to open alerts' counts
                self._check_memory()
                used = time.process_time() - cpu0
                if used > self.cpu_share * wall:
                    pause = used / self.cpu_share - wall
                    c.throttled_s += pause
                    time.sleep(min(pause, 1.0))
                cpu0, wall0 = time.process_time(), time.monotonic()
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
            "lines": c.lines, "events": c.events, "dropped": c.dropped, "lost": c.lost + self.decoder.lost,
            "alerts": c.alerts, "throttled_s": round(c.throttled_s, 2), "malformed": self.decoder.malformed,
            "memory_sheds": c.memory_sheds, "peak_rss_mb": c.peak_rss_mb,
        }  # fmt: skip
        if self.failed:
            out["error"] = self.failed
        return out
