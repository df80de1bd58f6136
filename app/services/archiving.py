"""Copying each committed turn's events into the events collection, after the turn.

A commit writes a turn's events into the run document with its state (one update); the
copy into ``run_events`` happens afterwards in the background, off the turn's critical
path, and in batches: an insert waits a moment (``BATCH_WINDOW``) for the turns that
commit meanwhile, of any run, and so do the turns committed while one insert is in
flight, so that under load a turn costs a fraction of a round trip to archive (a round
trip costs PyMongo more CPU than a whole HTTP request costs Litestar). The wait is
short, so that ``run_events`` follows the runs closely and a run's log (which holds its
turns until they are archived) stays short; it ends early once a run has
``MAX_WAITING_TURNS`` turns waiting, and when the archiver is drained. This
process remembers which turns it has archived, so that its next commit of the run can
trim them from the run's log; a turn it does not know to be archived stays in the log
(and is archived again, harmlessly) until one does. A turn whose insert is in flight is
not queued again meanwhile: under load, a run's next turn often commits before the
previous turn's insert is answered, and inserting its events twice would cost the insert
and a duplicate-key error each time.
"""

import asyncio
import contextlib
import logging
from collections import OrderedDict

from bson import ObjectId

from app.store.documents import RunDocument
from app.store.runs import RunStore

logger = logging.getLogger("tandem")
_REMEMBERED_RUNS = 100_000
BATCH_WINDOW = 0.02  # seconds
MAX_WAITING_TURNS = 8


class EventArchiver:
    def __init__(self, runs: RunStore, window: float = BATCH_WINDOW) -> None:
        self._runs = runs
        self._window = window
        self._archived_through: OrderedDict[ObjectId, int] = OrderedDict()
        # The latest committed state of each run waiting for the next insert: it holds
        # every turn of the run not archived yet.
        self._waiting: dict[ObjectId, tuple[RunDocument, list[int]]] = {}
        # The last turn of each run whose insert is in flight.
        self._in_flight: dict[ObjectId, int] = {}
        self._inserting: asyncio.Task[None] | None = None
        # Set to end the wait for more turns at once.
        self._hurry = asyncio.Event()
        self._draining = False

    def archived_through(self, run_id: ObjectId) -> int:
        """The last turn of the run known here to be archived (0 if none is known)."""
        return self._archived_through.get(run_id, 0)

    def start(self, run: RunDocument) -> None:
        """Archive, in the background, every finished turn in ``run.log``."""
        turns = self._turns_to_archive(run)
        if not turns:
            return
        self._waiting[run.id] = (run, turns)
        if len(turns) >= MAX_WAITING_TURNS:
            self._hurry.set()
        if self._inserting is None:
            self._inserting = asyncio.create_task(self._insert_batches())

    def _turns_to_archive(self, run: RunDocument) -> list[int]:
        """The finished turns in ``run.log`` neither known archived nor being inserted."""
        after = max(self.archived_through(run.id), self._in_flight.get(run.id, 0))
        return sorted({event.turn for event in run.log if after < event.turn <= run.state.turn})

    async def drain(self) -> None:
        """Wait until every turn started is archived (or its insert failed), at once."""
        self._draining = True
        self._hurry.set()
        try:
            while self._inserting is not None:
                await asyncio.shield(self._inserting)
        finally:
            self._draining = False
            self._hurry.clear()

    async def _insert_batches(self) -> None:
        try:
            while self._waiting:
                if self._window and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), self._window)
                if not self._draining:
                    self._hurry.clear()
                await asyncio.sleep(0)  # the turns finishing now join this batch
                batch, self._waiting = self._waiting, {}
                for run_id, (_, turns) in batch.items():
                    self._in_flight[run_id] = turns[-1]
                try:
                    await self._runs.archive(batch.values())
                except Exception:  # the events stay in the runs' logs: a later turn retries
                    logger.warning(
                        "could not archive the events of %d runs", len(batch), exc_info=True
                    )
                    self._forget_in_flight(batch)
                    for run_id in batch.keys() & self._waiting.keys():
                        # A later commit of the run, queued meanwhile without these turns,
                        # holds them in its log (they were not known archived): take them.
                        run, _ = self._waiting[run_id]
                        self._waiting[run_id] = (run, self._turns_to_archive(run))
                else:
                    self._forget_in_flight(batch)
                    for run_id, (_, turns) in batch.items():
                        self._remember(run_id, turns[-1])
        finally:
            self._inserting = None

    def _forget_in_flight(self, batch: dict[ObjectId, tuple[RunDocument, list[int]]]) -> None:
        for run_id in batch:
            del self._in_flight[run_id]

    def _remember(self, run_id: ObjectId, turn: int) -> None:
        known = self._archived_through
        known[run_id] = max(known.get(run_id, 0), turn)
        known.move_to_end(run_id)
        if len(known) > _REMEMBERED_RUNS:
            known.popitem(last=False)
