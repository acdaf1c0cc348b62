"""Detection family (queues `detection:high`, `detection`).

The work is `app.pipeline.detections.process_image`; this module owns the retry policy:

* breaker open: retry when it will let a trial call through (`retry_after`), not before;
* detector unavailable (timeout, 5xx, malformed answer): retried by Celery (`autoretry_for`) with
  jittered exponential backoff, a random countdown between 0 and 2 s, 4 s, 8 s, ... so that images
  failing together (the detector restarting) do not all come back at the same moment;
* image refused or unreadable, path outside the camera root: fail at once, retrying cannot help.

Retries are capped (`MAX_RETRIES`, countdowns at most `RETRY_COUNTDOWN_MAX` from app/celery/config.py,
which the visibility timeout in docs/architecture.md accounts for); a job that runs out stays
`failed` in the registry, where the operations API can retry it.
"""

from __future__ import annotations

import time

from app.celery.app import celery
from app.celery.config import RETRY_COUNTDOWN_MAX
from app.core.settings import get_settings
from app.pipeline.ai.breakers import CircuitOpenError
from app.pipeline.ai.detectors import DetectorUnavailable
from app.pipeline.detections import process_image

MAX_RETRIES = 12


@celery.task(
    name="vigil.detection.detect",
    bind=True,
    soft_time_limit=50,
    time_limit=60,
    max_retries=MAX_RETRIES,
    autoretry_for=(DetectorUnavailable,),
    retry_backoff=2,
    retry_backoff_max=RETRY_COUNTDOWN_MAX,
    retry_jitter=True,
)
def detect(self, camera_id: str, path: str, file_hash: str | None = None, seen_at: float | None = None) -> dict:
    """Run the detector on one image and feed the camera's batch."""
    started_at = time.time()
    try:
        outcome = process_image(
            get_settings(),
            job_id=self.request.id,
            camera_id=camera_id,
            path=path,
            file_hash=file_hash,
            seen_at=seen_at,
            started_at=started_at,
            first_attempt=self.request.retries == 0,
        )
    except CircuitOpenError as exc:
        raise self.retry(exc=exc, countdown=min(RETRY_COUNTDOWN_MAX, max(1.0, exc.retry_after)))
    return outcome.as_dict()
