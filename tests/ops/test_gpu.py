"""The GPU monitor: the NVML path through an injected NVML-shaped object, the no-GPU path for real
(this machine has no driver), and the endpoints that read what it stores."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pynvml
import pytest
import redis
from sqlalchemy import func, select

from app import create_app
from app.core.db import session_scope
from app.core.settings import replace
from app.jobs.registry import JobRegistry
from app.models import GpuStat
from app.ops.gpu import NvmlSampler, inference_fps
from workers.host.services.gpu_monitor import GpuMonitor
from workers.host.supervisor import ServiceHost

MIB = 1024 * 1024


class FakeNVML:
    """Shaped like `pynvml`: the same function names, return shapes and exception classes."""

    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, devices: list[dict]):
        self.devices = devices
        self.inits = self.shutdowns = 0
        self.lost = False

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        if self.lost:
            raise pynvml.NVMLError_GpuIsLost()
        return self.devices[index]

    def nvmlDeviceGetName(self, handle):
        return handle["name"]

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=handle["util"], memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(
            used=handle["used_mb"] * MIB,
            total=handle["total_mb"] * MIB,
            free=(handle["total_mb"] - handle["used_mb"]) * MIB,
        )

    def nvmlDeviceGetTemperature(self, handle, sensor):
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return handle["temp"]

    def nvmlDeviceGetPowerUsage(self, handle):
        if handle.get("power_mw") is None:
            raise pynvml.NVMLError_NotSupported()
        return handle["power_mw"]


DEVICES = [
    {"name": "NVIDIA RTX A5500", "util": 75, "used_mb": 12000, "total_mb": 24000, "temp": 65, "power_mw": 150500},
    {"name": b"NVIDIA T4", "util": 5, "used_mb": 100, "total_mb": 15360, "temp": 40, "power_mw": None},
]


@pytest.fixture
def gpu_settings(settings, db_url, redis_db):
    return redis_db.settings(settings, database_url=db_url)


def test_nvml_path_stores_samples_and_the_api_serves_them(gpu_settings):
    fake = FakeNVML([dict(d) for d in DEVICES])
    monitor = GpuMonitor(gpu_settings, nvml=fake)
    monitor.sampler = NvmlSampler(fake)
    samples = monitor.poll_once()
    assert [s["gpu_name"] for s in samples] == ["NVIDIA RTX A5500", "NVIDIA T4"]
    first = samples[0]
    assert (
        first["utilization"],
        first["memory_used"],
        first["memory_total"],
        first["temperature"],
        first["power_usage"],
    ) == (75.0, 12000, 24000, 65.0, 150.5)
    assert samples[1]["power_usage"] is None  # not supported by that device: null, not an error
    assert monitor.status()["gpu_available"] is True and monitor.status()["gpu_count"] == 2

    api = create_app(gpu_settings).test_client()
    body = api.get("/api/system/gpu").get_json()
    assert body["gpu_name"] == "NVIDIA RTX A5500" and body["utilization"] == 75.0
    assert body["memory_used"] == 12000 and body["memory_total"] == 24000
    assert body["temperature"] == 65.0 and body["power_usage"] == 150.5 and body["inference_fps"] is None

    for util in (80, 85):
        fake.devices[0]["util"] = util
        time.sleep(0.01)
        monitor.poll_once()
    hist = api.get("/api/system/gpu/history").get_json()
    assert hist["count"] == 3 and hist["limit"] == 300
    assert [s["utilization"] for s in hist["samples"]] == [75.0, 80.0, 85.0]  # oldest first
    assert hist["samples"][0]["recorded_at"].endswith("Z")
    assert [s["utilization"] for s in api.get("/api/system/gpu/history?limit=2").get_json()["samples"]] == [80.0, 85.0]
    t4 = api.get("/api/system/gpu/history?gpu_index=1").get_json()
    assert t4["count"] == 3 and {s["gpu_name"] for s in t4["samples"]} == {"NVIDIA T4"}
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert api.get(f"/api/system/gpu/history?since={future}").get_json()["count"] == 0
    past = (datetime.now(UTC) - timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    assert api.get(f"/api/system/gpu/history?since={past}&limit=1").get_json()["samples"][0]["utilization"] == 75.0
    for bad in ("limit=0", "limit=5001", "limit=x", "since=yesterday", "gpu_index=-1", "nope=1"):
        r = api.get(f"/api/system/gpu/history?{bad}")
        assert r.status_code == 400 and "detail" in r.get_json(), bad


def test_a_lost_gpu_is_logged_once_and_retried(gpu_settings, caplog):
    fake = FakeNVML([dict(DEVICES[0])])
    monitor = GpuMonitor(gpu_settings, nvml=fake)
    monitor.sampler = NvmlSampler(fake)
    assert len(monitor.poll_once()) == 1
    fake.lost = True
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            assert monitor.poll_once() == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "GpuIsLost" in warnings[0].getMessage()
    assert monitor.sampler.ready is False and fake.shutdowns == 1
    fake.lost = False
    monitor._next_init = 0  # the retry is due
    assert len(monitor.poll_once()) == 1 and fake.inits == 2


def test_without_a_gpu_everything_is_null_and_quiet(gpu_settings, caplog, wait):
    probe = NvmlSampler()
    if probe.init():
        probe.shutdown()
        pytest.skip("this machine has a working NVML; the no-GPU path needs a machine without one")
    assert "NVML" in probe.reason or "Library" in probe.reason
    fast = replace(gpu_settings, gpu_poll_interval=0.02)
    monitor = GpuMonitor(fast)  # the real pynvml
    host = ServiceHost([monitor], fast)
    with caplog.at_level(logging.DEBUG):
        host.start()
        try:
            wait(lambda: host.workers["gpu_monitor"].status == "running", 5)
            time.sleep(1.0)  # about 50 poll intervals
            assert host.workers["gpu_monitor"].status == "running" and host.workers["gpu_monitor"].restart_count == 0
            status = monitor.status()
            assert status["gpu_available"] is False and status["gpu_count"] == 0 and status["nvml_error"]
        finally:
            host.stop()
    mine = [r for r in caplog.records if r.name in ("workers.host.services.gpu_monitor", "app.ops.gpu")]
    assert [r.levelno for r in mine if r.levelno >= logging.INFO] == [logging.INFO]  # said once
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    ]
    with session_scope(fast) as session:
        assert session.execute(select(func.count()).select_from(GpuStat)).scalar_one() == 0
    api = create_app(fast).test_client()
    body = api.get("/api/system/gpu").get_json()
    assert {
        k: body[k]
        for k in (
            "gpu_name",
            "utilization",
            "memory_used",
            "memory_total",
            "temperature",
            "power_usage",
            "inference_fps",
        )
    } == dict.fromkeys(
        ("gpu_name", "utilization", "memory_used", "memory_total", "temperature", "power_usage", "inference_fps")
    )
    assert api.get("/api/system/gpu/history").get_json() == {"samples": [], "count": 0, "limit": 300}
    perf = api.get("/api/system/performance").get_json()
    assert set(perf["gpu"].values()) == {None}


def test_inference_fps_comes_from_completed_detection_jobs(gpu_settings):
    client = redis.Redis.from_url(gpu_settings.redis_url, decode_responses=True)
    registry = JobRegistry(client)
    assert inference_fps(registry) is None
    for i in range(30):
        registry.record_published(f"d{i}", task="vigil.detection.detect", queue="detection")
        registry.record_started(f"d{i}", worker="detection_worker@x")
        registry.record_succeeded(f"d{i}", {"ok": True})
    assert inference_fps(registry) == pytest.approx(30 / 60, abs=1e-3)
    assert inference_fps(registry, now=time.time() + 120) is None  # outside the window
