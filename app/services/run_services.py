"""The services of runs, wired together: executing turns, cancelling, reading, listing,
following, idempotent turns (Idempotency-Key), the sweep for turns whose server died and
the one for expired events. Handlers take this one object (one dependency a handler:
Litestar resolves two or more in a task group, a cost paid on every turn)."""

from dataclasses import dataclass

from app.clock import Clock
from app.engine.llm import LlmClient
from app.services.archiving import EventArchiver
from app.services.cancelling import RunCanceller
from app.services.executing import TurnExecutor
from app.services.following import RunFollower
from app.services.idempotency import IdempotentTurns
from app.services.listing import RunLister
from app.services.live import LiveRuns
from app.services.reading import RunReader
from app.services.retention import ExpiredEventsSweeper
from app.services.run_cache import RunCache
from app.services.sweeping import InterruptedTurnSweeper
from app.services.turn_model import TurnSettings
from app.services.workflows import WorkflowService
from app.store.idempotency import IdempotencyStore
from app.store.runs import RunStore
from app.telemetry.turns import TurnTelemetry


@dataclass(frozen=True, slots=True)
class RunServices:
    executor: TurnExecutor
    canceller: RunCanceller
    reader: RunReader
    lister: RunLister
    follower: RunFollower
    sweeper: InterruptedTurnSweeper
    keys: IdempotentTurns
    events_sweeper: ExpiredEventsSweeper

    @classmethod
    def build(
        cls,
        runs: RunStore,
        workflows: WorkflowService,
        clock: Clock,
        settings: TurnSettings,
        llm: LlmClient | None,
        sweep_interval_seconds: float,
        keys: IdempotencyStore,
        telemetry: TurnTelemetry | None = None,
    ) -> "RunServices":
        live = LiveRuns()
        archiver = EventArchiver(runs)
        cache = RunCache(settings.run_cache_bytes) if settings.run_cache_bytes > 0 else None
        canceller = RunCanceller(runs, live, archiver, clock, settings, telemetry, cache)
        executor = TurnExecutor(
            runs,
            workflows,
            live,
            archiver,
            canceller,
            clock,
            settings,
            llm,
            keys,
            telemetry,
            cache,
        )
        reader = RunReader(runs, executor, clock)
        poll_seconds = settings.claim_poll.total_seconds()
        return cls(
            executor=executor,
            canceller=canceller,
            reader=reader,
            lister=RunLister(runs, workflows, clock),
            follower=RunFollower(
                reader, live, poll_seconds, settings.stream_keepalive.total_seconds()
            ),
            sweeper=InterruptedTurnSweeper(runs, executor, clock, sweep_interval_seconds),
            keys=IdempotentTurns(
                keys,
                reader,
                clock,
                settings.idempotency_lifetime,
                settings.lease,
            ),
            events_sweeper=ExpiredEventsSweeper(runs, clock, sweep_interval_seconds),
        )

    async def close(self) -> None:
        """Stop sweeping and wait for the turns and archives still in the background."""
        await self.sweeper.stop()
        await self.events_sweeper.stop()
        await self.executor.drain()
        await self.keys.drain()
