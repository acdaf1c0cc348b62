"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""
from app.models.audit import AuditLog
from app.models.base import Base, utcnow
from app.models.camera import Camera
from app.models.config import RuntimeConfig
from app.models.detection import Detection
from app.models.event import Event
from app.models.job import Job
from app.models.log import Log

__all__ = ["AuditLog", "Base", "Camera", "Detection", "Event", "Job", "Log", "RuntimeConfig", "utcnow"]

# worker operations (issue 5)
from app.models.worker_ops import GpuStat, PerformanceSnapshot, WorkerRestartEvent  # noqa: E402

__all__ += ["GpuStat", "PerformanceSnapshot", "WorkerRestartEvent"]
