"""Publishing workflows, and the cache of compiled versions that turns run.

Compiling a definition (Jinja2 turns each template into Python) takes up to about
two seconds for the largest one the limits allow, so it runs in a small thread
pool of its own: the event loop goes on serving other requests meanwhile.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bson import ObjectId

from app.clock import Clock
from app.engine.compiler import (
    DEFAULT_LIMITS,
    CompiledWorkflow,
    DefinitionLimits,
    InvalidDefinition,
    compile_workflow,
)
from app.engine.templating import EvaluationError, to_storable
from app.errors import DefinitionRejected, ErrorItem, InvalidInput, NotFound
from app.services.latest_versions import LatestVersions
from app.store.documents import VersionDocument, VersionSummary, WorkflowDocument
from app.store.workflows import WorkflowStore

# Compiled versions kept per process, by what they weigh (about 70 bytes of memory per
# character of template source): about 140 MB, a dozen of the largest definitions or
# thousands of ordinary ones.
COMPILED_CACHE_CHARACTERS = 2_000_000
MIN_CACHE_WEIGHT = 1_024
COMPILER_THREADS = 2


class WorkflowService:
    def __init__(
        self,
        workflows: WorkflowStore,
        clock: Clock,
        limits: DefinitionLimits = DEFAULT_LIMITS,
        latest: LatestVersions | None = None,
    ) -> None:
        self._workflows = workflows
        self._latest = latest or LatestVersions(keep_seconds=0)
        self._clock = clock
        self._limits = limits
        self._compiler = ThreadPoolExecutor(COMPILER_THREADS, thread_name_prefix="compile")
        # Published versions never change, so each is compiled once per process.
        self._compiled: OrderedDict[tuple[ObjectId, int], CompiledWorkflow] = OrderedDict()
        self._cached_weight = 0

    def close(self) -> None:
        self._compiler.shutdown(wait=False, cancel_futures=True)

    async def create(
        self,
        tenant: str,
        name: str,
        description: str | None,
        definition: dict[str, Any],
        workflow_id: ObjectId | None = None,
    ) -> WorkflowDocument:
        try:
            to_storable([name, description])
        except EvaluationError as error:
            raise InvalidInput(f"The name or description cannot be stored: {error}.") from None
        compiled = await self._compile(definition)
        workflow = await self._workflows.create(
            tenant, name, description, definition, self._clock(), workflow_id
        )
        self._remember(workflow.id, 0, compiled)
        return workflow

    async def publish(self, tenant: str, workflow_id: ObjectId, definition: dict[str, Any]) -> int:
        workflow = await self.get(tenant, workflow_id)
        compiled = await self._compile(definition)
        version = await self._workflows.publish_version(workflow, definition, self._clock())
        self._remember(workflow.id, version, compiled)
        await self._latest.published()
        return version

    async def get(self, tenant: str, workflow_id: ObjectId) -> WorkflowDocument:
        workflow = await self._workflows.find(tenant, workflow_id)
        if workflow is None:
            raise NotFound(f"No workflow {workflow_id}.")
        return workflow

    async def latest_version(self, tenant: str, workflow_id: ObjectId) -> int:
        """The version a first turn pins (``LatestVersions``), or a 404 for a workflow the
        tenant does not have."""

        async def read() -> int:
            return (await self.get(tenant, workflow_id)).latest_version

        return await self._latest.pinned(tenant, workflow_id, read)

    async def find(self, tenant: str, workflow_id: ObjectId) -> WorkflowDocument | None:
        return await self._workflows.find(tenant, workflow_id)

    async def list_page(
        self, tenant: str, limit: int, before: ObjectId | None
    ) -> list[WorkflowDocument]:
        return await self._workflows.list_page(tenant, limit, before)

    async def versions(self, tenant: str, workflow_id: ObjectId) -> list[VersionSummary]:
        return await self._workflows.version_summaries(tenant, workflow_id)

    async def get_version(
        self, tenant: str, workflow_id: ObjectId, version: int
    ) -> VersionDocument:
        document = await self._workflows.find_version(tenant, workflow_id, version)
        if document is None:
            raise NotFound(f"Workflow {workflow_id} has no version {version}.")
        return document

    async def compiled(self, tenant: str, workflow_id: ObjectId, version: int) -> CompiledWorkflow:
        """The compiled version, from the cache or loaded once (one round trip on a miss)."""
        key = (workflow_id, version)
        compiled = self._compiled.get(key)
        if compiled is not None:
            self._compiled.move_to_end(key)
            return compiled
        document = await self.get_version(tenant, workflow_id, version)
        try:
            compiled = await self._run_compiler(compile_workflow, document.definition, self._limits)
        except InvalidDefinition as error:  # stored under other rules or other limits
            problems = [ErrorItem(path=p.path, message=p.message) for p in error.problems]
            raise DefinitionRejected(
                f"Version {version} of workflow {workflow_id} cannot run on this server: "
                + "; ".join(f"{p.path}: {p.message}" for p in problems),
                errors=problems,
            ) from error
        self._remember(workflow_id, version, compiled)
        return compiled

    async def _compile(self, definition: Any) -> CompiledWorkflow:
        """Validate and compile a definition that is about to be stored, or raise a 422."""
        return await self._run_compiler(_compile, definition, self._limits)

    async def _run_compiler(
        self,
        compile_: Callable[[Any, DefinitionLimits], CompiledWorkflow],
        definition: Any,
        limits: DefinitionLimits,
    ) -> CompiledWorkflow:
        loop = asyncio.get_running_loop()
        compiled: CompiledWorkflow = await loop.run_in_executor(
            self._compiler, compile_, definition, limits
        )
        return compiled

    def _remember(self, workflow_id: ObjectId, version: int, compiled: CompiledWorkflow) -> None:
        key = (workflow_id, version)
        if key in self._compiled:
            return
        self._compiled[key] = compiled
        self._cached_weight += _weight(compiled)
        while self._cached_weight > COMPILED_CACHE_CHARACTERS and len(self._compiled) > 1:
            _, evicted = self._compiled.popitem(last=False)
            self._cached_weight -= _weight(evicted)


def _weight(compiled: CompiledWorkflow) -> int:
    return max(compiled.source_characters, MIN_CACHE_WEIGHT)


def _compile(definition: Any, limits: DefinitionLimits) -> CompiledWorkflow:
    try:
        to_storable(definition)
        return compile_workflow(definition, limits)
    except EvaluationError as error:
        problem = ErrorItem(path="definition", message=str(error))
        raise DefinitionRejected(
            f"The definition cannot be stored: {error}.", errors=[problem]
        ) from None
    except InvalidDefinition as error:
        problems = [ErrorItem(path=p.path, message=p.message) for p in error.problems]
        raise DefinitionRejected(
            f"The definition has {len(problems)} problem(s).", errors=problems
        ) from error
