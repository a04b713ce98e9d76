"""Shared data types of every stockade engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

OS_ECOSYSTEMS = frozenset({"deb", "apk", "rpm"})  # packages of the distribution, matched per OS release


class StockadeError(Exception):
    """An error with a message meant for the user: it names the input at fault."""


@dataclass(frozen=True, slots=True)
class OSInfo:
    """The operating system of an image, from os-release and friends."""

    family: str  # debian, ubuntu, alpine, redhat, rocky, almalinux, amazon, cbl-mariner, sles, ...
    name: str  # the release: "12", "3.11.5", "9.3"
    pretty_name: str = ""
    id_like: tuple[str, ...] = ()
    distroless: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Package:
    """One installed package, OS or language, with where it was found."""

    name: str
    version: str
    ecosystem: str  # deb, apk, rpm, pypi, npm, maven, golang, nuget, cargo, gem, composer
    purl: str = ""
    source_name: str = ""  # OS packages: the source package the binary was built from
    source_version: str = ""
    epoch: int | None = None
    release: str = ""
    arch: str = ""
    licenses: list[str] = field(default_factory=list)
    location: str = ""  # the file the package was read from, without a leading slash
    layer_digest: str = ""  # diff_id of the layer that introduced it
    layer_created_by: str = ""  # the history entry of that layer
    dev: bool = False  # a development-only dependency in a lock file
    # the OS package whose files these are (python3-urllib3 for Debian's urllib3): matched through its advisories
    owner: str = ""
    properties: dict[str, str] = field(default_factory=dict)  # what a cataloger could not decide, said plainly

    def key(self) -> tuple[str, str, str, str]:
        """Identity used to de-duplicate and to track packages across layers."""
        return (self.ecosystem, self.name, self.version, self.location)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v not in ("", None, [], False, {})}


@dataclass(slots=True)
class LayerInfo:
    """A layer of an image as stored (digest) and as applied (diff_id)."""

    index: int
    digest: str
    diff_id: str
    media_type: str
    size: int = -1
    created_by: str = ""


@dataclass(slots=True)
class Inventory:
    """Everything stockade learned about one image."""

    source: str
    image_id: str = ""
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    architecture: str = ""
    os: OSInfo | None = None
    layers: list[LayerInfo] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "image_id": self.image_id,
            "repo_tags": self.repo_tags,
            "repo_digests": self.repo_digests,
            "architecture": self.architecture,
            "os": self.os.to_dict() if self.os else None,
            "layers": [asdict(layer) for layer in self.layers],
            "packages": [p.to_dict() for p in self.packages],
            "warnings": self.warnings,
        }


@dataclass(slots=True)
class Finding:
    """One vulnerability of one package of an image."""

    vuln_id: str
    package: Package
    installed_version: str
    fixed_version: str  # "" when no fix is published
    severity: str  # CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN
    aliases: list[str] = field(default_factory=list)
    title: str = ""
    cvss_score: float | None = None
    cvss_vector: str = ""
    kev: bool = False
    epss: float | None = None
    source: str = ""
    references: list[str] = field(default_factory=list)
    remediation: str = ""
    suppressed: str = ""  # why it is silenced (ignore file, VEX), or ""

    @property
    def fixed(self) -> bool:
        return bool(self.fixed_version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.vuln_id,
            "aliases": self.aliases,
            "package": self.package.name,
            "ecosystem": self.package.ecosystem,
            "purl": self.package.purl,
            "installed_version": self.installed_version,
            "fixed_version": self.fixed_version,
            "severity": self.severity,
            "title": self.title,
            "cvss_score": self.cvss_score,
            "cvss_vector": self.cvss_vector,
            "kev": self.kev,
            "epss": self.epss,
            "source": self.source,
            "location": self.package.location,
            "layer_digest": self.package.layer_digest,
            "layer_created_by": self.package.layer_created_by,
            "remediation": self.remediation,
            "references": self.references,
            **({"suppressed": self.suppressed} if self.suppressed else {}),
        }


@dataclass(slots=True)
class Alert:
    """A detection from the control plane (audit) or a node (sensor): who did what, when, and the evidence."""

    rule: str
    title: str
    severity: str  # CRITICAL, HIGH, MEDIUM, LOW, INFO
    tactics: list[str]
    techniques: list[str]
    source: str  # "k8s_audit", "sensor"
    time: str  # first event's time (RFC 3339)
    last_time: str
    user: str = ""
    groups: list[str] = field(default_factory=list)
    source_ips: list[str] = field(default_factory=list)
    user_agent: str = ""
    verb: str = ""
    resource: str = ""
    namespace: str = ""
    name: str = ""
    message: str = ""
    description: str = ""
    remediation: str = ""
    count: int = 1
    dedup_key: str = ""
    evidence: list[Any] = field(default_factory=list)  # the first events (at most a few): dicts, or JSON bytes
    # threat-intelligence entries that matched: {"list", "entry", "value", "source"} (the list's file)
    indicators: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (evidence kept as serialized JSON is parsed back)."""
        d = {f: getattr(self, f) for f in self.__slots__}
        d["evidence"] = [_load_evidence(e) if isinstance(e, bytes) else e for e in self.evidence]
        return d

    def to_json(self) -> bytes:
        """to_dict as one line of JSON, with evidence kept as serialized JSON written as it is (not parsed
        and serialized again: that was half the cost of streaming an alert)."""
        d = {f: getattr(self, f) for f in self.__slots__}
        d["evidence"] = [orjson.Fragment(e) if isinstance(e, bytes) else e for e in self.evidence]
        return orjson.dumps(d)


def _load_evidence(e: bytes) -> Any:
    """Evidence bytes parsed back; as text when they do not parse: an audit event's line is kept as it came,
    and a part no rule read was only checked for JSON syntax (a number such as 1e999, out of a double's range,
    passes that check)."""
    try:
        return orjson.loads(e)
    except orjson.JSONDecodeError:
        return e.decode("utf-8", "replace")


@dataclass(slots=True)
class Resource:
    kind: str
    api_version: str
    name: str
    namespace: str
    raw: dict[str, Any]
    source: str = ""  # file, and document index
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name}"


@dataclass(slots=True)
class ScanResult:
    """One image scanned: what it holds, what is vulnerable, and the database that said so."""

    image: str  # the reference or path scanned
    inventory: Inventory
    findings: list[Finding]
    db_path: str = ""
    db_built_at: str = ""
