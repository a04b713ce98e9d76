"""Silencing findings: a .stockadeignore file, OpenVEX and CycloneDX VEX documents.

.stockadeignore, one rule a line:
    CVE-2023-1234                       # any package
    CVE-2023-1234 openssl               # one package (name or purl prefix)
    GHSA-xxxx-yyyy exp:2027-01-31       # until a date
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from stockade.model import Finding, StockadeError


class SuppressionError(StockadeError):
    pass


@dataclass(frozen=True, slots=True)
class Rule:
    vuln: str
    package: str  # "" for any; a name or a purl prefix
    reason: str
    expires: date | None = None

    def applies(self, f: Finding, today: date) -> bool:
        if self.expires is not None and today > self.expires:
            return False
        if self.vuln != f.vuln_id and self.vuln not in f.aliases:
            return False
        if not self.package:
            return True
        purl = f.package.purl.split("?")[0]
        return self.package == f.package.name or purl.startswith(self.package)


def load_ignore_file(path: Path) -> list[Rule]:
    rules = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SuppressionError(f"{path}: cannot read ({exc.strerror})") from None
    for n, raw in enumerate(lines, 1):
        line, _, comment = raw.partition("#")
        words = line.split()
        if not words:
            continue
        expires = None
        rest = []
        for w in words[1:]:
            if w.startswith("exp:"):
                try:
                    expires = date.fromisoformat(w[4:])
                except ValueError:
                    raise SuppressionError(f"{path}:{n}: bad expiry date {w[4:]!r} (want YYYY-MM-DD)") from None
            else:
                rest.append(w)
        if len(rest) > 1:
            raise SuppressionError(f"{path}:{n}: expected 'ID [PACKAGE] [exp:YYYY-MM-DD]'")
        reason = comment.strip() or f"{path.name}:{n}"
        rules.append(Rule(words[0], rest[0] if rest else "", f"ignored by {path.name}: {reason}", expires))
    return rules


def load_vex(path: Path) -> list[Rule]:
    """not_affected (and fixed) statements of an OpenVEX or CycloneDX VEX document."""
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SuppressionError(f"{path}: not a readable JSON VEX document ({exc})") from None
    rules: list[Rule] = []
    if isinstance(doc, dict) and "statements" in doc:  # OpenVEX
        for st in doc.get("statements") or []:
            if st.get("status") not in ("not_affected", "fixed"):
                continue
            vuln = st.get("vulnerability") or {}
            vid = vuln.get("name") if isinstance(vuln, dict) else str(vuln)
            why = st.get("justification") or st.get("impact_statement") or st.get("status")
            products = st.get("products") or [{}]
            for prod in products:
                pid = prod.get("@id", "") if isinstance(prod, dict) else str(prod)
                rules.append(Rule(str(vid), _purl_base(pid), f"VEX {path.name}: {st.get('status')} ({why})"))
    elif isinstance(doc, dict) and doc.get("bomFormat") == "CycloneDX":
        refs = {c.get("bom-ref"): c.get("purl", "") for c in doc.get("components") or []}
        for v in doc.get("vulnerabilities") or []:
            analysis = v.get("analysis") or {}
            if analysis.get("state") not in ("not_affected", "false_positive", "resolved"):
                continue
            why = analysis.get("justification") or analysis.get("detail") or analysis.get("state")
            targets = [refs.get(a.get("ref"), a.get("ref", "")) for a in v.get("affects") or []] or [""]
            for t in targets:
                rules.append(Rule(v.get("id", ""), _purl_base(str(t)), f"VEX {path.name}: {analysis['state']} ({why})"))
    else:
        raise SuppressionError(f"{path}: neither OpenVEX nor CycloneDX VEX")
    return rules


def _purl_base(p: str) -> str:
    """A purl without qualifiers; anything else as given."""
    return re.sub(r"[?#].*$", "", p) if p.startswith("pkg:") else p


def apply(findings: list[Finding], rules: list[Rule], today: date | None = None) -> None:
    """Mark suppressed findings in place (they stay in the list, hidden unless asked for)."""
    today = today or date.today()
    for f in findings:
        for r in rules:
            if r.applies(f, today):
                f.suppressed = r.reason
                break
