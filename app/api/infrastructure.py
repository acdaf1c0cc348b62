"""Infrastructure health, alerts and IP reputation (000)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("infrastructure", __name__)
