"""The workflow language as msgspec Structs: one Struct per node type.

The Structs are the declarative schema that validation checks raw definitions
against (see ``validation.py``); field names and types follow
``workflow-language.md``.
"""

from typing import Annotated

import msgspec
from msgspec import Meta

NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
VARIABLE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_NODES = 500
DEFAULT_MAX_STEPS_PER_TURN = 100
MAX_STEPS_PER_TURN_LIMIT = 10_000

NodeId = Annotated[str, Meta(pattern=NODE_ID_PATTERN)]
VariableName = Annotated[str, Meta(pattern=VARIABLE_NAME_PATTERN)]
Template = Annotated[str, Meta(max_length=65_536)]
Expression = Annotated[str, Meta(min_length=1, max_length=4_096)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class InputValidation(_Strict):
    pattern: Annotated[str, Meta(max_length=1_024)] | None = None
    choices: Annotated[list[Annotated[str, Meta(max_length=1_024)]], Meta(min_length=1)] | None = (
        None
    )
    max_length: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    ignore_case: bool = False


class SwitchCase(_Strict):
    when: Expression
    next: NodeId


class _Node(_Strict, tag_field="type"):
    pass


class MessageNode(_Node, tag="message"):
    text: Template
    next: NodeId


class InputNode(_Node, tag="input"):
    save_as: VariableName
    next: NodeId
    prompt: Template | None = None
    save_data_as: VariableName | None = None
    validate: InputValidation | None = None
    retry_prompt: Template | None = None


class PauseNode(_Node, tag="pause"):
    next: NodeId
    prompt: Template | None = None
    save_as: VariableName | None = None


class SwitchNode(_Node, tag="switch"):
    cases: list[SwitchCase]
    default: NodeId


class SetNode(_Node, tag="set"):
    values: dict[VariableName, Expression]
    next: NodeId


class LlmNode(_Node, tag="llm"):
    prompt: Template
    save_as: VariableName
    next: NodeId
    system: Template | None = None
    model: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    history: bool = False
    show: bool = True


class ShowStateNode(_Node, tag="show_state"):
    next: NodeId
    keys: list[VariableName] | None = None


class EndNode(_Node, tag="end"):
    output: dict[VariableName, Expression] | None = None


class FailNode(_Node, tag="fail"):
    error: Template


Node = (
    MessageNode
    | InputNode
    | PauseNode
    | SwitchNode
    | SetNode
    | LlmNode
    | ShowStateNode
    | EndNode
    | FailNode
)

NODE_TYPES: dict[str, type[_Node]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        MessageNode,
        InputNode,
        PauseNode,
        SwitchNode,
        SetNode,
        LlmNode,
        ShowStateNode,
        EndNode,
        FailNode,
    )
}


class Limits(_Strict):
    max_steps_per_turn: Annotated[int, Meta(ge=1, le=MAX_STEPS_PER_TURN_LIMIT)] = (
        DEFAULT_MAX_STEPS_PER_TURN
    )


class Definition(_Strict):
    start: NodeId
    nodes: dict[str, Node]
    limits: Limits = msgspec.field(default_factory=Limits)


def successors(node: Node) -> list[tuple[str, str]]:
    """The nodes a node can go to, each with the field (relative path) naming it."""
    match node:
        case SwitchNode():
            targets = [(f"cases[{i}].next", case.next) for i, case in enumerate(node.cases)]
            return [*targets, ("default", node.default)]
        case EndNode() | FailNode():
            return []
        case _:
            return [("next", node.next)]
