"""GPU statistics (003/004)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("gpu", __name__)
