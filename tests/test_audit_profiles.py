"""Learned behaviour per identity (audit/profile.py): a realistic week of a controller's and an operator's
traffic, built from real events of Falco's traces (verb, object, identity, address, client and time changed),
then a stolen-token sequence; exactly the stolen token's requests alert, naming what was new."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stockade.audit.detect import Detector
from stockade.audit.events import Stats, documents_to_events
from stockade.audit.profile import Profiles
from stockade.audit.rules import load

CLI = [sys.executable, "-m", "stockade.cli.main"]
CONTROLLER = "system:serviceaccount:argocd:argocd-application-controller"
OPERATOR = "ops@example.com"
START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


def _template(traces: Path) -> dict[str, Any]:
    return json.loads(next(ln for ln in (traces / "create_configmap.json").read_text().splitlines() if ln.strip()))


def _req(base: dict[str, Any], at: datetime, user: str, verb: str, resource: str, ns: str | None, ip: str,
         agent: str, sub: str = "") -> dict[str, Any]:  # fmt: skip
    ev = copy.deepcopy(base)
    ts = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1", "name": "x"}
    if ns:
        ref["namespace"] = ns
    if sub:
        ref["subresource"] = sub
    ev.update(auditID=str(uuid.uuid4()), verb=verb, objectRef=ref, sourceIPs=[ip], userAgent=agent,
              user={"username": user, "groups": ["system:authenticated"]}, requestReceivedTimestamp=ts,
              stageTimestamp=ts, responseStatus={"code": 200}, annotations={"authorization.k8s.io/decision": "allow"})
    ev.pop("requestObject", None)
    return ev


def week(base: dict[str, Any]) -> list[dict[str, Any]]:
    """Seven days: the GitOps controller syncing every hour, the operator at work on weekdays."""
    out = []
    for hour in range(7 * 24):
        at = START + timedelta(hours=hour)
        for ns in ("shop", "web"):
            for verb, res in (("list", "deployments"), ("watch", "services"), ("get", "configmaps"),
                              ("patch", "deployments")):  # fmt: skip
                ip = "10.0.1.15" if hour % 2 else "10.0.1.16"
                agent = "argocd-application-controller/v2.9.3+6eba5be"
                out.append(_req(base, at, CONTROLLER, verb, res, ns, ip, agent))
        if at.weekday() < 5 and 9 <= at.hour < 17:
            for verb, res, sub in (("get", "pods", ""), ("list", "deployments", ""), ("create", "pods", "exec")):
                out.append(_req(base, at + timedelta(minutes=5), OPERATOR, verb, res, "shop", "203.0.113.20",
                                "kubectl/v1.31.0 (linux/amd64) kubernetes/abc", sub))  # fmt: skip
    return out


def day_eight(base: dict[str, Any]) -> list[dict[str, Any]]:
    """The next day: the same routine (nothing alerts), and a new workload's service account (learning)."""
    reg = [e for e in week(base) if datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00")) < START +
           timedelta(days=1)]  # fmt: skip
    out = []
    for e in reg:
        t = datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00")) + timedelta(days=7)
        out.append(_req(base, t, e["user"]["username"], e["verb"], e["objectRef"]["resource"],
                        e["objectRef"].get("namespace"), e["sourceIPs"][0], e["userAgent"],
                        e["objectRef"].get("subresource", "")))  # fmt: skip
    newcomer = "system:serviceaccount:shop:reporting"
    out.append(_req(base, START + timedelta(days=7, hours=3), newcomer, "list", "secrets", "shop", "10.0.2.7",
                    "reporting/1.0"))  # fmt: skip
    return out


def stolen(base: dict[str, Any]) -> list[dict[str, Any]]:
    """The controller's token, taken from its pod, used from a laptop with curl."""
    at = START + timedelta(days=7, hours=20)
    return [
        _req(base, at, CONTROLLER, "list", "secrets", "kube-system", "198.51.100.9", "curl/8.5.0"),
        _req(base, at + timedelta(seconds=5), CONTROLLER, "list", "secrets", "kube-system", "198.51.100.9",
             "curl/8.5.0"),  # the same again: counted into the first alert
        _req(base, at + timedelta(seconds=20), CONTROLLER, "get", "secrets", "shop", "198.51.100.9", "curl/8.5.0"),
        _req(base, at + timedelta(seconds=40), CONTROLLER, "create", "clusterrolebindings", None, "198.51.100.9",
             "curl/8.5.0"),
    ]  # fmt: skip


def _run(d: Detector, events: list[dict[str, Any]]) -> list[Any]:
    st, out = Stats(), []
    for doc in events:
        for ev in documents_to_events(copy.deepcopy(doc), st):
            out += [a for a in d.process(ev) if a.rule == "STK-AUD-100"]
    return out


def test_a_stolen_token_alerts_and_the_routine_does_not(traces: Path, tmp_path: Path) -> None:
    base = _template(traces)
    profiles = Profiles(tmp_path / "p.db")
    d = Detector(load(), profiles=profiles)
    assert _run(d, week(base)) == []  # learning
    assert _run(d, day_eight(base)) == []  # the routine, and a newcomer that learns
    alerts = _run(d, stolen(base))
    new = [json.loads(a.evidence[-1])["new"] for a in alerts]
    assert new == [
        {"operation": "list secrets", "namespace": "kube-system", "network": "198.51.100.0/24", "agent": "curl"},
        {"operation": "get secrets"},
        {"operation": "create clusterrolebindings", "namespace": "(cluster)"},
    ]
    assert [a.count for a in d.alerts if a.rule == "STK-AUD-100"] == [1, 1, 1]
    first = json.loads(alerts[0].evidence[-1])["profile"]
    assert first["network"] == ["10.0.1.0/24"] and first["agent"] == ["argocd-application-controller"]
    assert all(a.user == CONTROLLER and "never seen before" in a.message for a in alerts)
    profiles.close()


def test_profiles_survive_a_restart_and_reset_per_identity(traces: Path, tmp_path: Path) -> None:
    base = _template(traces)
    path = tmp_path / "p.db"
    p1 = Profiles(path)
    _run(Detector(load(), profiles=p1), week(base))
    p1.close()
    p2 = Profiles(path)  # as `audit serve` restarted
    assert {r["identity"] for r in p2.summary()} == {CONTROLLER, OPERATOR}
    assert len(_run(Detector(load(), profiles=p2), stolen(base))) == 3
    assert p2.reset(CONTROLLER) and not p2.reset("nobody")
    p2.close()
    p3 = Profiles(path)
    assert CONTROLLER not in {r["identity"] for r in p3.summary()}
    assert _run(Detector(load(), profiles=p3), stolen(base)) == []  # learning again
    p3.close()


def test_profiles_are_bounded(traces: Path) -> None:
    base = _template(traces)
    p = Profiles(None, learn_s=0, max_values=5, max_identities=3)
    d = Detector(load(), profiles=p)
    for i in range(10):  # an identity that touches a new namespace each time is too varied to judge
        _run(d, [_req(base, START + timedelta(minutes=i), "ci@example.com", "get", "pods", f"ns-{i}", "10.0.0.1",
                      "kubectl/1")])  # fmt: skip
    assert p.ids["ci@example.com"].too_varied and len(p.ids["ci@example.com"].values["namespace"]) == 5
    for i in range(5):
        _run(d, [_req(base, START, f"user-{i}", "get", "pods", "x", "10.0.0.1", "kubectl/1")])
    assert len(p.ids) <= 3


def test_cli_learns_into_a_file_and_resets(traces: Path, tmp_path: Path) -> None:
    base = _template(traces)
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in [*week(base), *stolen(base)]))
    db = tmp_path / "profiles.db"
    out = subprocess.run([*CLI, "audit", "scan", str(log), "--profiles", str(db), "-f", "json", "-q"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    learned = [a for a in json.loads(out.stdout)["alerts"] if a["rule"] == "STK-AUD-100"]
    assert len(learned) == 3 and {a["user"] for a in learned} == {CONTROLLER}
    shown = subprocess.run([*CLI, "audit", "profile", "show", str(db)], capture_output=True, text=True)
    assert CONTROLLER in shown.stdout and "judged" in shown.stdout
    reset = subprocess.run([*CLI, "audit", "profile", "reset", str(db), CONTROLLER], capture_output=True, text=True)
    assert reset.returncode == 0
    again = subprocess.run([*CLI, "audit", "profile", "reset", str(db), CONTROLLER], capture_output=True, text=True)
    assert again.returncode != 0 and "no profile" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("bad", [b"not sqlite at all" * 100])
def test_a_corrupt_profile_file_is_a_clear_error(tmp_path: Path, bad: bytes) -> None:
    db = tmp_path / "p.db"
    db.write_bytes(bad)
    out = subprocess.run([*CLI, "audit", "profile", "show", str(db)], capture_output=True, text=True)
    assert out.returncode != 0 and "not a profile database" in out.stderr and "Traceback" not in out.stderr


def test_an_unwritable_profile_file_does_not_stop_the_detector(traces: Path, tmp_path: Path) -> None:
    """The profile file locked by another process (or a full disk): learning goes on in memory, the write is
    retried at the next flush, and nothing is lost once the file is writable again."""
    import sqlite3

    base = _template(traces)
    path = tmp_path / "p.db"
    p = Profiles(path)
    d = Detector(load(), profiles=p)
    locker = sqlite3.connect(path, timeout=0)
    locker.execute("BEGIN EXCLUSIVE")
    p.db.execute("PRAGMA busy_timeout = 0")  # type: ignore[union-attr]
    _run(d, week(base)[:50])
    p.flush()
    assert p.write_errors >= 1 and p.ids[CONTROLLER].values["namespace"] == {"shop", "web"}
    locker.rollback()
    locker.close()
    p.close()
    again = Profiles(path)
    assert again.ids[CONTROLLER].values["namespace"] == {"shop", "web"}
    again.close()
