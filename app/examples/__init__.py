"""The bundled example workflows, loaded under stable ids so that docs can name them."""

import json
from importlib import resources

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.services.workflows import WorkflowService

EXAMPLES = {
    "booking": ObjectId("000000000000000000000001"),
    "support_triage": ObjectId("000000000000000000000002"),
    "chat_assistant": ObjectId("000000000000000000000003"),
}


async def load_examples(workflows: WorkflowService, tenant: str) -> dict[str, ObjectId]:
    """Create each example for ``tenant`` unless it is there already."""
    for name, workflow_id in EXAMPLES.items():
        if await workflows.find(tenant, workflow_id) is not None:
            continue
        spec = json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text())
        try:
            await workflows.create(
                tenant, spec["name"], spec.get("description"), spec["definition"], workflow_id
            )
        except DuplicateKeyError:
            # Another server process started on this database at the same time (replicas
            # do) created it first: its unique ids keep the example single.
            continue
    return EXAMPLES
