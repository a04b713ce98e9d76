"""Audit logs read end to end: files (followed as they grow, resumed from a saved offset) or standard input,
through the detector, alerts written as raised and sent to the server as they change. What ``stockade audit
scan`` runs; tests call it without the CLI."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from stockade.audit import events as aev
from stockade.audit.detect import Detector, IntelReloader, tune_gc
from stockade.audit.profile import Profiles
from stockade.audit.rules import load
from stockade.model import Alert

Emit = Callable[[list[Alert]], None]


class Emitter:
    """Handles each event's new alerts: new alerts go to the server at once and grown counts every second
    (``deltas``, rules.AlertDeltas), and each alert is written to ``out`` as a JSON line when given."""

    def __init__(self, detector: Detector, deltas: Any = None, out: IO[bytes] | None = None) -> None:
        self.detector, self.deltas, self.out = detector, deltas, out
        self.synced = 0.0
        if deltas is not None:
            detector.bursts.track_changes()

    def __call__(self, new: list[Alert]) -> None:
        if self.deltas is not None and (new or time.monotonic() - self.synced > 1.0):
            self.deltas.sync(self.detector.bursts.drain())
            self.synced = time.monotonic()
        if self.out is not None and new:
            self.out.write(b"".join(a.to_json() + b"\n" for a in new))
            self.out.flush()

    def close(self) -> dict[str, int] | None:
        """Send what changed since the last sync; the publisher's counts (sent, dropped, failed)."""
        return self.deltas.close(self.detector.bursts.drain()) if self.deltas is not None else None


def scan(paths: list[Path], rules: list[Path] | None = None, window_s: float = 600, out: IO[bytes] | None = None,
         deltas: Any = None, follow: bool = False, state: Path | None = None, keep_alerts: bool = True,
         profiles: Profiles | Path | None = None, learn_s: float = 7 * 86400.0,
         ) -> tuple[Detector, aev.Stats, dict[str, int] | None]:  # fmt: skip
    """Every event of ``paths`` ("-": standard input) through the audit rules (the built-in pack and ``rules``).
    ``profiles``: learned profiles (or a SQLite file of them). Returns the detector (its alerts, with
    ``keep_alerts``), the read counters, and what ``deltas`` delivered."""
    learned = Profiles(profiles, learn_s) if isinstance(profiles, Path) else profiles
    detector = Detector(load(rules), window_s=window_s, keep_alerts=keep_alerts, profiles=learned)
    reloader = IntelReloader(detector, lambda: load(rules)) if follow else None
    tune_gc()
    emit = Emitter(detector, deltas, out)
    stats = aev.Stats()
    for path in paths:
        if str(path) == "-":
            stdin = open(sys.stdin.fileno(), "rb", buffering=aev.READ_BUFFER, closefd=False)  # noqa: SIM115
            for _off, ev in aev.parse_stream(stdin, stats, detector.wants):
                emit(detector.process(ev))
            continue
        fs = aev.FileState.load(state, path) if state else (aev.FileState(path) if follow else None)
        with contextlib.suppress(KeyboardInterrupt):
            read(path, fs, stats, detector, emit, follow, state, reloader)
    if learned is not None:
        learned.close()
    return detector, stats, emit.close()


def read(path: Path, fs: aev.FileState | None, stats: aev.Stats, detector: Detector, emit: Emit, follow: bool,
         state: Path | None, reloader: IntelReloader | None = None) -> None:  # fmt: skip
    """Read one file to its end (and on, with follow), saving the offset to ``state`` as it goes."""
    while True:
        if reloader is not None:
            reloader.check()
        last = time.monotonic()
        for off, ev in aev.read_file(path, stats, fs, detector.wants):
            emit(detector.process(ev))
            if fs is not None:
                fs.offset = off
                if state is not None and time.monotonic() - last > 1.0:
                    fs.save(state)
                    last = time.monotonic()
        if fs is not None and state is not None:
            fs.save(state)
        if not follow:
            return
        time.sleep(0.5)
