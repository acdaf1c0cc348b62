"""Prometheus stack health and targets (001)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("monitoring", __name__)
