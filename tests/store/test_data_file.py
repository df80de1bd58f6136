"""The data file of the embedded store: what goes in comes back the same, and a file that
cannot be read is refused with a sentence that names it."""

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, ObjectId

from app.store.data_file import (
    DataFileError,
    DataFileKeeper,
    Snapshot,
    dump,
    encode,
    read_data_file,
    restore,
    write_atomically,
)
from app.store.database import Database
from app.store.embedded import open_embedded_client

RUN: dict[str, Any] = {
    "_id": ObjectId("65f0c0ffee0000000000abcd"),
    "tenant": "dev",
    "created_at": datetime(2026, 11, 22, 12, 0, 0, 123000, tzinfo=UTC),
    "turn": 3,
    "big": Int64(2**40),
    "ratio": 0.5,
    "whole_float": 2.0,
    "blob": b"\x00\xff",
    "variables": {"name": "Ann", "sizes": [1, 2.5, None, True], "text": "caf\u00e9 \u2603"},
    "events": [{"seq": 1, "at": datetime(2026, 1, 1, tzinfo=UTC), "data": {}}],
}


def embedded() -> Database:
    database: Database = open_embedded_client()["tandem_data_file_test"]
    return database


async def test_every_collection_comes_back_the_same(tmp_path: Path) -> None:
    source = embedded()
    await source["runs"].insert_one(dict(RUN))
    await source["workflows"].insert_one({"_id": ObjectId(), "name": "Booking"})
    path = tmp_path / "data.json"
    write_atomically(path, encode(Snapshot(await dump(source), dev_key="dev-key-1")))

    snapshot = read_data_file(path)
    assert snapshot is not None and snapshot.dev_key == "dev-key-1"
    target = open_embedded_client()["elsewhere"]
    await restore(target, snapshot)
    assert await dump(target) == await dump(source)
    run = await target["runs"].find_one({"_id": RUN["_id"]})
    assert run == RUN
    assert isinstance(run["whole_float"], float) and isinstance(run["turn"], int)
    assert run["created_at"].tzinfo is not None


def test_no_file_yet_is_no_snapshot(tmp_path: Path) -> None:
    assert read_data_file(tmp_path / "absent.json") is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\xff\xfe", "not UTF-8 text"),
        (b"[1, 2", "not valid Extended JSON"),
        (b"[]", 'no "format"'),
        (b'{"format": "tandem-data-file", "version": 2, "collections": {}}', "version 2"),
        (b'{"format": "tandem-data-file", "version": 1, "collections": {"runs": [{}]}}', "_id"),
        (
            b'{"format": "tandem-data-file", "version": 1, "collections": {}, "dev_key": 1}',
            "dev_key",
        ),
    ],
)
def test_a_file_that_is_not_tandem_data_is_refused(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=why) as raised:
        read_data_file(path)
    assert str(path) in str(raised.value)


def test_a_file_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read the data file"):
        read_data_file(tmp_path)  # a folder


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    write_atomically(path, b"first")
    (tmp_path / f".data.json.{os.getpid()}.tmp").mkdir()  # in the way
    with pytest.raises(DataFileError, match="cannot write the data file"):
        write_atomically(path, b"second")
    assert path.read_bytes() == b"first"


async def test_the_keeper_writes_only_what_changed(tmp_path: Path) -> None:
    database = embedded()
    path = tmp_path / "data.json"
    keeper = DataFileKeeper(database, path, interval_seconds=3600, dev_key="dev-key-1")
    assert await keeper.save() is True
    assert await keeper.save() is False
    await database["workflows"].insert_one({"_id": ObjectId(), "name": "New"})
    assert await keeper.save() is True
    keeper.start()
    await database["workflows"].insert_one({"_id": ObjectId(), "name": "Last"})
    await keeper.close()  # stops the periodic writes and writes the last change
    snapshot = read_data_file(path)
    assert snapshot is not None
    assert [w["name"] for w in snapshot.collections["workflows"]] == ["New", "Last"]
