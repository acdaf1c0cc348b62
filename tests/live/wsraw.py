"""A minimal WebSocket reader over raw sockets, for the stream's tests and benchmark P10.

One selector thread reads many connections and parses the server's (unmasked) frames by hand: a
client library's per-frame cost in Python (websocket-client does several small reads per frame) made
the *readers* the bottleneck on a busy 2-core machine, and then the server rightly dropped them as slow.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

OP_TEXT, OP_CLOSE, OP_PING = 1, 8, 9


def pong(payload: bytes) -> bytes:
    """A masked pong frame (a client's frames are masked, RFC 6455 5.3); heartbeats need the answer."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:125]))
    return bytes([0x8A, 0x80 | len(body)]) + mask + body


def connect(url: str, rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """Open `url` (ws://host:port/path?query) with a hand-made handshake; returns the socket and any
    bytes read past the 101 answer."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head[:300].decode(errors="replace"))
    return sock, head.split(b"\r\n\r\n", 1)[1]


def frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every complete frame at the front of `buf`, taken out of it."""
    out = []
    at = 0
    while len(buf) - at >= 2:
        n, start = buf[at + 1] & 0x7F, at + 2
        if n == 126:
            if len(buf) - at < 4:
                break
            n, start = struct.unpack_from("!H", buf, at + 2)[0], at + 4
        elif n == 127:
            if len(buf) - at < 10:
                break
            n, start = struct.unpack_from("!Q", buf, at + 2)[0], at + 10
        if len(buf) < start + n:
            break
        out.append((buf[at] & 0x0F, bytes(buf[start : start + n])))
        at = start + n
    del buf[:at]
    return out


class Readers:
    """Read `count` live messages (id not null) on each connection, in one thread; `join()` waits.
    `got[i]` holds (receive time, keep(message)) pairs; `closed[i]` the close frame's payload, if any.

    `keep` lets a long run hold only what it measures: holding every message (three containers
    each) made the cyclic garbage collector's full passes over a growing heap pause the reader for
    hundreds of milliseconds, and those pauses were measured as the server's latency."""

    def __init__(self, urls: list[str], count: int, until=None, keep=None):
        self.count = count
        self.until = until  # optional predicate: a message that ends its connection's reading
        self.keep = keep or (lambda message: message)
        self.socks = [connect(url) for url in urls]
        self.got: list[list[tuple[float, dict]]] = [[] for _ in urls]
        self.closed: list[bytes | None] = [None for _ in urls]
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Readers:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            selector = selectors.DefaultSelector()
            bufs = {}
            for i, (sock, rest) in enumerate(self.socks):
                sock.setblocking(False)
                bufs[i] = bytearray(rest)
                selector.register(sock, selectors.EVENT_READ, i)
            left = set(range(len(self.socks)))
            for i in list(left):
                self._take(i, bufs[i], time.time(), left, selector)
            while left:
                for key, _ in selector.select(60) or [(None, None)]:
                    if key is None:
                        raise TimeoutError(f"no data for 60 s; still reading {sorted(left)}")
                    i = key.data
                    try:
                        data = key.fileobj.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    if not data:
                        left.discard(i)
                        selector.unregister(key.fileobj)
                        continue
                    bufs[i] += data
                    self._take(i, bufs[i], time.time(), left, selector)
        except BaseException as exc:
            self.error = exc

    def _take(self, i: int, buf: bytearray, now: float, left: set[int], selector) -> None:
        for opcode, payload in frames(buf):
            if i not in left:
                return
            if opcode == OP_CLOSE:
                self.closed[i] = payload
                left.discard(i)
                selector.unregister(self.socks[i][0])
                return
            if opcode == OP_PING:
                try:
                    self.socks[i][0].send(pong(payload))
                except OSError:
                    pass
                continue
            if opcode != OP_TEXT:
                continue
            message = json.loads(payload)
            if message["id"] is None:
                continue
            self.got[i].append((now, self.keep(message)))
            if len(self.got[i]) >= self.count or (self.until and self.until(message)):
                left.discard(i)
                selector.unregister(self.socks[i][0])

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"readers still running after {timeout}s: {[len(g) for g in self.got]}")
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        for sock, _ in self.socks:
            try:
                sock.close()
            except OSError:
                pass
