"""Analysis family (queue `analysis`)."""
from __future__ import annotations

from workers.celery_app import celery


@celery.task(name="vigil.analysis.analyze", soft_time_limit=240, time_limit=300)
def analyze(batch_id: str, **metadata) -> dict:
    """Score a closed detection batch and create its event."""
    raise NotImplementedError("the analyser is built by the pipeline issue (#4)")
