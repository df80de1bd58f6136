"""The Jinja2 environment that workflow templates and expressions run in.

Jinja2's immutable sandbox keeps a definition away from Python internals, files
and the network. This environment also keeps it from stalling the server or
exhausting its memory: every call, filter and operator charges the turn's
budget (``app/engine/budget.py``), an operation whose result would be too large
is refused before it is built, only an allowlist of functions and methods can
be called (``calls.py``), and nothing but plain data can be rendered (never a
Python object's representation). Compile-time constant folding is off, so
publishing a definition never evaluates it.
"""

import operator
import types
from collections.abc import Callable, MutableMapping
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateRuntimeError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Namespace

from app.engine.budget import WORK_PER_CALL, WORK_PER_OPERATOR, current_budget
from app.engine.sandbox import hooks
from app.engine.sandbox.calls import GLOBALS, check_call
from app.engine.sandbox.filters import budgeted_filters, budgeted_tests
from app.engine.sandbox.template_checks import (
    HOOK_PREFIX,
    TemplateLimits,
    check_template,
    instrument,
)
from app.engine.sandbox.undefined import TandemUndefined
from app.engine.sandbox.values import check_binary, renderable

_BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


_DICT_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))


class TandemSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, bounded by the current evaluation budget."""

    intercepted_binops = frozenset(_BINARY_OPERATORS)

    def __init__(self, template_limits: TemplateLimits) -> None:
        super().__init__(
            undefined=TandemUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            optimized=False,
            finalize=_finalize,
        )
        self.template_limits = template_limits
        self.globals.clear()
        self.globals.update(GLOBALS)
        self.filters = budgeted_filters()
        self.filters.update(
            tandem_iterate=hooks.iterate,
            tandem_charge=hooks.charge,
            tandem_concat=hooks.concat,
            tandem_compare=hooks.compare,
            tandem_slice=hooks.cut,
            tandem_built=hooks.built,
            tandem_dict=hooks.keyed,
        )
        self.tests = budgeted_tests()  # type: ignore[assignment]
        # Compiled templates join the text of set blocks and macros with this.
        self.concat = hooks.captured  # type: ignore[assignment]

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as a plain dict rather than Jinja2's ``ChainMap`` over the
        environment's: every render and evaluation copies them into its context, and a
        ChainMap is copied key by key in Python (a third of evaluating ``name``). Nothing
        changes the globals once the environment is built, so the copy says the same."""
        return {**self.globals, **(d or {})}

    # Compiling: check the tree, then weave in the budget's charges.

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        check_template(source, self.template_limits)
        try:
            return super()._generate(instrument(source), name, filename, defer_init)
        except ValueError as error:  # a literal Python cannot write back (4,300+ digits)
            raise TemplateSyntaxError(f"cannot be compiled: {error}", 1) from None

    def _compile(self, source: str, filename: str) -> types.CodeType:
        try:
            return super()._compile(source, filename)
        except (SyntaxError, RecursionError, MemoryError, ValueError) as error:  # Python's limits
            raise TemplateSyntaxError(f"too complex to compile ({error})", 1) from None

    # Running: what every call, operator and lookup goes through.

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_OPERATOR)
        check_binary(budget, operator_, left, right)
        return budget.charge_value(_BINARY_OPERATORS[operator_](left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.charge_work(WORK_PER_CALL)
        args = check_call(budget, __obj, args, kwargs)
        result = __context.call(__obj, *args, **kwargs)
        if isinstance(result, _DICT_VIEWS):  # d.keys(): a list, charged, not a live view
            result = list(result)  # type: ignore[call-overload]
        return budget.charge_value(result)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is Namespace:
            # A namespace answers every attribute through Python code (microseconds each):
            # read its values directly.
            values = object.__getattribute__(obj, "_Namespace__attrs")
            if attribute in values:
                return values[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_filter(
        self,
        name: str,
        value: Any,
        args: Any = None,
        kwargs: Any = None,
        context: Context | None = None,
        eval_ctx: Any = None,
    ) -> Any:
        # Filters named at run time (map('upper'), select('odd')) are the template's own:
        # the budget's hooks are not among them.
        if name.startswith(HOOK_PREFIX):
            raise TemplateRuntimeError(f"No filter named {name!r}.")
        return super().call_filter(name, value, args, kwargs, context, eval_ctx)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # A cycler's items are a tuple of whatever it was given, built without a charge.
        if isinstance(obj, Cycler) and attr == "items":
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call_test(
        self,
        name: str,
        value: Any,
        args: Any = None,
        kwargs: Any = None,
        context: Context | None = None,
        eval_ctx: Any = None,
    ) -> Any:
        # select(x) names a test; anything but a name would be quoted in the error.
        if not isinstance(name, str):
            raise TemplateRuntimeError("a test is named by a string, like select('odd')")
        return super().call_test(name, value, args, kwargs, context, eval_ctx)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if getattr(value, "__name__", None) in ("format", "format_map") and isinstance(
            getattr(value, "__self__", None), str
        ):
            raise SecurityError("str.format is not available; use the format filter or ~")
        return None


@pass_context
def _finalize(_context: Context, value: Any) -> str:
    budget = current_budget()
    text = renderable(value, budget)
    budget.charge_work(WORK_PER_CALL)
    budget.charge_bytes(len(text))
    return text
