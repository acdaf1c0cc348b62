"""What the HTTP AI backends (detector, LLM) share: a requests session per thread.

A `requests.Session` keeps the connection to the model server open between calls, but it is not
safe to share between threads (the API probes backends from its worker threads).
"""
from __future__ import annotations

import threading
from typing import Any


class ThreadLocalSession:
    _local: threading.local

    def _session(self) -> Any:
        import requests

        local = self.__dict__.setdefault("_local", threading.local())
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        return session
