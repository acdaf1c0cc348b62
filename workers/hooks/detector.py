"""Detection workers get their detector ready before the first image, not inside it.

The built-in detector imports OpenCV and numpy (about 0.1 s) and loads its two models (about 10 ms)
the first time it is used. Left to the first task, every pool process that starts, or is restarted
by the supervisor, pays that inside a job that an operator sees as slow, and it counts against the
pipeline's throughput (bench P13). So the detection group's parent imports OpenCV before it forks
(its pages then stay shared with the pool processes, as `gc.freeze()` keeps the rest), and each pool
process loads its models as it starts. Other groups and the HTTP backend import nothing here.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from app.celery.queues import WORKER_GROUPS, group_of, queue_for
from app.core.settings import get_settings

log = logging.getLogger(__name__)


def _runs_builtin_detector(node: str) -> bool:
    """The node's group consumes the detection queues, and the detector is the built-in one."""
    return queue_for("detection") in WORKER_GROUPS.get(group_of(node), ()) and (
        get_settings().detector_backend == "builtin"
    )


@signals.worker_init.connect(weak=False)
def _import_before_fork(sender: Any = None, **_: Any) -> None:
    if not _runs_builtin_detector(getattr(sender, "hostname", "") or ""):
        return
    try:
        import cv2  # noqa: F401  (for its side effect: loaded once, shared after the fork)
    except ImportError:  # the worker still starts; each job reports the missing detector
        log.warning("OpenCV is not importable; the built-in detector will fail its jobs", exc_info=True)


@signals.worker_process_init.connect(weak=False)
def _load_models(sender: str | None = None, **_: Any) -> None:  # sender: the node name
    if not _runs_builtin_detector(sender or ""):
        return
    from app.pipeline.ai.detectors import BuiltinDetector, get_detector

    try:
        detector = get_detector(get_settings())
        if isinstance(detector, BuiltinDetector):
            detector.warm()
            log.info("detector models loaded in %.0f ms: %s", sum(detector.load_times.values()), detector.load_times)
    except Exception:  # the first job reports the detector's failure in its own result
        log.warning("the detector could not load its models before the first job", exc_info=True)
