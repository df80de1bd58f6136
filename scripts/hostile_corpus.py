"""The hostile corpus that ``scripts/hostile.py`` replays, as data.

A case is what one hostile tenant (or one unlucky client) does: publish a
definition, then send turns and other requests. Its dangerous sizes come from
``Sizes``, so that the default replay finishes in minutes on today's server
while ``--dangerous`` (or ``--size name=value``) replays the full sizes of
issue 6. To add a case, append a ``Case`` to the list ``corpus`` returns.
"""

from dataclasses import dataclass, field, fields
from typing import Any

ZERO_ID = "0" * 24


@dataclass(frozen=True, slots=True)
class Turn:
    """``POST /v1/workflows/{workflow_id}/execute`` with ``body``.

    ``resume`` adds the case's last ``run_id`` to the body; ``copies`` sends that
    many first turns at once, each starting a run of its own.
    """

    body: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    copies: int = 1


@dataclass(frozen=True, slots=True)
class ReadRun:
    """``GET /v1/runs/{run_id}`` of the case's last run: what the run looks like afterwards."""


@dataclass(frozen=True, slots=True)
class Raw:
    """Any request, as raw bytes; ``{workflow_id}`` and ``{run_id}`` in the path or body
    are replaced by the case's."""

    label: str
    method: str
    path: str
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class DropStreamedTurn:
    """``tries`` times, each on a run of its own: start the run, send a streamed resume
    (``Accept: text/event-stream``) and close the connection at once, by turns cleanly
    and by a reset, wait ``settle_seconds``, then resume normally. The resume answers
    ``200`` if the dropped turn completed or let go of the run, ``409`` if it left the
    run claimed."""

    tries: int = 6
    settle_seconds: float = 0.3


Step = Turn | ReadRun | Raw | DropStreamedTurn


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile act: publish ``definition`` (unless None), then replay ``steps``."""

    name: str
    about: str
    definition: dict[str, Any] | None
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class Sizes:
    """The knobs of the dangerous cases. The defaults keep each case to seconds and at most
    ~2 GB on today's server; ``FULL_SIZES`` are the sizes issue 6 names, and sizes of the
    same order for the other cases."""

    redos_length: int = 26  # "a" * n + "!" against ^(a+)+$; every 2 more: x4 time
    range_outer: int = 100_000
    range_inner: int = 1_000
    power_exponent: int = 10  # ((10**1000)**1000)**n
    lipsum_paragraphs: int = 20_000
    repeat_count: int = 1_000  # times a 1 MB string is rendered (~2 MB of memory each)
    slice_count: int = 10_000_000  # [1]|slice(n) folded at publish time
    loop_steps: int = 10_000  # steps of one legal looping turn
    loop_turns: int = 4  # such turns at once
    nested_parentheses: int = 80
    nested_for: int = 21
    nested_if: int = 100
    attribute_chain: int = 2_000
    string_doublings: int = 28  # a namespace string doubled n times: 2**n characters
    list_doublings: int = 24  # a list doubled n times: 2**n items, 8 bytes each
    width: int = 100_000_000  # padding asked of center, format and %
    replace_length: int = 10_000  # x|replace('', x) makes ~n*n characters
    macro_depth: int = 19  # a macro calling itself twice: 2**n calls
    join_separator: int = 100  # a 1M-item list joined with a separator this long
    state_values: int = 100  # 1 MB variables set in one node
    json_depth: int = 2_000  # nesting of hostile JSON bodies


FULL_SIZES = Sizes(
    redos_length=28,
    power_exponent=100,
    repeat_count=2_000,
    slice_count=30_000_000,
    string_doublings=40,
    list_doublings=30,
    width=999_999_999,
    replace_length=30_000,
    macro_depth=25,
    join_separator=1_000,
    state_values=500,
)

SIZE_NAMES = tuple(item.name for item in fields(Sizes))


def corpus(sizes: Sizes) -> list[Case]:
    """Every case, in replay order: the freezes and memory blow-ups issue 6 saw, then
    more a hostile tenant would try, then the malformed inputs that answered 500."""
    s = sizes
    return [
        Case(
            "redos_pattern",
            f"validate.pattern ^(a+)+$ against 'a'*{s.redos_length}+'!'",
            _input_workflow({"pattern": "^(a+)+$"}),
            (Turn({"run_input": {"message": "a" * s.redos_length + "!"}}),),
        ),
        Case(
            "nested_range_loops",
            f"for i in range({s.range_outer}), for j in range({s.range_inner}) in a message",
            _message_workflow(
                f"{{% for i in range({s.range_outer}) %}}{{% for j in range({s.range_inner}) %}}"
                "{% endfor %}{% endfor %}"
            ),
            (Turn(),),
        ),
        Case(
            "huge_power_in_when",
            f"((10**1000)**1000)**{s.power_exponent} > 0 in a switch when",
            _switch_workflow(f"((10**1000)**1000)**{s.power_exponent} > 0"),
            (Turn(),),
        ),
        Case(
            "lipsum",
            f"lipsum(n={s.lipsum_paragraphs}) in a message",
            _message_workflow(f"{{{{ lipsum(n={s.lipsum_paragraphs}) }}}}"),
            (Turn(),),
        ),
        Case(
            "repeated_megabyte",
            f"'a'*1000000 rendered {s.repeat_count} times before the text limit is checked",
            _message_workflow(
                f"{{% for i in range({s.repeat_count}) %}}{{{{ 'a'*1000000 }}}}{{% endfor %}}"
            ),
            (Turn(),),
        ),
        Case(
            "publish_constant_folding",
            f"[1]|slice({s.slice_count})|list|length, folded while compiling at publish",
            _message_workflow(f"{{{{ [1]|slice({s.slice_count})|list|length }}}}"),
        ),
        Case(
            "publish_large_definition",
            "a ~1 MiB definition of 500 nodes full of {{ a }}, then one turn through it",
            _large_definition(),
            (Turn({"inputs": {"a": "x"}}),),
        ),
        Case(
            "concurrent_step_loops",
            f"{s.loop_turns} turns at once, each a legal {s.loop_steps}-step loop",
            _loop_workflow(s.loop_steps),
            (Turn(copies=s.loop_turns),),
        ),
        Case(
            "publish_nested_parentheses",
            f"{s.nested_parentheses} nested parentheses in a template",
            _message_workflow(
                "{{ " + "(" * s.nested_parentheses + "1" + ")" * s.nested_parentheses + " }}"
            ),
        ),
        Case(
            "publish_nested_for",
            f"{s.nested_for} nested for loops in a template",
            _message_workflow(
                "{% for i in [1] %}" * s.nested_for + "x" + "{% endfor %}" * s.nested_for
            ),
        ),
        Case(
            "publish_nested_if",
            f"{s.nested_if} nested ifs in a template",
            _message_workflow("{% if true %}" * s.nested_if + "x" + "{% endif %}" * s.nested_if),
        ),
        Case(
            "publish_attribute_chain",
            f"an attribute chain {s.attribute_chain} long in a template",
            _message_workflow("{{ a" + ".b" * s.attribute_chain + " }}"),
        ),
        Case(
            "lone_surrogate",
            "a message rendering '\\ud800' after an input, then the run read back",
            _input_workflow({}, then="{{ '\\ud800' }}"),
            (Turn(), Turn({"run_input": {"message": "go"}}, resume=True), ReadRun()),
        ),
        Case(
            "string_doubling",
            f"a namespace string doubled {s.string_doublings} times with ~",
            _message_workflow(
                "{% set ns = namespace(x='a') %}"
                f"{{% for i in range({s.string_doublings}) %}}{{% set ns.x = ns.x ~ ns.x %}}"
                "{% endfor %}{{ ns.x|length }}"
            ),
            (Turn(),),
        ),
        Case(
            "list_doubling",
            f"a namespace list doubled {s.list_doublings} times with +",
            _message_workflow(
                "{% set ns = namespace(x=[1]) %}"
                f"{{% for i in range({s.list_doublings}) %}}{{% set ns.x = ns.x + ns.x %}}"
                "{% endfor %}{{ ns.x|length }}"
            ),
            (Turn(),),
        ),
        Case(
            "center_width",
            f"'a'|center({s.width})",
            _message_workflow(f"{{{{ 'a'|center({s.width})|length }}}}"),
            (Turn(),),
        ),
        Case(
            "format_width",
            f"'{{:>{s.width}}}'.format(1)",
            _message_workflow(f"{{{{ '{{:>{s.width}}}'.format(1)|length }}}}"),
            (Turn(),),
        ),
        Case(
            "percent_width",
            f"'%{s.width}d' % 1",
            _message_workflow(f"{{{{ ('%{s.width}d' % 1)|length }}}}"),
            (Turn(),),
        ),
        Case(
            "replace_empty_growth",
            f"x|replace('', x) with x {s.replace_length} characters long",
            _message_workflow(
                f"{{% set x = 'a'*{s.replace_length} %}}{{{{ x|replace('', x)|length }}}}"
            ),
            (Turn(),),
        ),
        Case(
            "recursive_macro",
            f"a macro calling itself twice, {s.macro_depth} levels deep",
            _message_workflow(
                "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}"
                f"{{{{ f({s.macro_depth}) }}}}"
            ),
            (Turn(),),
        ),
        Case(
            "unbounded_recursion",
            "a macro calling itself forever",
            _message_workflow("{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}"),
            (Turn(),),
        ),
        Case(
            "join_growth",
            f"('ab'*500000)|list|join of a {s.join_separator}-character separator",
            _message_workflow(f"{{{{ ('ab'*500000)|list|join('x'*{s.join_separator})|length }}}}"),
            (Turn(),),
        ),
        Case(
            "large_state",
            f"{s.state_values} variables of 1 MB set by one node, then the run read back",
            _set_workflow(
                {f"v{i}": f"'a'*1000000 ~ '{i}'" for i in range(s.state_values)},
            ),
            (Turn(), ReadRun()),
        ),
        Case(
            "streamed_turn_dropped",
            "streamed resumes whose client leaves at once, each followed by a resume",
            _input_workflow({}),
            (DropStreamedTurn(),),
        ),
        Case(
            "id_trailing_newline",
            "ids ending in a newline: in a path, a body's run_id, a cursor",
            _input_workflow({}),
            (
                Turn(),
                Raw("run path", "GET", f"/v1/runs/{ZERO_ID}%0A"),
                Raw("workflow path", "GET", "/v1/workflows/{workflow_id}%0A"),
                Raw(
                    "run_id",
                    "POST",
                    "/v1/workflows/{workflow_id}/execute",
                    b'{"run_id": "{run_id}\\n"}',
                ),
                Raw("cursor", "GET", f"/v1/workflows?cursor={ZERO_ID}%0A"),
            ),
        ),
        Case(
            "invalid_utf8",
            "a JSON string holding the byte 0xff",
            _input_workflow({}),
            (
                Raw(
                    "turn",
                    "POST",
                    "/v1/workflows/{workflow_id}/execute",
                    b'{"inputs":{"a":"\xff"}}',
                ),
            ),
        ),
        Case(
            "deeply_nested_json",
            f"JSON nested {s.json_depth} levels as a body, inputs, data and definition",
            _input_workflow({}),
            (
                Turn(),
                Raw("body", "POST", "/v1/workflows/{workflow_id}/execute", _nested(s.json_depth)),
                Raw(
                    "inputs",
                    "POST",
                    "/v1/workflows/{workflow_id}/execute",
                    b'{"inputs": {"a": ' + _nested(s.json_depth) + b"}}",
                ),
                Raw(
                    "data",
                    "POST",
                    "/v1/workflows/{workflow_id}/execute",
                    b'{"run_id": "{run_id}", "run_input": {"message": "m", "data": '
                    + _nested(s.json_depth)
                    + b"}}",
                ),
                Raw(
                    "definition",
                    "POST",
                    "/v1/workflows",
                    b'{"name": "deep", "definition": ' + _nested(s.json_depth) + b"}",
                ),
            ),
        ),
        Case(
            "deep_keys_to_escape",
            "inputs and data nested as deep as allowed, with keys MongoDB refuses at the bottom",
            _input_workflow({}),
            (
                Raw(
                    "inputs",
                    "POST",
                    "/v1/workflows/{workflow_id}/execute",
                    b'{"inputs": {"a": ' + _nested_key_to_escape(30) + b"}}",
                ),
                Turn(),
                Raw(
                    "data",
                    "POST",
                    "/v1/workflows/{workflow_id}/execute",
                    b'{"run_id": "{run_id}", "run_input": {"message": "m", "data": '
                    + _nested_key_to_escape(30)
                    + b"}}",
                ),
            ),
        ),
    ]


def _message_workflow(text: str) -> dict[str, Any]:
    return {
        "start": "say",
        "nodes": {
            "say": {"type": "message", "text": text, "next": "done"},
            "done": {"type": "end"},
        },
    }


def _input_workflow(validate: dict[str, Any], then: str | None = None) -> dict[str, Any]:
    """An input (checked by ``validate``) that goes on to a message ``then`` and ends; with
    neither, an input that asks again and again."""
    ask: dict[str, Any] = {"type": "input", "prompt": "?", "save_as": "answer", "next": "ask"}
    nodes: dict[str, Any] = {"ask": ask}
    if validate:
        ask["validate"] = validate
    if then is not None:
        nodes["say"] = {"type": "message", "text": then, "next": "done"}
    if validate or then is not None:
        ask["next"] = "say" if then is not None else "done"
        nodes["done"] = {"type": "end"}
    return {"start": "ask", "nodes": nodes}


def _switch_workflow(when: str) -> dict[str, Any]:
    return {
        "start": "check",
        "nodes": {
            "check": {
                "type": "switch",
                "cases": [{"when": when, "next": "done"}],
                "default": "done",
            },
            "done": {"type": "end"},
        },
    }


def _set_workflow(values: dict[str, str]) -> dict[str, Any]:
    return {
        "start": "assign",
        "nodes": {
            "assign": {"type": "set", "values": values, "next": "done"},
            "done": {"type": "end"},
        },
    }


def _loop_workflow(steps: int) -> dict[str, Any]:
    """A loop that completes in exactly ``steps`` steps: start, (count, check) * n, end."""
    rounds = (steps - 2) // 2
    return {
        "start": "begin",
        "limits": {"max_steps_per_turn": steps},
        "nodes": {
            "begin": {"type": "set", "values": {"i": "0"}, "next": "count"},
            "count": {"type": "set", "values": {"i": "i + 1"}, "next": "check"},
            "check": {
                "type": "switch",
                "cases": [{"when": f"i < {rounds}", "next": "count"}],
                "default": "done",
            },
            "done": {"type": "end", "output": {"i": "i"}},
        },
    }


def _large_definition(nodes: int = 500, body_bytes: int = 1_000_000) -> dict[str, Any]:
    """``nodes`` nodes (a chain of messages, then an end) whose JSON is about ``body_bytes``."""
    per_node = body_bytes // nodes - 80  # the node's JSON around its text
    text = "{{ a }}" * (per_node // len("{{ a }}"))
    chain: dict[str, Any] = {
        f"n{i:03}": {"type": "message", "text": text, "next": f"n{i + 1:03}"}
        for i in range(nodes - 1)
    }
    chain[f"n{nodes - 1:03}"] = {"type": "end"}
    return {"start": "n000", "limits": {"max_steps_per_turn": nodes}, "nodes": chain}


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_key_to_escape(depth: int) -> bytes:
    """Objects and arrays nested ``depth`` levels, with keys holding ``$`` and ``.`` at
    the bottom: stored escaped (every part visited a bounded number of times)."""
    inner = b'{"$set": {"a.b": 1}}'
    for level in range(depth - 1):
        inner = b'{"k": ' + inner + b"}" if level % 2 else b"[" + inner + b"]"
    return inner
