"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

from app.models.alert import Alert, AlertCooldown, AlertRule
from app.models.anomaly import AnomalyBaseline
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
from app.models.monitoring import MonitoringAlert, MonitoringAlertRule, MonitoringRollup
from app.models.notification_prefs import (
    CameraNotificationSetting,
    HeldNotification,
    NotificationPreferences,
    QuietHoursPeriod,
)
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
    "AnomalyBaseline",
    "AuditLog",
    "Base",
    "Camera",
    "CameraNotificationSetting",
    "Detection",
    "DetectionBatch",
    "Event",
    "GpuStat",
    "HeldNotification",
    "Job",
    "Log",
    "LogExport",
    "MonitoringAlert",
    "MonitoringAlertRule",
    "MonitoringRollup",
    "NotificationPreferences",
    "PerformanceSnapshot",
    "QuietHoursPeriod",
    "RuntimeConfig",
    "Upload",
    "WorkerRestartEvent",
    "utcnow",
]
