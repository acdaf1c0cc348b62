"""The atomic fetch of app/celery/transport.py, on a real Redis: a fetch that never gets its reply
leaves the message restorable, an idle consumer wakes on the doorbell, stock semantics stay."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from kombu import Connection, Exchange, Queue

from app.celery import transport
from app.celery.broker import UNACKED_INDEX_KEY, UNACKED_KEY, bell_key
from app.celery.transport import FETCHED_MARK

QUEUE = "t-atomic"


@pytest.fixture
def url(redis_db):
    """A database of its own; handing it back closes the consumers' waits, which outlive their
    closed kombu connections."""
    return redis_db.url


def _connection(url: str, stock: bool = False, **options) -> Connection:
    cls = "kombu.transport.redis:Transport" if stock else "app.celery.transport:Transport"
    return Connection(url, transport=cls, transport_options=options)


def _publish(url: str, n: int, stock: bool = False) -> None:
    exchange = Exchange("t-ex", "direct", durable=True)
    with _connection(url, stock) as conn:
        producer = conn.Producer()
        for i in range(n):
            producer.publish(
                {"n": i},
                exchange=exchange,
                routing_key=QUEUE,
                serializer="json",
                declare=[Queue(QUEUE, exchange, routing_key=QUEUE)],
            )


def _kill_after_sending_fetch(url: str, stock: bool) -> None:
    """Send one fetch and drop the connection before reading the reply: a SIGKILL at the worst
    moment, made deterministic."""
    conn = _connection(url, stock)
    channel = conn.default_channel
    channel.basic_consume(QUEUE, no_ack=False, callback=lambda m: None, consumer_tag="t")
    conn.transport.cycle._register_BRPOP(channel)  # connects and sends the fetch
    time.sleep(0.2)  # the server has answered; the reply sits unread in the socket
    channel.client.connection.disconnect()


def test_a_fetch_whose_reply_is_never_read_leaves_the_message_in_unacked(url):
    client = redis.Redis.from_url(url)
    _publish(url, 1)
    _kill_after_sending_fetch(url, stock=False)
    assert client.llen(QUEUE) == 0
    entries = client.hgetall(UNACKED_KEY)
    assert len(entries) == 1
    tag, value = next(iter(entries.items()))
    message, exchange, routing_key = json.loads(value)
    assert (exchange, routing_key) == ("t-ex", QUEUE)
    assert message["properties"]["delivery_tag"] == tag.decode()
    assert client.zscore(UNACKED_INDEX_KEY, tag) is not None

    # kombu's own restore path reads the entry back into the queue, intact.
    with _connection(url) as conn:
        conn.default_channel.qos.restore_by_tag(tag.decode())
    assert client.llen(QUEUE) == 1
    with _connection(url) as conn:
        got = conn.SimpleQueue(QUEUE).get(timeout=5)
        assert got.payload == {"n": 0}
        got.ack()
    assert client.hlen(UNACKED_KEY) == 0


def test_stock_kombu_loses_that_message(url):
    """Why the transport exists: the same kill against stock BRPOP leaves the message nowhere."""
    client = redis.Redis.from_url(url)
    _publish(url, 1, stock=True)
    _kill_after_sending_fetch(url, stock=True)
    assert client.llen(QUEUE) == 0
    assert client.hlen(UNACKED_KEY) == 0


def test_an_idle_consumer_wakes_on_the_doorbell_not_the_timeout(url):
    """With a 30 s wait, a delivery within a few seconds can only come from the bell."""
    received: list[float] = []
    stop = threading.Event()

    def consume():
        exchange = Exchange("t-ex", "direct", durable=True)
        with _connection(url, polling_interval=30) as conn:
            queue = Queue(QUEUE, exchange, routing_key=QUEUE)

            def on_message(body, message):
                received.append(time.monotonic())
                message.ack()

            with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
                while not stop.is_set():
                    try:
                        conn.drain_events(timeout=0.5)
                    except OSError:  # socket.timeout: nothing within 0.5 s
                        pass

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(1.5)  # the consumer has found nothing and is waiting on the bell
    sent = time.monotonic()
    _publish(url, 1)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert received, "the bell did not wake the consumer"
    assert received[0] - sent < 5


def test_fetch_keeps_priority_order_and_clears_stale_bells(url):
    client = redis.Redis.from_url(url)
    _publish(url, 3)
    assert client.llen(bell_key(QUEUE)) == 3
    with _connection(url) as conn:
        q = conn.SimpleQueue(QUEUE)
        order = []
        for _ in range(3):
            message = q.get(timeout=5)
            order.append(message.payload["n"])
            # Held: recorded once, by the script, and the in-process mark went no further.
            (entry,) = client.hvals(UNACKED_KEY)
            assert FETCHED_MARK.encode() not in entry and FETCHED_MARK not in message._raw
            message.ack()
        assert order == [0, 1, 2]  # FIFO
        with pytest.raises(q.Empty):
            q.get(timeout=1.5)  # an empty fetch happened: the bell was cleared
    assert client.llen(bell_key(QUEUE)) == 0


def test_install_makes_redis_urls_resolve_to_the_atomic_transport():
    transport.install()
    with Connection("redis://127.0.0.1:1/0") as conn:
        assert conn.transport_cls == "redis"
        assert isinstance(conn.transport, transport.Transport)
        assert conn.as_uri().startswith("redis://")  # Flower parses this
