"""Sensor events through the rules (indexed by event type), a per-workload behavioural baseline, dedup."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from stockade.model import Alert
from stockade.rules import Bursts, Index, render
from stockade.sensor.rules import SensorRule


@dataclass(frozen=True, slots=True)
class BaselineRule:
    """A rule the behavioural baseline raises (written in code: it learns, it is not a condition)."""

    id: str
    title: str
    severity: str
    tactics: list[str]
    techniques: list[str]
    remediation: str


EXE_RULE = BaselineRule("STK-RT-100", "Process not seen while learning the workload", "LOW", ["Execution"],
                        ["T1059"], "Check whether the new program is expected.")  # fmt: skip
NET_RULE = BaselineRule("STK-RT-101", "Connection not seen while learning the workload", "LOW",
                        ["Command and Control"], ["T1071"],
                        "Check whether the new destination is expected.")  # fmt: skip
BASELINE_RULES = [EXE_RULE, NET_RULE]
BASELINE_EXE, BASELINE_NET = EXE_RULE.id, NET_RULE.id


class Detector:
    """``keep_alerts``: keep every alert in ``alerts`` (replays, tests); a long-running sensor keeps only the
    open bursts, at most ``max_open``, and the baseline at most ``max_workloads`` workloads
    of ``max_learned`` programs and destinations each, so its memory is bounded."""

    def __init__(self, rules: list[SensorRule], window_s: float = 600.0, learn_s: float = 0.0,
                 max_open: int = 10_000, keep_alerts: bool = True, max_workloads: int = 4096,
                 max_learned: int = 4096) -> None:  # fmt: skip
        self.index = Index(rules, ("types",))  # by event type, each type's rules compiled together
        self.bursts = Bursts(window_s, max_open)
        self.learn_s = learn_s  # 0: no baseline
        self.keep_alerts = keep_alerts
        self.alerts: list[Alert] = []
        self.events = 0
        self.max_workloads, self.max_learned = max_workloads, max_learned
        self._seen: dict[str, tuple[float, set[str], set[str]]] = {}  # workload -> (first seen, exes, dests)

    def shed(self) -> None:
        """The memory governor's relief: close the older half of the open bursts and forget the learned baselines
        (each workload starts a new learning window)."""
        self.bursts.shed()
        self._seen.clear()

    def process(self, ev: dict[str, Any]) -> list[Alert]:
        self.events += 1
        new = []
        group = self.index.group(ev["type"])
        for rule in group.fire(ev) if group is not None else ():
            a = self._raise(rule.id, rule.title, rule.severity, rule.tactics, rule.techniques,
                            render(rule.output, ev) if rule.output else rule.title, rule.description,
                            rule.remediation, ev)  # fmt: skip
            if a is not None:
                new.append(a)
        if self.learn_s and ev["type"] in ("exec", "connect"):
            new += self._baseline(ev)
        return new

    def _baseline(self, ev: dict[str, Any]) -> list[Alert]:
        """Per workload (container image or id; the host is one workload): what it runs and where it connects
        during the learning window; afterwards something new is an anomaly."""
        c = ev.get("container") or {}
        key = c.get("image") or c.get("id") or "host"
        now = time.monotonic()
        if key not in self._seen and len(self._seen) >= self.max_workloads:
            self._seen.pop(next(iter(self._seen)))  # the oldest workload's baseline goes
        first, exes, dests = self._seen.setdefault(key, (now, set(), set()))
        learning = now - first < self.learn_s
        out = []
        if ev["type"] == "exec":
            exe = ev["proc"]["exe"]
            if exe not in exes:
                if len(exes) < self.max_learned:
                    exes.add(exe)
                if not learning:
                    r = EXE_RULE
                    a = self._raise(r.id, r.title, r.severity, r.tactics, r.techniques, f"{exe} in {key}", "",
                                    r.remediation, ev)  # fmt: skip
                    out += [a] if a else []
        else:
            net = ev.get("net") or {}
            dest = f"{net.get('daddr', net.get('unix_path', ''))}:{net.get('dport', '')}"
            if dest not in dests:
                if len(dests) < self.max_learned:
                    dests.add(dest)
                if not learning:
                    r = NET_RULE
                    a = self._raise(r.id, r.title, r.severity, r.tactics, r.techniques,
                                    f"{ev['proc']['comm']} to {dest} in {key}", "", r.remediation, ev)  # fmt: skip
                    out += [a] if a else []
        return out

    def _raise(self, rid: str, title: str, sev: str, tactics: list[str], techniques: list[str], message: str,
               description: str, remediation: str, ev: dict[str, Any]) -> Alert | None:  # fmt: skip
        proc, c = ev["proc"], ev.get("container") or {}
        target = (ev.get("fd") or {}).get("path") or str((ev.get("net") or {}).get("daddr", ""))
        key = "|".join((rid, c.get("id", "host"), proc.get("exe") or proc.get("comm", ""), target))
        now = ev.get("time_ns", 0) / 1e9
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.bursts.repeat(key, now, ts) is not None:
            return None
        a = Alert(
            rule=rid, title=title, severity=sev, tactics=tactics, techniques=techniques, source="sensor", time=ts,
            last_time=ts, user=str(proc.get("uid", "")), verb=ev["type"], resource=proc.get("exe", ""),
            namespace=c.get("namespace", ""), name=c.get("pod", "") or c.get("id", ""), message=message,
            description=description, remediation=remediation, dedup_key=key, evidence=[ev],
        )  # fmt: skip
        self.bursts.add(key, now, a)
        if self.keep_alerts:
            self.alerts.append(a)
        return a
