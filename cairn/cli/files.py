"""`cairn register` and `cairn replicas`: files and their replicas from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cairn.cli.output import emit_json, json_option, safe_text, table
from cairn.cli.runner import run


def _outcome(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    rows = [{"lfn": lfn, "result": "ok", "detail": json.dumps(v)} for lfn, v in result["successful"].items()]
    rows += [{"lfn": lfn, "result": "FAILED", "detail": reason} for lfn, reason in result["failed"].items()]
    table(rows, ["lfn", "result", "detail"])


@click.command()
@click.argument("lfn", required=False)
@click.option("--size", type=click.IntRange(0), help="bytes")
@click.option("--adler32", help="8 hex digits")
@click.option("--md5", help="32 hex digits")
@click.option("--guid")
@click.option("--se", "ses", multiple=True, help="SE holding a replica (repeatable; URL from the SE's rule)")
@click.option("--from-file", "from_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON list of files ({lfn, size, adler32, md5?, guid?, replicas: [{se, url?}]})")
@json_option
def register(lfn: str | None, size: int | None, adler32: str | None, md5: str | None, guid: str | None,
             ses: tuple[str, ...], from_file: Path | None, as_json: bool) -> None:
    """Register one file (LFN with --size and --adler32) or many (--from-file)."""
    if from_file is not None:
        files = json.loads(from_file.read_text())
        if not isinstance(files, list):
            raise click.BadParameter("the file must hold a JSON list of files", param_hint="--from-file")
    else:
        if lfn is None or size is None or adler32 is None:
            raise click.UsageError("give LFN with --size and --adler32, or --from-file")
        item: dict[str, Any] = {"lfn": lfn, "size": size, "adler32": adler32,
                                "replicas": [{"se": se} for se in ses]}
        item.update({k: v for k, v in {"md5": md5, "guid": guid}.items() if v})
        files = [item]
    result = run(lambda c: c.register_files(files))
    _outcome(result, as_json)
    if result["failed"]:
        raise SystemExit(1)


@click.command()
@click.argument("lfns", nargs=-1, required=True)
@click.option("--active", is_flag=True, help="only replicas available on a read-enabled SE")
@json_option
def replicas(lfns: tuple[str, ...], active: bool, as_json: bool) -> None:
    """Show the replicas of LFNs."""
    result = run(lambda c: c.get_replicas(list(lfns), active=active))
    if as_json:
        emit_json(result)
        return
    rows = [{"lfn": lfn, **r} for lfn, reps in result["successful"].items() for r in reps]
    table(rows, ["lfn", "se", "status", "url"])
    for lfn, reason in result["failed"].items():
        click.echo(safe_text(f"{lfn}: {reason}"), err=True)
