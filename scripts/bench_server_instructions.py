"""Instructions a whole server executes per request, counted by callgrind: the ratios of
``scripts/bench.py`` in a unit this shared machine cannot blur.

``bench.py`` measures requests/s and CPU time, which drift here by ±30% from one minute
to the next (and within one run, from round to round). This runs each of its three
servers exactly as ``bench.py`` starts them (``python -m app`` or the bare Litestar app
of ``scripts/bench_bare_app.py``, one uvicorn worker, uvloop and httptools) under
``valgrind --tool=callgrind``, sends them the same requests, one at a time over one
keep-alive connection, from a client that is not counted, and counts the instructions
the server process executed: uvicorn's HTTP parsing, Litestar, Tandem and its store.

- **bare**: the bare POST, with the turns' four bodies in turn;
- **embedded**: booking conversations (a first turn and three resumes) on the embedded
  store;
- **driver**: the same through PyMongo's ``AsyncMongoClient`` to the wire double
  (``tests/mongo_double``, a process of its own, not counted).

Each figure is the difference between two runs of different lengths, divided by the
requests between them, so that start-up, imports and shutdown drop out. The ratios
(bare instructions per request over a load's per turn) are what ``bench.py``'s "by CPU"
ratios would be if every instruction took the same time. They do not: a turn touches
more memory than the bare POST, so its instructions tend to take longer, and this ratio
tends to sit above the time-based one. It does not replace it: its use is to tell two
versions apart reliably, and to see where a change moves a turn against the bare POST.

    .venv/bin/python scripts/bench_server_instructions.py [--requests 40,160]

valgrind runs Python about fifty times slower: the whole takes five minutes or so.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BOOKING_ID, KEY, REPOSITORY, TARGETS, _double

LOADS = ("bare", "embedded", "driver")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", default="40,160", help="the two run lengths, in requests (multiples of 4)"
    )
    args = parser.parse_args()
    short, long = (int(n) for n in args.requests.split(","))
    if not 0 < short < long or short % 4 or long % 4:
        parser.error("--requests takes two multiples of 4, the shorter first")
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 1
    per_request = {}
    with tempfile.TemporaryDirectory() as scratch:
        for load in LOADS:
            counts = [_instructions(load, n, Path(scratch)) for n in (short, long)]
            per_request[load] = (counts[1] - counts[0]) / (long - short)
            print(f"  {load:9s} {per_request[load] / 1e6:6.3f} M instructions a request")
    for load in ("embedded", "driver"):
        ratio = per_request["bare"] / per_request[load]
        print(
            f"  {load} / bare by instructions {100 * ratio:5.1f}%"
            f"   (bench.py's target, by time: >= {100 * TARGETS[load]:.0f}%)"
        )
    return 0


def _instructions(load: str, requests: int, scratch: Path) -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") and k != "MONGODB_URI"
    }
    if load == "bare":
        command = [sys.executable, str(REPOSITORY / "scripts" / "bench_bare_app.py")]
    else:
        command = [sys.executable, "-m", "app"]
        env |= {"TANDEM_API_KEYS": f"{KEY}:dev", "TANDEM_EXAMPLES_TENANT": "dev"}
    command += ["--port", str(port), "--log-level", "warning"]
    with _double_for(load) as uri:
        if uri is not None:
            env["MONGODB_URI"] = uri
        log = scratch / f"{load}-{requests}.log"
        with log.open("w") as errors:
            server = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
                cwd=REPOSITORY,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            try:
                _wait_for(port, server, log)
                _send(load, port, requests)
            finally:
                server.send_signal(signal.SIGINT)  # a clean shutdown: callgrind reports
                server.wait(300)
    found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        raise SystemExit(f"the {load} server did not report:\n{log.read_text()[-3000:]}")
    return int(found.group(1))


@contextmanager
def _double_for(load: str) -> Iterator[str | None]:
    if load != "driver":
        yield None
        return
    with _double() as (_, port):
        yield f"mongodb://127.0.0.1:{port}/bench{time.monotonic_ns()}?directConnection=true"


def _wait_for(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(1200):  # imports under valgrind take a minute or so
        if server.poll() is not None:
            raise SystemExit(f"the server stopped:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.25)
    raise SystemExit("the server did not start in 5 minutes")


def _send(load: str, port: int, requests: int) -> None:
    """``requests`` requests in the shape of bench.py's loads (four a conversation)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json", "X-API-Key": KEY}
    path = "/turn" if load == "bare" else f"/v1/workflows/{BOOKING_ID}/execute"
    run_id = "6b03022fd5846d70db881d63"
    for _ in range(requests // 4):
        for index, message in enumerate((None, "Ann", "4", None)):
            body: dict[str, object] = {}
            if index:
                body["run_id"] = run_id
                if message is not None:
                    body["run_input"] = {"message": message}
            connection.request("POST", path, json.dumps(body), headers)
            answer = connection.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise SystemExit(f"{load}: {answer.status} {data[:300]!r}")
            if index == 0 and load != "bare":
                run_id = json.loads(data)["run_id"]
    connection.close()


if __name__ == "__main__":
    sys.exit(main())
