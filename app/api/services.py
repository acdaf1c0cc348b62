"""Managed services (004)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("services", __name__)
