"""Learned profiles kept in the stockade server's database (`--profiles server`), on SQLite and on the real
PostgreSQL on loopback, through the real HTTP API: the same week, day and stolen-token sequence as
test_audit_profiles.py give the same alerts; the profile survives the collector's restart; a reset made by an
admin on the server reaches the running collector; roles, clusters and bad input are checked."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_util import database, make_store, serving
from test_audit_profiles import CONTROLLER, OPERATOR, _run, _template, day_eight, stolen, week
from test_server import Env

from stockade.audit.detect import Detector
from stockade.audit.profile import Profiles
from stockade.audit.rules import load
from stockade.server.client import Client, ServerProfiles

CLI = [sys.executable, "-m", "stockade.cli.main"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        store = make_store(url)
        with serving(store) as base:
            yield Env(store, base)
        store.engine.dispose()


def _profiles(env: Env, cluster: str, token: str) -> Profiles:
    return Profiles(None, store=ServerProfiles(Client(env.base, token, cluster, tries=1)), flush_every_s=0)


def test_the_server_keeps_the_profiles_and_a_reset_reaches_the_collector(env: Env, traces: Path) -> None:
    base = _template(traces)
    name, token = env.cluster()
    p1 = _profiles(env, name, token)
    d1 = Detector(load(), profiles=p1)
    assert _run(d1, week(base)) == [] and _run(d1, day_eight(base)) == []
    p1.close()  # the collector stops
    with env.http("reader") as c:
        rows = {r["identity"]: r for r in c.get(f"/api/v1/clusters/{name}/profiles").json()}
        one = c.get(f"/api/v1/clusters/{name}/profiles", params={"identity": CONTROLLER}).json()[0]
    assert set(rows) == {CONTROLLER, OPERATOR, "system:serviceaccount:shop:reporting"}
    assert rows[CONTROLLER]["operation"] == 4 and rows[CONTROLLER]["namespace"] == 2  # list/watch/get/patch
    assert one["values"]["network"] == ["10.0.1.0/24"] and one["values"]["agent"] == ["argocd-application-controller"]

    p2 = _profiles(env, name, token)  # restarted: it goes on from the server's profile
    d2 = Detector(load(), profiles=p2)
    alerts = _run(d2, stolen(base))
    assert [json.loads(a.evidence[-1])["new"] for a in alerts] == [
        {"operation": "list secrets", "namespace": "kube-system", "network": "198.51.100.0/24", "agent": "curl"},
        {"operation": "get secrets"},
        {"operation": "create clusterrolebindings", "namespace": "(cluster)"},
    ]
    with env.http("reader") as c:  # only admins reset
        assert c.delete(f"/api/v1/clusters/{name}/profiles/{CONTROLLER}").status_code == 403
    with env.http("admin") as c:
        assert c.delete(f"/api/v1/clusters/{name}/profiles/{CONTROLLER}").status_code == 204
        assert c.delete(f"/api/v1/clusters/{name}/profiles/{CONTROLLER}").status_code == 404
        log = c.get("/api/v1/audit-log").json()
    assert any(e["action"] == "profile.reset" and e["target"] == CONTROLLER for e in log)
    p2.flush()  # the collector's next write brings the reset back: it forgets the controller, which learns again
    assert CONTROLLER not in p2.ids and OPERATOR in p2.ids
    assert _run(d2, stolen(base)) == []  # learning again, as after a reset of a file
    p2.close()
    p3 = _profiles(env, name, token)
    assert CONTROLLER in p3.ids and p3.ids[CONTROLLER].values["network"] == {"198.51.100.0/24"}  # learned anew
    p3.close()


def test_profiles_belong_to_their_cluster_and_bad_writes_are_refused(env: Env) -> None:
    name, token = env.cluster()
    other, other_token = env.cluster()
    url = f"/api/v1/clusters/{name}/profiles"
    with env.http(token=other_token) as c:
        assert c.get(url).status_code == 403
        assert c.post(url, json={"identities": [], "values": []}).status_code == 403
    with env.http("admin") as c:  # people read profiles; only the cluster's collector writes them
        assert c.post(url, json={"identities": [], "values": []}).status_code == 403
    with env.http(token=token) as c:
        for body, why in [
            ([1, 2], "JSON object"),
            ({"identities": "x"}, "must be lists"),
            ({"identities": [["a", "x", 1, False]]}, "time in seconds"),
            ({"values": [["a", "colour", "red", 1.0]]}, "unknown dimension"),
            ({"values": [["a", "agent", "curl", 1.0]] * 20_001}, "at most 20000"),
        ]:
            r = c.post(url, json=body)
            assert r.status_code == 400 and why in r.text, (body if len(str(body)) < 200 else why, r.text)
        ok = c.post(url, json={"identities": [["a\x00b", 1.0, 2.0, False]], "values": [["a\x00b", "agent", "curl", 1]]})
        assert ok.status_code == 200 and ok.json()["values"] == 1  # NUL dropped (PostgreSQL refuses it in text)
        assert c.post(url, json={"identities": [["ab", 1.0, 2.0, False]]}).json()["identities"] == 1  # idempotent
        assert [r["identity"] for r in c.get(url).json()] == ["ab"]
    with env.http("admin") as c:  # purging the cluster takes its profiles with it
        assert c.delete(f"/api/v1/clusters/{name}", params={"purge": "true"}).status_code == 204
    assert env.store.profiles_load(env.store.cluster_id(other))["identities"] == []


def test_the_cli_learns_into_the_server_and_resets_there(env: Env, traces: Path, tmp_path: Path) -> None:
    base = _template(traces)
    name, token = env.cluster()
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in [*week(base), *stolen(base)]))
    server = ["--server", env.base, "--cluster", name]
    out = subprocess.run([*CLI, "audit", "scan", str(log), "--profiles", "server", *server, "-f", "json", "-q"],
                         capture_output=True, text=True, timeout=300, env={"STOCKADE_TOKEN": token})  # fmt: skip
    assert out.returncode == 0, out.stderr
    learned = [a for a in json.loads(out.stdout)["alerts"] if a["rule"] == "STK-AUD-100"]
    assert len(learned) == 3 and {a["user"] for a in learned} == {CONTROLLER}

    def cli(*args: str, role: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "audit", "profile", *args, *server], capture_output=True, text=True,
                              env={"STOCKADE_TOKEN": env.tokens[role]})  # fmt: skip

    shown = cli("show", "server", role="reader")
    assert shown.returncode == 0 and f"{CONTROLLER}\tjudged" in shown.stdout and OPERATOR in shown.stdout
    refused = cli("reset", "server", CONTROLLER, role="reader")
    assert refused.returncode != 0 and "403" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("reset", "server", CONTROLLER, role="admin").returncode == 0
    again = cli("reset", "server", CONTROLLER, role="admin")
    assert again.returncode != 0 and "no profile" in again.stderr and "Traceback" not in again.stderr
    assert CONTROLLER not in cli("show", "server", role="reader").stdout


def test_a_server_away_does_not_stop_the_detector(traces: Path, tmp_path: Path) -> None:
    """The server unreachable at a write: learning goes on in memory and the write is retried; unreachable at
    start: a clear error naming it."""
    base = _template(traces)
    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    with serving(store) as url:
        store.create_user("root", "correct horse battery", "admin")
        with httpx.Client(base_url=url, headers={"authorization":
                          f"Bearer {store.create_user_token('root', 'tests', 'tests')}"}) as c:  # fmt: skip
            token = c.post("/api/v1/clusters", json={"name": "c2"}).json()["token"]
        p = Profiles(None, store=ServerProfiles(Client(url, token, "c2", tries=1)), flush_every_s=0)
    d = Detector(load(), profiles=p)  # the server has stopped
    _run(d, week(base)[:50])
    p.flush()
    assert p.write_errors >= 1 and p.ids[CONTROLLER].values["namespace"] == {"shop", "web"}
    with pytest.raises(Exception, match="profiles") as exc:
        Profiles(None, store=ServerProfiles(Client(url, token, "c2", tries=1)))
    assert "Connect" in str(exc.value) or "refused" in str(exc.value).lower()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migrations_build_the_schema_the_code_uses(kind: str, tmp_path: Path) -> None:
    """Alembic's head revision and the tables of server/db.py agree (a table or column added to one only is a
    failure here, not on a user's upgrade)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from stockade.server.db import metadata

    with database(kind, tmp_path) as url:
        store = make_store(url)
        with store.engine.connect() as con:
            diff = compare_metadata(MigrationContext.configure(con), metadata)
        store.engine.dispose()
    assert diff == []
