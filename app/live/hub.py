"""The WebSocket fan-out of one API process: its connections, the Redis subscription that feeds them.

Why the hub owns the sockets: under gunicorn's gthread workers a request holds a thread until it
returns, so a WebSocket served inside its request would hold one of VIGIL_API_THREADS for as long as
it stays open (100 clients would starve the HTTP API). The `/ws/events` view instead answers the
handshake, hands a duplicate of the connection's socket to the hub and returns; gunicorn closes its own
descriptor and forgets the connection. One hub thread then serves every connection of the process with
non-blocking sockets and a selector: it parses what clients send (wsproto), writes what they get, and
sends heartbeats. A subscriber thread reads the Redis pub/sub channels and passes each event to it.

Each event is parsed once and framed once per process (server frames are not masked, so every client
gets the same bytes). A client's socket that will not take more queues frames in its own bounded
buffer (VIGIL_WS_BUFFER_MESSAGES); one past it is a slow client: its buffer is discarded, it is sent
close code 4008 ("slow consumer") and closed, at most `CLOSE_GRACE` seconds later. Nothing a client
does blocks the hub: producers and the other clients never wait for a slow one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import selectors
import socket
import struct
import threading
import time
import uuid
from collections import deque
from typing import Any

import redis
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from app.core.settings import Settings
from app.live import bus
from app.live.breaker import LocalBreaker
from app.live.registry import CHANNELS, EVENT_TYPES

log = logging.getLogger(__name__)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_SLOW = 4008  # slow consumer: fell more than VIGIL_WS_BUFFER_MESSAGES behind
CLOSE_GOING_AWAY = 1001  # the API process is stopping
CLOSE_DEAD = 4000  # missed heartbeats (sent, in case the client hears it)
CLOSE_GRACE = 10.0  # seconds a closing connection gets to take its close frame
MAX_CLIENT_MESSAGE = 64 * 1024
FILTERS = ("camera_id", "queue", "min_risk")


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def text_frame(data: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 5.2), as a server sends it."""
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + data


def control_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """A message for one connection (connected, subscribed, error): no id, never stored."""
    _, text = bus.envelope(event_type, payload)
    return text_frame(('{"id":null,' + text[1:]).encode())


def parse_channels(value: Any) -> list[str]:
    """Channels from `detections,events` or a JSON list; ValueError names an unknown one."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("channels must be a list of channel names")
    out = []
    for item in items:
        name = str(item).strip()
        if not name:
            continue
        if name not in CHANNELS:
            raise ValueError(f"unknown channel '{name[:40]}'; known: {', '.join(CHANNELS)}")
        if name not in out:
            out.append(name)
    return out


class Client:
    def __init__(self, sock: socket.socket, channels: list[str], filters: dict[str, Any], peer: str):
        self.id = uuid.uuid4().hex[:12]
        self.sock = sock
        self.ws = Connection(ConnectionType.SERVER)
        self.channels = set(channels)
        self.filters = filters
        self.peer = peer
        self.out: deque[memoryview] = deque()  # bytes the socket has not taken yet, in chunks
        self.counts: deque[int] = deque()  # messages in each chunk
        self.backlog = 0  # messages not fully written: the bound VIGIL_WS_BUFFER_MESSAGES applies to
        self.writing = False  # registered for EVENT_WRITE
        self.closing_at: float | None = None  # close frame queued: close the socket by then
        self.starting = True  # live events are held until the welcome (and replay) went out
        self.held: list[tuple[str, bytes]] = []
        self.last_heard = time.monotonic()
        self.text_parts: list[str] = []

    def wants(self, channel: str, payload: dict[str, Any]) -> bool:
        if channel not in self.channels:
            return False
        f = self.filters
        if "camera_id" in f and "camera_id" in payload and payload["camera_id"] != f["camera_id"]:
            return False
        if "queue" in f and "queue" in payload and payload["queue"] != f["queue"]:
            return False
        if "min_risk" in f and payload.get("risk_score") is not None and payload["risk_score"] < f["min_risk"]:
            return False
        return True


class Hub:
    """One per API process; `start()` once (idempotent), then `add()` connections from request threads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.pid = os.getpid()
        self.limit = max(1, settings.ws_buffer_messages)
        self.heartbeat = max(0.5, settings.ws_heartbeat_seconds)
        self.breakers = bus.publisher(settings).breakers  # this process's: publishing and subscribing share them
        self.clients: dict[str, Client] = {}
        self.commands: deque[tuple[Any, ...]] = deque()
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.counters = {"connected_total": 0, "dropped_slow": 0, "dropped_dead": 0, "events_received": 0}
        self.subscribed = False
        self.last_id: str | None = None  # the last event id the subscription delivered
        self.passed = (-1, -1)  # the last event id the hub thread fanned out (it skips older ones)
        self._woken = False
        self.started = False
        self.stopping = False
        self._lock = threading.Lock()

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Hub:
        with self._lock:
            if not self.started:
                self.started = True
                threading.Thread(target=self._loop, name="vigil-ws-hub", daemon=True).start()
                threading.Thread(target=self._subscribe_loop, name="vigil-ws-subscriber", daemon=True).start()
        return self

    def shutdown(self, timeout: float = 1.0) -> None:
        """Tell every client the process is going away (1001) and give the frames a moment to leave."""
        if not self.started:
            return
        self._command("shutdown")
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            time.sleep(0.02)

    def _command(self, *item: Any) -> None:
        self.commands.append(item)
        if self._woken:
            return  # a wake-up is pending: the loop will find this command with the others
        self._woken = True
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is awake anyway

    # ---- from request threads -----------------------------------------------------------------
    def add(
        self, sock: socket.socket, channels: list[str], filters: dict[str, Any], peer: str, handshake: bytes
    ) -> Client:
        """Register the connection; the hub writes `handshake` (the 101 answer) once it holds the
        client, so every event published after the client saw the 101 reaches it."""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.settings.ws_socket_buffer > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.ws_socket_buffer)
        client = Client(sock, channels, filters, peer)
        self._command("add", client, handshake)
        return client

    def begin(self, client: Client, welcome: bytes, replay: list[tuple[str, str]], after: str | None) -> None:
        """Send the welcome, then the replayed events, then what arrived live meanwhile (no duplicates)."""
        self._command("begin", client, welcome, replay, after)

    # ---- the subscriber thread ----------------------------------------------------------------
    def _subscribe_loop(self) -> None:
        """Subscribe, pass every message to the hub thread, and after a lost subscription catch up from
        the stream: what was published while this process was not subscribed (within the resume window)
        still reaches its clients, once, in order (the hub skips ids it has passed)."""
        backoff = 0.2
        while not self.stopping:
            if not all(b.allow() for b in self.breakers.values()):
                time.sleep(0.2)
                continue
            pubsub = None
            try:
                client = bus.live_client(self.settings, timeout=10)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(*bus.CHANNEL_KEYS.values())
                if self.last_id is not None:
                    missed, _ = bus.replay(client, self.last_id, self.settings.ws_resume_max)
                    for event_id, text in missed:
                        self._command("event", event_id + " " + text)
                self.subscribed = True
                backoff = 0.2
                last_beat = last_stats = time.monotonic()
                while not self.stopping:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.last_id = message["data"].partition(" ")[0]
                        self._command("event", message["data"])
                    now = time.monotonic()
                    if now - last_beat >= 1.0:
                        last_beat = now
                        pubsub.ping()  # the answer comes back as a message: a dead connection raises
                        for b in self.breakers.values():
                            b.success()
                    if now - last_stats >= 2.0:
                        last_stats = now
                        self._write_stats(client)
            except (redis.RedisError, OSError) as exc:
                # Once per outage at WARNING (the breaker and the health endpoint tell the rest).
                log.log(
                    logging.WARNING if self.subscribed or backoff == 0.2 else logging.DEBUG,
                    "live subscription lost: %s",
                    exc,
                )
                self.subscribed = False
                for b in self.breakers.values():
                    b.failure(exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def _write_stats(self, client: redis.Redis) -> None:
        """This process's counters for the health endpoint; a failure here is not a lost subscription."""
        key = bus.STATS_KEY + str(self.pid)
        try:
            pipe = client.pipeline(transaction=False)
            pipe.hset(key, mapping={"clients": len(self.clients), **self.counters})
            pipe.expire(key, 10)
            pipe.execute()
        except redis.RedisError:
            log.debug("live stats not written", exc_info=True)

    # ---- the hub thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        next_beat = time.monotonic() + self.heartbeat
        while True:
            try:
                timeout = min(1.0, max(0.0, next_beat - time.monotonic()))
                if any(c.closing_at for c in self.clients.values()):
                    timeout = min(timeout, 0.2)
                for key, mask in self.selector.select(timeout):
                    if key.data is None:
                        self._drain_commands()
                        continue
                    client = key.data
                    if client.id not in self.clients:
                        continue
                    if mask & selectors.EVENT_READ:
                        self._read(client)
                    if mask & selectors.EVENT_WRITE and client.id in self.clients:
                        self._flush(client)
                if self.commands:  # never strand a command, whatever happened to its wake-up
                    self._drain_commands()
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.heartbeat
                    self._beat(now)
                for client in [c for c in self.clients.values() if c.closing_at and now >= c.closing_at]:
                    self._close(client, "close grace over")
            except Exception:
                log.exception("websocket hub loop error")

    def _drain_commands(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        # After emptying the pipe, before reading the queue: a command queued from here on either is
        # read below or sends a fresh wake-up (resetting first could swallow a wake-up and strand one).
        self._woken = False
        batch: list[str] = []
        while self.commands:
            item = self.commands.popleft()
            kind = item[0]
            if kind == "event":
                batch.append(item[1])
                continue
            if batch:
                self._fan_out(batch)
                batch = []
            if kind == "add":
                client = item[1]
                self.clients[client.id] = client
                self.counters["connected_total"] += 1
                self.selector.register(client.sock, selectors.EVENT_READ, client)
                self._send(client, item[2], 0)
            elif kind == "begin":
                self._begin(*item[1:])
            elif kind == "shutdown":
                self.stopping = True
                for client in list(self.clients.values()):
                    self._start_close(client, CLOSE_GOING_AWAY, "server shutting down")
        if batch:
            self._fan_out(batch)

    def _fan_out(self, batch: list[str]) -> None:
        """Events that arrived together go to each client in one write: when the hub falls behind,
        its batches grow and its system calls per event shrink, so it catches up instead of sinking."""
        events = []
        for data in batch:
            event_id, _, text = data.partition(" ")
            position = bus.stream_id(event_id)
            if position <= self.passed:
                continue  # caught up from the stream already (or delivered twice by a resubscription)
            self.passed = position
            try:
                event = json.loads(text)
                events.append(
                    (event_id, event["channel"], event.get("payload") or {}, ('{"id":"' + event_id + '",' + text[1:]))
                )
            except (ValueError, KeyError, TypeError):
                log.warning("malformed live event dropped: %.200s", data)
        self.counters["events_received"] += len(events)
        frames: dict[int, bytes] = {}

        def frame(i: int) -> bytes:
            if i not in frames:
                frames[i] = text_frame(events[i][3].encode())
            return frames[i]

        for client in list(self.clients.values()):
            if client.closing_at is not None:
                continue
            wanted = [i for i, (_, channel, payload, _) in enumerate(events) if client.wants(channel, payload)]
            if not wanted:
                continue
            if client.starting:
                client.held.extend((events[i][0], frame(i)) for i in wanted)
                if len(client.held) > self.limit:
                    self._slow(client)
                continue
            data = frame(wanted[0]) if len(wanted) == 1 else b"".join(frame(i) for i in wanted)
            self._send(client, data, len(wanted))

    def _begin(self, client: Client, welcome: bytes, replay: list[tuple[str, str]], after: str | None) -> None:
        if client.id not in self.clients:
            return
        self._send(client, welcome)
        last = bus.stream_id(after) if after else (-1, -1)
        for event_id, text in replay:
            try:
                event = json.loads(text)
            except ValueError:
                continue
            if client.wants(event.get("channel"), event.get("payload") or {}):
                self._send(client, text_frame(('{"id":"' + event_id + '",' + text[1:]).encode()))
            last = max(last, bus.stream_id(event_id))
        held, client.held, client.starting = client.held, [], False
        for event_id, frame in held:
            if bus.stream_id(event_id) > last:
                self._send(client, frame)

    # ---- one connection -----------------------------------------------------------------------
    def _queue(self, client: Client, chunk: memoryview, count: int) -> None:
        client.out.append(chunk)
        client.counts.append(count)
        client.backlog += count

    def _send(self, client: Client, frame: bytes, count: int = 1) -> None:
        """Write `frame` (holding `count` messages) now if the socket takes it, else queue it."""
        if client.closing_at is not None or client.id not in self.clients:
            return
        if client.out:
            if client.backlog + count > self.limit:
                self._slow(client)
                return
            self._queue(client, memoryview(frame), count)
            return
        try:
            n = client.sock.send(frame)
        except BlockingIOError:
            n = 0
        except OSError:
            self._close(client, "send failed")
            return
        if n < len(frame):
            self._queue(client, memoryview(frame)[n:], count)
            self._want_write(client, True)

    def _want_write(self, client: Client, on: bool) -> None:
        if client.writing != on:
            client.writing = on
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
            self.selector.modify(client.sock, events, client)

    def _flush(self, client: Client) -> None:
        while client.out:
            head = client.out[0]
            try:
                n = client.sock.send(head)
            except BlockingIOError:
                return
            except OSError:
                self._close(client, "send failed")
                return
            if n < len(head):
                client.out[0] = head[n:]
                return
            client.out.popleft()
            client.backlog -= client.counts.popleft()
        self._want_write(client, False)
        if client.closing_at is not None:
            self._close(client, "close frame sent")

    def _slow(self, client: Client) -> None:
        """Fell too far behind: discard what it has not got, tell it (4008) and close it."""
        self.counters["dropped_slow"] += 1
        log.info("websocket client %s (%s) too slow: dropped", client.id, client.peer)
        client.held = []
        self._start_close(client, CLOSE_SLOW, f"slow consumer: more than {self.limit} messages behind")

    def _start_close(self, client: Client, code: int, reason: str) -> None:
        if client.closing_at is not None:
            return
        # Keep the first queued frame (it may be half written: the stream would be corrupt without its rest).
        head = (client.out[0], client.counts[0]) if client.out else None
        client.out.clear()
        client.counts.clear()
        client.backlog = 0
        if head is not None:
            self._queue(client, *head)
        try:
            frame = client.ws.send(CloseConnection(code=code, reason=reason))
        except Exception:
            frame = b""
        client.starting = False
        client.closing_at = time.monotonic() + CLOSE_GRACE
        if frame:
            self._queue(client, memoryview(frame), 0)
        self._want_write(client, True)

    def _close(self, client: Client, why: str = "closed") -> None:
        if self.clients.pop(client.id, None) is None:
            return
        log.debug("websocket client %s (%s) closed: %s", client.id, client.peer, why)
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        try:
            client.sock.close()
        except OSError:
            pass

    def _read(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(client, "peer closed the connection")
            return
        client.last_heard = time.monotonic()
        try:
            client.ws.receive_data(data)
            events = list(client.ws.events())
        except Exception:
            self._close(client, "protocol error")
            return
        for event in events:
            if isinstance(event, Ping):
                self._send(client, client.ws.send(event.response()))
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, CloseConnection):
                if client.closing_at is None:
                    try:
                        self._send(client, client.ws.send(event.response()))
                    except Exception:
                        pass
                    client.closing_at = time.monotonic() + CLOSE_GRACE
                    if not client.out:
                        self._close(client, "close handshake")
                else:
                    self._close(client, "close handshake")
                return
            elif isinstance(event, TextMessage):
                client.text_parts.append(event.data)
                if sum(len(p) for p in client.text_parts) > MAX_CLIENT_MESSAGE:
                    client.text_parts = []
                    self._send(client, control_frame("system.error", {"message": "message too large"}))
                elif event.message_finished:
                    text, client.text_parts = "".join(client.text_parts), []
                    self._client_message(client, text)
            elif isinstance(event, BytesMessage):
                if event.message_finished:
                    self._send(client, control_frame("system.error", {"message": "send JSON text messages"}))

    def _client_message(self, client: Client, text: str) -> None:
        """`{"action": "subscribe"|"unsubscribe", "channels": [...]}`, optionally with new filters."""
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError("a message is a JSON object")
            action = msg.get("action")
            if action not in ("subscribe", "unsubscribe"):
                raise ValueError("action must be 'subscribe' or 'unsubscribe'")
            channels = parse_channels(msg.get("channels", []))
            filters = parse_filters({k: msg[k] for k in FILTERS if k in msg}, client.filters)
        except ValueError as exc:
            self._send(client, control_frame("system.error", {"message": str(exc)[:300]}))
            return
        if action == "subscribe":
            client.channels.update(channels)
        else:
            client.channels.difference_update(channels)
        client.filters = filters
        ordered = [c for c in CHANNELS if c in client.channels]
        self._send(client, control_frame("system.subscribed", {"channels": ordered, "filters": filters}))

    def _beat(self, now: float) -> None:
        for client in list(self.clients.values()):
            if client.closing_at is not None:
                continue
            if now - client.last_heard > 2 * self.heartbeat + 1:
                self.counters["dropped_dead"] += 1
                self._start_close(client, CLOSE_DEAD, "no pong")
                continue
            self._send(client, client.ws.send(Ping(payload=b"vigil")))

    # ---- reading --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "clients": len(self.clients),
            "subscribed": self.subscribed,
            **self.counters,
        }


def parse_filters(values: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """camera_id and queue (strings; empty or null clears), min_risk (0-100; null clears)."""
    out = dict(base or {})
    for name in ("camera_id", "queue"):
        if name in values:
            value = values[name]
            if value in (None, ""):
                out.pop(name, None)
            elif not isinstance(value, str) or len(value) > 200:
                raise ValueError(f"{name} must be a string of at most 200 characters")
            else:
                out[name] = value
    if "min_risk" in values:
        value = values["min_risk"]
        if value is None:
            out.pop("min_risk", None)
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise ValueError("min_risk must be an integer from 0 to 100")
        else:
            out["min_risk"] = value
    return out


_hub: Hub | None = None
_hub_lock = threading.Lock()


def get_hub(settings: Settings) -> Hub:
    """This process's hub, started."""
    global _hub
    current = _hub
    if current is None or current.pid != os.getpid():
        with _hub_lock:
            current = _hub
            if current is None or current.pid != os.getpid():
                current = _hub = Hub(settings)
    return current.start()


def running_hub() -> Hub | None:
    current = _hub
    return current if current is not None and current.pid == os.getpid() else None


def cluster_stats(settings: Settings) -> list[dict[str, Any]]:
    """Every API process's counters as it last wrote them (its key expires when it stops)."""
    client = bus.live_client(settings)
    out = []
    for key in client.scan_iter(bus.STATS_KEY + "*", count=100):
        raw = client.hgetall(key)
        if raw:
            out.append({"pid": int(key.rsplit(":", 1)[1]), **{k: int(v) for k, v in raw.items()}})
    return sorted(out, key=lambda r: r["pid"])


__all__ = ["EVENT_TYPES", "Hub", "LocalBreaker", "get_hub", "parse_channels", "parse_filters", "text_frame"]
