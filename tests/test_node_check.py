"""`stockade node-check` on a constructed node root, with a real process named kubelet in the real /proc.

Expected results follow the CIS Kubernetes Benchmark's own audit text for each control (e.g. 4.2.1:
"If using a Kubelet config file, ... authentication: anonymous: enabled set to false"; "--anonymous-auth
argument set to false"), with the kubelet's precedence: a command-line flag overrides the config file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.posture.node.check import parse_flags, processes, run


@pytest.fixture
def node(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    manifests = root / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    for name, mode in (("kube-apiserver.yaml", 0o644), ("etcd.yaml", 0o600), ("kube-scheduler.yaml", 0o600)):
        (manifests / name).write_text("kind: Pod\n")
        os.chmod(manifests / name, mode)
    pki = root / "etc/kubernetes/pki"
    pki.mkdir()
    (pki / "ca.key").write_text("k")
    os.chmod(pki / "ca.key", 0o644)
    (pki / "apiserver.key").write_text("k")
    os.chmod(pki / "apiserver.key", 0o600)
    cfg = root / "var/lib/kubelet/config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "authentication:\n  anonymous:\n    enabled: true\nauthorization:\n  mode: AlwaysAllow\n"
        "readOnlyPort: 10255\n"
    )
    os.chmod(cfg, 0o600)
    return root


@pytest.fixture
def kubelet(node: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real process whose argv[0] is kubelet, with kubelet flags, visible in the real /proc."""
    cmd = (
        f"exec -a kubelet {sys.executable} -c 'import time; time.sleep(60)' "
        f"--config=/var/lib/kubelet/config.yaml --anonymous-auth=false --rotate-certificates"
    )
    proc = subprocess.Popen(["bash", "-c", cmd])
    for _ in range(50):
        if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"kubelet\x00"):
            break
        time.sleep(0.05)
    yield proc
    proc.kill()
    proc.wait()


def _fake_proc(tmp: Path, argv: list[str]) -> Path:
    proc = tmp / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cmdline").write_bytes(b"\x00".join(a.encode() for a in argv) + b"\x00")
    return proc


def test_kubelet_flag_beats_config_file(node: Path, kubelet: subprocess.Popen[bytes]) -> None:
    results = {r.id: r for r in run(node, Path("/proc"))}
    assert results["4.2.1"].status == "PASS" and "flag --anonymous-auth" in results["4.2.1"].detail
    assert results["4.2.2"].status == "FAIL" and "config authorization.mode" in results["4.2.2"].detail
    assert results["4.2.4"].status == "FAIL" and "10255" in results["4.2.4"].detail
    assert results["4.2.3"].status == "FAIL"  # no client CA: neither flag nor config
    assert results["4.2.10"].status == "PASS"  # bare --rotate-certificates is true
    assert results["4.1.9"].status == "PASS"
    assert results["1.2.1"].status == "SKIP"  # no API server process here


def test_control_plane_flags_and_files(node: Path, tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path,
        [
            "/usr/local/bin/kube-apiserver",
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            "--profiling",
            "false",
            "--token-auth-file=/etc/tokens.csv",
            "--audit-log-path=/var/log/audit.log",
            "--kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt",  # but no key
            "--audit-log-maxage=7",
            "--audit-log-maxbackup=10",
            "--enable-admission-plugins=NodeRestriction,AlwaysAdmit",
        ],
    )
    results = {r.id: r for r in run(node, proc)}
    expected = {
        "1.2.1": "PASS",
        "1.2.2": "FAIL",
        "1.2.6": "PASS",
        "1.2.7": "PASS",
        "1.2.8": "PASS",
        "1.2.15": "PASS",
        "1.2.16": "PASS",
        "1.2.5": "FAIL",
        "1.2.27": "FAIL",
        "1.2.21": "PASS",  # --service-account-lookup defaults to true
        "1.2.22": "FAIL",  # no --service-account-key-file
        "1.2.4": "FAIL",  # CIS: both --kubelet-client-certificate and --kubelet-client-key
        "1.2.17": "FAIL",  # maxage 7 < 30
        "1.2.18": "PASS",  # maxbackup 10 >= 10
        "1.2.19": "FAIL",  # maxsize unset
        "1.2.14": "PASS",  # NodeRestriction enabled
        "1.2.10": "FAIL",  # AlwaysAdmit enabled
        "1.2.12": "PASS",  # nothing disabled
        "1.2.20": "MANUAL",
        "1.1.1": "FAIL",
        "1.1.7": "PASS",
        "1.1.21": "FAIL",
    }
    assert {k: results[k].status for k in expected} == expected
    assert "ca.key is 644" in results["1.1.21"].detail
    assert "--kubelet-client-key: unset" in results["1.2.4"].detail
    assert results["4.2.1"].status == "SKIP" and results["3.1.1"].status == "MANUAL"


def test_defaults_apply_when_a_flag_is_absent(node: Path, tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, ["kube-apiserver"])
    results = {r.id: r for r in run(node, proc)}
    assert results["1.2.1"].status == "FAIL" and "default" in results["1.2.1"].detail  # anonymous-auth defaults true
    assert results["1.2.6"].status == "FAIL"  # authorization-mode defaults to AlwaysAllow


def test_flag_parsing() -> None:
    assert parse_flags(["--a=1", "--b", "2", "--c", "--d=x=y", "-v", "pos"]) == {
        "a": "1",
        "b": "2",
        "c": "true",
        "d": "x=y",
    }


def test_not_a_node_and_cli(tmp_path: Path) -> None:
    empty = tmp_path / "proc"
    empty.mkdir()
    assert processes(empty) == {}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockade.cli.main",
            "node-check",
            "--json",
            "--root",
            str(tmp_path),
            "--proc",
            str(empty),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0
    assert {r["status"] for r in json.loads(out.stdout)} == {"SKIP"}
    assert "no Kubernetes component" in out.stderr
