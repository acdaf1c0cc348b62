"""Every setting Vigil reads, in one place.

Each field names its environment variable, its default and what it is for; `docs/configuration.md`
is checked against this module by a test, so the two cannot drift. Defaults are the embedded ones:
SQLite and a local Redis under `var/`, which is what `make run` starts.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env(name: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"env": name, "doc": doc, "secret": secret})


class SettingsError(ValueError):
    """A setting's value cannot be parsed; raised at start-up so a typo fails loudly."""


@dataclass(frozen=True)
class Settings:
    # --- where things live -------------------------------------------------------------------
    var_dir: Path = _env("VIGIL_VAR_DIR", "var",
                         "Directory for embedded state: SQLite file, Redis data, local API key, beat schedule.")
    database_url: str = _env("DATABASE_URL", "sqlite:///{var_dir}/vigil.db",
                             "SQLAlchemy URL. PostgreSQL (`postgresql+psycopg2://...`) in production; "
                             "SQLite file under `var/` by default.")
    redis_url: str = _env("REDIS_URL", "redis://localhost:6379/0",
                          "Redis used for the job registry, heartbeats, paused queues and batches.")
    broker_url: str = _env("CELERY_BROKER_URL", "{redis_url}",
                           "Celery broker. Defaults to REDIS_URL: the registry and the queues it describes "
                           "then share one durability story.")
    result_backend: str = _env("CELERY_RESULT_BACKEND", "{redis_url}", "Celery result backend (Redis).")
    camera_root: Path = _env("VIGIL_CAMERA_ROOT", "{var_dir}/cameras",
                             "Root the file watcher watches; one sub-folder per camera.")
    thumbnail_dir: Path = _env("VIGIL_THUMBNAIL_DIR", "{var_dir}/thumbnails", "Where detection thumbnails are written.")
    clips_dir: Path = _env("VIGIL_CLIPS_DIR", "{var_dir}/clips", "Where event clips are written.")
    export_dir: Path = _env("VIGIL_EXPORT_DIR", "{var_dir}/exports", "Where log exports are written.")

    # --- network -------------------------------------------------------------------------------
    host: str = _env("VIGIL_HOST", "127.0.0.1", "Interface the API binds to (`0.0.0.0` in containers).")
    port: int = _env("VIGIL_PORT", 8000, "API port.")
    flower_port: int = _env("FLOWER_PORT", 5555, "Flower (Celery UI) port.")
    public_url: str = _env("VIGIL_PUBLIC_URL", "", "Base URL used in links the API hands out (empty: relative links).")

    # --- auth ----------------------------------------------------------------------------------
    api_key: str | None = _env("VIGIL_API_KEY", None,
                               "API key accepted in `X-API-Key` for mutating endpoints (role admin). "
                               "`make run` creates one under `var/` when unset.", secret=True)
    jwt_secret: str | None = _env("VIGIL_JWT_SECRET", None,
                                  "HS256 secret for Bearer JWTs carrying `roles`. Unset: JWTs are refused.",
                                  secret=True)
    jwt_audience: str | None = _env("VIGIL_JWT_AUDIENCE", None, "Expected `aud` claim of Bearer JWTs, if any.")
    jwt_issuer: str | None = _env("VIGIL_JWT_ISSUER", None, "Expected `iss` claim of Bearer JWTs, if any.")
    auth_reads: bool = _env("VIGIL_AUTH_READS", False,
                            "Require credentials for read-only endpoints too (probes stay open).")

    # --- Celery --------------------------------------------------------------------------------
    visibility_timeout: int = _env("VIGIL_VISIBILITY_TIMEOUT", 1800,
                                   "Seconds before an unacknowledged broker message is redelivered. Must exceed "
                                   "the longest hard time limit plus a reserved message's wait "
                                   "(see docs/architecture.md).")
    unacked_restore_interval: int = _env("VIGIL_UNACKED_RESTORE_INTERVAL", 10,
                                         "Seconds between a worker's sweeps for messages past the visibility "
                                         "timeout.")
    result_expires: int = _env("VIGIL_RESULT_EXPIRES", 86400, "Seconds Celery keeps task results in Redis.")
    task_events: bool = _env("VIGIL_TASK_EVENTS", False,
                             "Workers send task events, which Flower needs for its per-task view. Off by default: "
                             "they cost a third of a no-op job's throughput (bench P1); the job registry lists "
                             "every job regardless.")

    # --- job registry --------------------------------------------------------------------------
    completed_retention_hours: int = _env("VIGIL_COMPLETED_RETENTION_HOURS", 24,
                                          "Hours completed/revoked jobs stay in the Redis index (SQL keeps them).")
    failed_retention_hours: int = _env("VIGIL_FAILED_RETENTION_HOURS", 168,
                                       "Hours failed jobs stay in the Redis index, retryable.")
    archive_interval: float = _env("VIGIL_ARCHIVE_INTERVAL", 1.0,
                                   "Seconds between flushes of finished jobs from Redis into the SQL jobs table.")

    # --- liveness ------------------------------------------------------------------------------
    heartbeat_interval: float = _env("VIGIL_HEARTBEAT_INTERVAL", 2.0,
                                     "Seconds between heartbeats of workers, beat and services.")
    heartbeat_grace: float = _env("VIGIL_HEARTBEAT_GRACE", 3.0,
                                  "A process is seen as gone after this many missed heartbeat intervals.")
    health_timeout: float = _env("VIGIL_HEALTH_TIMEOUT", 1.0, "Per-check timeout of the health probes, seconds.")

    # --- pipeline defaults (runtime config overrides them; see PATCH /api/system/config) --------
    app_name: str = _env("VIGIL_APP_NAME", "Vigil", "Name reported by /api/system/config.")
    retention_days: int = _env("VIGIL_RETENTION_DAYS", 30, "Default data retention (1-365 days).")
    batch_window_seconds: int = _env("VIGIL_BATCH_WINDOW_SECONDS", 90, "Default detection batch window.")
    batch_idle_timeout_seconds: int = _env("VIGIL_BATCH_IDLE_TIMEOUT_SECONDS", 30, "Default batch idle timeout.")
    detection_confidence_threshold: float = _env("VIGIL_DETECTION_CONFIDENCE_THRESHOLD", 0.5,
                                                  "Default minimum detection confidence (0-1).")
    cleanup_time: str = _env("VIGIL_CLEANUP_TIME", "03:00", "Daily cleanup time (HH:MM, UTC; beat runs on UTC).")
    delete_images: bool = _env("VIGIL_DELETE_IMAGES", False, "Cleanup also deletes original images.")

    # --- file watcher ---------------------------------------------------------------------------
    watcher_observer: str = _env("VIGIL_WATCHER_OBSERVER", "auto",
                                 "`native` (inotify), `polling`, or `auto` (native, polling if native fails).")
    watcher_poll_interval: float = _env("VIGIL_WATCHER_POLL_INTERVAL", 1.0, "Polling observer interval, seconds.")
    watcher_settle_seconds: float = _env("VIGIL_WATCHER_SETTLE_SECONDS", 1.0,
                                         "A file with no close event counts as complete once its size and mtime "
                                         "have not changed for this long.")
    watcher_dedup_seconds: int = _env("VIGIL_WATCHER_DEDUP_SECONDS", 300,
                                      "Identical content (same hash) seen again within this window is dropped.")
    idempotency_ttl: int = _env("VIGIL_IDEMPOTENCY_TTL", 86400,
                                "Seconds an enqueue idempotency key keeps pointing at its job.")

    # --- queue operations and infrastructure (issue 3) -----------------------------------------
    infra_check_interval: float = _env("VIGIL_INFRA_CHECK_INTERVAL", 30.0,
                                       "Seconds between infrastructure checks that raise and resolve alerts "
                                       "(the service host runs them).")
    alert_retention_hours: int = _env("VIGIL_ALERT_RETENTION_HOURS", 168,
                                      "Hours infrastructure alerts are kept (the alerts endpoint reads up to 168).")
    api_latency_window: int = _env("VIGIL_API_LATENCY_WINDOW", 300,
                                   "Seconds of API request timings behind the API Server figures and alerts.")

    # --- notifications: the e-mail and webhook channels ------------------------------------------
    smtp_host: str = _env("VIGIL_SMTP_HOST", "", "SMTP server for the e-mail channel (empty: e-mail not configured).")
    smtp_port: int = _env("VIGIL_SMTP_PORT", 587, "SMTP port.")
    smtp_user: str = _env("VIGIL_SMTP_USER", "", "SMTP login (empty: no AUTH).")
    smtp_password: str | None = _env("VIGIL_SMTP_PASSWORD", None, "SMTP password.", secret=True)
    smtp_starttls: bool = _env("VIGIL_SMTP_STARTTLS", True, "Upgrade the SMTP connection with STARTTLS.")
    smtp_from: str = _env("VIGIL_SMTP_FROM", "vigil@localhost", "Sender address of notification e-mail.")
    notify_timeout: float = _env("VIGIL_NOTIFY_TIMEOUT", 10.0,
                                 "Seconds one SMTP conversation or webhook call may take before it counts as "
                                 "a failure to retry.")
    alert_email_recipients: str = _env("VIGIL_ALERT_EMAIL_RECIPIENTS", "",
                                       "Comma-separated addresses that alert rules with the `email` channel "
                                       "notify (empty: such alerts record the channel as unavailable).")
    alert_webhook_url: str = _env("VIGIL_ALERT_WEBHOOK_URL", "",
                                  "URL that alert rules with the `webhook` channel POST to (empty: such alerts "
                                  "record the channel as unavailable).")

    # --- pipeline: detectors, batches, analysers, breakers (issue 4) ---------------------------
    detector_backend: str = _env("VIGIL_DETECTOR_BACKEND", "builtin",
                                 "`builtin` (OpenCV HOG people + Haar faces on the CPU, no download) or `http` "
                                 "(a model server answering `POST {VIGIL_DETECTOR_URL}/detect`).")
    detector_url: str = _env("VIGIL_DETECTOR_URL", "",
                             "Base URL of the HTTP detector (YOLO/RT-DETR style), e.g. `http://ai:8001`.")
    detector_timeout: float = _env("VIGIL_DETECTOR_TIMEOUT", 10.0,
                                   "Seconds one HTTP detection may take before it counts as a failure.")
    analyser_backend: str = _env("VIGIL_ANALYSER_BACKEND", "builtin",
                                 "`builtin` (rule-based risk scorer) or `llm` (an OpenAI-compatible "
                                 "chat-completions server: llama.cpp, vLLM, Ollama).")
    llm_url: str = _env("VIGIL_LLM_URL", "",
                        "Base URL of the OpenAI-compatible API, up to `/v1` (e.g. `http://ai:8002/v1`).")
    llm_model: str = _env("VIGIL_LLM_MODEL", "nemotron", "Model name sent in each chat-completions request.")
    llm_api_key: str | None = _env("VIGIL_LLM_API_KEY", None, "Bearer key for the LLM server, if it wants one.",
                                   secret=True)
    llm_timeout: float = _env("VIGIL_LLM_TIMEOUT", 60.0,
                              "Seconds one LLM analysis may take before it counts as a failure.")
    llm_max_tokens: int = _env("VIGIL_LLM_MAX_TOKENS", 512, "`max_tokens` of each chat-completions request.")
    analysis_fallback: bool = _env("VIGIL_ANALYSIS_FALLBACK", True,
                                   "When the LLM is unavailable (breaker open, or retries spent), score the "
                                   "batch with the rule-based analyser instead of leaving it unscored.")
    site_timezone: str = _env("VIGIL_SITE_TIMEZONE", "UTC",
                              "IANA time zone of the cameras, for the time-of-day factor of risk scoring.")
    breaker_failure_threshold: int = _env("VIGIL_BREAKER_FAILURE_THRESHOLD", 5,
                                          "Consecutive failures of an AI service that open its breaker.")
    breaker_recovery_seconds: float = _env("VIGIL_BREAKER_RECOVERY_SECONDS", 30.0,
                                           "Seconds an open breaker waits before letting trial calls through.")
    breaker_half_open_max_calls: int = _env("VIGIL_BREAKER_HALF_OPEN_MAX_CALLS", 3,
                                            "Trial calls a half-open breaker lets through.")
    breaker_success_threshold: int = _env("VIGIL_BREAKER_SUCCESS_THRESHOLD", 2,
                                          "Successful trial calls that close a half-open breaker.")
    batch_check_interval: float = _env("VIGIL_BATCH_CHECK_INTERVAL", 1.0,
                                       "Seconds between the batch closer's checks for batches past their window "
                                       "or idle timeout (it runs in the service host).")
    thumbnail_max_side: int = _env("VIGIL_THUMBNAIL_MAX_SIDE", 256, "Longest side of a detection thumbnail, px.")
    latency_retention_hours: int = _env("VIGIL_LATENCY_RETENTION_HOURS", 24,
                                        "Hours of pipeline stage samples kept in Redis for the latency endpoints.")

    # --- worker operations: supervisor, GPU, performance, cleanup (issue 5) --------------------
    supervisor_backoff: str = _env("VIGIL_SUPERVISOR_BACKOFF", "1,2,4,8,16",
                                   "Seconds the supervisor waits before each automatic restart of a crashed "
                                   "worker; their count is `max_restarts` (after that the worker is `failed` "
                                   "until reset).")
    supervisor_stable_seconds: float = _env("VIGIL_SUPERVISOR_STABLE_SECONDS", 300.0,
                                            "A worker that ran this long since its last start has its restart "
                                            "count cleared when it next crashes (a crash a week is not a loop).")
    supervisor_command_timeout: float = _env("VIGIL_SUPERVISOR_COMMAND_TIMEOUT", 10.0,
                                             "Seconds a supervisor/services request waits for the supervisor to "
                                             "confirm a start/stop/restart before answering 202.")
    gpu_poll_interval: float = _env("VIGIL_GPU_POLL_INTERVAL", 5.0, "Seconds between GPU (NVML) samples.")
    performance_interval: float = _env("VIGIL_PERFORMANCE_INTERVAL", 5.0,
                                       "Seconds between stored performance snapshots (performance history).")
    performance_retention_hours: int = _env("VIGIL_PERFORMANCE_RETENTION_HOURS", 24,
                                            "Hours performance snapshots are kept.")
    cleanup_batch_size: int = _env("VIGIL_CLEANUP_BATCH_SIZE", 1000,
                                   "Rows deleted per transaction by retention cleanup, so tables stay usable.")
    cleanup_batch_pause: float = _env("VIGIL_CLEANUP_BATCH_PAUSE", 0.0,
                                      "Seconds cleanup sleeps between batches (throttle on a busy database).")
    cleanup_wait_seconds: float = _env("VIGIL_CLEANUP_WAIT_SECONDS", 30.0,
                                       "How long POST /api/system/cleanup waits for the job's counts before "
                                       "answering 202 with the job id.")
    orphan_min_age_seconds: int = _env("VIGIL_ORPHAN_MIN_AGE_SECONDS", 3600,
                                       "Orphaned-file cleanup ignores files younger than this (a worker may "
                                       "not have committed the row that references it yet).")

    # --- observability: logs, exports, metrics, monitoring (issue 6) ---------------------------
    log_db: bool = _env("VIGIL_LOG_DB", True,
                        "Write structured log records of the API, workers and service host to the `logs` table "
                        "(buffered, written by a background thread).")
    log_db_level: str = _env("VIGIL_LOG_DB_LEVEL", "INFO",
                             "Lowest level written to the `logs` table; the console keeps VIGIL_LOG_LEVEL.")
    log_buffer_size: int = _env("VIGIL_LOG_BUFFER_SIZE", 10000,
                                "Log records a process holds while the database is slow or down. While it is "
                                "full, new records are dropped and counted (`vigil_log_records_dropped_total`).")
    log_flush_interval: float = _env("VIGIL_LOG_FLUSH_INTERVAL", 1.0,
                                     "Seconds between batched writes of buffered log records.")
    log_search_timeout: float = _env("VIGIL_LOG_SEARCH_TIMEOUT", 5.0,
                                     "Seconds a log search may run in the database before it is cancelled (400).")
    export_retention_hours: int = _env("VIGIL_EXPORT_RETENTION_HOURS", 24,
                                       "Hours a finished log export file is kept under VIGIL_EXPORT_DIR.")
    metrics_dir: Path = _env("VIGIL_METRICS_DIR", "{var_dir}/metrics",
                             "prometheus-client multiprocess directory shared by the API and worker processes "
                             "(one sub-folder per host, so containers sharing the volume never collide).")
    prometheus_url: str = _env("VIGIL_PROMETHEUS_URL", "http://localhost:9090",
                               "Prometheus server whose HTTP API /api/system/monitoring/* reads (empty: none).")
    prometheus_timeout: float = _env("VIGIL_PROMETHEUS_TIMEOUT", 2.0, "Seconds per call to the Prometheus HTTP API.")


    # --- logging / database --------------------------------------------------------------------
    log_level: str = _env("VIGIL_LOG_LEVEL", "INFO", "Python log level for API and workers.")
    db_pool_size: int = _env("VIGIL_DB_POOL_SIZE", 10, "SQLAlchemy pool size (PostgreSQL).")
    db_echo: bool = _env("VIGIL_DB_ECHO", False, "Log every SQL statement (debugging only).")

    # -------------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from an environment mapping; keyword overrides win (tests use them)."""
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        raw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                raw[f.name] = overrides[f.name]
                continue
            value = environ.get(f.metadata["env"])
            raw[f.name] = f.default if value is None else value
        # Templates such as "{var_dir}/vigil.db" refer to other settings; resolve in field order.
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = raw[f.name]
            if isinstance(value, str) and "{" in value and f.name not in overrides:
                value = value.format(**{k: v for k, v in values.items()})
            values[f.name] = _convert(f.metadata["env"], value, hints[f.name])
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """Settings safe to show (secrets masked), for `vigil settings` and debugging."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            out[f.metadata["env"]] = str(value) if isinstance(value, Path) else value
        return out

    @property
    def heartbeat_ttl(self) -> float:
        """Age after which a heartbeat no longer counts."""
        return self.heartbeat_interval * self.heartbeat_grace + 1.0

    @property
    def backoff_seconds(self) -> tuple[float, ...]:
        """The supervisor's restart delays, parsed from `supervisor_backoff`."""
        try:
            values = tuple(float(v) for v in self.supervisor_backoff.split(",") if v.strip())
        except ValueError as exc:
            raise SettingsError(f"VIGIL_SUPERVISOR_BACKOFF: {exc}") from exc
        if not values or any(v < 0 for v in values):
            raise SettingsError("VIGIL_SUPERVISOR_BACKOFF: needs one or more non-negative numbers")
        return values

    @property
    def alert_recipients(self) -> list[str]:
        """`alert_email_recipients` as a list."""
        return [a.strip() for a in self.alert_email_recipients.split(",") if a.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _convert(name: str, value: Any, typ: Any) -> Any:
    optional = False
    if typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        optional, typ = True, args[0]
    if value is None:
        if optional:
            return None
        raise SettingsError(f"{name} is required")
    if optional and isinstance(value, str) and value == "":
        return None
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if typ is Path:
            return Path(value).expanduser().absolute()
        return typ(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name}: {exc}") from exc


def settings_fields() -> list[dataclasses.Field]:
    """The documented settings, in declaration order."""
    return list(dataclasses.fields(Settings))


def settings_table() -> str:
    """The Markdown table of settings that docs/configuration.md embeds (checked by a test)."""
    rows = ["| Variable | Default | What it is for |", "| --- | --- | --- |"]
    for f in settings_fields():
        default = f.default
        shown = "*(unset)*" if default is None else ("*(empty)*" if default == "" else f"`{default}`")
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings from the environment, read once."""
    return Settings.from_env()


def replace(settings: Settings, **changes: Any) -> Settings:
    """A copy of `settings` with `changes` applied: the one way tests and tools derive settings."""
    return dataclasses.replace(settings, **changes)
