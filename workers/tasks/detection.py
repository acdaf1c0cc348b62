"""Detection family (queues `detection:high`, `detection`)."""
from __future__ import annotations

from workers.celery_app import celery


@celery.task(name="vigil.detection.detect", soft_time_limit=50, time_limit=60)
def detect(camera_id: str, path: str, **metadata) -> dict:
    """Run the detector on one image and feed the camera's batch."""
    raise NotImplementedError("the detector is built by the pipeline issue (#4)")
