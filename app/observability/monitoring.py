"""Health of the monitoring stack (System Monitoring guide): what the configured Prometheus server says about its
scrape targets, read from its HTTP API (`/api/v1/targets`, `/api/v1/status/tsdb`).

Every call has a timeout (VIGIL_PROMETHEUS_TIMEOUT), so a Prometheus that hangs costs a request
at most that long per call. Health rules (System Monitoring guide, "Health Determination"): Prometheus unreachable,
or a majority of targets down, is unhealthy; some targets down while more are up is healthy.
A tie (as many down as up) is not a majority, so it stays healthy, with the down targets listed
as issues.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.errors import Unavailable
from app.core.settings import Settings
from app.core.time import iso_now, iso_utc

# The System Monitoring guide's "Known Exporters Tracked": job name -> default endpoint.
KNOWN_EXPORTERS = {
    "redis-exporter": "redis-exporter:9121",
    "json-exporter": "json-exporter:7979",
    "blackbox-exporter": "blackbox-exporter:9115",
}
HEALTH_VALUES = ("up", "down", "unknown")


class PrometheusUnreachable(Exception):
    """No usable answer from Prometheus (refused, timed out, not configured, or an error reply)."""


def _iso(value: str | None) -> str | None:
    """Prometheus' RFC 3339 timestamps (nanoseconds, offsets) as ISO UTC `...Z`; zero time is None."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.replace("Z", "+00:00")
    head, sep, tail = text.partition(".")
    if sep:  # Python accepts at most 6 fractional digits
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return value
    return iso_utc(dt)


def _seconds(duration: str | None) -> float | None:
    """A Prometheus duration such as `15s`, `1m`, `1m30s` in seconds."""
    if not duration:
        return None
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, number, i = 0.0, "", 0
    while i < len(duration):
        ch = duration[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if duration[i : i + 2] == "ms" else ch
        if unit not in units or not number:
            return None
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    return total if not number else None


@dataclass
class PrometheusClient:
    url: str
    timeout: float

    def get(self, path: str) -> Any:
        if not self.url:
            raise PrometheusUnreachable("no Prometheus configured (VIGIL_PROMETHEUS_URL is empty)")
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=self.timeout) as response:
                body = json.loads(response.read(10 << 20))
        except urllib.error.HTTPError as exc:
            raise PrometheusUnreachable(f"Prometheus answered HTTP {exc.code} for {path}") from None
        except (OSError, ValueError) as exc:  # refused, DNS, timeout, not JSON
            reason = getattr(exc, "reason", None) or exc
            raise PrometheusUnreachable(f"{type(exc).__name__}: {reason}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            raise PrometheusUnreachable(
                f"Prometheus reported an error for {path}: "
                f"{(body or {}).get('error') if isinstance(body, dict) else body!r}"
            )
        return body.get("data")


def client_for(settings: Settings) -> PrometheusClient:
    return PrometheusClient(settings.prometheus_url, settings.prometheus_timeout)


def _target(raw: dict[str, Any]) -> dict[str, Any]:
    labels = dict(raw.get("labels") or {})
    job = labels.get("job") or raw.get("scrapePool") or "unknown"
    health = raw.get("health") if raw.get("health") in HEALTH_VALUES else "unknown"
    return {
        "job": job,
        "instance": labels.get("instance") or raw.get("scrapeUrl"),
        "health": health,
        "labels": labels,
        "last_scrape": _iso(raw.get("lastScrape")),
        "last_error": raw.get("lastError") or None,
        "scrape_duration_seconds": raw.get("lastScrapeDuration"),
        "scrape_url": raw.get("scrapeUrl"),
        "scrape_interval_seconds": _seconds(raw.get("scrapeInterval")),
    }


def targets(settings: Settings) -> dict[str, Any]:
    """The System Monitoring guide's `GET /monitoring/targets`; raises Unavailable (503) when Prometheus cannot be
    read."""
    try:
        data = client_for(settings).get("/api/v1/targets?state=active")
    except PrometheusUnreachable as exc:
        raise Unavailable(
            f"Prometheus unreachable at {settings.prometheus_url or '(not configured)'}: {exc}",
            code="prometheus_unreachable",
        ) from None
    items = [_target(t) for t in (data or {}).get("activeTargets", [])]
    items.sort(key=lambda t: (t["job"], t["instance"] or ""))
    up = sum(1 for t in items if t["health"] == "up")
    down = sum(1 for t in items if t["health"] == "down")
    public = [{k: v for k, v in t.items() if k not in ("scrape_url", "scrape_interval_seconds")} for t in items]
    return {
        "targets": public,
        "total": len(items),
        "up": up,
        "down": down,
        "unknown": len(items) - up - down,
        "jobs": sorted({t["job"] for t in items}),
        "timestamp": iso_now(),
    }


def health(settings: Settings) -> dict[str, Any]:
    """The System Monitoring guide's `GET /monitoring/health`: always an answer; `healthy` follows the documented
    rules."""
    client = client_for(settings)
    body: dict[str, Any] = {
        "healthy": False,
        "prometheus_reachable": False,
        "prometheus_url": settings.prometheus_url or None,
        "targets_summary": [],
        "exporters": [],
        "metrics_collection": {
            "collecting": False,
            "last_successful_scrape": None,
            "scrape_interval_seconds": None,
            "total_series": None,
        },
        "issues": [],
        "timestamp": iso_now(),
    }
    try:
        data = client.get("/api/v1/targets?state=active")
    except PrometheusUnreachable as exc:
        body["issues"].append(f"Prometheus unreachable: {exc}")
        body["exporters"] = [
            {
                "name": name,
                "status": "unknown",
                "endpoint": endpoint,
                "last_scrape": None,
                "error": "Prometheus unreachable",
            }
            for name, endpoint in KNOWN_EXPORTERS.items()
        ]
        return body
    body["prometheus_reachable"] = True
    items = [_target(t) for t in (data or {}).get("activeTargets", [])]

    jobs: dict[str, dict[str, Any]] = {}
    for t in items:
        s = jobs.setdefault(t["job"], {"job": t["job"], "total": 0, "up": 0, "down": 0, "unknown": 0})
        s["total"] += 1
        s[t["health"]] += 1
        if t["health"] == "down":
            body["issues"].append(f"target {t['job']}/{t['instance']} down: {t['last_error'] or 'no error given'}")
    body["targets_summary"] = [jobs[k] for k in sorted(jobs)]
    up = sum(1 for t in items if t["health"] == "up")
    down = sum(1 for t in items if t["health"] == "down")
    by_job = {t["job"]: t for t in items}
    body["exporters"] = [_exporter(name, endpoint, by_job.get(name)) for name, endpoint in KNOWN_EXPORTERS.items()]

    scraped = [t["last_scrape"] for t in items if t["health"] == "up" and t["last_scrape"]]
    intervals = [t["scrape_interval_seconds"] for t in items if t["scrape_interval_seconds"]]
    collection = body["metrics_collection"]
    collection["collecting"] = up > 0
    collection["last_successful_scrape"] = max(scraped) if scraped else None
    collection["scrape_interval_seconds"] = min(intervals) if intervals else None
    try:
        tsdb = client.get("/api/v1/status/tsdb")
        collection["total_series"] = ((tsdb or {}).get("headStats") or {}).get("numSeries")
    except PrometheusUnreachable as exc:
        body["issues"].append(f"TSDB status unavailable: {exc}")

    if not items:
        body["issues"].append("Prometheus has no scrape targets")
    if down > up:
        body["issues"].insert(0, f"majority of targets down ({down} of {len(items)})")
    body["healthy"] = not (down > up)
    return body


def _exporter(name: str, default_endpoint: str, target: dict[str, Any] | None) -> dict[str, Any]:
    if target is None:
        return {
            "name": name,
            "status": "not_configured",
            "endpoint": default_endpoint,
            "last_scrape": None,
            "error": "no scrape target with this job name",
        }
    return {
        "name": name,
        "status": target["health"],
        "endpoint": target["instance"] or default_endpoint,
        "last_scrape": target["last_scrape"],
        "error": target["last_error"],
    }
