"""Settings for CLI commands, with configuration errors printed as a message, not a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cairn.cli.output import fail
from kernel.errors import ConfigurationError

if TYPE_CHECKING:
    from kernel.settings import Settings


def cli_settings(**overrides: object) -> Settings:
    from kernel.settings import load_settings  # pydantic-settings: only for the commands that read settings

    try:
        return load_settings(**overrides)
    except ConfigurationError as exc:
        fail(exc)
        raise
