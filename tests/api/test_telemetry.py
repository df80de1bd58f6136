"""What operators see: ``/metrics`` after real conversations, one log line a turn with
its fields, a line for each failure, stop and provider error, and a request id."""

import json
import logging
import re
from typing import Any

import pytest

from app.config import Settings
from app.engine.llm import LlmCall, LlmError, LlmReply
from app.server import create_app
from app.telemetry.logs import JsonFormatter, TextFormatter
from app.telemetry.metrics import OTHER, BoundedLabel
from tests.api.helpers import serving
from tests.support import BOOKING, YieldingDatabase, flow

SECRET = "my-secret-words"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text``; 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        found = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if found and found[1] == name:
            have = ",".join(sorted((found[2] or "").split(","))) if found[2] else ""
            if have == wanted:
                return float(found[3])
    return 0.0


async def post(http: Any, workflow_id: str, body: dict[str, Any], **headers: str) -> Any:
    return await http.post(f"/v1/workflows/{workflow_id}/execute", json=body, headers=headers)


class FailingLlm:
    default_model = "broken-model"

    async def complete(self, call: LlmCall, on_delta: Any) -> LlmReply:
        raise LlmError("the provider answered 503: overloaded")


async def test_metrics_count_turns_runs_conflicts_stops_and_llm_calls(
    settings: Settings, database: YieldingDatabase
) -> None:
    app = create_app(settings, database=database)  # type: ignore[arg-type]
    async with serving(app) as http:
        booking = (
            await http.post("/v1/workflows", json={"name": "b", "definition": BOOKING})
        ).json()["workflow_id"]
        run_id = (await post(http, booking, {})).json()["run_id"]
        for message in ("Ann", "4", None):
            body = {"run_id": run_id, "run_input": {"message": message} if message else {}}
            assert (await post(http, booking, body)).json()["status"] != "failed"
        assert (await http.delete(f"/v1/runs/{run_id}")).json()["code"] == "run_terminal"
        other = (await post(http, booking, {})).json()["run_id"]
        assert (await http.delete(f"/v1/runs/{other}")).status_code == 200

        chat = flow(
            ("ask", {"type": "input", "prompt": "Say", "save_as": "q", "next": "think"}),
            ("think", {"type": "llm", "prompt": "{{ q }}", "save_as": "a", "next": "ask"}),
        )
        chat_id = (await http.post("/v1/workflows", json={"name": "c", "definition": chat})).json()[
            "workflow_id"
        ]
        chat_run = (await post(http, chat_id, {})).json()["run_id"]
        await post(http, chat_id, {"run_id": chat_run, "run_input": {"message": "one two three"}})

        scraped = await http.get("/metrics", headers={"X-API-Key": ""})
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    # Two booking runs: one to its end (4 turns), one stopped after its first.
    assert sample(text, "tandem_turns_total", workflow_id=booking, status="completed") == 1
    assert (
        sample(text, "tandem_turns_total", workflow_id=booking, status="waiting_for_user_input")
        == 3
    )
    assert sample(text, "tandem_turns_total", workflow_id=booking, status="paused") == 1
    assert sample(text, "tandem_turn_duration_seconds_count", workflow_id=booking) == 5
    assert sample(text, "tandem_runs_started_total") == 3
    assert sample(text, "tandem_runs_ended_total", status="completed") == 1
    assert sample(text, "tandem_runs_ended_total", status="cancelled") == 1
    assert sample(text, "tandem_cancellations_total") == 1
    assert sample(text, "tandem_conflicts_total", code="run_terminal") == 1
    assert sample(text, "tandem_turns_executing") == 0
    assert sample(text, "tandem_llm_call_duration_seconds_count", model="echo", outcome="ok") == 1
    assert sample(text, "tandem_llm_tokens_total", model="echo", kind="completion") == 3
    assert "tandem_event_loop_lag_seconds_bucket" in text


def tandem_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("tandem")]


async def test_each_turn_logs_one_line_with_its_fields_and_no_message_text(
    settings: Settings, database: YieldingDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(settings, database=database)  # type: ignore[arg-type]
    async with serving(app) as http:
        booking = (
            await http.post("/v1/workflows", json={"name": "b", "definition": BOOKING})
        ).json()["workflow_id"]
        first = await post(http, booking, {}, **{"X-Request-ID": "client-req-1"})
        assert first.headers["x-request-id"] == "client-req-1"
        run_id = first.json()["run_id"]
        second = await post(http, booking, {"run_id": run_id, "run_input": {"message": SECRET}})
        generated = second.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        forged = await post(http, booking, {}, **{"X-Request-ID": "bad id\nINFO forged"})
        assert forged.headers["x-request-id"] != "bad id\nINFO forged"
        await http.delete(f"/v1/runs/{run_id}")

    turns = [r for r in tandem_records(caplog) if r.getMessage() == "turn executed"]
    assert len(turns) == 3
    line = turns[0]
    assert (line.run_id, line.workflow_id, line.turn, line.tenant) == (  # type: ignore[attr-defined]
        run_id,
        booking,
        1,
        "acme",
    )
    assert line.status == "waiting_for_user_input"  # type: ignore[attr-defined]
    assert line.duration_ms >= 0  # type: ignore[attr-defined]
    assert line.request_id == "client-req-1"  # type: ignore[attr-defined]
    assert turns[1].request_id == generated  # type: ignore[attr-defined]
    stops = [r for r in tandem_records(caplog) if r.getMessage().startswith("run cancelled")]
    assert len(stops) == 1 and stops[0].run_id == run_id  # type: ignore[attr-defined]
    every_line = [TextFormatter().format(r) for r in caplog.records]
    every_line += [JsonFormatter().format(r) for r in caplog.records]
    assert not any(SECRET in text or settings_key(settings) in text for text in every_line)


def settings_key(settings: Settings) -> str:
    return next(iter(settings.api_keys))


async def test_a_failed_run_and_a_provider_error_each_log_one_clear_line(
    settings: Settings, database: YieldingDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(settings, database=database, llm=FailingLlm())  # type: ignore[arg-type]
    chat = flow(
        ("think", {"type": "llm", "prompt": "hello", "save_as": "a", "next": "done"}),
        ("done", {"type": "end"}),
    )
    async with serving(app) as http:
        chat_id = (await http.post("/v1/workflows", json={"name": "c", "definition": chat})).json()[
            "workflow_id"
        ]
        answer = (await post(http, chat_id, {})).json()
        assert answer["status"] == "failed"
        scraped = (await http.get("/metrics")).text

    provider = [r for r in tandem_records(caplog) if "LLM provider error" in r.getMessage()]
    assert len(provider) == 1 and "503: overloaded" in provider[0].getMessage()
    failed = [r for r in tandem_records(caplog) if r.getMessage().startswith("run failed")]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    assert "think" in failed[0].getMessage() and failed[0].run_id == answer["run_id"]  # type: ignore[attr-defined]
    assert (
        sample(
            scraped,
            "tandem_llm_call_duration_seconds_count",
            model="broken-model",
            outcome="error",
        )
        == 1
    )


def test_json_lines_carry_the_fields_as_keys() -> None:
    record = logging.LogRecord("tandem.turns", logging.INFO, "x", 1, "turn executed", None, None)
    for name, value in {
        "run_id": "r1",
        "turn": 2,
        "status": "completed",
        "duration_ms": 3.5,
    }.items():
        setattr(record, name, value)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "turn executed" and line["level"] == "info"
    assert (line["run_id"], line["turn"], line["status"], line["duration_ms"]) == (
        "r1",
        2,
        "completed",
        3.5,
    )
    assert "T" in line["time"] and line["logger"] == "tandem.turns"
    assert (
        TextFormatter()
        .format(record)
        .endswith("turn executed [run_id=r1 turn=2 status=completed duration_ms=3.5]")
    )


def test_labels_from_tenants_are_bounded() -> None:
    label = BoundedLabel(limit=2)
    assert [label("a"), label("b"), label("c"), label("a"), label("x" * 500)] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
    ]
