"""What a template's values cost: their text, the searches and the operations that could
build something large, estimated *before* the work is done."""

import math
import re
import types
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import Undefined
from jinja2.runtime import Macro
from markupsafe import Markup

from app.engine.budget import (
    CHARACTERS_PER_WORK_UNIT,
    EvaluationBudget,
    EvaluationError,
    check_finite,
)

_NUMBERS = re.compile(r"\d+")
# Where str.splitlines() breaks a line, and what str.split() takes for white space.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_WHITE_SPACE = (
    " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(code) for code in range(0x2000, 0x200B))
)
# A character whose repr or JSON is an escape takes up to this many characters.
_ESCAPED_CHARACTER = 12
# A plain string's text is checked at about 3 ns a character.
_PLAIN_CHARACTERS_PER_WORK_UNIT = 64
# Measuring an item's text (rendered_size) takes about 0.5 us, 4 to 8 units of work.
WORK_PER_RENDERED_ITEM = 6
# Numbers from 2**61 - 1 on hash to the same values as smaller ones: keys a tenant could
# choose so that every one collides, making a dict or a set quadratic.
_LARGEST_HASHED_NUMBER = 2**61 - 2
# Unicode case mapping and character classes go at about 5-10 ns a character.
_NON_ASCII_CHARACTERS_PER_WORK_UNIT = 8
# A forward substring search goes through the haystack at about 5 ns a character at worst.
_SEARCHED_CHARACTERS_PER_WORK_UNIT = 8

_FUNCTION_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    type,
    Macro,
)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def iterable(items: Any) -> Iterable[Any]:
    if isinstance(items, Undefined):
        str(items)  # a StrictUndefined raises "'x' is undefined"
    return items  # type: ignore[no-any-return]


def charge_input(budget: EvaluationBudget, value: Any, *, per_character: bool = False) -> None:
    """Charge going once through ``value``: a collection per item; a string per 256
    characters (per 8 beyond ASCII), or per character where Python code goes through it
    one at a time."""
    if isinstance(value, str):
        if per_character:
            budget.charge_work(len(value))
        elif value.isascii():
            budget.charge_work(len(value) // CHARACTERS_PER_WORK_UNIT)
        else:  # case mapping and character classes beyond ASCII: ~5-10 ns a character
            budget.charge_work(len(value) // _NON_ASCII_CHARACTERS_PER_WORK_UNIT)
    elif isinstance(value, list | tuple | dict | range):
        budget.charge_work(len(value))


def charge_search(
    budget: EvaluationBudget, haystack: str, needle: str, *, reverse: bool = False
) -> None:
    """What a substring search can cost, measured on CPython 3.11: a forward search (find,
    in, count, split, replace) up to ~5 ns per character of the haystack, whatever the
    needle; a reverse search (rfind, rsplit, …) up to the haystack times the needle."""
    if reverse:
        budget.charge_work(len(haystack) * len(needle) // CHARACTERS_PER_WORK_UNIT)
    else:
        budget.charge_work(len(haystack) // _SEARCHED_CHARACTERS_PER_WORK_UNIT)


def materialized(budget: EvaluationBudget, value: Any) -> Any:
    """A lazy input (a generator, a range, a dict view) as a list, counted as it is built;
    strings, lists, tuples and dicts as they are."""
    if isinstance(value, str | list | tuple | dict | Undefined):
        return value
    items = []
    for item in iterable(value):
        budget.charge_work(1)
        items.append(item)
        budget.check_collection_length(len(items))
    return items


def rendered_size(value: Any, budget: EvaluationBudget) -> int:
    """How long ``str(value)`` (or its JSON) can be; stops, refusing, once it is too long.
    Refuses values that are not plain data: their text would be a Python representation."""
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        budget.charge_work(WORK_PER_RENDERED_ITEM)
        if isinstance(item, str):
            plain = item.isascii() and item.isprintable()
            size += 2 + len(item) * (1 if plain else _ESCAPED_CHARACTER)
            # Its text is checked (and, shown, escaped) character by character.
            budget.charge_work(len(item) // (_PLAIN_CHARACTERS_PER_WORK_UNIT if plain else 8))
        elif item is None or isinstance(item, bool):
            size += 5
        elif isinstance(item, int):
            size += item.bit_length() // 3 + 2
            charge_decimal(budget, item)
        elif isinstance(item, float):
            check_finite(item)
            size += 24
        elif isinstance(item, list | tuple):
            size += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            size += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            raise EvaluationError(unrenderable(item))
        budget.check_string_length(size)
    return size


def charge_decimal(budget: EvaluationBudget, number: int) -> None:
    """Writing an integer in decimal takes time quadratic in its digits (~23 us for 4,096
    bits); small ones cost nothing more."""
    bits = number.bit_length()
    if bits > 64:
        budget.charge_work((bits * bits) // 30_000)


def renderable(value: Any, budget: EvaluationBudget) -> str:
    """``value`` as text for the user: plain data only, within the string limit."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        charge_decimal(budget, value)
        return str(value)
    if isinstance(value, Undefined):
        return str(value)  # a StrictUndefined raises "'x' is undefined"
    rendered_size(value, budget)
    return str(value)


def unrenderable(value: Any) -> str:
    if isinstance(value, range):
        return "a range cannot be shown as text; apply |list first"
    if isinstance(value, types.GeneratorType | Iterator):
        return "a sequence being computed cannot be shown as text; apply |list first"
    if isinstance(value, _FUNCTION_TYPES):
        name = getattr(value, "__name__", type(value).__name__)
        return f"'{name}' is a function; call it instead of showing it"
    return f"a value of type '{type(value).__name__}' cannot be shown as text"


def check_keys(budget: EvaluationBudget, keys: Iterable[Any]) -> None:
    """Refuse keys that could be made to collide in a dict or a set (numbers hash modulo
    2**61 - 1; strings hash with a secret seed, so cannot be aimed). Tuples are looked into."""
    stack = list(keys)
    while stack:
        key = stack.pop()
        budget.charge_work(1)
        if isinstance(key, int | float) and not isinstance(key, bool):
            if abs(key) > _LARGEST_HASHED_NUMBER:
                raise EvaluationError("numbers beyond 2**61 cannot be used as keys or made unique")
        elif isinstance(key, tuple):
            stack.extend(key)


def line_breaks(text: str) -> int:
    """How many lines ``text.splitlines()`` makes, at most (counted without making them)."""
    return sum(text.count(mark) for mark in _LINE_BREAKS) + 1


def split_pieces(text: str, separator: Any, most: Any) -> int:
    """How many pieces ``text.split(separator, most)`` makes, at most."""
    if isinstance(separator, str) and separator:
        pieces = text.count(separator) + 1
    elif len(text) < 2:
        pieces = 1
    else:
        pieces = sum(text.count(space) for space in _WHITE_SPACE) + 1
    if is_int(most) and most >= 0:
        pieces = min(pieces, most + 1)
    return pieces


# Operations whose result could be large: refused before they are done.


def check_binary(budget: EvaluationBudget, operator_: str, left: Any, right: Any) -> None:
    if is_int(left) and is_int(right) and operator_ in ("*", "//", "%"):
        # Multiplying or dividing big integers costs their sizes multiplied.
        budget.charge_work(left.bit_length() * right.bit_length() // 200_000)
    if isinstance(left, Markup) or isinstance(right, Markup):
        # Markup escapes the other side: up to five characters for one (&quot;).
        other = right if isinstance(left, Markup) else left
        if isinstance(other, str):
            budget.check_string_length(len(left if other is right else right) + 5 * len(other))
            budget.charge_work(len(other) // 32)
    if operator_ == "**" and is_int(left) and is_int(right) and right > 0 and abs(left) > 1:
        # The result has right * log2(|left|) bits, give or take one: estimated, not built;
        # computing it costs about its size times the base's.
        bits = math.ceil(right * math.log2(abs(left)))
        budget.check_integer_bits(bits)
        budget.charge_work(left.bit_length() * bits // 200_000)
    elif operator_ == "*":
        if is_int(left) and is_int(right):
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
        check_percent_format(budget, left, right)


def _check_repetition(budget: EvaluationBudget, sequence: Any, times: Any) -> None:
    if not isinstance(times, int):
        return
    if isinstance(sequence, str):
        budget.check_string_length(len(sequence) * times)
    elif isinstance(sequence, list | tuple):
        budget.check_collection_length(len(sequence) * times)


def check_percent_format(budget: EvaluationBudget, template: str, values: Any) -> None:
    """``template % values`` is at most the template, every number written in it (any may
    be a width or a precision), and, for each ``%``, the largest value it could show and
    the largest width a ``*`` could take: an upper bound that needs no parsing of
    conversions (whose keys may nest parentheses)."""
    shown = (
        values.values()
        if isinstance(values, dict)
        else values
        if isinstance(values, tuple)
        else (values,)
    )
    largest = max((rendered_size(value, budget) for value in shown), default=0)
    widths = sum(int(number) for number in _NUMBERS.findall(template))
    stars = max((abs(value) for value in shown if is_int(value)), default=0)
    charge_input(budget, template)
    budget.check_string_length(len(template) + widths)
    budget.check_string_length(
        len(template) + widths + template.count("%") * largest + template.count("*") * stars
    )


def check_replacement(budget: EvaluationBudget, text: str, old: str, new: str) -> None:
    charge_search(budget, text, old)
    occurrences = text.count(old) if old else len(text) + 1
    budget.check_string_length(len(text) + occurrences * max(len(new) - len(old), 0))


def check_join(budget: EvaluationBudget, items: Any, separator: Any) -> None:
    """Joining ``items`` (a string joins its characters) with ``separator``."""
    if not isinstance(separator, str):
        return
    if isinstance(items, str):
        size = len(items)
        count = len(items)
    elif isinstance(items, list | tuple | dict):
        size = sum(rendered_size(item, budget) for item in items)
        count = len(items)
    else:
        return
    budget.check_string_length(size + len(separator) * max(count - 1, 0))
