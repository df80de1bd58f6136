"""Workflow files as ``publish`` reads them: JSON or YAML, holding either a bare definition
(``{"start", "nodes"}``) or the body of ``POST /v1/workflows`` (``{"name", "description"?,
"definition"}``, as the bundled examples are written), optionally with the ``workflow_id``
whose next version it is."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.cli.connection import CliError

_YAML_SUFFIXES = (".yaml", ".yml")


class _DefinitionLoader(yaml.SafeLoader):
    """PyYAML's safe loader without its timestamp rule: ``2026-01-31`` in a template stays
    the text it is (JSON has no dates, so a date could not be sent at all)."""


_DefinitionLoader.yaml_implicit_resolvers = {
    first: [(tag, rule) for tag, rule in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class WorkflowFile:
    definition: dict[str, Any]
    name: str | None
    description: str | None
    workflow_id: str | None


def read_workflow_file(path: Path) -> WorkflowFile:
    """The workflow in ``path``; ``CliError`` saying where, if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a text file (it is not UTF-8)") from None
    except OSError as error:
        raise CliError(f"{path}: cannot be read: {error.strerror}") from None
    document = _parse(path, text)
    if document is None:
        raise CliError(f"{path}: the file is empty")
    if not isinstance(document, dict):
        raise CliError(f"{path}: the file must hold an object (a mapping), not {_kind(document)}")
    try:
        json.dumps(document)
    except (TypeError, ValueError) as error:
        raise CliError(f"{path}: holds a value that JSON cannot carry ({error})") from None
    if "definition" not in document:
        return WorkflowFile(document, None, None, None)
    definition = document["definition"]
    if not isinstance(definition, dict):
        raise CliError(f"{path}: `definition` must be an object, not {_kind(definition)}")
    return WorkflowFile(
        definition,
        _text(path, document, "name"),
        _text(path, document, "description"),
        _text(path, document, "workflow_id"),
    )


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() in _YAML_SUFFIXES:
        return _parse_yaml(path, text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if path.suffix.lower() == ".json":
            raise CliError(
                f"{path}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
    return _parse_yaml(path, text)  # neither .json nor .yaml: JSON, else YAML


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_DefinitionLoader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as error:
        where = ""
        if error.problem_mark is not None:
            mark = error.problem_mark
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        raise CliError(f"{path}: not valid YAML: {error.problem or error}{where}") from None
    except yaml.YAMLError as error:
        raise CliError(f"{path}: not valid YAML: {error}") from None


def _text(path: Path, document: dict[str, Any], field: str) -> str | None:
    value = document.get(field)
    if value is None or isinstance(value, str):
        return value
    raise CliError(f"{path}: `{field}` must be text, not {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
