"""A newcomer's first hour with ``python -m app``: the banner only once the server serves,
one clear sentence (and a non-zero exit) for what stops start-up, a fixed dev key, and a
data file that keeps the embedded store across restarts."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import REPOSITORY, free_port, server_environment
from tests.support import BOOKING

START_TIMEOUT = 30.0
ON_MONGODB = bool(os.environ.get("MONGODB_URI"))
embedded_only = pytest.mark.skipif(
    ON_MONGODB, reason="the dev key and the data file belong to the embedded store"
)
BANNER_URL = re.compile(r"Tandem listening on (\S+)")
BANNER_KEY = re.compile(r"Dev API key \(tenant 'dev', ([^)]*)\): (\S+)\n")


@dataclass
class Started:
    process: "subprocess.Popen[bytes]"
    log_path: Path
    url: str
    key: str | None
    banner: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as a terminal's Ctrl-C or a process manager stops it; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)

    def http(self) -> httpx.Client:
        headers = {"X-API-Key": self.key} if self.key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Started]]:
    """The servers a test starts, stopped at its end whatever happens."""
    servers: list[Started] = []
    yield servers
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


def start(
    servers: list[Started], tmp_path: Path, env: Mapping[str, str], name: str = "tandem"
) -> Started:
    """``python -m app --port 0`` (any free port: the banner says which), once its banner
    is printed."""
    log_path = tmp_path / f"{name}-{len(servers)}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", "0"],
            cwd=REPOSITORY,
            env=server_environment(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        text = log_path.read_text(errors="replace")
        url = BANNER_URL.search(text)
        key = BANNER_KEY.search(text)
        if url and (key or "TANDEM_API_KEYS" in env):
            server = Started(process, log_path, url.group(1), key and key.group(2), text)
            servers.append(server)
            return server
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no banner (exit {process.poll()}):\n{text}")
        time.sleep(0.02)


def run_to_exit(env: Mapping[str, str], *args: str, timeout: float = 20) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPOSITORY,
        env=server_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout, result.stderr


def one_sentence(stderr: str) -> str:
    """The only thing start-up said: one line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def mongodb_env() -> dict[str, str]:
    """What a server needs to start on the MongoDB of MONGODB_URI, in a database of its own."""
    if not ON_MONGODB:
        return {}
    return {
        "MONGODB_URI": os.environ["MONGODB_URI"],
        "TANDEM_API_KEYS": "e2e-key:dev",
        "TANDEM_DB_NAME": f"tandem_first_hour_{os.getpid()}_{time.monotonic_ns()}",
    }


def test_the_banner_is_printed_once_the_server_answers(
    started: list[Started], tmp_path: Path
) -> None:
    server = start(started, tmp_path, mongodb_env())
    # Printed after the socket serves: the very next request is answered.
    assert httpx.get(f"{server.url}/healthz", timeout=5).json() == {"status": "ok"}
    assert "Application startup complete" in server.banner
    assert server.banner.index("Application startup complete") < server.banner.index(
        "Tandem listening on"
    )
    if not ON_MONGODB:
        assert "LOST on exit" in server.banner and "TANDEM_DATA_FILE" in server.banner
        assert "new at every start" in server.banner
        assert f"export TANDEM_URL={server.url} TANDEM_KEY={server.key}" in server.banner
    assert server.stop() == 0


def test_a_busy_port_is_one_sentence_and_no_banner() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, stdout, stderr = run_to_exit(mongodb_env(), "--port", str(port))
    assert status == 1
    assert f"port {port} on 127.0.0.1 is already in use" in one_sentence(stderr)
    assert "Tandem listening" not in stdout and "Dev API key" not in stdout


def test_an_unreachable_mongodb_is_one_sentence_within_seconds() -> None:
    env = {
        "MONGODB_URI": f"mongodb://tandem:secret@127.0.0.1:{free_port()}/?directConnection=true",
        "TANDEM_API_KEYS": "key:tenant",
        "TANDEM_MONGODB_STARTUP_TIMEOUT_SECONDS": "1",
    }
    began = time.monotonic()
    status, stdout, stderr = run_to_exit(env, "--port", "0")
    assert status == 1
    assert time.monotonic() - began < 15
    sentence = one_sentence(stderr)
    assert "did not answer within 1 s" in sentence, sentence
    assert "secret" not in sentence  # the password stays out of the output
    assert "Tandem listening" not in stdout


@embedded_only
def test_tandem_dev_key_fixes_the_dev_key(started: list[Started], tmp_path: Path) -> None:
    server = start(started, tmp_path, {"TANDEM_DEV_KEY": "my-own-dev-key"})
    assert server.key == "my-own-dev-key"
    assert "from TANDEM_DEV_KEY" in server.banner
    with server.http() as http:
        assert http.get("/v1/workflows").status_code == 200


@embedded_only
def test_the_data_file_keeps_workflows_runs_and_the_dev_key_across_a_restart(
    started: list[Started], tmp_path: Path
) -> None:
    data_file = tmp_path / "tandem-data.json"
    # Written on shutdown: no periodic write within the test.
    env = {"TANDEM_DATA_FILE": str(data_file), "TANDEM_DATA_FILE_SAVE_SECONDS": "3600"}
    first = start(started, tmp_path, env)
    assert f"kept in {data_file}" in first.banner and "LOST" not in first.banner
    with first.http() as http:
        created = http.post("/v1/workflows", json={"name": "Kept", "definition": BOOKING})
        workflow_id = created.json()["workflow_id"]
        execute = f"/v1/workflows/{workflow_id}/execute"
        run_id = http.post(execute, json={}).json()["run_id"]
        http.post(execute, json={"run_id": run_id, "run_input": {"message": "Ann"}})
        run_before = http.get(f"/v1/runs/{run_id}").json()
    assert first.stop() == 0
    assert data_file.stat().st_mode & 0o077 == 0  # it holds the dev key: its owner's only
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    # Extended JSON that a person (or mongoimport) can read.
    document = json.loads(data_file.read_text())
    assert document["format"] == "tandem-data-file" and document["dev_key"] == first.key
    assert {"$oid": workflow_id} in [w["_id"] for w in document["collections"]["workflows"]]

    second = start(started, tmp_path, env)
    assert second.key == first.key
    with second.http() as http:
        assert http.get(f"/v1/workflows/{workflow_id}").json()["name"] == "Kept"
        assert http.get(f"/v1/runs/{run_id}").json() == run_before
        for message in ["4", None]:
            body = {"run_id": run_id, "run_input": {"message": message} if message else {}}
            answer = http.post(execute, json=body).json()
        assert answer["status"] == "completed", answer
        assert answer["output"] == {"name": "Ann", "size": 4}
        events = http.get(f"/v1/runs/{run_id}/events").json()["events"]
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert second.stop() == 0


@embedded_only
def test_the_data_file_is_written_periodically_so_a_crash_loses_little(
    started: list[Started], tmp_path: Path
) -> None:
    data_file = tmp_path / "tandem-data.json"
    env = {"TANDEM_DATA_FILE": str(data_file), "TANDEM_DATA_FILE_SAVE_SECONDS": "0.2"}
    first = start(started, tmp_path, env)
    with first.http() as http:
        created = http.post("/v1/workflows", json={"name": "Periodic", "definition": BOOKING})
        workflow_id = created.json()["workflow_id"]
    deadline = time.monotonic() + 10
    while "Periodic" not in data_file.read_text():
        assert time.monotonic() < deadline, "the data file was not written periodically"
        time.sleep(0.05)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)

    second = start(started, tmp_path, env)
    with second.http() as http:
        assert http.get(f"/v1/workflows/{workflow_id}").json()["name"] == "Periodic"


@embedded_only
@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"format": "something else"}'],
    ids=["not-json", "not-tandem"],
)
def test_a_data_file_that_cannot_be_loaded_is_one_sentence_and_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    data_file = tmp_path / "tandem-data.json"
    data_file.write_bytes(content)
    status, stdout, stderr = run_to_exit({"TANDEM_DATA_FILE": str(data_file)}, "--port", "0")
    assert status == 1
    sentence = one_sentence(stderr)
    assert str(data_file) in sentence and "Tandem leaves it as it is" in sentence, sentence
    assert data_file.read_bytes() == content
    assert "Tandem listening" not in stdout


@embedded_only
def test_a_data_file_that_cannot_be_written_stops_start_up(tmp_path: Path) -> None:
    data_file = tmp_path / "missing-folder" / "tandem-data.json"
    status, _, stderr = run_to_exit({"TANDEM_DATA_FILE": str(data_file)}, "--port", "0")
    assert status == 1
    assert f"cannot write the data file {data_file}" in one_sentence(stderr)
