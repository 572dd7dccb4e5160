"""`cairn ancestry ...` (provenance), `cairn usage ...` (accounting) and `cairn se dump`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cairn.cli.output import drift_title, emit, emit_json, json_option, table
from cairn.cli.runner import run

if TYPE_CHECKING:
    from cairn.sdk import Client


@click.group()
def ancestry() -> None:
    """Provenance: which files a file was made from, and what was made from it."""


@ancestry.command("show")
@click.argument("lfn")
@click.option("--descendants", is_flag=True, help="what was made from LFN (default: what it was made from)")
@click.option("--depth", type=click.IntRange(1, 50), default=1, show_default=True)
@json_option
def ancestry_show(lfn: str, descendants: bool, depth: int, as_json: bool) -> None:
    """Ancestors (or descendants) of a file to a depth."""
    direction = "descendants" if descendants else "ancestors"
    found = run(lambda c: c.provenance(lfn, direction=direction, depth=depth))
    emit_json(found) if as_json else table(found["files"], ["depth", "lfn", "exists"], title=f"{direction} of {lfn}")


@ancestry.command("link")
@click.argument("lfn")
@click.argument("ancestors", nargs=-1, required=True)
@json_option
def ancestry_link(lfn: str, ancestors: tuple[str, ...], as_json: bool) -> None:
    """Record that LFN was made from ANCESTORS."""
    linked = run(lambda c: c.link_ancestors(lfn, ancestors))
    emit_json(linked) if as_json else click.echo(
        f"{lfn} <- {linked['added']} ancestor(s) added, {linked['already_linked']} already linked")


@click.group()
def usage() -> None:
    """Usage: logical files and bytes per directory, physical bytes per SE."""


@usage.command("dir")
@click.argument("path")
@json_option
def usage_dir(path: str, as_json: bool) -> None:
    """Files and bytes below a directory (recursive)."""
    found = run(lambda c: c.directory_usage(path))
    emit_json(found) if as_json else table([found], ["path", "files", "bytes"])


@usage.command("ses")
@json_option
def usage_ses(as_json: bool) -> None:
    """Replicas and bytes per SE."""
    found = run(lambda c: c.se_usage())
    emit_json(found) if as_json else table(found, ["se", "replicas", "bytes"])


@usage.command("rebuild")
@click.option("--dry-run", is_flag=True, help="report drift without fixing it")
@json_option
def usage_rebuild(dry_run: bool, as_json: bool) -> None:
    """Recount usage from the catalogue, report drift and fix it (admins)."""
    report = run(lambda c: c.rebuild_usage(fix=not dry_run))
    rows = [{"counter": k, "stored": v["stored"], "recounted": v["recounted"]} for k, v in report["drift"].items()]
    emit(report, as_json, rows, ["counter", "stored", "recounted"], title=drift_title(report, dry_run))


@click.command("feed")
@click.option("--after", type=int, default=0, show_default=True, help="sequence number to read after")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def feed(after: int, limit: int, as_json: bool) -> None:
    """The catalogue's change feed: events after a position, and the consumers' positions (admins)."""
    found = run(lambda c: c.change_feed(after=after, limit=limit))
    if as_json:
        emit_json(found)
        return
    table(found["events"], ["seq", "at", "kind", "did", "data"], title="events")
    table(found["consumers"], ["name", "position", "updated"], title="consumers")


@click.command("dump")
@click.argument("se")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(["parquet", "arrow", "json"]), default=None,
              help="default: from the file name (.parquet, .arrow/.arrows, else JSON lines)")
def se_dump(se: str, output: Path, fmt: str | None) -> None:
    """Write every replica on SE to a file, for consistency checks against the SE's listing."""
    fmt = fmt or {".parquet": "parquet", ".arrow": "arrow", ".arrows": "arrow"}.get(output.suffix, "json")
    if fmt == "json":
        async def lines(client: Client) -> int:
            count = 0
            with output.open("wb") as out:
                async for chunk in client.se_dump_lines(se):  # one write per chunk, passed on undecoded
                    chunk.append(b"")
                    out.write(b"\n".join(chunk))
                    count += len(chunk) - 1
            return count

        click.echo(f"wrote {run(lines)} replica(s) to {output}", err=True)
        return
    written = run(lambda c: c.se_dump_to_file(se, output, format=fmt or "parquet"))
    click.echo(f"wrote {written} bytes to {output}", err=True)
