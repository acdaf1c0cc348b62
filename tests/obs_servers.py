"""Real servers the observability tests need besides those in tests/servers.py (the gunicorn API is
`tests.servers.ApiServer`): a Prometheus server, and an RSS sampler for a process."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from tests.servers import free_port, wait_for


def prometheus_binary() -> str | None:
    for candidate in (os.environ.get("VIGIL_PROMETHEUS_SERVER"), shutil.which("prometheus")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class PrometheusServer:
    """A real Prometheus on a free port, with a generated config and a temporary storage dir."""

    def __init__(self, binary: str, scrape_configs: list[dict]):
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-prom-"))
        self.proc: subprocess.Popen | None = None
        self.write_config(scrape_configs)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, scrape_configs: list[dict]) -> None:
        import yaml

        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "5s"},
            "scrape_configs": scrape_configs,
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def start(self) -> PrometheusServer:
        self._log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited:\n" + (self.dir / "prometheus.log").read_text()[-3000:])
            return requests.get(self.url + "/-/ready", timeout=1).ok

        wait_for(ready, 60, interval=0.2, what="prometheus ready")
        return self

    def reload(self, scrape_configs: list[dict]) -> None:
        self.write_config(scrape_configs)
        requests.post(self.url + "/-/reload", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class RssSampler:
    """Samples a process's resident memory every `interval` seconds on a thread; `peak` is the most seen."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
                self.samples += 1
            except psutil.Error:
                return
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
