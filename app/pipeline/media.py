"""A detection's media: the original image it was found in (optionally with the boxes drawn) and its
thumbnail, served by GET /api/detections/{id}/image and /thumbnail.

The paths come from the database, and a row can be wrong (restored from elsewhere, a camera root
that moved, a path edited by hand), so nothing is served on the row's word: the path is resolved
(symlinks included) and must lie inside the camera root (originals) or the thumbnail directory
(thumbnails), and be a file. Anything else is a 404 that says why, the same answer as a missing
file, so the API never reads outside those two trees.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.core.db import session_scope
from app.core.errors import NotFound
from app.core.settings import Settings
from app.jobs.enqueue import resolve_in_root
from app.models import Detection

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
BOX_COLOUR = (0, 200, 255)  # BGR: amber for the other objects of the image
CHOSEN_COLOUR = (0, 0, 255)  # red for the detection asked about


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _load(settings: Settings, detection_id: int) -> Detection:
    with session_scope(settings) as session:
        row = session.get(Detection, detection_id)
        if row is None:
            raise NotFound(f"No detection with id {detection_id}", code="detection_not_found")
        return row


def _inside(path: str | None, root: Path, what: str, detection_id: int) -> Path:
    if not path:
        raise NotFound(f"Detection {detection_id} has no {what}", code="media_not_found")
    try:
        real = resolve_in_root(path, root)
    except ValueError:
        raise NotFound(
            f"The {what} of detection {detection_id} is not inside {root}; it is not served", code="media_not_found"
        ) from None
    if not real.is_file():
        raise NotFound(f"The {what} of detection {detection_id} is gone ({real.name})", code="media_not_found")
    return real


def image_file(settings: Settings, detection_id: int) -> Path:
    """The original image, checked to be a file inside the camera root."""
    return _inside(_load(settings, detection_id).file_path, Path(settings.camera_root), "image", detection_id)


def thumbnail_file(settings: Settings, detection_id: int) -> Path:
    """The thumbnail, checked to be a file inside the thumbnail directory."""
    row = _load(settings, detection_id)
    return _inside(row.thumbnail_path, Path(settings.thumbnail_dir), "thumbnail", detection_id)


def image_with_boxes(settings: Settings, detection_id: int) -> bytes:
    """The original as JPEG with every detection of the same image boxed and labelled (type and
    confidence), the one asked about in red. The image's detections are the rows of the same job
    (one job per image), or of the same file for rows without a job."""
    import cv2  # loaded on the first request that draws, not in every API process at start

    row = _load(settings, detection_id)
    path = _inside(row.file_path, Path(settings.camera_root), "image", detection_id)
    with session_scope(settings) as session:
        same = Detection.job_id == row.job_id if row.job_id else Detection.file_path == row.file_path
        boxes = list(session.execute(select(Detection).where(same).order_by(Detection.id)).scalars())
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise NotFound(f"The image of detection {detection_id} cannot be decoded", code="media_not_found")
    thickness = max(2, round(max(image.shape[:2]) / 400))
    for d in sorted(boxes, key=lambda d: d.id == detection_id):  # the chosen one drawn last, on top
        colour = CHOSEN_COLOUR if d.id == detection_id else BOX_COLOUR
        x0, y0 = int(d.bbox_x), int(d.bbox_y)
        cv2.rectangle(image, (x0, y0), (x0 + int(d.bbox_width), y0 + int(d.bbox_height)), colour, thickness)
        label = f"{d.object_type} {d.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(0, y0 - th - base - 2)
        cv2.rectangle(image, (x0, top), (x0 + tw + 4, top + th + base + 2), colour, cv2.FILLED)
        cv2.putText(image, label, (x0 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"the image of detection {detection_id} could not be encoded as JPEG")
    return encoded.tobytes()
