"""The wire-level MongoDB double (tests/mongo_double), driven by PyMongo's real
AsyncMongoClient: what Tandem's store relies on, and what later tests will (several
clients, a process of its own that outlives a killed client)."""

import asyncio
import os
import signal
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import bson
import pytest
from bson import ObjectId
from bson.int64 import Int64
from pymongo import AsyncMongoClient, ReturnDocument, WriteConcern
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from app.store.database import Database
from tests.mongo_double import RunningDouble, running_in_process
from tests.mongo_double.server import REPOSITORY
from tests.support import fresh_database


@pytest.fixture
async def db(mongo_double: RunningDouble) -> AsyncIterator[Database]:
    async with fresh_database(mongo_double.uri) as database:
        yield database


async def test_the_handshake_reports_a_standalone_with_sessions(db: Database) -> None:
    hello = await db.client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["maxWireVersion"] == 21 and hello["logicalSessionTimeoutMinutes"] == 30
    assert "setName" not in hello and "topologyVersion" not in hello
    legacy = await db.client.admin.command("isMaster")
    assert legacy["ismaster"] is True and legacy["helloOk"] is True
    assert (await db.client.server_info())["version"] == "7.0.0"


async def test_a_legacy_op_query_handshake_gets_an_op_reply(mongo_double: RunningDouble) -> None:
    """Drivers older than PyMongo 4.20 send their first hello as OP_QUERY on admin.$cmd."""
    query = bson.encode({"isMaster": 1, "helloOk": True})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    reader, writer = await asyncio.open_connection(mongo_double.host, mongo_double.port)
    writer.write(struct.pack("<iiii", 16 + len(body), 77, 0, 2004) + body)
    length, _, response_to, op_code = struct.unpack("<iiii", await reader.readexactly(16))
    reply = await reader.readexactly(length - 16)
    writer.close()
    assert (op_code, response_to) == (1, 77)  # OP_REPLY, to our request
    flags, cursor_id, _, returned = struct.unpack_from("<iqii", reply)
    assert (flags, cursor_id, returned) == (0, 0, 1)
    assert bson.decode(reply[20:])["ismaster"] is True


async def test_a_message_it_cannot_read_closes_only_its_connection(
    mongo_double: RunningDouble, db: Database
) -> None:
    reader, writer = await asyncio.open_connection(mongo_double.host, mongo_double.port)
    writer.write(struct.pack("<iiii", 16 + 9, 1, 0, 2012) + bytes(9))  # OP_COMPRESSED
    assert await reader.read() == b""  # closed, without a reply
    writer.close()
    assert (await db.command("ping"))["ok"] == 1.0


async def test_a_unique_index_refuses_duplicates_as_mongodb_does(db: Database) -> None:
    versions = db["versions"]
    await versions.create_index([("workflow", 1), ("version", 1)], unique=True)
    await versions.insert_one({"workflow": 1, "version": 0})
    await versions.insert_one({"workflow": 1, "version": 1})
    with pytest.raises(DuplicateKeyError) as duplicate:
        await versions.insert_one({"workflow": 1, "version": 0})
    assert duplicate.value.code == 11000 and "versions" in str(duplicate.value)
    with pytest.raises(DuplicateKeyError):
        await versions.update_one({"version": 1}, {"$set": {"version": 0}})
    with pytest.raises(DuplicateKeyError):
        await versions.find_one_and_update({"version": 1}, {"$set": {"version": 0}})
    with pytest.raises(BulkWriteError) as bulk:  # unordered: the others still go in
        await versions.insert_many(
            [{"workflow": 2, "version": 0}, {"workflow": 1, "version": 0}, {"workflow": 3}],
            ordered=False,
        )
    assert bulk.value.details["nInserted"] == 2
    assert [e["index"] for e in bulk.value.details["writeErrors"]] == [1]
    assert await versions.count_documents({}) == 4
    names = [index["name"] async for index in await versions.list_indexes()]
    assert names == ["_id_", "workflow_1_version_1"]


async def test_find_one_and_update_returns_the_document_before_or_after(db: Database) -> None:
    runs = db["runs"]
    await runs.insert_many([{"_id": 1, "n": 0, "at": 2}, {"_id": 2, "n": 0, "at": 1}])
    before = await runs.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})
    after = await runs.find_one_and_update(
        {"_id": 1}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
    )
    assert (before, after) == ({"_id": 1, "n": 0, "at": 2}, {"_id": 1, "n": 2, "at": 2})
    assert await runs.find_one_and_update({"_id": 3}, {"$inc": {"n": 1}}) is None
    first_by_at = await runs.find_one_and_update(
        {}, {"$set": {"seen": True}}, sort=[("at", 1)], projection={"_id": 1}
    )
    assert first_by_at == {"_id": 2}
    assert await runs.find_one_and_update({"_id": 4}, {"$set": {"n": 9}}, upsert=True) is None
    upserted = await runs.find_one_and_update(
        {"_id": 5}, {"$set": {"n": 9}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert upserted == {"_id": 5, "n": 9}
    replaced = await runs.find_one_and_replace(
        {"_id": 5}, {"n": 10}, return_document=ReturnDocument.AFTER
    )
    assert replaced == {"_id": 5, "n": 10}
    assert await runs.find_one_and_delete({"_id": 5}) == {"_id": 5, "n": 10}
    assert await runs.count_documents({}) == 3


async def test_values_round_trip_with_their_bson_types(db: Database) -> None:
    """Datetimes come back timezone-aware in UTC, at BSON's millisecond precision."""
    paris = timezone(timedelta(hours=1))
    document: dict[str, Any] = {
        "_id": ObjectId(),
        "refs": [ObjectId(), None],
        "at": datetime(2026, 11, 22, 13, 0, 0, 123456, tzinfo=paris),
        "big": Int64(2**62),
        "nested": {"a.b": 1.5, "list": [True, "é", b"\x00\x01"]},
    }
    await db["values"].insert_one(document)
    stored = await db["values"].find_one({"_id": document["_id"]})
    assert stored is not None
    assert stored["at"] == datetime(2026, 11, 22, 12, 0, 0, 123000, tzinfo=UTC)
    assert stored["at"].utcoffset() == timedelta(0)
    assert stored["refs"] == document["refs"] and isinstance(stored["refs"][0], ObjectId)
    assert stored["big"] == 2**62 and stored["nested"] == document["nested"]
    assert await db["values"].find_one({"at": {"$lt": document["at"]}}) is None


async def test_two_clients_racing_for_one_document_get_it_once(
    mongo_double: RunningDouble, db: Database
) -> None:
    await db["runs"].insert_many([{"_id": run, "claim": None} for run in range(5)])
    clients = [AsyncMongoClient(mongo_double.uri, tz_aware=True) for _ in range(2)]
    try:

        async def claim(run: int, token: int) -> Any:
            runs = clients[token % 2][db.name]["runs"]
            return await runs.find_one_and_update(
                {"_id": run, "claim": None}, {"$set": {"claim": token}}
            )

        for run in range(5):
            answers = await asyncio.gather(*(claim(run, token) for token in range(8)))
            winners = [token for token, answer in enumerate(answers) if answer is not None]
            assert len(winners) == 1
            assert await db["runs"].find_one({"_id": run}) == {"_id": run, "claim": winners[0]}
    finally:
        for client in clients:
            await client.close()


async def test_cursors_page_through_get_more_and_close_early(db: Database) -> None:
    items = db["items"]
    await items.insert_many([{"i": i, "odd": i % 2} for i in range(250)])
    everything = await items.find({}, {"_id": 0}).sort("i", -1).to_list(None)  # 101, then 149
    assert [item["i"] for item in everything] == list(range(249, -1, -1))
    page = await items.find({"odd": 1}).sort("i", 1).skip(10).limit(5).batch_size(2).to_list()
    assert [item["i"] for item in page] == [21, 23, 25, 27, 29]
    cursor = items.find().batch_size(10)
    assert (await cursor.next())["i"] == 0
    await cursor.close()  # killCursors
    assert await items.distinct("odd") == [0, 1]
    assert await items.estimated_document_count() == 250
    assert (await items.delete_many({"odd": 1})).deleted_count == 125
    assert (await items.delete_one({"i": 0})).deleted_count == 1
    result = await items.update_many({"i": {"$lt": 10}}, {"$set": {"low": True}})
    assert (result.matched_count, result.modified_count) == (4, 4)
    result = await items.replace_one({"i": -1}, {"i": -1}, upsert=True)
    assert result.matched_count == 0 and result.upserted_id is not None
    assert await db.list_collection_names() == ["items"]
    await items.drop()
    assert await db.list_collection_names() == []


async def test_unknown_commands_and_fields_are_refused_by_name(db: Database) -> None:
    with pytest.raises(OperationFailure) as unknown:
        await db.command("compact", "items")
    assert unknown.value.code == 59 and "compact" in str(unknown.value)
    with pytest.raises(OperationFailure) as unsupported:
        await db["items"].find_one({}, collation={"locale": "fr"})
    assert "collation" in str(unsupported.value)


async def test_an_unacknowledged_write_is_applied_without_a_reply(
    mongo_double: RunningDouble,
) -> None:
    """PyMongo sends w=0 writes with moreToCome; a reply would be read as the next one's."""
    async with fresh_database(mongo_double.uri + "&maxPoolSize=1") as database:
        quiet = database["events"].with_options(write_concern=WriteConcern(w=0))
        await quiet.insert_one({"_id": 1})
        assert await database["events"].find_one({"_id": 1}) == {"_id": 1}


def test_a_double_in_its_own_process_outlives_a_killed_client() -> None:
    """What multi-process tests need: a store that keeps its data when a server process
    using it is SIGKILLed in the middle of its work."""
    writer = textwrap.dedent(
        """
        import sys, time
        from pymongo import MongoClient
        MongoClient(sys.argv[1])["shared"]["runs"].insert_one({"_id": 1})
        print("written", flush=True)
        time.sleep(60)
        """
    )
    with running_in_process() as double:
        client = subprocess.Popen(
            [sys.executable, "-c", writer, double.uri],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None and client.stdout.readline() == "written\n"
        os.kill(client.pid, signal.SIGKILL)
        assert client.wait() == -signal.SIGKILL

        async def read() -> Any:
            reader: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(double.uri)
            try:
                return await reader["shared"]["runs"].find_one({})
            finally:
                await reader.close()

        assert asyncio.run(read()) == {"_id": 1}
