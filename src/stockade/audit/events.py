"""Audit events from every shape they come in, as audit.k8s.io/v1 Events.

Shapes: a native Event (JSON lines, as the API server's log backend writes them), an EventList (the
webhook backend's batches), Azure's diagnostic-log records for AKS (``properties.log`` holds the event as a
string, possibly inside ``{"records": [...]}``), CloudWatch exports for EKS (``@message``/``message``
strings, ``logEvents``), and GKE's Cloud Audit Logs (``protoPayload`` with methodName and resourceName).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from stockade.admission.scans import normalize
from stockade.model import StockadeError
from stockade.posture.resources import pod_template_of

MAX_DOCUMENT = 16 * 1024 * 1024  # a pretty-printed JSON document spanning lines is read up to this size
# google.rpc.Code -> HTTP status, for GKE's status.code
_RPC_HTTP = {0: 200, 3: 400, 5: 404, 6: 409, 7: 403, 9: 400, 10: 409, 16: 401, 8: 429, 13: 500, 14: 503}


class AuditInputError(StockadeError):
    pass


@dataclass(slots=True)
class Stats:
    events: int = 0
    malformed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def bad(self, reason: str) -> None:
        self.malformed += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def enrich(ev: dict[str, Any]) -> dict[str, Any]:
    """Derived fields the rules read: ``_resource`` (resource or resource/subresource, the rule index key)
    and, for pods and workloads, ``_containers`` (every container of the pod template)."""
    ref = ev.get("objectRef") or {}
    res = str(ref.get("resource") or "")
    sub = ref.get("subresource")
    ev["_resource"] = f"{res}/{sub}" if sub else res
    if res in ("pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs",
               "replicationcontrollers") and not sub:  # fmt: skip
        obj = ev.get("requestObject")
        tmpl = pod_template_of(obj, str(obj.get("kind") or ""), custom=False) if isinstance(obj, dict) else None
        if tmpl is not None:
            spec = tmpl["spec"]
            ev["_podspec"] = spec
            ctrs = [
                c
                for k in ("containers", "initContainers", "ephemeralContainers")
                for c in (spec.get(k) or [])
                if isinstance(c, dict)
            ]
            for c in ctrs:  # the image with Docker's defaults made explicit, for registry rules
                c["_image_ref"] = normalize(str(c.get("image") or ""))
            ev["_containers"] = ctrs
    return ev


def _from_gke(doc: dict[str, Any]) -> dict[str, Any]:
    pp = doc["protoPayload"]
    method = str(pp.get("methodName") or "")
    parts = method.split(".")
    verb = parts[-1] if parts else ""
    # resourceName: core/v1/namespaces/NS/pods/NAME[/SUB] or apps/v1/namespaces/NS/deployments/NAME
    rn = str(pp.get("resourceName") or "").split("/")
    group = "" if rn and rn[0] == "core" else (rn[0] if rn else "")
    version = rn[1] if len(rn) > 1 else ""
    rest = rn[2:]
    ns = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        ns, rest = rest[1], rest[2:]
    ref: dict[str, Any] = {"resource": rest[0] if rest else "", "apiGroup": group, "apiVersion": version}
    if ns:
        ref["namespace"] = ns
    if len(rest) > 1:
        ref["name"] = rest[1]
    if len(rest) > 2:
        ref["subresource"] = rest[2]
    auth = pp.get("authenticationInfo") or {}
    meta = pp.get("requestMetadata") or {}
    code = (pp.get("status") or {}).get("code", 0)
    req = pp.get("request")
    if isinstance(req, dict):
        req = {k: v for k, v in req.items() if k != "@type"}
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": doc.get("insertId", ""),
        "stage": "ResponseComplete",
        "verb": verb,
        "requestURI": "/" + str(pp.get("resourceName") or ""),
        "user": {"username": auth.get("principalEmail", ""), "groups": []},
        "sourceIPs": [meta["callerIp"]] if meta.get("callerIp") else [],
        "userAgent": meta.get("callerSuppliedUserAgent", ""),
        "objectRef": ref,
        "responseStatus": {"code": _RPC_HTTP.get(int(code), 500) if isinstance(code, int) else 500},
        "stageTimestamp": doc.get("timestamp") or doc.get("receiveTimestamp", ""),
        "requestReceivedTimestamp": doc.get("timestamp", ""),
        "annotations": {"cloud.google.com/cluster": ((doc.get("resource") or {}).get("labels") or {}).get(
            "cluster_name", ""
        )},
    }  # fmt: skip
    grants = [a.get("granted") for a in pp.get("authorizationInfo") or [] if isinstance(a, dict)]
    if grants:
        ev["annotations"]["authorization.k8s.io/decision"] = "allow" if all(grants) else "forbid"
    if req is not None:
        ev["requestObject"] = req
    return ev


def documents_to_events(doc: Any, stats: Stats) -> Iterator[dict[str, Any]]:
    """One parsed JSON document -> the events in it (any shape); what is not an event is counted."""
    if not isinstance(doc, dict):
        stats.bad("not a JSON object")
        return
    kind = doc.get("kind")
    if kind == "Event" or ("auditID" in doc and "verb" in doc):
        if not isinstance(doc.get("verb"), str) or not isinstance(doc.get("user"), dict):
            stats.bad("event without verb or user")
            return
        if not isinstance(doc.get("objectRef"), dict):
            if not isinstance(doc.get("requestURI"), str):
                stats.bad("event without objectRef or requestURI")
                return
            doc["objectRef"] = {}
        stats.events += 1
        yield enrich(doc)
    elif kind == "EventList" and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from documents_to_events(item, stats)
    elif isinstance(doc.get("records"), list):  # Azure diagnostic logs export (AKS)
        for rec in doc["records"]:
            yield from documents_to_events(rec, stats)
    elif isinstance(doc.get("properties"), dict) and "log" in doc["properties"]:  # one AKS record
        yield from _embedded(doc["properties"]["log"], stats)
    elif isinstance(doc.get("protoPayload"), dict):  # GKE Cloud Audit Logs
        try:
            ev = _from_gke(doc)
        except (KeyError, ValueError, TypeError):
            stats.bad("malformed GKE audit log entry")
            return
        stats.events += 1
        yield enrich(ev)
    elif isinstance(doc.get("logEvents"), list):  # CloudWatch subscription batch (EKS)
        for le in doc["logEvents"]:
            yield from _embedded(le.get("message") if isinstance(le, dict) else None, stats)
    elif "@message" in doc or "message" in doc:  # CloudWatch export line (EKS)
        yield from _embedded(doc.get("@message", doc.get("message")), stats)
    else:
        stats.bad("data not recognized as a Kubernetes audit event")


def _embedded(value: Any, stats: Stats) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield from documents_to_events(value, stats)
        return
    if not isinstance(value, str | bytes):
        stats.bad("log envelope without an event")
        return
    try:
        inner = orjson.loads(value)
    except orjson.JSONDecodeError:
        stats.bad("log envelope holds no JSON")
        return
    yield from documents_to_events(inner, stats)


def parse_stream(fh: IO[bytes], stats: Stats) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset after the document, event) for every event in a stream of JSON lines; a document
    pretty-printed over several lines is gathered (up to 16 MiB); a broken line is counted and skipped."""
    offset = fh.tell() if fh.seekable() else 0
    pending = b""
    for line in fh:
        offset += len(line)
        if pending:
            pending += line
            if len(pending) > MAX_DOCUMENT:
                stats.bad("JSON document over 16 MiB")
                pending = b""
                continue
            try:
                doc = orjson.loads(pending)
            except orjson.JSONDecodeError:
                continue
            pending = b""
        else:
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                if line.lstrip()[:1] in (b"{", b"[") and not line.rstrip().endswith((b"}", b"]")):
                    pending = line  # the start of a document over several lines
                else:
                    stats.bad("line is not JSON")
                continue
        for ev in documents_to_events(doc, stats):
            yield offset, ev
    if pending:
        stats.bad("truncated JSON document at the end")


@dataclass(slots=True)
class FileState:
    """Where reading stopped: resumes after a restart, starts over when the file was rotated."""

    path: Path
    inode: int = 0
    offset: int = 0

    @classmethod
    def load(cls, state: Path, path: Path) -> FileState:
        try:
            d = orjson.loads(state.read_bytes())
            if d.get("path") == str(path):
                return cls(path, int(d.get("inode", 0)), int(d.get("offset", 0)))
        except (OSError, orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            pass
        return cls(path)

    def save(self, state: Path) -> None:
        tmp = state.with_name(state.name + ".tmp")
        tmp.write_bytes(orjson.dumps({"path": str(self.path), "inode": self.inode, "offset": self.offset}))
        os.replace(tmp, state)


def read_file(path: Path, stats: Stats, state: FileState | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Events of one audit log file, from where ``state`` left off unless the file was rotated."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        st = os.fstat(fh.fileno())
        if state is not None:
            if state.inode == st.st_ino and state.offset <= st.st_size:
                fh.seek(state.offset)
            else:
                state.inode, state.offset = st.st_ino, 0
        yield from parse_stream(fh, stats)
