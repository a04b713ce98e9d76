"""One AdmissionReview in, one decision out: posture rules and the image gate, by mode."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from stockade.admission.policy import AdmissionPolicy
from stockade.admission.scans import ScanStore, ScanStoreError
from stockade.kube import containers, pod_spec, to_resource
from stockade.model import Resource, StockadeError
from stockade.posture import (
    LATEST_K8S,
    OLDEST_K8S,
    Exceptions,
    PostureFinding,
    Rule,
    evaluate,
    load_rules,
    parse_version,
)

WARNING_MAX = 256  # the API server drops longer warnings
WARNINGS_TOTAL = 4096


class BadReview(StockadeError):
    """The body is not an AdmissionReview v1 request: answered with HTTP 400."""


# The image gate's findings, reported like rules so that modes, exceptions and logs treat them alike.
IMAGE_RULES = {
    "registry": Rule(
        id="STK-ADM-IMG-001",
        title="Image from a registry that is not allowed",
        severity="HIGH",
        scope="container",
        fail={},
        frameworks={"cis": ["5.5.1"], "nsa": ["Building secure container images"], "mitre": ["T1610"]},
        remediation="Mirror the image into an allowed registry and refer to it there.",
    ),
    "unscanned": Rule(
        id="STK-ADM-IMG-002",
        title="Image has not been scanned",
        severity="MEDIUM",
        scope="container",
        fail={},
        frameworks={"nsa": ["Building secure container images"]},
        remediation="Scan the image and record the result: stockade scan IMAGE --record STORE.",
    ),
    "vulnerable": Rule(
        id="STK-ADM-IMG-003",
        title="Image has fixable vulnerabilities at a blocked severity",
        severity="HIGH",
        scope="container",
        fail={},
        frameworks={"nsa": ["Upgrading and application security practices"], "mitre": ["T1190"]},
        remediation="Rebuild the image with the fixed package versions (stockade scan lists them) and redeploy.",
    ),
}


def parse_review(body: bytes, limit: int) -> dict[str, Any]:
    if len(body) > limit:
        raise BadReview(f"request body of {len(body)} bytes is over the {limit}-byte limit")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"request body is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionReview":
        raise BadReview("request body is not an AdmissionReview")
    if doc.get("apiVersion") != "admission.k8s.io/v1":
        raise BadReview(f"AdmissionReview apiVersion {doc.get('apiVersion')!r} is not admission.k8s.io/v1")
    req = doc.get("request")
    if not isinstance(req, dict) or not isinstance(req.get("uid"), str) or not req["uid"]:
        raise BadReview("AdmissionReview has no request.uid")
    if not isinstance(req.get("kind"), dict) or not isinstance(req.get("object", {}), dict | None):
        raise BadReview("AdmissionReview request lacks kind or has a malformed object")
    return doc


@dataclass(slots=True)
class Violation:
    rule: Rule
    mode: str
    container: str = ""
    detail: str = ""

    def message(self) -> str:
        where = f"container {self.container}: " if self.container else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.rule.id} {where}{self.rule.title}{extra}. Fix: {self.rule.remediation}"


@dataclass(slots=True)
class Decision:
    uid: str
    allowed: bool
    violations: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    message: str = ""
    code: int = 200
    exempt: str = ""

    def response(self) -> bytes:
        resp: dict[str, Any] = {"uid": self.uid, "allowed": self.allowed}
        if not self.allowed:
            resp["status"] = {"code": self.code, "reason": "Forbidden", "message": self.message}
        if self.warnings:
            resp["warnings"] = self.warnings
        if self.violations:
            resp["auditAnnotations"] = {
                "violations": ",".join(sorted({v.rule.id for v in self.violations})),
            }
        return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})


def _fit_warnings(items: list[str]) -> list[str]:
    out: list[str] = []
    total = 0
    for w in items:
        w = w if len(w) <= WARNING_MAX else w[: WARNING_MAX - 3] + "..."
        if total + len(w) > WARNINGS_TOTAL:
            out.append(f"... and {len(items) - len(out)} more stockade warnings")
            break
        out.append(w)
        total += len(w)
    return out


@dataclass(slots=True)
class Prepared:
    """A request past the posture rules, waiting for the image gate."""

    request: dict[str, Any]
    resource: Resource
    namespace: str
    added: set[str] | None
    violations: list[Violation]


class Reviewer:
    """Holds what every request needs, loaded once: rules, exceptions, the scan store, the violation log."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.policy = policy
        self.exceptions = Exceptions.load(policy.exceptions) if policy.exceptions else Exceptions()
        self.rules = load_rules(policy.extra_rules, self.exceptions.parameters)
        v = parse_version(policy.k8s_version, "kubernetesVersion")
        self.version = min(max(v, OLDEST_K8S), LATEST_K8S)
        g = policy.image_gate
        self.scans = ScanStore(g.store, ttl=g.cache_ttl) if g.store is not None and g.mode != "off" else None
        self._log_lock = threading.Lock()
        self._log = None
        if policy.violations_log is not None:
            try:
                policy.violations_log.parent.mkdir(parents=True, exist_ok=True)
                self._log = policy.violations_log.open("ab")
            except OSError as exc:
                raise StockadeError(
                    f"{policy.violations_log}: cannot open the violations log ({exc.strerror})"
                ) from None

    def close(self) -> None:
        if self._log is not None:
            self._log.close()

    def _image_violations(self, spec: dict[str, Any], namespace: str) -> list[Violation]:
        g = self.policy.image_gate
        out: list[Violation] = []
        for _kind, c in containers(spec):
            image = str(c.get("image") or "")
            name = str(c.get("name") or "")
            if not image:
                continue
            if g.allowed_registries and not any(image.startswith(p) for p in g.allowed_registries):
                out.append(Violation(IMAGE_RULES["registry"], g.mode, name, image))
            if self.scans is None:
                continue
            summary = self.scans.lookup(image)
            if summary is None:
                if g.require_scan:
                    out.append(Violation(IMAGE_RULES["unscanned"], g.mode, name, image))
                continue
            blocked = {s: summary.fixable.get(s, 0) for s in g.block_fixable if summary.fixable.get(s, 0)}
            if blocked:
                counts = ", ".join(f"{n} {s.lower()}" for s, n in blocked.items())
                out.append(Violation(IMAGE_RULES["vulnerable"], g.mode, name, f"{image}: {counts} fixable"))
        return out

    def prepare(self, doc: dict[str, Any]) -> Decision | Prepared:
        """The posture half of a review: CPU only, no I/O. A Decision when the request is exempt, else what the
        image gate and ``decide`` need, the posture violations included."""
        req = doc["request"]
        uid = req["uid"]
        op = req.get("operation", "")
        obj = req.get("object")
        if op not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
            return Decision(uid, True, exempt=f"operation {op or 'none'}")
        namespace = str(req.get("namespace") or (obj.get("metadata") or {}).get("namespace") or "")
        if namespace and self.policy.exempt(namespace):
            return Decision(uid, True, exempt=f"namespace {namespace}")
        sub = str(req.get("subResource") or "")
        added: set[str] | None = None  # pods/ephemeralcontainers: the containers this request adds
        if sub == "ephemeralcontainers":
            added = _ephemeral_added(obj, req.get("oldObject"))
            if not added:
                return Decision(uid, True, exempt="no ephemeral container added")
        elif sub:
            return Decision(uid, True, exempt=f"subresource {sub}")
        kind = (req.get("kind") or {}).get("kind") or obj.get("kind") or ""
        obj = {**obj, "kind": kind}
        res = to_resource(obj, f"admission {uid}")
        res.namespace = res.namespace or namespace
        if not res.name:
            res.name = str(req.get("name") or "")
        violations: list[Violation] = []
        for f in evaluate(self.rules, [res], cross=False, version=self.version):
            if added is not None and f.container not in added:  # the pod itself was reviewed when admitted
                continue
            if self.exceptions.reason(f):
                continue
            mode = self.policy.mode_for(f.rule.id, namespace)
            if mode != "off":
                violations.append(Violation(f.rule, mode, f.container))
        return Prepared(req, res, namespace, added, violations)

    @property
    def gated(self) -> bool:
        return self.policy.image_gate.mode != "off"

    def gate(self, prep: Prepared) -> list[Violation]:
        """The image gate's violations for a prepared request (reads the scan store: may raise or be slow)."""
        spec = pod_spec(prep.resource)
        if spec is None or not self.gated:
            return []
        out = []
        for v in self._image_violations(spec, prep.namespace):
            if prep.added is not None and v.container not in prep.added:
                continue
            if not self.exceptions.reason(PostureFinding(v.rule, prep.resource, v.container)):
                out.append(v)
        return out

    def decide(self, prep: Prepared, gate: list[Violation], user_agent: str = "", gate_error: str = "") -> Decision:
        """The decision from the posture violations and the gate's; with ``gate_error`` (the gate failed under
        failurePolicy Ignore) the posture verdict stands alone and a warning says the images were not checked."""
        req, res = prep.request, prep.resource
        violations = prep.violations + gate
        denied = [v for v in violations if v.mode == "deny"]
        decision = Decision(req["uid"], not denied, violations)
        notes = [v.message() for v in violations if v.mode in ("warn", "audit")]
        if gate_error:
            notes.insert(0, f"stockade could not check the images ({gate_error}); posture rules still applied")
        decision.warnings = _fit_warnings(notes)
        if denied:
            decision.code = 403
            decision.message = f"stockade denied {res.ref}: " + "; ".join(v.message() for v in denied)
        recorded = [v for v in violations if v.mode in ("audit", "deny")]
        if recorded and not req.get("dryRun") and self._log is not None:
            self._write(req, res.ref, prep.namespace, recorded, user_agent)
        return decision

    def review(self, doc: dict[str, Any], user_agent: str = "") -> Decision:
        """Posture, then the image gate, then the decision. A failing gate (its scan store unreadable) denies under
        failurePolicy Fail (ScanStoreError raised) and, under Ignore, leaves the posture verdict in force."""
        prep = self.prepare(doc)
        if isinstance(prep, Decision):
            return prep
        try:
            gate = self.gate(prep)
        except ScanStoreError as exc:
            if self.policy.failure_policy != "Ignore":
                raise
            return self.decide(prep, [], user_agent, gate_error=str(exc))
        return self.decide(prep, gate, user_agent)

    def _write(self, req: dict[str, Any], ref: str, namespace: str, vs: list[Violation], agent: str) -> None:
        user = req.get("userInfo") or {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lines = b"".join(
            orjson.dumps(
                {
                    "time": now,
                    "uid": req["uid"],
                    "operation": req.get("operation"),
                    "object": ref,
                    "namespace": namespace,
                    "user": user.get("username", ""),
                    "groups": user.get("groups", []),
                    "user_agent": agent,
                    "rule": v.rule.id,
                    "title": v.rule.title,
                    "severity": v.rule.severity,
                    "mode": v.mode,
                    "container": v.container,
                    "detail": v.detail,
                }
            )
            + b"\n"
            for v in vs
        )
        with self._log_lock:
            assert self._log is not None
            self._log.write(lines)
            self._log.flush()


def _ephemeral_added(obj: dict[str, Any], old: Any) -> set[str]:
    """The names of the ephemeral containers in ``obj`` that ``old`` (the pod before the request) lacks."""

    def names(pod: Any) -> set[str]:
        spec = pod.get("spec") if isinstance(pod, dict) else None
        items = spec.get("ephemeralContainers") if isinstance(spec, dict) else None
        return {str(c.get("name", "")) for c in items if isinstance(c, dict)} if isinstance(items, list) else set()

    return names(obj) - names(old)


def allowed_on_error(uid: str, policy: AdmissionPolicy, reason: str) -> Decision:
    """What an internal error answers, by the configured failure policy."""
    if policy.failure_policy == "Ignore":
        return Decision(uid, True, warnings=[f"stockade could not evaluate this request ({reason}); allowed"])
    return Decision(uid, False, message=f"stockade could not evaluate this request ({reason})", code=500)


__all__ = ["BadReview", "Decision", "Prepared", "Reviewer", "ScanStoreError", "allowed_on_error", "parse_review"]
