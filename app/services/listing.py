"""Listing runs, newest first, a page at a time.

Pages are cut by keyset on the run's id (never skip): a cursor is the id of the last run
a page shows, and the next page starts below it. So a page costs the same however deep
the listing goes, and runs created or changed while a client pages cannot shift what
follows: nothing repeats or goes missing. (A new run is above the cursor, unless another
process made it in the same second as the cursor's run: then a later page shows it.) One
run more than the page holds is read, so that a last page says so (no ``next_cursor``)
instead of leading to an empty one.
"""

from dataclasses import dataclass
from datetime import datetime

from bson import ObjectId

from app.clock import Clock
from app.engine.state import RunStatus
from app.services.workflows import WorkflowService
from app.store.documents import RunSummaryDocument
from app.store.runs import RunFilter, RunStore


@dataclass(frozen=True, slots=True)
class PageOfRuns:
    runs: list[RunSummaryDocument]
    # The id of the last run shown, when more runs follow; else None.
    next_cursor: ObjectId | None


class RunLister:
    def __init__(self, runs: RunStore, workflows: WorkflowService, clock: Clock) -> None:
        self._runs = runs
        self._workflows = workflows
        self._clock = clock

    async def page(
        self,
        tenant: str,
        limit: int,
        cursor: ObjectId | None,
        *,
        workflow_id: ObjectId | None = None,
        status: RunStatus | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> PageOfRuns:
        """Up to ``limit`` of the tenant's runs, after ``cursor`` (the ``next_cursor`` of
        the previous page): of one workflow, with one status (``running``: a turn is
        executing), created at or after ``created_after`` and before ``created_before``."""
        run_filter = RunFilter(
            workflow_id=workflow_id,
            status=status,
            created_after=created_after,
            created_before=created_before,
            alive_at=self._clock(),  # runs past their cleanup_after are as good as deleted
        )
        runs = await self._runs.list_page(tenant, run_filter, limit + 1, cursor)
        if len(runs) <= limit:
            return PageOfRuns(runs=runs, next_cursor=None)
        return PageOfRuns(runs=runs[:limit], next_cursor=runs[limit - 1].id)

    async def page_of_workflow(
        self,
        tenant: str,
        workflow_id: ObjectId,
        limit: int,
        cursor: ObjectId | None,
        *,
        status: RunStatus | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> PageOfRuns:
        """The same as ``page`` for one workflow's runs; NotFound if the tenant has no
        such workflow (an empty page would not tell a typo from a workflow not run yet)."""
        await self._workflows.get(tenant, workflow_id)
        return await self.page(
            tenant,
            limit,
            cursor,
            workflow_id=workflow_id,
            status=status,
            created_after=created_after,
            created_before=created_before,
        )
