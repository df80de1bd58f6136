"""Reading runs and their events, recovering first a turn whose server died.

Events are read from the run document first and the archive second (see ``RunStore``):
an event the archive gets in between is then found there. Archived turns are read newest
first in growing batches until the one holding the first wanted event, so reading what
follows an event near the end of a long run costs one query.
"""

from bson import ObjectId

from app.clock import Clock
from app.engine.state import Event
from app.errors import NotFound
from app.services.executing import TurnExecutor
from app.services.turn_model import TurnResult, as_left_by_turn
from app.store.documents import RunDocument
from app.store.runs import RunStore


class RunReader:
    def __init__(self, runs: RunStore, executor: TurnExecutor, clock: Clock) -> None:
        self._runs = runs
        self._executor = executor
        self._clock = clock

    async def read(self, tenant: str, run_id: ObjectId) -> RunDocument:
        """A run as it is now; a turn interrupted by a crash is executed again first. A run
        past its cleanup_after is not found, whether or not MongoDB has deleted it yet."""
        now = self._clock()
        run = await self._runs.find(tenant, run_id, now)
        if run is None:
            raise NotFound(f"No run {run_id}.")
        if run.claim is not None and run.claim.expires_at <= now:
            await self._executor.recover(tenant, run_id)
            run = await self._runs.find(tenant, run_id, self._clock())
            if run is None:
                raise NotFound(f"No run {run_id}.")
        return run

    async def events(self, tenant: str, run_id: ObjectId, turn: int | None) -> list[Event]:
        """Every event of a run, or of one turn, in order."""
        run = await self.read(tenant, run_id)
        if turn is None:
            return await self.events_after(run, 0)
        return await self._events_of_turn(run, turn)

    async def result_of_turn(self, tenant: str, run_id: ObjectId, turn: int) -> TurnResult | None:
        """The answer of one committed turn of a run, as the request that posted it got
        (or would have got) it: the run as that turn left it, and the turn's events. None
        while the turn has not committed; a turn interrupted by a crash is executed again
        first."""
        run = await self.read(tenant, run_id)
        if run.state.turn < turn:
            return None
        events = await self._events_of_turn(run, turn)
        return TurnResult(run=as_left_by_turn(run, turn, events), events=events)

    async def _events_of_turn(self, run: RunDocument, turn: int) -> list[Event]:
        in_log = [event for event in run.log if event.turn == turn]
        if in_log or turn > run.state.turn:
            return in_log
        return [
            event
            for found in await self._runs.archived_turns(run, [turn])
            for event in found.events
        ]

    async def events_after(self, run: RunDocument, seq: int) -> list[Event]:
        """The run's stored events after ``seq``, in order (``run`` just read)."""
        newest_archived = (run.log[0].turn if run.log else run.state.turn + 1) - 1
        archived: list[Event] = []
        last, batch = newest_archived, 1
        while last >= 1 and (not archived or archived[0].seq > seq + 1):
            first = max(1, last - batch + 1)
            found = await self._runs.archived_turns(run, list(range(first, last + 1)))
            archived[:0] = [event for document in found for event in document.events]
            if found and found[0].first_seq <= seq + 1:
                break
            last, batch = first - 1, batch * 2
        return [event for event in archived if event.seq > seq] + [
            event for event in run.log if event.seq > seq
        ]
