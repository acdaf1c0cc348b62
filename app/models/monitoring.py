"""Tables of the AI Monitoring API: per-agent rollups of finished jobs, metric alert
rules and the alerts they raise.

Rollups are additive counters per (span, bucket, agent, model), written by the registry archiver in
the transaction that archives the jobs, so a dashboard over a million jobs reads a few dozen rows
instead of scanning `jobs`. Latency is kept as a fixed histogram (`h0`..`h13`, bounds in
`app/monitoring/rollups.py`) so percentiles can be summed across buckets.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow

HISTOGRAM_BUCKETS = 14


class MonitoringRollup(Base):
    """Finished jobs of one agent (and model) in one bucket of `span` seconds starting at `bucket`."""

    __tablename__ = "monitoring_rollups"
    __table_args__ = (Index("ix_monitoring_rollups_span_bucket", "span", "bucket"),)

    span: Mapped[int] = mapped_column(Integer, primary_key=True)  # 60, 3600 or 86400
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds, a multiple of span
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)  # "" when the job named none
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    successes: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_sum_ms: Mapped[float] = mapped_column(Float, default=0.0)
    latency_max_ms: Mapped[float] = mapped_column(Float, default=0.0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    err_timeout: Mapped[int] = mapped_column(BigInteger, default=0)
    err_rate_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    err_model_error: Mapped[int] = mapped_column(BigInteger, default=0)
    err_rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    err_other: Mapped[int] = mapped_column(BigInteger, default=0)
    h0: Mapped[int] = mapped_column(BigInteger, default=0)
    h1: Mapped[int] = mapped_column(BigInteger, default=0)
    h2: Mapped[int] = mapped_column(BigInteger, default=0)
    h3: Mapped[int] = mapped_column(BigInteger, default=0)
    h4: Mapped[int] = mapped_column(BigInteger, default=0)
    h5: Mapped[int] = mapped_column(BigInteger, default=0)
    h6: Mapped[int] = mapped_column(BigInteger, default=0)
    h7: Mapped[int] = mapped_column(BigInteger, default=0)
    h8: Mapped[int] = mapped_column(BigInteger, default=0)
    h9: Mapped[int] = mapped_column(BigInteger, default=0)
    h10: Mapped[int] = mapped_column(BigInteger, default=0)
    h11: Mapped[int] = mapped_column(BigInteger, default=0)
    h12: Mapped[int] = mapped_column(BigInteger, default=0)
    h13: Mapped[int] = mapped_column(BigInteger, default=0)


class MonitoringAlertRule(Base):
    """One rule of the set PUT /api/v1/monitoring/alerts/rules replaces as a whole."""

    __tablename__ = "monitoring_alert_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(200))
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # null: every agent
    metric: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(8))
    threshold: Mapped[float] = mapped_column(Float)
    duration_minutes: Mapped[float] = mapped_column(Float, default=0.0)
    severity: Mapped[str] = mapped_column(String(16))
    channels: Mapped[list] = mapped_column(JSONType, default=list)
    recipients: Mapped[list] = mapped_column(JSONType, default=list)
    auto_remediate: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MonitoringAlert(Base):
    """An alert a rule raised for one agent: active while its condition holds, then resolved."""

    __tablename__ = "monitoring_alerts"
    __table_args__ = (
        Index("ix_monitoring_alerts_status", "status"),
        Index("ix_monitoring_alerts_agent_rule", "agent_id", "rule_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    rule_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    rule_name: Mapped[str] = mapped_column(String(200))
    agent_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # active | acknowledged | resolved
    title: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    metric: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(8))
    threshold: Mapped[float] = mapped_column(Float)
    current: Mapped[float | None] = mapped_column(Float, nullable=True)
    triggered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_occurrence: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    occurrence_count: Mapped[int] = mapped_column(Integer, default=1)
    acknowledged_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True)
    root_cause: Mapped[str | None] = mapped_column(Text, nullable=True)
    remediation_attempts: Mapped[int] = mapped_column(Integer, default=0)
