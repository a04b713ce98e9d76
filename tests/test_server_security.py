"""The server's account and data safeguards of issue #18, over real HTTP: tokens that expire and are revoked,
users that are disabled, cookie-authenticated API writes that need this server's Origin, clusters archived
rather than deleted with their alerts, exports that stay off private addresses unless an admin allows them,
and export credentials and errors kept from readers. Each test fails on the code before it."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_util import database, make_store, serving

CLI = [sys.executable, "-m", "stockade.cli.main"]
PASSWORD = "correct horse battery"


class Site:
    """A server with an admin, a contributor and a reader, each with an API token."""

    def __init__(self, store: Any, base: str) -> None:
        self.store, self.base = store, base
        self.tokens = {}
        for role in ("admin", "contributor", "reader"):
            store.create_user(role, PASSWORD, role)
            self.tokens[role] = store.create_user_token(role, "tests", "tests")

    def http(self, role: str | None = None, token: str | None = None, **kw: Any) -> httpx.Client:
        tok = token or (self.tokens[role] if role else None)
        headers = {"authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.base, timeout=30, headers=headers, **kw)


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    with database(request.param, tmp_path) as url:
        store = make_store(url)
        with serving(store) as base:
            yield Site(store, base)


def _alert(rule: str = "STK-AUD-001", key: str = "k") -> dict[str, Any]:
    return {"rule": rule, "title": "Exec into a pod", "severity": "HIGH", "dedup_key": key, "time": time.time()}


# -- tokens and users ------------------------------------------------------------------------------------------


def test_tokens_expire_and_are_revoked_by_id(site: Site) -> None:
    with site.http("reader") as c:
        made = c.post("/api/v1/tokens", json={"name": "ci", "expires_in_days": 1}).json()
        assert made["expires_in_days"] == 1
        mine = c.get("/api/v1/tokens").json()
        assert all("hash" not in t and "token" not in t for t in mine)  # never the secret
        ci = next(t for t in mine if t["name"] == "ci")
        assert ci["active"] and 0.9 * 86400 < ci["expires_at"] - time.time() <= 86400
        assert {t["user"] for t in mine} == {"reader"}  # a reader lists only their own
        assert c.post("/api/v1/tokens", json={"expires_in_days": -1}).status_code == 400
        assert c.post("/api/v1/tokens", json={"expires_in_days": "soon"}).status_code == 400
    with site.http(token=made["token"]) as c:
        assert c.get("/api/v1/me").status_code == 200
    # the default is 90 days; 0 is "until revoked"
    with site.http("contributor") as c:
        default = c.post("/api/v1/tokens", json={"name": "d"}).json()
        forever = c.post("/api/v1/tokens", json={"name": "f", "expires_in_days": 0}).json()
        theirs = {t["name"]: t for t in c.get("/api/v1/tokens").json()}
    assert default["expires_in_days"] == 90 and abs(theirs["d"]["expires_at"] - time.time() - 90 * 86400) < 60
    assert forever["expires_in_days"] is None and theirs["f"]["expires_at"] is None
    # nobody revokes another user's token but an admin; the holder does, and it stops at once
    with site.http("contributor") as c:
        assert c.delete(f"/api/v1/tokens/{ci['id']}").status_code == 403
    with site.http("reader") as c:
        assert c.delete(f"/api/v1/tokens/{ci['id']}").status_code == 204
    with site.http(token=made["token"]) as c:
        assert c.get("/api/v1/me").status_code == 401
    with site.http("admin") as c:
        everyone = c.get("/api/v1/tokens").json()
        assert {"admin", "contributor", "reader"} <= {t["user"] for t in everyone}
        assert c.delete(f"/api/v1/tokens/{theirs['f']['id']}").status_code == 204
        assert c.delete("/api/v1/tokens/999999").status_code == 404
        log = c.get("/api/v1/audit-log").json()
    with site.http(token=forever["token"]) as c:
        assert c.get("/api/v1/me").status_code == 401
    revokes = [e for e in log if e["action"] == "token.revoke"]
    assert {e["actor"] for e in revokes} == {"reader", "admin"}
    # an expired token is refused: one made with a lifetime that has passed
    old = site.store.create_user_token("reader", "old", "tests", ttl=0.5)
    time.sleep(0.6)
    with site.http(token=old) as c:
        assert c.get("/api/v1/me").status_code == 401


def test_disabled_users_lose_sessions_and_tokens(site: Site) -> None:
    with site.http() as c:
        session = c.post("/api/v1/login", json={"name": "contributor", "password": PASSWORD}).json()["token"]
    with site.http("contributor") as c:
        assert c.patch("/api/v1/users/reader", json={"disabled": True}).status_code == 403  # admins only
    with site.http("admin") as c:
        assert c.patch("/api/v1/users/contributor", json={"disabled": "yes"}).status_code == 400
        assert c.patch("/api/v1/users/nobody", json={"disabled": True}).status_code == 404
        assert c.patch("/api/v1/users/contributor", json={"disabled": True}).status_code == 200
        # the last enabled admin cannot lock everyone out
        r = c.patch("/api/v1/users/admin", json={"disabled": True})
        assert r.status_code == 409 and "last enabled admin" in r.text
        users = {u["name"]: u for u in c.get("/api/v1/users").json()}
    assert users["contributor"]["disabled"] and not users["admin"]["disabled"]
    for token in (session, site.tokens["contributor"]):
        with site.http(token=token) as c:
            assert c.get("/api/v1/me").status_code == 401
    with site.http() as c:  # nor can they sign in
        assert c.post("/api/v1/login", json={"name": "contributor", "password": PASSWORD}).status_code == 401
    with site.http("admin") as c:
        assert c.patch("/api/v1/users/contributor", json={"disabled": False}).status_code == 200
        actions = [e["action"] for e in c.get("/api/v1/audit-log").json() if e["target"] == "contributor"]
    assert "user.disable" in actions and "user.enable" in actions
    with site.http("contributor") as c:
        assert c.get("/api/v1/me").json()["name"] == "contributor"


# -- cookie-authenticated writes ---------------------------------------------------------------------------------


def test_cookie_writes_need_json_and_this_origin(site: Site) -> None:
    """The JSON API with the dashboard's cookie: a cross-site form (text/plain, or JSON without or with another
    Origin) is refused; the same origin, or the CSRF token in a header, is taken; bearer tokens need neither."""
    from stockade.server.dashboard import csrf_token

    with site.http() as c:
        session = c.post("/api/v1/login", json={"name": "admin", "password": PASSWORD}).json()["token"]
    spec = {"name": "s", "reason": "maintenance window"}
    with site.http(cookies={"stockade_session": session}) as c:
        host = httpx.URL(site.base).netloc.decode()
        # what a page on another site can make a browser send
        r = c.post("/api/v1/suppressions", content=b'{"name":"s","reason":"x"}', headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = c.post("/api/v1/suppressions", data={"name": "s", "reason": "x"})
        assert r.status_code == 415
        assert c.post("/api/v1/suppressions", json=spec, headers={"origin": "https://evil.example"}).status_code == 403
        assert c.post("/api/v1/suppressions", json=spec, headers={"origin": "null"}).status_code == 403
        assert c.post("/api/v1/suppressions", json=spec).status_code == 403  # no Origin, no CSRF header
        assert c.delete("/api/v1/suppressions/1", headers={"origin": "https://evil.example"}).status_code == 403
        assert c.get("/api/v1/suppressions").json() == []  # nothing was written
        # the dashboard's own origin, or the CSRF token
        ok = c.post("/api/v1/suppressions", json=spec, headers={"origin": f"http://{host}"})
        assert ok.status_code == 201, ok.text
        ok2 = c.post("/api/v1/suppressions", json=spec, headers={"x-csrf-token": csrf_token(session)})
        assert ok2.status_code == 201
        assert c.post("/api/v1/suppressions", json=spec, headers={"x-csrf-token": "0" * 32}).status_code == 403
        assert c.get("/api/v1/me").status_code == 200  # reads need neither
    with site.http("admin") as c:  # a bearer token is not sent by browsers on their own: no Origin needed
        assert c.post("/api/v1/suppressions", json=spec).status_code == 201


# -- clusters ----------------------------------------------------------------------------------------------------


def test_cluster_deletion_is_admin_only_and_keeps_alerts_unless_purged(site: Site) -> None:
    with site.http("contributor") as c:
        token = c.post("/api/v1/clusters", json={"name": "prod"}).json()["token"]
    ingest = {"batch": "b1", "items": [_alert(key="a"), _alert("STK-AUD-010", key="b")]}
    with site.http(token=token) as c:
        assert c.post("/api/v1/clusters/prod/ingest/alerts", json=ingest).status_code == 200
    with site.http("contributor") as c:
        assert c.delete("/api/v1/clusters/prod").status_code == 403
    with site.http("admin") as c:
        before = c.get("/api/v1/alerts", params={"cluster": "prod"}).json()["total"]
        assert before == 2
        assert c.delete("/api/v1/clusters/prod").status_code == 204
        assert "prod" not in [x["name"] for x in c.get("/api/v1/clusters").json()]
        assert [x["name"] for x in c.get("/api/v1/clusters/archived").json()] == ["prod"]
        assert c.get("/api/v1/alerts", params={"cluster": "prod"}).json()["total"] == 2  # kept
        assert c.post("/api/v1/clusters/prod/tokens").status_code == 404  # archived: no new tokens
    with site.http(token=token) as c:  # its collectors are cut off
        assert c.post("/api/v1/clusters/prod/ingest/alerts", json={**ingest, "batch": "b2"}).status_code == 401
    with site.http("contributor") as c:  # registering the name again brings it back, with its history
        again = c.post("/api/v1/clusters", json={"name": "prod"})
        assert again.status_code == 201
    with site.http("admin") as c:
        assert c.get("/api/v1/alerts", params={"cluster": "prod"}).json()["total"] == 2
        assert c.delete("/api/v1/clusters/prod", params={"purge": "true"}).status_code == 204
        assert c.get("/api/v1/alerts", params={"cluster": "prod"}).json()["total"] == 0
        assert c.get("/api/v1/clusters/archived").json() == []
        actions = [e["action"] for e in c.get("/api/v1/audit-log").json() if e["target"] == "prod"]
    assert {"cluster.archive", "cluster.restore", "cluster.purge"} <= set(actions)


# -- exports -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:6379/",  # a loopback service (Redis)
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata endpoint
        "http://10.0.0.8:9200/_bulk",  # RFC 1918
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",  # loopback written as IPv4-mapped IPv6
        "http://localhost:5432/",  # a name that resolves to loopback
        "udp://192.168.1.1:514",
        "tcp://100.64.0.1:514",  # carrier-grade NAT
    ],
)
def test_exports_to_private_addresses_need_an_admins_allowance(tmp_path: Path, target: str) -> None:
    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    kind = "syslog" if target.startswith(("udp", "tcp")) else "webhook"
    from stockade.server.store import BadRequest

    with pytest.raises(BadRequest, match="allow_private"):
        store.add_export({"kind": kind, "target": target}, "admin")
    xid = store.add_export({"kind": kind, "target": target, "allow_private": True}, "admin")
    assert store.rows("exports")[0]["id"] == xid
    assert next(e for e in store.audit_entries() if e["action"] == "export.create")["detail"]["allow_private"]


def test_public_export_targets_are_taken_and_checked_again_at_delivery(tmp_path: Path) -> None:
    """A public address is taken without the allowance; a target that points inward by delivery time (a stored row
    whose name now resolves to loopback) fails delivery without a connection."""
    import socket

    from stockade.server.export import ExportError, deliver
    from stockade.server.store import BadRequest

    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    store.add_export({"kind": "webhook", "target": "https://93.184.215.14/in"}, "admin")  # a global address
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    row = {"kind": "webhook", "format": "json", "target": f"http://localhost:{port}/", "allow_private": False}
    with httpx.Client() as client, pytest.raises(ExportError, match="loopback, private"):
        deliver(row, [{"id": 1}], client)
    with pytest.raises(TimeoutError):  # nothing connected
        listener.accept()
    listener.close()
    with pytest.raises(BadRequest):
        store.add_export({"kind": "webhook", "target": "http://0.0.0.0:80/"}, "admin")


def test_export_credentials_are_redacted_and_errors_shown_to_admins_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stockade.server.export import run_once

    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    site_users = {}
    for role in ("admin", "reader"):
        store.create_user(role, PASSWORD, role)
        site_users[role] = store.create_user_token(role, "t", "t")
    closed = socket_port()
    secret_url = f"http://siem:hunter2secret@127.0.0.1:{closed}/in?token=abc123secret&index=k8s"
    store.add_export({"kind": "webhook", "target": secret_url, "allow_private": True}, "admin")
    cid, _ = store.create_cluster("c", "t")
    store.ingest(cid, "alerts", {"batch": "b", "items": [_alert()]})
    with caplog.at_level(logging.WARNING, logger="stockade.server.export"), httpx.Client(timeout=2) as client:
        run_once(store, client, {})
    assert caplog.records, "the failed delivery is logged"
    with serving(store) as base:
        shown = {}
        for role, token in site_users.items():
            r = httpx.get(f"{base}/api/v1/exports", headers={"authorization": f"Bearer {token}"})
            shown[role] = r.json()[0]
            log = httpx.get(f"{base}/api/v1/audit-log", headers={"authorization": f"Bearer {token}"}).json()
            page = httpx.get(f"{base}/settings", cookies={"stockade_session": store.login(role, PASSWORD)}).text
            for text in (r.text, str(log), page):
                assert "hunter2secret" not in text and "abc123secret" not in text, role
    assert shown["admin"]["last_error"] and str(closed) in shown["admin"]["last_error"]
    assert shown["reader"]["last_error"] == ""  # says nothing about what answers where
    assert shown["reader"]["target"] == f"http://***@127.0.0.1:{closed}/in?token=***&index=k8s"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2secret" not in logged and "abc123secret" not in logged and "***@127.0.0.1" in logged


def socket_port() -> int:
    """A loopback port where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the CLI -----------------------------------------------------------------------------------------------------


def test_cli_lists_and_revokes_tokens_disables_users_and_archives_clusters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = make_store(url)
    store.create_user("ops", PASSWORD, "contributor")
    store.create_user("root", PASSWORD, "admin")
    cid, ctoken = store.create_cluster("edge", "t")
    store.ingest(cid, "alerts", {"batch": "b", "items": [_alert()]})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "server", "--database-url", url, *args], capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    made = cli("token", "ops", "--name", "deploy", "--expires-in-days", "7")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert store.principal(secret) is not None
    listed = cli("tokens", "--user", "ops").stdout.splitlines()
    row = next(line for line in listed if "deploy" in line)
    assert secret not in "\n".join(listed) and "active" in row
    token_id = row.split("\t")[0]
    assert cli("token-revoke", token_id).returncode == 0
    store._token_cache.clear()  # another process revoked it; this one's cache would keep it 10 s
    assert store.principal(secret) is None
    assert "revoked" in next(line for line in cli("tokens").stdout.splitlines() if line.startswith(token_id + "\t"))
    bad = cli("token-revoke", "424242")
    assert bad.returncode != 0 and "no token 424242" in bad.stderr and "Traceback" not in bad.stderr
    assert cli("user-disable", "ops").returncode == 0
    assert store.login("ops", PASSWORD) is None
    last = cli("user-disable", "root")
    assert last.returncode != 0 and "last enabled admin" in last.stderr
    assert cli("user-enable", "ops").returncode == 0 and store.login("ops", PASSWORD) is not None
    assert cli("cluster-delete", "edge").returncode == 0
    store._token_cache.clear()
    assert store.principal(ctoken) is None and store.alerts(cluster="edge")[0] == 1
    assert cli("cluster-delete", "edge", "--purge").returncode == 0
    assert store.alerts(cluster="edge")[0] == 0
