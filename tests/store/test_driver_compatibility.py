"""The store must run on PyMongo's AsyncCollection and on mongomock-motor alike."""

import ast
import inspect
from pathlib import Path

from mongomock_motor import AsyncMongoMockClient
from pymongo.asynchronous.collection import AsyncCollection

STORE = Path(__file__).parents[2] / "app" / "store"
FORBIDDEN = {"bulk_write", "aggregate", "watch", "start_session", "with_transaction"}


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
                and node.func.value.attr in {"_runs", "_events", "_workflows", "_versions"}
            ):
                called.add(node.func.attr)
    return called


def test_the_store_calls_collection_methods() -> None:
    called = collection_methods_called()
    assert {"find_one", "find_one_and_update", "update_one", "insert_one", "find"} <= called


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
