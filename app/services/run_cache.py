"""The runs whose last turn this process committed, as it wrote them.

A later turn of such a run, sent to this process again, starts from this copy rather
than from a claim: one round trip less (see ``TurnExecutor``). The copy is only a guess
at what is stored: the turn's commit is conditional on the run's ``revision`` being the
one copied, so a stale copy (another process, a stop, an expiry changed the run) costs a
turn executed again from the store, never a wrong write.

Bounded by what the runs take stored (their state and log, as measured for
``max_stored_bytes``), least recently committed first out.

Behind a load balancer that spreads a run's turns over processes, copies are mostly
stale, and each stale one costs a failed write and an execution more than a claim
would. So copies are used only while few of those used lately were stale (at most one
in ``_STALE_ONE_IN``); otherwise one eligible turn in ``_PROBE_EVERY`` still uses its
copy, to notice when that changes (sticky routing turned on, a replica gone).
"""

from collections import OrderedDict

from bson import ObjectId

from app.store.documents import RunDocument

_STALE_ONE_IN = 8
_PROBE_EVERY = 16
_MEMORY = 64  # copies used that the stale share is taken over (halved past it)


class RunCache:
    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        # A run larger than this is not kept: a few large runs would push out many others.
        self._max_entry_bytes = max_bytes // 16
        self._runs: OrderedDict[ObjectId, tuple[RunDocument, int]] = OrderedDict()
        self._bytes = 0
        self._used = 0
        self._stale = 0
        self._passed_over = 0

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

    def worth_using(self) -> bool:
        """Whether a turn should use its run's copy, given how many used lately were
        stale (see the module's docstring)."""
        if self._stale * _STALE_ONE_IN <= self._used:
            return True
        self._passed_over += 1
        return self._passed_over % _PROBE_EVERY == 0

    def used(self, *, stale: bool) -> None:
        """Tell how a copy used for a turn turned out."""
        self._used += 1
        self._stale += stale
        if self._used >= _MEMORY:
            self._used //= 2
            self._stale //= 2

    def __len__(self) -> int:
        return len(self._runs)
