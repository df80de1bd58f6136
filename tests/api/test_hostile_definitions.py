"""A hostile tenant over HTTP: definitions that cannot be bounded are refused with their
path, turns that exceed their budget fail the run naming the limit, and nothing of
anyone else's changes."""

from typing import Any

import pytest

from tests.api.helpers import Client, turn
from tests.support import BOOKING, flow

END = ("end", {"type": "end"})


def saying(text: str) -> dict[str, Any]:
    return flow(("say", {"type": "message", "text": text, "next": "end"}), END)


@pytest.mark.parametrize(
    ("definition", "path"),
    [
        (saying("{{ " + "(" * 80 + "1" + ")" * 80 + " }}"), "nodes.say.text"),
        (saying("{% for i in x %}" * 21 + "{% endfor %}" * 21), "nodes.say.text"),
        (saying("{% if x %}" * 100 + "{% endif %}" * 100), "nodes.say.text"),
        (saying("{{ a" + ".b" * 2000 + " }}"), "nodes.say.text"),
        (
            flow(
                (
                    "ask",
                    {
                        "type": "input",
                        "save_as": "x",
                        "next": "end",
                        "validate": {"pattern": "(a)\\1"},
                    },
                ),
                END,
            ),
            "nodes.ask.validate.pattern",
        ),
        (
            {
                "start": "n0",
                "nodes": {
                    **{
                        f"n{i}": {"type": "message", "text": "{{ a }} " * 2000, "next": f"n{i + 1}"}
                        for i in range(60)
                    },
                    "n60": {"type": "end"},
                },
            },
            "nodes",
        ),
    ],
)
async def test_definitions_that_cannot_be_bounded_are_refused(
    client: Client, definition: dict[str, Any], path: str
) -> None:
    response = await client.post(
        "/v1/workflows", json={"name": "hostile", "definition": definition}
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_definition"
    assert [error["path"] for error in body["errors"]] == [path]


async def test_a_turn_over_its_budget_fails_the_run_and_touches_no_other(client: Client) -> None:
    booking = (await client.post("/v1/workflows", json={"name": "b", "definition": BOOKING})).json()
    other = await turn(client, booking["workflow_id"])
    hostile = saying(
        "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
    )
    created = await client.post("/v1/workflows", json={"name": "h", "definition": hostile})
    answer = await turn(client, created.json()["workflow_id"])
    assert answer["status"] == "failed" and answer["is_terminal"]
    assert answer["events"][-1]["type"] == "run_failed"
    assert answer["events"][-1]["node_id"] == "say"
    assert "(limit max_render_work)" in answer["error"]
    untouched = (await client.get(f"/v1/runs/{other['run_id']}")).json()
    assert untouched["status"] == "waiting_for_user_input" and untouched["turn"] == 1
    resumed = await turn(client, booking["workflow_id"], other["run_id"], "Ann")
    assert resumed["status"] == "waiting_for_user_input" and resumed["turn"] == 2


async def test_a_backtracking_pattern_answers_at_once(client: Client) -> None:
    # ^(a+)+$ took 17 s on 28 characters with Python's re; RE2 is linear in the message.
    definition = flow(
        (
            "ask",
            {"type": "input", "save_as": "x", "next": "end", "validate": {"pattern": "^(a+)+$"}},
        ),
        END,
    )
    workflow_id = (
        await client.post("/v1/workflows", json={"name": "r", "definition": definition})
    ).json()["workflow_id"]
    run_id = (await turn(client, workflow_id))["run_id"]
    rejected = await turn(client, workflow_id, run_id, "a" * 30_000 + "!")
    assert rejected["status"] == "waiting_for_user_input"
    assert [e["type"] for e in rejected["events"]][-2:] == ["input_rejected", "waiting_for_input"]
    accepted = await turn(client, workflow_id, run_id, "a" * 30_000)
    assert accepted["status"] == "completed"


async def test_a_huge_power_in_a_switch_fails_the_run_naming_the_limit(client: Client) -> None:
    definition = flow(
        (
            "check",
            {
                "type": "switch",
                "cases": [{"when": "((10**1000)**1000)**10 > 0", "next": "end"}],
                "default": "end",
            },
        ),
        END,
    )
    workflow_id = (
        await client.post("/v1/workflows", json={"name": "p", "definition": definition})
    ).json()["workflow_id"]
    answer = await turn(client, workflow_id)
    assert answer["status"] == "failed"
    assert answer["events"][-1]["node_id"] == "check"
    assert "(limit max_integer_bits)" in answer["error"]


async def test_a_method_a_path_does_not_take_is_a_sentence(client: Client) -> None:
    response = await client.delete("/v1/workflows")
    assert response.status_code == 405
    body = response.json()
    assert body["code"] == "method_not_allowed"
    assert body["detail"].startswith("This path does not take that method; it takes ")
