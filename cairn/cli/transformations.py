"""`cairn transformation ...`: add, list, show, files, tasks, flush, stop, start, extend."""

from __future__ import annotations

from pathlib import Path

import click

from cairn.cli.jobs import read_description
from cairn.cli.output import emit_json, json_option, table
from cairn.cli.runner import run

COLUMNS = ["id", "name", "type", "state", "owner", "tasks_created", "updated"]


@click.group()
def transformation() -> None:
    """Standing orders: files matching a query become tasks, each a job."""


@transformation.command("add")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def add(spec_file: Path, as_json: bool) -> None:
    """Create the transformation described in SPEC_FILE (YAML or JSON)."""
    spec = read_description(spec_file)
    created = run(lambda c: c.add_transformation(spec))
    if as_json:
        emit_json(created)
    else:
        click.echo(f"transformation {created['id']} ({created['name']}) created")


@transformation.command("list")
@click.option("--owner", help="whose (admins)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def list_(owner: str | None, limit: int, as_json: bool) -> None:
    """Transformations, newest first."""
    found = run(lambda c: c.list_transformations(owner=owner, limit=limit))
    if as_json:
        emit_json(found)
    else:
        table(found, COLUMNS)


@transformation.command("show")
@click.argument("transformation_id")
@json_option
def show(transformation_id: str, as_json: bool) -> None:
    """A transformation, its files per status and its tasks per state."""
    found = run(lambda c: c.get_transformation(transformation_id))
    if as_json:
        emit_json(found)
        return
    table([found], COLUMNS)
    table([found["files"]], list(found["files"]), title="files")
    table([found["tasks"]], list(found["tasks"]), title="tasks")


@transformation.command("files")
@click.argument("transformation_id")
@click.option("--status", help="only files in this status")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@json_option
def files(transformation_id: str, status: str | None, limit: int, as_json: bool) -> None:
    """A transformation's input files and their status."""
    found = run(lambda c: c.transformation_files(transformation_id, status=status, limit=limit))
    if as_json:
        emit_json(found)
    else:
        table(found, ["lfn", "status", "task", "failures"])


@transformation.command("tasks")
@click.argument("transformation_id")
@click.option("--state", help="only tasks in this state")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@json_option
def tasks(transformation_id: str, state: str | None, limit: int, as_json: bool) -> None:
    """A transformation's tasks with their job and state."""
    found = run(lambda c: c.transformation_tasks(transformation_id, state=state, limit=limit))
    if as_json:
        emit_json(found)
    else:
        table(found, ["number", "state", "job", "failures", "reason"])


def _action(name: str, doc: str) -> None:
    @transformation.command(name, help=doc)
    @click.argument("transformation_id")
    @json_option
    def command(transformation_id: str, as_json: bool) -> None:
        result = run(lambda c: c.transformation_action(transformation_id, name))
        if as_json:
            emit_json(result)
        else:
            click.echo(f"{name}: {result}")


_action("flush", "Make tasks of incomplete groups too (once).")
_action("stop", "Stop: no new tasks; tasks and jobs not started are cancelled; no data is deleted.")
_action("start", "Resume a stopped transformation.")


@transformation.command("extend")
@click.argument("transformation_id")
@click.option("--tasks", "count", type=click.IntRange(1, 10_000_000), required=True, help="how many more tasks")
@json_option
def extend(transformation_id: str, count: int, as_json: bool) -> None:
    """Allow more tasks (an mc transformation makes them)."""
    result = run(lambda c: c.transformation_action(transformation_id, "extend", {"tasks": count}))
    if as_json:
        emit_json(result)
    else:
        click.echo(f"transformation {result['id']}: max_tasks {result['spec']['max_tasks']}")
