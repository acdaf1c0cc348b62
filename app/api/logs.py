"""Logs: /api/logs (004) and /api/v1/platform/system/logs (000)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("logs", __name__)
