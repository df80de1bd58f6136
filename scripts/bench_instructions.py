"""Instructions per turn, counted by callgrind: a figure this shared machine cannot blur.

``scripts/bench.py`` measures turns over HTTP in time and CPU, which drift by ±30% here
from one minute to the next, so that two versions of a change are hard to tell apart
below a few tens of percent. This counts the instructions the turn's own path executes
(the executor, the engine and the store, without HTTP) with ``valgrind --tool=callgrind``,
which gives the same count whatever else the machine is doing:

- **embedded**: booking conversations (a blocking first turn and three resumes, as
  ``bench.py``'s) on the embedded in-memory store;
- **driver**: the same through PyMongo's ``AsyncMongoClient`` against the wire double
  (``tests/mongo_double``, a process of its own, not counted).

Each figure is the difference between two runs of different lengths, divided by the
turns between them, so that start-up and imports drop out. With ``--baseline REV`` the
same is counted for that git revision (checked out into a temporary worktree) and the
ratios printed, current to baseline.

    .venv/bin/python scripts/bench_instructions.py [--baseline REV] [--stores embedded,driver]
                                                   [--conversations 20,60]

valgrind runs Python about fifty times slower: a figure takes a minute or two.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
TURNS_PER_CONVERSATION = 4

# Run in the tree measured (its directory first on sys.path), under callgrind.
LOOP = r"""
import asyncio, inspect, logging, os, sys
logging.disable(logging.CRITICAL)
sys.path.insert(0, os.getcwd())
from bson import ObjectId
from app.config import Settings
from app.server import create_app
from app.services.turn_model import TurnRequest

BOOKING = ObjectId("000000000000000000000001")

async def main(conversations):
    uri = os.environ.get("MONGODB_URI")
    settings = Settings(
        api_keys={"k": "dev"},
        examples_tenant="dev",
        mongodb_uri=uri,
        database_name=os.environ.get("BENCH_DATABASE", "bench"),
    )
    database = None
    if not uri:
        from app.store.embedded import open_embedded_client
        database = open_embedded_client()["bench"]
    app = create_app(settings, database=database)
    async with app.lifespan():
        executor = app.state.runs.executor
        # As the HTTP layer prepares a blocking turn, in trees that tell the two apart.
        blocking = {"blocking": True} if "blocking" in inspect.signature(executor.prepare).parameters else {}

        async def conversation():
            prepared = await executor.prepare("dev", BOOKING, TurnRequest(), **blocking)
            run_id = (await executor.complete(prepared)).run.id
            for message in ("Ann", "4", None):
                request = TurnRequest(run_id=run_id, message=message)
                await executor.complete(await executor.prepare("dev", BOOKING, request, **blocking))

        for _ in range(conversations):
            await conversation()
        await executor.drain()

asyncio.run(main(int(sys.argv[1])))
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", help="a git revision to compare with")
    parser.add_argument("--stores", default="embedded,driver")
    parser.add_argument("--conversations", default="20,60", help="the two run lengths")
    args = parser.parse_args()
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    if not stores or set(stores) - {"embedded", "driver"}:
        parser.error("--stores takes embedded, driver or both")
    short, long = (int(n) for n in args.conversations.split(","))
    if not 0 < short < long:
        parser.error("--conversations takes two lengths, the shorter first")
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 1

    trees = {"current": REPOSITORY}
    with tempfile.TemporaryDirectory() as scratch, _double_if("driver" in stores) as uri:
        if args.baseline:
            baseline = Path(scratch) / "baseline"
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPOSITORY),
                    "worktree",
                    "add",
                    "--detach",
                    "-q",
                    str(baseline),
                    args.baseline,
                ],
                check=True,
            )
            trees["baseline"] = baseline
        try:
            figures = {
                (tree, store): _per_turn(path, store, uri, short, long, Path(scratch))
                for tree, path in trees.items()
                for store in stores
            }
        finally:
            if args.baseline:
                subprocess.run(
                    [
                        "git",
                        "-C",
                        str(REPOSITORY),
                        "worktree",
                        "remove",
                        "--force",
                        str(trees["baseline"]),
                    ],
                    check=False,
                )

    label = {"current": "current", "baseline": f"baseline {args.baseline}"}
    for (tree, store), count in figures.items():
        print(f"  {label[tree]:24s} {store:9s} {count / 1e6:6.3f} M instructions a turn")
    for store in stores:
        if ("baseline", store) in figures:
            ratio = figures[("current", store)] / figures[("baseline", store)]
            print(f"  {store}: current / baseline {ratio:.3f}")
    for tree in trees:
        if (tree, "driver") in figures and (tree, "embedded") in figures:
            ratio = figures[(tree, "driver")] / figures[(tree, "embedded")]
            print(f"  {label[tree]}: driver / embedded {ratio:.3f}")
    return 0


def _per_turn(
    tree: Path, store: str, uri: str | None, short: int, long: int, scratch: Path
) -> float:
    counts = [_instructions(tree, store, uri, n, scratch) for n in (short, long)]
    return (counts[1] - counts[0]) / ((long - short) * TURNS_PER_CONVERSATION)


def _instructions(
    tree: Path, store: str, uri: str | None, conversations: int, scratch: Path
) -> int:
    script = scratch / "loop.py"
    script.write_text(LOOP)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") and k != "MONGODB_URI"
    }
    if store == "driver":
        assert uri is not None
        env["MONGODB_URI"] = uri
    # A fresh database each run: the double keeps what earlier runs stored.
    env["BENCH_DATABASE"] = f"bench{time.monotonic_ns()}"
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(script),
            str(conversations),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the {store} loop failed in {tree}:\n{done.stderr[-3000:]}")
    return int(found.group(1))


@contextmanager
def _double_if(wanted: bool) -> Iterator[str | None]:
    """The wire double in a process of its own (not counted), when the driver is measured."""
    if not wanted:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo_double", "--port", str(port)],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # its port, once it listens
        yield f"mongodb://127.0.0.1:{port}/?directConnection=true"
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    sys.exit(main())
