"""Settings come from CAIRN_* variables and an optional file, with one message per wrong value."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.errors import ConfigurationError
from kernel.settings import load_settings


def test_environment_variables_set_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_API_PORT", "9123")
    monkeypatch.setenv("CAIRN_DATABASE", "cta_prod")
    settings = load_settings()
    assert settings.api_port == 9123
    assert settings.database == "cta_prod"


def test_each_wrong_value_is_named_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_API_PORT", "not-a-port")
    monkeypatch.setenv("CAIRN_MONGODB_URI", "postgres://x")
    with pytest.raises(ConfigurationError) as err:
        load_settings()
    text = str(err.value)
    assert "CAIRN_API_PORT" in text and "not-a-port" in text
    assert "CAIRN_MONGODB_URI" in text and "mongodb://" in text


def test_config_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "cairn.toml"
    config.write_text('database = "from_file"\napi_port = 9000\n')
    monkeypatch.setenv("CAIRN_CONFIG", str(config))
    monkeypatch.setenv("CAIRN_API_PORT", "9001")
    settings = load_settings()
    assert settings.database == "from_file"
    assert settings.api_port == 9001


def test_unknown_key_in_config_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "cairn.yaml"
    config.write_text("databse: typo\n")
    monkeypatch.setenv("CAIRN_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match="CAIRN_DATABSE"):
        load_settings()


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAIRN_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigurationError, match=r"nope\.toml"):
        load_settings()


def test_a_wrong_secret_or_a_uri_password_is_never_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client's token put where the server's settings are read (CAIRN_TOKEN is the CLI's, not a
    setting), or a database URI with its password: the message names the variable, not the secret."""
    monkeypatch.setenv("CAIRN_TOKEN", "eyJhbGciOi.secret-token-value.sig")
    monkeypatch.setenv("CAIRN_MONGODB_URI", "postgres://cairn:hunter2@db.example:5432/x")
    monkeypatch.setenv("CAIRN_API_PORT", "not-a-port")
    with pytest.raises(ConfigurationError) as err:
        load_settings(token="eyJhbGciOi.secret-token-value.sig")
    text = str(err.value)
    assert "CAIRN_TOKEN" in text and "secret-token-value" not in text
    assert "CAIRN_MONGODB_URI" in text and "hunter2" not in text and "postgres://cairn:***@db.example" in text
    assert "not-a-port" in text  # what is no secret is still shown
