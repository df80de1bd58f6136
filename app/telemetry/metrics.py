"""Prometheus metrics of one Tandem process, served at ``/metrics``.

Each application has a registry of its own (not prometheus_client's global one), so
that several apps in one process (tests) count apart. Counters and histograms are per
process, as Prometheus expects: it sums them over the processes it scrapes.
"""

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Turns last from milliseconds (no LLM) to minutes (several LLM calls).
_TURN_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LLM_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LAG_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
LOOP_PROBE_SECONDS = 0.5
# Workflow ids and model names come from tenants: each label keeps this many distinct
# values, and counts any further one as "other", so that no tenant can grow the
# registry (and every scrape) without bound.
MAX_LABEL_VALUES = 500
MAX_LABEL_LENGTH = 64
OTHER = "other"


class BoundedLabel:
    """The values one label takes, at most ``limit`` distinct ones."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = str(value)[:MAX_LABEL_LENGTH]
        if text in self._seen:
            return text
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(text)
        return text


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.workflow_label = BoundedLabel()
        self.model_label = BoundedLabel()
        r = self.registry
        self.turns = Counter(
            "tandem_turns",
            "Turns executed, by workflow and by the status the run was left in.",
            ["workflow_id", "status"],
            registry=r,
        )
        self.turn_seconds = Histogram(
            "tandem_turn_duration_seconds",
            "How long a turn took to execute and commit, by workflow.",
            ["workflow_id"],
            buckets=_TURN_SECONDS,
            registry=r,
        )
        self.runs_started = Counter("tandem_runs_started", "Runs started.", registry=r)
        self.runs_ended = Counter(
            "tandem_runs_ended",
            "Runs that reached a terminal status (completed, failed, cancelled, aborted).",
            ["status"],
            registry=r,
        )
        self.turns_executing = Gauge(
            "tandem_turns_executing", "Turns executing in this process now.", registry=r
        )
        self.llm_seconds = Histogram(
            "tandem_llm_call_duration_seconds",
            "How long an LLM call took, by model and outcome (ok or error).",
            ["model", "outcome"],
            buckets=_LLM_SECONDS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "tandem_llm_tokens",
            "Tokens the LLM provider reported, by model and kind (prompt, completion, total).",
            ["model", "kind"],
            registry=r,
        )
        self.conflicts = Counter(
            "tandem_conflicts",
            "Requests answered 409, by error code (turn_in_progress, run_terminal, ...).",
            ["code"],
            registry=r,
        )
        self.cancellations = Counter(
            "tandem_cancellations",
            "Runs cancelled (a stop command, DELETE or POST cancel).",
            registry=r,
        )
        self.recoveries = Counter(
            "tandem_turn_recoveries",
            "Turns executed again after the process executing them died.",
            registry=r,
        )
        self.loop_lag = Histogram(
            "tandem_event_loop_lag_seconds",
            f"How late the event loop ran a timer due every {LOOP_PROBE_SECONDS} s: time "
            "during which this process answered nobody.",
            buckets=_LAG_SECONDS,
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def watch_event_loop(self) -> None:
        """Measure the event loop's lag until cancelled."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                due = loop.time() + LOOP_PROBE_SECONDS
                await asyncio.sleep(LOOP_PROBE_SECONDS)
                self.loop_lag.observe(max(0.0, loop.time() - due))
