"""`cairn dataset ...` and `cairn container ...`: Rucio-style DIDs named scope:name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli.output import drift_title, emit, emit_json, json_option, table
from cairn.cli.runner import run
from kernel import jsonio

DID_COLUMNS = ["did", "type", "state", "files", "bytes", "children", "owner", "group", "query"]

if TYPE_CHECKING:
    from cairn.sdk import Client


def _did(doc: dict[str, Any], as_json: bool) -> None:
    emit_json(doc) if as_json else table([doc], DID_COLUMNS)


def _outcome(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        rows = [{"member": k, "result": "ok", "detail": v} for k, v in result["successful"].items()]
        rows += [{"member": k, "result": "FAILED", "detail": v} for k, v in result["failed"].items()]
        table(rows, ["member", "result", "detail"])
    if result["failed"]:
        raise SystemExit(1)


def _contents(did: str, fmt: str | None, output: Path | None, as_json: bool) -> None:
    if fmt in ("parquet", "arrow"):
        if output is None:
            raise click.UsageError(f"--format {fmt} writes a file: give -o FILE")
        written = run(lambda c: c.did_contents_to_file(did, output, format=fmt or "parquet"))
        click.echo(f"wrote {written} bytes to {output}", err=True)
        return

    async def stream(client: Client) -> list[dict[str, Any]]:
        rows = []
        async for item in client.did_contents(did):
            if as_json:
                click.echo(jsonio.dumps(item))
            else:
                rows.append(item)
        return rows

    rows = run(stream)
    if not as_json:
        table(rows, ["lfn", "size"] if rows and "lfn" in rows[0] else ["did"])


def _state_commands(group: click.Group) -> None:
    for action in ("close", "reopen", "freeze"):
        def make(action: str) -> click.Command:
            @click.command(action, help=f"{action.capitalize()} a DID.")
            @click.argument("did")
            @json_option
            def change(did: str, as_json: bool) -> None:
                _did(run(lambda c: c.set_did_state(did, action)), as_json)
            return change
        group.add_command(make(action))


contents_options = [
    click.option("--format", "fmt", type=click.Choice(["table", "json", "parquet", "arrow"]), default=None),
    click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path)),
]


@click.group()
def dataset() -> None:
    """Datasets: named sets of files (open, closed or frozen; dynamic when defined by a query)."""


@dataset.command("create")
@click.argument("did")
@click.option("--query", help="a metadata query: makes a dynamic dataset")
@click.option("--path", default="/", show_default=True, help="the directory a dynamic dataset's query is scoped to")
@click.option("--description", default="")
@click.option("--request-id", help="a key naming this call (8-128 of A-Z a-z 0-9 _ . : -): run again with the "
                                   "same key after losing the answer, it answers the DID the first run made")
@json_option
def dataset_create(did: str, query: str | None, path: str, description: str, request_id: str | None,
                   as_json: bool) -> None:
    """Create a dataset scope:name."""
    _did(run(lambda c: c.create_did(did, query=query, path=path, description=description, request_id=request_id)),
         as_json)


@dataset.command("show")
@click.argument("did")
@json_option
def dataset_show(did: str, as_json: bool) -> None:
    """Show a dataset or container."""
    _did(run(lambda c: c.get_did(did)), as_json)


@dataset.command("list")
@click.argument("scope")
@json_option
def dataset_list(scope: str, as_json: bool) -> None:
    """List the DIDs of a scope."""
    found = run(lambda c: c.list_dids(scope))
    emit_json(found) if as_json else table(found, DID_COLUMNS)


@dataset.command("attach")
@click.argument("did")
@click.argument("lfns", nargs=-1, required=True)
@json_option
def dataset_attach(did: str, lfns: tuple[str, ...], as_json: bool) -> None:
    """Attach files to an open dataset."""
    _outcome(run(lambda c: c.attach(did, lfns=lfns)), as_json)


@dataset.command("detach")
@click.argument("did")
@click.argument("lfns", nargs=-1, required=True)
@json_option
def dataset_detach(did: str, lfns: tuple[str, ...], as_json: bool) -> None:
    """Detach files from an open dataset."""
    _outcome(run(lambda c: c.detach(did, lfns=lfns)), as_json)


@dataset.command("refresh")
@click.argument("did")
@json_option
def dataset_refresh(did: str, as_json: bool) -> None:
    """Re-run a dynamic dataset's query into its snapshot."""
    _did(run(lambda c: c.refresh_did(did)), as_json)


@dataset.command("rebuild-counts")
@click.option("--dry-run", is_flag=True, help="report drift without fixing it")
@json_option
def dataset_rebuild_counts(dry_run: bool, as_json: bool) -> None:
    """Recount datasets' files and bytes and containers' children from their rows, report drift
    and fix it (admins)."""
    report = run(lambda c: c.rebuild_did_counts(fix=not dry_run))
    rows = [{"did": did, "stored": v["stored"], "recounted": v["recounted"]} for did, v in report["drift"].items()]
    emit(report, as_json, rows, ["did", "stored", "recounted"], title=drift_title(report, dry_run))


@dataset.command("contents")
@click.argument("did")
@contents_options[0]
@contents_options[1]
@json_option
def dataset_contents(did: str, fmt: str | None, output: Path | None, as_json: bool) -> None:
    """List a dataset's files (table, JSON lines, or -o FILE as Parquet/Arrow)."""
    _contents(did, fmt, output, as_json or fmt == "json")


_state_commands(dataset)


@click.group()
def container() -> None:
    """Containers: named sets of datasets and containers (no cycles)."""


@container.command("create")
@click.argument("did")
@click.option("--description", default="")
@click.option("--request-id", help="a key naming this call (8-128 of A-Z a-z 0-9 _ . : -): run again with the "
                                   "same key after losing the answer, it answers the DID the first run made")
@json_option
def container_create(did: str, description: str, request_id: str | None, as_json: bool) -> None:
    """Create a container scope:name."""
    _did(run(lambda c: c.create_did(did, type="container", description=description, request_id=request_id)),
         as_json)


@container.command("attach")
@click.argument("did")
@click.argument("children", nargs=-1, required=True)
@json_option
def container_attach(did: str, children: tuple[str, ...], as_json: bool) -> None:
    """Attach datasets or containers to an open container."""
    _outcome(run(lambda c: c.attach(did, children=children)), as_json)


@container.command("detach")
@click.argument("did")
@click.argument("children", nargs=-1, required=True)
@json_option
def container_detach(did: str, children: tuple[str, ...], as_json: bool) -> None:
    """Detach children from an open container."""
    _outcome(run(lambda c: c.detach(did, children=children)), as_json)


@container.command("contents")
@click.argument("did")
@json_option
def container_contents(did: str, as_json: bool) -> None:
    """List a container's children."""
    _contents(did, None, None, as_json)


_state_commands(container)
