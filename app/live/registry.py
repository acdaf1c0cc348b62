"""Every live event type, declared once as a pydantic payload model.

The registry endpoint's JSON Schemas and examples, the payloads producers build (`bus.publish`
validates through the same model) and the tests' schema checks all read `EVENT_TYPES`, so what
`GET /api/system/websocket/events` documents is what `/ws/events` sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CHANNELS: dict[str, str] = {
    "detections": "AI detection pipeline events",
    "events": "Security event lifecycle events",
    "alerts": "Alert notifications and state changes",
    "cameras": "Camera status and configuration",
    "jobs": "Background job lifecycle events",
    "system": "System health and status events",
}


class Payload(BaseModel):
    """Base of every payload: a field the model does not name is a producer bug, not a bonus."""

    model_config = ConfigDict(extra="forbid")


class DetectionNew(Payload):
    detection_id: int
    camera_id: str
    object_type: str
    confidence: float = Field(ge=0, le=1)
    bbox: list[int] = Field(description="x, y, width, height in pixels", min_length=4, max_length=4)
    batch_id: str | None = Field(description="The camera's batch the detection joined")
    job_id: str
    detected_at: str | None


class EventCreated(Payload):
    event_id: int
    camera_id: str
    batch_id: str
    risk_score: int = Field(ge=0, le=100)
    risk_level: str
    summary: str | None
    detection_count: int
    is_anomaly: bool
    analyser: str


class EventUpdated(Payload):
    event_id: int
    camera_id: str
    risk_score: int | None
    reviewed: bool
    notes: str | None
    changed: list[str] = Field(description="The fields the review changed")


class AlertPayload(Payload):
    alert_id: str
    event_id: int | None
    camera_id: str | None
    rule_id: str | None
    severity: str | None
    status: str
    risk_score: int | None = None


class AlertDelivered(Payload):
    alert_id: str
    camera_id: str | None
    channel: str = Field(description="The notification channel: email, webhook, ...")
    delivered: bool = Field(description="False when the channel gave up (the alert's delivery failed)")
    status: str = Field(description="The alert's status after this delivery")


class CameraStatusChanged(Payload):
    camera_id: str
    status: Literal["online", "silent", "offline"]
    previous: Literal["unknown", "online", "silent", "offline"]
    reason: Literal["first_seen", "silent", "offline", "back"]
    last_seen_at: str | None


class JobPayload(Payload):
    job_id: str
    task: str | None
    queue: str | None


class JobProgress(JobPayload):
    progress: dict[str, Any] = Field(description="What the task reported (counts, percent)")


class JobCompleted(JobPayload):
    runtime_ms: float | None


class JobFailed(JobPayload):
    error: str


class QueueState(Payload):
    queue: str
    status: Literal["paused", "active"]


class WorkerStatusChanged(Payload):
    worker: str
    status: str
    previous: str | None = Field(
        description="The status this worker last had on the stream; null for the first since the service host started"
    )
    pid: int | None = Field(description="Its process id where the supervisor knows it (a service: the host's)")
    message: str | None


class HealthChanged(Payload):
    status: Literal["healthy", "degraded", "unhealthy"]
    previous: Literal["healthy", "degraded", "unhealthy", "unknown"]
    components: dict[str, str] = Field(description="Each checked component's verdict")


class Connected(Payload):
    connection_id: str
    channels: list[str]
    filters: dict[str, Any]
    resume: dict[str, Any] | None = Field(description="requested id, replayed count, complete (no gap)")
    heartbeat_seconds: float
    buffer_messages: int


class Subscribed(Payload):
    channels: list[str]
    filters: dict[str, Any]


class ClientError(Payload):
    message: str


@dataclass(frozen=True)
class EventType:
    name: str
    channel: str
    model: type[Payload]
    description: str
    example: dict[str, Any]
    deprecated: bool = False
    control: bool = False  # sent to one connection whatever it subscribed to

    def entry(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "channel": self.channel,
            "description": self.description,
            "deprecated": self.deprecated,
            "payload_schema": self.model.model_json_schema(),
            "example": self.example,
        }


_ALERT = {
    "alert_id": "3f2c9d1e6b7a4c58",
    "event_id": 456,
    "camera_id": "front_door",
    "rule_id": "night-person",
    "severity": "high",
    "risk_score": 75,
}
_JOB = {"job_id": "6f1c2b3a-0d4e-4f5a-9b8c-7d6e5f4a3b2c", "task": "vigil.detect", "queue": "detection"}

_TYPES = [
    EventType(
        "detection.new",
        "detections",
        DetectionNew,
        "New detection from AI pipeline (one per object kept above the confidence threshold)",
        {
            "detection_id": 123,
            "camera_id": "front_door",
            "object_type": "person",
            "confidence": 0.95,
            "bbox": [120, 80, 64, 180],
            "batch_id": "front_door:1735000000",
            "job_id": _JOB["job_id"],
            "detected_at": "2025-12-23T10:30:00Z",
        },
    ),
    EventType(
        "event.created",
        "events",
        EventCreated,
        "New security event created (a closed batch was scored)",
        {
            "event_id": 456,
            "camera_id": "front_door",
            "batch_id": "front_door:1735000000",
            "risk_score": 75,
            "risk_level": "high",
            "summary": "Person detected at front door",
            "detection_count": 3,
            "is_anomaly": False,
            "analyser": "rules",
        },
    ),
    EventType(
        "event.updated",
        "events",
        EventUpdated,
        "Security event modified (reviewed, notes) through PATCH /api/events/{id}",
        {
            "event_id": 456,
            "camera_id": "front_door",
            "risk_score": 75,
            "reviewed": True,
            "notes": "Delivery driver",
            "changed": ["reviewed", "notes"],
        },
    ),
    EventType(
        "alert.created", "alerts", AlertPayload, "An alert rule matched an event", {**_ALERT, "status": "pending"}
    ),
    EventType(
        "alert.acknowledged",
        "alerts",
        AlertPayload,
        "An operator acknowledged an alert",
        {**_ALERT, "status": "acknowledged"},
    ),
    EventType(
        "alert.dismissed", "alerts", AlertPayload, "An operator dismissed an alert", {**_ALERT, "status": "dismissed"}
    ),
    EventType(
        "alert.delivered",
        "alerts",
        AlertDelivered,
        "A notification channel delivered an alert (or gave up on it)",
        {
            "alert_id": _ALERT["alert_id"],
            "camera_id": "front_door",
            "channel": "email",
            "delivered": True,
            "status": "delivered",
        },
    ),
    EventType(
        "camera.status_changed",
        "cameras",
        CameraStatusChanged,
        "Camera first seen, silent past VIGIL_CAMERA_SILENT_AFTER_SECONDS, offline past "
        "VIGIL_CAMERA_OFFLINE_AFTER_SECONDS, or back",
        {
            "camera_id": "front_door",
            "status": "silent",
            "previous": "online",
            "reason": "silent",
            "last_seen_at": "2025-12-23T10:00:00Z",
        },
    ),
    EventType(
        "job.progress",
        "jobs",
        JobProgress,
        "A long job reported progress",
        {**_JOB, "task": "vigil.cleanup", "queue": "cleanup", "progress": {"deleted": 120, "percent": 40}},
    ),
    EventType("job.completed", "jobs", JobCompleted, "A job finished", {**_JOB, "runtime_ms": 84.2}),
    EventType("job.failed", "jobs", JobFailed, "A job failed for good", {**_JOB, "error": "InvalidImagePath: ..."}),
    EventType(
        "queue.paused", "jobs", QueueState, "An operator paused a queue", {"queue": "analysis", "status": "paused"}
    ),
    EventType(
        "queue.resumed", "jobs", QueueState, "An operator resumed a queue", {"queue": "analysis", "status": "active"}
    ),
    EventType(
        "worker.status_changed",
        "system",
        WorkerStatusChanged,
        "A supervised worker started, stopped, crashed or was restarted",
        {"worker": "detection_worker", "status": "running", "previous": "restarting", "pid": 4242, "message": None},
    ),
    EventType(
        "system.health_changed",
        "system",
        HealthChanged,
        "The overall health verdict changed",
        {
            "status": "degraded",
            "previous": "healthy",
            "components": {"database": "healthy", "redis": "healthy", "ai": "unhealthy"},
        },
    ),
    EventType(
        "system.connected",
        "system",
        Connected,
        "First message of every connection: its id, subscription and what was replayed",
        {
            "connection_id": "a1b2c3d4",
            "channels": ["detections", "events"],
            "filters": {"camera_id": "front_door"},
            "resume": {"requested": "1735000000000-0", "replayed": 12, "complete": True},
            "heartbeat_seconds": 20.0,
            "buffer_messages": 1024,
        },
        control=True,
    ),
    EventType(
        "system.subscribed",
        "system",
        Subscribed,
        "Answer to a subscribe/unsubscribe message: the connection's subscription now",
        {"channels": ["detections", "events", "alerts"], "filters": {}},
        control=True,
    ),
    EventType(
        "system.error",
        "system",
        ClientError,
        "A message from the client was not understood (the connection stays open)",
        {"message": "unknown channel 'foo'"},
        control=True,
    ),
]

EVENT_TYPES: dict[str, EventType] = {t.name: t for t in _TYPES}


def registry() -> dict[str, Any]:
    """The body of GET /api/system/websocket/events."""
    entries = [t.entry() for t in _TYPES]
    return {
        "event_types": entries,
        "channels": list(CHANNELS),
        "total_count": len(entries),
        "deprecated_count": sum(1 for t in _TYPES if t.deprecated),
    }
