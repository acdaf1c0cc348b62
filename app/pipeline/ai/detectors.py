"""Object detectors behind one interface: a built-in CPU backend and an HTTP model-server backend.

* `BuiltinDetector` needs no download: OpenCV's HOG people detector and its Haar frontal-face
  cascade both ship in the `opencv-python-headless` 4.x wheel (5.0 dropped `CascadeClassifier`).
  It runs on one core and finds people (full body) and faces, so `make run` detects out of the box.
* `HttpDetector` posts the image to a YOLO/RT-DETR style server (`POST {url}/detect`, multipart
  field `file`) that answers `{"detections": [{"class", "confidence", "bbox": {x, y, width,
  height}}], "inference_time_ms"}`. Timeouts, connection errors, 5xx and answers that are not that
  shape are service failures (they count towards the breaker); a 4xx is the service refusing this
  one image (`ServiceRejected`), which does not.

Both return boxes in the original image's pixel coordinates with a 0-1 confidence; the detection
task applies `detection_confidence_threshold` and the breaker.
"""

from __future__ import annotations

import importlib.util
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.settings import Settings, SettingsError
from app.models import BUILTIN_OBJECT_TYPES, COCO_OBJECT_TYPES
from app.pipeline.ai.breakers import ServiceRejected
from app.pipeline.ai.http_backend import ThreadLocalSession


class DetectorUnavailable(RuntimeError):
    """The detector could not answer (timeout, connection refused, 5xx, malformed answer)."""


class UnreadableImage(ServiceRejected):
    """The image cannot be decoded: retrying will not help, and the detector is not at fault."""


@dataclass
class Detection:
    object_type: str
    confidence: float
    x: int
    y: int
    width: int
    height: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "object_type": self.object_type,
            "confidence": round(self.confidence, 4),
            "bbox": {"x": self.x, "y": self.y, "width": self.width, "height": self.height},
        }


@dataclass
class DetectionResult:
    detections: list[Detection]
    inference_time_ms: float
    image_size: tuple[int, int] | None = None  # (width, height) when known
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The decoded frame (OpenCV's BGR array) when this process decoded it: thumbnails are cut from it
    # instead of decoding the file a second time. None from the HTTP backend. Never serialised.
    image: Any = field(default=None, repr=False, compare=False)


class Detector(Protocol):
    name: str  # backend name: builtin | http
    service: str  # breaker / AI service name
    classes: tuple[str, ...]  # the object types it reports (lower case)
    display_name: str
    url: str | None

    def detect(self, path: Path) -> DetectionResult: ...

    def probe(self, timeout: float) -> tuple[bool, str | None]: ...


# ---- built-in: OpenCV on the CPU ----------------------------------------------------------------
def _squash(weight: float, scale: float) -> float:
    """Map an unbounded detector score (SVM margin, cascade stage sum) to 0-1, monotonically.

    Neither HOG nor a Haar cascade gives a probability; `1 - exp(-w/scale)` keeps their order, maps
    0 to 0, and puts the scores of clear hits above the default 0.5 threshold and marginal hits
    (HOG margins below ~0.7, the usual false positives) below it.
    """
    return max(0.0, min(1.0, 1.0 - math.exp(-max(0.0, weight) / scale)))


class BuiltinDetector:
    """HOG people + Haar faces, tuned for >= 10 frames/s at 640x480 on one core (bench P6)."""

    name = "builtin"
    service = "detector"
    classes = BUILTIN_OBJECT_TYPES
    display_name = "OpenCV HOG people + Haar face detector (built-in, CPU)"
    url = None

    WORK_MAX_SIDE = 640  # images are scaled down to this before detection
    HOG_SCALE = 1.2  # pyramid step; 1.05 is ~4x slower for little gain on camera stills
    FACE_DOWNSCALE = 2  # faces are searched on a half-size image: 3-4x faster, same hits
    FACE_SCALE = 1.2  # cascade pyramid step; 1.1 finds the same faces ~1.7x slower

    FACE_CASCADE = "haarcascade_frontalface_default.xml"
    # Model zoo names (app/pipeline/ai/usage.py, GET /api/system/models): both run on every image.
    HOG_MODEL = "opencv-hog-people"
    FACE_MODEL = "opencv-haar-frontalface"
    MODELS = (HOG_MODEL, FACE_MODEL)

    def __init__(self) -> None:
        self._local = threading.local()  # OpenCV detectors are not thread-safe; one set per thread
        self.load_times: dict[str, float] = {}  # ms each model took to load, in this process

    @property
    def cv2(self) -> Any:
        import cv2  # imported where detection runs, not in every process that names the backend

        cv2.setNumThreads(1)  # one core per detection; workers scale by processes
        return cv2

    def _models(self):
        models = getattr(self._local, "models", None)
        if models is None:
            cv2 = self.cv2
            t0 = time.perf_counter()
            hog = cv2.HOGDescriptor()
            hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
            t1 = time.perf_counter()
            face = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / self.FACE_CASCADE))
            if face.empty():
                raise DetectorUnavailable("the Haar face cascade shipped with OpenCV could not be loaded")
            t2 = time.perf_counter()
            self.load_times = {self.HOG_MODEL: round((t1 - t0) * 1000, 3), self.FACE_MODEL: round((t2 - t1) * 1000, 3)}
            models = self._local.models = (hog, face)
        return models

    def warm(self) -> None:
        """Load this thread's models now, so the first image does not wait for them."""
        self._models()

    def detect(self, path: Path) -> DetectionResult:
        cv2 = self.cv2
        t0 = time.perf_counter()
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UnreadableImage(f"cannot decode image {Path(path).name}")
        return self.detect_array(image, t0)

    def detect_array(self, image: Any, t0: float | None = None) -> DetectionResult:
        cv2 = self.cv2
        t0 = time.perf_counter() if t0 is None else t0
        height, width = image.shape[:2]
        scale = min(1.0, self.WORK_MAX_SIDE / max(height, width))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        hog, face = self._models()
        found: list[Detection] = []

        def add(kind: str, conf: float, box: Any, factor: float) -> None:
            x, y, w, h = (int(round(float(v) * factor)) for v in box)
            x, y = max(0, x), max(0, y)
            found.append(Detection(kind, conf, x, y, min(w, width - x), min(h, height - y)))

        t_hog = time.perf_counter()
        rects, weights = hog.detectMultiScale(gray, winStride=(8, 8), padding=(8, 8), scale=self.HOG_SCALE)
        t_face = time.perf_counter()
        for box, weight in zip(rects, list(weights.ravel()) if len(rects) else []):
            add("person", _squash(float(weight), 1.0), box, 1 / scale)

        small = cv2.resize(
            gray, None, fx=1 / self.FACE_DOWNSCALE, fy=1 / self.FACE_DOWNSCALE, interpolation=cv2.INTER_AREA
        )
        small = cv2.equalizeHist(small)
        boxes, _levels, level_weights = face.detectMultiScale3(
            small, scaleFactor=self.FACE_SCALE, minNeighbors=5, minSize=(20, 20), outputRejectLevels=True
        )
        for box, weight in zip(boxes, list(level_weights.ravel()) if len(boxes) else []):
            add("face", _squash(float(weight), 2.0), box, self.FACE_DOWNSCALE / scale)
        t_end = time.perf_counter()
        elapsed = (t_end - t0) * 1000
        # Each model's own inference time (the face search includes its resize and equalisation).
        models = {self.HOG_MODEL: round((t_face - t_hog) * 1000, 3), self.FACE_MODEL: round((t_end - t_face) * 1000, 3)}
        return DetectionResult(
            found, round(elapsed, 2), (width, height), self.name, {"model_times_ms": models}, image=image
        )

    def probe(self, timeout: float) -> tuple[bool, str | None]:
        """Installed and complete, checked without importing OpenCV into the probing process (the
        API): the package and the cascade file it loads must be there."""
        spec = importlib.util.find_spec("cv2")
        if spec is None or not spec.submodule_search_locations:
            return False, "opencv-python-headless is not installed"
        cascade = Path(list(spec.submodule_search_locations)[0]) / "data" / self.FACE_CASCADE
        if not cascade.is_file():
            return False, f"{self.FACE_CASCADE} missing (opencv-python-headless 5.x dropped the cascades; need 4.x)"
        return True, None


# ---- HTTP model server ----------------------------------------------------------------------------
class _BBox(BaseModel):
    x: float
    y: float
    width: float = Field(ge=0)
    height: float = Field(ge=0)


class _RemoteDetection(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    object_class: str = Field(alias="class", min_length=1, max_length=64)
    confidence: float = Field(ge=0, le=1)
    bbox: _BBox


class _RemoteAnswer(BaseModel):
    detections: list[_RemoteDetection]
    inference_time_ms: float | None = None


def _health_info(answer: Any) -> dict[str, Any]:
    """What a model server's `/health` answer says about its model, in the registry's terms: `model`
    (or `model_name`), `vram_mb`, `load_time_ms`, `device`; missing or odd values are left out."""
    if not isinstance(answer, dict):
        return {}
    info: dict[str, Any] = {}
    name = answer.get("model", answer.get("model_name"))
    if isinstance(name, str) and 0 < len(name.strip()) <= 128:
        info["model"] = name.strip()
    for key in ("vram_mb", "load_time_ms"):
        value = answer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            info[key] = float(value)
    if isinstance(answer.get("device"), str):
        info["device"] = answer["device"][:64]
    return info


class HttpDetector(ThreadLocalSession):
    name = "http"
    service = "detector"
    classes = COCO_OBJECT_TYPES  # what a YOLO/RT-DETR server trained on COCO answers (lower-cased)

    INFO_TTL = 60.0  # seconds a /health answer names the model before it is asked again
    # Usage is recorded under this key, not the model's name: the worker need not ask the server what
    # it runs on every detection, and a server that swaps its model keeps its history (the registry
    # shows the name the server reports now).
    USAGE_KEY = "http-detector"

    def __init__(self, url: str, timeout: float, model: str = "http-detector"):

        if not url:
            raise SettingsError("VIGIL_DETECTOR_URL is required when VIGIL_DETECTOR_BACKEND=http")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.configured_model = model or "http-detector"
        self.display_name = f"HTTP object detector at {self.url}"
        self._requests = requests
        self._info: tuple[float, dict[str, Any]] | None = None

    def info(self, timeout: float | None = None, max_age: float | None = None) -> dict[str, Any]:
        """The server's `/health` answer about its model (`_health_info`), cached `INFO_TTL`; `{}`
        when it cannot say (unreachable, not JSON): the configured name then stands."""
        max_age = self.INFO_TTL if max_age is None else max_age
        cached = self._info
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return cached[1]
        try:
            response = self._requests.get(f"{self.url}/health", timeout=timeout or min(2.0, self.timeout))
            info = _health_info(response.json()) if 200 <= response.status_code < 300 else {}
        except (requests.RequestException, ValueError):
            info = {}
        self._info = (time.monotonic(), info)
        return info

    def model_name(self) -> str:
        """The registry name of the server's model: as `/health` names it, else as configured."""
        return self.info().get("model") or self.configured_model

    def detect(self, path: Path) -> DetectionResult:
        data = Path(path).read_bytes()
        response, elapsed = self.post(
            "/detect", "detector", DetectorUnavailable, files={"file": (Path(path).name, data)}
        )
        try:
            answer = _RemoteAnswer.model_validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise DetectorUnavailable(
                f"detector answer is not the expected JSON: {first['msg']} at "
                f"{'.'.join(str(p) for p in first['loc']) or 'top level'}"
            ) from None
        found = [
            Detection(
                d.object_class.lower(),
                d.confidence,
                int(round(d.bbox.x)),
                int(round(d.bbox.y)),
                int(round(d.bbox.width)),
                int(round(d.bbox.height)),
            )
            for d in answer.detections
        ]
        inference_ms = round(answer.inference_time_ms if answer.inference_time_ms is not None else elapsed, 2)
        return DetectionResult(
            found,
            inference_ms,
            None,
            self.name,
            {"round_trip_ms": round(elapsed, 2), "model_times_ms": {self.USAGE_KEY: inference_ms}},
        )

    def probe(self, timeout: float) -> tuple[bool, str | None]:
        return probe_http(self._requests, f"{self.url}/health", timeout)


def probe_http(
    requests: Any, url: str, timeout: float, headers: dict[str, str] | None = None
) -> tuple[bool, str | None]:
    """GET `url` with a short timeout: healthy on any 2xx."""
    try:
        response = requests.get(url, timeout=timeout, headers=headers or {})
    except requests.RequestException as exc:
        return False, f"{type(exc).__name__}: unreachable"
    if not 200 <= response.status_code < 300:
        return False, f"HTTP {response.status_code}"
    return True, None


# Each backend's class names without building a detector (the API lists them, alert rules are checked against them).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    BuiltinDetector.name: BuiltinDetector.classes,
    HttpDetector.name: HttpDetector.classes,
}

_detectors: dict[tuple[str, str, float, str], Detector] = {}
_lock = threading.Lock()


def get_detector(settings: Settings) -> Detector:
    """The configured detector, one per process (the built-in one loads its models once)."""
    key = (settings.detector_backend, settings.detector_url, settings.detector_timeout, settings.detector_model)
    with _lock:
        detector = _detectors.get(key)
        if detector is None:
            if settings.detector_backend == "builtin":
                detector = BuiltinDetector()
            elif settings.detector_backend == "http":
                detector = HttpDetector(settings.detector_url, settings.detector_timeout, settings.detector_model)
            else:
                raise SettingsError(
                    f"VIGIL_DETECTOR_BACKEND must be 'builtin' or 'http', not {settings.detector_backend!r}"
                )
            _detectors[key] = detector
    return detector
