"""What `cairn transformation` and `cairn production` share: create one from a spec file, list
them, and actions on one by id (stop, start, delete, ...), each printing JSON with --json or a
human view otherwise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli.jobs import read_description
from cairn.cli.output import emit_json, json_option
from cairn.cli.runner import run

Json = Any
Human = Callable[[Json], None]

if TYPE_CHECKING:
    from cairn.sdk import Client


def answer(result: Json, as_json: bool, human: Human) -> None:
    """Print the result: JSON for scripts, else the human view."""
    if as_json:
        emit_json(result)
    else:
        human(result)


def add_command(group: click.Group, noun: str, create: Callable[[Client, Json], Awaitable[Json]],
                human: Human) -> None:
    """`add SPEC_FILE`: create from a YAML or JSON spec."""

    @group.command("add", help=f"Create the {noun} described in SPEC_FILE (YAML or JSON).")
    @click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @json_option
    def add(spec_file: Path, as_json: bool) -> None:
        spec = read_description(spec_file)
        answer(run(lambda c: create(c, spec)), as_json, human)


def list_command(group: click.Group, plural: str, fetch: Callable[[Client, str | None, int], Awaitable[Json]],
                 human: Human) -> None:
    """`list [--owner] [--limit]`: newest first."""

    @group.command("list", help=f"{plural.capitalize()}, newest first.")
    @click.option("--owner", help="whose (admins)")
    @click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
    @json_option
    def list_(owner: str | None, limit: int, as_json: bool) -> None:
        answer(run(lambda c: fetch(c, owner, limit)), as_json, human)


def id_command(group: click.Group, name: str, doc: str, call: Callable[[Client, str], Awaitable[Json]],
               human: Human) -> None:
    """`NAME ID`: one call on one object by id."""

    @group.command(name, help=doc)
    @click.argument("object_id", metavar="ID")
    @json_option
    def command(object_id: str, as_json: bool) -> None:
        answer(run(lambda c: call(c, object_id)), as_json, human)
