"""`cairn production ...`: add PROD.yaml, list, show, status, stop."""

from __future__ import annotations

from pathlib import Path

import click

from cairn.cli.jobs import read_description
from cairn.cli.output import emit_json, json_option, table
from cairn.cli.runner import run


@click.group()
def production() -> None:
    """Chains of transformations, each step fed by the outputs of the one before."""


@production.command("add")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def add(spec_file: Path, as_json: bool) -> None:
    """Create the production described in SPEC_FILE (YAML or JSON), after checking its chain."""
    spec = read_description(spec_file)
    created = run(lambda c: c.add_production(spec))
    if as_json:
        emit_json(created)
        return
    click.echo(f"production {created['id']} ({created['name']}) created")
    table(created["steps"], ["name", "id"], title="steps (transformations)")


@production.command("list")
@click.option("--owner", help="whose (admins)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def list_(owner: str | None, limit: int, as_json: bool) -> None:
    """Productions, newest first."""
    found = run(lambda c: c.list_productions(owner=owner, limit=limit))
    if as_json:
        emit_json(found)
    else:
        table([{**p, "steps": [s["name"] for s in p["steps"]]} for p in found],
              ["id", "name", "state", "owner", "steps", "created"])


@production.command("show")
@click.argument("production_id")
@json_option
def show(production_id: str, as_json: bool) -> None:
    """A production and its steps."""
    found = run(lambda c: c.get_production(production_id))
    if as_json:
        emit_json(found)
        return
    table([found], ["id", "name", "state", "owner", "created"])
    table(found["steps"], ["name", "id"], title="steps")


@production.command("status")
@click.argument("production_id")
@json_option
def status(production_id: str, as_json: bool) -> None:
    """Progress per step (files by status, tasks by state) and the production's status."""
    found = run(lambda c: c.production_status(production_id))
    if as_json:
        emit_json(found)
        return
    click.echo(f"production {found['name']}: {found['status']} ({found['problematic']} problematic file(s))")
    rows = [{"step": s["name"], "state": s["state"], **{f"files {k}": v for k, v in s["files"].items()},
             **{f"tasks {k}": v for k, v in s["tasks"].items()}} for s in found["steps"]]
    table(rows, list(rows[0]) if rows else ["step"])


@production.command("stop")
@click.argument("production_id")
@json_option
def stop(production_id: str, as_json: bool) -> None:
    """Stop every step: nothing new is submitted; jobs not started are cancelled; no data is deleted."""
    result = run(lambda c: c.stop_production(production_id))
    if as_json:
        emit_json(result)
    else:
        click.echo(f"production {result['id']} stopped")
