"""Runs and the events of their turns.

A turn's writes are guarded so that concurrent requests leave a run
consistent: ``claim_for_turn`` takes the run with one atomic
``find_one_and_update``; ``commit_turn`` writes the turn's state and events in
one update that only matches while the turn still holds its claim.
"""

import contextlib
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.engine.state import WAITING_STATUSES, Event
from app.store.database import Database
from app.store.documents import (
    Claim,
    RunDocument,
    RunProgress,
    TurnEventsDocument,
    decode_events,
    from_document,
    to_document,
    turn_events_id,
)

_WAITING = sorted(WAITING_STATUSES)  # the statuses a run takes a turn in
_TURNS_PER_QUERY = 10_000


class RunStore:
    def __init__(self, database: Database) -> None:
        self._runs = database["runs"]
        self._events = database["run_events"]

    async def ensure_indexes(self) -> None:
        await self._runs.create_index(
            [("tenant", ASCENDING), ("workflow_id", ASCENDING), ("_id", DESCENDING)]
        )

    async def insert(self, run: RunDocument) -> None:
        await self._runs.insert_one(to_document(run))

    async def find(self, tenant: str, run_id: ObjectId) -> RunDocument | None:
        raw = await self._runs.find_one({"_id": run_id, "tenant": tenant})
        return from_document(raw, RunDocument) if raw else None

    async def claim_for_turn(
        self, tenant: str, run_id: ObjectId, workflow_id: ObjectId, claim: Claim
    ) -> RunDocument | None:
        """Take a waiting run for a turn; the run as it was before, or None if it is not
        waiting, already claimed, or not this tenant's run of this workflow."""
        raw = await self._runs.find_one_and_update(
            {
                "_id": run_id,
                "tenant": tenant,
                "workflow_id": workflow_id,
                "progress.status": {"$in": _WAITING},
                "claim": None,
            },
            {"$set": {"claim": to_document(claim)}, "$inc": {"revision": 1}},
            return_document=ReturnDocument.BEFORE,
        )
        return from_document(raw, RunDocument) if raw else None

    async def take_over_interrupted(
        self, tenant: str, run_id: ObjectId, now: datetime, token: str, expires_at: datetime
    ) -> RunDocument | None:
        """Take the claim of a turn whose lease has expired (its server died), keeping its
        turn number and input so that the turn can run again; the run as it is now."""
        raw = await self._runs.find_one_and_update(
            {"_id": run_id, "tenant": tenant, "claim.expires_at": {"$lte": now}},
            {
                "$set": {"claim.token": token, "claim.expires_at": expires_at},
                "$inc": {"revision": 1, "retry_count": 1, "claim.recoveries": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return from_document(raw, RunDocument) if raw else None

    async def commit_turn(
        self, run_id: ObjectId, token: str, progress: RunProgress, next_claim: Claim | None = None
    ) -> bool:
        """Write a turn's outcome if the turn still holds its claim; False if it lost it."""
        result = await self._runs.update_one(
            {"_id": run_id, "claim.token": token},
            {
                "$set": {"progress": to_document(progress), "claim": _claim_document(next_claim)},
                "$inc": {"revision": 1},
            },
        )
        return result.matched_count == 1

    async def current_claim(self, run_id: ObjectId) -> Claim | None:
        """The claim a run holds now (a turn watching for a stop reads only that)."""
        raw = await self._runs.find_one({"_id": run_id}, {"claim": 1})
        if raw is None or raw.get("claim") is None:
            return None
        return from_document(raw["claim"], Claim)

    async def renew_claim(self, run_id: ObjectId, token: str, expires_at: datetime) -> bool:
        """Extend a turn's lease while it still holds the claim."""
        result = await self._runs.update_one(
            {"_id": run_id, "claim.token": token}, {"$set": {"claim.expires_at": expires_at}}
        )
        return result.matched_count == 1

    async def replace_progress(self, run: RunDocument, progress: RunProgress) -> bool:
        """Write ``progress`` over ``run`` if nothing changed it since it was read, releasing
        any claim (a stop does this). False if the run changed in between."""
        result = await self._runs.update_one(
            {"_id": run.id, "revision": run.revision},
            {"$set": {"progress": to_document(progress), "claim": None}, "$inc": {"revision": 1}},
        )
        return result.matched_count == 1

    async def archive_events(self, run: RunDocument) -> None:
        """Copy the events of the run's last committed turn into the events collection.
        Idempotent: the turn's document is written once, whoever gets there first."""
        if not run.progress.last_events_json:
            return
        document = TurnEventsDocument(
            id=turn_events_id(run.id, run.progress.turn),
            tenant=run.tenant,
            run_id=run.id,
            turn=run.progress.turn,
            events_json=run.progress.last_events_json,
        )
        with contextlib.suppress(DuplicateKeyError):
            await self._events.insert_one(to_document(document))

    async def archived_events(self, run: RunDocument, turn: int | None) -> list[Event]:
        """The archived events of a run (every turn, or one), in order."""
        # Every id is named, so that reading one run costs the same however many others are
        # stored: MongoDB looks each up in the _id index, the embedded store in its dict.
        turns = [turn] if turn is not None else range(1, run.progress.turn + 1)
        events: list[Event] = []
        for first in range(0, len(turns), _TURNS_PER_QUERY):  # a query stays well under 16 MB
            ids = [
                turn_events_id(run.id, number) for number in turns[first : first + _TURNS_PER_QUERY]
            ]
            cursor = self._events.find({"_id": {"$in": ids}, "tenant": run.tenant})
            for raw in await cursor.sort("_id", ASCENDING).to_list(None):
                events += decode_events(from_document(raw, TurnEventsDocument).events_json)
        return events


def _claim_document(claim: Claim | None) -> dict[str, Any] | None:
    return to_document(claim) if claim is not None else None
