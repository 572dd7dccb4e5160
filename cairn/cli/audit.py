"""`cairn audit ...`: compare an SE's storage with the catalogue, read what runs found, clean
dark data (admins)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli.output import emit_json, json_option, safe_text, table
from cairn.cli.runner import run
from kernel import jsonio

RUN_COLUMNS = ["id", "se", "state", "dump", "created", "finished", "lost", "dark", "size_mismatch",
               "checksum_mismatch", "error"]
COUNTERS = ("storage", "catalogue", "matched", "lost", "dark", "young", "size_mismatch", "checksum_mismatch",
            "bad", "no_copy")
FOUND = ("lost", "dark", "size_mismatch", "checksum_mismatch")

if TYPE_CHECKING:
    from cairn.sdk import Client


def _row(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, **{k: run.get("counts", {}).get(k) for k in FOUND}}


def _progress(run: dict[str, Any]) -> str:
    counts = run.get("counts") or {}
    return f"{run['id']} {run['state']}: " + ", ".join(f"{k} {counts[k]}" for k in COUNTERS if k in counts)


@click.group()
def audit() -> None:
    """Consistency checks: lost and dark data on an SE (admins)."""


@audit.command("run")
@click.argument("se")
@click.option("--dump", help="absolute path, on the SE, of a storage dump the site wrote (one path per line, "
                             "optionally a size and an adler32); without it the SE is listed")
@click.option("--no-wait", is_flag=True, help="queue the run and return; an auditor daemon does it")
@click.option("--poll", type=click.FloatRange(0.1), default=2.0, show_default=True, help="seconds between progress")
@json_option
def audit_run(se: str, dump: str | None, no_wait: bool, poll: float, as_json: bool) -> None:
    """Audit SE: queue a run and follow its progress on stderr until it ends."""

    async def go(client: Client) -> dict[str, Any]:
        queued = await client.queue_audit(se, dump=dump)
        current = {**queued, "id": queued["id"]}
        while not no_wait and current["state"] in ("queued", "running"):
            await asyncio.sleep(poll)
            current = await client.audit_run(queued["id"])
            click.echo(_progress(current), err=True)
        return current

    result = run(go)
    emit_json(result) if as_json else table([_row(result)], RUN_COLUMNS)
    if result["state"] == "failed":
        sys.exit(1)


@audit.command("list")
@click.option("--se", help="only runs of this SE")
@json_option
def audit_list(se: str | None, as_json: bool) -> None:
    """The latest audit runs, newest first."""
    runs = run(lambda c: c.audit_runs(se))
    emit_json(runs) if as_json else table([_row(r) for r in runs], RUN_COLUMNS)


@audit.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--lost", "kind", flag_value="lost", help="only the lost replicas")
@click.option("--dark", "kind", flag_value="dark", help="only the dark files")
@click.option("--mismatch", "--mismatched", "kind", flag_value="mismatch",
              help="only the size and checksum mismatches (their replicas are marked bad)")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "parquet", "arrow"]), default="table",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="file for parquet/arrow (default RUN-entries.parquet)")
def audit_show(run_id: str, kind: str | None, fmt: str, output: Path | None) -> None:
    """A run's counters and what it found (all entries, or --lost / --dark / --mismatch)."""
    if fmt in ("parquet", "arrow"):
        target = output or Path(f"{run_id}-entries.{'parquet' if fmt == 'parquet' else 'arrows'}")
        written = run(lambda c: c.audit_entries_to(run_id, target, kind=kind, fmt=fmt))
        click.echo(f"wrote {written} bytes to {target}", err=True)
        return

    async def go(client: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return await client.audit_run(run_id), [e async for e in client.audit_entries(run_id, kind)]

    found, entries = run(go)
    if fmt == "json":
        for entry in entries:
            click.echo(jsonio.dumps(entry))
        return
    click.echo(_progress(found), err=True)
    table(entries, ["kind", "lfn", "size", "storage_size", "adler32", "storage_adler32", "status", "marked", "no_copy",
                    "clean"])


@audit.command("clean-dark")
@click.argument("run_id", metavar="RUN")
@json_option
def audit_clean_dark(run_id: str, as_json: bool) -> None:
    """Have the reaper delete the dark files a finished run found (each checked again first)."""
    answer = run(lambda c: c.clean_dark(run_id))
    if as_json:
        emit_json(answer)
        return
    click.echo(f"{len(answer['successful'])} deletion(s) queued (submission {answer['submission']})")
    for lfn, reason in answer["failed"].items():
        click.echo(safe_text(f"not queued: {lfn}: {reason}"), err=True)
