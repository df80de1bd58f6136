"""The Jinja2 environment that workflow templates and expressions run in.

Jinja2's immutable sandbox keeps a definition away from Python internals, files
and the network. This environment also keeps it from stalling the server or
exhausting its memory: every call, filter and operator charges the turn's
budget (``budget.py``), an operation whose result would be too large is refused
before it is built, only an allowlist of functions and methods can be called,
and nothing but plain data can be rendered (never a Python object's
representation). Compile-time constant folding is off, so publishing a
definition never evaluates it.
"""

import operator
import re
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from jinja2 import StrictUndefined, Undefined, nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.filters import FILTERS
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.tests import TESTS
from jinja2.utils import Cycler, Joiner, Namespace, _PassArg

from app.engine.budget import (
    CHARACTERS_PER_WORK_UNIT,
    WORK_PER_CALL,
    WORK_PER_OPERATOR,
    EvaluationBudget,
    EvaluationError,
    check_finite,
    current_budget,
)
from app.engine.template_checks import TemplateLimits, check_template, instrument

_BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda left, right: left in right,
    "notin": lambda left, right: left not in right,
}
# printf-style conversions: "%-10.3f", "%(name)s", "%*d"
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")

# Filters that are slow per character, random, or show Python representations.
_LEFT_OUT_FILTERS = frozenset({"pprint", "random", "striptags", "urlize", "wordwrap", "xmlattr"})

Check = Callable[[EvaluationBudget, Any, tuple[Any, ...], dict[str, Any]], None]


class TandemSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, bounded by the current evaluation budget."""

    intercepted_binops = frozenset(_BINARY_OPERATORS)

    def __init__(self, template_limits: TemplateLimits) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            optimized=False,
            finalize=_finalize,
        )
        self.template_limits = template_limits
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range
        self.filters = {
            name: _budgeted_filter(name, function)
            for name, function in FILTERS.items()
            if name not in _LEFT_OUT_FILTERS
        }
        self.filters.update(
            tandem_iterate=_iterate,
            tandem_charge=_charge,
            tandem_concat=_concat,
            tandem_compare=_compare,
            tandem_slice=_slice,
        )
        self.tests = {
            name: _budgeted_test(cast(Callable[..., Any], test)) for name, test in TESTS.items()
        }

    # Compiling: check the tree, then weave in the budget's charges.

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        check_template(source, self.template_limits)
        return super()._generate(instrument(source), name, filename, defer_init)

    def _compile(self, source: str, filename: str) -> types.CodeType:
        try:
            return super()._compile(source, filename)
        except (SyntaxError, RecursionError, MemoryError) as error:  # Python's own limits
            raise TemplateSyntaxError(f"too complex to compile ({error})", 1) from None

    # Running: what every call and operator goes through.

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_OPERATOR)
        _check_binary(budget, operator_, left, right)
        return budget.charge_value(_BINARY_OPERATORS[operator_](left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_CALL)
        _callable_check(__obj)(budget, __obj, args, kwargs)
        return budget.charge_value(__context.call(__obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if getattr(value, "__name__", None) in ("format", "format_map") and isinstance(
            getattr(value, "__self__", None), str
        ):
            raise SecurityError("str.format is not available; use the format filter or ~")
        return None


# The hooks that instrumented templates call (see template_checks.py).


def _iterate(items: Any, work_per_item: int, literal_per_item: int) -> Iterator[Any]:
    budget = current_budget()
    for item in _iterable(items):
        budget.charge_work(work_per_item)
        budget.charge_bytes(literal_per_item)
        yield item


def _charge(work: int, literal: int) -> str:
    budget = current_budget()
    budget.charge_work(work)
    budget.charge_bytes(literal)
    return ""


def _concat(first: Any, *parts: Any) -> str:
    budget = current_budget()
    texts = [_renderable(part, budget) for part in (first, *parts)]
    budget.check_string_length(sum(map(len, texts)))
    return "".join(texts)


def _slice(obj: Any, start: Any, stop: Any, step: Any) -> Any:
    # A copy, no larger than what it is cut from: charged as the new value it is.
    return current_budget().charge_value(obj[start:stop:step])


def _compare(left: Any, *operations: Any) -> bool:
    """``left op1 right1 op2 right2 ...``, chained as Jinja2 compares. Every operand has
    been evaluated already (a hook takes values); the comparisons stop at the first false."""
    budget = current_budget()
    for index in range(0, len(operations), 2):
        name, right = operations[index], operations[index + 1]
        budget.charge_work(WORK_PER_OPERATOR)
        _charge_input(budget, right)
        if name not in ("in", "notin"):
            _charge_input(budget, left)
        if not _COMPARISONS[name](left, right):
            return False
        left = right
    return True


# What may be called, and what is checked before the call.


def _no_check(_budget: EvaluationBudget, _obj: Any, _args: Any, _kwargs: Any) -> None:
    return None


def _check_width(budget: EvaluationBudget, obj: Any, args: Any, _kwargs: Any) -> None:
    if args and isinstance(args[0], int):
        budget.check_string_length(max(args[0], len(obj.__self__)))


def _check_replace(budget: EvaluationBudget, obj: Any, args: Any, _kwargs: Any) -> None:
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_replacement(budget, obj.__self__, args[0], args[1])


def _check_join(budget: EvaluationBudget, obj: Any, args: Any, _kwargs: Any) -> None:
    if args and isinstance(args[0], list | tuple):
        parts = args[0]
        total = sum(len(part) for part in parts if isinstance(part, str))
        budget.check_string_length(total + len(obj.__self__) * len(parts))


def _check_split(budget: EvaluationBudget, obj: Any, args: Any, kwargs: Any) -> None:
    """At most one piece more than separators (or whitespace characters); counted without
    splitting, which is what could build a million strings."""
    text: str = obj.__self__
    separator = args[0] if args else kwargs.get("sep")
    if isinstance(separator, str) and separator:
        pieces = text.count(separator) + 1
    else:
        pieces = sum(text.count(space) for space in " \t\n\r\x0b\x0c") + 1
    most = args[1] if len(args) > 1 else kwargs.get("maxsplit", -1)
    if _is_int(most) and most >= 0:
        pieces = min(pieces, most + 1)
    budget.check_collection_length(pieces)


def _check_expandtabs(budget: EvaluationBudget, obj: Any, args: Any, _kwargs: Any) -> None:
    tab_size = args[0] if args and isinstance(args[0], int) else 8
    text: str = obj.__self__
    budget.check_string_length(len(text) + text.count("\t") * max(tab_size, 0))


_STR_METHODS: dict[str, Check] = {
    **{
        name: _no_check
        for name in (
            *("capitalize", "casefold", "count", "endswith", "find", "index", "isalnum"),
            *("isalpha", "isascii", "isdecimal", "isdigit", "islower", "isnumeric", "isspace"),
            *("istitle", "isupper", "lower", "lstrip", "partition", "removeprefix"),
            *("removesuffix", "rfind", "rindex", "rpartition", "rstrip", "startswith"),
            *("strip", "swapcase", "title", "upper"),
        )
    },
    "center": _check_width,
    "ljust": _check_width,
    "rjust": _check_width,
    "zfill": _check_width,
    "replace": _check_replace,
    "join": _check_join,
    "split": _check_split,
    "rsplit": _check_split,
    "splitlines": lambda budget, obj, args, kwargs: budget.check_collection_length(
        obj.__self__.count("\n") + obj.__self__.count("\r") + 1
    ),
    "expandtabs": _check_expandtabs,
}
_METHODS: dict[type, dict[str, Check]] = {
    str: _STR_METHODS,
    dict: {name: _no_check for name in ("get", "items", "keys", "values")},
    list: {name: _no_check for name in ("count", "index")},
    tuple: {name: _no_check for name in ("count", "index")},
}
_JINJA_METHODS: dict[type, frozenset[str]] = {
    LoopContext: frozenset({"cycle", "changed"}),
    Cycler: frozenset({"next", "reset"}),
}
_CALLABLE_TYPES = (Macro, Joiner)


def _callable_check(obj: Any) -> Check:
    """How to check a call of ``obj`` before making it; SecurityError if not allowed."""
    if isinstance(obj, Undefined):
        str(obj)  # a StrictUndefined raises "'x' is undefined"
    if isinstance(obj, types.BuiltinMethodType):
        owner = getattr(obj, "__self__", None)
        methods = _METHODS.get(type(owner)) if owner is not None else None
        if methods is not None and obj.__name__ in methods:
            return _charging_input(methods[obj.__name__])
    elif isinstance(obj, types.MethodType):
        allowed = _JINJA_METHODS.get(type(obj.__self__))
        if allowed is not None and obj.__name__ in allowed:
            return _no_check
    elif isinstance(obj, _CALLABLE_TYPES) or any(obj is known for known in _GLOBALS):
        return _no_check
    name = getattr(obj, "__name__", type(obj).__name__)
    raise SecurityError(f"{name!r} cannot be called in a template")


def _charging_input(check: Check) -> Check:
    """A method goes through its object once: charge that, then check the call."""

    def checked(budget: EvaluationBudget, obj: Any, args: Any, kwargs: Any) -> None:
        _charge_input(budget, obj.__self__)
        check(budget, obj, args, kwargs)

    return checked


def _charge_input(budget: EvaluationBudget, value: Any) -> None:
    if isinstance(value, str):
        budget.charge_work(len(value) // CHARACTERS_PER_WORK_UNIT)
    elif isinstance(value, list | tuple | dict | range):
        budget.charge_work(len(value))


# Operators.


def _check_binary(budget: EvaluationBudget, operator_: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would exceed a limit, before computing it."""
    if operator_ == "**" and _is_int(left) and _is_int(right) and right > 0:
        budget.check_integer_bits(max(left.bit_length(), 1) * right)
    elif operator_ == "*":
        if _is_int(left) and _is_int(right):
            budget.check_integer_bits(left.bit_length() + right.bit_length())
        else:
            _check_repetition(budget, left, right)
            _check_repetition(budget, right, left)
    elif operator_ == "+":
        if isinstance(left, str) and isinstance(right, str):
            budget.check_string_length(len(left) + len(right))
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            budget.check_collection_length(len(left) + len(right))
    elif operator_ == "%" and isinstance(left, str):
        _check_percent_format(budget, left, right)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repetition(budget: EvaluationBudget, sequence: Any, times: Any) -> None:
    if not isinstance(times, int):
        return
    if isinstance(sequence, str):
        budget.check_string_length(len(sequence) * times)
    elif isinstance(sequence, list | tuple):
        budget.check_collection_length(len(sequence) * times)


def _check_percent_format(budget: EvaluationBudget, template: str, values: Any) -> None:
    """``template % values`` is at most the template, its widths and its values."""
    widths = 0
    for match in _PERCENT_SPEC.finditer(template):
        for number in match.groups():
            if number is not None and number != "*":
                widths += int(number)
        if "*" in match.group(0):
            starred = values if isinstance(values, tuple) else (values,)
            widths += sum(abs(value) for value in starred if _is_int(value))
    budget.check_string_length(len(template) + widths + rendered_size(values, budget))


def _check_replacement(budget: EvaluationBudget, text: str, old: str, new: str) -> None:
    occurrences = text.count(old) if old else len(text) + 1
    budget.check_string_length(len(text) + occurrences * max(len(new) - len(old), 0))


# Filters: each one charges the budget, and the few that can build large values are
# checked before they run.


def _budgeted_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    passes = _PassArg.from_obj(function)
    check = _FILTER_CHECKS.get(name)

    @pass_context
    def budgeted(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_CALL)
        _charge_input(budget, value)
        if check is not None:
            value = check(budget, value, args, kwargs)
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


FilterCheck = Callable[[EvaluationBudget, Any, tuple[Any, ...], dict[str, Any]], Any]


def _materialized(budget: EvaluationBudget, value: Any) -> Any:
    """A lazy input (a generator, a range) as a list, counted as it is built."""
    if isinstance(value, str | list | tuple | dict | Undefined):
        return value
    items = []
    for item in _iterable(value):
        budget.charge_work(1)
        items.append(item)
        budget.check_collection_length(len(items))
    return items


def _join_check(budget: EvaluationBudget, value: Any, args: Any, kwargs: Any) -> Any:
    items = _materialized(budget, value)
    separator = args[0] if args else kwargs.get("d", "")
    if isinstance(items, list | tuple) and isinstance(separator, str):
        size = sum(rendered_size(item, budget) for item in items)
        budget.check_string_length(size + len(separator) * len(items))
    return items


def _sum_check(budget: EvaluationBudget, value: Any, args: Any, kwargs: Any) -> Any:
    items = _materialized(budget, value)
    start = args[1] if len(args) > 1 else kwargs.get("start", 0)
    if isinstance(items, list | tuple) and isinstance(start, list | tuple):
        lengths = [len(item) for item in items if isinstance(item, list | tuple)]
        budget.check_collection_length(len(start) + sum(lengths))
    return items


def _center_check(budget: EvaluationBudget, value: Any, args: Any, kwargs: Any) -> Any:
    width = args[0] if args else kwargs.get("width", 80)
    if _is_int(width):
        budget.check_string_length(width)
    return value


def _indent_check(budget: EvaluationBudget, value: Any, args: Any, kwargs: Any) -> Any:
    width = args[0] if args else kwargs.get("width", 4)
    if isinstance(value, str):
        indent = width if _is_int(width) else len(width) if isinstance(width, str) else 0
        budget.check_string_length(len(value) + (value.count("\n") + 1) * indent)
    return value


def _replace_check(budget: EvaluationBudget, value: Any, args: Any, _kwargs: Any) -> Any:
    if isinstance(value, str) and len(args) >= 2:
        _check_replacement(budget, value, str(args[0]), str(args[1]))
    return value


def _format_check(budget: EvaluationBudget, value: Any, args: Any, kwargs: Any) -> Any:
    if isinstance(value, str):
        _check_percent_format(budget, value, kwargs or tuple(args))
    return value


def _count_check(budget: EvaluationBudget, value: Any, args: Any, kwargs: Any) -> Any:
    count = args[0] if args else next(iter(kwargs.values()), 0)
    if _is_int(count):
        budget.check_collection_length(count)
    return _materialized(budget, value)


def _list_check(budget: EvaluationBudget, value: Any, _args: Any, _kwargs: Any) -> Any:
    if isinstance(value, str | range):
        budget.check_collection_length(len(value))
    return _materialized(budget, value)


def _int_check(budget: EvaluationBudget, value: Any, _args: Any, _kwargs: Any) -> Any:
    """Parsing digits takes time quadratic in their number: refuse more digits than the
    integer limit can hold, and charge the rest."""
    if isinstance(value, str):
        digits = len(value.strip())
        budget.check_integer_bits(digits * 10 // 3)
        budget.charge_work(digits // 4)
    return value


def _rendered_check(budget: EvaluationBudget, value: Any, _args: Any, _kwargs: Any) -> Any:
    budget.check_string_length(rendered_size(value, budget))
    return value


_FILTER_CHECKS: dict[str, FilterCheck] = {
    "join": _join_check,
    "sum": _sum_check,
    "center": _center_check,
    "indent": _indent_check,
    "replace": _replace_check,
    "format": _format_check,
    "batch": _count_check,
    "slice": _count_check,
    "list": _list_check,
    "unique": lambda budget, value, args, kwargs: _materialized(budget, value),
    "sort": lambda budget, value, args, kwargs: _materialized(budget, value),
    "int": _int_check,
    "string": _rendered_check,
    "tojson": _rendered_check,
}


def _budgeted_test(test: Callable[..., Any]) -> Callable[..., Any]:
    """Tests are cheap, but ``x is in a_long_list`` scans the list: charge what it reads."""
    if _PassArg.from_obj(test) is not None:
        return test  # the few that take the environment or context only look names up

    def budgeted(value: Any, *args: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_CALL)
        for argument in args:
            _charge_input(budget, argument)
        return test(value, *args)

    return budgeted


# Values: what may be rendered, and how large.


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    current_budget().check_collection_length(len(numbers))
    return numbers


_bounded_range.__name__ = "range"
_GLOBALS = (dict, Cycler, Joiner, Namespace, _bounded_range)


def _iterable(items: Any) -> Iterable[Any]:
    if isinstance(items, Undefined):
        str(items)  # a StrictUndefined raises "'x' is undefined"
    return items  # type: ignore[no-any-return]


def rendered_size(value: Any, budget: EvaluationBudget) -> int:
    """How long ``str(value)`` would be, at least; stops, refusing, once it is too long.
    Refuses values that are not plain data: their text would be a Python representation."""
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        budget.charge_work(1)
        if isinstance(item, str):
            size += len(item) + 2
        elif item is None or isinstance(item, bool):
            size += 5
        elif isinstance(item, int):
            size += item.bit_length() // 3 + 1
        elif isinstance(item, float):
            check_finite(item)
            size += 8
        elif isinstance(item, list | tuple):
            size += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            size += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            raise EvaluationError(_unrenderable(item))
        budget.check_string_length(size)
    return size


def _renderable(value: Any, budget: EvaluationBudget) -> str:
    """``value`` as text for the user: plain data only, within the string limit."""
    if isinstance(value, str):
        return value
    if isinstance(value, Undefined):
        return str(value)  # a StrictUndefined raises "'x' is undefined"
    rendered_size(value, budget)
    return str(value)


@pass_context
def _finalize(_context: Context, value: Any) -> str:
    budget = current_budget()
    text = _renderable(value, budget)
    budget.charge_work(WORK_PER_CALL)
    budget.charge_bytes(len(text))
    return text


_FUNCTION_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    type,
    Macro,
)


def _unrenderable(value: Any) -> str:
    if isinstance(value, range):
        return "a range cannot be shown as text; apply |list first"
    if isinstance(value, types.GeneratorType | Iterator):
        return "a sequence being computed cannot be shown as text; apply |list first"
    if isinstance(value, _FUNCTION_TYPES):
        name = getattr(value, "__name__", type(value).__name__)
        return f"'{name}' is a function; call it instead of showing it"
    return f"a value of type '{type(value).__name__}' cannot be shown as text"
