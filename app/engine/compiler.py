"""Validation and compilation of workflow definitions.

A definition is checked in full before it is stored, and every problem is
reported at once with the path of the offending field. The same pass compiles
every template, expression and pattern, so a published version (which never
changes) is compiled once and reused by every turn.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from jinja2 import TemplateError

from app.engine.definition import (
    MAX_NODES,
    NODE_ID_PATTERN,
    NODE_TYPES,
    Definition,
    EndNode,
    InputNode,
    Limits,
    LlmNode,
    Node,
    PauseNode,
    SetNode,
    SwitchNode,
    successors,
)
from app.engine.patterns import Pattern, PatternError, compile_pattern
from app.engine.sandbox.template_checks import TemplateLimits, syntax_allowance
from app.engine.templating import Evaluator, Renderer, compile_expression, compile_template

RESERVED_NAMES = frozenset({"history"})
_NODE_ID = re.compile(NODE_ID_PATTERN)
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?) - at `(?P<path>[^`]*)`(?: in `(?P<parent>[^`]*)`)?$")


@dataclass(frozen=True, slots=True)
class DefinitionLimits:
    """Limits on what one definition may hold (README, "Limits"), checked at publish."""

    # Compiling Jinja2 costs about 10 us per syntax node, and about 0.5 ms per template or
    # expression however short: each counts SOURCE_OVERHEAD characters more. This keeps a
    # publish under ~2 s.
    max_template_characters: int = 131_072
    # Syntax nodes of all templates and expressions: 10 to 50 us and ~4 KB (while compiling)
    # each, so the largest definition compiles in ~1 s within ~64 MB.
    max_template_nodes: int = 15_000
    template: TemplateLimits = field(default_factory=TemplateLimits)


DEFAULT_LIMITS = DefinitionLimits()
SOURCE_OVERHEAD = 64


class Problem(msgspec.Struct):
    """One thing wrong with a definition, and where."""

    path: str
    message: str


class InvalidDefinition(Exception):
    """A definition that cannot be published; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the definition")
        self.problems = problems


@dataclass(slots=True)
class CompiledNode:
    """A node with its templates, expressions and pattern compiled, keyed by field path."""

    id: str
    spec: Node
    templates: dict[str, Renderer] = field(default_factory=dict)
    expressions: dict[str, Evaluator] = field(default_factory=dict)
    pattern: Pattern | None = None


@dataclass(slots=True)
class CompiledWorkflow:
    start: str
    nodes: dict[str, CompiledNode]
    max_steps_per_turn: int
    # What its templates and expressions weigh (see DefinitionLimits): what it holds in
    # memory once compiled grows with it.
    source_characters: int = 0


def compile_workflow(raw: Any, limits: DefinitionLimits = DEFAULT_LIMITS) -> CompiledWorkflow:
    """Validate a raw (JSON) definition and compile it; raises ``InvalidDefinition``."""
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise InvalidDefinition([Problem("definition", "must be an object")])
    for key in raw.keys() - set(Definition.__struct_fields__):
        problems.append(Problem(str(key), "unknown field"))

    max_steps = _check_limits(raw.get("limits"), problems)
    nodes = _check_nodes(raw.get("nodes"), problems)
    start = raw.get("start")
    if start is None:
        problems.append(Problem("start", "is required"))
    elif not isinstance(start, str):
        problems.append(Problem("start", "must be a string naming a node"))
    elif nodes is not None and start not in nodes:
        problems.append(Problem("start", f"names no node: '{start}'"))

    compiled: dict[str, CompiledNode] = {}
    weight = _source_weight(nodes) if nodes is not None else 0
    if nodes is not None and _within_source_limit(weight, limits, problems):
        with syntax_allowance(limits.max_template_nodes) as nodes_left:
            for node_id, spec in nodes.items():
                if spec is not None:
                    compiled[node_id] = _compile_node(node_id, spec, set(nodes), limits, problems)
                else:  # broken, but where it leads is still checked: every problem at once
                    problems.extend(_dangling_raw_targets(node_id, raw["nodes"][node_id], nodes))
                if nodes_left[0] < 0:  # said once, at the template that went past the limit
                    break
        if isinstance(start, str) and start in nodes:
            problems.extend(_unreachable(start, nodes, raw["nodes"]))

    if problems:
        raise InvalidDefinition(problems)
    assert isinstance(start, str)
    return CompiledWorkflow(
        start=start, nodes=compiled, max_steps_per_turn=max_steps, source_characters=weight
    )


def _check_limits(raw: Any, problems: list[Problem]) -> int:
    if raw is None:
        return Limits().max_steps_per_turn
    try:
        return msgspec.convert(raw, Limits).max_steps_per_turn
    except msgspec.ValidationError as error:
        problems.append(_problem_from(error, "limits"))
        return Limits().max_steps_per_turn


def _check_nodes(raw: Any, problems: list[Problem]) -> dict[str, Node | None] | None:
    """Each node checked on its own; a node that fails maps to None (known, but broken)."""
    if raw is None:
        problems.append(Problem("nodes", "is required"))
        return None
    if not isinstance(raw, dict):
        problems.append(Problem("nodes", "must be an object mapping node ids to nodes"))
        return None
    if not raw:
        problems.append(Problem("nodes", "must hold at least one node"))
    if len(raw) > MAX_NODES:
        problems.append(Problem("nodes", f"holds {len(raw)} nodes; at most {MAX_NODES} allowed"))
    nodes: dict[str, Node | None] = {}
    for node_id, raw_node in raw.items():
        if not _NODE_ID.match(node_id):
            problems.append(Problem(f"nodes.{node_id}", f"node id must match {NODE_ID_PATTERN}"))
        nodes[node_id] = _check_node(f"nodes.{node_id}", raw_node, problems)
    return nodes


def _check_node(path: str, raw: Any, problems: list[Problem]) -> Node | None:
    if not isinstance(raw, dict):
        problems.append(Problem(path, "must be an object"))
        return None
    node_type = raw.get("type")
    if node_type is None:
        problems.append(Problem(f"{path}.type", "is required"))
        return None
    cls = NODE_TYPES.get(node_type) if isinstance(node_type, str) else None
    if cls is None:
        expected = ", ".join(NODE_TYPES)
        problems.append(
            Problem(f"{path}.type", f"unknown node type {node_type!r}; one of {expected}")
        )
        return None

    fields = {info.name: info for info in msgspec.structs.fields(cls)}
    for key in raw.keys() - fields.keys() - {"type"}:
        article = "an" if node_type[0] in "aeiou" else "a"
        problems.append(Problem(f"{path}.{key}", f"unknown field for {article} '{node_type}' node"))
    # An unknown field is reported but does not hide the node's other problems.
    found = len(problems)
    for name, info in fields.items():
        if name not in raw:
            if info.required:
                problems.append(Problem(f"{path}.{name}", "is required"))
            continue
        try:
            msgspec.convert(raw[name], info.type)
        except msgspec.ValidationError as error:
            problems.append(_problem_from(error, f"{path}.{name}"))
    if len(problems) > found:
        return None
    known = {key: value for key, value in raw.items() if key in fields or key == "type"}
    node: Node = msgspec.convert(known, cls)  # type: ignore[assignment]
    return node


def _source_weight(nodes: dict[str, Node | None]) -> int:
    """The characters of all templates and expressions, each counting SOURCE_OVERHEAD more."""
    return sum(
        len(source) + SOURCE_OVERHEAD
        for spec in nodes.values()
        if spec is not None
        for _, source in (*_templates(spec), *_expressions(spec))
    )


def _within_source_limit(total: int, limits: DefinitionLimits, problems: list[Problem]) -> bool:
    """Compiling is the costly part of publishing: refuse too much source before starting."""
    if total <= limits.max_template_characters:
        return True
    problems.append(
        Problem(
            "nodes",
            f"templates and expressions weigh {total} characters in all (each counts "
            f"{SOURCE_OVERHEAD} more than its length); at most "
            f"{limits.max_template_characters} allowed",
        )
    )
    return False


def _compile_node(
    node_id: str,
    spec: Node,
    known: set[str],
    limits: DefinitionLimits,
    problems: list[Problem],
) -> CompiledNode:
    path = f"nodes.{node_id}"
    compiled = CompiledNode(id=node_id, spec=spec)
    for field_path, target in successors(spec):
        if target not in known:
            problems.append(Problem(f"{path}.{field_path}", f"names no node: '{target}'"))
    for field_path, name in _saved_names(spec):
        if name in RESERVED_NAMES:
            problems.append(Problem(f"{path}.{field_path}", f"'{name}' is reserved"))
    for field_path, source in _templates(spec):
        try:
            compiled.templates[field_path] = compile_template(source, limits.template)
        except TemplateError as error:
            problems.append(Problem(f"{path}.{field_path}", f"template does not compile: {error}"))
    for field_path, source in _expressions(spec):
        try:
            compiled.expressions[field_path] = compile_expression(source, limits.template)
        except TemplateError as error:
            problems.append(
                Problem(f"{path}.{field_path}", f"expression does not compile: {error}")
            )
    if isinstance(spec, InputNode) and spec.validate and spec.validate.pattern is not None:
        try:
            compiled.pattern = compile_pattern(
                spec.validate.pattern, ignore_case=spec.validate.ignore_case
            )
        except PatternError as error:
            problems.append(Problem(f"{path}.validate.pattern", f"bad regular expression: {error}"))
    return compiled


def _templates(spec: Node) -> Iterator[tuple[str, str]]:
    for name in ("text", "prompt", "retry_prompt", "system", "error"):
        source = getattr(spec, name, None)
        if isinstance(source, str):
            yield name, source


def _expressions(spec: Node) -> Iterator[tuple[str, str]]:
    match spec:
        case SwitchNode():
            for index, case in enumerate(spec.cases):
                yield f"cases[{index}].when", case.when
        case SetNode():
            for name, source in spec.values.items():
                yield f"values.{name}", source
        case EndNode() if spec.output:
            for name, source in spec.output.items():
                yield f"output.{name}", source


def _saved_names(spec: Node) -> Iterator[tuple[str, str]]:
    match spec:
        case InputNode():
            yield "save_as", spec.save_as
            if spec.save_data_as:
                yield "save_data_as", spec.save_data_as
        case PauseNode() if spec.save_as:
            yield "save_as", spec.save_as
        case LlmNode():
            yield "save_as", spec.save_as
        case SetNode():
            for name in spec.values:
                yield f"values.{name}", name


def _unreachable(start: str, nodes: dict[str, Node | None], raw: dict[str, Any]) -> list[Problem]:
    """Nodes no path from start reaches; a broken node's targets are read from its raw fields."""
    seen = {start}
    frontier = [start]
    while frontier:
        node_id = frontier.pop()
        spec = nodes.get(node_id)
        targets = [t for _, t in successors(spec)] if spec else _raw_targets(raw.get(node_id))
        for target in targets:
            if target in nodes and target not in seen:
                seen.add(target)
                frontier.append(target)
    return [
        Problem(f"nodes.{node_id}", "is not reachable from start")
        for node_id, spec in nodes.items()
        if node_id not in seen and spec is not None
    ]


def _raw_targets(raw: Any) -> list[str]:
    return [target for _, target in _raw_successors(raw)]


def _raw_successors(raw: Any) -> list[tuple[str, str]]:
    """A broken node's targets, read from its raw fields, each with its field's path."""
    if not isinstance(raw, dict):
        return []
    cases = raw.get("cases")
    if not isinstance(cases, list):
        cases = []
    candidates = [("next", raw.get("next")), ("default", raw.get("default"))]
    candidates += [
        (f"cases[{index}].next", case.get("next"))
        for index, case in enumerate(cases)
        if isinstance(case, dict)
    ]
    return [(path, target) for path, target in candidates if isinstance(target, str)]


def _dangling_raw_targets(node_id: str, raw: Any, nodes: dict[str, Node | None]) -> list[Problem]:
    return [
        Problem(f"nodes.{node_id}.{path}", f"names no node: '{target}'")
        for path, target in _raw_successors(raw)
        if target not in nodes
    ]


def _problem_from(error: msgspec.ValidationError, base: str) -> Problem:
    text = str(error)
    match = _MSGSPEC_PATH.match(text)
    if match is None:
        return Problem(base, text)
    message, path, parent = match["message"], match["path"], match["parent"]
    if parent is not None:  # "- at `key` in `$.x`": a mapping key is wrong
        return Problem(base + parent.removeprefix("$"), f"invalid key: {message}")
    return Problem(base + path.removeprefix("$"), message)
