"""The evaluation budget: how much work a turn's templates and expressions may do.

A definition is code from a tenant that runs inside the one server process, so
every turn carries a budget, counted in work done rather than in seconds (the
same turn fails at the same place on any machine, under any load):

- ``work``: loop iterations (weighted by the size of the loop's body), calls,
  filters and operators, and items of the collections they go through;
- ``produced_bytes``: the size of the strings and collections they produce,
  rendered output included, counted while it is produced, not afterwards;
- single values are bounded too: strings, collections and integers that would
  exceed their limit are refused *before* they are built.

A turn that exceeds its budget ends ``failed``, naming the node and the limit.
"""

import math
import sys
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

# What things cost, in units of work. A unit is about 50 ns of one core here (measured
# with scripts/hostile.py's cases): the default budget is about 100 ms of evaluation.
WORK_PER_SYNTAX_NODE = 1  # evaluating one node of a template's syntax tree
WORK_PER_LOOKUP = 20  # an attribute or item looked up through the sandbox (x.a, x['a'])
WORK_PER_ITERATION = 4  # one item of a for loop, besides its body
WORK_PER_OPERATOR = 4  # an arithmetic operator or a comparison
WORK_PER_CALL = 30  # a function, method or test: ~1.5 us of the sandbox's call path (filters twice)
WORK_PER_MACRO_RUN = 200  # a macro or call block, besides its body
WORK_PER_MACRO_PARAMETER = 25  # each of its parameters
WORK_PER_RENDER = 20  # a template or expression, besides what runs in it
WORK_PER_WALKED_ITEM = 8  # an item of a value gone through to charge it (see charge_data)
_CONTAINERS = (list, tuple, dict)  # a tuple: isinstance with a union is slower on 3.11
# Strings are processed in C, hundreds of times faster than an interpreted step:
# a character costs this fraction of a unit of work.
CHARACTERS_PER_WORK_UNIT = 256
# What one item of a new collection costs in memory, on average, besides its own size.
BYTES_PER_ITEM = 64


def _stored_size(text: str) -> int:
    """What ``text`` takes stored as JSON (UTF-8, control characters as \\u00XX escapes),
    at most: measured without encoding it."""
    if text.isascii():
        return len(text) if text.isprintable() else 6 * len(text)
    return 4 * len(text) if text.isprintable() else 6 * len(text)


_current: "ContextVar[EvaluationBudget | None]" = ContextVar("evaluation_budget", default=None)


class EvaluationError(Exception):
    """A template or expression failed while running; the message is for humans."""


class BudgetExceeded(EvaluationError):
    """A turn's templates and expressions did more work, or built larger values, than
    its limits allow; ``limit`` names the setting."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(f"{message} (limit {limit})")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class EvaluationLimits:
    """The limits of one turn's evaluation (README, "Limits"); every one is configurable."""

    max_work: int = 5_000_000
    max_render_work: int = 250_000
    max_produced_bytes: int = 32 * 1024 * 1024
    max_string_length: int = 1_000_000
    max_collection_length: int = 100_000
    max_integer_bits: int = 4_096
    max_value_depth: int = 32


class EvaluationBudget:
    """What is left of a turn's limits; templates and expressions charge it as they run."""

    __slots__ = ("_tokens", "bytes_left", "limits", "render_work_left", "work_left")

    def __init__(self, limits: EvaluationLimits) -> None:
        self.limits = limits
        self.work_left = limits.max_work
        self.render_work_left = limits.max_render_work
        self.bytes_left = limits.max_produced_bytes
        self._tokens: list[Token[EvaluationBudget | None]] = []

    def __enter__(self) -> "EvaluationBudget":
        """Inside ``with budget:`` (one render or evaluation), templates and expressions
        charge this budget; each render has ``max_render_work`` of the turn's work."""
        self._tokens.append(_current.set(self))
        self.render_work_left = self.limits.max_render_work
        return self

    def __exit__(self, *_exc_info: object) -> None:
        _current.reset(self._tokens.pop())

    def charge_work(self, units: int) -> None:
        self.work_left -= units
        self.render_work_left -= units
        if self.render_work_left < 0:
            raise BudgetExceeded(
                f"one template or expression did more than "
                f"{self.limits.max_render_work} units of work",
                "max_render_work",
            )
        if self.work_left < 0:
            raise self._turn_work_exceeded()

    def charge_turn_work(self, units: int) -> None:
        """Work the turn does outside any render (copying variables for one, say)."""
        self.work_left -= units
        if self.work_left < 0:
            raise self._turn_work_exceeded()

    def _turn_work_exceeded(self) -> "BudgetExceeded":
        return BudgetExceeded(
            f"the turn's templates and expressions did more than "
            f"{self.limits.max_work} units of work",
            "max_work",
        )

    def charge_bytes(self, size: int) -> None:
        self.bytes_left -= size
        if self.bytes_left < 0:
            raise BudgetExceeded(
                f"the turn's templates and expressions produced more than "
                f"{self.limits.max_produced_bytes} bytes",
                "max_produced_bytes",
            )

    def charge_value(self, value: Any) -> Any:
        """Check and charge a value just produced by an operation; returns it unchanged."""
        if isinstance(value, str):
            self.check_string_length(len(value))
            self.charge_work(1 + len(value) // CHARACTERS_PER_WORK_UNIT)
            self.charge_bytes(sys.getsizeof(value))
        elif isinstance(value, list | tuple | dict):
            self.check_collection_length(len(value))
            self.charge_data(value)
        elif isinstance(value, bool):
            self.charge_work(1)
        elif isinstance(value, int):
            self.check_integer_bits(value.bit_length())
            self.charge_work(1)
        elif isinstance(value, float):
            check_finite(value)
            self.charge_work(1)
        else:
            self.charge_work(1)
        return value

    def charge_data(self, value: Any, *, produced: bool = True) -> None:
        """Charge a value for every item it holds, as if each reference were a copy (what
        storing, showing, comparing or hashing it costs): ``[x, x]`` doubled thirty times
        is charged for its billion items, and so can never be built. Refuses values nested
        deeper than ``max_value_depth`` (hashing or comparing one recurses in C, and a deep
        enough one would crash the process). ``produced``: the value is new, so its strings
        count as produced bytes too. Level by level, each container charged before its
        items are gathered, so the walk never outgrows the budget."""
        level = [value]
        depth = 0
        work = WORK_PER_WALKED_ITEM
        while level:
            if depth > self.limits.max_value_depth:
                raise BudgetExceeded(
                    f"a value is nested deeper than {self.limits.max_value_depth} levels",
                    "max_value_depth",
                )
            below: list[Any] = []
            characters = 0
            size = 0
            for item in level:
                if isinstance(item, str):
                    # Compared, hashed or copied character by character: beyond ASCII, at
                    # about 5-10 ns a character (a unit per 8), else a unit per 256.
                    characters += len(item) if item.isascii() else 32 * len(item)
                    size += _stored_size(item)
                elif isinstance(item, _CONTAINERS):
                    work += WORK_PER_WALKED_ITEM * len(item)
                    if work > min(self.work_left, self.render_work_left):
                        self.charge_work(work)  # raises: over budget
                    if isinstance(item, dict):
                        below.extend(item)
                        below.extend(item.values())
                    else:
                        below.extend(item)
            if produced:
                self.charge_bytes(size + BYTES_PER_ITEM * len(below))
            self.charge_work(work + characters // CHARACTERS_PER_WORK_UNIT)
            work = 0
            level = below
            depth += 1

    def check_string_length(self, length: int) -> None:
        if length > self.limits.max_string_length:
            raise BudgetExceeded(
                f"a string of {length} characters is longer than {self.limits.max_string_length}",
                "max_string_length",
            )

    def check_collection_length(self, length: int) -> None:
        if length > self.limits.max_collection_length:
            raise BudgetExceeded(
                f"a collection of {length} items is longer than "
                f"{self.limits.max_collection_length}",
                "max_collection_length",
            )

    def check_integer_bits(self, bits: int) -> None:
        if bits > self.limits.max_integer_bits:
            raise BudgetExceeded(
                f"an integer of about {bits} bits is larger than "
                f"{self.limits.max_integer_bits} bits",
                "max_integer_bits",
            )


def check_finite(value: float) -> None:
    if not math.isfinite(value):
        raise EvaluationError(f"the number {value} is not finite")


def current_budget() -> EvaluationBudget:
    """The budget of the evaluation running now (see ``EvaluationBudget.__enter__``)."""
    budget = _current.get()
    if budget is None:  # a template ran outside a turn: a bug, never unbounded work
        raise RuntimeError("a template or expression ran without an evaluation budget")
    return budget
