"""Runs and their event logs.

A turn's writes are guarded so that concurrent requests leave a run consistent:
``claim_for_turn`` takes the run with one atomic ``find_one_and_update``; while the
turn executes, ``record_progress`` appends the events it has emitted so far, and
``commit_turn`` writes the turn's state and last events in one update; both only match
while the turn still holds its claim. A stop replaces the run only if nothing changed it
since it was read (``revision``).

A run's events live in two places, and each event is always in at least one: the run
document's ``log`` holds the latest ones (written with the state, in the same update),
and ``run_events`` holds every archived turn as one document. A turn is archived after
its commit, off the turn's critical path; a later commit trims the archived turns from
the log (``TurnExecutor``). Readers read the run document first and the archive second,
so that an event archived in between is found in the archive.

A listing (``list_page``) reads a summary of each run (``RUN_SUMMARY_FIELDS``, never
variables or events), newest first, from an index that its filters and the order share.

Retention: a run's ``cleanup_after`` is set when it is inserted and renewed by the claim
and the commit of each turn (the writes a turn makes anyway). A TTL index deletes the run
once it has passed; MongoDB's TTL monitor runs every 60 s and may lag, so every query
here that a request makes also treats a run past it as gone. Archived events carry the
run's ``cleanup_after`` of when they were archived; ``expire_events`` deletes them once
their run has gone, and renews them while it lives (see there).
"""

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.engine.state import WAITING_STATUSES, Event, RunStatus
from app.store.database import Database
from app.store.documents import (
    RUN_SUMMARY_FIELDS,
    Claim,
    CommittedState,
    LiveText,
    RunDocument,
    RunSummaryDocument,
    TurnEventsDocument,
    encode_log,
    from_document,
    to_document,
    turn_events_id,
)

_WAITING = sorted(WAITING_STATUSES)  # the statuses a run takes a turn in
_TURNS_PER_QUERY = 1_000  # archived turns read in one query (well under 16 MB)
_DUPLICATE_KEY = 11000


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a listing shows; None matches any."""

    workflow_id: ObjectId | None = None
    # ``running``: a turn is executing (the run has a claim); any other: the status the
    # last committed turn left, with no turn executing.
    status: RunStatus | None = None
    created_after: datetime | None = None  # created at or after
    created_before: datetime | None = None  # created strictly before
    # Only runs not yet past their cleanup_after at this moment (None: any).
    alive_at: datetime | None = None


class RunStore:
    def __init__(self, database: Database) -> None:
        self._runs = database["runs"]
        self._events = database["run_events"]

    async def ensure_indexes(self) -> None:
        # Listing (``list_page``): each filter the API allows is equalities on a prefix of
        # one of these, then the range on _id that the cursor and the times set, in the
        # order of the sort; so a page reads about as many index keys and runs as it shows.
        for equalities in ([], ["workflow_id"], ["state.status"], ["workflow_id", "state.status"]):
            await self._runs.create_index(
                [("tenant", ASCENDING), *((f, ASCENDING) for f in equalities), ("_id", DESCENDING)]
            )
        # Runs with a turn executing now: few at any time, so the workflow is matched in
        # this index's keys rather than given one of its own. A query uses a partial index
        # only when it names the index's filter: ``_listing_query`` does, word for word.
        await self._runs.create_index(
            [("tenant", ASCENDING), ("_id", DESCENDING), ("workflow_id", ASCENDING)],
            partialFilterExpression=_RUNNING,
            name="tenant_running_runs",
        )
        # The sweep looks for expired leases; runs without a claim are not in this index.
        await self._runs.create_index([("claim.expires_at", ASCENDING)], sparse=True)
        # What users query a run's archived events by.
        await self._events.create_index([("run_id", ASCENDING), ("turn", ASCENDING)])
        # Retention: MongoDB deletes a run once its cleanup_after has passed. Its events
        # have no TTL of their own (they would go before a run that later turns renewed):
        # ``expire_events`` finds those due by this index and asks their runs.
        await self._runs.create_index([("cleanup_after", ASCENDING)], expireAfterSeconds=0)
        await self._events.create_index([("cleanup_after", ASCENDING)])

    async def list_page(
        self, tenant: str, run_filter: RunFilter, limit: int, before: ObjectId | None
    ) -> list[RunSummaryDocument]:
        """Up to ``limit`` of the tenant's runs that ``run_filter`` matches, newest (highest
        id) first; ``before`` is the cursor: the id of the last run already seen."""
        query = _listing_query(tenant, run_filter, before)
        if query is None:
            return []
        cursor = self._runs.find(query, RUN_SUMMARY_FIELDS).sort("_id", DESCENDING).limit(limit)
        return [from_document(raw, RunSummaryDocument) for raw in await cursor.to_list(None)]

    async def insert(self, run: RunDocument) -> None:
        await self._runs.insert_one(to_document(run))

    async def find(self, tenant: str, run_id: ObjectId, now: datetime) -> RunDocument | None:
        """The tenant's run, or None: also when it is past its cleanup_after at ``now``,
        deleted or not yet (MongoDB's TTL monitor is late by up to a minute or more)."""
        raw = await self._runs.find_one({"_id": run_id, "tenant": tenant})
        if raw is None:
            return None
        run = from_document(raw, RunDocument)
        return None if run.expired(now) else run

    async def claim_for_turn(
        self,
        tenant: str,
        run_id: ObjectId,
        workflow_id: ObjectId,
        claim: Claim,
        *,
        cleanup_after: datetime | None,
    ) -> RunDocument | None:
        """Take a waiting run for a turn, renewing its ``cleanup_after`` (so that it cannot
        expire while the turn executes); the run as it was before, or None if it is not
        waiting, already claimed, past its cleanup_after (at the claim's start), or not
        this tenant's run of this workflow."""
        raw = await self._runs.find_one_and_update(
            {
                "_id": run_id,
                "tenant": tenant,
                "workflow_id": workflow_id,
                "state.status": {"$in": _WAITING},
                "claim": None,
                **_not_expired(claim.started_at),
            },
            {
                "$set": {"claim": to_document(claim), "cleanup_after": cleanup_after},
                "$inc": {"revision": 1},
            },
            return_document=ReturnDocument.BEFORE,
        )
        return from_document(raw, RunDocument) if raw else None

    async def take_over_interrupted(
        self, tenant: str, run_id: ObjectId, now: datetime, token: str, expires_at: datetime
    ) -> RunDocument | None:
        """Take the claim of a turn whose lease has expired (its server died), keeping its
        input and the events it had stored, so that the turn can run again; the run as it
        is now, or None if the lease has not expired (or someone else took it first)."""
        raw = await self._runs.find_one_and_update(
            {
                "_id": run_id,
                "tenant": tenant,
                "claim.expires_at": {"$lte": now},
                **_not_expired(now),
            },
            {
                "$set": {"claim.token": token, "claim.expires_at": expires_at},
                "$inc": {"revision": 1, "retry_count": 1, "claim.recoveries": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return from_document(raw, RunDocument) if raw else None

    async def expired_claims(self, now: datetime, limit: int) -> list[tuple[str, ObjectId]]:
        """(tenant, run id) of runs whose turn's lease has expired: their server died."""
        cursor = self._runs.find(
            {"claim.expires_at": {"$lte": now}, **_not_expired(now)}, {"tenant": 1}
        ).limit(limit)
        return [(raw["tenant"], raw["_id"]) for raw in await cursor.to_list(None)]

    async def record_progress(
        self,
        run_id: ObjectId,
        token: str,
        *,
        log: list[Event] | None,
        current_node: str | None,
        visited_nodes: list[str],
        live_text: LiveText | None,
        expires_at: datetime,
        log_json: str | None = None,
    ) -> bool:
        """Store how far a turn in flight has got (``log``: the run's log with the events it
        has emitted so far, or None to leave it; its node; its LLM text so far) and renew
        its lease, if it still holds its claim; False if it lost it (a stop, or a recovery
        past its lease)."""
        update: dict[str, Any] = {
            "$set": {
                "claim.current_node": current_node,
                "claim.visited_nodes": visited_nodes,
                "claim.live_text": to_document(live_text) if live_text is not None else None,
                "claim.expires_at": expires_at,
            },
            "$inc": {"revision": 1},
        }
        if log is not None:
            update["$set"]["log_json"] = encode_log(log) if log_json is None else log_json
        result = await self._runs.update_one({"_id": run_id, "claim.token": token}, update)
        return result.matched_count == 1

    async def claim_unchanged(
        self,
        run_id: ObjectId,
        revision: int,
        claim: Claim,
        *,
        log: list[Event] | None,
        cleanup_after: datetime | None,
        log_json: str | None = None,
    ) -> bool:
        """Claim, for a turn already executing, a run read at ``revision`` (a turn of a
        run this process had cached, see ``TurnExecutor``), storing its progress so far as
        ``record_progress`` does; False if anything wrote the run since (a stop, a turn
        elsewhere), or it has gone."""
        update: dict[str, Any] = {
            "$set": {"claim": to_document(claim), "cleanup_after": cleanup_after},
            "$inc": {"revision": 1},
        }
        if log is not None:
            update["$set"]["log_json"] = encode_log(log) if log_json is None else log_json
        result = await self._runs.update_one(_unchanged(run_id, revision), update)
        return result.matched_count == 1

    async def commit_turn(
        self,
        run_id: ObjectId,
        token: str,
        *,
        state: CommittedState,
        log: list[Event],
        visited_nodes: list[str],
        completed_at: datetime | None,
        cleanup_after: datetime | None,
        log_json: str | None = None,
    ) -> bool:
        """Write a turn's outcome and release its claim if the turn still holds it; False
        if it lost it. ``log`` is the run's whole log after the turn (``log_json``: as
        ``encode_log`` writes it, when the caller has it already)."""
        return await self._commit(
            {"_id": run_id, "claim.token": token},
            state,
            log,
            visited_nodes,
            completed_at,
            cleanup_after,
            log_json,
        )

    async def commit_unchanged(
        self,
        run_id: ObjectId,
        revision: int,
        *,
        state: CommittedState,
        log: list[Event],
        visited_nodes: list[str],
        completed_at: datetime | None,
        cleanup_after: datetime | None,
        log_json: str | None = None,
    ) -> bool:
        """Write the outcome of a turn that never claimed the run, read at ``revision``
        (see ``claim_unchanged``), if nothing wrote the run since; False otherwise."""
        return await self._commit(
            _unchanged(run_id, revision),
            state,
            log,
            visited_nodes,
            completed_at,
            cleanup_after,
            log_json,
        )

    async def _commit(
        self,
        query: dict[str, Any],
        state: CommittedState,
        log: list[Event],
        visited_nodes: list[str],
        completed_at: datetime | None,
        cleanup_after: datetime | None,
        log_json: str | None,
    ) -> bool:
        result = await self._runs.update_one(
            query,
            {
                "$set": {
                    "state": to_document(state),
                    "claim": None,
                    "log_json": encode_log(log) if log_json is None else log_json,
                    "visited_nodes": visited_nodes,
                    "completed_at": completed_at,
                    "cleanup_after": cleanup_after,
                },
                "$inc": {"revision": 1},
            },
        )
        return result.matched_count == 1

    async def replace_state(
        self,
        run: RunDocument,
        state: CommittedState,
        log: list[Event],
        completed_at: datetime,
        cleanup_after: datetime | None,
    ) -> bool:
        """Write ``state`` and ``log`` over ``run`` if nothing changed it since it was read,
        releasing any claim (a stop does this). False if the run changed in between."""
        result = await self._runs.update_one(
            {"_id": run.id, "revision": run.revision},
            {
                "$set": {
                    "state": to_document(state),
                    "claim": None,
                    "log_json": encode_log(log),
                    "completed_at": completed_at,
                    "cleanup_after": cleanup_after,
                },
                "$inc": {"revision": 1},
            },
        )
        return result.matched_count == 1

    async def archive(self, runs: Iterable[tuple[RunDocument, Iterable[int]]]) -> None:
        """Copy the given turns of each run's log into the events collection, one document
        a turn, all in one insert. Idempotent: a turn's document is written once, whoever
        gets there first."""
        documents = []
        for run, turns in runs:
            for turn in turns:
                events = [event for event in run.log if event.turn == turn]
                if not events:
                    continue
                document = TurnEventsDocument(
                    id=turn_events_id(run.id, turn),
                    tenant=run.tenant,
                    run_id=run.id,
                    turn=turn,
                    first_seq=events[0].seq,
                    last_seq=events[-1].seq,
                    at=events[0].at,
                    events=events,
                    cleanup_after=run.cleanup_after,
                )
                documents.append(to_document(document))
        if len(documents) == 1:
            with contextlib.suppress(DuplicateKeyError):
                await self._events.insert_one(documents[0])
        elif documents:
            try:
                await self._events.insert_many(documents, ordered=False)
            except BulkWriteError as error:
                if any(e.get("code") != _DUPLICATE_KEY for e in error.details["writeErrors"]):
                    raise

    async def expire_events(self, now: datetime, limit: int) -> int:
        """Delete the archived events of runs that have gone, and renew those of runs that
        live on; how many turns' documents were due (at most ``limit``).

        An archived turn carries its run's cleanup_after of when it was archived. Once
        that has passed, its run has either gone (deleted, or past its cleanup_after: as
        good as deleted, and never renewed again) and the run's events are deleted, or it
        was renewed by later turns, and its due events get its current cleanup_after.
        So events never go before their run, and each is rewritten at most once per
        retention period while the run lives, by this sweep rather than by every turn.
        """
        due = self._events.find({"cleanup_after": {"$lte": now}}, {"run_id": 1})
        found = await due.limit(limit).to_list(None)
        run_ids = list(dict.fromkeys(raw["run_id"] for raw in found))
        if not run_ids:
            return 0
        living = self._runs.find({"_id": {"$in": run_ids}}, {"cleanup_after": 1})
        renewals: dict[ObjectId, datetime | None] = {}
        for raw in await living.to_list(None):
            cleanup_after = raw.get("cleanup_after")
            if cleanup_after is None or cleanup_after > now:
                renewals[raw["_id"]] = cleanup_after
        gone = [run_id for run_id in run_ids if run_id not in renewals]
        if gone:
            await self._events.delete_many({"run_id": {"$in": gone}})
        for run_id, cleanup_after in renewals.items():
            await self._events.update_many(
                {"run_id": run_id, "cleanup_after": {"$lte": now}},
                {"$set": {"cleanup_after": cleanup_after}},
            )
        return len(found)

    async def archived_turns(self, run: RunDocument, turns: list[int]) -> list[TurnEventsDocument]:
        """The archived documents of some of a run's turns, in turn order."""
        # Every id is named, so that reading one run costs the same however many others are
        # stored: MongoDB looks each up in the _id index, the embedded store in its dict.
        found: list[TurnEventsDocument] = []
        for first in range(0, len(turns), _TURNS_PER_QUERY):
            ids = [turn_events_id(run.id, turn) for turn in turns[first : first + _TURNS_PER_QUERY]]
            cursor = self._events.find({"_id": {"$in": ids}, "tenant": run.tenant})
            for raw in await cursor.sort("_id", ASCENDING).to_list(None):
                found.append(from_document(raw, TurnEventsDocument))
        return found


# A run has a turn executing when its claim is a document (it is null between turns).
_RUNNING = {"claim": {"$type": "object"}}


def _unchanged(run_id: ObjectId, revision: int) -> dict[str, Any]:
    """The run as read at ``revision`` with no turn claiming it: every write to a run
    increments its revision, so the run is exactly as read."""
    return {"_id": run_id, "revision": revision, "claim": None}


def _not_expired(now: datetime) -> dict[str, Any]:
    """Runs not past their cleanup_after at ``now``: kept forever (null, or stored before
    retention existed: absent), or due later."""
    return {"cleanup_after": {"$not": {"$lte": now}}}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
# The times BSON and Python can both hold, in milliseconds since the epoch.
_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MILLISECOND
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MILLISECOND
# An ObjectId starts with the second it was made, as 32 unsigned bits.
_MAX_ID_SECOND = 2**32 - 1
# A run's id is made just after its created_at, on the same clock (TurnExecutor): it holds
# the second of created_at, or the next one across a second's edge. Bounds on ids derived
# from times leave this much more each way (for a clock stepped between the two readings).
_ID_SLACK_SECONDS = 1


def _listing_query(
    tenant: str, run_filter: RunFilter, before: ObjectId | None
) -> dict[str, Any] | None:
    """The query of a listing, or None when no run can match.

    Creation times become bounds on ``_id`` as well, so that they narrow the index range
    that every listing index ends with; ``created_at`` (to the millisecond) decides.
    """
    query: dict[str, Any] = {"tenant": tenant}
    if run_filter.workflow_id is not None:
        query["workflow_id"] = run_filter.workflow_id
    if run_filter.status == RunStatus.RUNNING:
        query.update(_RUNNING)
    elif run_filter.status is not None:
        query["state.status"] = run_filter.status.value
        query["claim"] = None
    created: dict[str, datetime] = {}
    ids: dict[str, ObjectId] = {}
    if run_filter.created_after is not None:
        after = _ceiling_ms(run_filter.created_after)
        if after > _MAX_MS:
            return None
        if after > _MIN_MS:
            created["$gte"] = _EPOCH + after * _MILLISECOND
            ids["$gte"] = _first_id_of_second(after // 1000 - _ID_SLACK_SECONDS)
    if run_filter.created_before is not None:
        until = _ceiling_ms(run_filter.created_before)
        if until <= _MIN_MS:
            return None
        if until <= _MAX_MS:
            created["$lt"] = _EPOCH + until * _MILLISECOND
            # The last created_at that matches is until - 1 ms; its id holds that second,
            # or the next one: ids made before the second after that match.
            id_until = (until - 1) // 1000 + 2 + _ID_SLACK_SECONDS
            if id_until <= _MAX_ID_SECOND:
                ids["$lt"] = _first_id_of_second(id_until)
    if before is not None:
        ids["$lt"] = min(ids["$lt"], before) if "$lt" in ids else before
    if ids:
        query["_id"] = ids
    if created:
        query["created_at"] = created
    if run_filter.alive_at is not None:
        # Checked on the runs the index finds: past their cleanup_after, they are deleted
        # within a minute or so, so few are ever passed over.
        query.update(_not_expired(run_filter.alive_at))
    return query


def _ceiling_ms(moment: datetime) -> int:
    """``moment`` in milliseconds since the epoch, rounded up: MongoDB keeps times to the
    millisecond, so ``created_at >= t`` and ``created_at < t`` mean the same with ``t``
    rounded up. Computed on integers, so that no time Python can hold overflows."""
    return -(-(moment - _EPOCH) // _MILLISECOND)


def _first_id_of_second(second: int) -> ObjectId:
    """The lowest ObjectId made in ``second`` (since the epoch), within what ids can hold."""
    return ObjectId(min(max(second, 0), _MAX_ID_SECOND).to_bytes(4, "big") + bytes(8))
