"""Pipeline status, telemetry, latency and stats (001/003/004)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("pipeline", __name__)
