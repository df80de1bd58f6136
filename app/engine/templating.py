"""Jinja2 templates and expressions, run in the sandbox.

A workflow author's text never reaches Python internals, files or the network:
everything runs in Jinja2's immutable sandbox, undefined names are errors, and
the arithmetic that can allocate without bound (``*`` and ``**``) is capped.
"""

import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SEQUENCE_LENGTH = 1_000_000
MAX_EXPONENT = 1_000
MAX_VALUE_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class EvaluationError(Exception):
    """A template or expression failed while running; the message is for humans."""


class _TandemSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
            return operator.pow(left, right)
        _check_repetition(left, right)
        _check_repetition(right, left)
        return operator.mul(left, right)


def _check_repetition(sequence: Any, times: Any) -> None:
    repeated = isinstance(sequence, str | list | tuple) and isinstance(times, int)
    if repeated and len(sequence) * times > MAX_SEQUENCE_LENGTH:
        raise SecurityError(f"the result would be longer than {MAX_SEQUENCE_LENGTH} items")


_environment = _TandemSandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)

Renderer = Callable[[Mapping[str, Any]], str]
Evaluator = Callable[[Mapping[str, Any]], Any]


def compile_template(source: str) -> Renderer:
    """Compile a template; raises ``TemplateError`` when it does not parse."""
    template = _environment.from_string(source)
    if not any(marker in source for marker in ("{{", "{%", "{#")):
        # Plain text (most prompts) renders the same every time: render it once, here.
        text = template.render()
        return lambda _variables: text

    def render(variables: Mapping[str, Any]) -> str:
        try:
            return template.render(variables)
        except TemplateError as error:
            raise EvaluationError(_describe(error)) from error
        except Exception as error:  # a filter or operator failed: a user error, not ours
            raise EvaluationError(_describe(error)) from error

    return render


def compile_expression(source: str) -> Evaluator:
    """Compile an expression that keeps its type; raises ``TemplateError`` when it does not parse."""
    expression = _environment.compile_expression(source, undefined_to_none=False)

    def evaluate(variables: Mapping[str, Any]) -> Any:
        try:
            return to_storable(expression(variables))
        except EvaluationError:
            raise
        except Exception as error:
            raise EvaluationError(_describe(error)) from error

    return evaluate


def to_storable(value: Any, depth: int = 0) -> Any:
    """Turn a value into plain JSON data that any client reads alike, or explain why not:
    nesting is bounded, and integers beyond 64 bits (which most JSON clients round) are
    refused rather than silently changed downstream."""
    if depth > MAX_VALUE_DEPTH:
        raise EvaluationError(f"the value is nested deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, Undefined):
        str(value)  # a StrictUndefined raises its own "'x' is undefined" here
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise EvaluationError("the integer does not fit in 64 bits")
        return value
    if isinstance(value, str):
        return _valid_text(str(value))
    if isinstance(value, list | tuple):
        return [to_storable(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_valid_text(str(key)): to_storable(item, depth + 1) for key, item in value.items()}
    raise EvaluationError(f"a value of type '{type(value).__name__}' cannot be stored")


def _valid_text(text: str) -> str:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise EvaluationError("the text is not valid Unicode (it holds a lone surrogate)") from None
    return text


def _describe(error: Exception) -> str:
    message = str(error) or type(error).__name__
    if isinstance(error, ZeroDivisionError):
        return "division by zero"
    return message
