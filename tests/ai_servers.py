"""Real local HTTP servers standing in for a model server and an LLM server, and the answers they give.

Each is a `ThreadingHTTPServer` on a free port whose answers a test scripts: a function of the
request that returns (status, body, delay). Requests are recorded, so a test can check what
Vigil sent (multipart image, chat-completions body) and how many calls reached the server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import free_port


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, Any, float]  # status, body (bytes, str or JSON-able), delay seconds


@dataclass
class ScriptedServer:
    respond: Callable[[Request], Answer]
    requests: list[Request] = field(default_factory=list)

    def start(self) -> ScriptedServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(self.command, self.path, dict(self.headers), self.rfile.read(length) if length else b"")
                outer.requests.append(req)
                status, body, delay = outer.respond(req)
                if delay:
                    time.sleep(delay)
                if not isinstance(body, (bytes, str)):
                    body = json.dumps(body)
                data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- answers the real services give, for a script to return ------------------------------------------
# A YOLO-style model server's /detect answer: one confident person, one car below any threshold.
YOLO_ANSWER = {
    "detections": [
        {"class": "person", "confidence": 0.91, "bbox": {"x": 10, "y": 20, "width": 30, "height": 60}},
        {"class": "car", "confidence": 0.3, "bbox": {"x": 1, "y": 2, "width": 3, "height": 4}},
    ],
    "inference_time_ms": 12.5,
}


def completion(content: str, prompt_tokens: int = 321, completion_tokens: int = 54) -> dict:
    """An OpenAI-style chat-completions answer carrying `content`, with the token counts Vigil records."""
    return {
        "id": "x",
        "object": "chat.completion",
        "model": "nemotron",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }
