"""`cairn transformation ...`: add, list, show, files, tasks, flush, stop, start, extend, clean, delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click

from cairn.cli.output import json_option, table
from cairn.cli.runner import run
from cairn.cli.standing_orders import add_command, answer, id_command, list_command

COLUMNS = ["id", "name", "type", "state", "owner", "tasks_created", "updated"]

if TYPE_CHECKING:
    from cairn.sdk import Client


@click.group()
def transformation() -> None:
    """Standing orders: files matching a query become tasks, each a job or requests."""


def _show(found: dict[str, Any]) -> None:
    table([found], COLUMNS)
    table([found["files"]], list(found["files"]), title="files")
    table([found["tasks"]], list(found["tasks"]), title="tasks")


add_command(transformation, "transformation", lambda c, spec: c.add_transformation(spec),
            lambda t: click.echo(f"transformation {t['id']} ({t['name']}) created"))
list_command(transformation, "transformations",
             lambda c, owner, limit: c.list_transformations(owner=owner, limit=limit),
             lambda found: table(found, COLUMNS))
id_command(transformation, "show", "A transformation, its files per status and its tasks per state.",
           lambda c, tid: c.get_transformation(tid), _show)


def _listing(name: str, doc: str, option: str, columns: list[str],
             fetch: Callable[[Client, str, str | None, int], Awaitable[Any]]) -> None:
    @transformation.command(name, help=doc)
    @click.argument("transformation_id")
    @click.option(f"--{option}", "only", help=f"only those in this {option}")
    @click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
    @json_option
    def command(transformation_id: str, only: str | None, limit: int, as_json: bool) -> None:
        answer(run(lambda c: fetch(c, transformation_id, only, limit)), as_json, lambda found: table(found, columns))


_listing("files", "A transformation's input files and their status.", "status", ["lfn", "status", "task", "failures"],
         lambda c, tid, only, limit: c.transformation_files(tid, status=only, limit=limit))
_listing("tasks", "A transformation's tasks with their job and state.", "state",
         ["number", "state", "job", "failures", "reason"],
         lambda c, tid, only, limit: c.transformation_tasks(tid, state=only, limit=limit))

def _action(name: str, doc: str) -> None:
    id_command(transformation, name, doc, lambda c, tid: c.transformation_action(tid, name),
               lambda result: click.echo(f"{name}: {result}"))


for _name, _doc in (
    ("flush", "Make tasks of incomplete groups too (once)."),
    ("stop", "Stop: no new tasks; tasks and jobs not started are cancelled; no data is deleted."),
    ("start", "Resume a stopped transformation."),
    ("clean", "Clean a stopped or completed transformation: its jobs and requests are ended, its tasks and file "
              "statuses deleted (their counts kept); no data is deleted."),
):
    _action(_name, _doc)
id_command(transformation, "delete", "Stop, clean and forget a transformation (not a production's step); "
           "no data is deleted.", lambda c, tid: c.delete_transformation(tid),
           lambda result: click.echo(f"transformation {result['id']} deleted"))


@transformation.command("extend")
@click.argument("transformation_id")
@click.option("--tasks", "count", type=click.IntRange(1, 10_000_000), required=True, help="how many more tasks")
@json_option
def extend(transformation_id: str, count: int, as_json: bool) -> None:
    """Allow more tasks (an mc transformation makes them)."""
    answer(run(lambda c: c.transformation_action(transformation_id, "extend", {"tasks": count})), as_json,
           lambda r: click.echo(f"transformation {r['id']}: max_tasks {r['spec']['max_tasks']}"))
