"""Circuit breakers (004)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("breakers", __name__)
