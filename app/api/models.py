"""Model zoo and anomaly detection configuration (System Operations API "Model Zoo",
"Anomaly Detection Configuration")."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.respond import dependencies_required, who
from app.ops import models as zoo
from app.pipeline import anomaly
from app.pipeline.anomaly import AnomalyConfigUpdate

bp = Blueprint("models", __name__)

ZOO_TAGS = ["model-zoo"]
Status = Literal["loaded", "unloaded", "disabled", "error"]
MODEL_NAME = Field(min_length=1, max_length=128, description="A model's `name` as the registry lists it")
NO_MODEL = {404: "No model of that name in the registry"}
_FIRST = "$response.body#/models/0/name"
MODEL_LINKS = {
    "GetModel": Link("models.get_model", {"model_name": _FIRST}),
    "GetModelLatency": Link("models.latency_history", {"model": _FIRST}),
}


class ModelPath(BaseModel):
    model_name: str = MODEL_NAME


class ModelLatencyQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = MODEL_NAME
    since: int = Field(60, ge=1, le=1440, description="Minutes of history (1-1440)")
    bucket_seconds: int = Field(60, ge=10, le=3600, description="Bucket size in seconds (10-3600)")


class ModelEntry(Answer):
    name: str
    category: str = Field(description="detection, recognition, ocr, embedding, depth-estimation, pose, llm")
    status: Status = Field(
        description="loaded (its backend answered recently), unloaded, disabled (not the configured backend), error"
    )
    vram_mb: int | None = Field(description="NVML per-process memory, else the server's report or configuration")
    last_used: str | None = Field(description="Last inference a job recorded")
    enabled: bool = Field(description="Its backend is the configured detector or analyser")
    load_time_ms: float | None = Field(description="Time its backend took to load it, when known")
    inference_count: int = Field(description="Inferences the detection and analysis jobs recorded")
    backend: Literal["builtin", "http", "llm"]


class ModelRegistry(Answer):
    vram_budget_mb: int | None = Field(description="VIGIL_VRAM_BUDGET_MB, else the GPUs' total; null without both")
    vram_used_mb: int = Field(description="VRAM of the loaded models, where known")
    vram_available_mb: int | None
    models: list[ModelEntry]


class CompactModel(Answer):
    name: str
    category: str
    status: Status
    vram_mb: int | None


class CategoryCount(Answer):
    loaded: int
    total: int


class ZooStatus(Answer):
    models: list[CompactModel]
    categories: dict[str, CategoryCount] = Field(description="Every category, with its loaded and total models")
    timestamp: str


class ModelLatencySnapshot(Answer):
    timestamp: str = Field(description="Start of the bucket (UTC)")
    avg_ms: float
    p50_ms: float
    p95_ms: float
    sample_count: int


class ModelLatencyHistory(Answer):
    model: str
    snapshots: list[ModelLatencySnapshot] = Field(description="Buckets that hold inferences, oldest first")
    count: int


class AnomalyConfig(Answer):
    threshold_stdev: float = Field(description="Standard deviations from the baseline that make an anomaly")
    min_samples: int = Field(description="Events an hour-of-week slot must have seen before its events are judged")
    decay_factor: float = Field(description="Weight of each new event in the EWMA mean and variance")
    window_days: int = Field(description="A slot not updated for this many days starts over")


@bp.get("/api/system/models")
@endpoint(
    response=ModelRegistry,
    summary="Model registry: every model, its status, use and VRAM",
    tags=ZOO_TAGS,
    links=MODEL_LINKS,
)
def list_models():
    """Server models are probed (bounded by the health timeout); counts and times are what the
    detection and analysis jobs recorded."""
    with dependencies_required():
        return zoo.registry(current_settings())


@bp.get("/api/system/models/<path:model_name>")
@endpoint(path=ModelPath, response=ModelEntry, summary="One model's status and use", tags=ZOO_TAGS, errors=NO_MODEL)
def get_model(model_name: str):
    with dependencies_required():
        return zoo.model(current_settings(), model_name)


@bp.get("/api/system/model-zoo/status")
@endpoint(
    response=ZooStatus,
    summary="Compact model status and loaded/total per category",
    tags=ZOO_TAGS,
    links=MODEL_LINKS,
)
def zoo_status():
    with dependencies_required():
        return zoo.zoo_status(current_settings())


@bp.get("/api/system/model-zoo/latency/history")
@endpoint(
    query=ModelLatencyQuery,
    response=ModelLatencyHistory,
    summary="One model's inference times, bucketed (avg, p50, p95)",
    tags=ZOO_TAGS,
    errors=NO_MODEL,
)
def latency_history(query: ModelLatencyQuery):
    """Only buckets that hold inferences are listed; bucket starts are aligned to the epoch."""
    with dependencies_required():
        return zoo.latency_history(current_settings(), query.model, query.since, query.bucket_seconds)


@bp.get("/api/system/anomaly-config")
@endpoint(response=AnomalyConfig, summary="Anomaly detection configuration", tags=["anomaly"])
def get_anomaly_config():
    with dependencies_required():
        return anomaly.config(current_settings())


@bp.patch("/api/system/anomaly-config")
@endpoint(
    body=AnomalyConfigUpdate,
    response=AnomalyConfig,
    summary="Update threshold_stdev and min_samples (audited; next event)",
    tags=["anomaly"],
)
def patch_anomaly_config(body: AnomalyConfigUpdate):
    """Only `threshold_stdev` and `min_samples`; `decay_factor` or `window_days` in the body is a
    422 naming them (they shape the stored baselines). The change is audited (`settings_changed`,
    resource `anomaly_config`) and judges the next event, without a restart."""
    with dependencies_required():
        return anomaly.update_config(current_settings(), body, who())
