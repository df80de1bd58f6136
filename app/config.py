"""Configuration from the environment; every setting is listed in the README."""

import math
import os
import re
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

import msgspec

from app.engine.budget import EvaluationLimits
from app.engine.compiler import DefinitionLimits
from app.engine.sandbox.template_checks import TemplateLimits
from app.store.documents import (
    BSON_BYTES_PER_JSON_BYTE,
    MONGODB_MAX_DOCUMENT_BYTES,
    RUN_FIELDS_BYTES,
)

DEV_TENANT = "dev"


class ConfigError(Exception):
    """A setting that the server cannot start with; the message says how to fix it."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    mongodb_uri: str | None = None
    database_name: str = "tandem"
    api_keys: dict[str, str] = msgspec.field(default_factory=dict)  # key -> tenant
    # The key of tenant ``dev`` on the embedded default with no keys set, and where it
    # comes from: TANDEM_DEV_KEY, a data file that kept it, or made at start-up.
    dev_key: str | None = None
    dev_key_source: Literal["TANDEM_DEV_KEY", "data file", "made"] | None = None
    examples_tenant: str | None = None
    lease_seconds: float = 30.0
    max_body_bytes: int = 1024 * 1024
    max_message_bytes: int = 32 * 1024
    history_limit: int = 200
    llm_provider: str = "echo"
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout_seconds: float = 60.0
    llm_max_retries: int = 2
    echo_delay_ms: float = 0.0
    # How often a turn in flight records its progress (and so learns of a stop), and how
    # often a run stream reads a run executing in another server process.
    poll_ms: float = 250.0
    # How long each process keeps a workflow's latest version for first turns, and so how
    # long (and a little more) a publish waits before it answers (``LatestVersions``). The
    # same on every process sharing a database. 0: read every time, and answer at once.
    latest_version_ms: float = 250.0
    # How often each process looks for turns whose server died; None: every 10 s on
    # MongoDB, never on the embedded store (one process owns it: none can die apart).
    sweep_seconds: float | None = None
    # A stream with nothing to send sends a comment line this often (proxies close idle ones).
    stream_keepalive_seconds: float = 15.0
    max_turn_recoveries: int = 2
    max_stored_bytes: int = 8 * 1024 * 1024
    # How long an Idempotency-Key of POST .../execute is remembered, from its first request.
    idempotency_hours: float = 24.0
    # What the runs whose last turn this process committed may take in memory (see
    # ``RunCache``): a later turn of one of them saves a round trip. 0: none are kept.
    run_cache_mb: float = 64.0

    # How long a run is kept after its last turn; 0 keeps runs forever.
    run_retention_days: float = 30.0
    evaluation: EvaluationLimits = msgspec.field(default_factory=EvaluationLimits)
    definitions: DefinitionLimits = msgspec.field(default_factory=DefinitionLimits)
    # Origins a browser may call the API from (``*``: any); none: Tandem's own only.
    cors_origins: tuple[str, ...] = ()
    # How long start-up waits for MongoDB to answer before saying it cannot be reached.
    mongodb_startup_timeout_seconds: float = 5.0
    # The file that keeps the embedded store across restarts, and how often it is written.
    data_file: str | None = None
    data_file_save_seconds: float = 10.0

    @property
    def embedded(self) -> bool:
        return self.mongodb_uri is None

    @property
    def sweep_interval_seconds(self) -> float:
        if self.sweep_seconds is not None:
            return self.sweep_seconds
        return 0.0 if self.embedded else 10.0

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    @property
    def idempotency_lifetime(self) -> timedelta:
        return timedelta(hours=self.idempotency_hours)

    @property
    def run_retention(self) -> timedelta | None:
        """How long a run is kept after its last turn; None: forever."""
        return timedelta(days=self.run_retention_days) if self.run_retention_days else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        uri = env.get("MONGODB_URI") or None
        keys = parse_api_keys(env.get("TANDEM_API_KEYS", ""))
        dev_key = None
        fixed_dev_key = _dev_key(env)
        if fixed_dev_key is not None and keys:
            raise ConfigError(
                "TANDEM_DEV_KEY and TANDEM_API_KEYS are both set: TANDEM_DEV_KEY is the key of "
                f"the embedded default; add it to TANDEM_API_KEYS as '{fixed_dev_key}:dev' instead."
            )
        if not keys:
            if uri is not None:
                raise ConfigError(
                    "MONGODB_URI is set but TANDEM_API_KEYS is not: set TANDEM_API_KEYS to "
                    "'key:tenant[,key2:tenant2]' so that the data in MongoDB is protected."
                )
            dev_key = fixed_dev_key or "dev-" + secrets.token_urlsafe(18)
            keys = {dev_key: DEV_TENANT}
        data_file = env.get("TANDEM_DATA_FILE") or None
        if data_file is not None and uri is not None:
            raise ConfigError(
                "TANDEM_DATA_FILE and MONGODB_URI are both set: the data file keeps the embedded "
                "store, and MongoDB keeps its data itself; unset one of them."
            )
        examples_tenant = env.get("TANDEM_EXAMPLES_TENANT") or None
        if examples_tenant is None and uri is None:
            examples_tenant = next(iter(keys.values()))
        settings = cls(
            mongodb_uri=uri,
            database_name=env.get("TANDEM_DB_NAME", "tandem"),
            api_keys=keys,
            dev_key=dev_key,
            dev_key_source=None
            if dev_key is None
            else "TANDEM_DEV_KEY"
            if fixed_dev_key is not None
            else "made",
            examples_tenant=examples_tenant,
            lease_seconds=_number(env, "TANDEM_LEASE_SECONDS", 30.0),
            max_body_bytes=_whole(env, "TANDEM_MAX_BODY_BYTES", 1024 * 1024),
            max_message_bytes=_whole(env, "TANDEM_MAX_MESSAGE_BYTES", 32 * 1024),
            history_limit=_whole(env, "TANDEM_HISTORY_LIMIT", 200),
            llm_provider=_llm_provider(env),
            llm_base_url=env.get("TANDEM_LLM_BASE_URL") or None,
            llm_api_key=env.get("TANDEM_LLM_API_KEY") or None,
            llm_model=env.get("TANDEM_LLM_MODEL") or "gpt-4o-mini",
            llm_timeout_seconds=_number(env, "TANDEM_LLM_TIMEOUT_SECONDS", 60.0),
            llm_max_retries=_whole(env, "TANDEM_LLM_MAX_RETRIES", 2, allow_zero=True),
            echo_delay_ms=_number(env, "TANDEM_ECHO_DELAY_MS", 0.0, allow_zero=True),
            poll_ms=_number(env, "TANDEM_POLL_MS", 250.0),
            latest_version_ms=_number(env, "TANDEM_LATEST_VERSION_MS", 250.0, allow_zero=True),
            stream_keepalive_seconds=_number(env, "TANDEM_STREAM_KEEPALIVE_SECONDS", 15.0),
            sweep_seconds=_number(env, "TANDEM_SWEEP_SECONDS", 10.0, allow_zero=True)
            if "TANDEM_SWEEP_SECONDS" in env
            else None,
            max_turn_recoveries=_whole(env, "TANDEM_MAX_TURN_RECOVERIES", 2, allow_zero=True),
            max_stored_bytes=_whole(env, "TANDEM_MAX_STORED_BYTES", 8 * 1024 * 1024),
            idempotency_hours=_number(env, "TANDEM_IDEMPOTENCY_HOURS", 24.0),
            run_cache_mb=_number(env, "TANDEM_RUN_CACHE_MB", 64.0, allow_zero=True),
            run_retention_days=_retention_days(env),
            evaluation=_evaluation_limits(env),
            definitions=_definition_limits(env),
            cors_origins=parse_cors_origins(env.get("TANDEM_CORS_ORIGINS", "")),
            mongodb_startup_timeout_seconds=_number(
                env, "TANDEM_MONGODB_STARTUP_TIMEOUT_SECONDS", 5.0
            ),
            data_file=data_file,
            data_file_save_seconds=_number(env, "TANDEM_DATA_FILE_SAVE_SECONDS", 10.0),
        )
        _check_run_document_fits(settings)
        return settings

    def with_kept_dev_key(self, key: str) -> "Settings":
        """These settings with the dev key a data file kept, unless TANDEM_DEV_KEY fixes it."""
        if self.dev_key_source != "made":
            return self
        return msgspec.structs.replace(
            self, dev_key=key, dev_key_source="data file", api_keys={key: DEV_TENANT}
        )


def parse_api_keys(raw: str) -> dict[str, str]:
    """``key:tenant,key2:tenant2`` as a mapping from key to tenant."""
    keys: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        key, _, tenant = entry.rpartition(":")
        if not key or not tenant:
            raise ConfigError(f"TANDEM_API_KEYS entry {entry!r} is not of the form key:tenant")
        keys[key] = tenant
    return keys


# What a browser sends as Origin: scheme://host[:port], no path; Litestar reads a * in it
# as "anything here" (http://localhost:*).
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s]+")


def parse_cors_origins(raw: str) -> tuple[str, ...]:
    """``https://chat.example.com,http://localhost:5173`` (or ``*``) as a tuple of origins."""
    origins = tuple(filter(None, (part.strip() for part in raw.split(","))))
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"TANDEM_CORS_ORIGINS entry {origin!r} is not an origin: write "
                "scheme://host[:port] with no path (for example http://localhost:5173), or *"
            )
    return origins


def _dev_key(env: Mapping[str, str]) -> str | None:
    """``TANDEM_DEV_KEY``: a key as clients send it, in a header."""
    key = env.get("TANDEM_DEV_KEY") or None
    if key is not None and (len(key) < 8 or not key.isprintable() or any(c in key for c in " ,")):
        raise ConfigError(
            "TANDEM_DEV_KEY must be at least 8 printable characters with no spaces or commas"
        )
    return key


def _llm_provider(env: Mapping[str, str]) -> str:
    """``TANDEM_LLM_PROVIDER``, else ``openai`` when an endpoint or key is set, else ``echo``."""
    named = env.get("TANDEM_LLM_PROVIDER")
    if named:
        if named not in ("echo", "openai"):
            raise ConfigError(f"TANDEM_LLM_PROVIDER must be 'echo' or 'openai', not {named!r}")
        return named
    configured = env.get("TANDEM_LLM_BASE_URL") or env.get("TANDEM_LLM_API_KEY")
    return "openai" if configured else "echo"


def _check_run_document_fits(settings: Settings) -> None:
    """A run document holds what its turns store (``max_stored_bytes``) and, while a turn
    executes, the turn's input (at most a request body of JSON, which BSON may store in
    up to 7 times the bytes): both must fit MongoDB's 16 MiB a document."""
    most = (
        settings.max_stored_bytes
        + BSON_BYTES_PER_JSON_BYTE * settings.max_body_bytes
        + RUN_FIELDS_BYTES
    )
    if most > MONGODB_MAX_DOCUMENT_BYTES:
        room = MONGODB_MAX_DOCUMENT_BYTES - RUN_FIELDS_BYTES
        raise ConfigError(
            "TANDEM_MAX_STORED_BYTES plus 7 times TANDEM_MAX_BODY_BYTES must be at most "
            f"{room} ({settings.max_stored_bytes} + 7 * {settings.max_body_bytes} is "
            "more), so that a run always fits MongoDB's 16 MiB a document."
        )


# A run kept longer than a century might as well be kept forever (0); and far-off dates
# are where datetimes overflow.
MAX_RETENTION_DAYS = 36_500


def _retention_days(env: Mapping[str, str]) -> float:
    """``TANDEM_RUN_RETENTION_DAYS``: days (fractions too) a run is kept; 0 is forever."""
    days = _number(env, "TANDEM_RUN_RETENTION_DAYS", 30.0, allow_zero=True)
    if not days <= MAX_RETENTION_DAYS:  # NaN too
        raise ConfigError(
            f"TANDEM_RUN_RETENTION_DAYS must be at most {MAX_RETENTION_DAYS} (0 keeps runs "
            f"forever), not {env['TANDEM_RUN_RETENTION_DAYS']!r}"
        )
    return days


def _evaluation_limits(env: Mapping[str, str]) -> EvaluationLimits:
    """``TANDEM_MAX_WORK`` and the other limits of one turn's evaluation."""
    default = EvaluationLimits()
    return EvaluationLimits(
        max_work=_whole(env, "TANDEM_MAX_WORK", default.max_work),
        max_render_work=_whole(env, "TANDEM_MAX_RENDER_WORK", default.max_render_work),
        max_produced_bytes=_whole(env, "TANDEM_MAX_PRODUCED_BYTES", default.max_produced_bytes),
        max_string_length=_whole(env, "TANDEM_MAX_STRING_LENGTH", default.max_string_length),
        max_collection_length=_whole(
            env, "TANDEM_MAX_COLLECTION_LENGTH", default.max_collection_length
        ),
        max_integer_bits=_whole(env, "TANDEM_MAX_INTEGER_BITS", default.max_integer_bits),
    )


def _definition_limits(env: Mapping[str, str]) -> DefinitionLimits:
    """``TANDEM_MAX_TEMPLATE_CHARACTERS`` and ``TANDEM_MAX_TEMPLATE_NESTING``."""
    default = DefinitionLimits()
    return DefinitionLimits(
        max_template_characters=_whole(
            env, "TANDEM_MAX_TEMPLATE_CHARACTERS", default.max_template_characters
        ),
        max_template_nodes=_whole(env, "TANDEM_MAX_TEMPLATE_NODES", default.max_template_nodes),
        template=TemplateLimits(
            max_template_nesting=_whole(
                env, "TANDEM_MAX_TEMPLATE_NESTING", default.template.max_template_nesting
            ),
            max_nested_blocks=default.template.max_nested_blocks,
        ),
    )


def _whole(env: Mapping[str, str], name: str, default: int, *, allow_zero: bool = False) -> int:
    value = _number(env, name, default, allow_zero=allow_zero)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, not {env[name]!r}")
    return int(value)


def _number(
    env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f"{name} must be {'zero or more' if allow_zero else 'positive'}, not {raw!r}"
        )
    return value
