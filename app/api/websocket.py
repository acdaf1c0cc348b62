"""Live events: the WebSocket stream GET /ws/events, its event registry and its health (System Monitoring
guide, System Operations API).

The protocol is in docs/api.md ("Live events (WebSocket)"); why the connection leaves gunicorn's
thread right after the handshake is in app/live/hub.py.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Literal

import jwt
import redis
from flask import Blueprint, Response, request
from pydantic import BaseModel, ConfigDict, Field

from app.api.kit.auth import ADMIN, authenticate
from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.envelopes import Answer
from app.api.kit.errors import ApiError
from app.core.time import iso_now, iso_utc
from app.live import bus, hub, registry

bp = Blueprint("websocket", __name__)
TAGS = ["websocket"]
TOKEN_AUDIENCE = "vigil-ws"
ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"
CHANNELS_PATTERN = r"^(" + "|".join(registry.CHANNELS) + r")?(,(" + "|".join(registry.CHANNELS) + r")?)*$"


class StreamQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: str | None = Field(
        None,
        max_length=200,
        pattern=CHANNELS_PATTERN,
        description="Comma-separated channels (detections, events, alerts, cameras, jobs, system); "
        "absent: every channel",
    )
    camera_id: str | None = Field(None, min_length=1, max_length=200, description="Only this camera's events")
    queue: str | None = Field(None, min_length=1, max_length=200, description="Only this queue's job events")
    min_risk: int | None = Field(None, ge=0, le=100, description="Only events scored at least this")
    last_event_id: str | None = Field(
        None,
        pattern=ID_PATTERN,
        description="Resume: replay what followed this id (within VIGIL_WS_RESUME_SECONDS)",
    )
    token: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="A short-lived token from POST /api/system/websocket/token, for clients (browsers) "
        "that cannot send headers",
    )


class EventTypeEntry(Answer):
    type: str = Field(description="{domain}.{action}")
    channel: str
    description: str
    deprecated: bool
    payload_schema: dict[str, Any] = Field(description="JSON Schema of `payload`, from the model that builds it")
    example: dict[str, Any]


class EventRegistry(Answer):
    event_types: list[EventTypeEntry]
    channels: list[str]
    total_count: int
    deprecated_count: int


State = Literal["closed", "open", "half_open"]


class BroadcasterHealth(Answer):
    state: State
    failures: int = Field(description="Consecutive failures")
    total_failures: int
    last_failure: str | None
    last_error: str | None


class ProcessClients(Answer):
    pid: int
    clients: int
    connected_total: int
    dropped_slow: int
    dropped_dead: int
    events_received: int


class WebSocketHealth(Answer):
    event_broadcaster: BroadcasterHealth
    system_broadcaster: BroadcasterHealth
    subscribed: bool = Field(description="This API process's pub/sub subscription is up")
    connected_clients: int = Field(description="Open connections over every API process that reported")
    dropped_clients: int = Field(description="Connections dropped as slow (4008) or dead, since each process started")
    processes: list[ProcessClients] = Field(
        description="Each API process's counters as it last wrote them (only this one's while Redis is down)"
    )
    published: int = Field(description="Events this process published")
    publish_dropped: int = Field(description="Events this process dropped (breaker open, Redis down, queue full)")
    timestamp: str


class WsToken(Answer):
    token: str
    expires_at: str
    expires_in: int


def _signing_key() -> str | None:
    settings = current_settings()
    return settings.jwt_secret or settings.api_key


def _check_token(token: str) -> None:
    key = _signing_key()
    if not key:
        raise ApiError(401, "Tokens are not accepted by this server.", code="unauthorized")
    try:
        jwt.decode(token, key, algorithms=["HS256"], audience=TOKEN_AUDIENCE, options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "Token expired.", code="unauthorized") from None
    except jwt.InvalidTokenError as exc:
        raise ApiError(401, f"Invalid token: {exc}", code="unauthorized") from None


class _HandedOff(Response):
    """The connection now belongs to the hub: gunicorn must write nothing more and close its own
    descriptor. Raising StopIteration from the WSGI call is how gunicorn's workers take that (it
    logs "Closing connection" and closes without shutting the socket down, so the hub's copy lives)."""

    def __call__(self, environ: Any, start_response: Any) -> Any:
        raise StopIteration("websocket handed to the hub")


def _take_over(raw: socket.socket) -> socket.socket:
    """The connection for the hub; gunicorn's socket object is left holding an unconnected placeholder.

    gunicorn ends a request it will not keep alive with a graceful close, `shutdown(SHUT_WR)` first,
    which would end the WebSocket for the hub's duplicate too (a shutdown acts on the connection, not
    on one descriptor). So the descriptor gunicorn holds is pointed (dup2) at a fresh socket that has
    no connection: its shutdown fails harmlessly and its close closes only the placeholder."""
    mine = raw.dup()
    placeholder = socket.socket(raw.family, raw.type)
    try:
        os.dup2(placeholder.fileno(), raw.fileno())
    finally:
        placeholder.close()
    return mine


def _not_upgrade(message: str) -> ApiError:
    return ApiError(
        426, message, code="upgrade_required", headers={"Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    )


@bp.get("/ws/events")
@endpoint(
    query=StreamQuery,
    status=101,
    probe=True,  # credentials are checked here: a query token is accepted besides the headers
    summary="Live events over WebSocket (upgrade; protocol in docs/api.md)",
    tags=TAGS,
    errors={
        401: "VIGIL_AUTH_READS is on and no valid credentials (X-API-Key, Bearer JWT or `token`) were sent",
        426: "Not a WebSocket upgrade request (or not version 13)",
    },
)
def stream(query: StreamQuery):
    """Upgrades to a WebSocket and sends live events as JSON text messages `{"type", "channel", "ts",
    "id", "payload"}`; the first is `system.connected`. Send `{"action": "subscribe"|"unsubscribe",
    "channels": [...]}` (optionally with `camera_id`, `queue`, `min_risk`) to change the subscription.
    A client more than VIGIL_WS_BUFFER_MESSAGES behind is closed with code 4008."""
    settings = current_settings()
    if query.token is not None:
        _check_token(query.token)
    elif settings.auth_reads and authenticate() is None:
        raise ApiError(
            401,
            "Credentials required: send X-API-Key, Authorization: Bearer <token>, or ?token=.",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="vigil", charset="UTF-8"'},
        )
    headers = request.headers
    if headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in headers.get("Connection", "").lower():
        raise _not_upgrade("This endpoint speaks WebSocket: send an Upgrade: websocket request.")
    if headers.get("Sec-WebSocket-Version") != "13" or not headers.get("Sec-WebSocket-Key"):
        raise _not_upgrade("WebSocket version 13 with a Sec-WebSocket-Key is required.")
    raw = request.environ.get("gunicorn.socket")
    if raw is None:
        raise _not_upgrade("This server cannot hand over connections; run the API under gunicorn.")
    channels = hub.parse_channels(query.channels) if query.channels is not None else list(registry.CHANNELS)
    filters = hub.parse_filters(query.model_dump(include={"camera_id", "queue", "min_risk"}, exclude_none=True))
    live = hub.get_hub(settings)
    handshake = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {hub.accept_key(headers['Sec-WebSocket-Key'])}\r\n\r\n"
    ).encode()
    client = live.add(_take_over(raw), channels, filters, request.remote_addr or "", handshake)
    replayed: list[tuple[str, str]] = []
    resume = None
    if query.last_event_id:
        complete = False
        try:
            replayed, complete = bus.replay(bus.live_client(settings), query.last_event_id, settings.ws_resume_max)
        except redis.RedisError:
            pass
        resume = {"requested": query.last_event_id, "replayed": len(replayed), "complete": complete}
    welcome = hub.control_frame(
        "system.connected",
        {
            "connection_id": client.id,
            "channels": [c for c in registry.CHANNELS if c in client.channels],
            "filters": filters,
            "resume": resume,
            "heartbeat_seconds": live.heartbeat,
            "buffer_messages": live.limit,
        },
    )
    live.begin(client, welcome, replayed, query.last_event_id)
    return _HandedOff(status=101)


# werkzeug routes an Upgrade: websocket request only to a rule marked `websocket=True` (and a plain request
# never to one), so the same view has both rules: the upgrade, and the plain GET that is told 426.
bp.add_url_rule("/ws/events", endpoint="stream", view_func=stream, methods=["GET"], websocket=True)


@bp.post("/api/system/websocket/token")
@endpoint(
    response=WsToken,
    summary="A short-lived token for GET /ws/events?token=... (browsers cannot send headers)",
    tags=TAGS,
    offline=True,
    errors={409: "No VIGIL_JWT_SECRET or VIGIL_API_KEY to sign with"},
)
def token():
    """Signed with VIGIL_JWT_SECRET (or VIGIL_API_KEY), valid for VIGIL_WS_TOKEN_SECONDS and only for
    the stream (audience `vigil-ws`)."""
    settings = current_settings()
    key = _signing_key()
    if not key:
        raise ApiError(409, "No signing key: set VIGIL_JWT_SECRET or VIGIL_API_KEY.", code="conflict")
    principal = authenticate()
    now = int(time.time())
    lifetime = max(1, settings.ws_token_seconds)
    claims = {
        "sub": principal.subject if principal else "anonymous",
        "roles": sorted(principal.roles) if principal else [ADMIN],
        "aud": TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
    }
    return {
        "token": jwt.encode(claims, key, algorithm="HS256"),
        "expires_at": iso_utc(now + lifetime),
        "expires_in": lifetime,
    }


@bp.get("/api/system/websocket/events")
@endpoint(
    response=EventRegistry,
    summary="Every WebSocket event type with its channel and payload schema",
    tags=TAGS,
    offline=True,
)
def event_registry():
    return registry.registry()


@bp.get("/api/system/health/websocket")
@endpoint(
    response=WebSocketHealth,
    summary="WebSocket broadcasters: circuit breaker state, connected and dropped clients",
    probe=True,
    offline=True,
    tags=TAGS + ["health"],
)
def websocket_health():
    """The breakers are this API process's (they guard its Redis publishing and its pub/sub
    subscription, so they cannot be kept in Redis); client counts are summed over every API process."""
    settings = current_settings()
    live = hub.get_hub(settings)
    mine = live.stats()
    try:
        processes = hub.cluster_stats(settings)
    except redis.RedisError:
        processes = []
    if not any(p["pid"] == mine["pid"] for p in processes):
        processes.append({k: v for k, v in mine.items() if k != "subscribed"})
    else:  # this process's own numbers are current, not two seconds old
        processes = [
            ({k: v for k, v in mine.items() if k != "subscribed"} if p["pid"] == mine["pid"] else p) for p in processes
        ]
    fields = ProcessClients.model_fields
    processes = [{k: int(p.get(k, 0)) for k in fields} for p in processes]
    pub = bus.publisher(settings)
    return {
        "event_broadcaster": live.breakers["event"].snapshot(),
        "system_broadcaster": live.breakers["system"].snapshot(),
        "subscribed": mine["subscribed"],
        "connected_clients": sum(p["clients"] for p in processes),
        "dropped_clients": sum(p["dropped_slow"] + p["dropped_dead"] for p in processes),
        "processes": processes,
        "published": pub.published,
        "publish_dropped": pub.dropped,
        "timestamp": iso_now(),
    }
