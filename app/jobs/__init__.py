"""Jobs: enqueue and validation, job operations, the job registry, broker recovery, heartbeats and
queue pause state.

Importing the package connects the registry's Celery signal receivers and the job metrics, so any
process that publishes through the shared app (API, worker, beat) records what it publishes.
"""

from app.jobs import signals  # noqa: F401  (connects receivers)
from app.observability import job_metrics  # noqa: F401  (connects receivers)
