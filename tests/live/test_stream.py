"""/ws/events end to end: the API under gunicorn with both workers (as the Procfile starts it), real
Redis, real detection and analysis workers and the service host. A photograph dropped into a camera
folder reaches a subscribed client as `detection.new` then `event.created`, with payloads that meet
the registry's schemas; a camera filter keeps other cameras out; a client that stops reading is
dropped (4008) without delaying the others; the broadcaster breaker opens while Redis is away and
closes when it is back, as /api/system/health/websocket shows.

The module has a Redis server of its own: the last test stops it.
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
import requests
import websocket

from tests.helpers import API_KEY, worker_env
from tests.live import wsraw
from tests.live.wsraw import Readers
from tests.servers import ROOT, ApiServer, CeleryWorker, RedisServer, wait_for

pytestmark = pytest.mark.slow

BUFFER = 1000  # VIGIL_WS_BUFFER_MESSAGES of this stack


class LiveStack:
    def __init__(self, tmp: Path):
        from app.core.migrate import upgrade

        self.tmp = tmp
        self.root = tmp / "cameras"
        self.redis = RedisServer().start()
        database_url = f"sqlite:///{tmp}/vigil.db"
        upgrade(database_url)
        self.env = worker_env(
            REDIS_URL=self.redis.url,
            DATABASE_URL=database_url,
            VIGIL_VAR_DIR=str(tmp / "var"),
            VIGIL_CAMERA_ROOT=str(self.root),
            VIGIL_THUMBNAIL_DIR=str(tmp / "thumbs"),
            VIGIL_BATCH_CHECK_INTERVAL="0.5",
            VIGIL_LOG_DB="false",
            VIGIL_PROMETHEUS_URL="",
            VIGIL_WS_BUFFER_MESSAGES=str(BUFFER),
            VIGIL_WS_SOCKET_BUFFER="8192",
            VIGIL_BREAKER_FAILURE_THRESHOLD="2",
            VIGIL_BREAKER_RECOVERY_SECONDS="1",
        )
        for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "VIGIL_METRICS_DIR", "VIGIL_EXPORT_DIR"):
            self.env.pop(key, None)
        self.workers = [
            CeleryWorker(self.env, "detection_worker", ["detection:high", "detection"]),
            CeleryWorker(self.env, "analysis_worker", ["analysis"]),
        ]
        self.api = ApiServer(self.env, workers=2)
        self.host: subprocess.Popen | None = None
        self.host_log = tmp / "host.log"

    def start(self) -> LiveStack:
        for w in self.workers:
            w.start(wait=False)
        with open(self.host_log, "wb") as log:
            self.host = subprocess.Popen(
                [sys.executable, "-m", "workers.host"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.api.start()
        for w in self.workers:
            w.wait_ready(60)
        r = requests.patch(
            self.api.url + "/api/system/config",
            json={"batch_window_seconds": 2, "batch_idle_timeout_seconds": 1},
            headers={"X-API-Key": API_KEY},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        wait_for(
            lambda: self.get("/api/system/pipeline").json()["file_watcher"]["running"], 60, what="the file watcher"
        )
        return self

    def stop(self) -> None:
        self.api.stop()
        if self.host is not None and self.host.poll() is None:
            self.host.send_signal(signal.SIGTERM)
            try:
                self.host.wait(15)
            except subprocess.TimeoutExpired:
                self.host.kill()
        for w in self.workers:
            w.stop()
        self.redis.cleanup()

    def get(self, path: str) -> requests.Response:
        return requests.get(self.api.url + path, timeout=10)

    def connect(self, query: str = "", **options) -> websocket.WebSocket:
        ws = websocket.create_connection(self.api.url.replace("http://", "ws://") + "/ws/events" + query, **options)
        ws.settimeout(30)
        hello = json.loads(ws.recv())
        assert hello["type"] == "system.connected" and hello["id"] is None, hello
        return ws

    def settings(self):
        from app.core.settings import Settings

        return Settings.from_env(self.env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    live = LiveStack(tmp_path_factory.mktemp("live"))
    try:
        yield live.start()
    finally:
        live.stop()


def read_until(ws: websocket.WebSocket, done, timeout: float = 60) -> list[dict]:
    """Messages (not control ones) until `done(message)` is true for one."""
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise AssertionError(f"closed by the server: {data!r}")
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue
        message = json.loads(data)
        if message["id"] is None:
            continue
        got.append(message)
        if done(message):
            return got
    raise AssertionError(f"gave up after {timeout}s; got {[m['type'] for m in got]}")


def _received_ms(message: dict, at: float) -> float:
    sent = datetime.fromisoformat(message["ts"].replace("Z", "+00:00")).timestamp()
    return (at - sent) * 1000


def test_photo_reaches_subscribers_as_detections_then_an_event_filtered_by_camera(stack, photos):
    schemas = {t["type"]: t["payload_schema"] for t in stack.get("/api/system/websocket/events").json()["event_types"]}
    everything = stack.connect("?channels=detections,events")
    back_yard_only = stack.connect("?channels=detections,events&camera_id=back_yard")
    alerts_only = stack.connect("?channels=alerts")
    try:
        for folder, name in (("Front Door", "astronaut"), ("Back Yard", "astronaut_flipped")):
            (stack.root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photos[name], stack.root / folder / f"{name}.jpg")

        created = set()

        def both_events(message):
            if message["type"] == "event.created":
                created.add(message["payload"]["camera_id"])
            return created == {"front_door", "back_yard"}

        got = read_until(everything, both_events)
        for message in got:
            assert set(message) == {"type", "channel", "ts", "id", "payload"}
            jsonschema.validate(message["payload"], schemas[message["type"]])
            assert message["channel"] == {"detection.new": "detections", "event.created": "events"}[message["type"]]
        ids = [tuple(map(int, m["id"].split("-"))) for m in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for camera in ("front_door", "back_yard"):
            mine = [m for m in got if m["payload"]["camera_id"] == camera]
            kinds = [m["type"] for m in mine]
            assert kinds[-1] == "event.created" and kinds.count("event.created") == 1
            assert kinds[:-1] and set(kinds[:-1]) == {"detection.new"}, kinds  # detections first, in order
            event = mine[-1]["payload"]
            assert event["detection_count"] == len(kinds) - 1
            assert sorted(m["payload"]["detection_id"] for m in mine[:-1]) == sorted(
                d["id"] for d in stack.get(f"/api/events/{event['event_id']}").json()["detections"]
            )

        filtered = read_until(back_yard_only, lambda m: m["type"] == "event.created")
        assert filtered and {m["payload"]["camera_id"] for m in filtered} == {"back_yard"}
        assert [m["id"] for m in filtered] == [m["id"] for m in got if m["payload"]["camera_id"] == "back_yard"]
        alerts_only.settimeout(0.5)
        with pytest.raises(websocket.WebSocketTimeoutException):
            alerts_only.recv()  # no rule, no alert; nothing of the other channels either
    finally:
        for ws in (everything, back_yard_only, alerts_only):
            ws.close()


def test_subscribe_message_changes_channels_and_a_client_resumes_from_its_last_id(stack):
    from app.live import bus

    settings = stack.settings()
    ws = stack.connect("?channels=events")
    try:
        ws.send(json.dumps({"action": "subscribe", "channels": ["jobs"], "queue": "cleanup"}))
        ack = json.loads(ws.recv())
        assert ack["type"] == "system.subscribed"
        assert ack["payload"] == {"channels": ["events", "jobs"], "filters": {"queue": "cleanup"}}
        ws.send(json.dumps({"action": "subscribe", "channels": ["gossip"]}))
        assert json.loads(ws.recv())["type"] == "system.error"
        for queue in ("analysis", "cleanup"):
            bus.publish("queue.paused", {"queue": queue, "status": "paused"}, settings)
        [paused] = read_until(ws, lambda m: m["type"] == "queue.paused")
        assert paused["payload"]["queue"] == "cleanup"  # the queue filter held the other back
    finally:
        ws.close()

    for queue in ("analysis", "detection"):
        bus.publish("queue.resumed", {"queue": queue, "status": "active"}, settings)
    assert bus.publisher(settings).flush()
    again = websocket.create_connection(
        stack.api.url.replace("http://", "ws://") + f"/ws/events?channels=jobs&last_event_id={paused['id']}"
    )
    try:
        again.settimeout(30)
        hello = json.loads(again.recv())
        assert hello["payload"]["resume"] == {"requested": paused["id"], "replayed": 2, "complete": True}
        replayed = [json.loads(again.recv()) for _ in range(2)]
        assert [(m["type"], m["payload"]["queue"]) for m in replayed] == [
            ("queue.resumed", "analysis"),
            ("queue.resumed", "detection"),
        ]
    finally:
        again.close()


def test_a_stalled_client_is_dropped_without_delaying_the_others(stack):
    from app.live import bus

    settings = stack.settings()
    count = 3000
    url = stack.api.url.replace("http://", "ws://") + "/ws/events?channels=detections"
    readers = Readers([url] * 3, count).start()
    stalled, _ = wsraw.connect(url, rcvbuf=4096)  # never reads until it has been dropped
    payload = {
        "camera_id": "bench",
        "object_type": "person",
        "confidence": 0.9,
        "bbox": [1, 2, 3, 4],
        "batch_id": "x" * 200,  # bulk, so the stalled client's buffers fill sooner
        "job_id": "stall-test",
        "detected_at": None,
    }
    outcome: dict = {}

    def dropped_then_read() -> None:
        """Once the API reports the drop, read what the stalled client was sent: its close frame."""
        try:
            outcome["health"] = wait_for(
                lambda: (h := stack.get("/api/system/health/websocket").json())["dropped_clients"] >= 1 and h,
                30,
                what="the stalled client dropped",
            )
            stalled.settimeout(10)
            buf, outcome["received"] = bytearray(), 0
            while "close" not in outcome:
                data = stalled.recv(1 << 16)
                if not data:
                    outcome["close"] = None  # closed without a close frame
                    return
                buf += data
                for opcode, body in wsraw.frames(buf):
                    if opcode == wsraw.OP_CLOSE:
                        outcome["close"] = body
                        break
                    outcome["received"] += opcode == wsraw.OP_TEXT
        except BaseException as exc:
            outcome["error"] = exc

    told = threading.Thread(target=dropped_then_read, daemon=True)
    told.start()
    try:
        for n in range(count):
            bus.publish("detection.new", {**payload, "detection_id": n}, settings)
            if n % 50 == 49:
                time.sleep(0.05)  # ~1,000 events/s, not one burst
        try:
            readers.join(120)
        except TimeoutError as exc:
            missing = [sorted(set(range(count)) - {m["payload"]["detection_id"] for _, m in g}) for g in readers.got]
            spans = [(m[0], m[-1], len(m)) if m else None for m in missing]
            raise AssertionError(
                f"{exc}; missing {spans}; {stack.get('/api/system/health/websocket').json()}\n{stack.api.log()}"
            ) from None
        assert readers.closed == [None, None, None]
        latencies = []
        for got in readers.got:
            assert [m["payload"]["detection_id"] for _, m in got] == list(range(count))  # all, in order
            latencies += [_received_ms(m, at) for at, m in got]
        latencies.sort()
        p99, worst = latencies[int(0.99 * len(latencies)) - 1], latencies[-1]
        # Never held up behind the stalled client (a blocking write would stall them until its 10 s grace).
        assert worst < 4000, f"p99 {p99:.1f} ms, worst {worst:.1f} ms"

        told.join(30)
        assert not told.is_alive() and outcome.get("close") is not None, outcome
        assert outcome["health"]["event_broadcaster"]["state"] == "closed"
        close, received = outcome["close"], outcome["received"]
        assert struct.unpack("!H", close[:2])[0] == 4008 and b"slow consumer" in close
        # It got what its socket buffers held; the server discarded the rest (its 1,000 queued) and told it.
        assert 0 < received < count - BUFFER
    finally:
        readers.close()
        stalled.close()


def test_broadcaster_breaker_opens_without_redis_and_closes_when_it_returns(stack):
    from app.live import bus

    def health():
        return stack.get("/api/system/health/websocket").json()

    assert health()["event_broadcaster"]["state"] == "closed"
    stack.redis.stop(hard=True)
    try:
        opened = wait_for(lambda: (h := health())["event_broadcaster"]["state"] == "open" and h, 20, what="open")
        assert opened["system_broadcaster"]["state"] == "open" and opened["subscribed"] is False
        assert opened["event_broadcaster"]["last_failure"] and opened["event_broadcaster"]["failures"] >= 2
        assert stack.get("/health").status_code == 200  # HTTP goes on
        assert stack.get("/api/system/websocket/events").status_code == 200
    finally:
        stack.redis.start()

    streak = []

    def closed_everywhere():
        h = health()
        streak.append(h["event_broadcaster"]["state"] == "closed" and h["system_broadcaster"]["state"] == "closed")
        return all(streak[-6:]) and len(streak) >= 6  # several reads: both gunicorn workers answered closed

    wait_for(closed_everywhere, 30, interval=0.2, what="both breakers closed again")
    ws = stack.connect("?channels=system")
    try:
        bus.publish(
            "system.health_changed",
            {"status": "healthy", "previous": "unhealthy", "components": {"redis": "healthy"}},
            stack.settings(),
        )
        [back] = read_until(ws, lambda m: m["type"] == "system.health_changed", timeout=20)
        assert back["payload"]["previous"] == "unhealthy"
    finally:
        ws.close()
