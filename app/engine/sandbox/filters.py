"""Jinja2's filters and tests, each charging the budget, checked before they run.

Every filter is called with its arguments bound to its own signature (so a check
reads ``width`` whether it came by position or by keyword), charged for going
through its input (per item; per character where Python code walks a string),
and, where it could build something large or slow, checked before it runs.
"""

import inspect
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from jinja2 import pass_context
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.tests import TESTS
from jinja2.utils import _PassArg

from app.engine.budget import WORK_PER_CALL, EvaluationBudget, EvaluationError, current_budget
from app.engine.sandbox.values import (
    charge_input,
    check_join,
    check_percent_format,
    check_replacement,
    is_int,
    line_breaks,
    materialized,
    rendered_size,
)

# Slow per character, random, or showing Python representations.
LEFT_OUT = frozenset({"pprint", "random", "striptags", "urlize", "wordwrap", "xmlattr"})
# Filters whose Python code goes through a string input one character (or word) at a time.
_PER_CHARACTER = frozenset(
    {"batch", "first", "groupby", "join", "list", "map", "max", "min", "reject", "rejectattr"}
    | {"select", "selectattr", "slice", "sort", "sum", "title", "unique", "wordcount"}
)
# Filters that make text of their input: a list or a dict is made its full text first.
_TEXT_FILTERS = frozenset(
    {"capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower"}
    | {"replace", "safe", "title", "trim", "truncate", "upper", "urlencode", "wordcount"}
)
# Filters that compare strings without case: each string is lowered, all at once.
_CASE_FOLDING = frozenset({"dictsort", "groupby", "max", "min", "sort", "unique"})
# An ``attribute`` argument is a path ("a.b.0", or "a,b" for several): one lookup a part,
# through the sandbox, for every item.
MAX_ATTRIBUTE_PATH = 256
WORK_PER_ATTRIBUTE_PART = 50

Arguments = dict[str, Any]
FilterCheck = Callable[[EvaluationBudget, Any, Arguments], Any]


def budgeted_filters() -> dict[str, Callable[..., Any]]:
    return {
        name: _budgeted_filter(name, function)
        for name, function in FILTERS.items()
        if name not in LEFT_OUT
    }


def budgeted_tests() -> dict[str, Callable[..., Any]]:
    return {name: _budgeted_test(cast(Callable[..., Any], test)) for name, test in TESTS.items()}


def _budgeted_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    passes = _PassArg.from_obj(function)
    # The signature of the function itself: the async-variant wrappers Jinja2 puts around
    # some filters pass an evaluation context that the function they wrap does not take.
    unwrapped = inspect.unwrap(function)
    parameters = list(inspect.signature(unwrapped).parameters.values())
    takes_first = _PassArg.from_obj(unwrapped) is not None
    signature = inspect.Signature(parameters[1:] if takes_first else parameters)
    check = _CHECKS.get(name)

    @pass_context
    def budgeted(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_CALL)
        bound = signature.bind(value, *args, **kwargs)  # a TypeError is the author's mistake
        bound.apply_defaults()
        arguments = bound.arguments
        charge_input(budget, value, per_character=name in _PER_CHARACTER)
        _charge_attribute_path(budget, name, value, arguments)
        if name in _TEXT_FILTERS and not isinstance(value, str):
            budget.check_string_length(rendered_size(value, budget))
        if name in _CASE_FOLDING and not arguments.get("case_sensitive", False):
            value = materialized(budget, value)
            _charge_lowered_copies(budget, value)
        if check is not None:
            value = check(budget, value, arguments)
        if passes is _PassArg.context:
            result = function(context, value, *args, **kwargs)
        elif passes is _PassArg.eval_context:
            result = function(context.eval_ctx, value, *args, **kwargs)
        elif passes is _PassArg.environment:
            result = function(context.environment, value, *args, **kwargs)
        else:
            result = function(value, *args, **kwargs)
        if isinstance(result, types.GeneratorType):
            return _counted_items(budget, result)
        return budget.charge_value(result)

    budgeted.__name__ = name
    return budgeted


def _counted_items(budget: EvaluationBudget, items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        yield budget.charge_value(item)


def _charge_attribute_path(
    budget: EvaluationBudget, name: str, value: Any, arguments: Arguments
) -> None:
    if name in ("selectattr", "rejectattr"):
        positional = arguments.get("args", ())
        path = positional[0] if positional else None
    elif name == "map":
        path = arguments.get("kwargs", {}).get("attribute")
    else:
        path = arguments.get("attribute")
    if not isinstance(path, str | int) or not isinstance(value, list | tuple | dict | str):
        return
    text = str(path)
    if len(text) > MAX_ATTRIBUTE_PATH:
        raise EvaluationError(f"an attribute path is longer than {MAX_ATTRIBUTE_PATH} characters")
    parts = text.count(".") + text.count(",") + 1
    budget.charge_work(len(value) * parts * WORK_PER_ATTRIBUTE_PART)


def _charge_lowered_copies(budget: EvaluationBudget, items: Any) -> None:
    """Case-insensitive sorting keeps a lowered copy of every string item until it ends."""
    if isinstance(items, dict):
        strings = [key for key in items if isinstance(key, str)]
    elif isinstance(items, list | tuple):
        strings = [item for item in items if isinstance(item, str)]
    else:
        return
    total = sum(map(len, strings))
    budget.check_string_length(total)
    budget.charge_bytes(total)


# The checks of the filters that could build something large, by name.


def _join(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    items = materialized(budget, value)
    check_join(budget, items, arguments["d"])
    return items


def _sum(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    """Summing lists builds each partial list anew: quadratic in their total length."""
    items = materialized(budget, value)
    start = arguments["start"]
    if isinstance(items, list | tuple) and isinstance(start, list | tuple):
        lengths = [len(item) for item in items if isinstance(item, list | tuple)]
        total = len(start) + sum(lengths)
        budget.check_collection_length(total)
        budget.charge_work(len(lengths) * total // 2)
    return items


def _center(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    if is_int(arguments["width"]):
        budget.check_string_length(arguments["width"])
    return value


def _indent(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    width = arguments["width"]
    if isinstance(value, str):
        indent = width if is_int(width) else len(width) if isinstance(width, str) else 0
        budget.check_string_length(len(value) + line_breaks(value) * max(indent, 0))
    return value


def _replace(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    if isinstance(value, str):
        check_replacement(budget, value, str(arguments["old"]), str(arguments["new"]))
    return value


def _format(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    if isinstance(value, str):
        check_percent_format(budget, value, arguments["kwargs"] or tuple(arguments["args"]))
    return value


def _count(parameter: str) -> FilterCheck:
    """``batch`` and ``slice`` make as many pieces as their count says."""

    def check(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
        if is_int(arguments[parameter]):
            budget.check_collection_length(arguments[parameter])
        return materialized(budget, value)

    return check


def _list(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    if isinstance(value, str | range):
        budget.check_collection_length(len(value))
    return materialized(budget, value)


def _int(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    """Parsing digits takes time quadratic in their number: refuse more digits than the
    integer limit can hold, and charge the rest."""
    if isinstance(value, str):
        digits = len(value.strip())
        budget.check_integer_bits(digits * 10 // 3)
        budget.charge_work(digits // 4)
    return value


def _text(budget: EvaluationBudget, value: Any, arguments: Arguments) -> Any:
    """The text of a value (``string``, ``tojson``): with an ``indent``, every item is on a
    line of its own, indented once per level it is nested at."""
    size = rendered_size(value, budget)
    indent = arguments.get("indent")
    if isinstance(indent, int) and indent > 0:
        items, depth = _shape(budget, value)
        size += items * (1 + indent * depth)
    budget.check_string_length(size)
    return value


def _shape(budget: EvaluationBudget, value: Any) -> tuple[int, int]:
    """How many items ``value`` holds, and how deeply they nest."""
    items, deepest = 0, 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        budget.charge_work(1)
        items += 1
        deepest = max(deepest, depth)
        if isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
    return items, deepest


_CHECKS: dict[str, FilterCheck] = {
    "join": _join,
    "sum": _sum,
    "center": _center,
    "indent": _indent,
    "replace": _replace,
    "format": _format,
    "batch": _count("linecount"),
    "slice": _count("slices"),
    "list": _list,
    "unique": lambda budget, value, arguments: materialized(budget, value),
    "sort": lambda budget, value, arguments: materialized(budget, value),
    "int": _int,
    "string": _text,
    "tojson": _text,
}


def _budgeted_test(test: Callable[..., Any]) -> Callable[..., Any]:
    """Tests are cheap, but ``x is in a_long_list`` goes through the list: charge what
    they read."""
    if _PassArg.from_obj(test) is not None:
        return test  # the few that take the environment or context only look names up

    def budgeted(value: Any, *args: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_CALL)
        for argument in (value, *args):
            if isinstance(argument, list | tuple | dict):
                budget.charge_data(argument, produced=False)
            else:
                charge_input(budget, argument)
        return test(value, *args)

    return budgeted
