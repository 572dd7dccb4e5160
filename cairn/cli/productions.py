"""`cairn production ...`: add PROD.yaml, list, show, status, stop, start, delete."""

from __future__ import annotations

from typing import Any

import click

from cairn.cli.output import table
from cairn.cli.standing_orders import add_command, id_command, list_command


@click.group()
def production() -> None:
    """Chains of transformations, each step fed by the outputs of the one before."""


def _created(created: dict[str, Any]) -> None:
    click.echo(f"production {created['id']} ({created['name']}) created")
    table(created["steps"], ["name", "id"], title="steps (transformations)")


def _show(found: dict[str, Any]) -> None:
    table([found], ["id", "name", "state", "owner", "created"])
    table(found["steps"], ["name", "id"], title="steps")


def _status(found: dict[str, Any]) -> None:
    click.echo(f"production {found['name']}: {found['status']} ({found['problematic']} problematic file(s))")
    rows = [{"step": s["name"], "state": s["state"], **{f"files {k}": v for k, v in s["files"].items()},
             **{f"tasks {k}": v for k, v in s["tasks"].items()}} for s in found["steps"]]
    table(rows, list(rows[0]) if rows else ["step"])


add_command(production, "production", lambda c, spec: c.add_production(spec), _created)
list_command(production, "productions", lambda c, owner, limit: c.list_productions(owner=owner, limit=limit),
             lambda found: table([{**p, "steps": [s["name"] for s in p["steps"]]} for p in found],
                                 ["id", "name", "state", "owner", "steps", "created"]))
id_command(production, "show", "A production and its steps.", lambda c, pid: c.get_production(pid), _show)
id_command(production, "status", "Progress per step (files by status, tasks by state) and the production's status.",
           lambda c, pid: c.production_status(pid), _status)
id_command(production, "stop", "Stop every step: nothing new is submitted; jobs not started are cancelled; "
           "no data is deleted.", lambda c, pid: c.production_action(pid, "stop"),
           lambda r: click.echo(f"production {r['id']} stopped"))
id_command(production, "start", "Resume a stopped production (its stopped steps).",
           lambda c, pid: c.production_action(pid, "start"), lambda r: click.echo(f"production {r['id']} started"))
id_command(production, "delete", "Stop, clean and delete every step, then the production; no data is deleted.",
           lambda c, pid: c.delete_production(pid), lambda r: click.echo(f"production {r['id']} deleted"))
