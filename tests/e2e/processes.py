"""Real server processes for the end-to-end tests: ``python -m app`` started with a given
environment and waited for, killed or stopped; a reader of Server-Sent Events; and a
poll with a deadline, so that no test sleeps longer than it needs."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPOSITORY = Path(__file__).parents[2]
START_TIMEOUT = 30.0
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """One ``python -m app``; its output goes to a file, read back when a test fails."""

    name: str
    url: str
    process: "subprocess.Popen[bytes]"
    log_path: Path

    @classmethod
    def start(cls, name: str, env: Mapping[str, str], log_dir: Path) -> "ServerProcess":
        """Start the process (without waiting for it: see ``wait_until_ready``)."""
        port = free_port()
        log_path = log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "app", "--port", str(port)],
                cwd=REPOSITORY,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(name, f"http://127.0.0.1:{port}", process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll ``/readyz`` until it answers 200; fail with the log if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} was not ready within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-turn, leaving its leases behind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any Tandem setting, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.pop("MONGODB_URI", None)
    return env | dict(overrides)


@dataclass(frozen=True)
class SseMessage:
    event: str
    id: str | None
    data: dict[str, Any]


async def sse_messages(response: httpx.Response) -> AsyncIterator[SseMessage]:
    """The messages of an SSE response as they arrive (comment lines skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield SseMessage(
                    event=fields.get("event", "message"),
                    id=fields.get("id"),
                    data=json.loads(fields["data"]),
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data" and "data" in fields:  # a data spread over several lines
                value = fields["data"] + "\n" + value
            fields[name] = value


async def poll(
    fetch: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    what: str,
    within: float = 10.0,
    interval: float = 0.02,
) -> T:
    """``fetch()`` again every ``interval`` until ``accept`` takes what it returns; fails
    after ``within`` seconds, showing the last value fetched."""
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {within} s; last: {value!r}")
        await asyncio.sleep(interval)
