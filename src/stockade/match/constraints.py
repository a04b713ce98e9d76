"""Version constraint expressions as advisories write them: ">= 2.2.1", "~> 4.2.11, >= 4.2.11.1" (RubyGems),
">=1.0.0 <1.2.3 || >=2.0.0" (npm), ['>=2.0.0', '<2.0.99'] (Packagist branches), "*".

An expression is a disjunction ("||") of conjunctions (clauses separated by commas or spaces).
"""

from __future__ import annotations

import re

from stockade.match.versions import VersionError, compare

_CLAUSE = re.compile(r"(~>|>=|<=|!=|==|=|>|<|\^|~)?\s*v?([0-9A-Za-z*][0-9A-Za-z.+_*-]*)")


def _bump(version: str, keep: int) -> str:
    """The upper bound of a pessimistic or tilde range: bump segment ``keep - 1``, drop the rest."""
    parts = re.split(r"[.]", re.split(r"[-+]", version)[0])
    nums = [int(p) if p.isdigit() else 0 for p in parts][: max(keep, 1)]
    nums[-1] += 1
    return ".".join(str(n) for n in nums)


def clauses(expr: str) -> list[list[tuple[str, str]]]:
    """Parse into [[(op, version), ...], ...]; raise VersionError on nonsense."""
    out: list[list[tuple[str, str]]] = []
    for alt in expr.split("||"):
        conj: list[tuple[str, str]] = []
        text = alt.strip()
        if text in ("", "*", "x"):
            out.append([])  # everything
            continue
        for m in _CLAUSE.finditer(text.replace(",", " ")):
            op, ver = m.group(1) or "=", m.group(2)
            if ver in ("*", "x"):
                continue
            if op == "~>":
                segs = len(ver.split("."))
                conj += [(">=", ver), ("<", _bump(ver, segs - 1 if segs > 1 else 1))]
            elif op == "^":
                nums = [int(p) if p.isdigit() else 0 for p in ver.split("-")[0].split(".")] + [0, 0]
                keep = 1 if nums[0] else (2 if nums[1] else 3)
                conj += [(">=", ver), ("<", _bump(ver, keep))]
            elif op == "~":
                conj += [(">=", ver), ("<", _bump(ver, 2 if "." in ver else 1))]
            else:
                conj.append(("==" if op == "=" else op, ver))
        if not conj:
            raise VersionError(f"no version clause in {expr!r}")
        out.append(conj)
    return out


def satisfies(ecosystem: str, version: str, expr: str) -> bool:
    for conj in clauses(expr):
        ok = True
        for op, bound in conj:
            c = compare(ecosystem, version, bound)
            if not {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0, "==": c == 0, "!=": c != 0}[op]:
                ok = False
                break
        if ok:
            return True
    return False


def lowest_fix(ecosystem: str, version: str, safe: list[str]) -> str:
    """The smallest ">= X" of the safe expressions that is above ``version``: the version to upgrade to."""
    best = ""
    for expr in safe:
        for conj in clauses(expr):
            for op, bound in conj:
                if (
                    op in (">=", ">")
                    and compare(ecosystem, bound, version) > 0
                    and (not best or compare(ecosystem, bound, best) < 0)
                ):
                    best = bound
    return best
