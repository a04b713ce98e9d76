"""Audit events from every shape they come in, as audit.k8s.io/v1 Events.

Shapes: a native Event (JSON lines, as the API server's log backend writes them), an EventList (the
webhook backend's batches), Azure's diagnostic-log records for AKS (``properties.log`` holds the event as a
string, possibly inside ``{"records": [...]}``), CloudWatch exports for EKS (``@message``/``message``
strings, ``logEvents``), and GKE's Cloud Audit Logs (``protoPayload`` with methodName and resourceName).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from stockade.kube import normalize, pod_template_of
from stockade.model import StockadeError

MAX_DOCUMENT = 16 * 1024 * 1024  # a pretty-printed JSON document spanning lines is read up to this size
# google.rpc.Code -> HTTP status, for GKE's status.code
_RPC_HTTP = {0: 200, 3: 400, 5: 404, 6: 409, 7: 403, 9: 400, 10: 409, 16: 401, 8: 429, 13: 500, 14: 503}


class AuditInputError(StockadeError):
    pass


# The two large parts of an event: parsed only when a rule that can match reads them (lazy parsing).
DEFERRABLE = frozenset({"requestObject", "responseObject"})
Wants = Callable[[str, str], "frozenset[str] | None"]  # (verb, _resource) -> deferred fields needed; None: all


class _Event(msgspec.Struct, gc=False):
    """The top-level fields of an audit.k8s.io/v1 Event (and v1beta1's timestamp and metadata), for the fast
    path of a native event line: every field is decoded except the request and response objects, which stay raw
    bytes until a rule needs them. None stands for an absent field, as it does for the rules."""

    kind: Any = None
    apiVersion: Any = None
    level: Any = None
    auditID: Any = None
    stage: Any = None
    requestURI: Any = None
    verb: Any = None
    user: Any = None
    impersonatedUser: Any = None
    sourceIPs: Any = None
    userAgent: Any = None
    objectRef: Any = None
    responseStatus: Any = None
    requestObject: msgspec.Raw = msgspec.Raw(b"")
    responseObject: msgspec.Raw = msgspec.Raw(b"")
    requestReceivedTimestamp: Any = None
    stageTimestamp: Any = None
    annotations: Any = None
    timestamp: Any = None
    metadata: Any = None


EVENT_FIELDS = frozenset(_Event.__struct_fields__)
_decode_event = msgspec.json.Decoder(_Event).decode
_as_dict = msgspec.structs.asdict
_decode_part = msgspec.json.Decoder().decode  # reads msgspec.Raw as it is (orjson needs a copy or a view)
READ_BUFFER = 1 << 20  # lines come from a 1 MiB buffer: the default 8 KiB made reading a fifth of the time


@dataclass(slots=True)
class Stats:
    events: int = 0
    malformed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def bad(self, reason: str) -> None:
        self.malformed += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


_image_ref = lru_cache(maxsize=4096)(normalize)  # clusters run the same images again and again
_POD_RESOURCES = frozenset({"pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs",
                            "cronjobs", "replicationcontrollers"})  # fmt: skip


def enrich(ev: dict[str, Any]) -> dict[str, Any]:
    """Derived fields the rules read: ``_resource`` (resource or resource/subresource, the rule index key)
    and, for pods and workloads, ``_containers`` (every container of the pod template)."""
    ref = ev.get("objectRef") or {}
    res = str(ref.get("resource") or "")
    sub = ref.get("subresource")
    ev["_resource"] = f"{res}/{sub}" if sub else res
    if res in _POD_RESOURCES and not sub:
        _enrich_pod(ev)
    return ev


def _enrich_pod(ev: dict[str, Any]) -> None:
    obj = ev.get("requestObject")
    tmpl = pod_template_of(obj, str(obj.get("kind") or ""), custom=False) if isinstance(obj, dict) else None
    if tmpl is None:
        return
    spec = tmpl["spec"]
    ev["_podspec"] = spec
    lists = [spec.get(k) for k in ("containers", "initContainers", "ephemeralContainers")]
    ctrs = [c for cs in lists if isinstance(cs, list) for c in cs if isinstance(c, dict)]
    for c in ctrs:  # the image with Docker's defaults made explicit, for registry rules
        c["_image_ref"] = _image_ref(str(c.get("image") or ""))
    ev["_containers"] = ctrs


def _fast_event(line: bytes, wants: Wants) -> dict[str, Any] | None:
    """A native Event line (as the API server's log backend writes them) without parsing what no rule that can
    match it reads: the request and response objects stay unparsed unless ``wants`` asks for them, and the line
    itself is kept as ``_raw`` (the alert's evidence). None for anything else, which the general path reads.
    A line that is not ASCII goes there too: msgspec does not check the UTF-8 of the parts it leaves raw, and the
    evidence must be valid JSON."""
    if not line.isascii():
        return None
    try:
        s = _decode_event(line)
    except msgspec.DecodeError:  # not JSON, not an object (ValidationError is a DecodeError)
        return None
    verb, ref = s.verb, s.objectRef
    if not ((s.kind == "Event" or (s.auditID is not None and verb is not None)) and isinstance(verb, str)
            and isinstance(s.user, dict) and (isinstance(ref, dict) or isinstance(s.requestURI, str))):  # fmt: skip
        return None  # the general path counts what is wrong with it
    if not isinstance(ref, dict):
        ref = {}
    res = str(ref.get("resource") or "")
    sub = ref.get("subresource")
    resource = f"{res}/{sub}" if sub else res
    need = wants(verb, resource)
    if need is None:  # a rule reads a field outside the Event schema: parse all of it
        return None
    ev = _as_dict(s)
    ev["objectRef"], ev["_resource"], ev["_raw"] = ref, resource, line
    if not need:
        ev["requestObject"] = ev["responseObject"] = None
        return ev
    raw = s.requestObject
    ev["requestObject"] = _decode_part(raw) if raw and "requestObject" in need else None
    raw = s.responseObject
    ev["responseObject"] = _decode_part(raw) if raw and "responseObject" in need else None
    if res in _POD_RESOURCES and not sub and "requestObject" in need:
        _enrich_pod(ev)
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
        except (KeyError, ValueError, TypeError, AttributeError):  # a field of the wrong shape
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


class _Batch(msgspec.Struct, gc=False):
    """A webhook body as an EventList, its items left raw for _fast_event."""

    kind: Any = None
    items: list[msgspec.Raw] | None = None
    auditID: Any = msgspec.UNSET  # with verb: an event, whatever its kind says (documents_to_events)
    verb: Any = msgspec.UNSET


_decode_batch = msgspec.json.Decoder(_Batch).decode


def parse_batch(body: bytes, stats: Stats, wants: Wants) -> Iterator[dict[str, Any]] | None:
    """The events of an EventList body (the API server's webhook backend), each item read as _fast_event reads
    a line; None when the body is not an EventList of items, for the caller to read it the general way."""
    if not body.isascii():
        return None
    try:
        batch = _decode_batch(body)
    except msgspec.DecodeError:  # not JSON, or items is not a list
        return None
    if batch.kind != "EventList" or batch.items is None or not (batch.auditID is msgspec.UNSET
                                                                 or batch.verb is msgspec.UNSET):  # fmt: skip
        return None
    return _batch_events(batch.items, stats, wants)


def _batch_events(items: list[msgspec.Raw], stats: Stats, wants: Wants) -> Iterator[dict[str, Any]]:
    for raw in items:
        item = bytes(raw)
        ev = _fast_event(item, wants)
        if ev is not None:
            stats.events += 1
            yield ev
            continue
        try:
            doc = orjson.loads(item)
        except orjson.JSONDecodeError:  # a number out of a double's range (the batch's syntax was checked)
            stats.bad("event is not JSON")
            continue
        yield from documents_to_events(doc, stats)


def parse_stream(fh: IO[bytes], stats: Stats, wants: Wants | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset after the document, event) for every event in a stream of JSON lines; a document
    pretty-printed over several lines is gathered (up to 16 MiB); a broken line, or one over 16 MiB, is counted
    and skipped.

    With ``wants`` (a detector's), native event lines are parsed lazily: see _fast_event."""
    offset = fh.tell() if fh.seekable() else 0
    pending = b""
    for line in iter(partial(fh.readline, MAX_DOCUMENT + 1), b""):  # bounded: a line without end is not read whole
        offset += len(line)
        if len(line) > MAX_DOCUMENT and line[-1:] != b"\n":
            while line and line[-1:] != b"\n":  # skip to the end of the line, a piece at a time
                line = fh.readline(MAX_DOCUMENT + 1)
                offset += len(line)
            stats.bad("line over 16 MiB")
            pending = b""
            continue
        if wants is not None and not pending:
            ev = _fast_event(line, wants)
            if ev is not None:
                stats.events += 1
                yield offset, ev
                continue
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


def read_file(path: Path, stats: Stats, state: FileState | None = None,
              wants: Wants | None = None) -> Iterator[tuple[int, dict[str, Any]]]:  # fmt: skip
    """Events of one audit log file, from where ``state`` left off unless the file was rotated (``wants``: see
    parse_stream)."""
    try:
        fh = path.open("rb", buffering=READ_BUFFER)
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        st = os.fstat(fh.fileno())
        if state is not None:
            if state.inode == st.st_ino and state.offset <= st.st_size:
                fh.seek(state.offset)
            else:
                state.inode, state.offset = st.st_ino, 0
        yield from parse_stream(fh, stats, wants)
