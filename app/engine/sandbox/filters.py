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

from jinja2 import Environment, pass_context, pass_environment
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import Context
from jinja2.tests import TESTS
from jinja2.utils import _PassArg

from app.engine.budget import (
    CHARACTERS_PER_WORK_UNIT,
    WORK_PER_CALL,
    EvaluationBudget,
    EvaluationError,
    current_budget,
)
from app.engine.sandbox.values import (
    WORK_PER_RENDERED_ITEM,
    charge_decimal,
    charge_input,
    check_keys,
    check_percent_format,
    check_replacement,
    is_int,
    line_breaks,
    materialized,
    renderable,
    rendered_size,
)

# Slow per character, random, or showing Python representations.
LEFT_OUT = frozenset({"pprint", "random", "striptags", "urlize", "wordwrap", "xmlattr"})
# Filters whose Python code goes through a string input one character (or word) at a time.
_PER_CHARACTER = frozenset(
    {"batch", "first", "groupby", "join", "list", "map", "max", "min", "reject", "rejectattr"}
    | {"select", "selectattr", "slice", "sort", "sum", "title", "unique", "urlencode"}
    | {"wordcount", "indent", "tojson", "string"}
)
# A filter's call, its arguments bound to its signature, takes about 2 us.
WORK_PER_FILTER = 2 * WORK_PER_CALL
# A key function called on an item (case-insensitive comparisons): about 1 us.
_WORK_PER_KEYED_ITEM = 3
# round() computes 10**precision: a float has no more than this many digits either side.
MAX_ROUND_PRECISION = 330
# urlencode writes each UTF-8 byte of a character as %XX.
_URL_ENCODED_GROWTH = 9
# Filters that make text of their input (str(value)): a list or a dict is made its text
# here first, within the limits and only if it is plain data.
_TEXT_FILTERS = frozenset(
    {"capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower"}
    | {"replace", "safe", "title", "trim", "truncate", "upper", "wordcount"}
)
_ATTRIBUTE_FILTERS = frozenset(
    {"groupby", "join", "map", "max", "min", "rejectattr", "selectattr", "sort", "sum"} | {"unique"}
)
# Filters that compare strings without case: each string is lowered, all at once.
_CASE_FOLDING = frozenset({"dictsort", "groupby", "max", "min", "sort", "unique"})
# An ``attribute`` argument is a path ("a.b.0", or "a,b" for several): one lookup a part,
# through the sandbox, for every item.
MAX_ATTRIBUTE_PATH = 256
WORK_PER_ATTRIBUTE_PART = 50

Arguments = dict[str, Any]
FilterCheck = Callable[[EvaluationBudget, Any, Arguments, Environment], Any]


def budgeted_filters() -> dict[str, Callable[..., Any]]:
    functions = {**FILTERS, "join": _join_filter}
    return {
        name: _budgeted_filter(name, function)
        for name, function in functions.items()
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
    # Binding costs as much as the call: only the filters whose checks read arguments do.
    reads_arguments = check is not None or name in _ATTRIBUTE_FILTERS | _CASE_FOLDING
    # A filter given no arguments (``x | int``) binds to its first parameter and the
    # defaults of the others: what ``bind`` and ``apply_defaults`` give, without them.
    only_value = _binding_of_value_alone(signature)

    @pass_context
    def budgeted(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_FILTER)
        if name in _TEXT_FILTERS and not isinstance(value, str):
            value = renderable(value, budget)  # what the filter would make of it, checked
        charge_input(budget, value, per_character=name in _PER_CHARACTER)
        if reads_arguments:
            if only_value is not None and not args and not kwargs:
                arguments = only_value(value)
            else:
                bound = signature.bind(value, *args, **kwargs)  # a TypeError: the author's
                bound.apply_defaults()
                arguments = bound.arguments
            _charge_attribute_path(budget, name, value, arguments)
            if name in _CASE_FOLDING and not arguments.get("case_sensitive", False):
                value = materialized(budget, value)
                _charge_lowered_copies(budget, value)
            if check is not None:
                value = check(budget, value, arguments, context.environment)
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


_NEW_DICT = object()  # a VAR_KEYWORD parameter's default: a new {} each call, as bind makes


def _binding_of_value_alone(
    signature: inspect.Signature,
) -> Callable[[Any], dict[str, Any]] | None:
    """``signature.bind(value)`` with its defaults applied, as a function of ``value``;
    None when that call would not bind (another parameter has no default)."""
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return None
    first = parameters[0].name
    rest: list[tuple[str, Any]] = []
    for parameter in parameters[1:]:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            rest.append((parameter.name, ()))
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            rest.append((parameter.name, _NEW_DICT))
        elif parameter.default is not inspect.Parameter.empty:
            rest.append((parameter.name, parameter.default))
        else:
            return None

    def bind(value: Any) -> dict[str, Any]:
        arguments = {first: value}
        for name, default in rest:
            arguments[name] = {} if default is _NEW_DICT else default
        return arguments

    return bind


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
    """Case-insensitive sorting calls a Python function on every item, and keeps a lowered
    copy of every string item until it ends."""
    if isinstance(items, list | tuple | dict):
        budget.charge_work(_WORK_PER_KEYED_ITEM * len(items))
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


@pass_environment
def _join_filter(
    environment: Environment, value: Any, d: Any = "", attribute: str | int | None = None
) -> str:
    """Jinja2's ``join``, made of the items' text as the rest of Tandem makes it: plain
    data only, never a Python object's representation, within the string limit."""
    budget = current_budget()
    items = list(materialized(budget, value))
    if attribute is not None:
        look_up = make_attrgetter(environment, attribute)
        items = [look_up(item) for item in items]
    separator = renderable(d, budget)
    # One pass: each item is measured (and refused if not plain data) before its text is
    # made, and the whole is refused as soon as it would be too long.
    texts: list[str] = []
    total = 0
    for item in items:
        total += rendered_size(item, budget) + len(separator)
        budget.check_string_length(total - len(separator))
        texts.append(item if isinstance(item, str) else str(item))
    return separator.join(texts)


def _sum(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    """Summing lists builds each partial list anew: quadratic in their total length."""
    items = materialized(budget, value)
    start = arguments["start"]
    if isinstance(items, list | tuple) and isinstance(start, list | tuple):
        lengths = [len(item) for item in items if isinstance(item, list | tuple)]
        total = len(start) + sum(lengths)
        budget.check_collection_length(total)
        budget.charge_work(len(lengths) * total // 2)
    return items


def _center(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    if is_int(arguments["width"]):
        budget.check_string_length(arguments["width"])
    return value


def _indent(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    width = arguments["width"]
    # The indentation is built before anything else, whatever the value is.
    indent = width if is_int(width) else len(width) if isinstance(width, str) else 0
    budget.check_string_length(max(indent, 0))
    if isinstance(value, str):
        lines = line_breaks(value)
        budget.charge_work(2 * lines)  # a Python generator goes through it line by line
        budget.check_string_length(len(value) + lines * max(indent, 0))
    return value


def _replace(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    old = renderable(arguments["old"], budget)
    new = renderable(arguments["new"], budget)
    if isinstance(value, str):
        check_replacement(budget, value, old, new)
    return value


def _round(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    """round() computes ten to the power of its precision, however large."""
    precision = arguments["precision"]
    if is_int(precision) and abs(precision) > MAX_ROUND_PRECISION:
        raise EvaluationError(f"round takes a precision of at most {MAX_ROUND_PRECISION} digits")
    if is_int(value):
        charge_decimal(budget, value)  # rounding a big integer divides it
    return value


def _sorted(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    """Sorting compares n log n times, all before anything is returned."""
    items = materialized(budget, value)
    count = len(items)
    if count > 1:
        budget.charge_work(2 * count * count.bit_length())
    return items


def _urlencode(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    size = len(value) if isinstance(value, str) else rendered_size(value, budget)
    budget.check_string_length(size * _URL_ENCODED_GROWTH)
    if not isinstance(value, str):
        budget.charge_work(size)  # each byte of each key and value is quoted in Python
    return value


def _escape(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    """Escaping makes up to five characters of one (&quot;): sized before it is done."""
    if isinstance(value, str):
        specials = sum(value.count(mark) for mark in "<>&'\"")
        budget.check_string_length(len(value) + 4 * specials)
        budget.charge_work(len(value) // 32)
    return value


def _format(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    if isinstance(value, str):
        check_percent_format(budget, value, arguments["kwargs"] or tuple(arguments["args"]))
    return value


def _count(parameter: str) -> FilterCheck:
    """``batch`` and ``slice`` make as many pieces as their count says."""

    def check(
        budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
    ) -> Any:
        if is_int(arguments[parameter]):
            budget.check_collection_length(arguments[parameter])
        return materialized(budget, value)

    return check


def _list(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    if isinstance(value, str | range):
        budget.check_collection_length(len(value))
    return materialized(budget, value)


def _unique(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    """unique() puts every item (or its attribute) in a set: keys are checked first."""
    items = materialized(budget, value)
    attribute = arguments.get("attribute")
    if attribute is not None and isinstance(items, list | tuple):
        look_up = make_attrgetter(environment, attribute)
        check_keys(budget, [look_up(item) for item in items])
    else:
        check_keys(budget, items if not isinstance(items, str) else ())
    return items


def _trim(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    """Each character trimmed is looked up in ``chars`` one by one."""
    chars = arguments.get("chars")
    if isinstance(value, str) and isinstance(chars, str):
        budget.charge_work(len(value) * len(chars) // CHARACTERS_PER_WORK_UNIT)
    return value


def _int(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    """Parsing digits takes time quadratic in their number: refuse more digits than the
    integer limit can hold, and charge the rest."""
    if isinstance(value, str):
        digits = len(value.strip())
        budget.check_integer_bits(digits * 10 // 3)
        budget.charge_work(digits // 4)
    return value


def _text(
    budget: EvaluationBudget, value: Any, arguments: Arguments, environment: Environment
) -> Any:
    """The text of a value (``string``, ``tojson``): with an ``indent``, every item is on a
    line of its own, indented once per level it is nested at."""
    size = rendered_size(value, budget)
    indent = arguments.get("indent")
    width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if width > 0:
        items, depth = _shape(budget, value)
        size += items * (1 + width * depth)
    budget.check_string_length(size)
    return value


def _shape(budget: EvaluationBudget, value: Any) -> tuple[int, int]:
    """How many items ``value`` holds, and how deeply they nest."""
    items, deepest = 0, 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        budget.charge_work(2 * WORK_PER_RENDERED_ITEM)  # and each item is indented
        items += 1
        deepest = max(deepest, depth)
        if isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
    return items, deepest


_CHECKS: dict[str, FilterCheck] = {
    "sum": _sum,
    "center": _center,
    "indent": _indent,
    "replace": _replace,
    "format": _format,
    "batch": _count("linecount"),
    "slice": _count("slices"),
    "list": _list,
    "unique": _unique,
    "sort": _sorted,
    "dictsort": _sorted,
    "e": _escape,
    "escape": _escape,
    "forceescape": _escape,
    "int": _int,
    "trim": _trim,
    "round": _round,
    "urlencode": _urlencode,
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
