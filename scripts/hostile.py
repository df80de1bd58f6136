"""Replay hostile definitions and inputs against Tandem; report event-loop stalls and memory.

Starts ``python -m app`` (one uvicorn worker, the embedded store, API key
``hostile``, its address space capped by ``--server-memory-limit-mb`` so that no
case can exhaust the machine), or targets a running server with ``--url``,
``--key`` and ``--pid``. Then it replays the corpus of ``hostile_corpus.py`` one
case at a time, each as real HTTP requests: publish the case's definition
(``POST /v1/workflows``), then its turns and other requests, each with a client
timeout. While a case runs it measures:

- **stall**: a prober sends ``GET /healthz`` every ~5 ms, one at a time, on a
  connection of its own; the longest wait for an answer is how long the
  server's event loop was held (a healthy loop answers in 1 to 3 ms);
- **memory growth**: the peak resident memory of the server process during the
  case minus its resident memory before. The peak is the kernel's ``VmHWM``,
  reset before each case through ``/proc/PID/clear_refs``, together with
  ``VmRSS`` sampled every 10 ms (the samples alone where the reset is not
  allowed). ``kept`` is what the case left behind once the server answered again.

It prints one line per case (statuses seen, worst stall, peak growth, kept,
time) and a summary, and exits 1 if any case answered ``500``, crashed or hung
the server, or exceeded ``--max-stall-ms`` or ``--max-growth-mb``. A server that
crashes or does not answer within ``--recover-seconds`` is restarted (when this
script started it) and the replay goes on. The prober shares this script's event
loop with the case's requests, whose answers are decoded with msgspec into the
few fields printed, so the script's own share of a stall is a few milliseconds.

The default sizes keep today's server to seconds and at most ~2 GB per case;
``--dangerous`` replays the full sizes of issue 6 (minutes of freeze, tens of
GB asked for), only against a server this script starts with its memory capped.

    .venv/bin/python scripts/hostile.py [--only 'publish_*'] [--size redos_length=28]
    .venv/bin/python scripts/hostile.py --url http://127.0.0.1:8000 --key KEY --pid PID
    .venv/bin/python scripts/hostile.py --list
"""

import argparse
import asyncio
import contextlib
import dataclasses
import fnmatch
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from hostile_corpus import (
    FULL_SIZES,
    SIZE_NAMES,
    Case,
    DropStreamedTurn,
    Raw,
    ReadRun,
    Sizes,
    Turn,
    corpus,
)

KEY = "hostile"
PROBE_INTERVAL = 0.005
MEMORY_INTERVAL = 0.010
START_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parent.parent


class Answer(msgspec.Struct):
    """The few fields of any Tandem answer the report shows; the rest is skipped unread."""

    workflow_id: str | None = None
    run_id: str | None = None
    status: str | int | None = None  # a run's status; some 500 bodies carry a number here
    turn: int | None = None
    code: str | None = None
    error: str | None = None
    detail: str | None = None


@dataclass(slots=True)
class Outcome:
    """What one request got: its HTTP status (None: no answer) and the run status or code."""

    label: str
    http: int | None
    what: str = ""
    sentence: str = ""
    count: int = 1  # identical answers to requests sent alike
    stall_ms: float = 0.0  # the worst /healthz wait while this request's step ran, if first

    def brief(self, show_stall_from_ms: float = float("inf")) -> str:
        http = "-" if self.http is None else str(self.http)
        times = f"({self.count}x)" if self.count > 1 else ""
        stall = f"[{self.stall_ms:.0f} ms]" if self.stall_ms >= show_stall_from_ms else ""
        return " ".join(part for part in (self.label, http, self.what, times, stall) if part)


@dataclass(slots=True)
class Result:
    case: Case
    outcomes: list[Outcome] = field(default_factory=list)
    stall_ms: float = 0.0
    growth_mb: float | None = None
    kept_mb: float | None = None
    seconds: float = 0.0
    crashed: bool = False
    hung: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Target:
    """The server under test: its address, key, process id and, if started here, its process."""

    url: str
    key: str
    pid: int | None
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    memory_limit_mb: int = 0

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is None or Path(f"/proc/{self.pid}").exists()


def main() -> int:
    args = _parse_args()
    sizes = _sizes(args)
    cases = [case for case in corpus(sizes) if _selected(case.name, args.only)]
    if args.list:
        for case in corpus(sizes):
            print(f"{case.name:28} {case.about}")
        print("\nsizes:", ", ".join(f"{name}={getattr(sizes, name)}" for name in SIZE_NAMES))
        return 0
    if not cases:
        print(f"no case matches {args.only}", file=sys.stderr)
        return 2
    if args.dangerous and (args.url or not args.server_memory_limit_mb):
        print(
            "--dangerous asks for tens of GB: only against a server this script starts"
            " with --server-memory-limit-mb",
            file=sys.stderr,
        )
        return 2
    if args.url and not args.key:
        print("--url needs --key (and --pid to measure memory)", file=sys.stderr)
        return 2
    return asyncio.run(_replay(args, sizes, cases))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server (default: start one here)")
    parser.add_argument("--key", help="its API key")
    parser.add_argument("--pid", type=int, help="its process id, to measure its memory")
    parser.add_argument("--max-stall-ms", type=float, default=100.0)
    parser.add_argument("--max-growth-mb", type=float, default=64.0)
    parser.add_argument("--timeout", type=float, default=60.0, help="client timeout per request")
    parser.add_argument(
        "--recover-seconds",
        type=float,
        default=90.0,
        help="how long a case's server may take to answer /healthz again before it is restarted",
    )
    parser.add_argument(
        "--server-memory-limit-mb",
        type=int,
        default=8192,
        help="address-space cap of the server started here (0: none)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="replay only the cases matching this glob (repeatable)",
    )
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=N",
        help=f"override one size ({', '.join(SIZE_NAMES)})",
    )
    parser.add_argument(
        "--dangerous", action="store_true", help="replay the full sizes of issue 6 (see above)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--verbose", action="store_true", help="print each request's sentence")
    parser.add_argument("--list", action="store_true", help="list the cases and sizes, then exit")
    return parser.parse_args()


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = FULL_SIZES if args.dangerous else Sizes()
    for item in args.size:
        name, _, value = item.partition("=")
        if name not in SIZE_NAMES or not value.lstrip("-").isdigit():
            raise SystemExit(f"--size {item!r}: expected NAME=N, NAME one of {SIZE_NAMES}")
        sizes = dataclasses.replace(sizes, **{name: int(value)})
    return sizes


def _selected(name: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


async def _replay(args: argparse.Namespace, sizes: Sizes, cases: list[Case]) -> int:
    started = time.monotonic()
    if args.url:
        target = Target(url=args.url.rstrip("/"), key=args.key, pid=args.pid)
        if not await _wait_healthy(target.url, START_TIMEOUT):
            print(f"{target.url}/healthz does not answer", file=sys.stderr)
            return 2
    else:
        target = await _start_server(args.server_memory_limit_mb)
    results: list[Result] = []
    try:
        _print_header(args, sizes, target)
        for case in cases:
            result = await _run_case(case, target, args)
            results.append(result)
            print(_line(result, args.max_stall_ms), flush=True)
            if args.verbose:
                for outcome in result.outcomes:
                    if outcome.sentence:
                        print(f"    {outcome.label}: {outcome.sentence[:300]}")
            if result.crashed or result.hung:
                if target.process is None:
                    print("the server is gone or stuck: stopping here", file=sys.stderr)
                    break
                _stop_server(target, kill=result.hung)  # a frozen loop cannot handle SIGTERM
                target = await _start_server(target.memory_limit_mb)
                print(f"    (server restarted: pid {target.pid}, {target.url})", flush=True)
    finally:
        if target.process is not None:
            _stop_server(target)
    failed = _print_summary(results, time.monotonic() - started)
    if args.markdown:
        _print_markdown(results, args.max_stall_ms)
    return 1 if failed else 0


async def _run_case(case: Case, target: Target, args: argparse.Namespace) -> Result:
    result = Result(case)
    memory = MemoryWatch(target.pid)
    memory.begin()
    stop = asyncio.Event()
    probe = StallProbe(target.url)
    probing = asyncio.create_task(probe.run(stop))
    sampling = asyncio.create_task(memory.sample(stop))
    started = time.monotonic()
    try:
        headers = {"X-API-Key": target.key}
        timeout = httpx.Timeout(args.timeout)
        async with httpx.AsyncClient(
            base_url=target.url, headers=headers, timeout=timeout, trust_env=False
        ) as client:
            await _replay_steps(case, client, target, probe, result.outcomes)
    finally:
        stop.set()
        done, _ = await asyncio.wait({probing}, timeout=args.recover_seconds)
        if not done:
            probing.cancel()
            result.hung = True
        await sampling
    result.seconds = time.monotonic() - started
    result.stall_ms = probe.worst_seconds() * 1000
    result.crashed = not target.alive() or (probe.failure is not None and not result.hung)
    if not result.crashed:
        result.growth_mb, result.kept_mb = memory.end()
    _judge(result, target, args)
    return result


def _judge(result: Result, target: Target, args: argparse.Namespace) -> None:
    if result.crashed:
        code = target.process.poll() if target.process else None
        result.problems.append("CRASHED" if code is None else f"CRASHED(exit {code})")
    if result.hung:
        result.problems.append("HUNG")
    if any(outcome.http is not None and outcome.http >= 500 for outcome in result.outcomes):
        result.problems.append("500")
    if any(outcome.what == "turn_in_progress" for outcome in result.outcomes):
        result.problems.append("STUCK")  # one request at a time: nothing else holds the run
    if any(outcome.what == "timeout" for outcome in result.outcomes):
        result.problems.append("TIMEOUT")
    if result.stall_ms > args.max_stall_ms:
        result.problems.append("STALL")
    if result.growth_mb is not None and result.growth_mb > args.max_growth_mb:
        result.problems.append("MEMORY")


async def _replay_steps(
    case: Case,
    client: httpx.AsyncClient,
    target: Target,
    probe: "StallProbe",
    outcomes: list[Outcome],
) -> None:
    """Publish the case's definition, then replay its steps; the first answer of each step
    carries the worst stall seen while the step ran."""
    workflow_id, run_id = "", ""
    if case.definition is not None:
        body = {"name": case.name, "definition": case.definition}
        outcome, answer = await _request(client, "publish", "POST", "/v1/workflows", json=body)
        outcome.stall_ms = probe.end_step() * 1000
        outcomes.append(outcome)
        if answer is None or answer.workflow_id is None:
            return
        workflow_id = answer.workflow_id
    execute = f"/v1/workflows/{workflow_id}/execute"
    for step in case.steps:
        first = len(outcomes)
        match step:
            case Turn(body=body, resume=resume, copies=copies):
                body = {**body, "run_id": run_id} if resume else body
                answers = await asyncio.gather(
                    *(_request(client, "turn", "POST", execute, json=body) for _ in range(copies))
                )
                outcomes.extend(_merged([outcome for outcome, _ in answers]))
                run_id = next((a.run_id for _, a in answers if a and a.run_id), run_id)
            case ReadRun():
                outcome, answer = await _request(client, "run", "GET", f"/v1/runs/{run_id}")
                if answer is not None and answer.turn is not None:
                    outcome.what += f" at turn {answer.turn}"
                outcomes.append(outcome)
            case Raw(label=label, method=method, path=path, body=raw):
                path = path.replace("{workflow_id}", workflow_id).replace("{run_id}", run_id)
                raw = raw.replace(b"{workflow_id}", workflow_id.encode())
                raw = raw.replace(b"{run_id}", run_id.encode())
                headers = {"Content-Type": "application/json"} if raw else {}
                outcome, _ = await _request(
                    client, label, method, path, content=raw, headers=headers
                )
                outcomes.append(outcome)
            case DropStreamedTurn(tries=tries, settle_seconds=settle):
                outcomes.extend(await _drop_streamed_turns(client, target, execute, tries, settle))
        stall_ms = probe.end_step() * 1000
        if len(outcomes) > first:  # told once, with the step's first answer
            outcomes[first].stall_ms = stall_ms


async def _request(
    client: httpx.AsyncClient, label: str, method: str, path: str, **kwargs: Any
) -> tuple[Outcome, Answer | None]:
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.TimeoutException:
        return Outcome(label, None, "timeout"), None
    except httpx.TransportError as error:
        return Outcome(label, None, "no answer", str(error)), None
    try:
        answer = msgspec.json.decode(response.content, type=Answer)
    except msgspec.DecodeError:
        return Outcome(label, response.status_code, "not JSON", response.text[:200]), None
    what = answer.code or (answer.status if isinstance(answer.status, str) else "") or ""
    sentence = answer.error or answer.detail or ""
    return Outcome(label, response.status_code, what, sentence), answer


def _merged(outcomes: list[Outcome]) -> list[Outcome]:
    """Identical answers to concurrent copies of a turn, counted instead of repeated."""
    counts: dict[tuple[str, int | None, str], int] = {}
    firsts: dict[tuple[str, int | None, str], Outcome] = {}
    for outcome in outcomes:
        key = (outcome.label, outcome.http, outcome.what)
        counts[key] = counts.get(key, 0) + 1
        firsts.setdefault(key, outcome)
    merged = []
    for key, outcome in firsts.items():
        if counts[key] > 1:
            outcome = dataclasses.replace(outcome, count=counts[key])
        merged.append(outcome)
    return merged


async def _drop_streamed_turns(
    client: httpx.AsyncClient, target: Target, execute: str, tries: int, settle: float
) -> list[Outcome]:
    after: list[Outcome] = []
    for attempt in range(tries):
        started, answer = await _request(client, "turn", "POST", execute, json={})
        if answer is None or answer.run_id is None:
            return [started]
        body = {"run_id": answer.run_id, "run_input": {"message": "dropped"}}
        reset = attempt % 2 == 1
        await _send_and_leave(target, execute, msgspec.json.encode(body), reset)
        await asyncio.sleep(settle)
        body["run_input"] = {"message": "next"}
        label = "resume after reset" if reset else "resume after close"
        outcome, _ = await _request(client, label, "POST", execute, json=body)
        after.append(outcome)
    return _merged(after)


async def _send_and_leave(target: Target, path: str, payload: bytes, reset: bool) -> None:
    """Send a streamed turn on a connection of its own and close it without reading a byte:
    cleanly, or by a reset (the way a killed client leaves)."""
    url = httpx.URL(target.url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nX-API-Key: {target.key}\r\n"
        "Accept: text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    _, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(head.encode() + payload)
    await writer.drain()
    if reset:
        writer.transport.abort()
        return
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class StallProbe:
    """``GET /healthz`` every ~5 ms, one at a time; the longest wait is the stall.

    The case's worst wait is kept, and each step's: a wait that spans the end of a step
    counts for each step only the part of it that step saw.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._worst = 0.0
        self._step_worst = 0.0
        self._step_start = time.monotonic()
        self._in_flight_since: float | None = None
        self.failure: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        timeout = httpx.Timeout(None)  # a frozen server is measured, not abandoned
        async with httpx.AsyncClient(base_url=self._url, timeout=timeout, trust_env=False) as c:
            while not stop.is_set():
                started = self._in_flight_since = time.monotonic()
                try:
                    await c.get("/healthz")
                except httpx.HTTPError as error:
                    self.failure = f"/healthz: {error!r}"
                    return
                finally:
                    self._in_flight_since = None
                now = time.monotonic()
                self._worst = max(self._worst, now - started)
                self._step_worst = max(self._step_worst, now - max(started, self._step_start))
                await asyncio.sleep(max(0.0, PROBE_INTERVAL - (now - started)))

    def worst_seconds(self) -> float:
        """The longest wait so far, counting a probe still waiting for its answer."""
        in_flight = self._in_flight_since
        waiting = 0.0 if in_flight is None else time.monotonic() - in_flight
        return max(self._worst, waiting)

    def end_step(self) -> float:
        """The longest wait since the previous step ended; the next step starts now."""
        now = time.monotonic()
        in_flight = self._in_flight_since
        waiting = 0.0 if in_flight is None else now - max(in_flight, self._step_start)
        worst = max(self._step_worst, waiting)
        self._step_start, self._step_worst = now, 0.0
        return worst


class MemoryWatch:
    """The server's resident memory from /proc: before a case, its growth during it, after.

    Growth is the larger of the kernel's peak minus the memory before, and the largest
    rise of the samples over their lowest point so far: memory an earlier case left
    behind and frees during this one must not hide what this one takes.
    """

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._before_kb = 0
        self._low_kb = 0
        self._rise_kb = 0
        self._kernel_peak = False

    def begin(self) -> None:
        if self._pid is None:
            return
        self._kernel_peak = _reset_peak(self._pid)
        self._before_kb = self._low_kb = _status_kb(self._pid).get("VmRSS", 0)

    async def sample(self, stop: asyncio.Event) -> None:
        if self._pid is None:
            return
        while not stop.is_set():
            rss = _status_kb(self._pid).get("VmRSS")
            if rss is not None:
                self._low_kb = min(self._low_kb, rss)
                self._rise_kb = max(self._rise_kb, rss - self._low_kb)
            await asyncio.sleep(MEMORY_INTERVAL)

    def end(self) -> tuple[float | None, float | None]:
        """Growth and what was kept, in MB of 2**20 bytes (None when the process is unknown)."""
        if self._pid is None:
            return None, None
        status = _status_kb(self._pid)
        growth = self._rise_kb
        if self._kernel_peak:
            growth = max(growth, status.get("VmHWM", 0) - self._before_kb)
        kept = status.get("VmRSS", self._before_kb) - self._before_kb
        return growth / 1024, kept / 1024


def _status_kb(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def _reset_peak(pid: int) -> bool:
    """Reset the kernel's high-water mark of resident memory to the current value."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _start_server(memory_limit_mb: int) -> Target:
    target = _launch_server(memory_limit_mb)
    if not await _wait_healthy(target.url, START_TIMEOUT) or not target.alive():
        _stop_server(target)
        raise SystemExit(f"the server did not start; see {target.log}")
    return target


def _launch_server(memory_limit_mb: int) -> Target:
    """``python -m app`` on a free port, the embedded store and this script's key."""
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") and k != "MONGODB_URI"
    }
    env["TANDEM_API_KEYS"] = f"{KEY}:{KEY}"
    log = Path(tempfile.gettempdir(), f"tandem-hostile-{port}.log")
    command = [sys.executable, "-m", "app", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_address_space_cap(memory_limit_mb),
        )
    url = f"http://127.0.0.1:{port}"
    return Target(url, KEY, process.pid, process, log, memory_limit_mb)


def _address_space_cap(memory_limit_mb: int) -> Any:
    """A function run in the child before exec that caps its address space (None: no cap)."""
    if not memory_limit_mb:
        return None
    limit = memory_limit_mb * 1024 * 1024

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return cap


def _stop_server(target: Target, kill: bool = False) -> None:
    if target.process is None:
        return
    if kill:
        target.process.kill()
    else:
        target.process.terminate()
    try:
        target.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        target.process.kill()
        target.process.wait(timeout=10)


async def _wait_healthy(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return True
            await asyncio.sleep(0.1)
    return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _print_header(args: argparse.Namespace, sizes: Sizes, target: Target) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {_cpu_model()}")
    print(f"Python {platform.python_version()}; Tandem at {_revision()}")
    where = "started here, embedded store" if target.process else "given"
    cap = f", address space capped at {target.memory_limit_mb} MB" if target.memory_limit_mb else ""
    print(f"server: {target.url} (pid {target.pid}, {where}{cap})")
    if target.log is not None:
        print(f"server log: {target.log}")
    print(
        f"bounds: stall {args.max_stall_ms:g} ms, growth {args.max_growth_mb:g} MB;"
        f" client timeout {args.timeout:g} s"
    )
    print("sizes:", ", ".join(f"{name}={getattr(sizes, name)}" for name in SIZE_NAMES))
    print()
    print(
        f"{'case':28} {'stall ms':>9} {'peak MB':>8} {'kept MB':>8} {'secs':>6}  verdict  answers"
    )


def _answers(result: Result, max_stall_ms: float) -> str:
    """The answers a case got; with several, the stall of each step above the bound too."""
    show_from = max_stall_ms if len(result.outcomes) > 1 else float("inf")
    return ", ".join(outcome.brief(show_from) for outcome in result.outcomes)


def _line(result: Result, max_stall_ms: float) -> str:
    verdict = ",".join(result.problems) or "ok"
    answers = _answers(result, max_stall_ms)
    stall = f"{'>' if result.hung else ''}{result.stall_ms:.0f}"
    return (
        f"{result.case.name:28} {stall:>9} {_mb(result.growth_mb):>8}"
        f" {_mb(result.kept_mb):>8} {result.seconds:6.1f}  {verdict:7}  {answers}"
    )


def _mb(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:+.0f}{unit}"


def _print_summary(results: list[Result], seconds: float) -> bool:
    failed = [result for result in results if result.problems]
    print()
    if results:
        stalled = max(results, key=lambda result: result.stall_ms)
        grown = max(results, key=lambda result: result.growth_mb or 0.0)
        print(
            f"worst stall {stalled.stall_ms:.0f} ms ({stalled.case.name});"
            f" worst growth {_mb(grown.growth_mb, ' MB')} ({grown.case.name});"
            f" {len(failed)} of {len(results)} cases out of bounds; {seconds:.0f} s in all"
        )
    for result in failed:
        print(f"  {result.case.name}: {', '.join(result.problems)}")
    return bool(failed) or not results


def _print_markdown(results: list[Result], max_stall_ms: float) -> None:
    """The results as the table of ``docs/hardening.md``, its "after" column left empty."""
    print()
    print("| case | what it does | answers | stall ms | peak MB | after: answers, stall, peak |")
    print("|---|---|---|---:|---:|---|")
    for result in results:
        answers = _answers(result, max_stall_ms)
        fatal = [p for p in result.problems if p.startswith(("CRASHED", "HUNG"))]
        if fatal:
            answers += f" ({', '.join(fatal)})"
        about = result.case.about.replace("|", "\\|")
        stall = f"{'>' if result.hung else ''}{result.stall_ms:.0f}"
        print(
            f"| `{result.case.name}` | {about} | {answers} | {stall} | {_mb(result.growth_mb)} | |"
        )


def _revision() -> str:
    try:
        found = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return found.stdout.strip()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
