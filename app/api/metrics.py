"""Prometheus metrics (004)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("metrics", __name__)
