"""Runtime configuration and severity thresholds (003/004)."""
from __future__ import annotations

from flask import Blueprint

from app.api.kit.current import current_settings, current_version
from app.api.kit.endpoint import endpoint
from app.api.kit.respond import dependencies_required
from app.api.kit.respond import who
from app.pipeline import runtime_config
from app.pipeline.runtime_config import ConfigUpdate, SeverityUpdate

bp = Blueprint("system_config", __name__)



@bp.get("/api/system/config")
@endpoint(summary="Public configuration (no secrets)", tags=["config"])
def get_config():
    with dependencies_required():
        return runtime_config.public_config(current_settings(), current_version())


@bp.patch("/api/system/config")
@endpoint(body=ConfigUpdate, summary="Update runtime configuration (audited as settings_changed)",
          tags=["config"])
def patch_config(body: ConfigUpdate):
    with dependencies_required():
        runtime_config.update_config(current_settings(), body, who())
        return runtime_config.public_config(current_settings(), current_version())


@bp.get("/api/system/severity")
@endpoint(summary="Severity levels and the risk-score thresholds between them", tags=["config"])
def get_severity():
    with dependencies_required():
        return runtime_config.severity_definitions(runtime_config.thresholds(current_settings(), fresh=True))


@bp.put("/api/system/severity")
@endpoint(body=SeverityUpdate, summary="Update severity thresholds (strictly ordered; audited)", tags=["config"])
def put_severity(body: SeverityUpdate):
    with dependencies_required():
        return runtime_config.severity_definitions(runtime_config.update_thresholds(current_settings(), body, who()))
