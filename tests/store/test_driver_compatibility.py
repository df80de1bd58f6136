"""The store must run on PyMongo's AsyncCollection and on mongomock-motor alike, and the
wire double (tests/mongo_double) must answer every command those calls send."""

import ast
import inspect
from pathlib import Path

from mongomock_motor import AsyncMongoMockClient
from pymongo.asynchronous.collection import AsyncCollection

from tests.mongo_double import supported_commands

STORE = Path(__file__).parents[2] / "app" / "store"
FORBIDDEN = {"bulk_write", "aggregate", "watch", "start_session", "with_transaction"}
# The commands PyMongo sends for each collection method (a cursor may go on with getMore
# and end early with killCursors).
COMMANDS_SENT = {
    "find": {"find", "getMore", "killCursors"},
    "find_one": {"find"},
    "insert_one": {"insert"},
    "insert_many": {"insert"},
    "update_one": {"update"},
    "update_many": {"update"},
    "replace_one": {"update"},
    "delete_one": {"delete"},
    "delete_many": {"delete"},
    "find_one_and_update": {"findAndModify"},
    "find_one_and_replace": {"findAndModify"},
    "find_one_and_delete": {"findAndModify"},
    "count_documents": {"aggregate"},
    "estimated_document_count": {"count"},
    "distinct": {"distinct"},
    "create_index": {"createIndexes"},
    "create_indexes": {"createIndexes"},
    "list_indexes": {"listIndexes"},
    "index_information": {"listIndexes"},
    "drop": {"drop"},
}


def collection_methods_called() -> set[str]:
    """Every method called on a collection attribute (``self._runs.find_one(...)``)."""
    called = set()
    for path in STORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and isinstance(node.func.value.value, ast.Name)
                and node.func.value.value.id == "self"
                and node.func.value.attr in {"_runs", "_events", "_workflows", "_versions", "_keys"}
            ):
                called.add(node.func.attr)
    return called


def test_the_store_calls_collection_methods() -> None:
    called = collection_methods_called()
    assert {"find_one", "find_one_and_update", "update_one", "insert_one", "find"} <= called
    assert {"replace_one", "delete_one"} <= called  # the idempotency keys


def test_every_called_method_exists_with_the_same_async_shape() -> None:
    mock_collection = AsyncMongoMockClient()["compat"]["compat"]
    for name in collection_methods_called():
        assert name not in FORBIDDEN, name
        real = getattr(AsyncCollection, name)
        mock = getattr(mock_collection, name)
        assert inspect.iscoroutinefunction(real) == inspect.iscoroutinefunction(mock), name


def test_cursors_offer_the_chain_the_store_uses() -> None:
    from pymongo.asynchronous.cursor import AsyncCursor

    mock_cursor = AsyncMongoMockClient()["compat"]["compat"].find({})
    for name in ("sort", "limit", "to_list"):
        assert hasattr(AsyncCursor, name) and hasattr(mock_cursor, name), name
    assert inspect.iscoroutinefunction(AsyncCursor.to_list)


def test_the_wire_double_answers_every_command_the_store_sends() -> None:
    for name in collection_methods_called():
        assert name in COMMANDS_SENT, f"add the commands that {name} sends to COMMANDS_SENT"
        assert COMMANDS_SENT[name] <= supported_commands(), name
    handshake_and_ping = {"hello", "isMaster", "ping", "endSessions"}  # Store.ping, the driver
    assert handshake_and_ping <= supported_commands()
