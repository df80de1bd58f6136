"""The double's server: one asyncio loop serving every connection, in a thread or a process.

Connections are served concurrently (a slow or idle client never holds up another), and
commands run one at a time on the loop, which is what keeps mongomock safe and every
command atomic.
"""

import asyncio
import contextlib
import itertools
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from tests.mongo_double.commands import Commands, Context
from tests.mongo_double.wire import (
    HEADER,
    MAX_MESSAGE_SIZE,
    ProtocolError,
    encode_reply,
    parse_request,
)

log = logging.getLogger(__name__)

REPOSITORY = Path(__file__).parents[2]


@dataclass(frozen=True)
class RunningDouble:
    """Where a running double listens."""

    host: str
    port: int

    @property
    def uri(self) -> str:
        """The ``MONGODB_URI`` that reaches it with PyMongo."""
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"


class WireDouble:
    """Answers MongoDB wire protocol requests from one in-memory mongomock client."""

    def __init__(self) -> None:
        self._commands = Commands()
        self._connection_ids = itertools.count(1)
        self._reply_ids = itertools.count(1)
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def listen(self, host: str, port: int) -> asyncio.Server:
        """Starts serving on ``host``:``port`` (0 for any free port)."""
        return await asyncio.start_server(self._serve_connection, host, port)

    async def close_connections(self) -> None:
        """Closes every connection; each one's task then ends as if its client had left
        (cancelling them instead makes Python 3.11's asyncio log every cancellation)."""
        tasks = list(self._connections)
        for writer in self._connections.values():
            writer.close()
        if tasks:
            await asyncio.wait(tasks)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        connection_id = next(self._connection_ids)
        try:
            while True:
                length, request_id, _, op_code = HEADER.unpack(await reader.readexactly(16))
                if not HEADER.size < length <= MAX_MESSAGE_SIZE:
                    raise ProtocolError(f"message length {length} is out of bounds")
                body = await reader.readexactly(length - HEADER.size)
                request = parse_request(request_id, op_code, body)
                reply = self._commands.run(
                    request.command, Context(request.database, connection_id)
                )
                if request.expects_reply:
                    writer.write(encode_reply(request, next(self._reply_ids), reply))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection (PyMongo does, at close or on timeout)
        except ProtocolError as error:
            log.error("wire double: closing connection %d: %s", connection_id, error)
        finally:
            self._connections.pop(task, None)
            writer.close()


async def serve(
    host: str, port: int, stop: asyncio.Event, on_listening: Callable[[int], None]
) -> None:
    """Serves on ``host``:``port`` (0: any free port) until ``stop`` is set, calling
    ``on_listening`` with the port once connections are accepted."""
    double = WireDouble()
    server = await double.listen(host, port)
    on_listening(server.sockets[0].getsockname()[1])
    await stop.wait()
    server.close()
    await double.close_connections()
    await server.wait_closed()


@contextlib.contextmanager
def running_in_thread(host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningDouble]:
    """Runs a double on a thread of its own (with its own event loop) until the block ends;
    its data lives as long as the block."""
    listening: Future[int] = Future()
    stopper: Future[Callable[[], object]] = Future()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stopper.set_result(lambda: loop.call_soon_threadsafe(stop.set))
        await serve(host, port, stop, listening.set_result)

    def run_reporting_failures() -> None:
        try:
            asyncio.run(run())
        except BaseException as error:
            if not listening.done():
                listening.set_exception(error)
            raise

    # A daemon, so that a test run that dies without its teardown still exits.
    thread = threading.Thread(target=run_reporting_failures, name="mongo-wire-double", daemon=True)
    thread.start()
    try:
        yield RunningDouble(host, listening.result(timeout=10))
    finally:
        stopper.result(timeout=10)()
        thread.join(timeout=10)


@contextlib.contextmanager
def running_in_process(host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningDouble]:
    """Runs a double in a process of its own (``python -m tests.mongo_double``) until the
    block ends, when it is terminated; it outlives any client process killed meanwhile."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo_double", "--host", host, "--port", str(port)],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the wire double did not start (exit code {process.wait()})")
        yield RunningDouble(host, int(line))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
