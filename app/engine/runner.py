"""The turn runner: resumes a run, executes nodes until it waits or ends.

Given a compiled workflow, the run's state before the turn and the turn's
input, ``run_turn`` returns the events of the turn and the run's new state.
It never raises for a user's mistake: a template that fails at run time ends
the run ``failed`` with a sentence that names the node.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from app.engine.budget import EvaluationBudget, EvaluationLimits
from app.engine.compiler import CompiledNode, CompiledWorkflow
from app.engine.definition import (
    EndNode,
    FailNode,
    InputNode,
    LlmNode,
    MessageNode,
    PauseNode,
    SetNode,
    ShowStateNode,
    SwitchNode,
)
from app.engine.llm import ChatMessage, LlmCall, LlmClient, LlmError
from app.engine.state import (
    Event,
    EventType,
    HistoryEntry,
    LlmDelta,
    RunState,
    RunStatus,
    TurnInput,
    WaitingFor,
    WaitKind,
)
from app.engine.templating import EvaluationError, shortened, valid_text

DEFAULT_HISTORY_LIMIT = 200
DEFAULT_MAX_TURN_TEXT = 4 * 1024 * 1024
# A long turn (thousands of nodes) gives other requests the event loop this often: each
# request needs several passes of the loop, and each pass waits for every running turn.
YIELD_INTERVAL_SECONDS = 0.001

logger = logging.getLogger("tandem")


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """Everything a turn needs besides the workflow, the state and the input."""

    turn: int
    first_seq: int
    workflow_id: str
    version: int
    clock: Callable[[], datetime]
    history_limit: int = DEFAULT_HISTORY_LIMIT
    max_turn_text: int = DEFAULT_MAX_TURN_TEXT
    evaluation_limits: EvaluationLimits = field(default_factory=EvaluationLimits)
    llm: LlmClient | None = None
    # Called with every event as it is emitted and every piece of LLM text as it arrives.
    on_event: Callable[[Event | LlmDelta], None] | None = None


@dataclass(slots=True)
class TurnOutcome:
    state: RunState
    events: list[Event]


async def run_turn(
    workflow: CompiledWorkflow, state: RunState, turn_input: TurnInput, options: TurnOptions
) -> TurnOutcome:
    """Execute one turn of a run that has not started yet or waits for the user."""
    return await _Turn(workflow, state, turn_input, options).run()


class _Turn:
    def __init__(
        self,
        workflow: CompiledWorkflow,
        state: RunState,
        turn_input: TurnInput,
        options: TurnOptions,
    ) -> None:
        self.workflow = workflow
        self.options = options
        # The caller's state stays untouched: a turn that loses its claim leaves no trace.
        self.state = msgspec.structs.replace(
            state, variables=dict(state.variables), history=list(state.history)
        )
        self.message = turn_input.message
        self.data = turn_input.data
        self.events: list[Event] = []
        self.steps = 0
        self.text_left = options.max_turn_text
        self.budget = EvaluationBudget(options.evaluation_limits)
        self._context: dict[str, Any] | None = None

    async def run(self) -> TurnOutcome:
        state = self.state
        resuming: str | None = None
        if state.status == RunStatus.NOT_STARTED:
            self.emit(
                "run_started",
                None,
                {"workflow_id": self.options.workflow_id, "version": self.options.version},
            )
            node_id = self.workflow.start
        elif state.status in (RunStatus.WAITING_FOR_USER_INPUT, RunStatus.PAUSED):
            assert state.current_node is not None
            node_id = resuming = state.current_node
        else:
            raise ValueError(f"a run that is {state.status} cannot take a turn")
        state.status = RunStatus.RUNNING
        state.waiting_for = None

        next_id: str | None = node_id
        slice_started = time.perf_counter()
        while next_id is not None:
            if self.steps >= self.workflow.max_steps_per_turn:
                self.abort()
                break
            if time.perf_counter() - slice_started > YIELD_INTERVAL_SECONDS:
                await asyncio.sleep(0)  # other requests go on while a long turn runs
                slice_started = time.perf_counter()
            node = self.workflow.nodes[next_id]
            self.steps += 1
            state.current_node = node.id
            self.emit("node_started", node.id, {"node_type": _type_of(node)})
            try:
                next_id = await self.execute(node, resuming=node.id == resuming and self.steps == 1)
            except EvaluationError as error:
                self.fail(node.id, f"Node '{node.id}' failed: {error}")
                next_id = None
            except Exception:  # a fault of ours must not break the run: it fails, and says so
                logger.exception("node %s failed unexpectedly", node.id)
                self.fail(node.id, f"Node '{node.id}' failed: an internal error occurred.")
                next_id = None
        return TurnOutcome(state=state, events=self.events)

    async def execute(self, node: CompiledNode, *, resuming: bool) -> str | None:
        """Run one node; the id of the node to go to, or None when the turn stops here."""
        spec = node.spec
        match spec:
            case MessageNode():
                self.say(node.id, self.render(node, "text"))
                return self.completed(node, spec.next)
            case InputNode():
                return self.execute_input(node, spec, resuming=resuming)
            case PauseNode():
                return self.execute_pause(node, spec, resuming=resuming)
            case SwitchNode():
                for index, case in enumerate(spec.cases):
                    if self.evaluate(node, f"cases[{index}].when"):
                        return self.completed(node, case.next)
                return self.completed(node, spec.default)
            case SetNode():
                for name in spec.values:
                    self.assign(name, self.evaluate(node, f"values.{name}"))
                return self.completed(node, spec.next)
            case ShowStateNode():
                keys = spec.keys if spec.keys is not None else list(self.state.variables)
                values = {key: self.state.variables.get(key) for key in keys}
                with self.budget:  # shown in an event, and stored with it
                    self.budget.charge_data(values)
                self.emit("state", node.id, {"values": values})
                return self.completed(node, spec.next)
            case EndNode():
                output = {name: self.evaluate(node, f"output.{name}") for name in spec.output or {}}
                self.completed(node, None)
                self.state.status = RunStatus.COMPLETED
                self.state.output = output
                self.emit("run_completed", node.id, {"output": output})
                return None
            case FailNode():
                error = self.render(node, "error")
                self.completed(node, None)
                self.fail(node.id, error)
                return None
            case LlmNode():
                return await self.execute_llm(node, spec)
        raise AssertionError(f"unhandled node type {type(spec).__name__}")

    def execute_input(self, node: CompiledNode, spec: InputNode, *, resuming: bool) -> str | None:
        prompt = self.render(node, "prompt") if spec.prompt is not None else None
        choices = spec.validate.choices if spec.validate else None
        if self.message is None:
            if not resuming and prompt is not None:
                self.remember("assistant", prompt)
            self.wait(node, "message", prompt, choices)
            return None
        message, self.message = self.message, None
        value, reason = self.accepted(node, spec, message)
        if reason is not None:
            self.emit("input_rejected", node.id, {"message": message, "reason": reason})
            if spec.retry_prompt is not None:
                self.say(node.id, self.render(node, "retry_prompt"))
            self.wait(node, "message", prompt, choices)
            return None
        self.assign(spec.save_as, value)
        if spec.save_data_as is not None:
            self.assign(spec.save_data_as, self.data)
        self.remember("user", message)
        self.emit("input_received", node.id, {"message": message})
        return self.completed(node, spec.next)

    def execute_pause(self, node: CompiledNode, spec: PauseNode, *, resuming: bool) -> str | None:
        if not resuming:
            prompt = self.render(node, "prompt") if spec.prompt is not None else None
            if prompt is not None:
                self.remember("assistant", prompt)
            self.wait(node, "continue", prompt, None)
            return None
        message, self.message = self.message, None
        if spec.save_as is not None:
            self.assign(spec.save_as, message)
        if message is not None:
            self.remember("user", message)
            self.emit("input_received", node.id, {"message": message})
        return self.completed(node, spec.next)

    async def execute_llm(self, node: CompiledNode, spec: LlmNode) -> str | None:
        client = self.options.llm
        if client is None:
            raise EvaluationError("no LLM provider is available to this server")
        messages = []
        if spec.system is not None:
            messages.append(ChatMessage(role="system", content=self.render(node, "system")))
        if spec.history:
            messages += [ChatMessage(role=h.role, content=h.text) for h in self.state.history]
        messages.append(ChatMessage(role="user", content=self.render(node, "prompt")))
        # Each call sends the whole conversation again: charged, so that a loop of calls
        # cannot send gigabytes.
        self.budget.charge_turn_work(sum(len(m.content) for m in messages) // 256)
        model = spec.model or client.default_model
        self.emit("llm_started", node.id, {"model": model})
        call = LlmCall(
            model=model,
            messages=messages,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
        )
        try:
            reply = await client.complete(call, on_delta=lambda text: self.delta(node.id, text))
        except LlmError as error:
            raise EvaluationError(f"the LLM provider failed: {error}") from error
        self.spend(reply.text)
        self.emit("llm_completed", node.id, {"text": reply.text, "usage": reply.usage})
        if spec.show:
            self.say(node.id, reply.text)
        self.assign(spec.save_as, reply.text)
        return self.completed(node, spec.next)

    @staticmethod
    def accepted(node: CompiledNode, spec: InputNode, message: str) -> tuple[str, str | None]:
        """The value to save for ``message`` (a choice as the definition writes it), and
        the reason it is rejected, if it is."""
        rules = spec.validate
        if rules is None:
            return message, None
        if rules.max_length is not None and len(message) > rules.max_length:
            return message, f"must be at most {rules.max_length} characters"
        value = message
        if rules.choices is not None:
            choice = _matching_choice(rules.choices, message, ignore_case=rules.ignore_case)
            if choice is None:
                return message, "must be one of: " + ", ".join(rules.choices)
            value = choice
        if node.pattern is not None and not node.pattern.search(message):
            return message, f"must match the pattern {node.pattern.source}"
        return value, None

    # What nodes do to the run.

    def completed(self, node: CompiledNode, next_id: str | None) -> str | None:
        self.emit("node_completed", node.id, {"node_type": _type_of(node)})
        return next_id

    def wait(
        self, node: CompiledNode, kind: WaitKind, prompt: str | None, choices: list[str] | None
    ) -> None:
        waiting_for = WaitingFor(node_id=node.id, kind=kind, prompt=prompt, choices=choices)
        self.state.status = (
            RunStatus.WAITING_FOR_USER_INPUT if kind == "message" else RunStatus.PAUSED
        )
        self.state.waiting_for = waiting_for
        event_type: EventType = "waiting_for_input" if kind == "message" else "paused"
        self.emit(event_type, node.id, msgspec.to_builtins(waiting_for))

    def fail(self, node_id: str, error: str) -> None:
        # A message may quote anything (a provider's answer, a value): keep it short, and
        # storable even if it quotes a lone surrogate.
        error = shortened(error).encode(errors="replace").decode()
        self.state.status = RunStatus.FAILED
        self.state.error = error
        self.emit("run_failed", node_id, {"error": error, "node_id": node_id})

    def abort(self) -> None:
        steps = self.workflow.max_steps_per_turn
        reason = (
            f"The turn executed {steps} nodes without waiting for the user "
            "(limits.max_steps_per_turn); the run was stopped to avoid an endless loop."
        )
        self.state.status = RunStatus.ABORTED_LOOPING_RISK
        self.state.error = reason
        self.emit("run_aborted", self.state.current_node, {"reason": reason, "steps": steps})

    def say(self, node_id: str, text: str) -> None:
        self.emit("message", node_id, {"text": text})
        self.remember("assistant", text)

    def assign(self, name: str, value: Any) -> None:
        self.state.variables[name] = value
        if self._context is not None:  # kept up to date, not rebuilt: a set of many values
            self._context[name] = value  # would otherwise rebuild it once per value

    def remember(self, role: str, text: str) -> None:
        history = self.state.history
        history.append(HistoryEntry(role="user" if role == "user" else "assistant", text=text))
        if len(history) > self.options.history_limit:
            del history[: len(history) - self.options.history_limit]
        if self._context is not None:
            self._context["history"] = self.history_view()

    def emit(self, event_type: EventType, node_id: str | None, data: dict[str, Any]) -> None:
        event = Event(
            seq=self.options.first_seq + len(self.events),
            turn=self.options.turn,
            type=event_type,
            node_id=node_id,
            at=self.options.clock(),
            data=data,
        )
        self.events.append(event)
        if self.options.on_event is not None:
            self.options.on_event(event)

    def delta(self, node_id: str, text: str) -> None:
        if self.options.on_event is not None:
            self.options.on_event(LlmDelta(node_id=node_id, text=text))

    # Templates see the run's variables by name, plus the conversation as `history`.

    def context(self) -> dict[str, Any]:
        """What templates see. Each render or evaluation copies it (Jinja2 makes a context
        of its own), so each is charged for the copy."""
        if self._context is None:
            self._context = {**self.state.variables, "history": self.history_view()}
        self.budget.charge_turn_work(len(self._context) // 2)
        return self._context

    def history_view(self) -> list[dict[str, str]]:
        return [{"role": entry.role, "text": entry.text} for entry in self.state.history]

    def render(self, node: CompiledNode, field: str) -> str:
        text = node.templates[field](self.context(), self.budget)
        self.spend(text)
        return text

    def evaluate(self, node: CompiledNode, field: str) -> Any:
        return node.expressions[field](self.context(), self.budget)

    def spend(self, text: str) -> None:
        """Count text against the turn's budget, so that no turn grows a run without bound,
        and refuse text that could not be stored or sent."""
        valid_text(text)
        self.text_left -= len(text)
        if self.text_left < 0:
            raise EvaluationError(
                f"the turn produced more than {self.options.max_turn_text} characters of text"
            )


def _matching_choice(choices: list[str], message: str, *, ignore_case: bool) -> str | None:
    """The choice ``message`` names, spaces around it aside."""
    given = message.strip()
    for choice in choices:
        if choice.strip() == given or (
            ignore_case and choice.strip().casefold() == given.casefold()
        ):
            return choice.strip()
    return None


def _type_of(node: CompiledNode) -> str:
    return str(node.spec.__struct_config__.tag)
