"""Events from sensors a cluster may already run, as stockade sensor events: Falco's JSON output
(json_output: true, with output_fields) and Tetragon's JSON export (process_exec, process_kprobe)."""

from __future__ import annotations

import os
from typing import Any

_FALCO_TYPES = {"execve": "exec", "execveat": "exec", "open": "open", "openat": "open", "openat2": "open",
                "connect": "connect", "setuid": "setuid", "setresuid": "setuid", "mount": "mount",
                "unlink": "unlink", "unlinkat": "unlink", "init_module": "module", "finit_module": "module"}  # fmt: skip  # noqa: E501


def _int(value: Any) -> int:
    """A number field of another sensor's event; 0 when it holds something else (not a number, a list...)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def from_falco(doc: dict[str, Any]) -> dict[str, Any] | None:
    f = doc.get("output_fields")
    if not isinstance(f, dict):
        return None
    kind = _FALCO_TYPES.get(str(f.get("evt.type", "")))
    if kind is None:
        return None
    exe = str(f.get("proc.exepath") or f.get("proc.exe") or "")
    cmdline = str(f.get("proc.cmdline") or "")
    ev: dict[str, Any] = {
        "type": kind,
        "time_ns": _int(f.get("evt.rawtime")),
        "proc": {"pid": _int(f.get("proc.pid")), "ppid": _int(f.get("proc.ppid")),
                 "uid": _int(f.get("user.uid")), "exe": exe, "comm": str(f.get("proc.name") or os.path.basename(exe)),
                 "args": cmdline.split(" ", 1)[1] if " " in cmdline else "", "pexe": str(f.get("proc.pexepath") or ""),
                 "pcomm": str(f.get("proc.pname") or ""), "exe_written": bool(f.get("proc.is_exe_upper_layer"))},
        "container": {k: v for k, v in (("id", f.get("container.id")), ("pod", f.get("k8s.pod.name")),
                                        ("namespace", f.get("k8s.ns.name")), ("image", f.get("container.image.repository")))  # noqa: E501
                      if isinstance(v, str) and v and v != "host"},
    }  # fmt: skip
    name = f.get("fd.name")
    if kind in ("open", "unlink") and name:
        ev["fd"] = {
            "path": str(name),
            "write": "w" in str(f.get("evt.arg.flags", "")).lower()
            or "O_WRONLY" in str(f.get("evt.arg.flags", ""))
            or "O_RDWR" in str(f.get("evt.arg.flags", "")),
        }
    if kind == "connect":
        ev["net"] = {"daddr": str(f.get("fd.sip") or ""), "dport": _int(f.get("fd.sport"))}
    return ev


def from_tetragon(doc: dict[str, Any]) -> dict[str, Any] | None:
    ex = doc.get("process_exec")
    if not isinstance(ex, dict):
        return None
    p = _dict(ex.get("process"))
    parent = _dict(ex.get("parent"))
    pod = _dict(p.get("pod"))
    ctr = _dict(pod.get("container"))
    exe = str(p.get("binary") or "")
    return {
        "type": "exec",
        "time_ns": 0,
        "proc": {"pid": _int(p.get("pid")), "ppid": _int(parent.get("pid")), "uid": _int(p.get("uid")),
                 "exe": exe, "comm": os.path.basename(exe)[:15], "args": str(p.get("arguments") or ""),
                 "pexe": str(parent.get("binary") or ""), "pcomm": os.path.basename(str(parent.get("binary") or ""))[:15],  # noqa: E501
                 "exe_written": False},
        "container": {k: v for k, v in (("id", ctr.get("id")), ("pod", pod.get("name")), ("namespace", pod.get("namespace")),  # noqa: E501
                                        ("image", _dict(ctr.get("image")).get("name"))) if isinstance(v, str) and v},
    }  # fmt: skip


def convert(doc: Any) -> dict[str, Any] | None:
    if not isinstance(doc, dict):
        return None
    if "output_fields" in doc:
        return from_falco(doc)
    if "process_exec" in doc:
        return from_tetragon(doc)
    return None
