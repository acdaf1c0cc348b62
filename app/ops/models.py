"""The model zoo (System Operations API "Model Zoo"): every model a detector or analyser backend uses, with what it did.

Entries, by backend:

* the built-in detector runs two OpenCV models on every image, `opencv-hog-people` (HOG people
  detector) and `opencv-haar-frontalface` (Haar face cascade), on the CPU;
* the HTTP detector's model, named as its server's `GET /health` answer names it (`model` or
  `model_name`, with `vram_mb` and `load_time_ms` when it says), else `VIGIL_DETECTOR_MODEL`; listed
  when it is the backend or `VIGIL_DETECTOR_URL` is set;
* the analyser's LLM (`VIGIL_LLM_MODEL`), listed when it is the backend or `VIGIL_LLM_URL` is set.

`status`: `disabled` when the model's backend is not the configured one; for a server's model,
`loaded` when the server answered its probe now and `error` when it did not (or its breaker is
open); for a built-in model, `loaded` when a detection ran it in the last `LOADED_WINDOW` seconds
(a worker holds it in memory), else `unloaded`. `inference_count`, `last_used` and `load_time_ms`
come from what the jobs recorded (app/pipeline/ai/usage.py).

`vram_mb`: NVML's per-process GPU memory of the worker processes that ran the model, where NVML
sees a GPU and those processes on it; otherwise what the model's server reports, else its
configuration (`VIGIL_DETECTOR_VRAM_MB`, `VIGIL_LLM_VRAM_MB`); 0 for the built-in models (they run
on the CPU); null when unknown. The budget is `VIGIL_VRAM_BUDGET_MB`, else the GPUs' total memory
when NVML sees them, else null; `vram_used_mb` sums the loaded models' known VRAM.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import NotFound
from app.core.settings import Settings
from app.core.time import iso_now, iso_utc
from app.ops.gpu import MIB, NvmlSampler
from app.pipeline.ai import usage
from app.pipeline.ai.analysers import LlmAnalyser, get_analyser
from app.pipeline.ai.breakers import breaker
from app.pipeline.ai.detectors import BuiltinDetector, HttpDetector, get_detector

log = logging.getLogger(__name__)

CATEGORIES = ("detection", "recognition", "ocr", "embedding", "depth-estimation", "pose", "llm")
LOADED_WINDOW = 600.0
INFO_MAX_AGE = 5.0  # seconds a model server's /health answer stands for "answered recently"

_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vigil-model-zoo")


@dataclass
class Candidate:
    name: str
    key: str  # what its usage is recorded under
    category: str
    backend: str  # builtin | http | llm
    enabled: bool
    service: str
    server: Any = None  # the HttpDetector / LlmAnalyser to probe, for a server's model
    info: dict[str, Any] = field(default_factory=dict)
    configured_vram: int | None = None


def _http_detector(settings: Settings) -> HttpDetector | None:
    if settings.detector_backend == "http":
        detector = get_detector(settings)
        return detector if isinstance(detector, HttpDetector) else None
    if settings.detector_url:
        return HttpDetector(settings.detector_url, settings.detector_timeout, settings.detector_model)
    return None


def _llm(settings: Settings) -> LlmAnalyser | None:
    if settings.analyser_backend == "llm":
        analyser = get_analyser(settings)
        return analyser if isinstance(analyser, LlmAnalyser) else None
    if settings.llm_url:
        return LlmAnalyser(
            settings.llm_url, settings.llm_model, settings.llm_timeout, settings.llm_max_tokens, settings.llm_api_key
        )
    return None


def candidates(settings: Settings, timeout: float | None = None) -> list[Candidate]:
    """The registry's models, named; an enabled HTTP detector's `/health` is asked (at most every
    `INFO_MAX_AGE` seconds per process) for its model's name, VRAM and load time."""
    builtin = settings.detector_backend == "builtin"
    out = [
        Candidate(BuiltinDetector.HOG_MODEL, BuiltinDetector.HOG_MODEL, "detection", "builtin", builtin, "detector"),
        Candidate(BuiltinDetector.FACE_MODEL, BuiltinDetector.FACE_MODEL, "detection", "builtin", builtin, "detector"),
    ]
    detector = _http_detector(settings)
    if detector is not None:
        enabled = settings.detector_backend == "http"
        info = detector.info(timeout=timeout, max_age=INFO_MAX_AGE) if enabled else {}
        out.append(
            Candidate(
                info.get("model") or detector.configured_model,
                HttpDetector.USAGE_KEY,
                "detection",
                "http",
                enabled,
                "detector",
                detector,
                info,
                settings.detector_vram_mb,
            )
        )
    llm = _llm(settings)
    if llm is not None:
        out.append(
            Candidate(
                llm.model,
                llm.model,
                "llm",
                "llm",
                settings.analyser_backend == "llm",
                "analyser",
                llm,
                {},
                settings.llm_vram_mb,
            )
        )
    return out


def gpu_memory(nvml: Any = None) -> dict[str, Any] | None:
    """Total GPU memory and each process's use (MB), or None where NVML sees no GPU."""
    try:
        sampler = NvmlSampler(nvml)
    except ImportError:  # nvidia-ml-py not installed
        return None
    if not sampler.init() or sampler.count == 0:
        return None
    nvml = sampler.nvml
    total, pids = 0, {}
    try:
        for index in range(sampler.count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            total += int(nvml.nvmlDeviceGetMemoryInfo(handle).total // MIB)
            try:
                processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:  # not supported on this device: no per-process figures
                processes = []
            for p in processes:
                used = getattr(p, "usedGpuMemory", None)
                if isinstance(used, int) and used >= 0:
                    pids[int(p.pid)] = pids.get(int(p.pid), 0) + used // MIB
    except Exception:
        log.info("NVML failed while reading GPU memory; VRAM figures fall back", exc_info=True)
        return None
    finally:
        sampler.shutdown()
    return {"total_mb": total, "processes": pids}


def _probe(candidate: Candidate, settings: Settings, timeout: float) -> str:
    """A server model's status now: loaded (answered, breaker not open) or error."""
    ok, _error = candidate.server.probe(timeout)
    if ok:
        try:
            ok = breaker(candidate.service, settings).snapshot()["state"] != "open"
        except Exception:  # Redis away: the probe's word stands
            pass
    return "loaded" if ok else "error"


def registry(settings: Settings, nvml: Any = None, timeout: float | None = None) -> dict[str, Any]:
    """GET /api/system/models: the budget, its use, and every model's full entry."""
    timeout = timeout if timeout is not None else max(0.2, settings.health_timeout * 0.8)
    found = candidates(settings, timeout=timeout)
    probes = {c.name: _pool.submit(_probe, c, settings, timeout) for c in found if c.enabled and c.server is not None}
    counters = usage.usage(settings, [c.key for c in found])
    gpu = gpu_memory(nvml)
    now = time.time()
    # A worker process runs several models (the two built-in ones): its memory is shared between them.
    holders: dict[int, int] = {}
    for c in found:
        for pid in counters[c.key]["pids"]:
            holders[pid] = holders.get(pid, 0) + 1
    models = []
    for c in found:
        used = counters[c.key]
        if not c.enabled:
            status = "disabled"
        elif c.name in probes:
            status = probes[c.name].result()
        else:
            recent = used["last_used"] is not None and now - used["last_used"] <= LOADED_WINDOW
            status = "loaded" if recent else "unloaded"
        vram: float | None = None
        on_gpu = [p for p in used["pids"] if gpu and p in gpu["processes"]]
        if on_gpu:
            vram = sum(gpu["processes"][p] / holders[p] for p in on_gpu)
        elif c.info.get("vram_mb") is not None:
            vram = c.info["vram_mb"]
        elif c.configured_vram is not None:
            vram = c.configured_vram
        elif c.backend == "builtin":
            vram = 0
        load_ms = used["load_time_ms"] if used["load_time_ms"] is not None else c.info.get("load_time_ms")
        models.append(
            {
                "name": c.name,
                "category": c.category,
                "status": status,
                "vram_mb": None if vram is None else int(round(vram)),
                "last_used": iso_utc(used["last_used"]) if used["last_used"] is not None else None,
                "enabled": c.enabled,
                "load_time_ms": None if load_ms is None else round(float(load_ms), 3),
                "inference_count": used["inference_count"],
                "backend": c.backend,
            }
        )
    budget = settings.vram_budget_mb if settings.vram_budget_mb is not None else (gpu["total_mb"] if gpu else None)
    in_use = sum(m["vram_mb"] for m in models if m["status"] == "loaded" and m["vram_mb"] is not None)
    return {
        "vram_budget_mb": budget,
        "vram_used_mb": in_use,
        "vram_available_mb": None if budget is None else max(0, budget - in_use),
        "models": models,
    }


def model(settings: Settings, name: str, nvml: Any = None) -> dict[str, Any]:
    """GET /api/system/models/{model_name}, or NotFound."""
    for entry in registry(settings, nvml)["models"]:
        if entry["name"] == name:
            return entry
    raise NotFound(f"No model named '{name}' in the model zoo", code="model_not_found")


def zoo_status(settings: Settings, nvml: Any = None) -> dict[str, Any]:
    """GET /api/system/model-zoo/status: the compact list and, per category, loaded and total."""
    models = registry(settings, nvml)["models"]
    categories = {c: {"loaded": 0, "total": 0} for c in CATEGORIES}
    for m in models:
        counts = categories.setdefault(m["category"], {"loaded": 0, "total": 0})
        counts["total"] += 1
        counts["loaded"] += m["status"] == "loaded"
    return {
        "models": [{k: m[k] for k in ("name", "category", "status", "vram_mb")} for m in models],
        "categories": categories,
        "timestamp": iso_now(),
    }


def latency_history(settings: Settings, name: str, since_minutes: int, bucket_seconds: int) -> dict[str, Any]:
    """GET /api/system/model-zoo/latency/history: the recorded inference times of one model, bucketed."""
    for c in candidates(settings, timeout=max(0.2, settings.health_timeout * 0.8)):
        if c.name == name:
            out = usage.latency_history(settings, c.key, since_minutes, bucket_seconds)
            out["model"] = name
            return out
    raise NotFound(f"No model named '{name}' in the model zoo", code="model_not_found")
