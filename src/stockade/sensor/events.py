"""bpftrace lines -> sensor events (dicts the rules read), with a process table, container attribution and
the record of files written since the sensor started (for binary drift)."""

from __future__ import annotations

import os
import re
import socket
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# container id in a cgroup path: docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope, libpod-<id>,
# or a bare 64-hex directory under kubepods/docker; pod uid from kubepods paths
_CID = re.compile(r"(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?([0-9a-f]{64})(?:\.scope)?$")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
LOST_EVENTS = re.compile(r"Lost (\d+) events")  # bpftrace's report when the kernel's perf buffer overflowed
COMMON = ("time", "pid", "tid", "ppid", "uid", "cgroup_id", "comm", "pcomm")
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0x1, 0x2, 0x40, 0x200


def api_server_endpoints(given: list[str], env: Mapping[str, str] | None = None) -> set[tuple[str, int]]:
    """The Kubernetes API server's (address, port) pairs that connect events are checked against: each
    HOST:PORT given (a name resolves to all its addresses; [v6]:port for IPv6), and in a pod the service
    address from $KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT, as client libraries find it."""
    environ: Mapping[str, str] = os.environ if env is None else env
    specs = list(given)
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    if host:
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        specs.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    out: set[tuple[str, int]] = set()
    for spec in specs:
        host, sep, port = spec.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"API server {spec!r}: expected HOST:PORT (for example 10.0.0.1:443)")
        try:
            infos = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise ValueError(f"API server {spec!r}: cannot resolve {host} ({exc})") from None
        out |= {(str(i[4][0]), int(port)) for i in infos}
    return out


@dataclass(slots=True)
class Proc:
    exe: str
    args: str
    comm: str
    ppid: int
    container: dict[str, str]


def parse_cgroup_path(path: str) -> dict[str, str]:
    """Container id and pod uid from a cgroup path; {} for host processes."""
    out: dict[str, str] = {}
    for part in reversed(path.strip("/").split("/")):
        m = _CID.search(part)
        if m and "id" not in out:
            out["id"] = m.group(1)
        p = _POD.search(part)
        if p and "pod_uid" not in out:
            out["pod_uid"] = p.group(1).replace("_", "-")
    if out:
        out["cgroup"] = path
    return out


class PodSource(Protocol):
    def get(self, container_id: str) -> dict[str, str] | None: ...


@dataclass
class Attributor:
    """cgroup v2 id (from eBPF) -> cgroup path -> container, with /proc/<pid>/cgroup as the fallback; the
    container runtime (CRI, ``lookup``) or the kubelet's pod list (``pods``) adds pod name, namespace and image.
    Answers are cached by cgroup id once complete."""

    cgroup_root: Path = Path("/sys/fs/cgroup")
    proc: Path = Path("/proc")
    pods: dict[str, dict[str, str]] = field(default_factory=dict)  # container id -> pod, namespace, image
    lookup: PodSource | None = None
    max_cache: int = 65536
    _by_inode: dict[int, str] = field(default_factory=dict)
    _cache: dict[int, dict[str, str]] = field(default_factory=dict)
    _v2_used: bool = False  # the unified hierarchy has cgroups below its root (else containers are in v1 only)
    _misses: int = 0

    def _v2_root(self) -> Path:
        unified = self.cgroup_root / "unified"
        return unified if unified.is_dir() else self.cgroup_root

    def refresh(self) -> None:
        root = self._v2_root()
        found: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(root):
            try:
                found[os.stat(dirpath).st_ino] = "/" + os.path.relpath(dirpath, root).lstrip(".")
            except OSError:
                continue
        self._by_inode = found
        self._v2_used = len(found) > 1

    def container(self, cgroup_id: int, pid: int) -> dict[str, str]:
        hit = self._cache.get(cgroup_id)
        if hit is not None:
            return hit
        path = self._by_inode.get(cgroup_id)
        if path is None and cgroup_id > 1 and self._misses < 1000:
            self._misses += 1
            self.refresh()
            path = self._by_inode.get(cgroup_id)
        info = parse_cgroup_path(path) if path else {}
        # /proc/<pid>/cgroup when the id is unknown, or when it is the v2 root and containers live in v1 only
        # (on hosts that use the unified hierarchy, its root holds host processes: reading /proc for each of
        # their execs was most of the sensor's cost)
        if not info and (path is None or (path == "/" and not self._v2_used)):
            try:
                for line in (self.proc / str(pid) / "cgroup").read_text().splitlines():
                    info = parse_cgroup_path(line.split(":", 2)[-1])
                    if info:
                        break
            except OSError:
                pass
        cid = info.get("id")
        pod = None
        if cid:
            pod = self.pods.get(cid)
            if pod is None and self.lookup is not None:
                pod = self.lookup.get(cid)
            if pod:
                info = {**info, **{k: v for k, v in pod.items() if v}}
        # cached when the answer cannot improve: a known cgroup that is the host's, or a container with its pod
        if path is not None and cgroup_id > 1 and (not cid or pod or (self.lookup is None and not self.pods)):
            if len(self._cache) >= self.max_cache:
                self._cache.clear()
            self._cache[cgroup_id] = info
        return info

    def shed(self) -> None:
        self._cache.clear()

    def load_pods(self, doc: dict[str, Any]) -> None:
        """The kubelet's /pods response (a PodList): container id -> pod name, namespace, image."""
        for pod in doc.get("items") or []:
            meta = pod.get("metadata") or {}
            for st in (pod.get("status") or {}).get("containerStatuses") or []:
                cid = str(st.get("containerID", "")).split("://")[-1]
                if cid:
                    self.pods[cid] = {"pod": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                                      "image": st.get("image", ""), "name": st.get("name", "")}  # fmt: skip


class Decoder:
    """Stateful: pairs EXEC with its EXECRET, keeps a process table and the files written since start."""

    def __init__(self, attributor: Attributor | None = None, max_procs: int = 65536, max_written: int = 65536,
                 api_servers: set[tuple[str, int]] | None = None) -> None:  # fmt: skip
        self.attr = attributor or Attributor()
        self.api_servers = api_servers or set()  # (address, port) of the Kubernetes API server: net.k8s_api
        self.procs: OrderedDict[int, Proc] = OrderedDict()
        self.pending: dict[int, tuple[str, str, list[str]]] = {}
        self.written: OrderedDict[str, int] = OrderedDict()
        self.max_procs, self.max_written = max_procs, max_written
        self.malformed = 0
        self.lost = 0

    def shed(self) -> None:
        """Forget the older half of the process table and of the written files (the memory governor's relief)."""
        for table in (self.procs, self.written):
            for _ in range(len(table) // 2):
                table.popitem(last=False)
        self.pending.clear()
        self.attr.shed()

    def _abs(self, pid: int, path: str) -> str:
        if path.startswith("/") or not path:
            return path
        try:
            return os.path.normpath(os.path.join(os.readlink(f"/proc/{pid}/cwd"), path))
        except OSError:
            return path

    def decode(self, line: str) -> dict[str, Any] | None:
        parts = line.rstrip("\n").split("\t")
        kind = parts[0]
        if kind in ("READY", "") or len(parts) < 9:
            m = LOST_EVENTS.match(kind)
            if m:  # bpftrace's own line when the kernel's perf buffer overflowed
                self.lost += int(m.group(1))
            elif kind not in ("READY", ""):
                self.malformed += 1
            return None
        try:
            t, pid, tid, ppid, uid, cg = (int(x) for x in parts[1:7])
        except ValueError:
            self.malformed += 1
            return None
        comm, pcomm, rest = parts[7], parts[8], parts[9:]
        if kind == "EXEC":
            argv = (rest[1] if len(rest) > 1 else "").split("\x1f")
            self.pending[tid] = (self._abs(pid, rest[0] if rest else ""), comm, argv)
            return None
        if kind == "EXIT":
            self.procs.pop(pid, None)
            return None
        parent = self.procs.get(ppid)
        if kind == "EXECRET":
            got = self.pending.pop(tid, None)
            if got is None or not rest or rest[0] != "0":
                return None
            exe, _old_comm, argv = got
            container = self.attr.container(cg, pid)
            proc = Proc(
                exe=exe, args=" ".join(argv[1:]), comm=os.path.basename(exe)[:15], ppid=ppid, container=container
            )
            self.procs[pid] = proc
            if len(self.procs) > self.max_procs:
                self.procs.popitem(last=False)
            ev = self._base("exec", t, pid, ppid, uid, proc, parent, pcomm)
            ev["proc"]["argv"] = argv
            ev["proc"]["exe_written"] = exe in self.written  # written after the sensor started: drift
            return ev
        proc = self.procs.get(pid) or Proc(
            exe="", args="", comm=comm, ppid=ppid, container=self.attr.container(cg, pid)
        )
        ev = self._base(kind.lower(), t, pid, ppid, uid, proc, parent, pcomm)
        if kind == "OPEN":
            path = self._abs(pid, rest[0])
            flags = int(rest[1]) if len(rest) > 1 and rest[1].lstrip("-").isdigit() else 0
            write = bool(flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC))
            ev["fd"] = {"path": path, "flags": flags, "write": write}
            if write:
                self.written[path] = pid
                self.written.move_to_end(path)
                if len(self.written) > self.max_written:
                    self.written.popitem(last=False)
        elif kind == "CONNECT":
            daddr, dport = rest[1], int(rest[2])
            ev["net"] = {"family": int(rest[0]), "daddr": daddr, "dport": dport,
                         "k8s_api": (daddr, dport) in self.api_servers}  # fmt: skip
        elif kind == "UCONN":
            ev["type"] = "connect"
            ev["net"] = {"family": 1, "unix_path": rest[0] if rest else ""}
        elif kind == "SETUID":
            ev["target_uid"] = int(rest[0]) if rest and rest[0].lstrip("-").isdigit() else -1
        elif kind == "MOUNT":
            ev["mount"] = {"dir": rest[0], "fstype": rest[1] if len(rest) > 1 else ""}
        elif kind == "UNLINK":
            ev["fd"] = {"path": self._abs(pid, rest[0] if rest else "")}
        return ev

    def _base(self, kind: str, t: int, pid: int, ppid: int, uid: int, proc: Proc, parent: Proc | None,
              pcomm: str) -> dict[str, Any]:  # fmt: skip
        return {
            "type": kind,
            "time_ns": t,
            "proc": {
                "pid": pid,
                "ppid": ppid,
                "uid": uid,
                "exe": proc.exe,
                "comm": proc.comm or "",
                "args": proc.args,
                "pexe": parent.exe if parent else "",
                "pcomm": parent.comm if parent else pcomm,
            },
            "container": proc.container,
        }
