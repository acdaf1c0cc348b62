from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntPK, UTCDateTime, utcnow

# The object types the detectors report, here (below both the pipeline and the alerts) so that alert
# rules can be checked against them: app/pipeline/ai/detectors.py exposes them per backend.
BUILTIN_OBJECT_TYPES = ("person", "face")  # OpenCV HOG people + Haar frontal faces
# An HTTP detector is a YOLO / RT-DETR style server, trained on COCO unless told otherwise: its 80 classes.
COCO_OBJECT_TYPES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
OBJECT_TYPES = tuple(dict.fromkeys(BUILTIN_OBJECT_TYPES + COCO_OBJECT_TYPES))  # every backend's, built-in first


class Detection(Base):
    """One object found in one image; stage timestamps feed the pipeline-latency figures.

    The indexes follow the listings (GET /api/detections): newest first per camera or per object
    type, with `id` as the tie-breaker a cursor needs, then the other filter columns, so counts and
    skipped rows are read from the index alone (see Event). `(batch_id, object_type)` serves a
    batch's detections and the events filtered by object type without reading the rows; `job_id` is
    how a repeated detection job finds its own rows (once per image) and how an image's boxes are found.
    On PostgreSQL the per-camera and per-type counts have narrow deduplicated indexes (see Event):
    a camera's 50,000 detections count in a third of the time the wide index takes.
    """

    __tablename__ = "detections"
    __table_args__ = (
        Index("ix_detections_camera_detected", "camera_id", "detected_at", "id", "object_type", "confidence"),
        Index("ix_detections_type_detected", "object_type", "detected_at", "id", "camera_id", "confidence"),
        Index("ix_detections_batch_type", "batch_id", "object_type"),
        Index("ix_detections_camera_count", "camera_id").ddl_if(dialect="postgresql"),
        Index("ix_detections_type_count", "object_type").ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    file_path: Mapped[str] = mapped_column(String(1024))
    file_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    object_type: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float)
    bbox_x: Mapped[int] = mapped_column(Integer)
    bbox_y: Mapped[int] = mapped_column(Integer)
    bbox_width: Mapped[int] = mapped_column(Integer)
    bbox_height: Mapped[int] = mapped_column(Integer)
    thumbnail_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
