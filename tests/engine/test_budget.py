"""A hostile definition cannot stall a turn or exhaust memory: each attack ends the run
``failed`` with a ``run_failed`` that names the node and the limit, quickly."""

import asyncio
import time
from typing import Any

import pytest

from app.engine.budget import WORK_PER_CALL, EvaluationBudget, EvaluationLimits
from app.engine.compiler import InvalidDefinition, compile_workflow
from app.engine.state import RunStatus
from app.engine.templating import compile_template
from tests.engine.helpers import Conversation, texts

END = ("end", {"type": "end"})


def saying(text: str) -> dict[str, Any]:
    return {
        "start": "say",
        "nodes": {"say": {"type": "message", "text": text, "next": "end"}, "end": {"type": "end"}},
    }


def setting(expression: str) -> dict[str, Any]:
    return {
        "start": "calc",
        "nodes": {
            "calc": {"type": "set", "values": {"x": expression}, "next": "end"},
            "end": {"type": "end", "output": {"x": "x"}},
        },
    }


async def failure_of(definition: dict[str, Any], **conversation: Any) -> str:
    """Run a first turn that must fail; the run_failed error."""
    started = time.perf_counter()
    outcome = await Conversation(definition, **conversation).send()
    elapsed = time.perf_counter() - started
    assert outcome.state.status == RunStatus.FAILED, outcome.events
    failed = outcome.events[-1]
    assert failed.type == "run_failed"
    assert failed.data["node_id"] == failed.node_id
    # A bound, not a benchmark: unbounded, each of these runs for seconds or minutes.
    assert elapsed < 2.0
    error: str = failed.data["error"]
    assert error.startswith(f"Node '{failed.node_id}' failed: ")
    return error


@pytest.mark.parametrize(
    ("template", "limit"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
            "max_render_work",
        ),
        ("{% for i in range(2000) %}{{ 'a' * 1000000 }}{% endfor %}", "max_string_length"),
        ("{% for i in range(2000) %}{{ 'a' * 900000 }}{% endfor %}", "max_string_length"),
        ("{{ [1] | slice(30000000) | list | length }}", "max_collection_length"),
        (
            "{% set ns = namespace(x='a') %}{% for i in range(40) %}"
            "{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x | length }}",
            "max_string_length",
        ),
        ("{{ 'a' | center(10**9) }}", "max_string_length"),
        ("{{ 'a'.ljust(10**9) }}", "max_string_length"),
        ("{{ '%999999999d' % 1 }}", "max_string_length"),
        ("{{ '%s' | format('a' * 999999) ~ 'bc' }}", "max_string_length"),
        ("{% set x = 'a' * 1000 %}{{ x | replace('', x) | length }}", "max_string_length"),
        ("{% set x = 'a' * 1001 %}{{ x.replace('a', x) | length }}", "max_string_length"),
        ("{{ ('ab' * 5000) | list | join('x' * 1000) }}", "max_string_length"),
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
            "{{ f(25) }}",
            "max_render_work",
        ),
        (
            "{% set l = range(100000) | list %}{% for i in range(100000) %}"
            "{% if i in l %}{% endif %}{% endfor %}",
            "max_render_work",
        ),
        ("{{ ((10**1000)**1000)**10 > 0 }}", "max_integer_bits"),
        (
            "{% set x %}{% for i in range(100000) %}" + "a" * 60000 + "{% endfor %}{% endset %}",
            "max_produced_bytes",
        ),
        (
            "{% set big = 'a' * 1000000 %}{% set x %}{% for i in range(100000) %}{{ big }}"
            "{% endfor %}{% endset %}",
            "max_produced_bytes",
        ),
        ("{% set big = 'a' * 100000 %}{{ [big] * 100000 }}", "max_render_work"),
        ("{% set big = 'a' * 100000 %}{{ [big] * 20 }}", "max_string_length"),
        ("{% set big = 'é' * 100000 %}{{ ([big] * 10) | tojson }}", "max_string_length"),
        ("{{ ('a ' * 500000).split() | length }}", "max_collection_length"),
        (
            "{% set l = [range(1000) | list] * 101 %}{{ l | sum(start=[]) | length }}",
            "max_render_work",
        ),
    ],
)
async def test_hostile_templates_fail_the_run_naming_the_limit(template: str, limit: str) -> None:
    error = await failure_of(saying(template))
    assert f"(limit {limit})" in error


@pytest.mark.parametrize(
    ("template", "limit"),
    [
        (
            "{% set l = range(100000) | list %}{% for i in range(100000) %}"
            "{% set y = l[1:] %}{% endfor %}",
            "max_render_work",
        ),
        ("{% for i in range(100000) %}{{ ('9' * 1200) | int > 0 }}{% endfor %}", "max_render_work"),
        ("{{ ('9' * 4300) | int }}", "max_integer_bits"),
    ],
)
async def test_copies_and_conversions_are_charged(template: str, limit: str) -> None:
    assert f"(limit {limit})" in await failure_of(saying(template))


async def test_a_value_that_repeats_itself_is_charged_for_every_copy() -> None:
    # Thirty doublings are a few references in memory, but 2**30 items once stored.
    definition = {
        "start": "double",
        "limits": {"max_steps_per_turn": 1000},
        "nodes": {
            "double": {"type": "set", "values": {"x": "[x, x]", "n": "n + 1"}, "next": "check"},
            "check": {
                "type": "switch",
                "cases": [{"when": "n < 30", "next": "double"}],
                "default": "end",
            },
            "end": {"type": "end", "output": {"x": "x"}},
        },
    }
    error = await failure_of(definition, variables={"x": "a" * 1000, "n": 0})
    assert "(limit max_" in error


async def test_showing_a_large_state_again_and_again_is_charged() -> None:
    definition = {
        "start": "make",
        "limits": {"max_steps_per_turn": 10000},
        "nodes": {
            "make": {"type": "set", "values": {"big": "'a' * 1000000"}, "next": "show"},
            "show": {"type": "show_state", "next": "show"},
        },
    }
    assert "(limit max_produced_bytes)" in await failure_of(definition)


async def test_the_budget_is_per_turn_across_nodes() -> None:
    # Each render is small, but the turn renders 2,000 of them: together they exceed the work.
    heavy = "{% for i in range(2000) %}{{ i }}{% endfor %}"
    definition = {
        "start": "say",
        "limits": {"max_steps_per_turn": 10000},
        "nodes": {"say": {"type": "message", "text": heavy, "next": "say"}},
    }
    error = await failure_of(definition)
    assert "(limit max_work)" in error


async def test_a_sum_of_lists_is_refused_before_it_is_longer_than_the_limit() -> None:
    template = "{% set l = [range(10) | list] * 20 %}{{ l | sum(start=[]) | length }}"
    limits = EvaluationLimits(max_collection_length=150)
    error = await failure_of(saying(template), evaluation_limits=limits)
    assert "a collection of 200 items" in error and "(limit max_collection_length)" in error


async def test_limits_are_configurable() -> None:
    template = "{% for i in range(300) %}{{ i }}{% endfor %}"
    outcome = await Conversation(saying(template)).send()
    assert outcome.state.status == RunStatus.COMPLETED
    tight = EvaluationLimits(max_work=1_000)
    assert "(limit max_work)" in await failure_of(saying(template), evaluation_limits=tight)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ range }}", "'range' is a function"),
        ("{{ joiner() }}", "a value of type 'Joiner' cannot be shown"),
        ("{{ 'x'.upper }}", "'upper' is a function"),
        ("{{ [1, 2] | map('string') }}", "apply |list first"),
        ("{{ range(3) }}", "apply |list first"),
        ("{{ {'a': range} }}", "'range' is a function"),
        ("{{ lipsum(n=20000) }}", "'lipsum' is undefined"),
        ("{{ '{:>999999999}'.format(1) }}", "str.format is not available"),
        ("{{ ''.__class__ }}", "unsafe"),
        ("{{ 'x'.encode() }}", "cannot be called"),
        ("{{ '\ud800' }}", "lone surrogate"),
        ("{{ 1e308 * 10 }}", "not finite"),
        ("{{ 'inf' | float }}", "not finite"),
    ],
)
async def test_python_objects_never_reach_a_user(template: str, message: str) -> None:
    assert message in await failure_of(saying(template))


async def test_non_finite_numbers_are_a_runtime_error_naming_the_node() -> None:
    error = await failure_of(setting("1e308 * 10"))
    assert error == "Node 'calc' failed: the number inf is not finite"
    assert "not finite" in await failure_of(setting("'nan' | float"))


async def test_ordinary_templates_still_work() -> None:
    template = (
        "{% set ns = namespace(total=0) %}{% for item in items if item.n > 1 %}"
        "{% set ns.total = ns.total + item.n %}{{ loop.index }}:{{ item.name | upper }} "
        "{% endfor %}= {{ ns.total }}; {{ items | map(attribute='name') | join(', ') }}; "
        "{{ '%05.1f' | format(3.14159) }}; {{ 'a-b'.split('-') }}; {{ {'k': [1, 2.5, none]} }}"
        "{% macro twice(x) %}{{ x }}{{ x }}{% endmacro %}; {{ twice('ab') }}"
    )
    items = [{"name": "tea", "n": 2}, {"name": "jam", "n": 1}, {"name": "bun", "n": 3}]
    outcome = await Conversation(saying(template), variables={"items": items}).send()
    assert texts(outcome.events) == [
        "1:TEA 2:BUN = 5; tea, jam, bun; 003.1; ['a', 'b']; {'k': [1, 2.5, None]}; abab"
    ]


async def test_a_long_legal_turn_gives_the_event_loop_away() -> None:
    # 10,000 steps of a legal loop: other tasks must get the loop while it runs.
    definition = {
        "start": "count",
        "limits": {"max_steps_per_turn": 10000},
        "nodes": {
            "count": {"type": "set", "values": {"n": "(n | default(0)) + 1"}, "next": "check"},
            "check": {
                "type": "switch",
                "cases": [{"when": "n >= 4999", "next": "end"}],
                "default": "count",
            },
            "end": {"type": "end", "output": {"n": "n"}},
        },
    }
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    outcome = await Conversation(definition).send()
    done = True
    await ticking
    assert outcome.state.status == RunStatus.COMPLETED
    assert outcome.state.output == {"n": 4999}
    assert ticks > 1


# Found by a review that attacked the sandbox: each once ran for seconds, allocated
# hundreds of megabytes, or (the deep tuple) crashed the process.
@pytest.mark.parametrize(
    ("template", "limit"),
    [
        (
            "{% set ns = namespace(t=1) %}{% for i in range(1000) %}{% set ns.t = (ns.t,) %}"
            "{% endfor %}{{ {ns.t: 1} | length }}",
            "max_value_depth",
        ),
        ("{{ ('a' * 200) | join('b' * 1000000) }}", "max_string_length"),
        ("{{ ('b' * 1000000).join('a' * 200) }}", "max_string_length"),
        ("{{ ('\\t' * 200).expandtabs(tabsize=1000000) }}", "max_string_length"),
        ("{{ ('a\\r' * 200) | indent(999000) }}", "max_string_length"),
        ("{{ ('%(a)s' * 200) | format(a='x' * 990000) }}", "max_string_length"),
        ("{{ ('%(a)s' * 200) % {'a': 'x' * 990000} }}", "max_string_length"),
        ("{{ ('a' * 200) | replace(old='a', new='b' * 1000000) }}", "max_string_length"),
        ("{{ [1] | batch(fill_with=0, linecount=100000000) | list }}", "max_collection_length"),
        ("{% set x = 'A' * 1000000 %}{{ ([x] * 200) | upper }}", "max_produced_bytes"),
        ("{% set x = 'A' * 1000000 %}{{ [x, x] | sort | length }}", "max_string_length"),
        ("{% set h = 'a' * 200000 %}{{ h.rfind('ab' ~ 'a' * 100000) }}", "max_render_work"),
        (
            "{% set h = 'a' * 1000000 %}{% for i in range(10) %}{{ ('a' * 99 ~ 'b') in h }}"
            "{% endfor %}",
            "max_render_work",
        ),
        ("{{ ([1] * 100000) | sum(attribute='real') }}", "max_render_work"),
        (
            "{% set a = [[[[[[1] * 30] * 30] * 30] * 30] * 30] * 30 %}{{ a == a }}",
            "max_render_work",
        ),
        ("{{ ([[1]] * 30000) | sum(start=[]) | length }}", "max_render_work"),
        ("{% set s = 'a' * 1000000 %}{{ s | reject | list | length }}", "max_render_work"),
        ("{{ ('a ' * 500000) | title }}", "max_render_work"),
        ("{{ ['\\U000e0001' * 990000] }}", "max_render_work"),
        ("{{ ['\\U000e0001' * 90000] }}", "max_string_length"),
        (
            "{% set y %}{% for i in range(5) %}{{ 'a' * 999999 }}{% endfor %}{% endset %}"
            "{{ y | length }}",
            "max_string_length",
        ),
        ("{{ ('ab\\x1c' * 333000).splitlines() | length }}", "max_collection_length"),
        ("{{ ('ab\\u3000' * 333000).split() | length }}", "max_collection_length"),
        (
            "{% set ns = namespace() %}{% set ns.a = ns %}{% for i in range(100000) %}"
            "{% if ns.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a %}{% endif %}{% endfor %}",
            "max_render_work",
        ),
    ],
)
async def test_what_a_review_found_is_bounded(template: str, limit: str) -> None:
    assert f"(limit {limit})" in await failure_of(saying(template))


async def test_long_attribute_paths_are_refused() -> None:
    path = "0." * 200 + "0"
    error = await failure_of(saying("{{ ('a' * 100) | list | sort(attribute='" + path + "') }}"))
    assert "attribute path is longer than 256 characters" in error


def _defaults_macro() -> str:
    chain = "n" + ".a" * 40
    parameters = ", ".join(f"p{i}={chain}" for i in range(300))
    return (
        "{% set n = namespace() %}{% set n.a = n %}"
        f"{{% macro m({parameters}) %}}{{% endmacro %}}"
        "{% for i in range(20000) %}{{ m() }}{% endfor %}"
    )


# Found by a second review: each held the loop for seconds, allocated gigabytes, or gave
# the template unlimited work.
@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ [0] | map('tandem_charge', -1000000000) | list }}", "No filter named"),
        ("{{ 1 | round(10000000, 'floor') }}", "precision of at most 330"),
        ("{{ ([1] * 3000) | replace('1', 'x' * 900000) }}", "(limit max_string_length)"),
        ("{{ (range(5000) | list) | join(['x' * 49990]) }}", "(limit max_string_length)"),
        ("{{ ['%(a)999999s' * 500] | format(a=1) }}", "(limit max_string_length)"),
        ("{{ [1] | indent(1000000000) }}", "(limit max_string_length)"),
        (
            "{{ (range(3000) | list) | tojson(indent=' ' * 100000) }}",
            "(limit max_string_length)",
        ),
        ("{{ ('%(a(b))999999s' * 1000) % {'a(b)': 1} }}", "(limit max_string_length)"),
        (
            "{% set d = dict(range(20000) | batch(2) | list) %}{% set a = d.items() %}"
            "{% for i in range(2000) %}{% if a == a %}{% endif %}{% endfor %}",
            "(limit max_render_work)",
        ),
        (_defaults_macro(), "(limit max_render_work)"),
        (
            "{{ range(0, 20000 * 2305843009213693951, 2305843009213693951) | unique | list }}",
            "numbers beyond 2**61",
        ),
        ("{{ dict([[2305843009213693951 * 2, 1]]) }}", "numbers beyond 2**61"),
        ("{{ {2305843009213693951 * 3: 1} }}", "numbers beyond 2**61"),
        (
            "{% set d = dict(range(20000) | batch(2) | list) %}{% for i in range(20000) %}"
            "{% set ns = namespace(d) %}{% endfor %}",
            "(limit max_render_work)",
        ),
        ("{{ [1].index(2) }}", "cannot be called"),
        ("{{ ('中' * 999999) | urlencode | length }}", "(limit max_render_work)"),
        ("{{ ('中' * 120000) | urlencode | length }}", "(limit max_string_length)"),
        ("{{ ['a ' * 400000] | title | length }}", "(limit max_render_work)"),
        (
            "{% set b = (2**2046) * (2**2047) - 1 %}{% for i in range(30000) %}"
            "{% if (b ~ '') == '' %}{% endif %}{% endfor %}",
            "(limit max_render_work)",
        ),
        ("{{ 'a' | replace('a', 'x'.upper) }}", "'upper' is a function"),
        ("{{ ['a', 'b'] | join(attribute='upper') }}", "'upper' is a function"),
        ("{{ [1, 2] | join(namespace()) }}", "cannot be shown as text"),
    ],
)
async def test_what_a_second_review_found_is_bounded(template: str, message: str) -> None:
    assert message in await failure_of(saying(template))


async def test_what_runs_once_in_a_template_is_charged_at_every_render() -> None:
    # Nothing here loops inside the template, but the node renders it 10,000 times.
    lookups = "{% if n" + ".a" * 20 + " %}{% endif %}"
    definition = {
        "start": "setup",
        "limits": {"max_steps_per_turn": 10000},
        "nodes": {
            "setup": {"type": "set", "values": {"n": "{'a': 1}"}, "next": "say"},
            "say": {
                "type": "message",
                "text": "{% set n = namespace() %}{% set n.a = n %}" + lookups * 500,
                "next": "say",
            },
        },
    }
    assert "(limit max_work)" in await failure_of(definition)


async def test_an_error_message_quoting_a_huge_value_is_kept_short() -> None:
    definition = {
        "start": "say",
        "nodes": {
            "say": {"type": "message", "text": "{{ history[key] }}", "next": "end"},
            "end": {"type": "end"},
        },
    }
    error = await failure_of(definition, variables={"key": "k" * 100_000})
    assert len(error) <= 1_100 and "…" in error


async def test_autoescape_blocks_are_refused_at_publish() -> None:
    with pytest.raises(InvalidDefinition):
        compile_workflow(saying("{% autoescape true %}{{ x }}{% endautoescape %}"))


async def test_the_integer_limit_is_the_size_of_the_result() -> None:
    # 2**3000 has 3,001 bits and 10**1200 3,987: both within 4,096; 2**5000 is not.
    fits = await Conversation(setting("(2**3000 + 10**1200) | string | length")).send()
    assert fits.state.status == RunStatus.COMPLETED
    assert fits.state.output == {"x": 1201}
    error = await failure_of(setting("(2**5000) | string | length"))
    assert "about 5000 bits" in error and "(limit max_integer_bits)" in error


# Found by a third review: each held a render for seconds or built gigabytes.
@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{% set s = 'a' * 999999 %}{% set c = 'b' * 999999 ~ 'a' %}{{ s.lstrip(c) | length }}",
            "(limit max_render_work)",
        ),
        (
            "{% set s = 'a' * 999999 %}{{ s | trim('b' * 999999) | length }}",
            "(limit max_render_work)",
        ),
        (
            "{% set a = '😀' * 500000 %}{% for i in range(100000) %}{% if (a ~ a) %}{% endif %}"
            "{% endfor %}",
            "(limit max_",
        ),
        (
            "{% set s1 = 'a' * 999999 %}{% set s2 = 'a' * 999998 ~ 'a' %}{% for i in range(1000) %}"
            "{% if [s1] == [s2] %}{% endif %}{% endfor %}",
            "(limit max_",
        ),
        (
            "{% set d = dict(range(0, 4000 * 2305843009213693951, 2305843009213693951)"
            " | batch(2)) %}",
            "numbers beyond 2**61",
        ),
        ("{{ x[[1]] }}", "has no element of that kind"),
        ("{{ [1][range] }}", "has no element of that kind"),
        ("{{ cycler(1, 2).items }}", "unsafe"),
        (
            "{% set b = 2**4000 + 1 %}{% set c = 2**2000 + 1 %}{% for i in range(10000) %}"
            "{{ (b // c) > 0 }}{% endfor %}",
            "(limit max_render_work)",
        ),
    ],
)
async def test_what_a_third_review_found_is_bounded(template: str, message: str) -> None:
    error = await failure_of(saying(template), variables={"x": {"a": 1}})
    assert message in error
    assert "0x" not in error  # no memory address, no Python representation


def test_an_integer_literal_too_long_to_compile_is_refused_at_publish() -> None:
    with pytest.raises(InvalidDefinition):
        compile_workflow(saying("{{ " + "9" * 5000 + " > 0 }}"))


# Found by a fourth review, of the turn runner as a whole.
@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{% set x = '\\n' * 999999 %}{% for i in range(16) %}"
            "{{ (x | indent(0) | length) > 0 }}{% endfor %}",
            "(limit max_render_work)",
        ),
        (
            "{% set s = 'Ā' * 999999 %}{% for i in range(60) %}{{ s.isupper() }}{% endfor %}",
            "(limit max_render_work)",
        ),
        ("{{ [1] | select(range) | list }}", "a test is named by a string"),
    ],
)
async def test_what_a_fourth_review_found_is_bounded(template: str, message: str) -> None:
    error = await failure_of(saying(template))
    assert message in error and "0x" not in error


async def test_keys_are_stored_as_json_writes_them() -> None:
    stored = await Conversation(setting("{2: 'a', none: 'b', true: 'c', 1.5: 'd'}")).send()
    assert stored.state.output == {"x": {"2": "a", "null": "b", "true": "c", "1.5": "d"}}
    error = await failure_of(setting("{(range,): 1}"))
    assert "a key of type 'tuple' cannot be stored" in error and "0x" not in error


async def test_copying_many_variables_is_charged_to_the_turn_not_to_a_render() -> None:
    variables = {f"v{i}": i for i in range(5000)}
    definition = {
        "start": "say",
        "limits": {"max_steps_per_turn": 150},
        "nodes": {"say": {"type": "message", "text": "{{ v1 }}", "next": "say"}},
    }
    outcome = await Conversation(definition, variables=variables).send()
    assert outcome.state.status == RunStatus.ABORTED_LOOPING_RISK  # not a render's limit


# Found by a fifth review, a sweep of what each construct really costs per unit: each
# ran at 400 to 5,500 ns a unit (a render of them held the loop 100 to 800 ms). Each is
# now charged at least what it costs, at ~50 ns a unit: checked by the units one run of
# it takes, which does not depend on the machine.
_SWEEP_VARIABLES = {
    "Lt": "<" * 110_000,
    "Ul": "é" * 9000,
    "LSU": ["Éé"] * 1000,
    "LongS": ["x" * 1000] * 900,
    "s": "hello world",
    "i": 7,
}
_SWEEP_SETUP = "{% set b = 2**4000 + 12345 %}{% set c = 2**2000 + 1 %}{% set ns = namespace(a=1) %}"


def _units(template: str) -> int:
    budget = EvaluationBudget(EvaluationLimits())
    compile_template(template)(_SWEEP_VARIABLES, budget)
    return budget.limits.max_render_work - budget.render_work_left


@pytest.mark.parametrize(
    ("body", "at_least"),
    [
        ("{% set _x = {'a': '<' * 1000} | urlencode %}", 1000),
        ("{% set _x = [Ul] | tojson %}", 1100),
        ("{% set _x = ('' | safe) + Lt %}", 3400),
        ("{% set _x = c ** 2 %}", 40),
        ("{% set _x = LSU | unique | list %}", 3000),
        ("{% set _x = b | round(-300) %}", 500),
        ("{% set _x = LongS | join(',') %}", 14_000),
        ("{% set _x = Lt | forceescape %}", 3400),
        ("{% set _x = '%s-%d' | format('a', 3) %}", 2 * WORK_PER_CALL),
    ],
)
def test_what_a_calibration_sweep_found_is_charged_for(body: str, at_least: int) -> None:
    assert _units(_SWEEP_SETUP + body) - _units(_SWEEP_SETUP) >= at_least


async def test_sorting_a_large_value_is_charged_before_it_sorts() -> None:
    error = await failure_of(
        saying("{{ (big | sort)[0] }}"), variables={"big": list(range(99_000))}
    )
    assert "(limit max_render_work)" in error
