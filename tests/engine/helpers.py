from dataclasses import dataclass, field
from typing import Any

from app.engine.budget import EvaluationLimits
from app.engine.compiler import compile_workflow
from app.engine.llm import LlmClient
from app.engine.runner import TurnOptions, TurnOutcome, run_turn
from app.engine.state import Event, RunState, TurnInput
from tests.support import FakeClock


@dataclass
class Conversation:
    """Drives the engine turn by turn, as the service does, keeping state and seq."""

    definition: dict[str, Any]
    variables: dict[str, Any] = field(default_factory=dict)
    history_limit: int = 200
    llm: LlmClient | None = None
    evaluation_limits: EvaluationLimits = field(default_factory=EvaluationLimits)

    def __post_init__(self) -> None:
        self.workflow = compile_workflow(self.definition)
        self.state = RunState(variables=dict(self.variables))
        self.turn = 0
        self.seq = 0
        self.clock = FakeClock()

    async def send(self, message: str | None = None, data: Any = None) -> TurnOutcome:
        self.turn += 1
        options = TurnOptions(
            turn=self.turn,
            first_seq=self.seq + 1,
            workflow_id="w",
            version=0,
            clock=self.clock,
            history_limit=self.history_limit,
            llm=self.llm,
            evaluation_limits=self.evaluation_limits,
        )
        outcome = await run_turn(
            self.workflow, self.state, TurnInput(message=message, data=data), options
        )
        self.state = outcome.state
        self.seq += len(outcome.events)
        return outcome


def types(events: list[Event]) -> list[str]:
    return [event.type for event in events if event.type not in ("node_started", "node_completed")]


def texts(events: list[Event]) -> list[str]:
    return [event.data["text"] for event in events if event.type == "message"]
