"""``python -m app publish FILE``: create a workflow from a file, or publish the file as the
next version of an existing one (``--workflow-id``, or a ``workflow_id`` in the file)."""

import re
from dataclasses import dataclass
from pathlib import Path

from app.cli.connection import CliError, Tandem
from app.cli.definition_file import read_workflow_file

_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")


@dataclass(frozen=True)
class Published:
    workflow_id: str
    version: int
    name: str | None  # known when the workflow was created


def publish(
    tandem: Tandem,
    path: Path,
    *,
    workflow_id: str | None = None,
    name: str | None = None,
    description: str | None = None,
) -> Published:
    """Create the workflow in ``path`` (version 0), or publish it as the next version of
    ``workflow_id`` (the argument, else the file's own ``workflow_id``)."""
    workflow = read_workflow_file(path)
    target = workflow_id or workflow.workflow_id
    if target is not None:
        if not _OBJECT_ID.fullmatch(target):
            raise CliError(f"workflow id {target!r} is not 24 hexadecimal digits")
        _, answer = tandem.call(
            "POST", f"/v1/workflows/{target}/versions", {"definition": workflow.definition}
        )
        return Published(answer["workflow_id"], answer["version"], None)
    body = {
        "name": name or workflow.name or path.stem,
        "description": description if description is not None else workflow.description,
        "definition": workflow.definition,
    }
    _, answer = tandem.call("POST", "/v1/workflows", body)
    return Published(answer["workflow_id"], answer["version"], answer["name"])


def describe(published: Published) -> str:
    if published.name is not None:
        return (
            f"Created workflow {published.workflow_id} ({published.name!r}), "
            f"version {published.version}."
        )
    return f"Published version {published.version} of workflow {published.workflow_id}."
