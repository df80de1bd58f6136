"""The OpenAPI document (``/schema/openapi.json``): its configuration, and what Litestar
cannot infer from our types alone."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Router

# Litestar's plugin for msgspec Structs is not exported; ours extends it rather than
# copy it. tests/api/test_openapi_and_health.py checks what it adds.
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.static_files import create_static_files_router
from litestar.typing import FieldDefinition
from swagger_ui_bundle import swagger_ui_path

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Reference


# The OpenAPI pages load their scripts from Tandem itself, never from a CDN, so that they
# work offline: Swagger UI from the swagger-ui-bundle-v2 package, ReDoc (2.5.4, MIT, its
# npm package's standalone bundle) from app/api/openapi_assets/redoc. Under /schema, they
# are public like the pages.
ASSETS = "/schema/assets"
SWAGGER_UI_ASSETS = f"{ASSETS}/swagger-ui"
REDOC_ASSETS = f"{ASSETS}/redoc"
REDOC_FILES = Path(__file__).parent / "openapi_assets" / "redoc"
FAVICON = f"<link rel='icon' type='image/png' href='{SWAGGER_UI_ASSETS}/favicon-32x32.png'>"


def openapi_asset_routers() -> list[Router]:
    """The routes serving the OpenAPI pages' scripts and styles."""
    return [
        create_static_files_router(
            path=SWAGGER_UI_ASSETS, directories=[swagger_ui_path], include_in_schema=False
        ),
        create_static_files_router(
            path=REDOC_ASSETS, directories=[REDOC_FILES], include_in_schema=False
        ),
    ]


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Tandem",
        version="1.0.0",
        description="Interactive, multi-turn workflows, one turn at a time.",
        path="/schema",
        # ReDoc first: it also answers /schema itself.
        render_plugins=[
            RedocRenderPlugin(
                js_url=f"{REDOC_ASSETS}/redoc.standalone.js", google_fonts=False, favicon=FAVICON
            ),
            SwaggerRenderPlugin(
                js_url=f"{SWAGGER_UI_ASSETS}/swagger-ui-bundle.js",
                css_url=f"{SWAGGER_UI_ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{SWAGGER_UI_ASSETS}/swagger-ui-standalone-preset.js",
                favicon=FAVICON,
            ),
            YamlRenderPlugin(favicon=FAVICON),
        ],
        components=Components(
            security_schemes={
                "ApiKey": SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header"
                ),
                "Bearer": SecurityScheme(type="http", scheme="bearer"),
            }
        ),
    )


class StructSchemaWithOurMeta(StructSchemaPlugin):
    """Documents two facts of our msgspec Structs that Litestar's plugin leaves out.

    - A Struct that refuses unknown fields (``forbid_unknown_fields``) says so:
      ``additionalProperties: false``.
    - A field annotated ``Meta(extra={"documented_as": T})`` is documented with T's
      schema. Such a field is checked later than msgspec would (a definition by the
      compiler, which answers 422 with one path per problem), so its type stays ``Any``.
    """

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: "SchemaCreator"
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct: Any = field_definition.type_
        if struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            documented_as = _documented_as(field.type)
            if documented_as is not None and schema.properties is not None:
                property_schema: Schema | Reference = schema_creator.for_field_definition(
                    FieldDefinition.from_annotation(documented_as)
                )
                described = schema.properties[field.encode_name]
                if isinstance(described, Schema) and described.description:
                    property_schema = Schema(
                        all_of=[property_schema], description=described.description
                    )
                schema.properties[field.encode_name] = property_schema
        return schema


def _documented_as(field_type: msgspec.inspect.Type) -> Any:
    if isinstance(field_type, msgspec.inspect.Metadata) and field_type.extra:
        return field_type.extra.get("documented_as")
    return None


# As the server writes it (lines end with CRLF), but for the ids and times.
SSE_EXAMPLE = "".join(
    f"{message}\r\n\r\n"
    for message in (
        "id: 7\r\nevent: node_started\r\n"
        'data: {"seq":7,"turn":2,"type":"node_started","node_id":"reply",'
        '"at":"2026-11-22T12:00:00.123000Z","data":{"node_type":"llm"}}',
        'id: 7.5\r\nevent: llm_delta\r\ndata: {"text":"Hello"}',
        "event: turn_result\r\n"
        'data: {"run_id":"65f0c0ffee0000000000abcd","workflow_id":"65f0c0ffee00000000000001",'
        '"version":3,"status":"waiting_for_user_input","turn":2,"events":[],'
        '"is_waiting_for_input":true,"is_terminal":false,"waiting_for":null,"output":null,'
        '"error":null}',
    )
)

SSE_DESCRIPTION = (
    "With `Accept: text/event-stream`, the turn as Server-Sent Events. One message per event"
    " as it happens (`event:` its type, `id:` its seq, `data:` the event as JSON);"
    ' `llm_delta` messages (`data: {"text"}`, `id:` `<seq>.<characters>`: the event the text'
    " follows and how much of it has been sent) while LLM text is generated, sent and never"
    " stored; and last `turn_result`, whose data is the same answer as the JSON one"
    " (`TurnAnswer`). If the turn cannot finish, the last message is `error` with an error"
    " body instead. Errors found before the turn starts answer as plain JSON."
)


# Who starts a run (the X-Execution-Source header): a name, as the handler checks it.
EXECUTION_SOURCE_PATTERN = "[A-Za-z][A-Za-z0-9_-]{0,31}"


def _optional_header(name: str, description: str, **schema: Any) -> Parameter:
    schema.setdefault("default", "")
    return Parameter(
        name=name,
        param_in=ParamType.HEADER,
        required=False,
        description=description,
        schema=Schema(type=OpenAPIType.STRING, description=description, **schema),
    )


TURN_HEADERS = (
    _optional_header(
        "Prefer",
        "`respond-async`: answer `202` at once and execute the turn in the background.",
    ),
    _optional_header(
        "X-Execution-Source",
        "Who starts the run (`API` when absent, `PLAYGROUND`, …): letters, digits, `_` and"
        " `-`, at most 32; shown upper-cased as the run's `execution_source`.",
        pattern=f"^{EXECUTION_SOURCE_PATTERN}$",
    ),
    _optional_header(
        "Idempotency-Key",
        "Makes the turn safe to retry (the IETF Idempotency-Key draft): a key of the client's"
        ' choosing, 1 to 255 printable ASCII characters, quoted (`"…"`, as the draft writes'
        " it; 257 with the quotes) or not. The first"
        " request with a key executes and its answer is stored for"
        " `TANDEM_IDEMPOTENCY_HOURS` (24); the same request again with the key gets that"
        " answer again (status, body, `Location`, a stream replayed as one) with"
        " `Idempotent-Replayed: true`, and executes nothing, also when its first attempt's"
        " server died mid-turn (the turn is executed once, by its recovery). The key with"
        " another request (method, path, body, `Accept`, `Prefer`, `X-Execution-Source`):"
        " `422 idempotency_key_reused`; while the first request executes: `409"
        " request_in_progress`. A request refused before its turn executes (`400`, `404`,"
        " `409`, `422 invalid_definition`) stores nothing: the key stays free. Keys are per"
        " tenant.",
        default=None,  # none: absent, the turn is not keyed
        min_length=1,
        max_length=257,
        pattern="^[ -~]+$",
    ),
)

# On an answer sent again for an Idempotency-Key.
REPLAYED_HEADER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
    description="`true` when this is the stored answer of an earlier request with the same"
    " `Idempotency-Key`, sent again.",
)


@dataclass
class TurnOperation(Operation):
    """The execute operation, which Litestar documents from the handler's signature as a
    JSON answer to a required body. A turn also streams as SSE, and an empty body is a
    valid first turn; Litestar has no way to say either from the handler alone. Nor does
    it see the headers the handler reads itself (``TURN_HEADERS``)."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), *TURN_HEADERS]
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False
        for status in ("200", "202"):
            documented = (self.responses or {}).get(status)
            if isinstance(documented, OpenAPIResponse):
                documented.headers = {
                    **(documented.headers or {}),
                    "Idempotent-Replayed": REPLAYED_HEADER,
                }
        answer = (self.responses or {}).get("200")
        if isinstance(answer, OpenAPIResponse) and answer.content is not None:
            answer.description = (
                "The turn's answer; with `Accept: text/event-stream`, the turn as it happens."
            )
            answer.content["text/event-stream"] = OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, description=SSE_DESCRIPTION),
                examples={"turn": Example(summary="A turn with an LLM reply", value=SSE_EXAMPLE)},
            )


RUN_STREAM_EXAMPLE = "".join(
    f"{message}\r\n\r\n"
    for message in (
        "id: 8\r\nevent: llm_started\r\n"
        'data: {"seq":8,"turn":2,"type":"llm_started","node_id":"reply",'
        '"at":"2026-11-22T12:00:00.125000Z","data":{"model":"gpt-4o-mini"}}',
        'id: 8.5\r\nevent: llm_delta\r\ndata: {"text":"Hello"}',
        ": keepalive",
        'id: 8.11\r\nevent: llm_delta\r\ndata: {"text":", Ann."}',
    )
)


@dataclass
class StreamOperation(Operation):
    """The run stream, which Litestar documents as a bare string."""

    def __post_init__(self) -> None:
        answer = (self.responses or {}).get("200")
        if isinstance(answer, OpenAPIResponse):
            answer.description = "The run's events as Server-Sent Events."
            answer.content = {
                "text/event-stream": OpenAPIMediaType(
                    # Each message: its type, its id, and its data (JSON text of an Event,
                    # of an ErrorBody, or of {"text"} for LLM text).
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        properties={
                            "event": Schema(type=OpenAPIType.STRING),
                            "id": Schema(type=OpenAPIType.STRING),
                            "data": Schema(
                                type=OpenAPIType.STRING,
                                content_media_type="application/json",
                            ),
                        },
                        description="One message per event (`id:` its seq), `llm_delta`"
                        " messages for LLM text (`id:` `<seq>.<characters>`), comment lines"
                        " every 15 s while nothing happens.",
                    ),
                    examples={
                        "run": Example(summary="A run's LLM reply", value=RUN_STREAM_EXAMPLE)
                    },
                )
            }
