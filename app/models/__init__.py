"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

from app.models.alert import Alert, AlertCooldown, AlertRule
from app.models.audit import AuditLog
from app.models.base import Base, utcnow
from app.models.batch import DetectionBatch
from app.models.camera import Camera
from app.models.config import RuntimeConfig
from app.models.destination import GLOBAL_SCOPE, AlertDestination
from app.models.detection import BUILTIN_OBJECT_TYPES, COCO_OBJECT_TYPES, OBJECT_TYPES, Detection
from app.models.event import Event
from app.models.export import LogExport
from app.models.job import Job
from app.models.log import Log
from app.models.upload import Upload
from app.models.worker_ops import GpuStat, PerformanceSnapshot, WorkerRestartEvent

__all__ = [
    "BUILTIN_OBJECT_TYPES",
    "COCO_OBJECT_TYPES",
    "GLOBAL_SCOPE",
    "OBJECT_TYPES",
    "Alert",
    "AlertCooldown",
    "AlertDestination",
    "AlertRule",
    "AuditLog",
    "Base",
    "Camera",
    "Detection",
    "DetectionBatch",
    "Event",
    "GpuStat",
    "Job",
    "Log",
    "LogExport",
    "PerformanceSnapshot",
    "RuntimeConfig",
    "Upload",
    "WorkerRestartEvent",
    "utcnow",
]
