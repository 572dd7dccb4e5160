"""`cairn replicate`, `cairn stage`, `cairn requests ...`: bulk data movement from the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cairn.cli.output import emit_json, json_option, safe_text, table
from cairn.cli.runner import run


def read_lfns(lfns: tuple[str, ...], from_file: Path | None) -> list[str]:
    """LFNs from arguments, a file (one per line) or '-' for standard input."""
    found = [lfn for lfn in lfns if lfn != "-"]
    if "-" in lfns:
        found += [line.strip() for line in sys.stdin if line.strip()]
    if from_file is not None:
        found += [line.strip() for line in from_file.read_text().splitlines() if line.strip()]
    if not found:
        raise click.UsageError("name at least one LFN (arguments, --from-file, or - for stdin)")
    return found


def print_bulk(result: dict[str, object], as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    ok = result.get("successful", {})
    failed = result.get("failed", {})
    assert isinstance(ok, dict) and isinstance(failed, dict)
    click.echo(f"submission {result.get('submission')}: {len(ok)} queued, {len(failed)} failed")
    for lfn, reason in failed.items():
        click.echo(safe_text(f"  failed {lfn}: {reason}"), err=True)


lfn_args = click.argument("lfns", nargs=-1)
from_file_option = click.option("--from-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                                help="read LFNs from this file, one per line")


@click.command()
@click.option("--to", "dest_se", required=True, help="destination SE")
@click.option("--from", "source_se", help="use only this SE as source")
@click.option("--dataset", help="replicate every file of this dataset or container (scope:name) instead of LFNs")
@click.option("--activity", default="default", show_default=True)
@click.option("--priority", type=click.IntRange(1, 5), default=3, show_default=True)
@from_file_option
@json_option
@lfn_args
def replicate(dest_se: str, source_se: str | None, dataset: str | None, activity: str, priority: int,
              from_file: Path | None, as_json: bool, lfns: tuple[str, ...]) -> None:
    """Replicate files, or a dataset's or container's files, to an SE (up to 100k LFNs per call)."""
    if dataset is not None:
        if lfns or from_file is not None:
            raise click.UsageError("name LFNs or --dataset, not both")
        result = run(lambda c: c.replicate_dataset(dataset, dest_se, source_se=source_se, activity=activity,
                                                   priority=priority))
    else:
        names = read_lfns(lfns, from_file)
        result = run(lambda c: c.replicate(names, dest_se, source_se=source_se, activity=activity,
                                           priority=priority))
    print_bulk(result, as_json)


@click.command()
@click.option("--se", required=True, help="tape SE")
@click.option("--lifetime", "pin_lifetime_s", type=click.FloatRange(60, 7 * 86400),
              help="seconds the staged copies stay pinned (default: the stager's setting)")
@from_file_option
@json_option
@lfn_args
def stage(se: str, pin_lifetime_s: float | None, from_file: Path | None, as_json: bool,
          lfns: tuple[str, ...]) -> None:
    """Bring files online from a tape SE (release them with `cairn requests release`)."""
    names = read_lfns(lfns, from_file)
    print_bulk(run(lambda c: c.stage(names, se, pin_lifetime_s=pin_lifetime_s)), as_json)


@click.group()
def requests() -> None:
    """Requests: list, show, progress, cancel, delete replicas."""


@requests.command("list")
@click.option("--state")
@click.option("--kind", type=click.Choice(["transfer", "stage", "delete"]))
@click.option("--submission")
@click.option("--lfn")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
def list_cmd(state: str | None, kind: str | None, submission: str | None, lfn: str | None, limit: int,
             as_json: bool) -> None:
    """List requests, newest first."""
    docs = run(lambda c: c.list_requests(state=state, kind=kind, submission=submission, lfn=lfn, limit=limit))
    if as_json:
        emit_json(docs)
    else:
        table(docs, ["_id", "kind", "lfn", "dest_se", "state", "attempts", "last_error"])


@requests.command("show")
@click.argument("request_id")
@json_option
def show(request_id: str, as_json: bool) -> None:
    """Show one request."""
    doc = run(lambda c: c.get_request(request_id))
    if as_json:
        emit_json(doc)
    else:
        table([{"field": k, "value": v} for k, v in doc.items()], ["field", "value"])


@requests.command("progress")
@click.argument("submission")
@json_option
def progress(submission: str, as_json: bool) -> None:
    """Counts by state of a bulk submission."""
    doc = run(lambda c: c.submission(submission))
    if as_json:
        emit_json(doc)
    else:
        table([{"state": k, "requests": v} for k, v in doc["states"].items()], ["state", "requests"])


def by_ids_or_submission(ids: tuple[str, ...], submission: str | None, as_json: bool, *, call: str, key: str,
                         said: str) -> None:
    """Run SDK method `call` on request ids or a submission; print {key: count}, or `said` with the count."""
    if not ids and not submission:
        raise click.UsageError("name request ids or --submission")
    count = run(lambda c: getattr(c, call)(list(ids), submission))
    emit_json({key: count}) if as_json else click.echo(said.format(count))


@requests.command("cancel")
@click.option("--submission")
@click.argument("ids", nargs=-1)
@json_option
def cancel(submission: str | None, ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel open requests by id, or a whole submission."""
    by_ids_or_submission(ids, submission, as_json, call="cancel_requests", key="cancelled",
                         said="cancelled {} request(s)")


@requests.command("release")
@click.option("--submission")
@click.argument("ids", nargs=-1)
@json_option
def release(submission: str | None, ids: tuple[str, ...], as_json: bool) -> None:
    """Release the pins of done stage requests, by id or a whole submission."""
    by_ids_or_submission(ids, submission, as_json, call="release_requests", key="release_asked",
                         said="asked to release {} staged request(s)")


@requests.command("delete-replicas")
@click.option("--se", help="delete the replica on this SE (omit: every replica; admins only)")
@from_file_option
@json_option
@lfn_args
def delete_replicas(se: str | None, from_file: Path | None, as_json: bool, lfns: tuple[str, ...]) -> None:
    """Queue deletion of replicas."""
    names = read_lfns(lfns, from_file)
    print_bulk(run(lambda c: c.delete_replicas(names, se)), as_json)
