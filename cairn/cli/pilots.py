"""`cairn pilots list|show|logs` (the factory's pilot records) and `cairn site queues|queue-set`
(the batch queues of the site registry)."""

from __future__ import annotations

from typing import Any

import click

from cairn.cli.output import emit_json, json_option, safe_text, table
from cairn.cli.runner import run

PILOT_COLUMNS = ["name", "site", "queue", "backend", "batch_id", "state", "submitted_at", "exit_code", "jobs"]
QUEUE_COLUMNS = ["site", "name", "backend", "partition", "cores", "memory_mb", "max_waiting", "max_running", "tags",
                 "enabled"]


@click.group()
def pilots() -> None:
    """Pilots the factory submitted: batch id, queue, site, state and the jobs each ran."""


@pilots.command("list")
@click.option("--site")
@click.option("--state", help="submitting, waiting, running, done, failed, aborted or lost")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def pilots_list(site: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List pilots, newest first."""
    found = run(lambda c: c.list_pilots(site=site, state=state, limit=limit))
    if as_json:
        emit_json(found)
    else:
        table([{**p, "jobs": len(p.get("jobs", []))} for p in found], PILOT_COLUMNS)


@pilots.command("show")
@click.argument("name")
@json_option
def pilots_show(name: str, as_json: bool) -> None:
    """One pilot, with the jobs it ran and where its log is."""
    found = run(lambda c: c.get_pilot(name))
    if as_json:
        emit_json(found)
        return
    table([{**found, "jobs": ", ".join(found.get("jobs", []))}], [*PILOT_COLUMNS, "reason", "log"])


@pilots.command("logs")
@click.argument("name")
@click.option("--raw", is_flag=True, help="print the log as written, terminal control characters included "
              "(shown escaped otherwise)")
@json_option
def pilots_logs(name: str, raw: bool, as_json: bool) -> None:
    """The tail of a pilot's batch log (admins)."""
    found = run(lambda c: c.pilot_logs(name))
    if as_json:
        emit_json(found)
    else:
        click.echo(found["text"] if raw else safe_text(found["text"], lines=True), nl=False)


@click.command("queues")
@click.option("--site", help="only this site's queues")
@json_option
def site_queues(site: str | None, as_json: bool) -> None:
    """Batch queues of the sites (where the pilot factory sends pilots)."""
    found = run(lambda c: c.site_queues(site))
    if as_json:
        emit_json(found)
    else:
        table(found, QUEUE_COLUMNS)


@click.command("queue-set")
@click.argument("site")
@click.argument("name")
@click.option("--backend", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--partition", default="")
@click.option("--cores", type=click.IntRange(1), default=1, show_default=True)
@click.option("--memory-mb", type=click.IntRange(1), default=2048, show_default=True)
@click.option("--max-waiting", type=click.IntRange(0), default=10, show_default=True)
@click.option("--max-running", type=click.IntRange(0), default=50, show_default=True)
@click.option("--tag", "tags", multiple=True, help="a tag the queue's pilots offer (repeatable)")
@click.option("--disabled", is_flag=True, help="keep the queue but submit no pilots to it")
def site_queue_set(site: str, name: str, backend: str, partition: str, cores: int, memory_mb: int, max_waiting: int,
                   max_running: int, tags: tuple[str, ...], disabled: bool) -> None:
    """Create or replace a batch queue of SITE (admins)."""
    settings: dict[str, Any] = {"backend": backend, "partition": partition, "cores": cores, "memory_mb": memory_mb,
                                "max_waiting": max_waiting, "max_running": max_running, "tags": list(tags),
                                "enabled": not disabled}
    emit_json(run(lambda c: c.put_site_queue(site, name, **settings)))
