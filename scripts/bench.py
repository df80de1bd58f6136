"""Turn throughput against a trivial endpoint of the same server, measured with wrk.

Starts ``python -m app`` (one uvicorn worker, embedded store), then drives K
concurrent booking conversations (a first turn plus three resumes each, over and
over) and, with the same load generator and concurrency, ``GET /healthz``.
Prints turns/s, p50/p99 turn latency, the trivial endpoint's requests/s, and
their ratio. The two loads alternate over several rounds and the ratio is taken
within each round, so that drift in the speed of a shared machine cancels out;
the median round is reported. wrk (a C load generator) is used so that the client is not the
bottleneck: install it with ``apt-get install wrk``.

    .venv/bin/python scripts/bench.py [--connections 8] [--seconds 5] [--rounds 5]
"""

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BOOKING_ID = "000000000000000000000001"
KEY = "bench-key"

# One connection per wrk thread, so a thread's variables are its conversation's state.
CONVERSATION_LUA = r"""
local key = "%(key)s"
local path = "/v1/workflows/%(workflow)s/execute"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  stage = 0
  run_id = nil
  failures = 0
  turns = 0
end

local bodies = {
  function() return "{}" end,
  function() return '{"run_id":"' .. run_id .. '","run_input":{"message":"Ann"}}' end,
  function() return '{"run_id":"' .. run_id .. '","run_input":{"message":"4"}}' end,
  function() return '{"run_id":"' .. run_id .. '"}' end,
}

function request()
  local headers = {["X-API-Key"] = key, ["Content-Type"] = "application/json"}
  return wrk.format("POST", path, headers, bodies[stage + 1]())
end

function response(status, headers, body)
  turns = turns + 1
  if status ~= 200 then
    failures = failures + 1
    stage = 0
    return
  end
  if stage == 0 then
    run_id = string.match(body, '"run_id":"(%%x+)"')
  end
  stage = (stage + 1) %% 4
end

function done(summary, latency, requests)
  local failures, turns = 0, 0
  for _, thread in ipairs(threads) do
    failures = failures + thread:get("failures")
    turns = turns + thread:get("turns")
  end
  io.write(string.format("RESULT requests=%%d seconds=%%.3f p50_us=%%d p99_us=%%d failures=%%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), failures))
end
"""

TRIVIAL_LUA = r"""
function done(summary, latency, requests)
  local failures = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d seconds=%.3f p50_us=%d p99_us=%d failures=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), failures))
end
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=8, help="concurrent conversations (K)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of each load")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1

    port = _free_port()
    server = _start_server(port)
    rounds = []
    try:
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as scratch:
            conversation = Path(scratch, "conversation.lua")
            conversation.write_text(CONVERSATION_LUA % {"key": KEY, "workflow": BOOKING_ID})
            trivial = Path(scratch, "trivial.lua")
            trivial.write_text(TRIVIAL_LUA)
            _wrk(url + "/healthz", trivial, args.connections, 2)  # warm-up
            _wrk(url, conversation, args.connections, 2)
            for _ in range(args.rounds):
                turns = _wrk(url, conversation, args.connections, args.seconds)
                health = _wrk(url + "/healthz", trivial, args.connections, args.seconds)
                rounds.append((turns, health))
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {_cpu_model()}")
    print(f"Python {platform.python_version()}; one uvicorn worker; embedded store")
    print(
        f"load: wrk, {args.connections} connections = {args.connections} concurrent conversations;"
        f" {args.rounds} rounds of {args.seconds} s per load, alternating"
    )
    for index, (turns, health) in enumerate(rounds, 1):
        print(
            f"round {index}: turns {_rate(turns):6.0f}/s (p50 {_ms(turns, 'p50')}, p99 {_ms(turns, 'p99')})"
            f"  trivial {_rate(health):6.0f}/s (p50 {_ms(health, 'p50')}, p99 {_ms(health, 'p99')})"
            f"  ratio {_rate(turns) / _rate(health):6.1%}"
        )
    turns, health = sorted(rounds, key=lambda pair: _rate(pair[0]) / _rate(pair[1]))[
        len(rounds) // 2
    ]
    print(
        f"median round: {_rate(turns):.0f} turns/s (p50 {_ms(turns, 'p50')}, p99 {_ms(turns, 'p99')}),"
        f" trivial JSON {_rate(health):.0f} req/s"
    )
    print(f"ratio turns/s : trivial req/s = {_rate(turns) / _rate(health):.1%} (median round)")
    failures = sum(turns["failures"] + health["failures"] for turns, health in rounds)
    if failures:
        print(f"FAILED REQUESTS: {failures:.0f}")
    return 0 if failures == 0 else 1


def _rate(result: dict[str, float]) -> float:
    return result["requests"] / result["seconds"]


def _ms(result: dict[str, float], percentile: str) -> str:
    return f"{result[percentile + '_us'] / 1000:.2f} ms"


def _wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    command = [
        "wrk",
        f"-t{connections}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.search(r"RESULT (.*)", output)
    if found is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    return {
        key: float(value) for key, value in (pair.split("=") for pair in found.group(1).split())
    }


def _start_server(port: int) -> subprocess.Popen[bytes]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") and k != "MONGODB_URI"
    }
    env["TANDEM_API_KEYS"] = f"{KEY}:dev"
    command = [sys.executable, "-m", "app", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the server did not start")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
