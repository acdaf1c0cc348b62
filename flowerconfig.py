"""Flower reads this file from the working directory: same port setting as the rest (FLOWER_PORT)."""
from app.core.settings import get_settings

_settings = get_settings()

port = _settings.flower_port
address = _settings.host
# Flower's task list is in memory; Vigil's job registry (/api/v1/platform/system/...) is the
# durable record. Keep enough tasks to be useful without unbounded growth.
max_tasks = 10000
