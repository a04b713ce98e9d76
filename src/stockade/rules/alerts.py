"""What audit and sensor detectors share about alerts: output templates, bursts (a repeat of an alert within the
dedup window raises its count), and the deltas sent to the server (new alerts, then how much counts grew)."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Protocol

from stockade.model import Alert
from stockade.rules.paths import resolve, root_paths, scalar_prefix, split_path

PLACEHOLDER = re.compile(r"\{([^{}]+)\}")  # {path} in an alert's output template


def reads_of(tree: Any, output: str) -> frozenset[str]:
    """What a rule reads of an event, at the top level: its condition's paths and its output's placeholders."""
    paths = [*root_paths(tree), *(split_path(m.group(1)) for m in PLACEHOLDER.finditer(output))]
    return frozenset(p[0].removesuffix("[*]").removesuffix("{}") for p in paths if p)


def _first(ev: dict[str, Any], parts: tuple[str, ...], plain: bool) -> str:
    if plain:  # no [*] or {} step: at most one value, walked here
        v: Any = ev
        for p in parts:
            v = v.get(p) if isinstance(v, dict) else None
        return "-" if v is None or v == "" else str(v)
    vals = [v for v in resolve(ev, parts) if v not in (None, "")]
    if not vals:
        return "-"
    return ",".join(str(v) for v in vals[:5]) if len(vals) > 1 else str(vals[0])


@lru_cache(maxsize=1024)
def _template(template: str) -> tuple[tuple[str, tuple[str, ...] | None, bool], ...]:
    """An output template as (literal text, path or None, whether the path is plain) pieces, split once."""
    out: list[tuple[str, tuple[str, ...] | None, bool]] = []
    pos = 0
    for m in PLACEHOLDER.finditer(template):
        parts = split_path(m.group(1))
        out.append((template[pos : m.start()], parts, scalar_prefix(parts) == parts))
        pos = m.end()
    out.append((template[pos:], None, True))
    return tuple(out)


def render(template: str, ev: dict[str, Any]) -> str:
    """The template with each {path} replaced by the event's value there (up to 5 values, or "-")."""
    return "".join(
        text + (_first(ev, parts, plain) if parts is not None else "") for text, parts, plain in _template(template)
    )


class Bursts:
    """Open alerts by dedup key: a repeat within the window (by event time) raises the open alert's count
    instead of a new alert; at most ``max_open`` keys are kept, the least recently repeated closing first."""

    def __init__(self, window_s: float, max_open: int = 100_000) -> None:
        self.window, self.max_open = window_s, max_open
        self.open: OrderedDict[str, list[Any]] = OrderedDict()  # key -> [time of the last repeat, alert]
        self.changed: dict[int, Alert] | None = None  # with track_changes(): alerts new or counted since drain()

    def track_changes(self) -> None:
        self.changed = {}

    def drain(self) -> list[Alert]:
        """The alerts raised or counted since the last drain (for sending what changed, not every alert)."""
        if not self.changed:
            return []
        out = list(self.changed.values())
        self.changed = {}
        return out

    def shed(self) -> None:
        """Close the older half of the open bursts (a memory governor's relief)."""
        for _ in range(len(self.open) // 2):
            self.open.popitem(last=False)

    def repeat(self, key: str, now: float, ts: str) -> Alert | None:
        """The open alert for ``key`` with its count raised, or None when there is none within the window."""
        hit = self.open.get(key)
        if hit is None or abs(now - hit[0]) > self.window:
            return None
        alert: Alert = hit[1]
        alert.count += 1
        alert.last_time = ts or alert.last_time
        hit[0] = now  # in place: a repeat (half the events of a busy stream) allocates nothing
        self.open.move_to_end(key)
        if self.changed is not None:
            self.changed[id(alert)] = alert
        return alert

    def add(self, key: str, now: float, alert: Alert) -> None:
        self.open[key] = [now, alert]
        if self.changed is not None:
            self.changed[id(alert)] = alert
        if len(self.open) > self.max_open:  # bounded memory: the oldest burst closes
            self.open.popitem(last=False)


class Sink(Protocol):
    """Where AlertDeltas sends alert documents (the server client's Publisher: batches in the background)."""

    def put(self, items: list[dict[str, Any]]) -> None: ...

    def close(self) -> dict[str, int]: ...


class AlertDeltas:
    """Detectors count a burst's repeats into one open alert; this sends each alert once it is raised and, later,
    what its count grew by (the server adds counts of the same dedup key), so the server's counts match.

    ``sync`` takes the alerts raised or counted since the last call (``Bursts.drain``). The counts already sent
    are kept for the ``max_sent`` most recently changed alerts: at least the detector's open bursts (which are
    its most recently changed alerts), so the memory stays bounded and no open alert is sent twice."""

    def __init__(self, publisher: Sink, max_sent: int = 100_000) -> None:
        self.publisher, self.max_sent = publisher, max_sent
        # id(alert) -> (alert, count sent), least recently changed first; holding the alert keeps its id unique
        self._sent: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def sync(self, changed: list[Any]) -> None:
        out = []
        with self._lock:
            for a in changed:
                hit = self._sent.pop(id(a), None)
                done = hit[1] if hit is not None and hit[0] is a else 0
                if a.count > done:
                    d = a.to_dict()
                    d["count"] = a.count - done
                    if done:
                        d["evidence"] = []  # the first send carried it
                    out.append(d)
                self._sent[id(a)] = (a, max(a.count, done))
            while len(self._sent) > self.max_sent:
                self._sent.popitem(last=False)
        if out:
            self.publisher.put(out)

    def close(self, changed: list[Any]) -> dict[str, int]:
        """Send what changed since the last sync, then drain and stop the publisher."""
        self.sync(changed)
        return self.publisher.close()
