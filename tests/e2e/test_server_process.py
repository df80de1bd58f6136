"""Tandem as a newcomer runs it: ``python -m app`` in its own process, over real HTTP."""

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

BOOKING_ID = "000000000000000000000001"
START_TIMEOUT = 30.0


@dataclass
class Server:
    url: str
    key: str
    banner: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server() -> Iterator[Server]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    if env.get("MONGODB_URI"):  # against a real MongoDB: keys are required, data is kept
        env |= {
            "TANDEM_API_KEYS": "e2e-key:dev",
            "TANDEM_EXAMPLES_TENANT": "dev",
            "TANDEM_DB_NAME": f"tandem_e2e_{uuid.uuid4().hex[:8]}",
        }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    banner = []
    try:
        assert process.stdout is not None
        # The banner comes once the server answers; its last line is the first curl's,
        # or, on MongoDB (no dev key), the playground's.
        last_line = "Chat in your browser" if env.get("MONGODB_URI") else "-d '{}'"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            banner.append(line)
            if last_line in line or not line:
                break
        text = "".join(banner)
        assert "Application startup complete" in text and last_line in text, text
        found = re.search(r"Dev API key[^:]*: (\S+)", text)
        key = found.group(1) if found else "e2e-key"
        yield Server(url=url, key=key, banner=text)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_banner_tells_a_newcomer_what_to_do(server: Server) -> None:
    if os.environ.get("MONGODB_URI"):
        pytest.skip("the banner's dev key is for the embedded default")
    assert server.url in server.banner
    assert "LOST on exit" in server.banner
    assert f"export TANDEM_URL={server.url} TANDEM_KEY={server.key}" in server.banner
    assert f"curl -s -X POST $TANDEM_URL/v1/workflows/{BOOKING_ID}/execute" in server.banner


def test_the_booking_conversation_over_http(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").status_code == 200
        first = http.post(f"/v1/workflows/{BOOKING_ID}/execute", json={}).json()
        assert first["waiting_for"]["prompt"] == "What is your name?"
        run_id = first["run_id"]
        for message in ["Ann", "12", "4"]:
            answer = http.post(
                f"/v1/workflows/{BOOKING_ID}/execute",
                json={"run_id": run_id, "run_input": {"message": message}},
            ).json()
        assert answer["status"] == "paused"
        assert answer["waiting_for"]["prompt"] == "Book for Ann, 4 people?"
        done = http.post(f"/v1/workflows/{BOOKING_ID}/execute", json={"run_id": run_id}).json()
        assert done["status"] == "completed" and done["output"] == {"name": "Ann", "size": 4}
        events = http.get(f"/v1/runs/{run_id}/events").json()["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert http.get("/v1/workflows", headers={"X-API-Key": "wrong"}).status_code == 401


def test_a_real_mongodb_without_keys_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["MONGODB_URI"] = "mongodb://127.0.0.1:1"
    result = subprocess.run(
        [sys.executable, "-m", "app", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "TANDEM_API_KEYS" in result.stderr
