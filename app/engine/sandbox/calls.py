"""What a template may call, and what each call is checked and charged for first.

An allowlist: Jinja2's globals and the helpers it hands out (macros, ``loop``,
``cycler``, ``joiner``, ``namespace``), and the plain methods of strings, lists
and dicts. Each string method that could build a large result or search
slowly is checked before it runs; everything else is refused.
"""

import types
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import Undefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext, Macro
from jinja2.utils import Cycler, Joiner, Namespace

from app.engine.budget import CHARACTERS_PER_WORK_UNIT, EvaluationBudget, current_budget
from app.engine.sandbox.values import (
    charge_input,
    charge_search,
    check_join,
    check_keys,
    check_replacement,
    is_int,
    line_breaks,
    materialized,
    split_pieces,
)

# A check sees the method's object and the call's arguments, and may hand back other
# positional arguments (a lazy sequence, made a list it has counted).
Check = Callable[[EvaluationBudget, Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...] | None]


def bounded_range(*args: int) -> range:
    numbers = range(*args)
    current_budget().check_collection_length(len(numbers))
    return numbers


bounded_range.__name__ = "range"
GLOBALS: dict[str, Any] = {
    "range": bounded_range,
    "dict": dict,
    "cycler": Cycler,
    "joiner": Joiner,
    "namespace": Namespace,
}


def check_call(
    budget: EvaluationBudget, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Check and charge a call of ``obj`` before it is made; the positional arguments to
    make it with. SecurityError if ``obj`` may not be called."""
    if isinstance(obj, Undefined):
        str(obj)  # a StrictUndefined raises "'x' is undefined"
    # Unpacked arguments (f(*items), f(**mapping)) are copied: charge them.
    budget.charge_work(len(args) + len(kwargs))
    if isinstance(obj, types.BuiltinMethodType):
        owner = getattr(obj, "__self__", None)
        methods = _METHODS.get(type(owner)) if owner is not None else None
        check = methods.get(obj.__name__) if methods is not None else None
        if check is not None:
            charge_input(budget, owner)
            return check(budget, owner, args, kwargs) or args
    elif isinstance(obj, types.MethodType):
        allowed = _HELPER_METHODS.get(type(obj.__self__))
        if allowed is not None and obj.__name__ in allowed:
            _compared(budget, None, args, kwargs)  # loop.changed compares its arguments
            return args
    elif isinstance(obj, Macro | Joiner):
        return args
    elif any(obj is known for known in GLOBALS.values()):
        # namespace(d), dict(d), cycler(*items) copy what they are given: a lazy argument
        # (a generator) is made a counted list first, so that it can be checked.
        if obj is not bounded_range:
            args = tuple(
                materialized(budget, value) if isinstance(value, Iterator | range) else value
                for value in args
            )
        for value in (*args, *kwargs.values()):
            if isinstance(value, list | tuple | dict | str):
                budget.charge_data(value, produced=True)
        if obj is dict or obj is Namespace:
            _check_dict_keys(budget, args, kwargs)
        return args
    name = getattr(obj, "__name__", type(obj).__name__)
    raise SecurityError(f"{name!r} cannot be called in a template")


def _check_dict_keys(
    budget: EvaluationBudget, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    if not args:
        return
    source = args[0]
    if isinstance(source, dict):
        check_keys(budget, source.keys())
    elif isinstance(source, list | tuple):
        check_keys(budget, [pair[0] for pair in source if isinstance(pair, list | tuple) and pair])


def _no_check(*_: Any) -> None:
    return None


def _width(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    if args and is_int(args[0]):
        budget.check_string_length(max(args[0], len(text)))


def _replace(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        check_replacement(budget, text, args[0], args[1])


def _join(budget: EvaluationBudget, separator: str, args: Any, kwargs: Any) -> tuple[Any, ...]:
    items = materialized(budget, args[0]) if args else ()
    check_join(budget, items, separator)
    return (items,)


def _split(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    separator = args[0] if args else kwargs.get("sep")
    most = args[1] if len(args) > 1 else kwargs.get("maxsplit", -1)
    if isinstance(separator, str):
        charge_search(budget, text, separator)
    budget.check_collection_length(split_pieces(text, separator, most))


def _reverse_split(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    separator = args[0] if args else kwargs.get("sep")
    if isinstance(separator, str):
        charge_search(budget, text, separator, reverse=True)
    _split(budget, text, args, kwargs)


def _search(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    if args and isinstance(args[0], str):
        charge_search(budget, text, args[0])


def _reverse_search(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    if args and isinstance(args[0], str):
        charge_search(budget, text, args[0], reverse=True)


def _compared(budget: EvaluationBudget, owner: Any, args: Any, kwargs: Any) -> None:
    """Comparing or hashing nested values goes through every item they hold."""
    for value in (owner, *args):
        if isinstance(value, list | tuple | dict):
            budget.charge_data(value, produced=False)


def _strip(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    """Each character stripped is looked up in ``chars`` one by one."""
    chars = args[0] if args else kwargs.get("chars")
    if isinstance(chars, str):
        budget.charge_work(len(text) * len(chars) // CHARACTERS_PER_WORK_UNIT)


def _affix(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    """startswith/endswith take a tuple of candidates, each compared."""
    if args and isinstance(args[0], tuple):
        budget.charge_work(len(args[0]))
        budget.charge_work(
            sum(len(item) for item in args[0] if isinstance(item, str)) // CHARACTERS_PER_WORK_UNIT
        )


def _splitlines(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    budget.check_collection_length(line_breaks(text))


def _expandtabs(budget: EvaluationBudget, text: str, args: Any, kwargs: Any) -> None:
    size = args[0] if args else kwargs.get("tabsize", 8)
    tab_size = size if is_int(size) else 8
    budget.check_string_length(len(text) + text.count("\t") * max(tab_size, 0))


_STR_METHODS: dict[str, Check] = {
    **dict.fromkeys(
        (
            *("capitalize", "casefold", "isalnum", "isalpha", "isascii"),
            *("isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle"),
            *("isupper", "lower", "removeprefix", "removesuffix"),
            *("swapcase", "title", "upper"),
        ),
        _no_check,
    ),
    **dict.fromkeys(("count", "find", "index", "partition"), _search),
    **dict.fromkeys(("strip", "lstrip", "rstrip"), _strip),
    **dict.fromkeys(("startswith", "endswith"), _affix),
    **dict.fromkeys(("rfind", "rindex", "rpartition"), _reverse_search),
    **dict.fromkeys(("center", "ljust", "rjust", "zfill"), _width),
    "replace": _replace,
    "join": _join,
    "split": _split,
    "rsplit": _reverse_split,
    "splitlines": _splitlines,
    "expandtabs": _expandtabs,
}
_METHODS: dict[type, dict[str, Check]] = {
    str: _STR_METHODS,
    dict: {**dict.fromkeys(("items", "keys", "values"), _no_check), "get": _compared},
    # Not index(): its error message holds the representation of what was not found.
    list: {"count": _compared},
    tuple: {"count": _compared},
}
_HELPER_METHODS: dict[type, frozenset[str]] = {
    LoopContext: frozenset({"cycle", "changed"}),
    Cycler: frozenset({"next", "reset"}),
}
