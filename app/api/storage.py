"""Storage statistics (003/004)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("storage", __name__)
