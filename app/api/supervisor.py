"""Worker supervisor (001)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("supervisor", __name__)
