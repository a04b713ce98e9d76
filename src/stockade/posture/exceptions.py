"""Exceptions: accepted risks, by rule, namespace, name, labels or container, with a reason and an expiry.

From a YAML file:
    exceptions:
      - rule: STK-PSS-R-003          # or "*"
        namespace: monitoring        # optional
        name: node-exporter          # optional
        labels: {app: node-exporter} # optional, all must match
        container: exporter          # optional: only this container
        reason: needs host metrics
        expires: 2027-06-30          # optional
or on the object: metadata.annotations["stockade.dev/exempt"] = "STK-PSS-R-003,STK-WL-002"

The same file sets rule parameters (allow-lists), by rule id:
    parameters:
      STK-NET-004: {allowed_ports: [8080, 8443]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from stockade.model import StockadeError
from stockade.posture.rule import PostureFinding

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


ANNOTATION = "stockade.dev/exempt"


@dataclass(frozen=True, slots=True)
class Exception_:
    rule: str
    reason: str
    namespace: str = ""
    name: str = ""
    container: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    expires: date | None = None

    def covers(self, f: PostureFinding, today: date) -> bool:
        r = f.resource
        return (
            (self.expires is None or today <= self.expires)
            and self.rule in ("*", f.rule.id)
            and self.namespace in ("", r.namespace)
            and self.name in ("", r.name)
            and self.container in ("", f.container)
            and all(r.labels.get(k) == v for k, v in self.labels)
        )


@dataclass(slots=True)
class Exceptions:
    items: list[Exception_] = field(default_factory=list)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule id -> parameter -> value

    @classmethod
    def load(cls, path: Path) -> Exceptions:
        try:
            doc: Any = yaml.load(path.read_text(), Loader=_LOADER)
        except (OSError, yaml.YAMLError) as exc:
            raise StockadeError(f"{path}: unreadable exceptions file ({exc})") from None
        if doc is not None and not isinstance(doc, dict):
            raise StockadeError(f"{path}: expected a mapping with an 'exceptions' list")
        items = []
        for i, e in enumerate((doc or {}).get("exceptions") or []):
            if not isinstance(e, dict) or not e.get("rule") or not e.get("reason"):
                raise StockadeError(f"{path}: exception {i} needs a rule and a reason")
            exp = e.get("expires")
            if exp is not None and not isinstance(exp, date):
                try:
                    exp = date.fromisoformat(str(exp))
                except ValueError:
                    raise StockadeError(f"{path}: exception {i}: bad expiry {exp!r}") from None
            items.append(
                Exception_(
                    rule=str(e["rule"]),
                    reason=str(e["reason"]),
                    namespace=str(e.get("namespace", "")),
                    name=str(e.get("name", "")),
                    container=str(e.get("container", "")),
                    labels=tuple(sorted((str(k), str(v)) for k, v in (e.get("labels") or {}).items())),
                    expires=exp,
                )
            )
        params = (doc or {}).get("parameters") or {}
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise StockadeError(f"{path}: 'parameters' maps rule ids to their parameters ({{STK-NET-004: "
                                "{allowed_ports: [443]}}})")  # fmt: skip
        return cls(items, {str(k): dict(v) for k, v in params.items()})

    def reason(self, f: PostureFinding, today: date | None = None) -> str:
        """Why the finding is excepted, or ""."""
        today = today or date.today()
        ann = f.resource.annotations.get(ANNOTATION, "")
        if ann and f.rule.id in {x.strip() for x in ann.split(",")}:
            return f"annotation {ANNOTATION}"
        for e in self.items:
            if e.covers(f, today):
                return e.reason
        return ""
