"""The one Celery application every process shares: the API and the domain publish and control
through it, the workers (`celery -A workers`) run it with their hooks installed.

The app is built here, below the domain packages, so that a service can send a task or a remote
control command without importing the workers package (the import cycle that once made the
supervisor answer 500). Task modules are named in `include`, not imported.
"""

from __future__ import annotations

from celery import Celery

from app.celery import transport
from app.celery.config import TASK_MODULES, build_config
from app.core.settings import Settings, get_settings

transport.install()  # before any connection: see app/celery/transport.py


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from `settings` (the environment's by default)."""
    settings = settings or get_settings()
    app = Celery("vigil", include=list(TASK_MODULES))
    app.conf.update(build_config(settings))
    return app


celery = create_celery()
