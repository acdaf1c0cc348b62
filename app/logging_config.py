"""Logging for every Vigil process: one format, with request and job ids on each line."""
from __future__ import annotations

import logging
import sys

from app.context import component_var, job_id_var, request_id_var

FORMAT = "%(asctime)s %(levelname)s [%(component)s] %(name)s req=%(request_id)s job=%(job_id)s: %(message)s"


class ContextFilter(logging.Filter):
    """Stamps records with the current request id, job id and component."""

    def __init__(self, component: str = "vigil"):
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or request_id_var.get() or "-"
        record.job_id = getattr(record, "job_id", None) or job_id_var.get() or "-"
        record.component = getattr(record, "component", None) or component_var.get() or self.component
        return True


def configure_logging(level: str = "INFO", component: str = "vigil") -> None:
    """Install the context-aware handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "_vigil", False):
            handler.setLevel(level)
            return
    handler = logging.StreamHandler(sys.stderr)
    handler._vigil = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter(component))
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
