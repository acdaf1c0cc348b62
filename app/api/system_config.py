"""Runtime configuration and severity thresholds (003/004)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("system_config", __name__)
