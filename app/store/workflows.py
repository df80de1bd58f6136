"""Workflows and their immutable, numbered versions."""

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from app.store.database import Database
from app.store.documents import (
    VersionDocument,
    VersionSummary,
    WorkflowDocument,
    from_document,
    to_document,
)

MAX_PUBLISH_ATTEMPTS = 20


class WorkflowStore:
    def __init__(self, database: Database) -> None:
        self._workflows = database["workflows"]
        self._versions = database["workflow_versions"]

    async def ensure_indexes(self) -> None:
        await self._workflows.create_index([("tenant", ASCENDING), ("_id", DESCENDING)])
        await self._versions.create_index(
            [("workflow_id", ASCENDING), ("version", ASCENDING)], unique=True
        )

    async def create(
        self,
        tenant: str,
        name: str,
        description: str | None,
        definition: dict[str, Any],
        now: datetime,
        workflow_id: ObjectId | None = None,
    ) -> WorkflowDocument:
        """Store a new workflow with its version 0. The version goes in first, so a workflow
        that can be read always has the version it advertises."""
        workflow = WorkflowDocument(
            id=workflow_id or ObjectId(),
            tenant=tenant,
            name=name,
            description=description,
            latest_version=0,
            created_at=now,
            updated_at=now,
        )
        await self._insert_version(workflow.id, tenant, 0, definition, now)
        await self._workflows.insert_one(to_document(workflow))
        return workflow

    async def publish_version(
        self, workflow: WorkflowDocument, definition: dict[str, Any], now: datetime
    ) -> int:
        """Store ``definition`` as the next version and return its number.

        The unique (workflow_id, version) index settles concurrent publishes: the loser
        takes the next number. Numbers come from the versions themselves, so a publish
        interrupted before the workflow was updated never blocks the next one.
        """
        for _ in range(MAX_PUBLISH_ATTEMPTS):
            latest = await self._versions.find_one(
                {"workflow_id": workflow.id}, {"version": 1}, sort=[("version", DESCENDING)]
            )
            version = (latest["version"] if latest else -1) + 1
            try:
                await self._insert_version(workflow.id, workflow.tenant, version, definition, now)
            except DuplicateKeyError:
                continue
            await self._workflows.update_one(
                {"_id": workflow.id, "tenant": workflow.tenant},
                {"$max": {"latest_version": version}, "$set": {"updated_at": now}},
            )
            return version
        raise RuntimeError("could not publish a version: too many concurrent publishes")

    async def find(self, tenant: str, workflow_id: ObjectId) -> WorkflowDocument | None:
        raw = await self._workflows.find_one({"_id": workflow_id, "tenant": tenant})
        return from_document(raw, WorkflowDocument) if raw else None

    async def list_page(
        self, tenant: str, limit: int, before: ObjectId | None
    ) -> list[WorkflowDocument]:
        """Newest first; ``before`` is the cursor: the id of the last item already seen."""
        query: dict[str, Any] = {"tenant": tenant}
        if before is not None:
            query["_id"] = {"$lt": before}
        cursor = self._workflows.find(query).sort("_id", DESCENDING).limit(limit)
        return [from_document(raw, WorkflowDocument) for raw in await cursor.to_list(None)]

    async def version_summaries(self, tenant: str, workflow_id: ObjectId) -> list[VersionSummary]:
        cursor = self._versions.find(
            {"workflow_id": workflow_id, "tenant": tenant},
            {"_id": 0, "version": 1, "created_at": 1},
        ).sort("version", ASCENDING)
        return [from_document(raw, VersionSummary) for raw in await cursor.to_list(None)]

    async def find_version(
        self, tenant: str, workflow_id: ObjectId, version: int
    ) -> VersionDocument | None:
        raw = await self._versions.find_one(
            {"workflow_id": workflow_id, "version": version, "tenant": tenant}
        )
        return from_document(raw, VersionDocument) if raw else None

    async def _insert_version(
        self,
        workflow_id: ObjectId,
        tenant: str,
        version: int,
        definition: dict[str, Any],
        now: datetime,
    ) -> None:
        document = VersionDocument(
            id=ObjectId(),
            tenant=tenant,
            workflow_id=workflow_id,
            version=version,
            definition=definition,
            created_at=now,
        )
        await self._versions.insert_one(to_document(document))
