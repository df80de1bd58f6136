"""Running Tandem's server process, in the order a newcomer can trust: listen on the port,
open the store (checking MongoDB answers, or loading the data file), serve with uvicorn,
and only then print the banner. Whatever stops start-up is said in one sentence on
stderr, with a non-zero exit status, not a traceback."""

import asyncio
import errno
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from app.config import Settings
from app.examples import EXAMPLES
from app.garbage_collection import tune_garbage_collection
from app.server import create_app
from app.store.data_file import DataFileError, DataFileKeeper, read_data_file, restore
from app.store.database import Connection, StoreUnavailable


class CannotStart(Exception):
    """Start-up cannot go on; the message says why and what to do, in one sentence."""


def serve(settings: Settings, host: str, port: int, log_level: str) -> int:
    """Serve until stopped (SIGINT, SIGTERM); the process's exit status."""
    try:
        listener = listen(host, port)
    except CannotStart as error:
        return _refuse(error)
    # The app is made once the store is open; uvicorn's Config is made first only to
    # choose the event loop the way uvicorn.run does (uvloop when installed).
    # log_config=None: uvicorn's loggers keep ours (plain text or JSON lines).
    config = uvicorn.Config(_not_yet_made, log_level=log_level, log_config=None)
    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            return runner.run(_serve(settings, listener, config))
    except CannotStart as error:
        return _refuse(error)
    except KeyboardInterrupt:  # Ctrl-C before the server was up
        return 130
    finally:
        listener.close()


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), or CannotStart."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn binds: a port left in TIME_WAIT by a server just stopped is free.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise CannotStart(
                f"port {port} on {host} is already in use (another Tandem, or another"
                " server?): stop it, or start Tandem on another port with --port."
            ) from None
        if error.errno == errno.EACCES:
            raise CannotStart(
                f"not allowed to listen on port {port} on {host}: use a port above 1023"
                " with --port."
            ) from None
        reason = error.strerror or str(error)
        raise CannotStart(f"cannot listen on {host}:{port}: {reason}.") from None
    except socket.gaierror as error:
        listener.close()
        raise CannotStart(f"cannot listen on {host}:{port}: {error.strerror}.") from None
    listener.set_inheritable(True)
    return listener


async def _serve(settings: Settings, listener: socket.socket, config: uvicorn.Config) -> int:
    try:
        connection = Connection(settings.mongodb_uri, settings.database_name)
        await connection.check(settings.mongodb_startup_timeout_seconds)
    except StoreUnavailable as error:
        raise CannotStart(str(error)) from None
    keeper = None
    try:
        if settings.data_file is not None:
            settings, keeper = await _keep_in_file(settings, connection, Path(settings.data_file))
        config.app = create_app(settings, database=connection.database)
        server = _AnnouncingServer(config, banner(settings, _url(listener)))
        with _stopping_quietly():
            await server.serve(sockets=[listener])
    finally:
        unsaved = await _close(keeper, connection)
    if unsaved is not None:
        print(f"tandem: {unsaved}", file=sys.stderr, flush=True)
        return 1
    return 0


async def _close(keeper: DataFileKeeper | None, connection: Connection) -> DataFileError | None:
    """Write the data file a last time and close the client; what kept the file unwritten."""
    try:
        if keeper is not None:
            await keeper.close()
        return None
    except DataFileError as error:
        return error
    finally:
        await connection.close()


async def _keep_in_file(
    settings: Settings, connection: Connection, path: Path
) -> tuple[Settings, DataFileKeeper]:
    """Load the data file into the embedded store, and keep it written from now on."""
    try:
        snapshot = read_data_file(path)
    except DataFileError as error:
        raise CannotStart(str(error)) from None
    if snapshot is not None:
        await restore(connection.database, snapshot)
        if snapshot.dev_key is not None:
            settings = settings.with_kept_dev_key(snapshot.dev_key)
    keeper = DataFileKeeper(
        connection.database, path, settings.data_file_save_seconds, settings.dev_key
    )
    try:
        await keeper.save()  # now, so that a file that cannot be written stops start-up
    except DataFileError as error:
        raise CannotStart(str(error)) from None
    keeper.start()
    return settings, keeper


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, printing the banner once it serves: the app started (the store
    answered) and the socket accepts connections."""

    def __init__(self, config: uvicorn.Config, announcement: str) -> None:
        super().__init__(config)
        self._announcement = announcement

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            tune_garbage_collection()
            print(self._announcement, flush=True)


class _stopping_quietly:
    """uvicorn raises the signal that stopped it again once it has shut down, so that its
    default action ends the process. Tandem still has a data file to write and a client
    to close: while serving, that second delivery is made to do nothing."""

    def __enter__(self) -> None:
        self._previous = {
            sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _ignore(sig: int, frame: FrameType | None) -> None:
    return None


async def _not_yet_made(scope: object, receive: object, send: object) -> None:
    raise RuntimeError("the app is made once the store is open")


def _url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _refuse(error: Exception) -> int:
    print(f"tandem: cannot start: {error}", file=sys.stderr, flush=True)
    return 1


def banner(settings: Settings, url: str) -> str:
    lines = [
        f"Tandem listening on {url}  (OpenAPI: {url}/schema)",
        f"Chat in your browser: open {url}/ and paste an API key.",
    ]
    if settings.embedded and settings.data_file is None:
        lines += [
            "",
            "!" * 78,
            "!! EMBEDDED IN-MEMORY STORE (mongomock): every workflow and run is LOST on exit.",
            "!! Set TANDEM_DATA_FILE to keep them in a file, or MONGODB_URI for MongoDB.",
            "!" * 78,
        ]
    elif settings.data_file is not None:
        lines += [
            "",
            f"Embedded store kept in {settings.data_file} (written every"
            f" {settings.data_file_save_seconds:g} s and on exit).",
        ]
    if settings.dev_key is not None:
        if settings.dev_key_source == "TANDEM_DEV_KEY":
            origin = "from TANDEM_DEV_KEY"
        elif settings.data_file is not None:
            origin = f"kept in {settings.data_file}"
        else:
            origin = "new at every start; TANDEM_DEV_KEY fixes one"
        booking = EXAMPLES["booking"]
        lines += [
            "",
            f"Dev API key (tenant 'dev', {origin}): {settings.dev_key}",
            "",
            "Try the bundled booking workflow (README.md walks through the whole conversation):",
            f"  export TANDEM_URL={url} TANDEM_KEY={settings.dev_key}",
            f"  curl -s -X POST $TANDEM_URL/v1/workflows/{booking}/execute \\",
            "       -H \"X-API-Key: $TANDEM_KEY\" -H 'Content-Type: application/json' -d '{}'",
        ]
    return "\n".join(lines)
