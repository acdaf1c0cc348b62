"""Risk analysers behind one interface: a rule-based scorer and an OpenAI-compatible LLM backend.

Each takes a closed batch (what was seen, where, when) and returns a 0-100 risk score with a
summary and reasoning. The severity level is *not* the analyser's call: the analysis task derives
it from the configured severity thresholds, so changing the thresholds changes what new events
are called, whatever the model said.

* `RuleAnalyser` scores object types, counts, time of day and the camera's placement. It is
  deterministic, needs nothing, and is the fallback while the LLM is unavailable.
* `LlmAnalyser` asks any chat-completions server (llama.cpp, vLLM, Ollama serve Nemotron this
  way) for `{risk_score, risk_level, summary, reasoning}`. Models wrap JSON in prose, code fences
  or `<think>` blocks, so the first JSON object that carries a usable `risk_score` is taken.
  Token counts come from the server's `usage`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from app.core.settings import Settings, SettingsError
from app.pipeline.ai.detectors import probe_http
from app.pipeline.ai.http_backend import ThreadLocalSession
from app.pipeline.anomaly import describe as describe_anomaly


class AnalyserUnavailable(RuntimeError):
    """The analyser could not produce a score (timeout, 5xx, unparsable answer)."""


@dataclass
class BatchFacts:
    """What an analyser gets to see about one closed batch."""

    batch_id: str
    camera_id: str
    camera_name: str
    started_at: datetime
    ended_at: datetime
    detections: list[dict[str, Any]]  # object_type, confidence, bbox, detected_at
    anomaly: dict[str, Any] | None = None  # the camera's baseline judgement (app/pipeline/anomaly.py), if any

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(d["object_type"] for d in self.detections))


@dataclass
class Analysis:
    risk_score: int
    summary: str
    reasoning: str
    analyser: str
    model_level: str | None = None  # the level the model named, kept for the record only
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the LLM that answered: its usage is recorded (app/pipeline/ai/usage.py)


class Analyser(Protocol):
    name: str
    service: str
    display_name: str
    url: str | None

    def analyse(self, facts: BatchFacts) -> Analysis: ...

    def probe(self, timeout: float) -> tuple[bool, str | None]: ...


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(f"VIGIL_SITE_TIMEZONE: unknown time zone {name!r}") from exc


def _plural(word: str, n: int) -> str:
    return word if n == 1 else (word[:-1] + "ies" if word.endswith("y") else word + "s")


# ---- rules --------------------------------------------------------------------------------------
class RuleAnalyser:
    """Additive scoring; every factor that adds points is named in the reasoning."""

    name = "builtin"
    service = "analyser"
    display_name = "Rule-based risk scorer (built-in)"
    url = None

    TYPE_POINTS = {
        "person": 35,
        "face": 35,
        "car": 15,
        "truck": 15,
        "vehicle": 15,
        "motorcycle": 15,
        "bicycle": 10,
        "dog": 5,
        "cat": 3,
        "bird": 1,
    }
    OTHER_POINTS = 5
    ANOMALY_POINTS = 10  # activity far from the camera's usual for this hour of the week
    SENSITIVE_CAMERAS = ("door", "entr", "gate", "garage", "back", "porch", "window", "side")

    def __init__(self, timezone_name: str = "UTC"):
        self.zone = _zone(timezone_name)

    def analyse(self, facts: BatchFacts) -> Analysis:
        t0 = time.perf_counter()
        counts = facts.counts
        reasons: list[str] = []
        score = 0.0
        # People: a face is a person seen closely; count whichever saw more of them.
        people = max(counts.get("person", 0), counts.get("face", 0))
        for kind in sorted(counts):
            if kind == "face" and counts.get("person"):
                continue
            points = self.TYPE_POINTS.get(kind, self.OTHER_POINTS)
            score += points
            reasons.append(f"{kind} seen (+{points})")
        if people > 1:
            extra = min(20, 6 * (people - 1))
            score += extra
            reasons.append(f"{people} people (+{extra})")
        if facts.detections:
            best = max(d["confidence"] for d in facts.detections)
            if best >= 0.85:
                score += 5
                reasons.append(f"high detector confidence {best:.2f} (+5)")
        local = facts.ended_at.astimezone(self.zone)
        if people and (local.hour >= 22 or local.hour < 6):
            score += 25
            reasons.append(f"night time {local:%H:%M} (+25)")
        elif people and (local.hour >= 19 or local.hour < 7):
            score += 10
            reasons.append(f"dusk or dawn {local:%H:%M} (+10)")
        camera = f"{facts.camera_id} {facts.camera_name}".lower()
        if people and any(word in camera for word in self.SENSITIVE_CAMERAS):
            score += 10
            reasons.append(f"camera '{facts.camera_name}' watches an entry point (+10)")
        duration = (facts.ended_at - facts.started_at).total_seconds()
        if people and duration >= 60:
            score += 5
            reasons.append(f"activity lasted {duration:.0f}s (+5)")
        if facts.anomaly and facts.anomaly.get("is_anomaly"):
            score += self.ANOMALY_POINTS
            reasons.append(
                f"unusual activity for {facts.anomaly['slot']}: {facts.anomaly['anomaly_score']:.1f} standard "
                f"deviations from this camera's baseline (+{self.ANOMALY_POINTS})"
            )
        risk = int(round(max(0.0, min(100.0, score))))
        seen = ", ".join(f"{n} {_plural(kind, n)}" for kind, n in sorted(counts.items())) or "nothing"
        summary = f"{seen} on {facts.camera_name} at {local:%H:%M}"
        reasoning = "; ".join(reasons) or "no object that raises risk"
        return Analysis(risk, summary, reasoning, self.name, duration_ms=(time.perf_counter() - t0) * 1000)

    def probe(self, timeout: float) -> tuple[bool, str | None]:
        return True, None


# ---- LLM ------------------------------------------------------------------------------------------
SYSTEM_PROMPT = (
    "You are a home security analyst. You are given the objects a camera's detector found during one "
    "short time window. Judge how concerning the activity is. Answer with one JSON object and nothing "
    'else: {"risk_score": <integer 0-100>, "risk_level": "low"|"medium"|"high"|"critical", '
    '"summary": "<one sentence>", "reasoning": "<two or three sentences>"}.'
)

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)


def parse_llm_json(text: str) -> dict[str, Any]:
    """The first JSON object in `text` that has a numeric `risk_score`, clamped to 0-100.

    Accepts code fences, prose around the object, `<think>` blocks and scores given as strings
    ("72", "72/100"). Raises ValueError when there is none.
    """
    text = _THINK.sub("", text or "")
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if not isinstance(obj, dict) or "risk_score" not in obj:
            continue
        raw = obj["risk_score"]
        if isinstance(raw, bool):
            continue
        if isinstance(raw, str):
            number = re.match(r"\s*(-?\d+(?:\.\d+)?)", raw)
            if not number:
                continue
            raw = float(number.group(1))
        if not isinstance(raw, (int, float)) or raw != raw:  # NaN
            continue
        return {
            "risk_score": int(round(max(0.0, min(100.0, float(raw))))),
            "risk_level": str(obj.get("risk_level") or "")[:16] or None,
            "summary": str(obj.get("summary") or "")[:2000],
            "reasoning": str(obj.get("reasoning") or "")[:8000],
        }
    raise ValueError("no JSON object with a numeric risk_score in the model's answer")


class LlmAnalyser(ThreadLocalSession):
    name = "llm"
    service = "analyser"

    def __init__(
        self,
        url: str,
        model: str,
        timeout: float,
        max_tokens: int,
        api_key: str | None = None,
        timezone_name: str = "UTC",
    ):

        if not url:
            raise SettingsError("VIGIL_LLM_URL is required when VIGIL_ANALYSER_BACKEND=llm")
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.zone = _zone(timezone_name)
        self.display_name = f"LLM risk analysis ({model}) at {self.url}"
        self._requests = requests

    def prompt(self, facts: BatchFacts) -> str:
        local_start = facts.started_at.astimezone(self.zone)
        local_end = facts.ended_at.astimezone(self.zone)
        lines = [
            f"Camera: {facts.camera_name} (id {facts.camera_id})",
            f"Time window: {local_start:%Y-%m-%d %H:%M:%S} to {local_end:%H:%M:%S} ({self.zone.key}, {local_end:%A})",
            "Object counts: " + (", ".join(f"{k}={v}" for k, v in sorted(facts.counts.items())) or "none"),
            "Detections (type, confidence, box x,y,w,h):",
        ]
        for d in facts.detections[:50]:
            b = d["bbox"]
            lines.append(f"- {d['object_type']} {d['confidence']:.2f} at {b['x']},{b['y']},{b['width']},{b['height']}")
        if len(facts.detections) > 50:
            lines.append(f"- ... and {len(facts.detections) - 50} more")
        if facts.anomaly:
            lines.append(describe_anomaly(facts.anomaly) or "")
        return "\n".join(lines)

    def analyse(self, facts: BatchFacts) -> Analysis:
        body = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": self.prompt(facts)}],
        }
        response, elapsed = self.post("/chat/completions", "LLM", AnalyserUnavailable, json=body, headers=self.headers)
        try:
            payload = response.json()
            content = payload["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise AnalyserUnavailable(
                f"LLM answer is not a chat completion: {type(exc).__name__}: {exc}"[:300]
            ) from None
        try:
            parsed = parse_llm_json(content)
        except ValueError as exc:
            raise AnalyserUnavailable(f"LLM answer unusable: {exc}") from None
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}

        def tokens(name: str) -> int | None:
            value = usage.get(name)
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        return Analysis(
            parsed["risk_score"],
            parsed["summary"],
            parsed["reasoning"],
            f"llm:{self.model}",
            model_level=parsed["risk_level"],
            input_tokens=tokens("prompt_tokens"),
            output_tokens=tokens("completion_tokens"),
            duration_ms=elapsed,
            model=self.model,
        )

    def probe(self, timeout: float) -> tuple[bool, str | None]:
        return probe_http(self._requests, f"{self.url}/models", timeout, self.headers)


_analysers: dict[tuple, Analyser] = {}
_lock = threading.Lock()


def get_analyser(settings: Settings) -> Analyser:
    """The configured analyser (one per process)."""
    key = (
        settings.analyser_backend,
        settings.llm_url,
        settings.llm_model,
        settings.llm_timeout,
        settings.llm_max_tokens,
        settings.llm_api_key,
        settings.site_timezone,
    )
    with _lock:
        analyser = _analysers.get(key)
        if analyser is None:
            if settings.analyser_backend == "builtin":
                analyser = RuleAnalyser(settings.site_timezone)
            elif settings.analyser_backend == "llm":
                analyser = LlmAnalyser(
                    settings.llm_url,
                    settings.llm_model,
                    settings.llm_timeout,
                    settings.llm_max_tokens,
                    settings.llm_api_key,
                    settings.site_timezone,
                )
            else:
                raise SettingsError(
                    f"VIGIL_ANALYSER_BACKEND must be 'builtin' or 'llm', not {settings.analyser_backend!r}"
                )
            _analysers[key] = analyser
    return analyser


def fallback_analyser(settings: Settings) -> RuleAnalyser:
    return RuleAnalyser(settings.site_timezone)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
