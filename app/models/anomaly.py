from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class AnomalyBaseline(Base):
    """One camera's activity in one hour of the week (`slot` 0-167, Monday 00:00 site time is 0) for
    one metric (`detections_per_batch`, `events_per_hour`): an exponentially weighted mean and
    variance, updated by each analysed event (app/pipeline/anomaly.py). In SQL so that a restart
    keeps what weeks of events taught."""

    __tablename__ = "anomaly_baselines"

    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    mean: Mapped[float] = mapped_column(Float, default=0.0)
    variance: Mapped[float] = mapped_column(Float, default=0.0)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
