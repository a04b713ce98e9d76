"""The node sensor assembled: rules, pod attribution (CRI socket, kubelet pod list), the eBPF collector, and
where alerts go (JSON lines, the central server). What ``stockade sensor run`` and ``sensor replay`` run; tests
call it without the CLI."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from stockade.model import Alert, StockadeError
from stockade.sensor.adapters import convert
from stockade.sensor.collector import Sensor
from stockade.sensor.cri import lookup_for
from stockade.sensor.detect import Detector
from stockade.sensor.events import Attributor, Decoder, api_server_endpoints
from stockade.sensor.rules import load


def start(out: IO[bytes], rules: list[Path] | None = None, learn_s: float = 0, cri_socket: str = "auto",
          kubelet_pods: Path | None = None, api_servers: list[str] | None = None, deltas: Any = None,
          queue_size: int = 65536, cpu_share: float = 0.5, memory_mb: float = 400,
          log: Callable[[str], None] = lambda _m: None) -> tuple[Sensor, Detector]:  # fmt: skip
    """A started sensor writing its alerts to ``out`` (and to the server through ``deltas``, rules.AlertDeltas);
    StockadeError names the input at fault."""
    lock = threading.Lock()
    try:
        endpoints = api_server_endpoints(api_servers or [])
    except ValueError as exc:
        raise StockadeError(str(exc)) from None
    detector = Detector(load(rules), learn_s=learn_s, keep_alerts=False)
    attr = Attributor(lookup=lookup_for(cri_socket, log))
    if kubelet_pods is not None:
        try:
            attr.load_pods(orjson.loads(kubelet_pods.read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StockadeError(f"{kubelet_pods}: unreadable pod list ({exc})") from None
    attr.refresh()
    if deltas is not None:
        detector.bursts.track_changes()

    def publish(alerts: list[Alert]) -> None:
        if deltas is not None:
            deltas.sync(detector.bursts.drain())  # the new alerts, and the counts that grew
        if alerts:
            with lock:
                out.write(b"".join(orjson.dumps(a.to_dict()) + b"\n" for a in alerts))
                out.flush()

    decoder = Decoder(attr, api_servers=endpoints)
    sensor = Sensor(detector, decoder, publish, queue_size=queue_size, cpu_share=cpu_share, memory_mb=memory_mb)
    sensor.start()
    return sensor, detector


def run_until(sensor: Sensor, stop: threading.Event, duration: float = 0) -> None:
    """Wait until ``stop`` is set, ``duration`` seconds pass (0: no limit), or the sensor ends by itself (its
    event source ended, or the memory limit stopped it)."""
    end = time.monotonic() + duration if duration > 0 else float("inf")
    while not stop.wait(min(1.0, max(0.0, end - time.monotonic()))) and time.monotonic() < end:
        if sensor.done.is_set():
            break


def finish(sensor: Sensor, detector: Detector, deltas: Any = None) -> dict[str, Any]:
    """Stop the sensor; its counters, with what the server was sent (the repeats since the last sync too)."""
    counters = sensor.stop()
    if deltas is not None:
        counters["published"] = deltas.close(detector.bursts.drain())
    return counters


def replay(files: Iterable[Path], out: IO[bytes], rules: list[Path] | None = None) -> int:
    """Falco or Tetragon JSON events (JSON lines) through stockade's workload rules, alerts to ``out`` as JSON
    lines; returns the number of lines that were not such an event."""
    skipped = 0
    detector = Detector(load(rules))
    for f in files:
        try:
            fh = f.open("rb")
        except OSError as exc:
            raise StockadeError(f"{f}: cannot read ({exc.strerror})") from None
        with fh:
            for line in fh:
                try:
                    ev = convert(orjson.loads(line)) if line.strip() else None
                except orjson.JSONDecodeError:
                    ev = None
                if ev is None:
                    skipped += bool(line.strip())
                    continue
                for a in detector.process(ev):
                    out.write(orjson.dumps(a.to_dict()) + b"\n")
    return skipped
