"""Property-based fuzzing of every operation, from the API's own OpenAPI document.

schemathesis generates requests that follow the document (positive) and requests that
break it (negative), sends them to the app in-process, and checks every answer: never
a 500, only documented statuses, bodies and headers that match their schemas, requests
that break the document refused, requests without credentials refused. Generated ids
name nothing, so about half of those that are well formed are swapped for the ids of
a workflow and a run made beforehand: reads and turns then reach the engine and the
store, not only the 404. Hypothesis is derandomized: a run does the same on every
machine (15 to 30 s here).

The app runs on the embedded (in-memory) store, whatever MONGODB_URI says:
schemathesis drives it from an event loop of its own, where a driver opened by a test
fixture cannot follow.
"""

import re
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from app.api.schemas import ID_PATTERN_IN
from app.config import Settings
from app.server import create_app
from app.store.embedded import open_embedded_client
from tests.support import BOOKING

KEY = "key-fuzz"


def semantic_refusals(method: str, path: str, *statuses: str) -> dict[str, Any]:
    """Let schema-valid requests of one operation also be refused with ``statuses``, for
    rules the document cannot state (a definition's nodes must connect; a stop needs a
    run; a number must fit in 64 bits; an Idempotency-Key names one request), which
    answer with their own code."""
    return {
        "include-name": f"{method} {path}",
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "404", "409", *statuses]
            }
        },
    }


CONFIG = SchemathesisConfig.from_dict(
    {
        "auth": {"openapi": {"ApiKey": {"api_key": KEY}}},
        "generation": {"mode": "all", "deterministic": True},
        # A request that breaks the document is refused with one of these; 413 (a body
        # over the size limit) is not in schemathesis's own list.
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "404", "405", "409", "413", "422"]
            }
        },
        "operations": [
            semantic_refusals("POST", "/v1/workflows", "422"),
            {
                **semantic_refusals("POST", "/v1/workflows/{workflow_id}/versions", "422"),
                # Schemathesis cannot negate this body's schema below its root ("a `not`
                # whose complement is not spelled out") for some of the draws Hypothesis
                # makes, and which draws it makes moves with the constants of every loaded
                # module; POST /v1/workflows takes the same definition and keeps its
                # negative cases.
                "generation": {"mode": "positive"},
            },
            semantic_refusals("POST", "/v1/workflows/{workflow_id}/execute", "400", "422"),
        ],
    }
)

app = create_app(
    Settings(api_keys={KEY: "fuzz"}), database=open_embedded_client()["tandem_fuzzing"]
)
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app, config=CONFIG)


def _post(path: str, body: dict[str, Any], **path_parameters: str) -> dict[str, Any]:
    case = schema[path]["POST"].Case(body=body, path_parameters=path_parameters)
    response = case.call(headers={"X-API-Key": KEY})
    assert response.status_code < 300, response.text
    answer: dict[str, Any] = response.json()
    return answer


_workflow_id = _post("/v1/workflows", {"name": "Booking", "definition": BOOKING})["workflow_id"]
_run_id = _post("/v1/workflows/{workflow_id}/execute", {}, workflow_id=_workflow_id)["run_id"]
KNOWN = {"workflow_id": _workflow_id, "run_id": _run_id, "version": 0}
_WELL_FORMED_ID = re.compile(ID_PATTERN_IN)


def _known_or(name: str, value: Any) -> st.SearchStrategy[Any]:
    """The generated value, or the known one in its place when the generated one is well
    formed (so that a request generated to break the document still breaks it)."""
    well_formed = (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if name == "version"
        else isinstance(value, str) and bool(_WELL_FORMED_ID.fullmatch(value))
    )
    if name in KNOWN and well_formed:
        return st.sampled_from([value, KNOWN[name]])
    return st.just(value)


@schema.hook
def flatmap_path_parameters(
    _: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    if not path_parameters:
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {name: _known_or(name, value) for name, value in path_parameters.items()}
    )


@schema.hook
def flatmap_body(_: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict) or "run_id" not in body:
        return st.just(body)
    return _known_or("run_id", body["run_id"]).map(lambda run_id: {**body, "run_id": run_id})


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate()
