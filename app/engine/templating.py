"""Jinja2 templates and expressions, compiled once, run within a turn's budget.

A workflow author's text never reaches Python internals, files or the network,
and never does more work than the turn's budget allows: everything runs in
``TandemSandbox`` (see ``sandbox.py``), undefined names are errors, and a
template's output is counted while it is produced.
"""

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from jinja2 import TemplateError, Undefined
from jinja2.exceptions import TemplateSyntaxError

from app.engine.budget import EvaluationBudget, EvaluationError
from app.engine.sandbox.environment import TandemSandbox
from app.engine.sandbox.template_checks import TemplateLimits

MAX_VALUE_DEPTH = 32
MAX_ERROR_LENGTH = 1_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

__all__ = [
    "EvaluationError",
    "Evaluator",
    "Renderer",
    "compile_expression",
    "compile_template",
    "to_storable",
    "valid_text",
]

DEFAULT_TEMPLATE_LIMITS = TemplateLimits()
_NEWLINES = re.compile(r"\r\n|\r|\n")

Renderer = Callable[[Mapping[str, Any], EvaluationBudget], str]
Evaluator = Callable[[Mapping[str, Any], EvaluationBudget], Any]


@functools.lru_cache(maxsize=8)
def sandbox_for(limits: TemplateLimits) -> TandemSandbox:
    """One environment per set of limits (in practice, one per process)."""
    return TandemSandbox(limits)


def compile_template(source: str, limits: TemplateLimits = DEFAULT_TEMPLATE_LIMITS) -> Renderer:
    """Compile a template; raises ``TemplateError`` when it does not parse or is refused."""
    if not any(marker in source for marker in ("{{", "{%", "{#")):
        # Plain text (most prompts) renders to itself, newlines made "\n" as Jinja2 does:
        # nothing to compile or run.
        text = _NEWLINES.sub("\n", source)
        return lambda _variables, _budget: text
    template = _parsing(lambda: sandbox_for(limits).from_string(source))

    def render(variables: Mapping[str, Any], budget: EvaluationBudget) -> str:
        with budget:
            try:
                chunks: list[str] = []
                length = 0
                for chunk in template.root_render_func(template.new_context(dict(variables))):
                    length += len(chunk)  # counted as it is produced, not afterwards
                    budget.check_string_length(length)
                    budget.charge_bytes(len(chunk))
                    chunks.append(chunk)
                return "".join(chunks)
            except EvaluationError:
                raise
            except Exception as error:  # a filter or operator failed: a user error, not ours
                raise EvaluationError(_describe(error)) from error

    return render


def compile_expression(source: str, limits: TemplateLimits = DEFAULT_TEMPLATE_LIMITS) -> Evaluator:
    """Compile an expression that keeps its type; raises ``TemplateError`` when it does not
    parse or is refused."""
    expression = _parsing(
        lambda: sandbox_for(limits).compile_expression(source, undefined_to_none=False)
    )

    def evaluate(variables: Mapping[str, Any], budget: EvaluationBudget) -> Any:
        with budget:
            try:
                value = expression(variables)
                budget.charge_data(value)  # before to_storable copies it, item by item
                return to_storable(value)
            except EvaluationError:
                raise
            except Exception as error:
                raise EvaluationError(_describe(error)) from error

    return evaluate


_Compiled = TypeVar("_Compiled")


def _parsing(compile_: Callable[[], _Compiled]) -> _Compiled:
    """Jinja2's parser recurses: a source nested deeply enough exhausts the stack."""
    try:
        return compile_()
    except (RecursionError, MemoryError):
        raise TemplateSyntaxError("nested too deeply to compile", 1) from None
    except ValueError as error:  # the lexer's int() of a literal of 4,300+ digits
        raise TemplateSyntaxError(f"cannot be compiled: {error}", 1) from None


def to_storable(value: Any, depth: int = 0) -> Any:
    """Turn a value into plain JSON data that any client reads alike, or explain why not:
    nesting is bounded, numbers are finite, and integers beyond 64 bits (which most JSON
    clients round) are refused rather than silently changed downstream."""
    if depth > MAX_VALUE_DEPTH:
        raise EvaluationError(f"the value is nested deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, Undefined):
        str(value)  # a StrictUndefined raises its own "'x' is undefined" here
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EvaluationError(f"the number {value} is not finite")
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise EvaluationError("the integer does not fit in 64 bits")
        return value
    if isinstance(value, str):
        return valid_text(str(value))
    if isinstance(value, list | tuple):
        return [to_storable(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_storable_key(key): to_storable(item, depth + 1) for key, item in value.items()}
    raise EvaluationError(f"a value of type '{type(value).__name__}' cannot be stored")


def _storable_key(key: Any) -> str:
    """A key as JSON writes one: text, or a number, a boolean or null written as JSON."""
    if isinstance(key, str):
        return valid_text(key)
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(to_storable(key))
    raise EvaluationError(f"a key of type '{type(key).__name__}' cannot be stored")


def valid_text(text: str) -> str:
    """``text`` if it can be stored and sent (UTF-8), else an ``EvaluationError``."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise EvaluationError("the text is not valid Unicode (it holds a lone surrogate)") from None
    return text


def _describe(error: Exception) -> str:
    if isinstance(error, ZeroDivisionError):
        return "division by zero"
    if isinstance(error, RecursionError):
        return "calls nested too deeply (a macro that calls itself without end?)"
    if isinstance(error, TemplateError):
        return shortened(error.message or type(error).__name__)
    return shortened(str(error) or type(error).__name__)


def shortened(message: str) -> str:
    """An error's message as the run keeps it: a message may quote a value of any size."""
    if len(message) <= MAX_ERROR_LENGTH:
        return message
    return message[: MAX_ERROR_LENGTH - 1] + "…"
