"""Workflow files as ``publish`` reads them: JSON or YAML, a bare definition or a whole
workflow, and one clear error for a file that cannot be read."""

from pathlib import Path

import pytest

from app.cli.connection import CliError
from app.cli.definition_file import read_workflow_file

BARE = {"start": "done", "nodes": {"done": {"type": "end"}}}


def test_a_yaml_workflow_with_name_description_and_id(tmp_path: Path) -> None:
    path = tmp_path / "w.yml"
    path.write_text(
        "name: Hello\n"
        "description: Says hello\n"
        "workflow_id: 65f0c0ffee00000000000001\n"
        "definition:\n"
        "  start: hi\n"
        "  nodes:\n"
        "    hi: {type: message, text: 'Open on 2026-01-31', next: done}\n"
        "    done: {type: end, output: {day: 2026-01-31}}\n"
    )
    workflow = read_workflow_file(path)
    assert workflow.name == "Hello"
    assert workflow.description == "Says hello"
    assert workflow.workflow_id == "65f0c0ffee00000000000001"
    # YAML's dates stay text: JSON has none.
    assert workflow.definition["nodes"]["done"]["output"] == {"day": "2026-01-31"}


def test_a_bare_json_definition(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text('{"start": "done", "nodes": {"done": {"type": "end"}}}')
    workflow = read_workflow_file(path)
    assert workflow.definition == BARE
    assert (workflow.name, workflow.description, workflow.workflow_id) == (None, None, None)


def test_a_file_of_another_suffix_is_json_or_else_yaml(tmp_path: Path) -> None:
    path = tmp_path / "workflow.txt"
    path.write_text("start: done\nnodes:\n  done: {type: end}\n")
    assert read_workflow_file(path).definition == BARE


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("w.json", '{"start": ', "not valid JSON: Expecting value (line 1, column 11)"),
        ("w.yaml", "nodes: {a: [\n", "not valid YAML: "),
        ("w.yaml", "", "the file is empty"),
        ("w.yaml", "- a\n", "must hold an object (a mapping), not a list"),
        ("w.yaml", "definition: [1]\n", "`definition` must be an object, not a list"),
        ("w.yaml", "name: 3\ndefinition: {}\n", "`name` must be text, not a number"),
        ("w.yaml", "start: !!binary aGk=\n", "holds a value that JSON cannot carry"),
        ("w.yaml", "start: !!python/object:os.system {}\n", "not valid YAML: "),
    ],
)
def test_a_file_that_cannot_be_read_is_one_clear_error(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CliError) as error:
        read_workflow_file(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="no such file"):
        read_workflow_file(tmp_path / "nowhere.yaml")
