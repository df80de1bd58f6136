"""Helpers shared by the tests: a movable clock, databases that yield, and factories."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from app.clock import utc_now
from app.store.database import Database
from app.store.embedded import open_embedded_client

BOOKING = {
    "start": "greet",
    "limits": {"max_steps_per_turn": 100},
    "nodes": {
        "greet": {"type": "message", "text": "Hi! I book tables.", "next": "ask_name"},
        "ask_name": {
            "type": "input",
            "prompt": "What is your name?",
            "save_as": "name",
            "next": "ask_size",
        },
        "ask_size": {
            "type": "input",
            "prompt": "For how many people?",
            "save_as": "size",
            "validate": {"pattern": "^[0-9]+$"},
            "retry_prompt": "Please give a number.",
            "next": "check",
        },
        "check": {
            "type": "switch",
            "cases": [{"when": "size | int > 8", "next": "too_big"}],
            "default": "confirm",
        },
        "too_big": {
            "type": "message",
            "text": "Sorry {{ name }}, at most 8 people.",
            "next": "ask_size",
        },
        "confirm": {
            "type": "pause",
            "prompt": "Book for {{ name }}, {{ size }} people?",
            "next": "done",
        },
        "done": {"type": "end", "output": {"name": "name", "size": "size | int"}},
    },
}


def flow(*nodes: tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A definition from (id, node) pairs; the first node is the start."""
    return {"start": nodes[0][0], "nodes": dict(nodes), **extra}


class FakeClock:
    """A clock that only moves when told to.

    It starts far in the future, so that the dates tests store from it (a run's
    ``cleanup_after``, 30 days on) are never in the past of a real MongoDB's own clock,
    whose TTL monitor would then delete documents in the middle of a test. (An ObjectId,
    which holds a run's creation second, counts seconds until 2106.)"""

    START = datetime(2096, 11, 22, 12, 0, 0, tzinfo=UTC)

    def __init__(self) -> None:
        self.now = self.START

    @classmethod
    def from_real_time(cls) -> "FakeClock":
        """A clock that starts at the real time, to the millisecond: for times that a TTL
        index compares with the database's own clock (MongoDB's TTL monitor, mongomock on
        each read), which must not find them long past."""
        clock = cls()
        clock.now = utc_now()
        return clock

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class YieldingCollection:
    """Wraps a collection so that each call yields to the event loop before and after it,
    as a real driver does; mongomock-motor never yields, which would hide every race.
    Calls that the database's ``holds`` match wait for its gate (to hold a turn open)."""

    def __init__(self, collection: Any, database: "YieldingDatabase") -> None:
        self._collection = collection
        self._database = database

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if name == "find" or not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            await self._database.pass_gate(self._collection.name, name, args)
            result = await attribute(*args, **kwargs)
            await asyncio.sleep(0)
            return result

        return call


class YieldingDatabase:
    """A database whose collections yield (see ``YieldingCollection``), and whose chosen
    calls can be held until released, so that a test can make an overlap certain."""

    def __init__(self, database: Any) -> None:
        self._database = database
        self._gate = asyncio.Event()
        self._holds: list[tuple[str, str, Callable[[tuple[Any, ...]], bool]]] = []
        self._records: list[tuple[str, frozenset[str], list[str]]] = []
        self._faults: list[tuple[str, str, Callable[[tuple[Any, ...]], bool], Exception]] = []
        self.waiting = 0

    def fail_once(
        self,
        collection: str,
        method: str,
        when: Callable[[tuple[Any, ...]], bool],
        error: Exception,
    ) -> None:
        """The next matching call raises ``error`` instead of reaching the database."""
        self._faults.append((collection, method, when, error))

    def hold(
        self, collection: str, method: str, when: Callable[[tuple[Any, ...]], bool] = lambda _: True
    ) -> None:
        """From now on, matching calls wait until ``release``."""
        self._holds.append((collection, method, when))
        self._gate.clear()

    def record(self, collection: str, *methods: str) -> list[str]:
        """The names of the calls of ``methods`` made to ``collection`` from now on (until
        ``release``), in order."""
        calls: list[str] = []
        self._records.append((collection, frozenset(methods), calls))
        return calls

    def release(self) -> None:
        self._holds.clear()
        self._records.clear()
        self._gate.set()

    async def pass_gate(self, collection: str, method: str, args: tuple[Any, ...]) -> None:
        for recorded_collection, methods, calls in self._records:
            if recorded_collection == collection and method in methods:
                calls.append(method)
        for fault in self._faults:
            faulty_collection, faulty_method, when, error = fault
            if (faulty_collection, faulty_method) == (collection, method) and when(args):
                self._faults.remove(fault)
                raise error
        for held_collection, held_method, when in self._holds:
            if (held_collection, held_method) == (collection, method) and when(args):
                self.waiting += 1
                try:
                    await self._gate.wait()
                finally:
                    self.waiting -= 1
                return

    def __getitem__(self, name: str) -> YieldingCollection:
        return YieldingCollection(self._database[name], self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)


def is_turn_commit(args: tuple[Any, ...]) -> bool:
    """A runs.update_one call that commits a turn: guarded by its claim token, or (a turn
    on a run its process had cached) by the revision it read and no claim."""
    if len(args) < 2 or "state" not in args[1].get("$set", {}):
        return False
    return "claim.token" in args[0] or ("revision" in args[0] and "claim" in args[0])


def is_progress_record(args: tuple[Any, ...]) -> bool:
    """A runs.update_one call that records a turn's progress while it executes."""
    return (
        len(args) > 1 and "claim.token" in args[0] and "claim.expires_at" in args[1].get("$set", {})
    )


def database_backends() -> list[str]:
    """What tests parametrized over backends run on: the MongoDB of MONGODB_URI when it is
    set; else both in-memory stores, the embedded one and the wire double
    (``tests/mongo_double``) reached through PyMongo's real ``AsyncMongoClient``."""
    return ["mongodb"] if os.environ.get("MONGODB_URI") else ["embedded", "wire"]


@asynccontextmanager
async def fresh_database(uri: str | None = None) -> AsyncIterator[Database]:
    """A fresh database, dropped afterwards: through PyMongo's ``AsyncMongoClient`` on the
    MongoDB at ``uri`` (the wire double's, say), else on MONGODB_URI's when it is set;
    else in memory, on the embedded store."""
    uri = uri or os.environ.get("MONGODB_URI")
    name = f"tandem_test_{uuid.uuid4().hex[:12]}"
    if uri:
        from pymongo import AsyncMongoClient

        client: Any = AsyncMongoClient(uri, tz_aware=True)
        try:
            yield client[name]
        finally:
            await client.drop_database(name)
            await client.close()
    else:
        yield open_embedded_client()[name]


async def wait_until(condition: Callable[[], bool], rounds: int = 10_000) -> None:
    """Let the event loop run until ``condition`` holds (bounded, never sleeps)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")
