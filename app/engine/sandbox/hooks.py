"""The hooks that instrumented templates call (see ``template_checks.py``): each charges
what Jinja2 would otherwise do outside the sandbox."""

import operator
from collections.abc import Callable, Iterator
from typing import Any

from app.engine.budget import WORK_PER_OPERATOR, EvaluationError, current_budget
from app.engine.sandbox.values import (
    charge_input,
    charge_search,
    check_keys,
    iterable,
    renderable,
)

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


def iterate(items: Any, work_per_item: int, literal_per_item: int) -> Iterator[Any]:
    """A for loop's items, each charged with the size of the loop's body."""
    budget = current_budget()
    _check_amounts(work_per_item, literal_per_item)
    for item in iterable(items):
        budget.charge_work(work_per_item)
        budget.charge_bytes(literal_per_item)
        yield item


def charge(work: int, literal: int) -> str:
    """A render's, a macro's or a call block's run, charged with the size of its body."""
    budget = current_budget()
    _check_amounts(work, literal)
    budget.charge_work(work)
    budget.charge_bytes(literal)
    return ""


def concat(first: Any, *parts: Any) -> str:
    """``a ~ b ~ c``, refused before it is built if it would be too long."""
    budget = current_budget()
    budget.charge_work(WORK_PER_OPERATOR * len(parts))
    texts = [renderable(part, budget) for part in (first, *parts)]
    budget.check_string_length(sum(map(len, texts)))
    return str(budget.charge_value("".join(texts)))


def captured(pieces: list[str]) -> str:
    """The text of a ``{% set %}…{% endset %}`` block or of a macro: its pieces were charged
    as they were produced; the whole must still be one string within the limit."""
    current_budget().check_string_length(sum(map(len, pieces)))
    return "".join(pieces)


def cut(obj: Any, start: Any, stop: Any, step: Any) -> Any:
    """``items[a:b:c]``: a copy, charged as the new value it is."""
    return current_budget().charge_value(obj[start:stop:step])


def built(value: Any) -> Any:
    """A list or tuple written in a template, charged for every item it holds."""
    current_budget().charge_data(value)
    return value


def keyed(_unused: Any, *pairs: Any) -> dict[Any, Any]:
    """A dict written in a template, ``key, value, key, value, …``: its keys are checked
    before any is hashed, then the dict is charged for every item it holds."""
    budget = current_budget()
    keys = pairs[0::2]
    budget.charge_data(keys, produced=False)  # before hashing: refuses keys nested too deeply
    check_keys(budget, keys)
    built = dict(zip(keys, pairs[1::2], strict=True))
    budget.charge_data(built)
    return built


def _check_amounts(*amounts: Any) -> None:
    if not all(isinstance(amount, int) and amount >= 0 for amount in amounts):
        raise EvaluationError("the budget's hooks take only what templates are compiled with")


def compare(left: Any, *operations: Any) -> bool:
    """``left op1 right1 op2 right2 ...``, chained as Jinja2 compares. Every operand has
    been evaluated already (a hook takes values); the comparisons stop at the first false.
    Each is charged for what it goes through: nested values item by item, a substring
    search by its length."""
    budget = current_budget()
    for index in range(0, len(operations), 2):
        name, right = operations[index], operations[index + 1]
        budget.charge_work(WORK_PER_OPERATOR)
        for operand in (left, right):
            if isinstance(operand, list | tuple | dict):
                budget.charge_data(operand, produced=False)
        if name in ("in", "notin") and isinstance(right, dict):
            check_keys(budget, (left,))
        if isinstance(left, str) and isinstance(right, str):
            if name in ("in", "notin"):
                charge_search(budget, right, left)
            else:
                charge_input(budget, left)
        if not _COMPARISONS[name](left, right):
            return False
        left = right
    return True
