"""The command line as a user runs it: ``python -m app publish`` and ``python -m app chat``
in processes of their own, against a live ``python -m app`` server, named by the
``TANDEM_URL`` and ``TANDEM_KEY`` the banner exports."""

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli import run_command
from tests.e2e.processes import REPOSITORY, ServerProcess, server_environment

KEY = "cli-key"
CHAT = "000000000000000000000003"  # the bundled chat assistant, whose echo LLM is slowed
WORD_DELAY_MS = 20
COMMAND_TIMEOUT = 60.0

PIZZA_YAML = """\
# A workflow file as the language allows it: YAML, with comments.
name: Pizza order
description: Picks a size, then a topping.
definition:
  start: hello
  nodes:
    hello: {type: message, text: "Pizza time! Today is 2026-11-22.", next: size}
    size:
      type: input
      prompt: Which size?
      save_as: size
      validate: {choices: [small, large]}
      retry_prompt: Small or large, please.
      next: topping
    topping: {type: input, prompt: "Which topping?", save_as: topping, next: confirm}
    confirm: {type: pause, prompt: "A {{ size }} pizza with {{ topping }}?", next: done}
    done: {type: end, output: {size: size, topping: topping}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = server_environment(
        {"TANDEM_API_KEYS": f"{KEY}:dev", "TANDEM_ECHO_DELAY_MS": str(WORD_DELAY_MS)}
    )
    process = ServerProcess.start("cli-server", env, tmp_path_factory.mktemp("cli-server"))
    try:
        process.wait_until_ready()
        yield process
    finally:
        process.stop()


def cli_environment(server: ServerProcess, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    return env | {"TANDEM_URL": server.url, "TANDEM_KEY": KEY} | overrides


def tandem(
    server: ServerProcess, *args: str, stdin: str = "", **env: str
) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPOSITORY,
        env=cli_environment(server, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def read_run(server: ServerProcess, run_id: str) -> dict[str, object]:
    answer = httpx.get(f"{server.url}/v1/runs/{run_id}", headers={"X-API-Key": KEY})
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def run_id_in(output: str) -> str:
    found = re.search(r"Run ([0-9a-f]{24}) of workflow", output)
    assert found, output
    return found.group(1)


def test_publish_a_yaml_file_then_chat_with_it(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "pizza.yaml"
    path.write_text(PIZZA_YAML)

    created = tandem(server, "publish", str(path))
    assert created.returncode == 0, created.stderr
    found = re.fullmatch(
        r"Created workflow ([0-9a-f]{24}) \('Pizza order'\), version 0\.\n", created.stdout
    )
    assert found, created.stdout
    workflow_id = found.group(1)

    again = tandem(server, "publish", str(path), "--workflow-id", workflow_id)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"Published version 1 of workflow {workflow_id}.\n"

    chat = tandem(server, "chat", workflow_id, stdin="medium\n2\nham\n\n")
    assert chat.returncode == 0, chat.stdout + chat.stderr
    assert chat.stderr == ""
    lines = chat.stdout.splitlines()
    run_id = run_id_in(chat.stdout)
    assert lines[1:] == [
        "Pizza time! Today is 2026-11-22.",  # a date in YAML stays text
        "Which size?",
        "Choices: [1] small  [2] large",
        "> medium",
        "(not accepted: must be one of: small, large)",
        "Small or large, please.",
        "Which size?",
        "Choices: [1] small  [2] large",
        "> 2",  # a choice by its number
        "Which topping?",
        "> ham",
        "A large pizza with ham?",
        "(press Enter to continue, or type a message)",
        "> ",
        'Run completed. Output: {"size": "large", "topping": "ham"}',
    ]
    run = read_run(server, run_id)
    assert run["status"] == "completed"
    assert run["version"] == 1


def test_chat_streams_llm_replies_and_leaves_a_run_waiting_at_the_end_of_input(
    server: ServerProcess,
) -> None:
    chat = tandem(server, "chat", CHAT, stdin="tell me about tandem bicycles\n")
    assert chat.returncode == 0, chat.stdout + chat.stderr
    run_id = run_id_in(chat.stdout)
    assert "> tell me about tandem bicycles\ntell me about tandem bicycles\nAnything else?\n" in (
        chat.stdout
    )
    assert f"continue it with python -m app chat {CHAT} --run {run_id}" in chat.stdout
    assert read_run(server, run_id)["status"] == "waiting_for_user_input"

    resumed = tandem(server, "chat", CHAT, "--run", run_id, stdin="bye\n")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "> tell me about tandem bicycles\n" in resumed.stdout  # the conversation replayed
    assert 'Run completed. Output: {"last_reply": "tell me about tandem bicycles"}' in (
        resumed.stdout
    )


def test_ctrl_c_in_the_middle_of_a_reply_cancels_the_run(server: ServerProcess) -> None:
    chat = subprocess.Popen(
        [sys.executable, "-m", "app", "chat", CHAT],
        cwd=REPOSITORY,
        env=cli_environment(server),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert chat.stdin is not None and chat.stdout is not None and chat.stderr is not None
    shown = bytearray()
    stdout = chat.stdout.fileno()

    def collect() -> None:  # the reply arrives word by word, without a line's end
        while chunk := os.read(stdout, 4096):
            shown.extend(chunk)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        # 500 words at 20 ms: 10 s of reply, stopped once a few words are shown.
        chat.stdin.write((" ".join(f"w{i}" for i in range(500)) + "\n").encode())
        chat.stdin.flush()
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while b"\nw0 w1 w2 w3" not in shown:
            assert time.monotonic() < deadline, shown.decode()
            assert chat.poll() is None, shown.decode() + chat.stderr.read().decode()
            time.sleep(0.02)
        chat.send_signal(signal.SIGINT)
        returncode = chat.wait(timeout=COMMAND_TIMEOUT)
        reader.join(timeout=5)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    output, errors = shown.decode(), chat.stderr.read().decode()
    assert returncode == 130, output + errors
    assert errors == ""  # no traceback
    run_id = run_id_in(output)
    assert f"Stopped: run {run_id} is cancelled (it was running)." in output
    assert output.count("w499") == 1  # in the echoed input; the reply was cut short
    run = read_run(server, run_id)
    assert run["status"] == "cancelled"


def test_errors_are_one_clear_line_never_a_traceback(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In this process (the commands above show the real processes): a process each would
    # cost seconds of imports on a busy machine.
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("start: a\nnodes:\n  a: {type: message, text: hi\n")
    refused = tmp_path / "refused.json"
    refused.write_text(
        '{"start": "a", "nodes": {"a": {"type": "message", "text": "hi", "next": "nowhere"}}}'
    )
    booking = "000000000000000000000001"
    cases = [
        (("publish", str(not_yaml)), {}, [f"tandem: {not_yaml}: not valid YAML: "]),
        (
            ("publish", str(refused)),
            {},
            ["(422 invalid_definition)", "\n  nodes.a.next: names no node: 'nowhere'"],
        ),
        (("chat", booking), {"TANDEM_KEY": "wrong"}, ["refused the API key (401)"]),
        (("chat", booking), {"TANDEM_URL": "http://127.0.0.1:9"}, ["cannot reach Tandem"]),
        (("chat", "ffffffffffffffffffffffff"), {}, ["(404 not_found)"]),
        (("chat", booking), {"TANDEM_KEY": ""}, ["no API key: set TANDEM_KEY"]),
    ]
    for args, env, expected in cases:
        for name, value in cli_environment(server, **env).items():
            monkeypatch.setenv(name, value)
        out, err = io.StringIO(), io.StringIO()
        assert run_command(list(args), out, err) == 1, (args, out.getvalue(), err.getvalue())
        assert err.getvalue().startswith("tandem: "), (args, err.getvalue())
        for text in expected:
            assert text in err.getvalue(), (args, err.getvalue())
