"""The GPU monitor: one NVML sample per GPU every `VIGIL_GPU_POLL_INTERVAL` seconds into `gpu_stats`.

Without a driver or GPU nothing is stored and nothing is wrong: the monitor says so once (INFO),
keeps running (so readiness shows it alive), and quietly tries NVML again every
`NVML_RETRY_SECONDS` in case a driver appears. A database outage is logged (at most once a
minute) and does not crash the service: a crash would count toward `failed`, and the monitor has
nothing to recover by restarting.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from app.core.db import session_scope
from app.core.settings import Settings
from app.jobs.registry import get_registry
from app.ops.gpu import NvmlSampler, inference_fps
from workers.host.service import PeriodicService

log = logging.getLogger(__name__)

NVML_RETRY_SECONDS = 60.0


class GpuMonitor(PeriodicService):
    name = "gpu_monitor"
    category = "monitoring"
    failure_warning = "could not store GPU samples; will keep trying"

    def __init__(self, settings: Settings, nvml: Any = None):
        super().__init__(settings.gpu_poll_interval)
        self.settings = settings
        self._nvml = nvml
        self.sampler: NvmlSampler | None = None
        self.samples_written = 0
        self._next_init = 0.0
        self._said_unavailable = False

    def status(self) -> dict[str, Any]:
        sampler = self.sampler
        return {
            "gpu_available": bool(sampler and sampler.ready and sampler.count),
            "gpu_count": sampler.count if sampler else 0,
            "nvml_error": sampler.reason if sampler else None,
            "samples_written": self.samples_written,
        }

    def prepare(self) -> None:
        self.sampler = NvmlSampler(self._nvml)

    def finish(self) -> None:
        if self.sampler is not None:
            self.sampler.shutdown()

    def tick(self) -> None:
        self.poll_once()

    def poll_once(self) -> list[dict[str, Any]]:
        """Sample every GPU once and store the samples; [] when there is no GPU to sample. Raises when
        the database is away (the loop logs that at most once a minute and tries again)."""
        sampler = self.sampler
        assert sampler is not None
        now = time.time()
        if not sampler.ready:
            if now < self._next_init:
                return []
            self._next_init = now + NVML_RETRY_SECONDS
            if not sampler.init():
                if not self._said_unavailable:
                    self._said_unavailable = True
                    log.info("no GPU statistics: NVML unavailable (%s); GPU figures stay null", sampler.reason)
                else:
                    log.debug("NVML still unavailable: %s", sampler.reason)
                return []
            log.info("NVML ready: %d GPU(s)", sampler.count)
            self._said_unavailable = False
        try:
            samples = sampler.sample()
        except Exception as exc:  # driver gone, GPU lost: back to "unavailable", retried later
            sampler.shutdown()
            sampler.reason = f"{type(exc).__name__}: {exc}"
            self._next_init = now + NVML_RETRY_SECONDS
            log.warning("GPU sampling failed (%s); retrying in %.0fs", sampler.reason, NVML_RETRY_SECONDS)
            self._said_unavailable = True
            return []
        if not samples:
            return []
        fps = self._fps()
        for sample in samples:
            sample["inference_fps"] = fps
        self._store(samples)
        return samples

    def _fps(self) -> float | None:
        try:
            return inference_fps(get_registry(self.settings))
        except Exception:
            log.debug("inference fps unavailable", exc_info=True)
            return None

    def _store(self, samples: list[dict[str, Any]]) -> None:
        from app.models import GpuStat

        recorded_at = datetime.now(UTC)
        with session_scope(self.settings) as session:
            session.add_all([GpuStat(recorded_at=recorded_at, **sample) for sample in samples])
        self.samples_written += len(samples)
