"""Queue and job operations (000): /api/v1/platform/system/queues, /jobs."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("queues", __name__)
