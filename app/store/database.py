"""Opening the database: PyMongo's async client for a real MongoDB, or the embedded mock."""

import re
from typing import Any, cast

import pymongo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from app.store.embedded import open_embedded_client

Database = AsyncDatabase[dict[str, Any]]


class StoreUnavailable(Exception):
    """MongoDB cannot be used; the message says so in one sentence, with what to check."""


class Connection:
    """One client per process, opened at start-up and closed at shutdown."""

    def __init__(self, uri: str | None, database_name: str) -> None:
        self.embedded = uri is None
        if uri is None:
            self._client: Any = open_embedded_client()
        else:
            try:
                self._client = AsyncMongoClient(uri, tz_aware=True)
            except PyMongoError as error:  # a malformed URI, an unknown option
                raise StoreUnavailable(
                    f"MONGODB_URI {redact(uri)} is not usable: {_first_line(error)}"
                ) from None
            _refuse_what_runs_cannot_rest_on(self._client, uri)
        self._uri = uri
        self.database = cast(Database, self._client[database_name])

    async def check(self, timeout_seconds: float) -> None:
        """Raise StoreUnavailable unless MongoDB answers a ping within ``timeout_seconds``
        (the client's own server selection waits 30 s, too long to say nothing)."""
        if self._uri is None:
            return
        try:
            with pymongo.timeout(timeout_seconds):
                await self.database.command("ping")
        except OperationFailure as error:  # it answered, and refused (authentication…)
            raise StoreUnavailable(
                f"MongoDB at {redact(self._uri)} refused Tandem: {_first_line(error)}"
            ) from None
        except PyMongoError:
            raise StoreUnavailable(
                f"MongoDB at {redact(self._uri)} did not answer within {timeout_seconds:g} s:"
                " check that it is running and that MONGODB_URI names it (the wait is"
                " TANDEM_MONGODB_STARTUP_TIMEOUT_SECONDS)."
            ) from None

    async def close(self) -> None:
        if not self.embedded:
            await self._client.close()


def redact(uri: str) -> str:
    """``uri`` without its password, fit to print."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", uri)


def _first_line(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    # PyMongo appends the whole topology description after a comma-separated detail.
    return text.split(", Timeout:")[0].rstrip(".") + "."


def _refuse_what_runs_cannot_rest_on(client: AsyncMongoClient[Any], uri: str) -> None:
    """Every write Tandem makes is conditional on what it read (a claim, a commit, a
    publish's wait): it needs reads from the primary and writes it is told were applied."""
    if client.read_preference != pymongo.ReadPreference.PRIMARY:
        raise StoreUnavailable(
            f"MONGODB_URI {redact(uri)} sets readPreference="
            f"{client.read_preference.mongos_mode}: Tandem needs reads from the primary"
            " (remove readPreference from the URI)."
        )
    if not client.write_concern.acknowledged:
        raise StoreUnavailable(
            f"MONGODB_URI {redact(uri)} sets w=0: Tandem needs to know that each write was"
            " applied (remove w=0 from the URI)."
        )
