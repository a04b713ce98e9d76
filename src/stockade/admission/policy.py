"""The admission policy: which rules run in which mode (audit, warn, deny, off) where, and the image gate."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stockade.model import StockadeError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


MODES = ("off", "audit", "warn", "deny")


class PolicyError(StockadeError):
    pass


@dataclass(slots=True)
class ImageGate:
    mode: str = "off"  # off | audit | warn | deny
    allowed_registries: list[str] = field(default_factory=list)  # prefixes; empty: any registry
    require_scan: bool = True
    block_fixable: list[str] = field(default_factory=lambda: ["CRITICAL", "HIGH"])
    store: Path | None = None
    cache_ttl: float = 60.0


@dataclass(slots=True)
class AdmissionPolicy:
    default_mode: str = "audit"
    rules: dict[str, str] = field(default_factory=dict)  # rule id or glob -> mode; first match wins
    namespaces: dict[str, str] = field(default_factory=dict)  # namespace (glob) -> mode of every rule that is on
    exempt_namespaces: list[str] = field(default_factory=lambda: ["kube-system"])
    failure_policy: str = "Fail"  # what an internal error answers: Fail (deny) or Ignore (allow)
    k8s_version: str = "latest"
    max_body_bytes: int = 3 * 1024 * 1024  # the API server's own request limit
    timeout_seconds: float = 2.0  # kept below the webhook's timeoutSeconds
    violations_log: Path | None = None
    exceptions: Path | None = None
    extra_rules: list[Path] = field(default_factory=list)
    image_gate: ImageGate = field(default_factory=ImageGate)

    def mode_for(self, rule_id: str, namespace: str) -> str:
        """The rule's mode (first matching ``rules`` entry, else ``defaultMode``); a rule that is on takes the
        namespace's mode where ``namespaces`` names one (e.g. deny in prod-*, audit in dev-*)."""
        mode = self.default_mode
        for pattern, m in self.rules.items():
            if fnmatch.fnmatchcase(rule_id, pattern):
                mode = m
                break
        if mode == "off":
            return mode
        for pattern, m in self.namespaces.items():
            if fnmatch.fnmatchcase(namespace, pattern):
                return m
        return mode

    def exempt(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, p) for p in self.exempt_namespaces)

    @classmethod
    def load(cls, path: Path) -> AdmissionPolicy:
        try:
            doc = yaml.load(path.read_text(), Loader=_LOADER)
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(doc or {}, str(path), path.parent)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "policy", base: Path = Path(".")) -> AdmissionPolicy:
        if not isinstance(doc, dict):
            raise PolicyError(f"{where}: expected a mapping")
        known = {
            "defaultMode", "rules", "namespaces", "exemptNamespaces", "failurePolicy", "kubernetesVersion",
            "maxBodyBytes", "timeoutSeconds", "violationsLog", "exceptions", "extraRules", "imageGate",
        }  # fmt: skip
        unknown = set(doc) - known
        if unknown:
            raise PolicyError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")

        def mode(v: Any, what: str) -> str:
            if v not in MODES:
                raise PolicyError(f"{where}: {what}: mode must be one of {', '.join(MODES)}, not {v!r}")
            return str(v)

        def path(v: Any) -> Path | None:
            return None if v is None else (base / str(v) if not Path(str(v)).is_absolute() else Path(str(v)))

        p = cls()
        p.default_mode = mode(doc.get("defaultMode", p.default_mode), "defaultMode")
        p.rules = {str(k): mode(v, f"rules.{k}") for k, v in (doc.get("rules") or {}).items()}
        p.namespaces = {str(k): mode(v, f"namespaces.{k}") for k, v in (doc.get("namespaces") or {}).items()}
        p.exempt_namespaces = [str(x) for x in doc.get("exemptNamespaces", p.exempt_namespaces) or []]
        p.failure_policy = str(doc.get("failurePolicy", p.failure_policy))
        if p.failure_policy not in ("Fail", "Ignore"):
            raise PolicyError(f"{where}: failurePolicy must be Fail or Ignore")
        p.k8s_version = str(doc.get("kubernetesVersion", p.k8s_version))
        p.max_body_bytes = int(doc.get("maxBodyBytes", p.max_body_bytes))
        p.timeout_seconds = float(doc.get("timeoutSeconds", p.timeout_seconds))
        p.violations_log = path(doc.get("violationsLog"))
        p.exceptions = path(doc.get("exceptions"))
        p.extra_rules = [q for x in doc.get("extraRules") or [] if (q := path(x)) is not None]
        g = doc.get("imageGate") or {}
        if not isinstance(g, dict):
            raise PolicyError(f"{where}: imageGate must be a mapping")
        p.image_gate = ImageGate(
            mode=mode(g.get("mode", "off"), "imageGate.mode"),
            allowed_registries=[str(x) for x in g.get("allowedRegistries") or []],
            require_scan=bool(g.get("requireScan", True)),
            block_fixable=[str(x).upper() for x in g.get("blockFixable", ["CRITICAL", "HIGH"])],
            store=path(g.get("store")),
            cache_ttl=float(g.get("cacheTTLSeconds", 60.0)),
        )
        g_on = p.image_gate.mode != "off" and (p.image_gate.require_scan or p.image_gate.block_fixable)
        if g_on and p.image_gate.store is None:
            raise PolicyError(f"{where}: imageGate needs 'store' (the file 'stockade scan --record' writes)")
        return p
