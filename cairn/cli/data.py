"""`cairn upload` and `cairn download`: files between this machine and the SEs, by LFN.

Progress goes to stderr as rich bars (one for the whole batch, one per big file in flight);
with --json nothing but the JSON outcome list is printed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cairn.cli.output import emit_json, err_console, json_option, table
from cairn.cli.runner import run
from dataio.progress import FileOutcome, NoProgress, ProgressSink, outcome_summary

BIG_FILE = 8 << 20

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from cairn.sdk import Client


class RichProgress:
    """Bars for a batch: the total, plus one per file of BIG_FILE bytes or more while it moves."""

    def __init__(self, progress: Progress, label: str, total: int | None) -> None:
        self.progress = progress
        self.grow_total = total is None
        self.overall: TaskID = progress.add_task(label, total=total or 0)
        self.files: dict[str, TaskID] = {}

    def started(self, name: str, size: int | None) -> None:
        if size is None:
            return
        if self.grow_total:
            task = self.progress.tasks[self.overall]
            self.progress.update(self.overall, total=(task.total or 0) + size)
        if size >= BIG_FILE:
            self.files[name] = self.progress.add_task(name.rsplit("/", 1)[-1], total=size)

    def advanced(self, name: str, nbytes: int) -> None:
        self.progress.advance(self.overall, nbytes)
        if name in self.files:
            self.progress.advance(self.files[name], nbytes)

    def finished(self, name: str, ok: bool) -> None:
        task = self.files.pop(name, None)
        if task is not None:
            self.progress.remove_task(task)


@contextmanager
def progress_sink(as_json: bool, label: str, total: int | None) -> Iterator[ProgressSink]:
    """Rich bars on stderr, or nothing for --json."""
    if as_json:
        yield NoProgress()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console(), transient=True) as progress:
        yield RichProgress(progress, label, total)


def report(outcomes: Sequence[FileOutcome], as_json: bool) -> None:
    """Print the outcomes (table or JSON) and exit 1 if any file failed."""
    if as_json:
        emit_json([o.to_json() for o in outcomes])
    else:
        rows = [{"lfn": o.lfn, "local": o.local, "status": o.status, "se": o.se, "size": o.size,
                 "seconds": f"{o.seconds:.2f}", "detail": o.error or "; ".join(o.notes)} for o in outcomes]
        table(rows, ["lfn", "local", "status", "se", "size", "seconds", "detail"])
        summary = outcome_summary(outcomes)
        err_console().print(", ".join(f"{k}: {v}" for k, v in summary.items()))
    if any(not o.ok for o in outcomes):
        raise SystemExit(1)


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="LOCAL... LFN")
@click.option("--se", required=True, help="storage element to store the files on")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="files in flight at once")
@json_option
def upload(args: tuple[str, ...], se: str, concurrency: int, as_json: bool) -> None:
    """Store local files on an SE and register them: one file at LFN, or several into directory LFN.

    Each file is registered with a 'copying' replica first (so a refusal comes before any byte
    moves), sent, checked against its adler32, then made available; a failure undoes it all.
    """
    if len(args) < 2:
        raise click.UsageError("give at least one local file and the LFN to upload to")
    paths: list[str | Path] = [Path(a) if "://" not in a else a for a in args[:-1]]
    lfn = args[-1]
    total = sum(p.stat().st_size for p in paths if isinstance(p, Path) and p.is_file())

    async def action(client: Client) -> list[FileOutcome]:
        with progress_sink(as_json, f"upload to {se}", total) as sink:
            return await client.upload(paths, lfn, se, progress=sink, concurrency=concurrency)

    report(run(action), as_json)


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="LFN... [DEST]")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="files in flight at once")
@json_option
def download(args: tuple[str, ...], concurrency: int, as_json: bool) -> None:
    """Fetch files by LFN from their best replica, checked against the catalogue's adler32.

    With two or more arguments the last is DEST (like cp): a directory for several LFNs, a file
    name or directory for one. Without DEST files land in the current directory. Replicas at
    this site (CAIRN_SITE) come first, disk before tape; a corrupted replica is reported bad
    (if you may change the file) and the next one is tried.
    """
    lfns, dest = (list(args), None) if len(args) == 1 else (list(args[:-1]), args[-1])

    async def action(client: Client) -> list[FileOutcome]:
        with progress_sink(as_json, "download", None) as sink:
            return await client.download(lfns, dest, progress=sink, concurrency=concurrency)

    report(run(action), as_json)
