"""Prometheus metrics for every Vigil process, served by the API at `/api/metrics`.

gunicorn runs several API processes and Celery runs a pool of children per worker, so a metric
kept in one process's memory would show a different number on every scrape. prometheus-client's
multiprocess mode is the answer: each process writes its values into memory-mapped files in one
directory, and a scrape merges every file. The directory is `VIGIL_METRICS_DIR/<hostname>`: one
sub-folder per host, because containers sharing a volume each have their own pid 1, 7, ... and
would otherwise write the same file names.

What other code calls (cheap: a dict lookup and an mmap write each):

* `observe_stage(stage, seconds)` / `time_stage(stage)`: pipeline stage latencies;
* `set_gpu(index, ...)` / `gpu_gone(index)`: GPU gauges, from the GPU monitor;
* the HTTP and job metrics are recorded by hooks (`app/api/kit/instrumentation.py`,
  `app/observability/job_metrics.py`).

Queue depth, registry counts and live workers are *not* recorded by anyone: a collector in
`app/jobs/metrics.py` reads them
from Redis at scrape time (a few pipelined calls), so they are exact whenever Prometheus looks.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from app.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


# --- the multiprocess directory -----------------------------------------------------------------
def process_dir(settings: Settings | None = None) -> Path:
    """This host's sub-folder of the metrics directory."""
    settings = settings or get_settings()
    return Path(settings.metrics_dir) / socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids(directory: Path) -> set[int]:
    found = set()
    for path in directory.glob("*.db"):
        tail = path.stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            found.add(int(tail))
    return found


def prepare(settings: Settings | None = None) -> Path:
    """Start-up housekeeping of this host's metrics folder; every process may call it.

    When no process that wrote a file is alive, this is a fresh start of the host: the folder is
    emptied so counters of a previous run do not linger forever. Otherwise only the live-gauge
    files of dead processes are removed (counters of dead processes stay, so totals never go
    backwards while the system runs). A file lock keeps two starting processes from racing.
    """
    directory = process_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        me = os.getpid()
        pids = _pids(directory) - {me}
        alive = {pid for pid in pids if _pid_alive(pid)}
        if not alive:
            for path in directory.glob("*.db"):
                if not path.stem.endswith(f"_{me}"):
                    path.unlink(missing_ok=True)
        else:
            for pid in pids - alive:
                mark_process_dead(pid, str(directory))
    return directory


def process_dead(pid: int, settings: Settings | None = None) -> None:
    """A process of this host is gone: drop its live gauges (gunicorn child_exit, pool children)."""
    try:
        mark_process_dead(pid, str(process_dir(settings)))
    except OSError:
        log.debug("mark_process_dead(%s) failed", pid, exc_info=True)


def _enable_multiprocess() -> None:
    directory = process_dir()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


_enable_multiprocess()  # before the first metric below is created

# --- metrics ----------------------------------------------------------------------------------------
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

HTTP_REQUESTS = Counter("http_requests_total", "Total HTTP requests", ["method", "endpoint", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by endpoint (URL rule)",
    ["method", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
JOBS_PUBLISHED = Counter("vigil_jobs_published_total", "Jobs sent to a queue", ["queue", "task"])
JOBS = Counter(
    "vigil_jobs_total",
    "Jobs finished by a worker, by queue and outcome (succeeded, failed, retried, revoked)",
    ["queue", "task", "outcome"],
)
TASK_DURATION = Histogram(
    "vigil_task_duration_seconds", "Time a worker spent running a task", ["queue", "task"], buckets=TASK_BUCKETS
)
STAGE_LATENCY = Histogram(
    "vigil_pipeline_stage_duration_seconds", "Latency of one pipeline stage", ["stage"], buckets=LATENCY_BUCKETS
)
DETECTION_LATENCY = Histogram("detection_latency_seconds", "Detection processing latency", buckets=LATENCY_BUCKETS)
GPU_UTILIZATION = Gauge(
    "gpu_utilization_percent", "Current GPU utilization", ["gpu"], multiprocess_mode="livemostrecent"
)
GPU_MEMORY_USED = Gauge("gpu_memory_used_bytes", "GPU memory in use", ["gpu"], multiprocess_mode="livemostrecent")
GPU_MEMORY_TOTAL = Gauge("gpu_memory_total_bytes", "GPU memory size", ["gpu"], multiprocess_mode="livemostrecent")
GPU_TEMPERATURE = Gauge("gpu_temperature_celsius", "GPU temperature", ["gpu"], multiprocess_mode="livemostrecent")
GPU_POWER = Gauge("gpu_power_watts", "GPU power draw", ["gpu"], multiprocess_mode="livemostrecent")
GPU_AVAILABLE = Gauge(
    "gpu_available",
    "1 while the GPU monitor sees the GPU, 0 once it disappeared",
    ["gpu"],
    multiprocess_mode="livemostrecent",
)
LOG_DROPPED = Counter(
    "vigil_log_records_dropped_total", "Log records dropped because the database sink's buffer was full"
)
LOG_BUFFERED = Gauge(
    "vigil_log_records_buffered",
    "Log records waiting for the database, all live processes",
    multiprocess_mode="livesum",
)
LOG_WRITE_FAILURES = Counter("vigil_log_write_failures_total", "Failed batched writes of log records")

_GPU_GAUGES = {
    "utilization_percent": GPU_UTILIZATION,
    "memory_used_bytes": GPU_MEMORY_USED,
    "memory_total_bytes": GPU_MEMORY_TOTAL,
    "temperature_celsius": GPU_TEMPERATURE,
    "power_watts": GPU_POWER,
}


# --- the API other code calls ---------------------------------------------------------------------------
def observe_stage(stage: str, seconds: float) -> None:
    """Record one pipeline stage's latency (stage names: detection, batching, analysis, notification...)."""
    STAGE_LATENCY.labels(stage).observe(seconds)
    if stage == "detection":
        DETECTION_LATENCY.observe(seconds)  # the name the System Operations API's example shows


@contextmanager
def time_stage(stage: str) -> Iterator[None]:
    """`with time_stage("analysis"): ...` observes the block's duration, also when it raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(stage, time.perf_counter() - started)


def set_gpu(
    index: int | str,
    *,
    utilization_percent: float | None = None,
    memory_used_bytes: float | None = None,
    memory_total_bytes: float | None = None,
    temperature_celsius: float | None = None,
    power_watts: float | None = None,
) -> None:
    """Publish one GPU's readings; values left None are not changed."""
    gpu = str(index)
    readings = {
        "utilization_percent": utilization_percent,
        "memory_used_bytes": memory_used_bytes,
        "memory_total_bytes": memory_total_bytes,
        "temperature_celsius": temperature_celsius,
        "power_watts": power_watts,
    }
    for name, value in readings.items():
        if value is not None:
            _GPU_GAUGES[name].labels(gpu).set(float(value))
    GPU_AVAILABLE.labels(gpu).set(1)


def gpu_gone(index: int | str) -> None:
    """The GPU disappeared: availability 0, readings 0 (stale numbers would look healthy)."""
    gpu = str(index)
    for gauge in _GPU_GAUGES.values():
        gauge.labels(gpu).set(0)
    GPU_AVAILABLE.labels(gpu).set(0)


# --- the scrape -----------------------------------------------------------------------------------------
class _AllHostsCollector:
    """Merges the files of every host folder (a MultiProcessCollector reads only one folder)."""

    def __init__(self, root: Path):
        self.root = root

    def collect(self):
        files = glob.glob(os.path.join(str(self.root), "*", "*.db"))
        return MultiProcessCollector.merge(files, accumulate=True)


def render(settings: Settings | None = None, live: Iterable[Any] = ()) -> bytes:
    """The exposition text of every process of every host, plus the `live` collectors' readings
    (the jobs package's queue and registry gauges, read from Redis at scrape time)."""
    settings = settings or get_settings()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_AllHostsCollector(Path(settings.metrics_dir)))
    for collector in live:
        registry.register(collector)
    return generate_latest(registry)


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples named `name` whose labels include `labels`, parsed with prometheus-client's
    own parser (tests and operators' scripts use it to read /api/metrics)."""

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total
