"""Recovering, in any running server process, the turns whose server died.

A turn holds a lease on its run, renewed while it executes. When a server process dies
mid-turn (a crash, a SIGKILL, a lost machine), the lease expires; a request that touches
the run executes the turn again then, and so does this sweep, every interval, so that a
background (asynchronous) turn completes even if nobody asks for its run. Whoever takes
the expired claim first executes the turn; the others find it taken and go on.
"""

import asyncio
import contextlib
import logging

from app.clock import Clock
from app.services.executing import TurnExecutor
from app.store.runs import RunStore

logger = logging.getLogger("tandem")
RUNS_PER_SWEEP = 100


class InterruptedTurnSweeper:
    def __init__(
        self, runs: RunStore, executor: TurnExecutor, clock: Clock, interval_seconds: float
    ) -> None:
        self._runs = runs
        self._executor = executor
        self._clock = clock
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

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

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Exception:  # MongoDB unreachable for a moment: the next sweep tries again
                logger.warning("the sweep for interrupted turns failed", exc_info=True)
