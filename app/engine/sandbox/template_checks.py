"""What a template may contain, and the budget charges woven into it before it compiles.

A template's syntax tree is checked before Jinja2 turns it into Python: how deeply
it nests (deep trees exhaust the parser's and Python's own stacks), and no
statement that needs a template loader or recurses without bound. Then every
place where a template can repeat work gets a charge against the turn's budget:

- a ``for`` loop goes through the ``tandem_iterate`` hook, which charges each
  item with the size of the loop's body (and its literal text);
- a macro or a ``call`` block charges its body's size each time it runs;
- ``~`` concatenation goes through ``tandem_concat``, which refuses a
  result longer than the string limit before building it;
- slices (``items[1:]``, which Jinja2 does not pass through the sandbox) go through
  ``tandem_slice``, which charges the copy;
- comparisons go through ``tandem_compare``, which charges what they
  scan (``x in a_long_list`` is as much work as a loop over it);
- lists, tuples and dicts written in a template go through ``tandem_built``, which
  charges every item they hold (a reference repeated is counted each time) and
  refuses one nested too deeply, so that no value is ever too large or too deep to
  compare, hash, show or store.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.visitor import NodeTransformer

from app.engine.budget import (
    WORK_PER_ITERATION,
    WORK_PER_LOOKUP,
    WORK_PER_MACRO_PARAMETER,
    WORK_PER_MACRO_RUN,
    WORK_PER_RENDER,
    WORK_PER_SYNTAX_NODE,
)

# The hooks below are filters of the sandbox that templates themselves may not name.
HOOK_PREFIX = "tandem_"


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """Limits on a template's shape, checked when a definition is published."""

    max_template_nesting: int = 48
    max_nested_blocks: int = 8


_REFUSED_STATEMENTS: dict[type[nodes.Node], str] = {
    nodes.Extends: "templates cannot extend other templates",
    nodes.Include: "templates cannot include other templates",
    nodes.Import: "templates cannot import other templates",
    nodes.FromImport: "templates cannot import other templates",
    nodes.Block: "blocks are not supported (there is no template inheritance)",
    nodes.ScopedEvalContextModifier: "autoescape blocks are not supported",
    nodes.EvalContextModifier: "autoescape blocks are not supported",
}
# Statements whose bodies charge for themselves once instrumented.
_SELF_CHARGING = (nodes.For, nodes.Macro, nodes.CallBlock)
# Statements that Python compiles into nested blocks (CPython allows 20 of them).
_BLOCK_STATEMENTS = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.With)


# What is left of the syntax nodes the definition being compiled may hold (see
# ``syntax_allowance``): compiling costs 10 to 50 us a node.
_allowance: ContextVar[list[int] | None] = ContextVar("syntax_allowance", default=None)


@contextmanager
def syntax_allowance(syntax_nodes: int) -> Iterator[list[int]]:
    """Within, the templates compiled hold at most ``syntax_nodes`` nodes together; the
    list yielded holds what is left (below zero once exceeded)."""
    left = [syntax_nodes]
    token = _allowance.set(left)
    try:
        yield left
    finally:
        _allowance.reset(token)


def check_template(tree: nodes.Template, limits: TemplateLimits) -> None:
    """Raise ``TemplateSyntaxError`` for what a template may not contain. Iterative, so
    that any depth is measured without recursion."""
    allowance = _allowance.get()
    stack: list[tuple[nodes.Node, int, int]] = [(tree, 1, 0)]
    while stack:
        node, depth, blocks = stack.pop()
        if allowance is not None:
            allowance[0] -= 1
            if allowance[0] < 0:
                raise TemplateSyntaxError(
                    "the definition's templates and expressions hold too many syntax nodes "
                    "(limit max_template_nodes)",
                    node.lineno,
                )
        if depth > limits.max_template_nesting:
            raise TemplateSyntaxError(
                f"nested more than {limits.max_template_nesting} levels deep", node.lineno
            )
        refused = _REFUSED_STATEMENTS.get(type(node))
        if refused is not None:
            raise TemplateSyntaxError(refused, node.lineno)
        if isinstance(node, nodes.Filter) and node.name.startswith(HOOK_PREFIX):
            raise TemplateSyntaxError(f"No filter named {node.name!r}.", node.lineno)
        if isinstance(node, nodes.For) and node.recursive:
            raise TemplateSyntaxError("recursive loops are not supported", node.lineno)
        if isinstance(node, _BLOCK_STATEMENTS):
            blocks += 1
            if blocks > limits.max_nested_blocks:
                raise TemplateSyntaxError(
                    f"loops, macros and blocks are nested more than "
                    f"{limits.max_nested_blocks} deep",
                    node.lineno,
                )
        stack.extend((child, depth + 1, blocks) for child in node.iter_child_nodes())


def instrument(tree: nodes.Template) -> nodes.Template:
    """Weave the budget's charges into a checked template (see the module docstring)."""
    result = _Instrumenter().visit(tree)
    assert isinstance(result, nodes.Template)
    return result


class _Instrumenter(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        work, literal = _cost(WORK_PER_ITERATION, node.body, node.test)
        self.generic_visit(node)
        iterable = node.iter
        assert isinstance(iterable, nodes.Expr)
        node.iter = _hook("tandem_iterate", iterable, nodes.Const(work), nodes.Const(literal))
        return node

    def visit_Macro(self, node: nodes.Macro) -> nodes.Node:
        return self._charge_each_run(node)

    def visit_CallBlock(self, node: nodes.CallBlock) -> nodes.Node:
        return self._charge_each_run(node)

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _hook("tandem_concat", *node.nodes)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _hook("tandem_built", node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        pairs: list[nodes.Expr] = []
        for pair in node.items:
            pairs += [pair.key, pair.value]
        return _hook("tandem_dict", nodes.Const(None), *pairs)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _hook("tandem_built", node) if node.ctx == "load" else node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        cut = node.arg
        if not isinstance(cut, nodes.Slice):
            return node
        bounds = [part or nodes.Const(None) for part in (cut.start, cut.stop, cut.step)]
        return _hook("tandem_slice", node.node, *bounds)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        operands: list[nodes.Expr] = [node.expr]
        for operand in node.ops:
            operands += [nodes.Const(operand.op), operand.expr]
        return _hook("tandem_compare", *operands)

    def visit_Template(self, node: nodes.Template) -> nodes.Node:
        """Each render is charged for what runs once in it: the nodes outside loops and
        macros (a turn may render one template thousands of times)."""
        work, literal = _cost(WORK_PER_RENDER, node.body, outside_loops=True)
        self.generic_visit(node)
        charge = _hook("tandem_charge", nodes.Const(work), nodes.Const(literal))
        node.body.insert(0, nodes.ExprStmt(charge, lineno=1))
        return node

    def _charge_each_run(self, node: nodes.Macro | nodes.CallBlock) -> nodes.Node:
        # Defaults are evaluated at every call that leaves them out.
        defaults: list[nodes.Node] = [*node.defaults, *node.args]
        # Each parameter left out raises and catches a KeyError in Jinja2's macro call.
        base = WORK_PER_MACRO_RUN + WORK_PER_MACRO_PARAMETER * len(node.args)
        work, literal = _cost(base, node.body, defaults)
        self.generic_visit(node)
        charge = _hook("tandem_charge", nodes.Const(work), nodes.Const(literal))
        node.body.insert(0, nodes.ExprStmt(charge, lineno=node.lineno))
        return node


def _hook(name: str, first: nodes.Expr, *rest: nodes.Expr) -> nodes.Filter:
    """A call of one of the sandbox's hooks. A filter, not a call: Jinja2 calls filters
    directly, while a call would go through the sandbox's checks meant for templates."""
    return nodes.Filter(first, name, list(rest), [], None, None)


def _cost(
    base: int, *parts: list[nodes.Node] | nodes.Node | None, outside_loops: bool = False
) -> tuple[int, int]:
    """The work of running ``parts`` once, besides ``base``, and their literal text;
    ``outside_loops``: not counting what loops and macros charge for themselves."""
    work, literal = base, 0
    for node in _walk(parts, outside_loops):
        lookup = isinstance(node, nodes.Getattr | nodes.Getitem | nodes.NSRef)
        work += WORK_PER_LOOKUP if lookup else WORK_PER_SYNTAX_NODE
        if isinstance(node, nodes.TemplateData):
            literal += len(node.data)
    return work, literal


def _walk(
    parts: tuple[list[nodes.Node] | nodes.Node | None, ...], outside_loops: bool = False
) -> Iterator[nodes.Node]:
    stack: list[nodes.Node] = []
    for part in parts:
        if isinstance(part, list):
            stack.extend(part)
        elif part is not None:
            stack.append(part)
    while stack:
        node = stack.pop()
        yield node
        if outside_loops and isinstance(node, _SELF_CHARGING):
            continue
        stack.extend(node.iter_child_nodes())
