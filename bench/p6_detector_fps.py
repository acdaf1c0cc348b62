"""Built-in detector frames per second on 640x480 images, one core.

The built-in backend (OpenCV HOG people + Haar faces, app/pipeline/ai/detectors.py) runs on real
photographs from scikit-image's wheel, resized to 640x480 and stored as JPEG, exactly as the
detection task calls it: read the file, decode, detect. The process is pinned to one core and
OpenCV to one thread.

Baseline, same frames, same core: reading and decoding the JPEG and converting it to grayscale,
the work every detector must do before it looks at a pixel. The ratio (detector fps / baseline
fps) says how much of the per-frame cost is detection itself; the goal is absolute: >= 10 fps.
"""

from __future__ import annotations

import os
import statistics
import time

from bench.harness import Context, Result, percentile

FRAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def _frames(ctx: Context) -> list[str]:
    import cv2
    from skimage import data

    paths = []
    for name in FRAMES:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        bgr = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (640, 480), interpolation=cv2.INTER_AREA)
        path = ctx.dir / f"{name}.jpg"
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def _time(fn, paths: list[str], n: int) -> list[float]:
    for p in paths[:3]:
        fn(p)  # warm-up: model load, page cache
    samples = []
    for i in range(n):
        path = paths[i % len(paths)]
        t0 = time.perf_counter()
        fn(path)
        samples.append(time.perf_counter() - t0)
    return samples


def run(ctx: Context, quick: bool = False) -> list[Result]:
    import cv2

    from app.pipeline.ai.detectors import BuiltinDetector

    paths = _frames(ctx)
    import psutil

    before = os.sched_getaffinity(0)
    load = psutil.cpu_percent(interval=0.5, percpu=True)
    core = min(before, key=lambda c: load[c] if c < len(load) else 100.0)  # the idlest core we may use
    os.sched_setaffinity(0, {core})
    cv2.setNumThreads(1)
    try:
        detector = BuiltinDetector()
        n = 36 if quick else 180
        found: dict[str, int] = {}

        def detect(path: str) -> None:
            result = detector.detect(path)
            found[os.path.basename(path)] = sum(1 for d in result.detections if d.confidence >= 0.5)

        det = _time(detect, paths, n)

        def decode(path: str) -> None:
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

        base = _time(decode, paths, n)
    finally:
        os.sched_setaffinity(0, before)
    fps = 1.0 / statistics.fmean(det)
    base_fps = 1.0 / statistics.fmean(base)
    ms = sorted(s * 1000 for s in det)
    return [
        Result(
            "P6",
            "built-in detector throughput, 640x480 JPEG, 1 core",
            round(fps, 2),
            "frames/s",
            baseline="JPEG read+decode+grayscale, same frames and core",
            baseline_value=round(base_fps, 1),
            ratio=round(fps / base_fps, 4),
            goal=">= 10 frames/s",
            met=fps >= 10,
            details={
                "frames": n,
                "core": core,
                "p50_ms": round(percentile(ms, 50), 2),
                "p95_ms": round(percentile(ms, 95), 2),
                "opencv": cv2.__version__,
                "detections_at_0.5": found,
            },
        )
    ]
