"""What the HTTP AI backends (detector, LLM) share: a requests session per thread, and one
reading of what an answer means for the circuit breaker.

A `requests.Session` keeps the connection to the model server open between calls, but it is not
safe to share between threads (the API probes backends from its worker threads).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from app.pipeline.ai.breakers import ServiceRejected


class ThreadLocalSession:
    _local: threading.local
    url: str
    timeout: float

    def post(self, path: str, what: str, unavailable: type[Exception], **kwargs: Any) -> tuple[Any, float]:
        """POST to the service; returns (200 response, elapsed ms). A timeout, a connection error or
        a 5xx raises `unavailable` (counts against the breaker); a 4xx raises `ServiceRejected`
        (the service is up and said no: it does not trip the breaker)."""

        t0 = time.perf_counter()
        try:
            response = self._session().post(f"{self.url}{path}", timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise unavailable(f"{what} timed out after {self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise unavailable(f"{what} unreachable: {type(exc).__name__}") from exc
        elapsed = (time.perf_counter() - t0) * 1000
        if 400 <= response.status_code < 500:
            raise ServiceRejected(f"{what} refused the request: HTTP {response.status_code} {response.text[:200]}")
        if response.status_code != 200:
            raise unavailable(f"{what} answered HTTP {response.status_code}")
        return response, elapsed

    def _session(self) -> Any:

        local = self.__dict__.setdefault("_local", threading.local())
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        return session
