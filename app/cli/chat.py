"""``python -m app chat WORKFLOW_ID``: a conversation with a workflow on a running server,
one line of input per turn, replies shown as they are generated; Ctrl-C stops the run.

The first turn is posted with ``Prefer: respond-async``, which names the run at once, and
followed on the run's stream: a streamed first turn would only name its run in its last
message, too late to stop it on Ctrl-C. Later turns stream their own answers
(``Accept: text/event-stream``)."""

import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from app.cli.connection import ApiError, CliError, Tandem
from app.cli.sse import SseMessage

# The events that end a turn; exactly one ends each.
_WAITS = ("waiting_for_input", "paused")
_ENDS = ("run_completed", "run_failed", "run_cancelled", "run_aborted")
EXIT_INTERRUPTED = 130  # what a shell reports for a program ended by Ctrl-C

ReadLine = Callable[[str], str | None]  # shows a prompt, returns a line or None at the end


@dataclass
class Transcript:
    """Writes a run's events as a conversation; remembers how the last turn ended."""

    out: TextIO
    ending: SseMessage | None = None
    waiting_for: dict[str, Any] | None = None
    replaying: bool = False  # shows the user's side too: a run's past turns
    _streamed_text_of: str | None = None  # the node whose LLM reply was shown as it came
    _line_open: bool = field(default=False, repr=False)

    def show(self, message: SseMessage) -> None:
        kind, data = message.event, message.data
        if kind == "llm_delta":
            self._write(data.get("text", ""), end="")
            self._line_open = True
            return
        node = data.get("node_id") if isinstance(data, dict) else None
        payload = data.get("data", {}) if isinstance(data, dict) else {}
        if kind == "llm_completed" and self._line_open:
            self.end_line()
            self._streamed_text_of = node
        elif kind == "message":
            if node is not None and node == self._streamed_text_of:
                self._streamed_text_of = None  # already shown, word by word
            else:
                self._write(payload.get("text", ""))
        elif kind == "state":
            self._write("State: " + json.dumps(payload.get("values", {}), ensure_ascii=False))
        elif kind == "input_received" and self.replaying:
            self._write(f"> {payload.get('message', '')}")
        elif kind == "input_rejected":
            self._write(f"(not accepted: {payload.get('reason', '')})")
        elif kind in _WAITS:
            self.ending, self.waiting_for = message, payload
            self._show_wait(kind, payload)
        elif kind in _ENDS:
            self.ending, self.waiting_for = message, None
            self._show_end(kind, payload)

    def show_all(self, messages: Iterable[SseMessage]) -> None:
        for message in messages:
            self.show(message)
        self.end_line()

    def end_line(self) -> None:
        """Ends a line of streamed text, if one is open."""
        if self._line_open:
            self._line_open = False
            self.out.write("\n")
            self.out.flush()

    def note(self, text: str) -> None:
        self._write(text)

    @property
    def ended(self) -> bool:
        return self.ending is not None and self.ending.event in _ENDS

    def _show_wait(self, kind: str, waiting_for: Mapping[str, Any]) -> None:
        if waiting_for.get("prompt"):
            self._write(str(waiting_for["prompt"]))
        choices = waiting_for.get("choices") or []
        if choices:
            self._write(
                "Choices: " + "  ".join(f"[{n}] {c}" for n, c in enumerate(choices, start=1))
            )
        if kind == "paused":
            self._write("(press Enter to continue, or type a message)")

    def _show_end(self, kind: str, payload: Mapping[str, Any]) -> None:
        if kind == "run_completed":
            output = json.dumps(payload.get("output"), ensure_ascii=False)
            self._write(f"Run completed. Output: {output}")
        elif kind == "run_failed":
            self._write(f"Run failed: {payload.get('error', '')}")
        elif kind == "run_cancelled":
            self._write("Run cancelled.")
        else:
            self._write(f"Run aborted: {payload.get('reason', '')}")

    def _write(self, text: str, end: str = "\n") -> None:
        if end:
            self.end_line()
        self.out.write(text + end)
        self.out.flush()


class Conversation:
    """One run of one workflow, turn after turn."""

    def __init__(self, tandem: Tandem, workflow_id: str, transcript: Transcript) -> None:
        self.tandem = tandem
        self.workflow_id = workflow_id
        self.transcript = transcript
        self.run_id: str | None = None

    def start(self, inputs: Mapping[str, Any], version: int | None) -> None:
        """Turn 1: a new run, followed on its stream."""
        query = f"?version={version}" if version is not None else ""
        body = {"inputs": dict(inputs)} if inputs else {}
        status, answer = self.tandem.call(
            "POST",
            f"/v1/workflows/{self.workflow_id}/execute{query}",
            body,
            headers={"Prefer": "respond-async"},
        )
        self.run_id = answer["run_id"]
        self.transcript.note(f"Run {self.run_id} of workflow {self.workflow_id} (Ctrl-C stops it)")
        if status == 202:
            self._follow()
        else:  # the server answered the turn at once
            self.transcript.show_all(_as_messages(answer["events"]))

    def resume(self, run_id: str) -> None:
        """An existing run: its conversation so far, replayed from the run's stream."""
        _, run = self.tandem.call("GET", f"/v1/runs/{run_id}")
        if run["workflow_id"] != self.workflow_id.lower():
            raise CliError(f"run {run_id} is a run of workflow {run['workflow_id']}")
        self.run_id = run["run_id"]
        self.transcript.note(f"Run {self.run_id} of workflow {self.workflow_id} (Ctrl-C stops it)")
        self.transcript.replaying = True
        try:
            self._follow()
        finally:
            self.transcript.replaying = False

    def answer(self, line: str) -> None:
        """One later turn: ``line`` answers what the run waits for (an empty line continues a
        pause); the answer streams."""
        body: dict[str, Any] = {"run_id": self.run_id}
        if line or self._waits_for_message():
            body["run_input"] = {"message": self._choice(line)}
        path = f"/v1/workflows/{self.workflow_id}/execute"
        with self.tandem.stream("POST", path, body) as messages:
            for message in messages:
                if message.event == "turn_result":
                    break
                if message.event == "error":
                    raise CliError(f"the turn did not finish: {message.data.get('detail')}")
                self.transcript.show(message)
            else:
                raise CliError(
                    f"the stream of run {self.run_id} closed before the turn ended "
                    f"(GET /v1/runs/{self.run_id} tells how it went on)"
                )
        self.transcript.end_line()

    def stop(self) -> None:
        """Cancel the run (``DELETE /v1/runs/{id}``), saying what happened."""
        if self.run_id is None:
            return
        try:
            _, answer = self.tandem.call("DELETE", f"/v1/runs/{self.run_id}")
        except ApiError as error:
            if error.code != "run_terminal":
                raise
            self.transcript.note(f"Run {self.run_id} had already ended.")
            return
        self.transcript.note(
            f"Stopped: run {self.run_id} is cancelled (it was {answer['previous_status']})."
        )

    def _follow(self) -> None:
        with self.tandem.stream("GET", f"/v1/runs/{self.run_id}/stream") as messages:
            for message in messages:
                if message.event == "error":
                    raise CliError(f"the run's stream failed: {message.data.get('detail')}")
                self.transcript.show(message)
        self.transcript.end_line()
        if self.transcript.ending is None:
            raise CliError(f"the stream of run {self.run_id} closed before the turn ended")

    def _waits_for_message(self) -> bool:
        waiting_for = self.transcript.waiting_for or {}
        return waiting_for.get("kind") != "continue"

    def _choice(self, line: str) -> str:
        """A choice's number stands for the choice (unless the line is a choice itself)."""
        choices = (self.transcript.waiting_for or {}).get("choices") or []
        if line.isdigit() and line not in choices and 1 <= int(line) <= len(choices):
            return str(choices[int(line) - 1])
        return line


def chat(
    tandem: Tandem,
    workflow_id: str,
    *,
    read_line: ReadLine,
    out: TextIO,
    inputs: Mapping[str, Any] | None = None,
    version: int | None = None,
    run_id: str | None = None,
) -> int:
    """Hold the conversation until the run ends (0 if it completed, else 1), the input
    ends (0, the run stays waiting), or Ctrl-C stops the run (130)."""
    transcript = Transcript(out)
    conversation = Conversation(tandem, workflow_id, transcript)
    try:
        if run_id is None:
            conversation.start(inputs or {}, version)
        else:
            conversation.resume(run_id)
        while not transcript.ended:
            line = read_line("> ")
            if line is None:
                transcript.note(
                    f"End of input: run {conversation.run_id} waits; continue it with "
                    f"python -m app chat {workflow_id} --run {conversation.run_id}"
                )
                return 0
            conversation.answer(line)
    except KeyboardInterrupt:
        transcript.end_line()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the stop go out
        try:
            conversation.stop()
        finally:
            signal.signal(signal.SIGINT, previous)
        return EXIT_INTERRUPTED
    assert transcript.ending is not None
    return 0 if transcript.ending.event == "run_completed" else 1


def terminal_reader(stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> ReadLine:
    """Lines typed at a terminal (with line editing), or read from a pipe and echoed after
    the prompt, so that a transcript shows both sides."""
    if stdin.isatty():
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401  (input() then edits lines and keeps history)

        def typed(prompt: str) -> str | None:
            try:
                return input(prompt)
            except EOFError:
                out.write("\n")
                return None
            except KeyboardInterrupt:
                out.write("\n")  # what comes next starts on a line of its own
                raise

        return typed

    def piped(prompt: str) -> str | None:
        line = stdin.readline()
        if not line:
            return None
        line = line.rstrip("\r\n")
        out.write(f"{prompt}{line}\n")
        out.flush()
        return line

    return piped


def _as_messages(events: Iterable[dict[str, Any]]) -> list[SseMessage]:
    return [SseMessage(event=e["type"], id=str(e["seq"]), data=e) for e in events]
