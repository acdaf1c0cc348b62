"""HTTP layer: one blueprint per area. Handlers validate, call a service, shape the response."""

from __future__ import annotations

from flask import Flask

from app.api import (
    ai_monitoring,
    alerts,
    batches,
    breakers,
    cameras,
    cleanup,
    detections,
    events,
    gpu,
    health,
    infrastructure,
    logs,
    metrics,
    models,
    monitoring,
    notification_preferences,
    notifications,
    openapi,
    performance,
    pipeline,
    queues,
    services,
    storage,
    supervisor,
    system_config,
    websocket,
)
from app.api.kit.auth import init_auth
from app.api.kit.errors import register_error_handlers
from app.api.kit.instrumentation import init_instrumentation
from app.api.kit.request_ids import init_request_ids
from app.api.kit.routing import init_routing

BLUEPRINTS = (
    health.bp,
    openapi.bp,
    queues.bp,
    infrastructure.bp,  # platform API queue operations
    pipeline.bp,
    system_config.bp,
    breakers.bp,  # pipeline
    supervisor.bp,
    services.bp,
    gpu.bp,
    performance.bp,
    cleanup.bp,
    storage.bp,  # worker operations
    logs.bp,
    metrics.bp,
    monitoring.bp,  # observability
    notifications.bp,
    alerts.bp,  # notifications and alert rules
    notification_preferences.bp,
    cameras.bp,
    events.bp,
    detections.bp,
    batches.bp,  # core resources
    websocket.bp,  # live events over WebSocket
    models.bp,  # model zoo and anomaly configuration
    ai_monitoring.bp,  # AI Monitoring API
)


def register(app: Flask) -> None:
    register_error_handlers(app)
    init_auth(app)
    init_request_ids(app)
    init_instrumentation(app)
    init_routing(app)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
