"""The runs whose last turn this process committed, as it wrote them.

A later turn of such a run, sent to this process again, starts from this copy rather
than from a claim: one round trip less (see ``TurnExecutor``). The copy is only a guess
at what is stored: the turn's commit is conditional on the run's ``revision`` being the
one copied, so a stale copy (another process, a stop, an expiry changed the run) costs a
turn executed again from the store, never a wrong write.

Bounded by what the runs take stored (their state and log, as measured for
``max_stored_bytes``), least recently committed first out.
"""

from collections import OrderedDict

from bson import ObjectId

from app.store.documents import RunDocument


class RunCache:
    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        # A run larger than this is not kept: a few large runs would push out many others.
        self._max_entry_bytes = max_bytes // 16
        self._runs: OrderedDict[ObjectId, tuple[RunDocument, int]] = OrderedDict()
        self._bytes = 0

    def put(self, run: RunDocument, stored_bytes: int) -> None:
        """Keep ``run`` as just written (``stored_bytes``: what it takes stored)."""
        self.drop(run.id)
        if stored_bytes > self._max_entry_bytes:
            return
        self._runs[run.id] = (run, stored_bytes)
        self._bytes += stored_bytes
        while self._bytes > self._max_bytes:
            _, (_, evicted_bytes) = self._runs.popitem(last=False)
            self._bytes -= evicted_bytes

    def peek(self, run_id: ObjectId) -> RunDocument | None:
        entry = self._runs.get(run_id)
        return entry[0] if entry is not None else None

    def drop(self, run_id: ObjectId) -> None:
        entry = self._runs.pop(run_id, None)
        if entry is not None:
            self._bytes -= entry[1]

    def __len__(self) -> int:
        return len(self._runs)
