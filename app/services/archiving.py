"""Copying each committed turn's events into the events collection, after the turn.

A commit writes a turn's events into the run document with its state (one update); the
copy into ``run_events`` happens afterwards in the background, off the turn's critical
path. This process remembers which turns it has archived, so that its next commit of the
run can trim them from the run's log; a turn it does not know to be archived stays in the
log (and is archived again, harmlessly) until one does.
"""

import asyncio
import logging
from collections import OrderedDict

from bson import ObjectId

from app.store.documents import RunDocument
from app.store.runs import RunStore

logger = logging.getLogger("tandem")
_REMEMBERED_RUNS = 100_000


class EventArchiver:
    def __init__(self, runs: RunStore) -> None:
        self._runs = runs
        self._archived_through: OrderedDict[ObjectId, int] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def archived_through(self, run_id: ObjectId) -> int:
        """The last turn of the run known here to be archived (0 if none is known)."""
        return self._archived_through.get(run_id, 0)

    def start(self, run: RunDocument) -> None:
        """Archive, in the background, every finished turn in ``run.log``."""
        turns = sorted({event.turn for event in run.log if event.turn <= run.state.turn})
        if turns:
            task = asyncio.create_task(self._archive(run, turns))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _archive(self, run: RunDocument, turns: list[int]) -> None:
        try:
            await self._runs.archive(run, turns)
        except Exception:  # the events stay in the run's log; a later turn archives them
            logger.warning("could not archive the events of run %s", run.id, exc_info=True)
            return
        known = self._archived_through
        known[run.id] = max(known.get(run.id, 0), turns[-1])
        known.move_to_end(run.id)
        if len(known) > _REMEMBERED_RUNS:
            known.popitem(last=False)
