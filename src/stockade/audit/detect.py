"""Events through the indexed rules; a burst of the same alert (rule, user, namespace, object) within the
dedup window becomes one alert with a count."""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from stockade.audit.rules import AuditRule, Index
from stockade.model import Alert
from stockade.posture.engine import _resolve, split_path

EVIDENCE = 3  # events kept per alert
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def _first(ev: dict[str, Any], path: str) -> str:
    vals = [v for v in _resolve(ev, split_path(path)) if v not in (None, "")]
    if not vals:
        return "-"
    return ",".join(str(v) for v in vals[:5]) if len(vals) > 1 else str(vals[0])


def _field(obj: bytes, key: bytes) -> bytes:
    i = obj.find(key)
    if i < 0:
        return b""
    i += len(key)
    return obj[i : obj.find(b'"', i)]


def render(template: str, ev: dict[str, Any]) -> str:
    return _PLACEHOLDER.sub(lambda m: _first(ev, m.group(1)), template)


@lru_cache(maxsize=65536)
def _epoch(ts: str) -> float:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


def _evidence(ev: dict[str, Any]) -> orjson.Fragment:
    """The event as JSON, serialized now: keeping the parsed events of every open alert alive made the garbage
    collector walk them again and again (a tenth of the engine's time)."""
    return orjson.Fragment(orjson.dumps({k: v for k, v in ev.items() if not k.startswith("_")}))


class Bursts:
    """Open alerts by dedup key: a repeat within the window (by event time) raises the open alert's count
    instead of a new alert; at most ``max_open`` keys are kept, the least recently repeated closing first."""

    def __init__(self, window_s: float, max_open: int = 100_000) -> None:
        self.window, self.max_open = window_s, max_open
        self.open: OrderedDict[str, tuple[float, Alert]] = OrderedDict()

    def repeat(self, key: str, now: float, ts: str) -> Alert | None:
        """The open alert for ``key`` with its count raised, or None when there is none within the window."""
        hit = self.open.get(key)
        if hit is None or abs(now - hit[0]) > self.window:
            return None
        alert = hit[1]
        alert.count += 1
        alert.last_time = ts or alert.last_time
        self.open[key] = (now, alert)
        self.open.move_to_end(key)
        return alert

    def add(self, key: str, now: float, alert: Alert) -> None:
        self.open[key] = (now, alert)
        if len(self.open) > self.max_open:  # bounded memory: the oldest burst closes
            self.open.popitem(last=False)


class Detector:
    def __init__(self, rules: list[AuditRule], window_s: float = 600.0, max_open: int = 100_000) -> None:
        self.index = Index(rules)
        self.bursts = Bursts(window_s, max_open)
        self.alerts: list[Alert] = []  # every alert, in the order raised
        self.events = 0
        self._candidates: list[AuditRule] | None = None
        self._raw: dict[tuple[bytes, bytes, bytes], list[AuditRule]] = {}  # (verb, resource, subresource)

    def skip(self, line: bytes) -> bool:
        """True when no rule can match this raw native event: its verb and resource select no rule, or
        every selected rule's prefilter strings are absent. Anything unusual is parsed."""
        self._candidates = None
        i = line.find(b'"verb":"')
        k = line.find(b'"objectRef":{')
        # one verb and one objectRef each (a duplicated key could differ from what the parser keeps)
        if i < 0 or k < 0 or line.rfind(b'"verb":"') != i or line.rfind(b'"objectRef":{') != k:
            return False
        end = line.find(b"}", k)
        ref = line[k + 13 : end]
        if b"{" in ref or b'"kind":"Event"' not in line:
            return False
        key = (line[i + 8 : line.find(b'"', i + 8)], _field(ref, b'"resource":"'), _field(ref, b'"subresource":"'))
        rules = self._raw.get(key)
        if rules is None:
            verb, resource, sub = (x.decode() for x in key)
            rules = self.index.lookup(verb, f"{resource}/{sub}" if sub else resource)
            if len(self._raw) < 65536:  # bounded: verbs x resources seen
                self._raw[key] = rules
        survivors: list[AuditRule] = []
        for r in rules:
            if r.prefilter:
                for p in r.prefilter:
                    if p in line:
                        survivors.append(r)
                        break
            else:
                survivors.append(r)
        self._candidates = survivors or None  # the rules process() tests for the event parsed from this line
        return not survivors

    def process(self, ev: dict[str, Any]) -> list[Alert]:
        """New alerts for this event (a repeat within the window only raises the existing alert's count)."""
        self.events += 1
        rules, self._candidates = self._candidates, None
        if rules is None:
            rules = self.index.lookup(ev["verb"], ev["_resource"])
        if not rules:
            return []
        new: list[Alert] = []
        for rule in rules:
            if rule.condition(ev):  # what rule.fires does, without the call
                alert = self._raise(rule, ev)
                if alert is not None:
                    new.append(alert)
        return new

    def _raise(self, rule: AuditRule, ev: dict[str, Any]) -> Alert | None:
        ref = ev.get("objectRef") or {}
        user = ev.get("user") or {}
        ts = str(ev.get("stageTimestamp") or ev.get("requestReceivedTimestamp") or ev.get("timestamp") or "")
        key = "|".join((rule.id, str(user.get("username", "")), str(ref.get("namespace", "")), ev["_resource"],
                        str(ref.get("name", ""))))  # fmt: skip
        now = _epoch(ts)
        seen = self.bursts.repeat(key, now, ts)
        if seen is not None:
            if len(seen.evidence) < EVIDENCE:
                seen.evidence.append(_evidence(ev))
            return None
        alert = Alert(
            rule=rule.id,
            title=rule.title,
            severity=rule.severity,
            tactics=rule.tactics,
            techniques=rule.techniques,
            source="k8s_audit",
            time=ts,
            last_time=ts,
            user=str(user.get("username", "")),
            groups=[str(g) for g in user.get("groups") or []],
            source_ips=[str(i) for i in ev.get("sourceIPs") or []],
            user_agent=str(ev.get("userAgent", "")),
            verb=str(ev.get("verb", "")),
            resource=ev["_resource"],
            namespace=str(ref.get("namespace", "")),
            name=str(ref.get("name", "")),
            message=render(rule.output, ev) if rule.output else rule.title,
            description=rule.description,
            remediation=rule.remediation,
            dedup_key=key,
            evidence=[_evidence(ev)],
        )
        self.bursts.add(key, now, alert)
        self.alerts.append(alert)
        return alert
