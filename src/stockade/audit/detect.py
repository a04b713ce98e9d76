"""Events through the indexed rules; a burst of the same alert (rule, user, namespace, object) within the
dedup window becomes one alert with a count."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from stockade.audit.events import DEFERRABLE, EVENT_FIELDS, Wants
from stockade.audit.profile import CONTROL_PLANE_PREFIXES, Profiles
from stockade.audit.rules import AuditRule, Index
from stockade.model import Alert
from stockade.rules import Bursts, render
from stockade.rules.lists import DataList, intel_signature

EVIDENCE = 3  # events kept per alert
# the alert of the learned profiles (audit/profile.py): a rule in code, as the sensor's baseline rules are
PROFILE_RULE = AuditRule(
    id="STK-AUD-100",
    title="Identity acted outside its learned profile",
    severity="MEDIUM",
    tactics=["Lateral Movement", "Credential Access"],
    techniques=["T1078.004", "T1528"],
    verbs=None,
    resources=None,
    condition=lambda _ev: True,
    description="A service account or person did something its learned profile never showed: an operation, a "
    "namespace, a source network or a client it had not used (a stolen token is used from elsewhere, for other "
    "things). Defender: abnormal Kubernetes service account operation.",
    remediation="Check with the identity's owner; if the token was stolen, revoke it (for a service account: "
    "delete its token Secrets or rotate the projected token's issuer key) and review what it did.",
)
REQUESTS = 100_000  # auditIDs remembered (two generations of this many) so that a request is judged once


def _epoch(ts: str) -> float:
    """Seconds since the epoch of an RFC 3339 time, to the second (the dedup window needs no more; 0 when it is
    not a time). Kubernetes writes UTC ("...Z"), whose seconds are cached: a busy API server writes hundreds of
    events in each."""
    if len(ts) > 19 and ts[-1] == "Z":
        return _utc_second(ts[:19])
    return _parse_time(ts)


@lru_cache(maxsize=4096)
def _utc_second(ts: str) -> float:
    return _parse_time(ts + "+00:00")


def _parse_time(ts: str) -> float:
    try:
        return datetime.fromisoformat(ts).timestamp() // 1
    except (ValueError, AttributeError):
        return 0.0


def _evidence(ev: dict[str, Any]) -> bytes:
    """The event as JSON bytes (Alert.to_dict parses them back): keeping the parsed events of every open alert
    alive made the garbage collector walk them again and again (a tenth of the engine's time). An event read
    lazily (audit/events.py _fast_event) brings its own line, whole."""
    raw = ev.get("_raw")
    if raw is not None:
        return bytes(raw).rstrip()  # one JSON document (an ASCII line: see _fast_event), its line end dropped
    return orjson.dumps({k: v for k, v in ev.items() if not k.startswith("_")})


def _strings(value: Any) -> list[str]:
    """A list field of an event as strings (anything but a list, as a crafted event may hold: none)."""
    return [str(x) for x in value] if isinstance(value, list) else []


def _indicators(rule: AuditRule, ev: dict[str, Any]) -> list[dict[str, str]]:
    """The entries of the rule's indicator list that the event matched, with the list's file."""
    if rule.indicator is None:
        return []
    field, lists = rule.indicator
    values = ev.get(field)
    out = []
    for v in values if isinstance(values, list) else [values]:
        for lst in lists:
            entry = lst.entry_for(v) if isinstance(lst, DataList) else (v if v in lst else None)
            if entry is not None:
                out.append({"list": getattr(lst, "name", "") or field, "entry": str(entry), "value": str(v),
                            "source": getattr(lst, "source", "")})  # fmt: skip
                break
    return out


MEMO_OPS = frozenset({"in_cidr", "domain_in", "in", "glob", "startswith", "eq", "icontains", "contains_any"})


def _single_field(rule: AuditRule) -> str | None:
    """The top-level field of a rule for every request whose whole condition is one test of that field (or of
    each item of that list field) with no exception: its answer depends on the value alone, which is memoised.
    None for any other rule."""
    if rule.verbs is not None or rule.resources is not None:
        return None
    t = rule.tree
    if not (isinstance(t, dict) and set(t) == {"field", "op", "value"} and t["op"] in MEMO_OPS):
        return None
    fld = str(t["field"]).removesuffix("[*]")
    # a field of the Event schema (decoded on the fast path too), not one of the request or response objects
    return fld if fld in EVENT_FIELDS and fld not in DEFERRABLE else None


def tune_gc() -> None:
    """For a long stream of events: freeze what is loaded (the compiled rules) and run the collector's young
    passes less often. Parsed events hold no cycles and go with their last reference; the default thresholds made
    the collector walk them thousands of times a second (about a tenth of the engine's time)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)


class Detector:
    """``keep_alerts``: keep every alert raised in ``alerts`` (a scan reports them at the end); a long-running
    detector (``audit serve``, ``--follow``) keeps only the open bursts, so its memory is bounded."""

    def __init__(self, rules: list[AuditRule], window_s: float = 600.0, max_open: int = 100_000,
                 keep_alerts: bool = True, profiles: Profiles | None = None) -> None:  # fmt: skip
        self._set_rules(rules)
        self.bursts = Bursts(window_s, max_open)
        self.keep_alerts = keep_alerts
        self.alerts: list[Alert] = []  # every alert, in the order raised (with keep_alerts)
        self.raised = 0  # alerts raised (kept or not)
        self.hits = 0  # (rule, event) matches: the alerts' counts added up
        self.events = 0
        self.unjudged = 0  # events not judged: RequestReceived stages, later stages of a request already judged
        self._judged: set[str] = set()  # auditIDs judged (this generation and the last)
        self._judged_old: set[str] = set()
        self._counts: dict[str, list[float]] = {}  # threshold rules: recent match times per identity
        self.kubeflow = False  # a namespace named kubeflow was seen (its ingress gateway is then Kubeflow's)
        self.profiles = profiles  # learned behaviour per identity (audit/profile.py), when asked for
        # for lazy parsing (audit/events.py parse_stream): what the rules that can match an event read of the
        # parts its parse may defer
        self.wants: Wants = self.index.wants

    def process(self, ev: dict[str, Any]) -> list[Alert]:
        """New alerts for this event (a repeat within the window only raises the existing alert's count).

        One request is judged once, on the first stage that carries its outcome: RequestReceived has no
        authorization decision yet and is skipped; a long-running request (watch, exec, attach, port-forward)
        is judged at ResponseStarted and its ResponseComplete skipped, as are repeats of an auditID."""
        self.events += 1
        stage = ev.get("stage")
        if stage == "RequestReceived":
            self.unjudged += 1
            return []
        res = ev["_resource"]
        verb = ev["verb"]
        if stage == "ResponseStarted" or verb == "watch" or "/" in res:  # (exec, attach, port-forward, log, proxy)
            aid = ev.get("auditID")
            if aid.__class__ is str:
                if self._seen(aid):  # its ResponseStarted was judged already
                    self.unjudged += 1
                    return []
                if stage == "ResponseStarted":  # judged now, its ResponseComplete skipped
                    self._remember(aid)
        if res == "namespaces" or res == "services":
            self._kubeflow(ev, res)
        learned = self._profile(ev) if self.profiles is not None else []
        group = self.index.group(verb, res)
        if group is None and not self._by_field:
            return learned
        fired: list[AuditRule] = group.fire(ev) if group is not None else []
        if self._by_field:
            extra = self._indicator_hits(ev)
            if extra:
                fired = [*fired, *extra]
        if not fired:
            return learned
        aid = ev.get("auditID")
        if aid.__class__ is str and stage != "ResponseStarted":  # the same event again (a batch sent twice) counts once
            judged = self._judged  # (_seen and _remember inlined: this runs for every matching event)
            if aid in judged or (self._judged_old and aid in self._judged_old):
                self.unjudged += 1
                return []
            judged.add(aid)
            if len(judged) >= REQUESTS:
                self._judged_old, self._judged = judged, set()
        self.hits += len(fired)
        ref = ev.get("objectRef") or {}
        user = ev.get("user") or {}
        ts = str(ev.get("stageTimestamp") or ev.get("requestReceivedTimestamp") or ev.get("timestamp") or "")
        # the dedup key: rule, user, namespace, resource, name
        who = f"|{user.get('username', '')}|{ref.get('namespace', '')}|{ev['_resource']}|{ref.get('name', '')}"
        now = _epoch(ts)
        new: list[Alert] = learned
        for rule in fired:
            key = rule.id + who
            if rule.threshold is not None:
                key = f"{rule.id}|{user.get('username', '')}"
                hit = self.bursts.open.get(key)
                counting = hit is not None and abs(now - hit[0]) <= self.bursts.window
                if not counting and not self._reached(key, rule.threshold, now):
                    continue
            alert = self._raise(rule, ev, key, now, ts, ref, user)
            if alert is not None:
                new.append(alert)
        return new

    def reload(self, rules: list[AuditRule]) -> None:
        """Use these rules from now on (open alerts, counts and profiles stay)."""
        self._set_rules(rules)
        self.wants = self.index.wants

    def _set_rules(self, rules: list[AuditRule]) -> None:
        """Index the rules by (verb, resource); the rules for every request that only test one field (Tor exits,
        malicious addresses, attack tools' user agents) are answered by one memoised lookup per value instead: an
        API server's clients are few, so their answers are remembered (bounded)."""
        self._by_field: dict[str, list[AuditRule]] = {}
        rest = []
        for r in rules:
            fld = _single_field(r)
            if fld is None:
                rest.append(r)
            else:
                self._by_field.setdefault(fld, []).append(r)
        self.index = Index(rest)
        self._memo: dict[tuple[str, Any], tuple[AuditRule, ...]] = {}

    def _indicator_hits(self, ev: dict[str, Any]) -> list[AuditRule]:
        hits: list[AuditRule] = []
        memo = self._memo
        for fld, rules in self._by_field.items():
            values = ev.get(fld)
            for v in values if values.__class__ is list else (values,):
                if v.__class__ is not str:
                    continue
                got = memo.get((fld, v))
                if got is None:
                    probe = {fld: [v] if values.__class__ is list else v}
                    got = tuple(r for r in rules if r.condition(probe))
                    if len(memo) >= 65_536:
                        memo.clear()
                    memo[(fld, v)] = got
                for r in got:
                    if r not in hits:
                        hits.append(r)
        return hits

    def _profile(self, ev: dict[str, Any]) -> list[Alert]:
        """Learn from an allowed request of an identity that is not the control plane's; an alert when it falls
        outside the identity's learned profile (one per identity and new value, counted while it repeats)."""
        assert self.profiles is not None
        user = ev.get("user") or {}
        name = str(user.get("username") or "")
        ann = ev.get("annotations") or {}
        code = (ev.get("responseStatus") or {}).get("code")
        if (not name or name.startswith(CONTROL_PLANE_PREFIXES) or name == "system:anonymous"
                or ann.get("authorization.k8s.io/decision") == "forbid"
                or (isinstance(code, int) and code >= 400)):  # fmt: skip
            return []
        ts = str(ev.get("stageTimestamp") or ev.get("requestReceivedTimestamp") or ev.get("timestamp") or "")
        now = _epoch(ts) or time.time()
        anomaly = self.profiles.observe(name, ev, now)
        if anomaly is None:
            return []
        what = ", ".join(f"{d} {v}" for d, v in sorted(anomaly.new.items()))
        key = f"{PROFILE_RULE.id}|{name}|{what}"
        ref = ev.get("objectRef") or {}
        alert = self._raise(PROFILE_RULE, ev, key, now, ts, ref, user)
        if alert is None:
            return []
        op = f"{ev.get('verb', '')} {ev.get('_resource', '')}"
        alert.message = f"{name} {op}: never seen before for this identity ({what})"
        alert.evidence.append(orjson.dumps({"new": anomaly.new, "profile": anomaly.profile}))
        return [alert]

    def _kubeflow(self, ev: dict[str, Any], res: str) -> None:
        """Whether the log has shown that the cluster runs Kubeflow (its namespace, or a Service in it): its
        Istio ingress gateway is then Kubeflow's front door (``_kubeflow`` on Service events)."""
        ref = ev.get("objectRef") or {}
        if ref.get("namespace") == "kubeflow" or (res == "namespaces" and ref.get("name") == "kubeflow"):
            self.kubeflow = True
        if res == "services":
            ev["_kubeflow"] = self.kubeflow

    def _seen(self, aid: str) -> bool:
        return aid in self._judged or (bool(self._judged_old) and aid in self._judged_old)

    def _remember(self, aid: str) -> None:
        """Remember a judged request's auditID: the requests that matched a rule and the long-running ones (the
        others cannot change a count), in two generations of REQUESTS (bounded memory)."""
        self._judged.add(aid)
        if len(self._judged) >= REQUESTS:
            self._judged_old, self._judged = self._judged, set()

    def _reached(self, key: str, threshold: tuple[int, float], now: float) -> bool:
        """Count a threshold rule's match for one identity; True when ``count`` fell within ``seconds``."""
        count, seconds = threshold
        times = [t for t in self._counts.get(key, ()) if now - t < seconds]
        times.append(now)
        if len(times) >= count:
            self._counts.pop(key, None)
            return True
        if len(self._counts) >= self.bursts.max_open and key not in self._counts:
            self._counts.clear()  # bounded: a flood of identities forgets the oldest counts
        self._counts[key] = times
        return False

    def _raise(self, rule: AuditRule, ev: dict[str, Any], key: str, now: float, ts: str, ref: dict[str, Any],
               user: dict[str, Any]) -> Alert | None:  # fmt: skip
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
            groups=_strings(user.get("groups")),
            source_ips=_strings(ev.get("sourceIPs")),
            user_agent=str(ev.get("userAgent") or ""),  # None: absent (a lazily parsed event has every field)
            verb=str(ev.get("verb", "")),
            resource=ev["_resource"],
            namespace=str(ref.get("namespace", "")),
            name=str(ref.get("name", "")),
            message=render(rule.output, ev) if rule.output else rule.title,
            description=rule.description,
            remediation=rule.remediation,
            dedup_key=key,
            evidence=[_evidence(ev)],
            indicators=_indicators(rule, ev),
        )
        if alert.indicators:
            alert.message += " (" + "; ".join(f"{i['value']} is on {i['list']}" for i in alert.indicators) + ")"
        self.bursts.add(key, now, alert)
        self.raised += 1
        if self.keep_alerts:
            self.alerts.append(alert)
        return alert


class IntelReloader:
    """For detectors that run for months (`audit serve`, `audit scan --follow`): reload the rules when `stockade
    intel update` has rewritten the indicator store, looking at most every ``every_s`` seconds."""

    def __init__(self, detector: Detector, load_rules: Callable[[], list[AuditRule]], every_s: float = 60.0) -> None:
        self.detector, self.load_rules, self.every_s = detector, load_rules, every_s
        self.signature = intel_signature()
        self.last = time.monotonic()
        self.reloads = 0

    def check(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return False
        self.last = now
        sig = intel_signature()
        if sig == self.signature:
            return False
        self.detector.reload(self.load_rules())
        self.signature = sig
        self.reloads += 1
        return True
