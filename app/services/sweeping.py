"""Recovering, in any running server process, the turns whose server died.

A turn holds a lease on its run, renewed while it executes. When a server process dies
mid-turn (a crash, a SIGKILL, a lost machine), the lease expires; a request that touches
the run executes the turn again then, and so does this sweep, every interval, so that a
background (asynchronous) turn completes even if nobody asks for its run. Whoever takes
the expired claim first executes the turn; the others find it taken and go on.
"""

import asyncio
import logging

from app.clock import Clock
from app.services.executing import TurnExecutor
from app.services.periodic import PeriodicSweep
from app.store.runs import RunStore

logger = logging.getLogger("tandem")
RUNS_PER_SWEEP = 100


class InterruptedTurnSweeper(PeriodicSweep):
    what = "interrupted turns"

    def __init__(
        self, runs: RunStore, executor: TurnExecutor, clock: Clock, interval_seconds: float
    ) -> None:
        super().__init__(interval_seconds)
        self._runs = runs
        self._executor = executor
        self._clock = clock

    async def sweep(self) -> int:
        """Execute again the turns whose lease has expired; how many were found."""
        expired = await self._runs.expired_claims(self._clock(), RUNS_PER_SWEEP)
        outcomes = await asyncio.gather(
            *(self._executor.recover(tenant, run_id) for tenant, run_id in expired),
            return_exceptions=True,
        )
        for (_, run_id), outcome in zip(expired, outcomes, strict=True):
            if isinstance(outcome, Exception):
                logger.error("could not recover run %s", run_id, exc_info=outcome)
        return len(expired)
