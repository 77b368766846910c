"""Settings: one model, read from a TOML file and overridden by CONNECTOR_* environment variables.

Precedence (highest first): environment variables (`CONNECTOR_REDIS__URL`, nested with `__`),
then the TOML file (`--config FILE` or `CONNECTOR_CONFIG`), then the defaults of each section
(connector.sections).
Nothing here runs at import time; the CLI calls `load_settings()` once and passes the result down.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connector.errors import ConfigError
from connector.sections import (
    ENV_PREFIX,
    ChatSettings,
    EmbeddingSettings,
    IndexType,
    ObservabilitySettings,
    PipelineSettings,
    PostgresSettings,
    RedisSettings,
    ReindexSettings,
    ServeSettings,
    TableSettings,
    VectorAlgorithm,
    VectorDistance,
    VectorSettings,
    VectorType,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "ChatSettings",
    "EmbeddingSettings",
    "IndexType",
    "ObservabilitySettings",
    "PipelineSettings",
    "PostgresSettings",
    "RedisSettings",
    "ReindexSettings",
    "ServeSettings",
    "Settings",
    "TableSettings",
    "VectorAlgorithm",
    "VectorDistance",
    "VectorSettings",
    "VectorType",
    "load_settings",
]

CONFIG_ENV = "CONNECTOR_CONFIG"


class Settings(BaseSettings):
    """Everything the connector can be told. See `config.example.toml` for each setting."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    pipeline: PipelineSettings = PipelineSettings()
    chat: ChatSettings = ChatSettings()
    reindex: ReindexSettings = ReindexSettings()
    serve: ServeSettings = ServeSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    tables: list[TableSettings] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment must win over it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check_tables(self) -> Settings:
        seen: set[str] = set()
        for table in self.tables:
            if table.qualified_name in seen:
                raise ValueError(f"table {table.qualified_name} is configured twice")
            seen.add(table.qualified_name)
        return self

    def table(self, qualified_name: str) -> TableSettings:
        for table in self.tables:
            if table.qualified_name == qualified_name:
                return table
        raise ConfigError(f"table {qualified_name} is not configured ([[tables]] name = ...)")


def load_settings(
    path: str | os.PathLike[str] | None = None, *, require_tables: bool = True
) -> Settings:
    """Load settings from `path` (or $CONNECTOR_CONFIG) plus the environment.

    Raises ConfigError with one line per problem, each naming the setting, its environment
    variable, and what is wrong.
    """
    file = path or os.environ.get(CONFIG_ENV)
    data = _read_toml(Path(file)) if file else {}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, file)) from None
    if require_tables and not settings.tables:
        where = f"in {file}" if file else f"(no config file: pass --config or set {CONFIG_ENV})"
        raise ConfigError(
            f"no tables configured {where}: add a [[tables]] section with name and content, "
            "as config.example.toml shows"
        )
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (--config / {CONFIG_ENV})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _explain(exc: ValidationError, file: str | os.PathLike[str] | None) -> str:
    source = f" in {file}" if file else ""
    lines = [f"invalid configuration{source}:"]
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        setting = ".".join(loc) or "(root)"
        env = ENV_PREFIX + "__".join(p for p in loc if not p.isdigit()).upper()
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "this setting is required"
        elif error["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling against config.example.toml)"
        lines.append(f"  {setting}: {message}  [env {env}]")
    return "\n".join(lines)
