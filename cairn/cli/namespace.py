"""`cairn ls|stat|mkdir|mv|rm|chmod|chown`: the namespace from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cairn.cli.output import emit_json, emit_json_lines_stream, json_option, safe_text, stream_table, table
from cairn.cli.runner import run

ENTRY_COLUMNS = ["mode", "owner", "group", "size", "modified", "name"]

if TYPE_CHECKING:
    from cairn.sdk import Client


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    kind = "d" if entry["type"] == "directory" else "-"
    return {**entry, "mode": kind + _rwx(int(entry.get("mode", 0))),
            "name": entry["name"] + ("/" if kind == "d" else "")}


def _rwx(mode: int) -> str:
    return "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))


def _octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an octal mode such as 755") from exc
    if not 0 <= value <= 0o777:
        raise click.BadParameter("mode must be between 000 and 777")
    return value


@click.command()
@click.argument("path", default="/")
@json_option
def ls(path: str, as_json: bool) -> None:
    """List a directory (streamed, sorted by name; printed as it arrives)."""

    async def show(client: Client) -> None:
        if as_json:
            await emit_json_lines_stream(client.ls_lines(path))
        else:
            await stream_table((_row(e) async for e in client.ls(path)), ENTRY_COLUMNS)

    run(show)


@click.command()
@click.argument("path")
@json_option
def stat(path: str, as_json: bool) -> None:
    """Show a directory or a file (with its replicas)."""
    entry = run(lambda c: c.stat(path))
    if as_json:
        emit_json(entry)
        return
    table([_row(entry)], ["path", *ENTRY_COLUMNS[:-1]])
    if entry["type"] == "file":
        table([{k: entry.get(k) for k in ("guid", "adler32", "md5", "status")}], ["guid", "adler32", "md5", "status"])
        table(entry.get("replicas", []), ["se", "status", "url"], title="replicas")


@click.command()
@click.argument("path")
@click.option("-p", "--parents", is_flag=True, help="create missing parents; an existing directory is fine")
@click.option("-m", "--mode", help="octal mode, e.g. 750")
@json_option
def mkdir(path: str, parents: bool, mode: str | None, as_json: bool) -> None:
    """Create a directory."""
    bits = _octal(mode) if mode else None
    entry = run(lambda c: c.mkdir(path, parents=parents, mode=bits))
    emit_json(entry) if as_json else click.echo(entry["path"])


@click.command()
@click.argument("source")
@click.argument("destination")
@click.option("--request-id", help="a key naming this move (8-128 of A-Z a-z 0-9 _ . : -): run again with the "
                                   "same key after losing the answer, it answers the move the first run made")
@json_option
def mv(source: str, destination: str, request_id: str | None, as_json: bool) -> None:
    """Rename or move a file or a directory tree."""
    entry = run(lambda c: c.move(source, destination, request_id=request_id))
    emit_json(entry) if as_json else click.echo(f"{source} -> {entry['path']}")


@click.command()
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="remove a directory and everything below it (admins)")
@click.option("-f", "--force", is_flag=True,
              help="remove a file that still has replicas; their bytes are deleted (its owner or admins)")
@json_option
def rm(path: str, recursive: bool, force: bool, as_json: bool) -> None:
    """Remove a file (without replicas, or with them: --force), an empty directory, or a tree (admins, -r)."""
    if force and recursive:
        raise click.UsageError("--force removes one file; -r removes a tree (and its files' replicas)")
    if force:
        _force_out(path, as_json)
        return
    result = run(lambda c: c.remove(path, recursive=recursive))
    if as_json:
        emit_json(result)
    else:
        click.echo(f"removed {result['removed']} entr{'y' if result['removed'] == 1 else 'ies'}")


def _force_out(lfn: str, as_json: bool) -> None:
    """`rm --force`: one file out of the catalogue, replicas and all (`POST /files/remove`)."""
    result = run(lambda c: c.remove_files([lfn], force=True))
    if as_json:
        emit_json(result)
    elif result["successful"].get(lfn, {}).get("removed"):
        click.echo("removed 1 entry; its replicas' bytes are deleted by the reaper")
    elif lfn in result["successful"]:
        click.echo("removed 0 entries (no such file)")
    for reason in result["failed"].values():
        if not as_json:
            click.echo(safe_text(f"{lfn}: {reason}"), err=True)
        raise SystemExit(1)


@click.command()
@click.argument("mode")
@click.argument("path")
@json_option
def chmod(mode: str, path: str, as_json: bool) -> None:
    """Set the mode of an entry (octal, e.g. 750)."""
    bits = _octal(mode)
    entry = run(lambda c: c.chmod(path, bits))
    emit_json(entry) if as_json else table([_row(entry)], ["path", *ENTRY_COLUMNS[:3]])


@click.command()
@click.argument("owner_group")
@click.argument("path")
@json_option
def chown(owner_group: str, path: str, as_json: bool) -> None:
    """Set owner and/or group: OWNER, OWNER:GROUP or :GROUP."""
    owner, _, group = owner_group.partition(":")
    entry = run(lambda c: c.chown(path, owner=owner or None, group=group or None))
    emit_json(entry) if as_json else table([_row(entry)], ["path", *ENTRY_COLUMNS[:3]])
