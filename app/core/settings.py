"""Every setting Vigil reads, in one place.

Each field names its environment variable, its default and what it is for; `docs/configuration.md`
is checked against this module by a test, so the two cannot drift. Defaults are the embedded ones:
SQLite and a local Redis under `var/`, which is what `make run` starts.

`Settings` is a pydantic-settings `BaseSettings` so that one declaration per setting carries its variable, default,
type and description, and the declared type drives parsing and validation: no hand-written parser to keep in step
with the fields. What pydantic-settings does not do as it comes, and how it is done here:

- Variable names are not all `VIGIL_`-prefixed (DATABASE_URL, REDIS_URL, CELERY_*, FLOWER_PORT), so each field
  names its variable as its validation alias, matched case-sensitively as `os.environ.get` did.
- `from_env(environ)` reads a given mapping; the stock sources read `os.environ` only. `_EnvironSource` is
  pydantic-settings' env source pointed at that mapping (a context variable carries it into the class's sources).
  No `.env` or secrets-directory source: Vigil never read them, and a stray `.env` must not change a process.
- Templates: a default such as `{var_dir}/vigil.db` names settings declared before it (their parsed values), and
  an environment value may do the same (`{{`/`}}` for a literal brace); explicit overrides are taken as given.
  pydantic has no such thing, so `_EnvironSource` fills them in before validation.
- Booleans keep Vigil's words (1/true/yes/on, 0/false/no/off, and empty for off) rather than pydantic's set,
  so an existing `VIGIL_X=` still means off; paths are made absolute (after `~`) as before; an empty string for
  an optional setting means unset.
- Errors: pydantic's `ValidationError` becomes `SettingsError` naming the variable and the value (a secret's value
  masked), because callers catch `SettingsError` and start-up prints it.
- Secrets stay plain `str` (not `SecretStr`): callers use them as strings. `public()` masks them, `repr` omits them.
- `settings_fields()` keeps its dataclass-like rows (`name`, `default`, `metadata["env"]`) for the docs table and
  the tests that read it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env(name: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    return Field(
        default=default, validation_alias=name, description=doc, repr=not secret, json_schema_extra={"secret": secret}
    )


class SettingsError(ValueError):
    """A setting's value cannot be parsed; raised at start-up so a typo fails loudly."""


def _flag(value: Any) -> Any:
    """Vigil's boolean words, so values that worked before keep working (pydantic's own set differs)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean: use 1/true/yes/on or 0/false/no/off")


def _none_if_empty(value: Any) -> Any:
    """`VIGIL_API_KEY=` in a compose file means unset, not a key that is the empty string."""
    return None if value == "" else value


def _absolute(path: Path) -> Path:
    """Absolute at start-up, so a later chdir (daemons, workers) cannot move the state."""
    return path.expanduser().absolute()


Flag = Annotated[bool, BeforeValidator(_flag)]
AbsPath = Annotated[Path, AfterValidator(_absolute)]
OptionalStr = Annotated[str | None, BeforeValidator(_none_if_empty)]

# The mapping `from_env` reads. pydantic-settings builds its sources inside `__init__` with no per-call argument
# for them, so the mapping travels in a context variable (not a module global that threads would share).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("vigil_settings_environ", default=None)


class Settings(BaseSettings):
    """The settings of one process; immutable, so a value read at start-up is the value everywhere."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", case_sensitive=True, populate_by_name=True)

    # --- where things live -------------------------------------------------------------------
    var_dir: AbsPath = _env(
        "VIGIL_VAR_DIR", "var", "Directory for embedded state: SQLite file, Redis data, local API key, beat schedule."
    )
    database_url: str = _env(
        "DATABASE_URL",
        "sqlite:///{var_dir}/vigil.db",
        "SQLAlchemy URL. PostgreSQL (`postgresql+psycopg2://...`) in production; SQLite file under `var/` by default.",
    )
    redis_url: str = _env(
        "REDIS_URL",
        "redis://localhost:6379/0",
        "Redis used for the job registry, heartbeats, paused queues and batches.",
    )
    broker_url: str = _env(
        "CELERY_BROKER_URL",
        "{redis_url}",
        "Celery broker. Defaults to REDIS_URL: the registry and the queues it describes "
        "then share one durability story.",
    )
    result_backend: str = _env("CELERY_RESULT_BACKEND", "{redis_url}", "Celery result backend (Redis).")
    camera_root: AbsPath = _env(
        "VIGIL_CAMERA_ROOT", "{var_dir}/cameras", "Root the file watcher watches; one sub-folder per camera."
    )
    thumbnail_dir: AbsPath = _env(
        "VIGIL_THUMBNAIL_DIR", "{var_dir}/thumbnails", "Where detection thumbnails are written."
    )
    clips_dir: AbsPath = _env("VIGIL_CLIPS_DIR", "{var_dir}/clips", "Where event clips are written.")
    export_dir: AbsPath = _env("VIGIL_EXPORT_DIR", "{var_dir}/exports", "Where log exports are written.")

    # --- network -------------------------------------------------------------------------------
    host: str = _env("VIGIL_HOST", "127.0.0.1", "Interface the API binds to (`0.0.0.0` in containers).")
    port: int = _env("VIGIL_PORT", 8000, "API port.")
    flower_port: int = _env("FLOWER_PORT", 5555, "Flower (Celery UI) port.")
    public_url: str = _env("VIGIL_PUBLIC_URL", "", "Base URL used in links the API hands out (empty: relative links).")

    # --- auth ----------------------------------------------------------------------------------
    api_key: OptionalStr = _env(
        "VIGIL_API_KEY",
        None,
        "API key accepted in `X-API-Key` for mutating endpoints (role admin). "
        "`make run` creates one under `var/` when unset.",
        secret=True,
    )
    jwt_secret: OptionalStr = _env(
        "VIGIL_JWT_SECRET", None, "HS256 secret for Bearer JWTs carrying `roles`. Unset: JWTs are refused.", secret=True
    )
    jwt_audience: OptionalStr = _env("VIGIL_JWT_AUDIENCE", None, "Expected `aud` claim of Bearer JWTs, if any.")
    jwt_issuer: OptionalStr = _env("VIGIL_JWT_ISSUER", None, "Expected `iss` claim of Bearer JWTs, if any.")
    auth_reads: Flag = _env(
        "VIGIL_AUTH_READS", False, "Require credentials for read-only endpoints too (probes stay open)."
    )

    # --- Celery --------------------------------------------------------------------------------
    visibility_timeout: int = _env(
        "VIGIL_VISIBILITY_TIMEOUT",
        1800,
        "Seconds before an unacknowledged broker message is redelivered. Must exceed "
        "the longest hard time limit plus a reserved message's wait "
        "(see docs/architecture.md).",
    )
    unacked_restore_interval: int = _env(
        "VIGIL_UNACKED_RESTORE_INTERVAL",
        10,
        "Seconds between a worker's sweeps for messages past the visibility timeout.",
    )
    result_expires: int = _env("VIGIL_RESULT_EXPIRES", 86400, "Seconds Celery keeps task results in Redis.")
    task_events: Flag = _env(
        "VIGIL_TASK_EVENTS",
        False,
        "Workers send task events, which Flower needs for its per-task view. Off by default: "
        "they cost a third of a no-op job's throughput (bench P1); the job registry lists "
        "every job regardless.",
    )

    # --- job registry --------------------------------------------------------------------------
    completed_retention_hours: int = _env(
        "VIGIL_COMPLETED_RETENTION_HOURS", 24, "Hours completed/revoked jobs stay in the Redis index (SQL keeps them)."
    )
    failed_retention_hours: int = _env(
        "VIGIL_FAILED_RETENTION_HOURS", 168, "Hours failed jobs stay in the Redis index, retryable."
    )
    archive_interval: float = _env(
        "VIGIL_ARCHIVE_INTERVAL", 1.0, "Seconds between flushes of finished jobs from Redis into the SQL jobs table."
    )

    # --- liveness ------------------------------------------------------------------------------
    heartbeat_interval: float = _env(
        "VIGIL_HEARTBEAT_INTERVAL", 2.0, "Seconds between heartbeats of workers, beat and services."
    )
    heartbeat_grace: float = _env(
        "VIGIL_HEARTBEAT_GRACE", 3.0, "A process is seen as gone after this many missed heartbeat intervals."
    )
    health_timeout: float = _env("VIGIL_HEALTH_TIMEOUT", 1.0, "Per-check timeout of the health probes, seconds.")

    # --- pipeline defaults (runtime config overrides them; see PATCH /api/system/config) --------
    app_name: str = _env("VIGIL_APP_NAME", "Vigil", "Name reported by /api/system/config.")
    retention_days: int = _env("VIGIL_RETENTION_DAYS", 30, "Default data retention (1-365 days).")
    batch_window_seconds: int = _env("VIGIL_BATCH_WINDOW_SECONDS", 90, "Default detection batch window.")
    batch_idle_timeout_seconds: int = _env("VIGIL_BATCH_IDLE_TIMEOUT_SECONDS", 30, "Default batch idle timeout.")
    detection_confidence_threshold: float = _env(
        "VIGIL_DETECTION_CONFIDENCE_THRESHOLD", 0.5, "Default minimum detection confidence (0-1)."
    )
    cleanup_time: str = _env("VIGIL_CLEANUP_TIME", "03:00", "Daily cleanup time (HH:MM, UTC; beat runs on UTC).")
    delete_images: Flag = _env("VIGIL_DELETE_IMAGES", False, "Cleanup also deletes original images.")

    # --- file watcher ---------------------------------------------------------------------------
    watcher_observer: str = _env(
        "VIGIL_WATCHER_OBSERVER", "auto", "`native` (inotify), `polling`, or `auto` (native, polling if native fails)."
    )
    watcher_poll_interval: float = _env("VIGIL_WATCHER_POLL_INTERVAL", 1.0, "Polling observer interval, seconds.")
    watcher_settle_seconds: float = _env(
        "VIGIL_WATCHER_SETTLE_SECONDS",
        1.0,
        "A file with no close event counts as complete once its size and mtime have not changed for this long.",
    )
    watcher_dedup_seconds: int = _env(
        "VIGIL_WATCHER_DEDUP_SECONDS",
        300,
        "Identical content (same hash) seen again within this window is dropped, while the earlier upload's job "
        "still exists and has not failed.",
    )
    watcher_reconcile_seconds: float = _env(
        "VIGIL_WATCHER_RECONCILE_SECONDS",
        300.0,
        "Seconds between the watcher's scans of the camera root against the upload record (one runs at start); "
        "files no upload row records are enqueued, oldest first. 0: only the scan at start.",
    )
    watcher_reconcile_max_age_seconds: int = _env(
        "VIGIL_WATCHER_RECONCILE_MAX_AGE_SECONDS",
        7 * 86400,
        "A reconcile scan enqueues unrecorded files modified within this many seconds; older ones are left alone "
        "(counted and logged).",
    )
    camera_silent_after_seconds: int = _env(
        "VIGIL_CAMERA_SILENT_AFTER_SECONDS", 900, "A camera with no upload for longer than this is `silent`."
    )
    camera_offline_after_seconds: int = _env(
        "VIGIL_CAMERA_OFFLINE_AFTER_SECONDS",
        86400,
        "A camera with no upload for longer than this (or none ever) is `offline`.",
    )
    idempotency_ttl: int = _env(
        "VIGIL_IDEMPOTENCY_TTL", 86400, "Seconds an enqueue idempotency key keeps pointing at its job."
    )

    # --- queue operations and infrastructure -----------------------------------------
    infra_check_interval: float = _env(
        "VIGIL_INFRA_CHECK_INTERVAL",
        30.0,
        "Seconds between infrastructure checks that raise and resolve alerts (the service host runs them).",
    )
    alert_retention_hours: int = _env(
        "VIGIL_ALERT_RETENTION_HOURS",
        168,
        "Hours infrastructure alerts are kept (the alerts endpoint reads up to 168).",
    )
    api_latency_window: int = _env(
        "VIGIL_API_LATENCY_WINDOW", 300, "Seconds of API request timings behind the API Server figures and alerts."
    )

    # --- notifications: the e-mail and webhook channels ------------------------------------------
    smtp_host: str = _env("VIGIL_SMTP_HOST", "", "SMTP server for the e-mail channel (empty: e-mail not configured).")
    smtp_port: int = _env("VIGIL_SMTP_PORT", 587, "SMTP port.")
    smtp_user: str = _env("VIGIL_SMTP_USER", "", "SMTP login (empty: no AUTH).")
    smtp_password: OptionalStr = _env("VIGIL_SMTP_PASSWORD", None, "SMTP password.", secret=True)
    smtp_starttls: Flag = _env("VIGIL_SMTP_STARTTLS", True, "Upgrade the SMTP connection with STARTTLS.")
    smtp_from: str = _env("VIGIL_SMTP_FROM", "vigil@localhost", "Sender address of notification e-mail.")
    notify_timeout: float = _env(
        "VIGIL_NOTIFY_TIMEOUT",
        10.0,
        "Seconds one SMTP conversation or webhook call may take before it counts as a failure to retry.",
    )
    alert_email_recipients: str = _env(
        "VIGIL_ALERT_EMAIL_RECIPIENTS",
        "",
        "Comma-separated addresses that alert rules with the `email` channel "
        "notify (empty: such alerts record the channel as unavailable). Seeds the global alert "
        "destinations until they are stored (PUT /api/alerts/destinations).",
    )
    alert_webhook_url: str = _env(
        "VIGIL_ALERT_WEBHOOK_URL",
        "",
        "URL that alert rules with the `webhook` channel POST to (empty: such alerts "
        "record the channel as unavailable). Seeds the global alert destinations until they are "
        "stored (PUT /api/alerts/destinations).",
    )

    # --- notification preferences and the e-mail channel's reputation ----------------
    quiet_hours_critical_breakthrough: Flag = _env(
        "VIGIL_QUIET_HOURS_CRITICAL_BREAKTHROUGH",
        True,
        "Critical alerts (rule severity or event risk level `critical`) are sent during quiet hours.",
    )
    quiet_hours_held: Literal["drop", "send"] = _env(
        "VIGIL_QUIET_HOURS_HELD",
        "drop",
        "What happens to deliveries quiet hours held back: `drop` (the alert stays recorded, marked "
        "suppressed, nothing is sent) or `send` (the service host sends them once quiet hours end).",
    )
    held_release_interval: float = _env(
        "VIGIL_HELD_RELEASE_INTERVAL", 30.0, "Seconds between two checks for held deliveries whose quiet hours ended."
    )
    smtp_source_ips: str = _env(
        "VIGIL_SMTP_SOURCE_IPS",
        "",
        "Comma-separated addresses the e-mail channel sends from, for IP reputation (empty: the local "
        "address of the SMTP connection as last seen).",
    )
    smtp_provider: str = _env(
        "VIGIL_SMTP_PROVIDER", "", "Label of the sending provider in IP reputation (empty: reverse DNS, else null)."
    )
    dnsbl_zones: str = _env(
        "VIGIL_DNSBL_ZONES",
        "zen.spamhaus.org,bl.spamcop.net,b.barracudacentral.org",
        "Comma-separated DNS blacklist zones the sending addresses are looked up in (empty: no look-ups).",
    )
    dnsbl_nameservers: str = _env(
        "VIGIL_DNSBL_NAMESERVERS",
        "",
        "Comma-separated `ip` or `ip:port` resolvers for DNSBL and reverse look-ups (empty: the system's).",
    )
    dnsbl_timeout: float = _env("VIGIL_DNSBL_TIMEOUT", 2.0, "Seconds one DNSBL or reverse look-up may take.")
    dnsbl_interval: float = _env(
        "VIGIL_DNSBL_INTERVAL",
        60.0,
        "Seconds between two passes of the DNSBL monitor (only answers whose TTL ran out are asked again).",
    )
    ip_reputation_warning: int = _env("VIGIL_IP_REPUTATION_WARNING", 80, "A reputation score below this is `warning`.")
    ip_reputation_critical: int = _env(
        "VIGIL_IP_REPUTATION_CRITICAL", 50, "A reputation score below this, or any blacklist listing, is `critical`."
    )
    dnsbl_penalty: int = _env("VIGIL_DNSBL_PENALTY", 25, "Reputation points one blacklist listing costs.")

    # --- pipeline: detectors, batches, analysers, breakers ---------------------------
    detector_backend: str = _env(
        "VIGIL_DETECTOR_BACKEND",
        "builtin",
        "`builtin` (OpenCV HOG people + Haar faces on the CPU, no download) or `http` "
        "(a model server answering `POST {VIGIL_DETECTOR_URL}/detect`).",
    )
    detector_url: str = _env(
        "VIGIL_DETECTOR_URL", "", "Base URL of the HTTP detector (YOLO/RT-DETR style), e.g. `http://ai:8001`."
    )
    detector_timeout: float = _env(
        "VIGIL_DETECTOR_TIMEOUT", 10.0, "Seconds one HTTP detection may take before it counts as a failure."
    )
    analyser_backend: str = _env(
        "VIGIL_ANALYSER_BACKEND",
        "builtin",
        "`builtin` (rule-based risk scorer) or `llm` (an OpenAI-compatible "
        "chat-completions server: llama.cpp, vLLM, Ollama).",
    )
    llm_url: str = _env(
        "VIGIL_LLM_URL", "", "Base URL of the OpenAI-compatible API, up to `/v1` (e.g. `http://ai:8002/v1`)."
    )
    llm_model: str = _env("VIGIL_LLM_MODEL", "nemotron", "Model name sent in each chat-completions request.")
    llm_api_key: OptionalStr = _env(
        "VIGIL_LLM_API_KEY", None, "Bearer key for the LLM server, if it wants one.", secret=True
    )
    llm_timeout: float = _env(
        "VIGIL_LLM_TIMEOUT", 60.0, "Seconds one LLM analysis may take before it counts as a failure."
    )
    llm_max_tokens: int = _env("VIGIL_LLM_MAX_TOKENS", 512, "`max_tokens` of each chat-completions request.")
    analysis_fallback: Flag = _env(
        "VIGIL_ANALYSIS_FALLBACK",
        True,
        "When the LLM is unavailable (breaker open, or retries spent), score the "
        "batch with the rule-based analyser instead of leaving it unscored.",
    )
    site_timezone: str = _env(
        "VIGIL_SITE_TIMEZONE", "UTC", "IANA time zone of the cameras, for the time-of-day factor of risk scoring."
    )
    breaker_failure_threshold: int = _env(
        "VIGIL_BREAKER_FAILURE_THRESHOLD", 5, "Consecutive failures of an AI service that open its breaker."
    )
    breaker_recovery_seconds: float = _env(
        "VIGIL_BREAKER_RECOVERY_SECONDS", 30.0, "Seconds an open breaker waits before letting trial calls through."
    )
    breaker_half_open_max_calls: int = _env(
        "VIGIL_BREAKER_HALF_OPEN_MAX_CALLS", 3, "Trial calls a half-open breaker lets through."
    )
    breaker_success_threshold: int = _env(
        "VIGIL_BREAKER_SUCCESS_THRESHOLD", 2, "Successful trial calls that close a half-open breaker."
    )
    batch_check_interval: float = _env(
        "VIGIL_BATCH_CHECK_INTERVAL",
        1.0,
        "Seconds between the batch closer's checks for batches past their window "
        "or idle timeout (it runs in the service host).",
    )
    thumbnail_max_side: int = _env("VIGIL_THUMBNAIL_MAX_SIDE", 256, "Longest side of a detection thumbnail, px.")
    latency_retention_hours: int = _env(
        "VIGIL_LATENCY_RETENTION_HOURS", 24, "Hours of pipeline stage samples kept in Redis for the latency endpoints."
    )

    # --- worker operations: supervisor, GPU, performance, cleanup --------------------
    supervisor_backoff: str = _env(
        "VIGIL_SUPERVISOR_BACKOFF",
        "1,2,4,8,16",
        "Seconds the supervisor waits before each automatic restart of a crashed "
        "worker; their count is `max_restarts` (after that the worker is `failed` "
        "until reset).",
    )
    supervisor_stable_seconds: float = _env(
        "VIGIL_SUPERVISOR_STABLE_SECONDS",
        300.0,
        "A worker that ran this long since its last start has its restart "
        "count cleared when it next crashes (a crash a week is not a loop).",
    )
    supervisor_command_timeout: float = _env(
        "VIGIL_SUPERVISOR_COMMAND_TIMEOUT",
        10.0,
        "Seconds a supervisor/services request waits for the supervisor to "
        "confirm a start/stop/restart before answering 202.",
    )
    supervisord_url: str = _env(
        "VIGIL_SUPERVISORD_URL",
        "",
        "supervisord's XML-RPC socket (`unix:///...`), set by `make run` (scripts/run): the "
        "service host then starts, stops and restarts the processes through it. Empty (compose): "
        "the container runtime owns processes and the supervisor acts on consumption only.",
    )
    gpu_poll_interval: float = _env("VIGIL_GPU_POLL_INTERVAL", 5.0, "Seconds between GPU (NVML) samples.")
    vram_budget_mb: int | None = _env(
        "VIGIL_VRAM_BUDGET_MB",
        None,
        "VRAM the model zoo may use, MB (GET /api/system/models); unset: the GPU's total when NVML "
        "sees one, else null.",
    )
    detector_model: str = _env(
        "VIGIL_DETECTOR_MODEL",
        "http-detector",
        "Registry name of the HTTP detector's model when its `/health` answer names none.",
    )
    detector_vram_mb: int | None = _env(
        "VIGIL_DETECTOR_VRAM_MB", None, "VRAM of the HTTP detector's model, MB, when neither NVML nor its server says."
    )
    llm_vram_mb: int | None = _env("VIGIL_LLM_VRAM_MB", None, "VRAM of the analyser's LLM, MB, when NVML cannot say.")
    anomaly_threshold_stdev: float = _env(
        "VIGIL_ANOMALY_THRESHOLD_STDEV",
        2.0,
        "Standard deviations from a camera's hour-of-week baseline that make an event anomalous "
        "(default; PATCH /api/system/anomaly-config changes it at run time).",
    )
    anomaly_min_samples: int = _env(
        "VIGIL_ANOMALY_MIN_SAMPLES",
        10,
        "Events an hour-of-week slot must have seen before its events are judged (default; PATCH changes it).",
    )
    anomaly_decay_factor: float = _env(
        "VIGIL_ANOMALY_DECAY_FACTOR",
        0.1,
        "Weight of each new event in the baselines' exponentially weighted mean and variance (0-1).",
    )
    anomaly_window_days: int = _env(
        "VIGIL_ANOMALY_WINDOW_DAYS", 28, "A baseline slot not updated for this many days starts over."
    )
    performance_interval: float = _env(
        "VIGIL_PERFORMANCE_INTERVAL", 5.0, "Seconds between stored performance snapshots (performance history)."
    )
    performance_retention_hours: int = _env(
        "VIGIL_PERFORMANCE_RETENTION_HOURS", 24, "Hours performance snapshots are kept."
    )
    cleanup_batch_size: int = _env(
        "VIGIL_CLEANUP_BATCH_SIZE", 1000, "Rows deleted per transaction by retention cleanup, so tables stay usable."
    )
    cleanup_batch_pause: float = _env(
        "VIGIL_CLEANUP_BATCH_PAUSE", 0.0, "Seconds cleanup sleeps between batches (throttle on a busy database)."
    )
    cleanup_wait_seconds: float = _env(
        "VIGIL_CLEANUP_WAIT_SECONDS",
        30.0,
        "How long POST /api/system/cleanup waits for the job's counts before answering 202 with the job id.",
    )
    orphan_min_age_seconds: int = _env(
        "VIGIL_ORPHAN_MIN_AGE_SECONDS",
        3600,
        "Orphaned-file cleanup ignores files younger than this (a worker may "
        "not have committed the row that references it yet).",
    )

    # --- observability: logs, exports, metrics, monitoring ---------------------------
    log_db: Flag = _env(
        "VIGIL_LOG_DB",
        True,
        "Write structured log records of the API, workers and service host to the `logs` table "
        "(buffered, written by a background thread).",
    )
    log_db_level: str = _env(
        "VIGIL_LOG_DB_LEVEL", "INFO", "Lowest level written to the `logs` table; the console keeps VIGIL_LOG_LEVEL."
    )
    log_buffer_size: int = _env(
        "VIGIL_LOG_BUFFER_SIZE",
        10000,
        "Log records a process holds while the database is slow or down. While it is "
        "full, new records are dropped and counted (`vigil_log_records_dropped_total`).",
    )
    log_flush_interval: float = _env(
        "VIGIL_LOG_FLUSH_INTERVAL", 1.0, "Seconds between batched writes of buffered log records."
    )
    log_search_timeout: float = _env(
        "VIGIL_LOG_SEARCH_TIMEOUT", 5.0, "Seconds a log search may run in the database before it is cancelled (400)."
    )
    export_retention_hours: int = _env(
        "VIGIL_EXPORT_RETENTION_HOURS", 24, "Hours a finished log export file is kept under VIGIL_EXPORT_DIR."
    )
    metrics_dir: AbsPath = _env(
        "VIGIL_METRICS_DIR",
        "{var_dir}/metrics",
        "prometheus-client multiprocess directory shared by the API and worker processes "
        "(one sub-folder per host, so containers sharing the volume never collide).",
    )
    prometheus_url: str = _env(
        "VIGIL_PROMETHEUS_URL",
        "http://localhost:9090",
        "Prometheus server whose HTTP API /api/system/monitoring/* reads (empty: none).",
    )
    prometheus_timeout: float = _env("VIGIL_PROMETHEUS_TIMEOUT", 2.0, "Seconds per call to the Prometheus HTTP API.")

    # --- AI Monitoring API ---------------------------------------------------------------------
    model_prices: str = _env(
        "VIGIL_MODEL_PRICES",
        "",
        "USD per million tokens by model for the monitoring API's cost: `model=input:output` pairs, comma-separated "
        "(`nemotron=0:0,gpt-4o-mini=0.15:0.60`). Models not listed cost 0 and are named as unpriced.",
    )
    monitoring_interval: float = _env(
        "VIGIL_MONITORING_INTERVAL",
        5.0,
        "Seconds between ticks of the service host's monitoring service (due agent resumes, alert rule evaluation).",
    )
    monitoring_window: float = _env(
        "VIGIL_MONITORING_WINDOW",
        300.0,
        "Seconds of recent jobs over which alert rules judge latency and error-rate metrics.",
    )
    monitoring_drain_seconds: float = _env(
        "VIGIL_MONITORING_DRAIN_SECONDS",
        10.0,
        "How long pausing an agent waits for its running jobs to finish before answering.",
    )
    monitoring_max_replicas: int = _env(
        "VIGIL_MONITORING_MAX_REPLICAS", 16, "Most pool processes POST /agents/{id}/scale may set for one agent."
    )
    monitoring_scale_timeout: float = _env(
        "VIGIL_MONITORING_SCALE_TIMEOUT",
        15.0,
        "How long scaling an agent waits for its pool's heartbeats to show the new process count.",
    )
    monitoring_webhook_urls: str = _env(
        "VIGIL_MONITORING_WEBHOOK_URLS",
        "",
        "Comma-separated URLs that receive the monitoring.* webhook events (empty: none).",
    )
    monitoring_webhook_secret: OptionalStr = _env(
        "VIGIL_MONITORING_WEBHOOK_SECRET",
        None,
        "HMAC-SHA256 key that signs monitoring webhooks (`X-Vigil-Signature: sha256=<hex>`; unset: unsigned).",
        secret=True,
    )
    monitoring_slack_url: str = _env(
        "VIGIL_MONITORING_SLACK_URL", "", "Webhook URL the `slack` alert channel posts to (empty: not configured)."
    )
    monitoring_pagerduty_url: str = _env(
        "VIGIL_MONITORING_PAGERDUTY_URL",
        "",
        "Webhook URL the `pagerduty` alert channel posts to (empty: not configured).",
    )
    tenant_id: str = _env(
        "VIGIL_TENANT_ID",
        "default",
        "This installation's one tenant: the monitoring API's `tenant_id` filter matches it (case-insensitively); "
        "any other tenant has no agents.",
    )

    # --- live events over WebSocket -------------------------------------------------
    ws_buffer_messages: int = _env(
        "VIGIL_WS_BUFFER_MESSAGES",
        1024,
        "Messages a WebSocket client may fall behind before it is dropped (close code 4008).",
    )
    ws_heartbeat_seconds: float = _env(
        "VIGIL_WS_HEARTBEAT_SECONDS",
        20.0,
        "Seconds between the server's pings; a client silent for two of them is closed.",
    )
    ws_resume_seconds: float = _env(
        "VIGIL_WS_RESUME_SECONDS", 300.0, "How far back a reconnecting client can resume (`last_event_id`)."
    )
    ws_resume_max: int = _env(
        "VIGIL_WS_RESUME_MAX", 10000, "Events the resume stream keeps (and most replayed to one resuming client)."
    )
    ws_socket_buffer: int = _env(
        "VIGIL_WS_SOCKET_BUFFER",
        0,
        "SO_SNDBUF of each WebSocket connection, bytes (0: the kernel's default).",
    )
    ws_token_seconds: int = _env(
        "VIGIL_WS_TOKEN_SECONDS", 60, "Lifetime of a query-string token from POST /api/system/websocket/token."
    )
    ws_publish_queue: int = _env(
        "VIGIL_WS_PUBLISH_QUEUE", 10000, "Live events a process holds for sending before the oldest are dropped."
    )
    live_check_interval: float = _env(
        "VIGIL_LIVE_CHECK_INTERVAL",
        10.0,
        "Seconds between the service host's checks for camera status and overall health changes (live events).",
    )

    # --- logging / database --------------------------------------------------------------------
    log_level: str = _env("VIGIL_LOG_LEVEL", "INFO", "Python log level for API and workers.")
    db_pool_size: int = _env("VIGIL_DB_POOL_SIZE", 10, "SQLAlchemy pool size (PostgreSQL).")
    db_echo: Flag = _env("VIGIL_DB_ECHO", False, "Log every SQL statement (debugging only).")

    # -------------------------------------------------------------------------------------------
    def __init__(self, **values: Any) -> None:
        """Reads the environment like `from_env`; pydantic's errors become `SettingsError` naming the variable."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # Not chained: the message says it all, and pydantic's own would repeat a secret's value.
            raise SettingsError(_explain(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword overrides, then the environment (with templates); no `.env` or secrets directory."""
        environ = _ENVIRON.get()
        return init_settings, _EnvironSource(settings_cls, os.environ if environ is None else environ)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from an environment mapping; keyword overrides win (tests use them)."""
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        token = _ENVIRON.set(os.environ if environ is None else environ)
        try:
            return cls(**overrides)
        finally:
            _ENVIRON.reset(token)

    def public(self) -> dict[str, Any]:
        """Settings safe to show (secrets masked), for `vigil settings` and debugging."""
        out = {}
        for f in settings_fields():
            value = getattr(self, f.name)
            if f.secret and value:
                value = "***"
            out[f.env] = str(value) if isinstance(value, Path) else value
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


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source reading `from_env`'s mapping, with `{setting}` templates filled in."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # read by _load_env_vars, which the base __init__ calls
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._environ)  # names as given: model_config is case-sensitive, empty values count

    def __call__(self) -> dict[str, Any]:
        found = super().__call__()  # {VARIABLE: text} for the variables that are set
        overrides = self.current_state  # the keyword overrides, keyed by VARIABLE: taken as given
        earlier = _Earlier(self.settings_cls)
        data: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            env = field.validation_alias
            if env in overrides:
                earlier.raw[name] = overrides[env]
                continue
            value = found.get(env, field.default)
            if isinstance(value, str) and "{" in value:
                value = earlier.fill(env, value, secret=not field.repr)
                data[env] = value
            elif env in found:
                data[env] = value
            earlier.raw[name] = value
        return data


class _Earlier(dict):
    """The settings declared so far, each parsed only when a template names it (a template sees parsed values:
    `{var_dir}` is the absolute directory). Only earlier settings, so templates resolve in one pass, no cycles."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__()
        self.settings_cls = settings_cls
        self.raw: dict[str, Any] = {}

    def __missing__(self, name: str) -> Any:
        if name not in self.raw:
            raise KeyError(name)
        field = self.settings_cls.model_fields[name]
        try:
            value = _adapter(self.settings_cls, name).validate_python(self.raw[name])
        except ValidationError as exc:
            raise SettingsError(_explain(exc, field.validation_alias)) from None
        self[name] = value
        return value

    def fill(self, env: str, template: str, *, secret: bool = False) -> str:
        shown = "***" if secret else repr(template)
        try:
            return template.format_map(self)
        except SettingsError:  # a setting the template names is itself bad: that is the error to report
            raise
        except KeyError as exc:
            raise SettingsError(
                f"{env}={shown}: {{{exc.args[0]}}} names no setting declared before it "
                "(write {{ and }} for literal braces)"
            ) from exc
        except (ValueError, IndexError, AttributeError) as exc:
            raise SettingsError(
                f"{env}={shown}: not a valid template ({exc}; write {{{{ and }}}} for literal braces)"
            ) from exc


@cache
def _adapter(settings_cls: type[BaseSettings], name: str) -> TypeAdapter:
    """One field's type with its validators, to parse a value a template refers to."""
    field = settings_cls.model_fields[name]
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)


def _explain(exc: ValidationError, env: str | None = None) -> str:
    """`VARIABLE='value': what is wrong`, one per bad value; a secret's value is not repeated.

    `env` names the variable when `exc` comes from one field's own validation (its locations name no field)."""
    by_name = {f.name: f for f in settings_fields()}
    by_env = {f.env: f for f in by_name.values()}
    problems = []
    for err in exc.errors():
        key = env or (str(err["loc"][0]) if err["loc"] else "?")
        f = by_env.get(key) or by_name.get(key)
        name = f.env if f else key
        shown = "***" if f and f.secret else repr(err["input"])
        reason = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
        problems.append(f"{name}={shown}: {reason}")
    return "; ".join(problems)


@dataclass(frozen=True)
class SettingField:
    """One declared setting as the docs table and tools see it (it replaces the `dataclasses.Field` rows)."""

    name: str
    env: str
    default: Any
    doc: str
    secret: bool

    @property
    def metadata(self) -> dict[str, Any]:
        """The `dataclasses.Field` view (`metadata["env"]`) that existing callers read."""
        return {"env": self.env, "doc": self.doc, "secret": self.secret}


def settings_fields() -> list[SettingField]:
    """The documented settings, in declaration order."""
    return [
        SettingField(
            name, f.validation_alias, f.default, f.description, bool((f.json_schema_extra or {}).get("secret"))
        )
        for name, f in Settings.model_fields.items()
    ]


def settings_table() -> str:
    """The Markdown table of settings that docs/configuration.md embeds (checked by a test)."""
    rows = ["| Variable | Default | What it is for |", "| --- | --- | --- |"]
    for f in settings_fields():
        default = f.default
        shown = "*(unset)*" if default is None else ("*(empty)*" if default == "" else f"`{default}`")
        rows.append(f"| `{f.env}` | {shown} | {f.doc} |")
    return "\n".join(rows)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings from the environment, read once."""
    return Settings.from_env()


def replace(settings: Settings, **changes: Any) -> Settings:
    """A copy of `settings` with `changes` applied: the one way tests and tools derive settings.

    The changes are validated as the environment is (a wrong type fails here, not in the code that reads it).
    Nothing is re-derived: changing `redis_url` leaves `broker_url` as it was, as before."""
    current = {name: getattr(settings, name) for name in type(settings).model_fields}
    return type(settings).from_env({}, **{**current, **changes})
