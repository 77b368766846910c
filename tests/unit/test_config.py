import logging
from pathlib import Path

import pytest

from connector.config import load_settings
from connector.errors import ConfigError

GOOD = """
[postgres]
dsn = "postgresql://connector:s3cret@db:5432/app"
slot = "my_slot"

[redis]
url = "redis://cache:6379/0"

[embedding]
provider = "hashing"
dimensions = 256

[[tables]]
name = "public.documents"
content = ["title", "body"]
metadata = { source = "tag", updated_at = "numeric" }
chunk_tokens = 128
chunk_overlap = 16
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connector.toml"
    path.write_text(text)
    return path


def test_loads_toml(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.postgres.slot == "my_slot"
    assert settings.embedding.dimensions == 256
    table = settings.tables[0]
    assert table.qualified_name == "public.documents"
    assert table.index_name == "documents"
    assert table.metadata == {"source": "tag", "updated_at": "numeric"}
    # Secrets do not print.
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_REDIS__URL", "redis://other:6380/0")
    monkeypatch.setenv("CONNECTOR_EMBEDDING__DIMENSIONS", "512")
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.redis.url.get_secret_value() == "redis://other:6380/0"
    assert settings.embedding.dimensions == 512
    assert settings.postgres.slot == "my_slot"  # untouched values still come from the file


def test_config_env_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_CONFIG", str(write(tmp_path, GOOD)))
    assert load_settings().postgres.slot == "my_slot"


def test_wrong_type_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_EMBEDDING__DIMENSIONS", "many")
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, GOOD))
    assert "embedding.dimensions" in str(err.value)
    assert "CONNECTOR_EMBEDDING__DIMENSIONS" in str(err.value)


def test_missing_required_setting_is_named(tmp_path: Path) -> None:
    text = GOOD.replace('content = ["title", "body"]\n', "")
    with pytest.raises(ConfigError, match=r"tables\.0\.content: this setting is required"):
        load_settings(write(tmp_path, text))


def test_bad_values_explain_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chunk_overlap .* must be smaller"):
        load_settings(write(tmp_path, GOOD.replace("chunk_overlap = 16", "chunk_overlap = 500")))
    with pytest.raises(ConfigError, match="valid replication slot name"):
        load_settings(write(tmp_path, GOOD.replace("my_slot", "My-Slot")))
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(write(tmp_path, GOOD + "\n[postgres2]\nx = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[postgres"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_the_retired_write_timeout_still_loads_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = GOOD.replace(
        'url = "redis://cache:6379/0"', 'url = "redis://cache:6379/0"\nwrite_timeout_s = 60.0'
    )
    caplog.set_level(logging.WARNING, logger="connector.config")
    settings = load_settings(write(tmp_path, old))
    assert not hasattr(settings.redis, "write_timeout_s")
    assert "write_timeout_s" not in type(settings.redis).model_fields
    assert [r.getMessage() for r in caplog.records] == [
        "redis.write_timeout_s (CONNECTOR_REDIS__WRITE_TIMEOUT_S) is no longer used and is "
        "ignored: remove it from the settings"
    ]
    caplog.clear()
    monkeypatch.setenv("CONNECTOR_REDIS__WRITE_TIMEOUT_S", "60")
    assert load_settings(write(tmp_path, GOOD)).redis.socket_timeout_s == 10.0
    assert len(caplog.records) == 1
    monkeypatch.delenv("CONNECTOR_REDIS__WRITE_TIMEOUT_S")
    caplog.clear()
    load_settings(write(tmp_path, GOOD))
    assert not caplog.records


def test_no_tables_is_an_error_that_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"add a \[\[tables\]\] section"):
        load_settings(write(tmp_path, "[postgres]\nslot = 'x'\n"))


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    settings = load_settings(example)
    assert settings.tables


def test_example_config_documents_every_setting() -> None:
    from pydantic import BaseModel

    from connector.config import Settings

    example = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()
    sections = example.split("\n[")
    missing = []
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if name == "tables":
            from connector.config import TableSettings as model
        assert isinstance(model, type) and issubclass(model, BaseModel)
        text = next((s for s in sections if s.startswith(name) or s.startswith(f"[{name}")), "")
        for setting in model.model_fields:
            if (
                f"\n{setting} =" not in text
                and f"\n# {setting} =" not in text
                and (f"{setting}:" not in text)
                and f"\n[{name}.{setting}]" not in example  # a sub-table of its own
            ):
                missing.append(f"{name}.{setting}")
    from connector.config import VectorSettings

    vector = next(s for s in sections if s.startswith("tables.vector]"))
    for setting in VectorSettings.model_fields:
        if f"\n{setting} =" not in vector and f"\n# {setting} =" not in vector:
            missing.append(f"tables.vector.{setting}")
    assert not missing, f"config.example.toml does not document: {missing}"


def test_vector_options_are_checked_and_named() -> None:
    from connector.config import VectorSettings

    with pytest.raises(
        ValueError, match=r"vector\.m is an HNSW option, but vector\.algorithm is flat"
    ):
        VectorSettings(algorithm="flat", m=16)
    with pytest.raises(ValueError, match="type"):
        VectorSettings.model_validate({"type": "float64"})
    with pytest.raises(ValueError, match="distance"):
        VectorSettings.model_validate({"distance": "manhattan"})
    assert VectorSettings(algorithm="flat", type="float16").initial_cap is None


def test_tables_sharing_an_index_must_share_its_vector_options(tmp_path: Path) -> None:
    from connector.sink.schema import index_specs

    two = (
        GOOD
        + """
[[tables]]
name = "public.notes"
index = "documents"
content = ["body"]
[tables.vector]
type = "float16"
"""
    )
    settings = load_settings(
        write(
            tmp_path,
            two.replace(
                'content = ["title", "body"]', 'index = "documents"\ncontent = ["title", "body"]', 1
            ),
        )
    )
    with pytest.raises(
        ConfigError,
        match=r"table public.notes has other \[vector\] settings \(hnsw float16 cosine\)",
    ):
        index_specs(settings.tables)


@pytest.mark.parametrize(
    ("tokens", "problem"),
    [
        ('[""]', "is empty"),
        ('["good-token-of-enough-length", "   "]', "token 2 of 2 is empty"),
        ('["CHANGE-ME"]', "placeholder CHANGE-ME from deploy/kubernetes/secret.yaml"),
        ('["change_me_please_later_0123"]', "placeholder CHANGE-ME"),
        ('["tab\\tinside-a-long-token"]', "spaces or control characters"),
        ('["short-token"]', "shorter than 16 characters"),
    ],
)
def test_empty_placeholder_or_guessable_api_tokens_are_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokens: str, problem: str
) -> None:
    monkeypatch.setenv("CONNECTOR_SERVE__API_KEYS", tokens)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD))
    message = str(info.value)
    assert "serve.api_keys" in message and "CONNECTOR_SERVE__API_KEYS" in message
    assert problem in message and "openssl rand" in message
    for secret in ("good-token-of-enough-length", "inside-a-long", "short-token", "please"):
        assert secret not in message  # the tokens never reach the output


def test_long_random_api_tokens_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "CONNECTOR_SERVE__API_KEYS", '["3f9a1c0e7b2d4a6f", "another-random-token-x"]'
    )
    settings = load_settings(write(tmp_path, GOOD))
    assert len(settings.serve.api_keys) == 2
