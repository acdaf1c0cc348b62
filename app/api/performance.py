"""Performance metrics and history (004)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("performance", __name__)
