"""Turn throughput and server CPU per turn, against a bare Litestar JSON POST, with wrk.

Three loads, each served by one uvicorn worker started as ``python -m app`` starts
it (uvicorn's ``auto`` loop and HTTP parser, so uvloop and httptools from
``uvicorn[standard]``), each driven by wrk with the same connections:

- **bare**: ``scripts/bench_bare_app.py``, a tiny Litestar app whose one ``POST``
  handler decodes the JSON body into a msgspec Struct and answers a small JSON
  object. The requests have the turns' shape: the same headers and the same four
  bodies in turn (``{}``, then a ``run_id`` with a message, …). It is what any
  Litestar JSON endpoint on this stack costs: the yardstick of the targets.
- **embedded**: Tandem on its embedded in-memory store (no ``MONGODB_URI``), K
  concurrent booking conversations (a first turn plus three resumes each, over and
  over: one wrk thread and connection per conversation).
- **driver**: the same conversations on Tandem with PyMongo's real
  ``AsyncMongoClient``, talking MongoDB's wire protocol to the double of
  ``tests/mongo_double`` (``python -m tests.mongo_double``, a process of its own).
  The double answers from mongomock, single-threaded, and shares the machine's cores,
  so it can be what limits this load's rate: hence the figure that matters here is
  the Tandem server's CPU per turn, which does not depend on who waits for whom.

For each load: requests/s, p50/p99 latency, and the server process's CPU time (user +
system, from ``/proc/<pid>/stat``, read before and after the load) per request; for
the driver load also the double's; and how busy the whole machine was
(``/proc/stat``), which shows when something outside the benchmark takes cores from
it. The ratios (embedded and driver turns/s to bare req/s, and CPU per request of
embedded and driver to bare and of driver to embedded) are taken within each round,
because the speed of a shared machine drifts by ±30% from one minute to the next; the
loads alternate over several rounds, and the median of each figure over the rounds is
reported next to the targets (embedded turns at least 25% of the bare POST's rate,
driver-path turns at least 18%), with the rounds' spread and how many met each. "By
CPU" is the ratio the rates would have if each load were bound by its server's CPU
alone (bare CPU per request divided by the load's), which is what the driver path can
be judged by when the double, or a machine with fewer free cores than its two busy
processes need, is the bottleneck. wrk (a C
load generator) keeps the client from being the bottleneck: ``apt-get install wrk``.
Linux only (``/proc``; the loop and HTTP parser each server really loaded are read
from its ``/proc/<pid>/maps`` and shown).

    .venv/bin/python scripts/bench.py [--connections 8] [--seconds 5] [--rounds 5]
                                      [--only bare,embedded,driver]
"""

import argparse
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

REPOSITORY = Path(__file__).resolve().parents[1]
BOOKING_ID = "000000000000000000000001"
KEY = "bench-key"
LOADS = ("bare", "embedded", "driver")
TARGETS = {"embedded": 0.25, "driver": 0.18}  # turns/s as a share of the bare POST's req/s

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
  local failures = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  for _, thread in ipairs(threads) do
    failures = failures + thread:get("failures")
  end
  io.write(string.format("RESULT requests=%%d seconds=%%.3f p50_us=%%d p99_us=%%d failures=%%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), failures))
end
"""

# The turns' four bodies, with a run id of the same length, and the same headers.
BARE_LUA = r"""
local headers = {["X-API-Key"] = "%(key)s", ["Content-Type"] = "application/json"}
local run_id = "6b03022fd5846d70db881d63"
local bodies = {
  "{}",
  '{"run_id":"' .. run_id .. '","run_input":{"message":"Ann"}}',
  '{"run_id":"' .. run_id .. '","run_input":{"message":"4"}}',
  '{"run_id":"' .. run_id .. '"}',
}

function init(args)
  stage = 0
end

function request()
  local body = bodies[stage + 1]
  stage = (stage + 1) %% 4
  return wrk.format("POST", "/turn", headers, body)
end

function done(summary, latency, requests)
  local failures = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%%d seconds=%%.3f p50_us=%%d p99_us=%%d failures=%%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), failures))
end
"""


@dataclass(frozen=True)
class Target:
    """A server under one load: where wrk sends it, and the processes whose CPU counts."""

    name: str
    url: str
    script: Path
    server: subprocess.Popen[bytes]
    double: subprocess.Popen[str] | None = None


@dataclass(frozen=True)
class Measurement:
    """One wrk run against one target, with the CPU its processes spent meanwhile."""

    requests: float
    seconds: float
    p50_us: float
    p99_us: float
    failures: float
    wall_seconds: float
    server_cpu: float
    double_cpu: float | None
    wrk_cpu: float
    machine_busy: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def server_cpu_ms(self) -> float:
        """The server's CPU milliseconds per request."""
        return 1000 * self.server_cpu / max(self.requests, 1)

    @property
    def double_cpu_ms(self) -> float | None:
        return None if self.double_cpu is None else 1000 * self.double_cpu / max(self.requests, 1)


Round = dict[str, Measurement]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=8, help="concurrent conversations (K)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of each load")
    parser.add_argument(
        "--only",
        type=_load_names,
        default=LOADS,
        metavar="LOADS",
        help="comma-separated loads to run, of bare,embedded,driver (default: all three)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1

    rounds: list[Round] = []
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as servers:
        targets = [servers.enter_context(_serving(name, Path(scratch))) for name in args.only]
        stacks = {target.name: _server_stack(target.server.pid) for target in targets}
        for target in targets:  # warm-up: imports, compiled workflows, connection pools
            _measure(target, args.connections, 2)
        for _ in range(args.rounds):
            rounds.append(
                {
                    target.name: _measure(target, args.connections, args.seconds)
                    for target in targets
                }
            )

    _report(args, rounds, stacks)
    failures = sum(m.failures for found in rounds for m in found.values())
    if failures:
        print(f"FAILED REQUESTS: {failures:.0f}")
    return 0 if failures == 0 else 1


def _load_names(text: str) -> tuple[str, ...]:
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(LOADS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose among {','.join(LOADS)}, not {text!r}")
    return tuple(name for name in LOADS if name in names)


# Serving --------------------------------------------------------------------------------


@contextmanager
def _serving(name: str, scratch: Path) -> Iterator[Target]:
    """Starts the server of one load (and, for the driver load, the double before it)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    if name == "bare":
        script = scratch / "bare.lua"
        script.write_text(BARE_LUA % {"key": KEY})
        command = [sys.executable, str(REPOSITORY / "scripts" / "bench_bare_app.py")]
        with _process(name, [*command, *_server_options(port)], _clean_env(), scratch) as server:
            _wait_until(lambda: _post(url + "/turn", b"{}"), server, name, scratch)
            yield Target(name, url + "/turn", script, server)
        return

    script = scratch / "conversation.lua"
    script.write_text(CONVERSATION_LUA % {"key": KEY, "workflow": BOOKING_ID})
    env = _clean_env() | {"TANDEM_API_KEYS": f"{KEY}:dev", "TANDEM_EXAMPLES_TENANT": "dev"}
    command = [sys.executable, "-m", "app", *_server_options(port)]
    with ExitStack() as stack:
        double = None
        if name == "driver":
            double, double_port = stack.enter_context(_double())
            env["MONGODB_URI"] = f"mongodb://127.0.0.1:{double_port}/?directConnection=true"
        server = stack.enter_context(_process(name, command, env, scratch))
        _wait_until(lambda: _get(url + "/readyz"), server, name, scratch)
        yield Target(name, url, script, server, double)


def _server_options(port: int) -> list[str]:
    # warning: uvicorn's access log stays on, as in Tandem's default start-up, but its
    # lines (info) are not written, for all three servers alike.
    return ["--port", str(port), "--log-level", "warning"]


def _clean_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") and k != "MONGODB_URI"
    }


@contextmanager
def _process(
    name: str, command: list[str], env: dict[str, str], scratch: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log_path = scratch / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPOSITORY, env=env, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            yield process
        finally:
            _stop(process)


@contextmanager
def _double() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``python -m tests.mongo_double --port 0``, which prints its port as its only line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo_double", "--port", "0"],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        stdout: IO[str] | None = process.stdout
        assert stdout is not None
        line = stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"the wire double did not start (exit code {process.wait()})")
        yield process, int(line)
    finally:
        _stop(process)
        if process.stdout is not None:
            process.stdout.close()


def _stop(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until(
    answers: Callable[[], None], server: subprocess.Popen[bytes], name: str, scratch: Path
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            answers()
            return
        except OSError:
            time.sleep(0.1)
    log = (scratch / f"{name}.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the {name} server did not start (exit code {server.poll()}):\n{log}")


def _get(url: str) -> None:
    urllib.request.urlopen(url, timeout=1).close()


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    urllib.request.urlopen(request, timeout=1).close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Measuring ------------------------------------------------------------------------------


def _measure(target: Target, connections: int, seconds: int) -> Measurement:
    """Runs wrk against ``target``, reading its processes' CPU time on either side."""
    server_before = _cpu_seconds(target.server.pid)
    double_before = None if target.double is None else _cpu_seconds(target.double.pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_before = _machine_ticks()
    started = time.monotonic()
    result = _wrk(target.url, target.script, connections, seconds)
    wall = time.monotonic() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the one reaped
    machine_after = _machine_ticks()
    return Measurement(
        **result,
        wall_seconds=wall,
        server_cpu=_cpu_seconds(target.server.pid) - server_before,
        double_cpu=(
            None
            if target.double is None or double_before is None
            else _cpu_seconds(target.double.pid) - double_before
        ),
        wrk_cpu=(children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
        machine_busy=(machine_after[0] - machine_before[0])
        / max(machine_after[1] - machine_before[1], 1),
    )


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads, from ``/proc/<pid>/stat``."""
    # The command name, in parentheses, may hold spaces: count fields after its end.
    # Field 14 is utime and 15 stime (man 5 proc); the first after ")" is field 3.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """Busy and total CPU time of the whole machine, all cores, from ``/proc/stat``: what
    else runs on a shared machine shows here and in none of the processes measured."""
    # user nice system idle iowait irq softirq steal (guest time is within user already)
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


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


def _server_stack(pid: int) -> str:
    """Which event loop and HTTP parser a server process loaded, from its memory map."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    loop = "uvloop" if "/uvloop/" in maps else "asyncio loop"
    parser = "httptools" if "/httptools/" in maps else "h11"
    return f"{loop} + {parser}"


# Reporting ------------------------------------------------------------------------------


def _report(args: argparse.Namespace, rounds: list[Round], stacks: dict[str, str]) -> None:
    versions = _versions(
        "litestar", "msgspec", "uvicorn", "uvloop", "httptools", "pymongo", "mongomock"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {_cpu_model()}")
    print(f"Python {platform.python_version()}, {versions}")
    print("servers, one uvicorn worker each: " + "; ".join(f"{n} {s}" for n, s in stacks.items()))
    if "driver" in stacks:
        print("driver: AsyncMongoClient -> tests/mongo_double, a process of its own (mongomock)")
    print(
        f"load: wrk, {args.connections} threads and connections"
        f" ({args.connections} concurrent conversations for the turns);"
        f" {args.rounds} round(s) of {args.seconds} s per load, alternating {', '.join(args.only)}"
    )
    print(
        "cpu: user+system CPU of the server (and of the double) per request, with its share"
        " of one core during the load; wrk's share too; and how busy all the machine's cores"
        " were"
    )
    for index, found in enumerate(rounds, 1):
        print(f"round {index}:")
        for name, measurement in found.items():
            print("  " + _figures(name, measurement))
        ratios = _ratios(found)
        shares = [f"{r.label} {r.shown}" for r in ratios if not r.multiple]
        multiples = [f"{r.label} {r.shown}" for r in ratios if r.multiple]
        for group in (shares, multiples):
            if group:
                print("    " + ", ".join(group))

    print(f"median of {len(rounds)} round(s), each figure its own; ratios taken within rounds:")
    for name in args.only:
        print("  " + _median_figures(name, [found[name] for found in rounds]))
    per_round = [_ratios(found) for found in rounds]
    for position, first in enumerate(per_round[0] if per_round else []):
        median = Ratio(
            first.label,
            statistics.median(ratios[position].value for ratios in per_round),
            first.target,
            first.multiple,
        )
        line = f"  {median.label:<34} {median.shown:>7}"
        if median.target is not None:
            met = "met" if median.value >= median.target else "MISSED"
            line += f"   target >= {median.target:.0%}: {met}"
            # How far the rounds spread, and how many met it: the median alone hides
            # whether a target holds in every round or only in the luckier ones.
            values = [ratios[position].value for ratios in per_round]
            meeting = sum(value >= median.target for value in values)
            line += (
                f" (rounds {min(values):.1%}-{max(values):.1%}, met in {meeting} of {len(values)})"
            )
        print(line)


def _figures(name: str, measurement: Measurement) -> str:
    unit = "req/s" if name == "bare" else "turns/s"
    line = (
        f"{name:<8} {measurement.rate:7.0f} {unit:<7}"
        f" p50 {measurement.p50_us / 1000:6.2f} ms  p99 {measurement.p99_us / 1000:6.2f} ms"
        f"  cpu {measurement.server_cpu_ms:.3f} ms/req"
        f" ({measurement.server_cpu / measurement.wall_seconds:.0%})"
    )
    if measurement.double_cpu is not None and measurement.double_cpu_ms is not None:
        line += (
            f"  double {measurement.double_cpu_ms:.3f} ms/req"
            f" ({measurement.double_cpu / measurement.wall_seconds:.0%})"
        )
    line += f"  wrk ({measurement.wrk_cpu / measurement.wall_seconds:.0%})"
    line += f"  machine {measurement.machine_busy:.0%} busy"
    if measurement.failures:
        line += f"  FAILURES {measurement.failures:.0f}"
    return line


def _median_figures(name: str, measurements: list[Measurement]) -> str:
    unit = "req/s" if name == "bare" else "turns/s"
    line = (
        f"{name:<8} {statistics.median(m.rate for m in measurements):7.0f} {unit:<7}"
        f" p50 {statistics.median(m.p50_us for m in measurements) / 1000:6.2f} ms"
        f"  p99 {statistics.median(m.p99_us for m in measurements) / 1000:6.2f} ms"
        f"  cpu {statistics.median(m.server_cpu_ms for m in measurements):.3f} ms/req"
    )
    doubles = [m.double_cpu_ms for m in measurements if m.double_cpu_ms is not None]
    if doubles:
        line += f"  double {statistics.median(doubles):.3f} ms/req"
    return line


@dataclass(frozen=True)
class Ratio:
    """One ratio of a round: a share of the bare POST's rate (with its target), or a
    multiple of CPU per request."""

    label: str
    value: float
    target: float | None
    multiple: bool

    @property
    def shown(self) -> str:
        return f"{self.value:.2f}x" if self.multiple else f"{self.value:.1%}"


def _ratios(found: Round) -> list[Ratio]:
    """The ratios of one round, for the loads it has, always in the same order."""
    bare = found.get("bare")
    turns = [name for name in ("embedded", "driver") if name in found]
    ratios = []
    if bare is not None:
        for name in turns:
            load = found[name]
            ratios.append(
                Ratio(f"{name} turns/s / bare req/s", load.rate / bare.rate, TARGETS[name], False)
            )
            # What the rate ratio would be if both were bound by their server's CPU alone.
            ratios.append(
                Ratio(
                    f"{name} / bare by CPU",
                    bare.server_cpu_ms / load.server_cpu_ms,
                    TARGETS[name],
                    False,
                )
            )
        for name in turns:
            ratios.append(
                Ratio(
                    f"CPU/req {name} / bare",
                    found[name].server_cpu_ms / bare.server_cpu_ms,
                    None,
                    True,
                )
            )
    if len(turns) == 2:
        ratios.append(
            Ratio(
                "CPU/req driver / embedded",
                found["driver"].server_cpu_ms / found["embedded"].server_cpu_ms,
                None,
                True,
            )
        )
    return ratios


def _versions(*names: str) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


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
