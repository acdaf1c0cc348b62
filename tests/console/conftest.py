"""A running Vigil of the console tests' own, and one headless Chromium to drive it.

The stack is the real thing, started as the Procfile starts it: the API under gunicorn (which serves the console),
the service host (`python -m workers.host`: file watcher, batch closer, supervisor), and Celery workers of the
detection, analysis and notification groups, on a Redis database lent by the session server, a SQLite database and
a `var` folder of the module's own. Alerts post to a local webhook server, so they are delivered.

The browser is Debian's chromium driven through its chromedriver (scripts/ensure-chromium installs both; `make test`
exports VIGIL_CHROMIUM), headless, with a fresh profile, and kept off every network but this machine's loopback.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.ai_servers import ScriptedServer
from tests.helpers import API_KEY, worker_env
from tests.servers import ROOT, ApiServer, CeleryWorker, new_log, wait_for

SCREENSHOTS = ROOT / "var" / "console-screenshots"
GROUPS = {
    "detection_worker": ["detection:high", "detection"],
    "analysis_worker": ["analysis"],
    "notification_worker": ["notification:high", "notification"],
}
DESKTOP = (1280, 900)
PHONE = (390, 844)


@dataclass
class ConsoleStack:
    url: str
    env: dict[str, str]
    var: Path
    cameras: Path
    database_url: str
    redis_url: str
    api: ApiServer
    host: subprocess.Popen
    host_log: str
    workers: dict[str, CeleryWorker] = field(default_factory=dict)
    http: requests.Session = field(default_factory=requests.Session)

    def api_get(self, path: str) -> Any:
        r = self.http.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def api_send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A mutating API request with the API key."""
        return self.http.request(method, self.url + path, headers={"X-API-Key": API_KEY}, timeout=30, **kwargs)

    def canary(self, queue: str, **kwargs: Any) -> str:
        """A `vigil.system.canary` job on `queue`, published on this stack's broker; its id."""
        from app.celery.app import create_celery

        celery = create_celery(self.settings())
        job_id = f"console-{uuid.uuid4().hex[:12]}"
        with celery.connection_for_write() as conn:
            celery.send_task("vigil.system.canary", kwargs=kwargs, queue=queue, task_id=job_id, connection=conn)
        return job_id

    def job_state(self, job_id: str) -> str | None:
        """What the API says of the job: its status, or None once it is gone."""
        r = self.http.get(f"{self.url}/api/v1/platform/system/jobs/{job_id}", timeout=30)
        return r.json()["data"]["status"] if r.status_code == 200 else None

    def settings(self) -> Any:
        """Settings pointing at this stack's Redis database and SQL database, for checks from the test process."""
        from app.core.settings import Settings

        return Settings.from_env(
            redis_url=self.redis_url,
            broker_url=self.redis_url,
            result_backend=self.redis_url,
            database_url=self.database_url,
            var_dir=self.var,
            camera_root=self.cameras,
        )


def _stop_host(host: subprocess.Popen) -> None:
    if host.poll() is None:
        os.killpg(host.pid, signal.SIGTERM)
        try:
            host.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait(5)


@pytest.fixture(scope="module")
def webhook() -> Iterator[ScriptedServer]:
    """Where the alert rules' `webhook` channel posts: it takes every notification."""
    server = ScriptedServer(lambda request: (200, {"ok": True}, 0)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(redis_databases, tmp_path_factory, webhook) -> Iterator[ConsoleStack]:
    from app.core.migrate import upgrade

    tmp = tmp_path_factory.mktemp("console")
    var, cameras = tmp / "var", tmp / "cameras"
    cameras.mkdir(parents=True)
    var.mkdir()
    database_url = f"sqlite:///{tmp}/vigil.db"
    upgrade(database_url)
    with redis_databases.lease() as db:
        env = worker_env(
            REDIS_URL=db.url,
            DATABASE_URL=database_url,
            VIGIL_VAR_DIR=str(var),
            VIGIL_CAMERA_ROOT=str(cameras),
            VIGIL_ALERT_WEBHOOK_URL=webhook.url,
            VIGIL_PROMETHEUS_URL="",
            VIGIL_LOG_LEVEL="WARNING",
        )
        for key in (
            "CELERY_BROKER_URL",
            "CELERY_RESULT_BACKEND",
            "VIGIL_THUMBNAIL_DIR",
            "VIGIL_CLIPS_DIR",
            "VIGIL_EXPORT_DIR",
            "VIGIL_METRICS_DIR",
            "VIGIL_SUPERVISORD_URL",
        ):
            env.pop(key, None)
        workers = {name: CeleryWorker(env, name, queues, concurrency=1) for name, queues in GROUPS.items()}
        api = ApiServer(env, workers=1, threads=8)
        host_log = new_log("vigil-console-host-")
        with open(host_log, "ab") as log:
            host = subprocess.Popen(
                [sys.executable, "-m", "workers.host"],
                cwd=str(ROOT),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            for worker in workers.values():
                worker.start(wait=False)
            api.start()
            for worker in workers.values():
                worker.wait_ready(60)
            yield ConsoleStack(api.url, env, var, cameras, database_url, db.url, api, host, host_log, workers)
        finally:
            api.stop()
            _stop_host(host)
            for worker in workers.values():
                worker.stop()


# ---- the browser ---------------------------------------------------------------------------------------------
def _chromium() -> tuple[str, str] | None:
    browser = os.environ.get("VIGIL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver and os.access(browser, os.X_OK) else None


class Browser:
    """A Selenium session with the few moves the tests make, each waiting for what a person would wait for."""

    def __init__(self, driver: Any, base: str):
        self.driver = driver
        self.base = base

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def path(self) -> str:
        return re.sub(r"^https?://[^/]+", "", self.driver.current_url)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str = "main") -> str:
        return self.find(css).text

    def wait(self, predicate: Callable[[], Any], timeout: float = 20, what: str = "the page") -> Any:
        return wait_for(predicate, timeout, interval=0.2, what=what)

    def wait_text(self, css: str, needle: str, timeout: float = 20) -> None:
        def shown() -> bool:
            return any(needle in element.text for element in self.find_all(css))

        self.wait(shown, timeout, what=f"{needle!r} in {css}")

    def press(self, css: str) -> None:
        """Reach a control with the keyboard and press it (Enter), as someone without a mouse would."""
        from selenium.webdriver.common.keys import Keys

        element = self.find(css)
        self.driver.execute_script("arguments[0].focus()", element)
        element.send_keys(Keys.ENTER)

    def click(self, css: str) -> None:
        self.find(css).click()

    def flash(self) -> str:
        return " ".join(element.text for element in self.find_all(".flash"))

    def _emulate(self, width: int, height: int, phone: bool) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone},
        )

    def phone_width(self) -> None:
        """Lay the page out as a phone would (its width, its viewport rules), until `desktop()`."""
        self._emulate(*PHONE, True)

    def desktop(self) -> None:
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def shot(self, name: str, phone: bool = False) -> Path:
        """A screenshot of the whole page, 1280 px wide (or a phone's width), under var/console-screenshots/."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        width, height = PHONE if phone else DESKTOP
        self._emulate(width, height, phone)
        full = self.driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
        self._emulate(width, max(height, min(full, 8000)), phone)
        data = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(data))
        self.desktop()
        return path

    def console_errors(self) -> list[str]:
        """What the page's console said at level SEVERE since the last call (script errors, refused resources)."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def overflows(self) -> int:
        """How many pixels the page is wider than the window (0: nothing needs horizontal scrolling)."""
        return int(
            self.driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
        )


@pytest.fixture(scope="module")
def browser(stack, tmp_path_factory) -> Iterator[Browser]:
    found = _chromium()
    if found is None:
        pytest.skip("no chromium with chromedriver: run `make test`, which installs Debian's (scripts/ensure-chromium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, chromedriver = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        # Nothing but this machine: every other host name resolves to nowhere.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console's errors, CSP refusals included
    service = Service(executable_path=chromedriver, log_output=new_log("vigil-chromedriver-"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield Browser(driver, stack.url)
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def short_windows(stack) -> None:
    """Batch window 6 s and idle timeout 3 s, set as an operator would (PATCH /api/system/config), so a dropped
    photograph becomes an event within seconds."""
    r = stack.api_send("PATCH", "/api/system/config", json={"batch_window_seconds": 6, "batch_idle_timeout_seconds": 3})
    assert r.status_code == 200, r.text
