"""The embedded store kept in a file (``TANDEM_DATA_FILE``), as development servers of
comparable tools keep theirs: read at start-up, written periodically and at shutdown.

The file is one MongoDB Extended JSON document (relaxed mode, as ``mongoexport`` writes),
readable and diffable, holding every collection's documents by name and the dev key:

    {"format": "tandem-data-file", "version": 1, "dev_key": "dev-…",
     "collections": {"workflows": [...], "runs": [...]}}

It is written whole to a temporary file beside it and renamed over it, so that a crash
mid-write leaves the previous file; it is never written over a file that could not be
read (the server refuses to start instead), so no data is silently lost.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from app.store.database import Database

logger = logging.getLogger("tandem.store")

FORMAT = "tandem-data-file"
VERSION = 1
# Datetimes come back timezone-aware in UTC, as the embedded client stores them.
_JSON_OPTIONS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True, tzinfo=UTC)

Document = dict[str, Any]


class DataFileError(Exception):
    """The data file cannot be read or written; the message says which file and why."""


@dataclass
class Snapshot:
    """What the file holds: each collection's documents, and the dev key in use."""

    collections: dict[str, list[Document]] = field(default_factory=dict)
    dev_key: str | None = None


def read_data_file(path: Path) -> Snapshot | None:
    """The snapshot in ``path``; None if there is no file there yet."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DataFileError(f"cannot read the data file {path}: {_reason(error)}.") from None
    except UnicodeDecodeError:
        raise _not_tandem_data(path, "it is not UTF-8 text") from None
    try:
        document = json_util.loads(raw, json_options=_JSON_OPTIONS)
    except (ValueError, TypeError) as error:
        raise _not_tandem_data(path, f"it is not valid Extended JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _not_tandem_data(path, f'it has no "format": "{FORMAT}"')
    if document.get("version") != VERSION:
        raise _not_tandem_data(
            path, f"it is version {document.get('version')!r}, this server reads {VERSION}"
        )
    collections = document.get("collections")
    if not isinstance(collections, dict) or not all(
        isinstance(documents, list)
        and all(isinstance(item, dict) and "_id" in item for item in documents)
        for documents in collections.values()
    ):
        raise _not_tandem_data(path, "its collections are not lists of documents with an _id")
    dev_key = document.get("dev_key")
    if dev_key is not None and not isinstance(dev_key, str):
        raise _not_tandem_data(path, "its dev_key is not a string")
    return Snapshot(collections=collections, dev_key=dev_key)


def _not_tandem_data(path: Path, why: str) -> DataFileError:
    return DataFileError(
        f"the data file {path} cannot be loaded: {why}. Tandem leaves it as it is: move it "
        "away to start afresh, or point TANDEM_DATA_FILE elsewhere."
    )


def encode(snapshot: Snapshot) -> bytes:
    """The file's bytes for ``snapshot``."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "dev_key": snapshot.dev_key,
        "collections": snapshot.collections,
    }
    return json_util.dumps(document, json_options=_JSON_OPTIONS, indent=1).encode()


def write_atomically(path: Path, content: bytes) -> None:
    """Replace ``path`` by ``content`` in one rename; readable by its owner only (the
    file holds the dev key)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise DataFileError(f"cannot write the data file {path}: {_reason(error)}.") from None


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error)


async def restore(database: Database, snapshot: Snapshot) -> None:
    """Put the snapshot's documents into ``database`` (an empty one)."""
    for name, documents in snapshot.collections.items():
        if documents:
            await database[name].insert_many(documents)


async def dump(database: Database) -> dict[str, list[Document]]:
    """Every document of every collection in ``database``, by collection name."""
    collections: dict[str, list[Document]] = {}
    for name in sorted(await database.list_collection_names()):
        collections[name] = await database[name].find({}).to_list(None)
    return collections


class DataFileKeeper:
    """Writes ``database`` to ``path`` every ``interval_seconds`` while running, and once
    more at ``close``; a snapshot the same as the last one written is not written again."""

    def __init__(
        self, database: Database, path: Path, interval_seconds: float, dev_key: str | None
    ) -> None:
        self._database = database
        self._path = path
        self._interval = interval_seconds
        self._dev_key = dev_key
        self._written: bytes | None = None  # the digest of the last snapshot written
        self._task: asyncio.Task[None] | None = None

    async def save(self) -> bool:
        """Write the file if the data changed since the last write; True if it did."""
        snapshot = Snapshot(collections=await dump(self._database), dev_key=self._dev_key)
        # Encoding and writing take a while for a large store: off the event loop. The
        # documents are copies (find returns copies), so turns may go on meanwhile.
        return await asyncio.to_thread(self._write_if_changed, snapshot)

    def _write_if_changed(self, snapshot: Snapshot) -> bool:
        content = encode(snapshot)
        digest = hashlib.sha256(content).digest()
        if digest == self._written:
            return False
        write_atomically(self._path, content)
        self._written = digest
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._save_periodically(), name="data-file-keeper")

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.save()
            except DataFileError as error:
                # The next attempt may succeed (a full disk freed): the server goes on.
                logger.error("%s", error)

    async def close(self) -> None:
        """Stop the periodic writes and write the last snapshot (DataFileError if it fails)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.save()
