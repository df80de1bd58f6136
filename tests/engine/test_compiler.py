import json
import time
from importlib import resources
from typing import Any

import pytest

from app.engine.compiler import DefinitionLimits, InvalidDefinition, compile_workflow
from tests.support import BOOKING, flow

END = ("end", {"type": "end"})


def problems(definition: Any) -> dict[str, str]:
    with pytest.raises(InvalidDefinition) as caught:
        compile_workflow(definition)
    found: dict[str, str] = {}
    for problem in caught.value.problems:
        found[problem.path] = " | ".join(filter(None, [found.get(problem.path), problem.message]))
    return found


def test_bundled_examples_compile() -> None:
    for name in ("booking", "support_triage", "chat_assistant"):
        spec = json.loads(resources.files("app.examples").joinpath(f"{name}.json").read_text())
        compiled = compile_workflow(spec["definition"])
        assert compiled.start in compiled.nodes


def test_booking_compiles_with_its_limits() -> None:
    compiled = compile_workflow(BOOKING)
    assert compiled.max_steps_per_turn == 100
    assert set(compiled.nodes) == set(BOOKING["nodes"])


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    definition = {
        "start": "ask",
        "extra": True,
        "nodes": {
            "ask": {"type": "input", "save_as": "name", "next": "nowhere", "colour": "red"},
            "greet": {"type": "message", "text": "Hi {{ name ", "next": "ask"},
            "check": {
                "type": "switch",
                "cases": [{"when": "a +", "next": "ask"}],
                "default": "ask",
            },
        },
    }
    found = problems(definition)
    assert set(found) == {
        "extra",
        "nodes.ask.next",
        "nodes.ask.colour",
        "nodes.greet.text",
        "nodes.check.cases[0].when",
        "nodes.greet",
        "nodes.check",
    }
    assert "nowhere" in found["nodes.ask.next"]
    assert "not reachable" in found["nodes.greet"]


@pytest.mark.parametrize(
    ("node", "path", "words"),
    [
        ({"type": "teleport", "next": "end"}, "nodes.n.type", "unknown node type"),
        ({"next": "end"}, "nodes.n.type", "required"),
        ({"type": "message", "next": "end"}, "nodes.n.text", "required"),
        ({"type": "message", "text": 5, "next": "end"}, "nodes.n.text", "Expected `str`"),
        ({"type": "set", "values": {"x": "1"}, "next": 3}, "nodes.n.next", "Expected `str`"),
        ({"type": "set", "values": {"a b": "1"}, "next": "end"}, "nodes.n.values", "invalid key"),
        (
            {"type": "set", "values": {"x": "(1"}, "next": "end"},
            "nodes.n.values.x",
            "does not compile",
        ),
        (
            {"type": "input", "save_as": "x", "validate": {"pattern": "(["}, "next": "end"},
            "nodes.n.validate.pattern",
            "regular expression",
        ),
        (
            {"type": "input", "save_as": "x", "validate": {"max_length": 0}, "next": "end"},
            "nodes.n.validate.max_length",
            ">= 1",
        ),
        (
            {"type": "input", "save_as": "x", "validate": {"choices": "red"}, "next": "end"},
            "nodes.n.validate.choices",
            "Expected `array",
        ),
        ({"type": "input", "save_as": "history", "next": "end"}, "nodes.n.save_as", "reserved"),
        (
            {
                "type": "switch",
                "cases": [{"when": "true", "next": "end", "x": 1}],
                "default": "end",
            },
            "nodes.n.cases[0]",
            "unknown field",
        ),
        ({"type": "switch", "cases": [], "default": "ghost"}, "nodes.n.default", "names no node"),
        ({"type": "fail", "error": "{% if %}"}, "nodes.n.error", "does not compile"),
        (
            {"type": "llm", "prompt": "hi", "save_as": "r", "next": "end", "temperature": 5},
            "nodes.n.temperature",
            "<= 2",
        ),
        ({"type": "end", "output": {"x": "1 +"}}, "nodes.n.output.x", "does not compile"),
        ("not an object", "nodes.n", "must be an object"),
    ],
)
def test_node_problems_carry_their_field_path(node: Any, path: str, words: str) -> None:
    found = problems(flow(("n", node), END))
    assert path in found, found
    assert words in found[path]


def test_start_must_name_a_node() -> None:
    assert "names no node" in problems(flow(END) | {"start": "ghost"})["start"]
    assert "required" in problems({"nodes": dict([END])})["start"]


def test_definition_and_nodes_must_be_objects() -> None:
    assert problems([]) == {"definition": "must be an object"}
    assert "required" in problems({"start": "a"})["nodes"]
    assert "object" in problems({"start": "a", "nodes": []})["nodes"]


def test_node_ids_must_match_the_pattern() -> None:
    found = problems(
        {"start": "end", "nodes": {"end": {"type": "end"}, "bad id!": {"type": "end"}}}
    )
    assert "must match" in found["nodes.bad id!"]


def test_limits_are_bounded() -> None:
    found = problems(flow(END, limits={"max_steps_per_turn": 10_001}))
    assert "<= 10000" in found["limits.max_steps_per_turn"]
    assert "limits.max_steps_per_turn" in problems(flow(END, limits={"max_steps_per_turn": 0}))


def test_at_most_500_nodes() -> None:
    nodes = {f"n{i}": {"type": "message", "text": "x", "next": f"n{i + 1}"} for i in range(500)}
    nodes["n500"] = {"type": "end"}
    assert "at most 500" in problems({"start": "n0", "nodes": nodes})["nodes"]


def test_unreachable_nodes_are_problems_even_behind_a_broken_node() -> None:
    definition = flow(
        ("a", {"type": "message", "next": "b"}),  # broken: no text, but it still leads to b
        ("b", {"type": "end"}),
        ("orphan", {"type": "end"}),
    )
    found = problems(definition)
    assert "nodes.b" not in found
    assert "not reachable" in found["nodes.orphan"]


def message_flow(text: str) -> dict[str, Any]:
    return flow(("say", {"type": "message", "text": text, "next": "end"}), END)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ " + "(" * 80 + "1" + ")" * 80 + " }}", "nested"),
        ("{% for i in x %}" * 21 + "{% endfor %}" * 21, "nested more than"),
        ("{% if x %}" * 100 + "{% endif %}" * 100, "nested more than"),
        ("{{ a" + ".b" * 2000 + " }}", "nested more than"),
        ("{{ " + "[" * 5000 + "]" * 5000 + " }}", "nested"),
        ("{% include 'other' %}", "cannot include"),
        ("{% extends 'base' %}", "cannot extend"),
        ("{% import 'macros' as m %}", "cannot import"),
        ("{% block b %}{% endblock %}", "blocks are not supported"),
        ("{% for x in y recursive %}{{ loop(x) }}{% endfor %}", "recursive loops"),
        ("{{ range(10**5) | tandem_iterate(0, 0) | list }}", "No filter named"),
    ],
)
def test_templates_that_cannot_be_bounded_are_refused_with_their_path(
    template: str, reason: str
) -> None:
    found = problems(message_flow(template))
    assert list(found) == ["nodes.say.text"]
    assert reason in found["nodes.say.text"]


def test_deeply_nested_expressions_are_refused_with_their_path() -> None:
    definition = flow(
        ("calc", {"type": "set", "values": {"x": "(" * 80 + "1" + ")" * 80}, "next": "end"}), END
    )
    found = problems(definition)
    assert list(found) == ["nodes.calc.values.x"]


def test_publishing_never_evaluates_the_definition() -> None:
    # Jinja2 folds constants while compiling unless told not to: this took 27 s and 660 MB.
    started = time.perf_counter()
    compile_workflow(message_flow("{{ [1] | slice(30000000) | list | length }}"))
    compile_workflow(message_flow("{{ ((10**1000)**1000)**10 }}"))
    assert time.perf_counter() - started < 1.0


def test_the_total_template_source_of_a_definition_is_bounded() -> None:
    nodes = {
        f"n{i}": {"type": "message", "text": "{{ a }} " * 1000, "next": f"n{i + 1}"}
        for i in range(20)
    }
    nodes["n20"] = {"type": "end"}
    started = time.perf_counter()
    found = problems({"start": "n0", "nodes": nodes})
    assert time.perf_counter() - started < 1.0  # refused before compiling anything
    assert list(found) == ["nodes"]
    assert "161280 characters" in found["nodes"] and "131072" in found["nodes"]
    tight = DefinitionLimits(max_template_characters=10)
    with pytest.raises(InvalidDefinition):
        compile_workflow(message_flow("{{ a }} and {{ b }}"), tight)
    assert compile_workflow(message_flow("{{ a }} and {{ b }}")).start == "say"


def test_every_template_and_expression_weighs_more_than_its_length() -> None:
    # Compiling one costs ~0.5 ms however short: 20,000 one-character values took 11 s.
    values = {f"v{i}": "1" for i in range(3000)}
    started = time.perf_counter()
    found = problems(flow(("many", {"type": "set", "values": values, "next": "end"}), END))
    assert time.perf_counter() - started < 1.0
    assert list(found) == ["nodes"] and "195000 characters" in found["nodes"]


def test_the_syntax_nodes_of_a_definition_are_bounded() -> None:
    # Long filter chains compile at ~50 us a node: two templates of them took 3.3 s.
    chain = "{{a" + "|e" * 40 + "}}"
    nodes = {
        f"n{i}": {"type": "message", "text": chain * 150, "next": f"n{i + 1}"} for i in range(8)
    }
    nodes["n8"] = {"type": "end"}
    started = time.perf_counter()
    found = problems({"start": "n0", "nodes": nodes})
    assert time.perf_counter() - started < 3.0
    assert len(found) == 1
    [(path, message)] = found.items()
    assert path.startswith("nodes.n") and "(limit max_template_nodes)" in message


def test_patterns_run_in_linear_time_and_backtracking_features_are_refused() -> None:
    ask = {"type": "input", "save_as": "x", "next": "end"}
    refused = problems(flow(("ask", {**ask, "validate": {"pattern": "^(a)\\1$"}}), END))
    assert list(refused) == ["nodes.ask.validate.pattern"]
    assert "bad regular expression" in refused["nodes.ask.validate.pattern"]
    lookbehind = problems(flow(("ask", {**ask, "validate": {"pattern": "(?<=a)b"}}), END))
    assert list(lookbehind) == ["nodes.ask.validate.pattern"]
    compiled = compile_workflow(flow(("ask", {**ask, "validate": {"pattern": "^(a+)+$"}}), END))
    pattern = compiled.nodes["ask"].pattern
    assert pattern is not None
    started = time.perf_counter()
    assert not pattern.search("a" * 30_000 + "!")  # Python's re: longer than the universe
    assert pattern.search("a" * 30_000)
    assert time.perf_counter() - started < 0.5


def test_a_broken_nodes_targets_are_still_checked() -> None:
    # save_as is missing, and next names no node: both are reported at once.
    found = problems(flow(("ask", {"type": "input", "prompt": "x", "next": "gone"})))
    assert found == {
        "nodes.ask.save_as": "is required",
        "nodes.ask.next": "names no node: 'gone'",
    }
