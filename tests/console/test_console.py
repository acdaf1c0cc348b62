"""The operations console in a real browser against a real Vigil (tests/console/conftest.py): sign in, see the six
queues, pause and resume one (and the API then says so), open a failed job and retry it until it completes, retry
every failed job of a queue, delete a waiting job after the confirmation and jobs by filter, stop and start a worker,
watch a dropped photograph become an event without reloading the page, acknowledge and dismiss its alert, disable
and enable a rule, look at every page at 1280 px and at phone width, and find every action in the audit trail.

The tests run in order and share one browser session, as one operator's visit would; each screenshot is written to
var/console-screenshots/.
"""

from __future__ import annotations

import re
import shutil

import pytest
import requests
from selenium.webdriver.common.keys import Keys
from sqlalchemy import select

from tests.helpers import API_KEY, make_jwt
from tests.servers import wait_for

pytestmark = pytest.mark.slow

QUEUES = ("detection:high", "detection", "analysis", "notification:high", "notification", "cleanup")
PAGES = ("queues", "jobs", "pipeline", "alerts", "workers", "system")
CAMERA_FOLDER, CAMERA_ID = "Front Door", "front_door"
RULE = "Console: anyone at the front door"


def until(predicate, timeout: float, what: str):
    return wait_for(predicate, timeout, interval=0.2, what=what)


def queue_paused(stack, name: str) -> bool:
    queues = stack.api_get("/api/v1/platform/system/queues")["data"]["queues"]
    return next(q for q in queues if q["name"] == name)["paused"]


def signed_in_session(stack, credential: str = API_KEY, kind: str = "api_key") -> tuple[requests.Session, str]:
    """A plain HTTP client signed in to the console, and its CSRF token."""
    http = requests.Session()
    form = http.get(f"{stack.url}/console/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    r = http.post(
        f"{stack.url}/console/login",
        data={"kind": kind, "credential": credential, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text
    page = http.get(f"{stack.url}/console/queues", timeout=30)
    return http, re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(browser, credential: str = API_KEY, kind: str = "api_key") -> None:
    browser.go("/console/login")
    browser.click(f'input[name="kind"][value="{kind}"]')
    browser.find("#credential").send_keys(credential)
    browser.press('form button[type="submit"]')
    browser.wait(lambda: "/console/login" not in browser.path, what="signing in")


# ---- no session, no CSRF token ---------------------------------------------------------------------------------
def test_a_request_without_a_session_is_sent_to_the_login(stack):
    anonymous = requests.Session()
    for path in ("/console", "/console/", "/console/queues", "/console/jobs?queue=analysis", "/console/system"):
        r = anonymous.get(stack.url + path, allow_redirects=False, timeout=30)
        assert r.status_code in (302, 303, 308), (path, r.status_code)
        location = r.headers["Location"]
        if r.status_code == 308:  # /console -> /console/, then the login
            r = anonymous.get(stack.url + location, allow_redirects=False, timeout=30)
            location = r.headers["Location"]
        assert location.startswith("/console/login"), (path, location)
    r = anonymous.post(f"{stack.url}/console/queues/cleanup/pause", allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"].startswith("/console/login")
    assert not queue_paused(stack, "cleanup")
    # htmx's polls get a redirect htmx follows with the whole page, not a login form swapped into a region
    r = anonymous.get(f"{stack.url}/console/queues", headers={"HX-Request": "true"}, allow_redirects=False, timeout=30)
    assert r.headers["HX-Redirect"].startswith("/console/login")


def test_a_form_post_without_the_csrf_token_is_refused(stack):
    http, token = signed_in_session(stack)
    for data in ({}, {"csrf_token": "not-the-token"}):
        r = http.post(f"{stack.url}/console/queues/cleanup/pause", data=data, allow_redirects=False, timeout=30)
        assert r.status_code == 400 and "security token" in r.text, r.text
    assert not queue_paused(stack, "cleanup")
    r = http.post(
        f"{stack.url}/console/login", data={"kind": "api_key", "credential": API_KEY}, allow_redirects=False, timeout=30
    )
    assert r.status_code == 400  # the login form has its token too
    # with the token it goes through (and is undone the same way)
    for action in ("pause", "resume"):
        r = http.post(
            f"{stack.url}/console/queues/cleanup/{action}",
            data={"csrf_token": token},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 303, r.text
        assert queue_paused(stack, "cleanup") is (action == "pause")


def test_the_session_cookie_is_httponly_and_samesite_strict(stack):
    http = requests.Session()
    form = http.get(f"{stack.url}/console/login", timeout=30)
    cookie = form.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie, cookie
    assert "frame-ancestors 'none'" in form.headers["Content-Security-Policy"]


# ---- in the browser -------------------------------------------------------------------------------------------
def test_sign_in_and_see_the_six_queues(stack, browser):
    browser.go("/console/queues")
    assert browser.path.startswith("/console/login")
    browser.shot("login")
    browser.find("#credential").send_keys("not-the-key")
    browser.press('form button[type="submit"]')
    browser.wait_text("#login-error", "Invalid API key")
    sign_in(browser)
    assert browser.path == "/console/queues"
    rows = [row.get_attribute("data-queue") for row in browser.find_all("tr[data-queue]")]
    assert rows == list(QUEUES)
    assert "api-key" in browser.text("header")


def test_pause_and_resume_a_queue(stack, browser):
    browser.go("/console/queues")
    browser.press('button[title="Pause notification"]')
    browser.wait_text(".flash", "Queue notification paused")
    assert queue_paused(stack, "notification")
    assert "paused" in browser.text('tr[data-queue="notification"]')
    browser.shot("queues-paused")
    browser.press('button[title="Resume notification"]')
    browser.wait_text(".flash", "Queue notification resumed")
    assert not queue_paused(stack, "notification")
    assert "paused" not in browser.text('tr[data-queue="notification"]')


def test_open_a_failed_job_and_retry_it_until_it_completes(stack, browser):
    marker = stack.var / "console-canary-marker"
    job_id = stack.canary("analysis", require_path=str(marker))
    until(lambda: stack.job_state(job_id) == "failed", 30, "the canary to fail")
    browser.go("/console/jobs?queue=analysis&state=failed")
    browser.click(f'tr[data-job="{job_id}"] a')
    browser.wait_text("#job-state", "failed")
    page = browser.text()
    assert "vigil.system.canary" in page and "does not exist on this worker" in page
    assert "Traceback" in browser.text("details pre") and str(marker) in browser.text(".payload")
    browser.shot("job-failed")
    marker.write_text("now it does")
    browser.press('#live-job form[action$="/retry"] button')
    browser.wait_text(".flash", f"Job {job_id} re-queued")
    browser.wait_text("#job-state", "completed", timeout=30)  # the live region, without a reload
    assert stack.job_state(job_id) == "completed"
    assert '"ok": true' in browser.text(".result")
    browser.shot("job")


def test_retry_every_failed_job_of_a_queue_after_the_confirmation(stack, browser):
    marker = stack.var / "console-canary-marker-2"
    ids = [stack.canary("analysis", require_path=str(marker)) for _ in range(2)]
    until(lambda: all(stack.job_state(i) == "failed" for i in ids), 30, "both canaries to fail")
    browser.go("/console/queues")
    browser.click('tr[data-queue="analysis"] a[href$="/retry-failed"]')
    browser.wait_text("#confirm-count", "2 jobs")  # the confirmation page, once it has loaded
    assert browser.text("#confirm-count") == "2 jobs"
    marker.write_text("here too")
    browser.press("#confirm")
    browser.wait_text(".flash", "2 failed job(s) of analysis re-queued")
    until(lambda: all(stack.job_state(i) == "completed" for i in ids), 30, "both retried canaries to complete")


def test_delete_a_waiting_job_after_the_confirmation(stack, browser):
    def enqueue() -> str:
        r = stack.api_send(
            "POST", "/api/v1/platform/system/jobs", json={"task": "cleanup", "payload": {"dry_run": True}}
        )
        assert r.status_code == 202, r.text
        return r.json()["data"]["job_id"]

    job_id = enqueue()  # no worker consumes `cleanup` here: it waits
    browser.go("/console/jobs?queue=cleanup&state=waiting")
    browser.click(f'tr[data-job="{job_id}"] a')
    browser.click('a[href$="/delete"]')
    browser.wait_text("#confirm-count", "1 job")
    assert browser.text("#confirm-count") == "1 job" and job_id in browser.text()
    assert stack.job_state(job_id) == "waiting"  # nothing happens before the confirmation
    browser.shot("confirm-delete")
    browser.press("#confirm")
    browser.wait_text(".flash", f"Job {job_id} deleted (removed from queue)")
    assert stack.job_state(job_id) is None

    # by filter: the confirmation states how many match before anything goes
    ids = [enqueue() for _ in range(3)]
    browser.go("/console/jobs?queue=cleanup&state=waiting")
    browser.press('form[action$="/jobs/delete"] button')
    browser.wait_text("#confirm-count", "3 jobs")  # a key press does not wait for the page it submits to
    assert browser.text("#confirm-count") == "3 jobs"
    assert all(stack.job_state(i) == "waiting" for i in ids)
    browser.press("#confirm")
    browser.wait_text(".flash", "Deleted 3 job(s) (waiting in cleanup)")
    assert all(stack.job_state(i) is None for i in ids)
    assert (
        next(q for q in stack.api_get("/api/v1/platform/system/queues")["data"]["queues"] if q["name"] == "cleanup")[
            "waiting_jobs"
        ]
        == 0
    )


def test_stop_and_start_a_worker(stack, browser):
    def status(name: str) -> str:
        workers = stack.api_get("/api/system/supervisor")["workers"]
        return next(w for w in workers if w["name"] == name)["status"]

    until(lambda: status("detection_worker") == "running", 60, "the supervisor to see detection_worker")
    browser.go("/console/workers")
    row = 'tr[data-worker="detection_worker"]'
    browser.wait_text(row, "running")
    browser.press('button[title="Stop detection_worker"]')
    # the answer's own words: the page before the press may already show an earlier answer's .flash-ok
    browser.wait(
        lambda: any(
            words in browser.flash() for words in ("stopped successfully", "'detection_worker' was told to stop")
        ),
        30,
        what="the stop's answer",
    )
    assert status("detection_worker") == "stopped"
    browser.wait_text(row, "stopped")
    browser.shot("workers-stopped")
    browser.press('button[title="Start detection_worker"]')
    # 200 once the new process runs; 202 when it is not confirmed within the command's deadline (a loaded
    # machine): both are the console saying the start was accepted, and the worker is running soon after
    browser.wait(
        lambda: any(
            words in browser.flash() for words in ("started successfully", "'detection_worker' start requested")
        ),
        30,
        what="the start's answer",
    )
    until(lambda: status("detection_worker") == "running", 60, "detection_worker to run again")
    browser.wait_text(row, "running")
    assert "detection_worker" in browser.text("table:not(.workers)")  # the restart history has both


def test_a_dropped_photograph_appears_as_an_event_without_reloading(stack, browser, short_windows, photos):
    r = stack.api_send(
        "POST",
        "/api/alerts/rules",
        json={"name": RULE, "severity": "high", "risk_threshold": 0, "channels": ["webhook"], "cooldown_seconds": 0},
    )
    assert r.status_code == 201, r.text
    browser.go("/console/pipeline")
    browser.driver.execute_script("window.consoleVisit = 'the same page'")
    folder = stack.cameras / CAMERA_FOLDER
    folder.mkdir()
    shutil.copyfile(photos["astronaut"], folder / "visitor.jpg")

    def event_row():
        rows = [row for row in browser.find_all("tr[data-event]") if CAMERA_ID in row.text]
        return rows[0] if rows else None

    row = browser.wait(event_row, 90, what="the event in the pipeline page")
    assert browser.driver.execute_script("return window.consoleVisit") == "the same page"  # never reloaded
    level = next(c for c in row.get_attribute("class").split() if c.startswith("risk-") and c != "risk-row")
    assert level in ("risk-low", "risk-medium", "risk-high", "risk-critical")
    thumbnail = row.find_element("css selector", "img.thumb")
    browser.wait(
        lambda: browser.driver.execute_script("return arguments[0].naturalWidth", thumbnail) > 0,
        what="the thumbnail to load",
    )
    browser.wait_text("tr[data-camera]", CAMERA_ID)
    browser.shot("pipeline")


def test_acknowledge_the_alert(stack, browser):
    def alert():
        found = stack.api_get(f"/api/alerts?camera_id={CAMERA_ID}")["alerts"]
        return found[0] if found and found[0]["status"] in ("pending", "delivered") else None

    raised = until(alert, 30, "the event's alert")
    browser.go("/console/alerts")
    row = f'tr[data-alert="{raised["id"]}"]'
    browser.wait(lambda: browser.find_all(row), what="the alert row")
    browser.shot("alerts")
    browser.press(f'{row} button[title^="Acknowledge"]')
    browser.wait_text(".flash", "acknowledged")
    assert stack.api_get(f"/api/alerts/{raised['id']}")["status"] == "acknowledged"
    assert "acknowledged" in browser.text(row) and not browser.find_all(f'{row} button[title^="Acknowledge"]')
    browser.press(f'{row} button[title^="Dismiss"]')
    browser.wait_text(".flash", "dismissed")
    assert stack.api_get(f"/api/alerts/{raised['id']}")["status"] == "dismissed"
    assert not browser.find_all(f"{row} button")

    rule = next(r for r in stack.api_get("/api/alerts/rules")["rules"] if r["name"] == RULE)
    for action, enabled in (("Disable", False), ("Enable", True)):
        browser.press(f'tr[data-rule="{rule["id"]}"] button[title^="{action}"]')
        browser.wait_text(".flash", f"Rule {RULE} {action.lower()}d")
        assert stack.api_get(f"/api/alerts/rules/{rule['id']}")["enabled"] is enabled


def test_every_page_at_1280_px_and_at_phone_width(stack, browser):
    browser.console_errors()  # what came before is the other tests' business
    for page in PAGES:
        browser.go(f"/console/{page}")
        assert browser.find("h1").text, page
        assert not browser.find_all(".flash-error") or page == "workers", browser.flash()
        browser.shot(page)
        browser.phone_width()
        assert browser.overflows() <= 1, f"{page} is wider than a phone"
        browser.shot(f"{page}-phone", phone=True)
        browser.desktop()
        # every control is a native link, button or field the keyboard reaches; the first stop skips to the content
        assert browser.driver.execute_script(
            "return [...document.querySelectorAll('a[href], button, input, select')].every(e => e.tabIndex >= 0)"
        )
        browser.find("body").send_keys(Keys.TAB)
        assert browser.driver.switch_to.active_element.text == "Skip to the content"
    browser.go("/console/system")
    charts = browser.find_all("figure.chart")
    assert len(charts) == 3
    assert charts[0].find_elements("css selector", "polyline"), "the throughput chart has the pipeline's minute"
    assert "images detected" in charts[0].text
    # htmx and the pages run under the Content-Security-Policy without a single refusal or script error
    assert browser.console_errors() == []


def test_every_action_is_audited_with_the_user(stack):
    from app.core.db import session_scope
    from app.models import AuditLog

    with session_scope(stack.settings()) as session:
        rows = session.execute(select(AuditLog.action, AuditLog.actor, AuditLog.request_id)).all()
    mine = {action for action, actor, _ in rows if actor == "api_key:api-key"}
    for action in (
        "console_login",
        "queue_paused",
        "queue_resumed",
        "job_retried",
        "jobs_retried",
        "job_deleted",
        "jobs_deleted",
        "worker_stopped",
        "worker_started",
        "alert_acknowledged",
        "alert_dismissed",
        "alert_rule_updated",
    ):
        assert action in mine, (action, sorted(mine))
    assert all(request_id for action, actor, request_id in rows if action == "job_retried")


def test_credentials_without_an_operator_role_sign_in_read_only(stack, browser):
    browser.press("header form button")  # sign out
    browser.wait(lambda: browser.path.startswith("/console/login"), what="signing out")
    viewer = make_jwt(["viewer"], sub="night-viewer")
    sign_in(browser, viewer, kind="jwt")
    assert "read-only" in browser.text("header") and "night-viewer" in browser.text("header")
    assert not browser.find_all('button[title^="Pause"]')
    browser.go("/console/workers")
    assert not browser.find_all("td.actions button")
    browser.go("/console/queues")
    browser.shot("queues-read-only")
    http, token = signed_in_session(stack, viewer, kind="jwt")
    r = http.post(
        f"{stack.url}/console/queues/cleanup/pause", data={"csrf_token": token}, allow_redirects=False, timeout=30
    )
    assert r.status_code == 403 and "Read-only session" in r.text
    assert not queue_paused(stack, "cleanup")
    expired = make_jwt(["ops"], expires_in=-10)
    r = requests.Session()
    form = r.get(f"{stack.url}/console/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    refused = r.post(
        f"{stack.url}/console/login", data={"kind": "jwt", "credential": expired, "csrf_token": token}, timeout=30
    )
    assert refused.status_code == 401 and "Token expired" in refused.text
