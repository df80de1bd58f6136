"""What a turn, a stop and a recovery tell the operator: one log line and the metrics."""

import logging
from typing import Any

from app.engine.state import TERMINAL_STATUSES, RunStatus
from app.telemetry.metrics import Metrics

logger = logging.getLogger("tandem.turns")


class TurnTelemetry:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        # The labelled series a turn updates, by (workflow label, status): looking them up
        # through ``labels`` costs a turn more than updating them. Bounded as the labels.
        self._series: dict[tuple[str, str], tuple[Any, Any]] = {}

    def turn_started(self, first: bool) -> None:
        if self._metrics is not None:
            self._metrics.turns_executing.inc()
            if first:
                self._metrics.runs_started.inc()

    def turn_ended(
        self,
        *,
        tenant: str,
        run_id: Any,
        workflow_id: Any,
        turn: int,
        status: RunStatus | None,
        seconds: float,
        failure: dict[str, Any] | None,
    ) -> None:
        """A turn executed here ended (``status``: the run's after it; None when it ended
        without an answer: its request gone, or its claim lost to a recovery elsewhere).
        ``failure``: the data of its ``run_failed``, when it failed the run."""
        if status is None:
            if self._metrics is not None:
                self._metrics.turns_executing.dec()
            return
        level = logging.WARNING if failure is not None else logging.INFO
        if logger.isEnabledFor(level):
            fields = {
                "run_id": str(run_id),
                "workflow_id": str(workflow_id),
                "turn": turn,
                "tenant": tenant,
                "status": status.value,
                "duration_ms": round(seconds * 1000, 1),
            }
            if failure is not None:
                logger.warning(
                    "run failed at node %s: %s",
                    failure.get("node_id"),
                    failure.get("error"),
                    extra=fields,
                )
            else:
                logger.info("turn executed", extra=fields)
        if self._metrics is not None:
            self._metrics.turns_executing.dec()
            workflow = self._metrics.workflow_label(workflow_id)
            series = self._series.get((workflow, status.value))
            if series is None:
                series = (
                    self._metrics.turns.labels(workflow, status.value),
                    self._metrics.turn_seconds.labels(workflow),
                )
                self._series[(workflow, status.value)] = series
            turns, turn_seconds = series
            turns.inc()
            turn_seconds.observe(seconds)
            if status in TERMINAL_STATUSES:
                self._metrics.runs_ended.labels(status.value).inc()

    def run_cancelled(self, *, tenant: str, run_id: Any, workflow_id: Any, previous: str) -> None:
        logger.info(
            "run cancelled (it was %s)",
            previous,
            extra={
                "run_id": str(run_id),
                "workflow_id": str(workflow_id),
                "tenant": tenant,
                "status": RunStatus.CANCELLED.value,
            },
        )
        if self._metrics is not None:
            self._metrics.cancellations.inc()
            self._metrics.runs_ended.labels(RunStatus.CANCELLED.value).inc()

    def turn_recovered(self, *, tenant: str, run_id: Any, turn: int, recoveries: int) -> None:
        logger.warning(
            "executing turn %d again after its server stopped (recovery %d)",
            turn,
            recoveries,
            extra={"run_id": str(run_id), "turn": turn, "tenant": tenant},
        )
        if self._metrics is not None:
            self._metrics.recoveries.inc()
