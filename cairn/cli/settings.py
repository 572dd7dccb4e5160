"""Settings for CLI commands, with configuration errors printed as a message, not a traceback."""

from __future__ import annotations

from cairn.cli.output import fail
from kernel.errors import ConfigurationError
from kernel.settings import Settings, load_settings


def cli_settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigurationError as exc:
        fail(exc)
        raise
