"""`cairn meta ...` (metadata on files and directories, declared fields) and `cairn find`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli.output import emit_json, json_option, stream_table, table
from cairn.cli.runner import run
from kernel import jsonio

if TYPE_CHECKING:
    from cairn.sdk import Client


def parse_value(text: str) -> Any:
    """A value from the command line: JSON when it parses (12, 1.5, ["a","b"]), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        values[key] = parse_value(value)
    return values


def _show(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(entry)
        return
    rows = [{"key": k, "value": v, "from": entry["origin"].get(k, entry["path"]),
             "own": "yes" if k in entry["own"] else ""} for k, v in sorted(entry["effective"].items())]
    table(rows, ["key", "value", "own", "from"], title=entry["path"])


@click.group()
def meta() -> None:
    """User metadata on files and directories (directory values are inherited below)."""


@meta.command("set")
@click.argument("path")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@json_option
def meta_set(path: str, assignments: tuple[str, ...], as_json: bool) -> None:
    """Set metadata; VALUE is JSON when it parses (12, 1.5, ["a","b"]), else text."""
    values = parse_assignments(assignments)
    _show(run(lambda c: c.set_metadata(path, values)), as_json)


@meta.command("get")
@click.argument("path")
@json_option
def meta_get(path: str, as_json: bool) -> None:
    """Show the effective metadata of an entry, and where each value comes from."""
    _show(run(lambda c: c.get_metadata(path)), as_json)


@meta.command("rm")
@click.argument("path")
@click.argument("keys", nargs=-1, required=True)
@json_option
def meta_rm(path: str, keys: tuple[str, ...], as_json: bool) -> None:
    """Remove own metadata keys (inherited values show through again)."""
    _show(run(lambda c: c.remove_metadata(path, keys)), as_json)


@meta.command("fields")
@click.option("--declare", nargs=2, metavar="KEY TYPE", help="declare KEY as int|float|string|datetime|strings")
@click.option("--undeclare", metavar="KEY", help="forget a declaration")
@click.option("--description", default="")
@click.option("--vo", default=None, help="with --declare (global admins): the VO whose namespace the field types; "
              "a VO's admin always declares for its own VO")
@json_option
def meta_fields(declare: tuple[str, str] | None, undeclare: str | None, description: str, vo: str | None,
                as_json: bool) -> None:
    """List declared (indexed) fields; declaring or undeclaring needs an admin token (of the
    installation, or of a VO for the fields of its own namespace)."""

    async def act(client: Client) -> Any:
        if declare:
            await client.declare_field(declare[0], declare[1], description, vo=vo)
        if undeclare:
            await client.undeclare_field(undeclare)
        return await client.list_fields()

    fields = run(act)
    emit_json(fields) if as_json else table(fields, ["key", "type", "vo", "indexed", "description"])


@click.command()
@click.argument("query")
@click.option("--path", default="/", show_default=True, help="only below this directory")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "parquet", "arrow"]), default=None,
              help="parquet and arrow need -o")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="write results to a file")
@click.option("--limit", type=click.IntRange(1), default=None)
@json_option
def find(query: str, path: str, fmt: str | None, output: Path | None, limit: int | None, as_json: bool) -> None:
    """Files matching a metadata QUERY, e.g. 'run>=12 run<=40 particle=proton'.

    Operators: = != < <= > >= in nin (comma lists); Any, Missing; * ? wildcards; 'and'/'&' (or
    just a space) within a group, 'or'/'|' between groups, parentheses. Standard keys: name, lfn,
    size, created, modified, owner, group, checksum, guid, status, se, replica_status.
    """
    if as_json:
        fmt = "json"
    if fmt in ("parquet", "arrow"):
        if output is None:
            raise click.UsageError(f"--format {fmt} writes a file: give -o FILE")
        written = run(lambda c: c.find_to_file(query, output, format=fmt or "parquet", path=path))
        click.echo(f"wrote {written} bytes to {output}", err=True)
        return

    async def stream(client: Client) -> int:
        results = client.find(query, path=path, limit=limit)
        if fmt != "json" and not output:
            columns = ["lfn", "size", "ses", "meta"]
            return await stream_table(({c: item[c] for c in columns} async for item in results), columns)
        count = 0
        sink = output.open("w") if output else None
        try:
            async for item in results:
                count += 1
                line = jsonio.dumps(item)
                sink.write(line + "\n") if sink else click.echo(line)
        finally:
            if sink:
                sink.close()
        return count

    count = run(stream)
    if fmt != "json":
        click.echo(f"{count} file(s)", err=True)
