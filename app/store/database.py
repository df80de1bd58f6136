"""Opening the database: PyMongo's async client for a real MongoDB, or the embedded mock."""

from typing import Any, cast

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.store.embedded import open_embedded_client

Database = AsyncDatabase[dict[str, Any]]


class Connection:
    """One client per process, opened at start-up and closed at shutdown."""

    def __init__(self, uri: str | None, database_name: str) -> None:
        self.embedded = uri is None
        if uri is None:
            self._client: Any = open_embedded_client()
        else:
            self._client = AsyncMongoClient(uri, tz_aware=True)
        self.database = cast(Database, self._client[database_name])

    async def close(self) -> None:
        if not self.embedded:
            await self._client.close()
