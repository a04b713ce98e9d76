"""`stockade node-check`: CIS Kubernetes Benchmark sections 1-4 on a node's real processes and files.

Components are found by their process in /proc (kube-apiserver, kube-controller-manager, kube-scheduler,
etcd, kubelet, also as hyperkube or k3s/rke2 style "kubelet" names). A kubelet setting comes from its
command-line flag when there is one, else from its --config file, else the default: the order the kubelet
itself applies, so a flag that overrides an insecure config file passes (kube-bench reads the file).
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import yaml

from stockade.model import StockadeError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


BINARIES = {
    "kube-apiserver": "apiserver",
    "kube-controller-manager": "controllermanager",
    "kube-scheduler": "scheduler",
    "etcd": "etcd",
    "kubelet": "kubelet",
    "kube-proxy": "proxy",
}


class NodeCheckError(StockadeError):
    pass


@dataclass(slots=True)
class Result:
    id: str
    title: str
    status: str  # PASS, FAIL, SKIP (component not on this node), INFO (nothing to check), MANUAL
    detail: str
    remediation: str

    def to_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "remediation": self.remediation,
        }


def load_checks(path: Path | None = None) -> list[dict[str, Any]]:
    text = (
        path.read_text() if path else (importlib_resources.files("stockade.posture.node") / "cis-node.yaml").read_text()
    )
    try:
        doc = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise NodeCheckError(f"{path or 'cis-node.yaml'}: malformed YAML ({str(exc).splitlines()[0]})") from None
    checks = (doc or {}).get("checks")
    if not isinstance(checks, list):
        raise NodeCheckError(f"{path or 'cis-node.yaml'}: expected a 'checks' list")
    for c in checks:
        if not isinstance(c, dict) or not {"id", "component", "type", "title", "remediation"} <= set(c):
            raise NodeCheckError(
                f"{path or 'cis-node.yaml'}: check {c!r} lacks id, component, type, title or remediation"
            )
    return checks


def parse_flags(argv: list[str]) -> dict[str, str]:
    """--key=value, --key value and bare --flag (true)."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            key, eq, value = a[2:].partition("=")
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else ""
                if nxt and not nxt.startswith("-"):
                    value, i = nxt, i + 1
                else:
                    value = "true"
            flags[key] = value
        i += 1
    return flags


def processes(proc: Path) -> dict[str, dict[str, str]]:
    """Component -> flags of its process, from /proc/<pid>/cmdline."""
    found: dict[str, dict[str, str]] = {}
    try:
        entries = [e for e in os.scandir(proc) if e.name.isdigit()]
    except OSError as exc:
        raise NodeCheckError(f"{proc}: cannot list processes ({exc.strerror})") from None
    for e in entries:
        try:
            raw = Path(e.path, "cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\x00") if a]
        if not argv:
            continue
        name = os.path.basename(argv[0])
        args = argv[1:]
        if name == "hyperkube" and args:
            name, args = args[0], args[1:]
        comp = BINARIES.get(name)
        if comp and comp not in found:
            found[comp] = parse_flags(args)
    return found


def _dig(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _expect(op: str, actual: str | None, want: Any) -> bool:
    if op == "present":
        return actual is not None
    if op == "absent":
        return actual is None
    if actual is None:
        return False
    items = [x.strip() for x in actual.split(",")]
    if op == "min":  # a number at least ``want`` ("30", or a duration's leading number is not accepted)
        try:
            return float(actual) >= float(want)
        except ValueError:
            return False
    return {
        "eq": actual == str(want),
        "ne": actual != str(want),
        "in": actual in [str(w) for w in want or []],
        "not_in": actual not in [str(w) for w in want or []],
        "contains": str(want) in items,
        "not_contains": str(want) not in items,
    }[op]


def run(root: Path = Path("/"), proc: Path = Path("/proc"), checks: list[dict[str, Any]] | None = None) -> list[Result]:
    checks = checks or load_checks()
    comps = processes(proc)
    kubelet_cfg: dict[str, Any] = {}
    if "kubelet" in comps and comps["kubelet"].get("config"):
        cfg_path = root / comps["kubelet"]["config"].lstrip("/")
        try:
            kubelet_cfg = yaml.load(cfg_path.read_text(), Loader=_LOADER) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise NodeCheckError(f"{cfg_path}: unreadable kubelet config ({exc})") from None
    out = []
    for c in checks:
        comp = c["component"]
        base = (c["id"], c["title"])
        if comp not in comps and c["type"] in ("flag", "manual"):
            out.append(Result(*base, "SKIP", f"no {comp} process on this node", c["remediation"]))
            continue
        if c["type"] == "manual":
            out.append(Result(*base, "MANUAL", str(c.get("audit", "review by hand")), c["remediation"]))
            continue
        if c["type"] == "flag":
            ok, details = True, list[str]()
            for t in c.get("all") or [c]:
                good, detail = _flag_test(comps[comp], kubelet_cfg, t)
                ok, details = ok and good, [*details, detail]
            out.append(Result(*base, "PASS" if ok else "FAIL", "; ".join(details), c["remediation"]))
        else:
            pattern = str(root / c["path"].lstrip("/"))
            matches = [p for p in _glob(pattern)]
            if not matches:
                status = "SKIP" if comp not in comps else "INFO"
                out.append(Result(*base, status, f"{c['path']}: not found", c["remediation"]))
                continue
            bad = []
            for p in matches:
                st = os.lstat(p)
                if c["type"] == "perm":
                    allowed = int(str(c["max"]), 8)
                    mode = stat.S_IMODE(st.st_mode)
                    if mode & ~allowed:
                        bad.append(f"{p.removeprefix(str(root).rstrip('/'))} is {mode:o}")
                else:
                    owner = f"{_user(st.st_uid)}:{_group(st.st_gid)}"
                    if owner != c["owner"]:
                        bad.append(f"{p.removeprefix(str(root).rstrip('/'))} is owned by {owner}")
            out.append(
                Result(
                    *base, "FAIL" if bad else "PASS", "; ".join(bad) or f"{len(matches)} file(s) ok", c["remediation"]
                )
            )
    return out


def _flag_test(flags: dict[str, str], kubelet_cfg: dict[str, Any], t: dict[str, Any]) -> tuple[bool, str]:
    """One flag against its expectation: the flag, else the kubelet config key, else the default."""
    source, actual = "default", t.get("default")
    if t["flag"] in flags:
        source, actual = f"flag --{t['flag']}", flags[t["flag"]]
    elif t.get("config") and _dig(kubelet_cfg, t["config"]) is not None:
        source, actual = f"config {t['config']}", _as_text(_dig(kubelet_cfg, t["config"]))
    actual = None if actual is None else str(actual)
    ok = _expect(t["expect"]["op"], actual, t["expect"].get("value"))
    shown = "unset" if actual is None else f"{actual!r}"
    return ok, f"{source} --{t['flag']}: {shown}" if source == "default" else f"{source}: {shown}"


def _glob(pattern: str) -> list[str]:
    d, pat = os.path.split(pattern)
    if not any(ch in pat for ch in "*?["):
        return [pattern] if os.path.lexists(pattern) else []
    try:
        return sorted(os.path.join(d, n) for n in os.listdir(d) if fnmatch.fnmatch(n, pat))
    except OSError:
        return []


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
