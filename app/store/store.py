"""The store: the collections Tandem uses, behind one object opened at start-up."""

from app.store.database import Database
from app.store.idempotency import IdempotencyStore
from app.store.runs import RunStore
from app.store.workflows import WorkflowStore


class Store:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.workflows = WorkflowStore(database)
        self.runs = RunStore(database)
        self.idempotency = IdempotencyStore(database)

    async def ensure_indexes(self) -> None:
        await self.workflows.ensure_indexes()
        await self.runs.ensure_indexes()
        await self.idempotency.ensure_indexes()

    async def ping(self) -> None:
        """Raises when MongoDB does not answer."""
        await self.database.command("ping")
