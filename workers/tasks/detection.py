"""Detection family (queues `detection:high`, `detection`).

The work is `app.pipeline.detections.process_image`; this module owns the retry policy:

* breaker open: retry when it will let a trial call through (`retry_after`), not before;
* detector unavailable (timeout, 5xx, malformed answer): retry with exponential backoff;
* image refused or unreadable, path outside the camera root: fail at once, retrying cannot help.

Retries are capped (`MAX_RETRIES`, countdowns at most `MAX_COUNTDOWN`, which the visibility
timeout in docs/architecture.md accounts for); a job that runs out stays `failed` in the
registry, where the operations API can retry it.
"""
from __future__ import annotations

import time

from app.pipeline.ai.breakers import CircuitOpenError
from app.pipeline.detections import process_image
from app.pipeline.ai.detectors import DetectorUnavailable
from app.core.settings import get_settings
from app.celery.app import celery

MAX_RETRIES = 12
MAX_COUNTDOWN = 300


def backoff(retries: int) -> float:
    return float(min(MAX_COUNTDOWN, 2 ** (retries + 1)))


@celery.task(name="vigil.detection.detect", bind=True, soft_time_limit=50, time_limit=60,
             max_retries=MAX_RETRIES)
def detect(self, camera_id: str, path: str, file_hash: str | None = None, seen_at: float | None = None) -> dict:
    """Run the detector on one image and feed the camera's batch."""
    started_at = time.time()
    try:
        outcome = process_image(get_settings(), job_id=self.request.id, camera_id=camera_id, path=path,
                                file_hash=file_hash, seen_at=seen_at, started_at=started_at,
                                first_attempt=self.request.retries == 0)
    except CircuitOpenError as exc:
        raise self.retry(exc=exc, countdown=min(MAX_COUNTDOWN, max(1.0, exc.retry_after)))
    except DetectorUnavailable as exc:
        raise self.retry(exc=exc, countdown=backoff(self.request.retries))
    return outcome.as_dict()
