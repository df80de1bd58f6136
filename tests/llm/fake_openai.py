"""A fake OpenAI-compatible server on loopback, answering from a script of behaviours."""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    """Each request takes the next behaviour: ("stream", [words]), ("slow", [words]: one a
    100 ms), ("status", code) or ("hang", seconds). Requests are recorded with their JSON
    bodies; ``disconnected`` is set when the client closes a stream before its end."""

    def __init__(self, behaviours: list[tuple[str, Any]]) -> None:
        self.behaviours = list(behaviours)
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""
        self.disconnected = threading.Event()


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append(body)
            kind, value = fake.behaviours.pop(0) if len(fake.behaviours) > 1 else fake.behaviours[0]
            if kind == "status":
                payload = json.dumps(
                    {"error": {"message": f"fake error {value}", "type": "x"}}
                ).encode()
                self.send_response(value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After-Ms", "10")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if kind == "hang":
                time.sleep(value)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for word in value:
                if kind == "slow":
                    time.sleep(0.1)
                chunk = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                try:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    fake.disconnected.set()
                    return
            usage = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [],
                "usage": {
                    "prompt_tokens": 7,
                    "completion_tokens": len(value),
                    "total_tokens": 7 + len(value),
                },
            }
            self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    return Handler


@contextmanager
def fake_openai(behaviours: list[tuple[str, Any]]) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(behaviours)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
