"""A click group whose subcommands are imported when they are called, not when `cairn` starts.

Each command is named by `"module:attribute"`; a group may also gather subcommands that live in
other modules (`cairn se add` is in `cairn.cli.se_admin`). `cairn --help` still lists every
command: listing imports the command modules, which import only click and the CLI's own
helpers, never the SDK, the server or the storage plugins (those come inside the commands).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

import click


def _load(target: str) -> click.Command:
    module, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


class LazyGroup(click.Group):
    """A group whose commands are `{name: "module:attribute"}`, imported on first use."""

    def __init__(self, *args: object, lazy: Mapping[str, str],
                 extra: Mapping[str, Sequence[str]] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)
        self.extra = {name: list(targets) for name, targets in (extra or {}).items()}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            command = _load(self.lazy[cmd_name])
            if isinstance(command, click.Group):
                for target in self.extra.get(cmd_name, []):
                    sub = _load(target)
                    command.add_command(sub)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)
