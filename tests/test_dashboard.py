"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver, driven by selenium): sign in,
open every page, triage an alert; a reader sees no triage form and is refused if it posts one anyway. Screenshots
go to test-artifacts/dashboard/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_util import make_store, serving

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "dashboard"
PASSWORD = "a long test password"
PAGES = {  # path -> the heading the page must show
    "/": "Overview",
    "/clusters": "Clusters",
    "/images": "Running images",
    "/vulnerabilities": "Vulnerabilities in running images",
    "/recommendations": "Recommendations",
    "/compliance": "Compliance",
    "/admission": "Admission violations",
    "/alerts": "Alerts",
    "/settings": "Settings",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, vulndb: Any) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """A server filled by --demo's code path (the real engines through the real API)."""
    from stockade.server.demo import fill

    store = make_store(f"sqlite:///{tmp_path_factory.mktemp('dash') / 'server.db'}")
    store.create_user("alice", PASSWORD, "admin")
    store.create_user("rita", PASSWORD, "reader")
    with serving(store) as base:
        sent = fill(store, base, vulndb.path)
        yield base, store, sent


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("Debian's chromium and chromium-driver are needed (.ci/setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or ""
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1400,1000"):  # fmt: skip
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or ""), options=opts)
    drv.set_page_load_timeout(30)
    drv.implicitly_wait(5)  # form posts navigate asynchronously: finding an element waits for the next page
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield drv
    finally:
        drv.quit()


def sign_in(drv: Any, base: str, user: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    drv.delete_all_cookies()
    drv.get(f"{base}/login")
    drv.find_element(By.ID, "name").send_keys(user)
    drv.find_element(By.ID, "password").send_keys(password)
    drv.find_element(By.ID, "sign-in").click()
    wait(drv, lambda d: not d.current_url.startswith(f"{base}/login") or d.find_elements(By.ID, "login-error"))


def wait(drv: Any, cond: Any, seconds: float = 10) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, seconds).until(cond)


def test_sign_in_fails_with_a_wrong_password(site: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base, _store, _sent = site
    sign_in(browser, base, "alice", "not the password")
    assert "Wrong user name or password" in browser.find_element(By.ID, "login-error").text
    browser.get(f"{base}/alerts")
    assert browser.current_url.startswith(f"{base}/login")  # no session, no page


def test_every_page(site: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base, store, sent = site
    sign_in(browser, base, "alice")
    assert browser.find_element(By.ID, "whoami").text == "alice · admin"
    for path, heading in PAGES.items():
        browser.get(base + path)
        assert browser.find_element(By.TAG_NAME, "h1").text.startswith(heading), path
        browser.save_screenshot(str(SHOTS / f"{path.strip('/') or 'overview'}.png"))
    # what the pages show is what the API holds
    browser.get(f"{base}/alerts")
    rows = browser.find_elements(By.CSS_SELECTOR, "#alerts a.alert-link")
    total, _items = store.alerts("active", limit=1)
    assert len(rows) == total == int(browser.find_element(By.ID, "alert-total").text) > 0
    browser.get(f"{base}/")
    assert browser.find_element(By.ID, "n-alerts").text == str(total)
    assert browser.find_element(By.ID, "secure-score").text.endswith("%")
    browser.get(f"{base}/images")
    images = browser.find_element(By.ID, "images").text
    assert "demo.local/shop/checkout:2.3" in images and "not scanned" in images
    assert sent["scans"] == 2
    # the admission page lists what admission review of the demo manifests found (sent through the API)
    browser.get(f"{base}/admission")
    assert int(browser.find_element(By.ID, "violation-total").text) == sent["violations"] > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, "#violations tr.violation")) == sent["violations"]
    browser.get(f"{base}/admission?action=deny")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#violations tr.violation")) == 0  # the demo reviews in audit


def test_ingested_text_is_escaped_in_charts(site: Any, browser: Any) -> None:
    """A collector's text (here a violation's rule name) is shown as text in the charts, never run as markup."""
    from selenium.webdriver.common.by import By

    base, store, _sent = site
    cid, _token = store.create_cluster("xss", "tests")
    store.ingest(cid, "violations", {"batch": "x", "items": [{"rule": '<img id="xss" src=x>', "mode": "deny"}]})
    sign_in(browser, base, "alice")
    browser.get(f"{base}/admission?cluster=xss")
    assert browser.find_elements(By.ID, "xss") == []
    assert '<img id="xss" src=x>' in browser.find_element(By.ID, "by-rule").text


def test_triage_an_alert(site: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, store, _sent = site
    sign_in(browser, base, "alice")
    browser.get(f"{base}/alerts?severity=CRITICAL")
    link = browser.find_elements(By.CSS_SELECTOR, "#alerts a.alert-link")[0]
    alert_id = int(link.get_attribute("href").rsplit("/", 1)[1])
    link.click()
    Select(browser.find_element(By.ID, "triage-status")).select_by_value("dismissed")
    browser.find_element(By.ID, "triage-reason").send_keys("red-team exercise INC-4711")
    browser.save_screenshot(str(SHOTS / "triage-before.png"))
    browser.find_element(By.ID, "triage-submit").click()
    wait(browser, lambda d: d.find_element(By.ID, "alert-status").text.startswith("dismissed"))
    status = browser.find_element(By.ID, "alert-status").text
    browser.save_screenshot(str(SHOTS / "triage-after.png"))
    assert status.startswith("dismissed by alice") and "INC-4711" in status
    stored = store.alert(alert_id)
    assert stored["status"] == "dismissed" and stored["status_by"] == "alice"
    assert any(e["action"] == "alert.dismissed" and e["target"] == str(alert_id) for e in store.audit_entries())
    browser.get(f"{base}/alerts?severity=CRITICAL")  # no longer among the active ones
    assert f"/alerts/{alert_id}" not in browser.page_source


def test_reader_cannot_triage(site: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base, store, _sent = site
    sign_in(browser, base, "rita")
    _total, items = store.alerts("active", limit=1)
    browser.get(f"{base}/alerts/{items[0]['id']}")
    assert not browser.find_elements(By.ID, "triage")
    assert "needs the admin role" in browser.page_source
    # a hand-made form post with the reader's own session and CSRF token is refused
    csrf = browser.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "for (const [k, v] of Object.entries(arguments[1])) { const i = document.createElement('input');"
        " i.name = k; i.value = v; f.appendChild(i); } document.body.appendChild(f); f.submit();",
        f"/alerts/{items[0]['id']}/status",
        {"csrf": csrf, "status": "dismissed", "reason": "I am only a reader"},
    )
    wait(browser, lambda d: "this needs the admin role" in d.page_source)
    browser.save_screenshot(str(SHOTS / "reader-refused.png"))
    assert store.alert(items[0]["id"])["status"] == "active"


def test_tokens_and_users_from_the_settings_page(site: Any, browser: Any) -> None:
    """A reader makes an API token that expires and revokes it; an admin disables the reader, whose open session
    ends, and enables them again."""
    from selenium.webdriver.common.by import By

    base, store, _sent = site
    sign_in(browser, base, "rita")
    browser.get(f"{base}/settings")
    assert not browser.find_elements(By.ID, "user-list")  # users are an admin's business
    form = browser.find_element(By.CSS_SELECTOR, "form[action='/settings/tokens']")
    form.find_element(By.NAME, "name").send_keys("laptop")
    days = form.find_element(By.NAME, "expires_in_days")
    days.clear()
    days.send_keys("7")
    form.find_element(By.TAG_NAME, "button").click()
    secret = browser.find_element(By.ID, "token").text
    assert secret.startswith("stk_") and store.principal(secret).name == "rita"
    mine = next(t for t in store.tokens("rita") if t["name"] == "laptop")
    assert abs(mine["expires_at"] - time.time() - 7 * 86400) < 120
    browser.get(f"{base}/settings")
    browser.find_element(By.CSS_SELECTOR, f"form[action='/settings/tokens/{mine['id']}/revoke'] button").click()
    wait(browser, lambda d: not next(t for t in store.tokens("rita") if t["name"] == "laptop")["active"])
    store._token_cache.clear()
    assert store.principal(secret) is None
    # the admin disables rita: her session in this browser is over
    rita_cookie = browser.get_cookie("stockade_session")["value"]
    sign_in(browser, base, "alice")
    browser.get(f"{base}/settings")
    browser.find_element(By.CSS_SELECTOR, "form[action='/settings/users/rita/disabled'] button").click()
    wait(browser, lambda d: next(u for u in store.users() if u["name"] == "rita")["disabled"])
    browser.get(f"{base}/settings")
    assert "disabled" in browser.find_element(By.ID, "user-list").text
    browser.save_screenshot(str(SHOTS / "settings-users.png"))
    assert store.principal(rita_cookie) is None
    browser.find_element(By.CSS_SELECTOR, "form[action='/settings/users/rita/disabled'] button").click()
    wait(browser, lambda d: not next(u for u in store.users() if u["name"] == "rita")["disabled"])
    assert store.principal(rita_cookie) is not None and store.principal(rita_cookie).name == "rita"
