"""`cairn se add`, `cairn se update` and `cairn site add`: SEs and sites from options (admins).
The server checks every field against the SE schema and names the one that is wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cairn.cli.output import emit_json, json_option, table
from cairn.cli.runner import run
from cairn.cli.se_spec import pairs, protocols, without_secrets
from cairn.cli.ses import SE_COLUMNS, _se_row
from kernel.errors import Conflict, NotFound

PROTOCOL_HELP = ("URL[,flag...]: file:///dir, s3://BUCKET/prefix, root://host:port//dir, davs://host:port/dir, "
                 "tape:///dir; flags ro, noread, nowrite, nodelete, tpc, priority=N, KEY=VALUE plugin options "
                 "(repeatable; the first is preferred)")

if TYPE_CHECKING:
    from cairn.sdk import Client


def _options(f: Any) -> Any:
    for option in reversed([
        click.option("--site", help="the site the SE belongs to (made if missing)"),
        click.option("--kind", type=click.Choice(["disk", "tape"]), help="disk (default) or tape"),
        click.option("--protocol", "protocol_specs", multiple=True, help=PROTOCOL_HELP),
        click.option("--attr", "attrs", multiple=True, help="KEY=VALUE attribute, typed (tier=1, country=CH)"),
        click.option("--read/--no-read", "read", default=None, help="allow reads"),
        click.option("--write/--no-write", "write", default=None, help="allow writes"),
        click.option("--delete/--no-delete", "delete", default=None, help="allow deletions"),
        click.option("--total-bytes", type=click.IntRange(0), help="space the reaper keeps the SE below"),
        json_option,
    ]):
        f = option(f)
    return f


def _apply(doc: dict[str, Any], site: str | None, kind: str | None, protocol_specs: tuple[str, ...],
           attrs: tuple[str, ...], switches: dict[str, bool | None], total_bytes: int | None) -> dict[str, Any]:
    if site is not None:
        doc["site"] = site
    if kind is not None:
        doc["kind"] = kind
    if protocol_specs:
        doc["protocols"] = protocols(protocol_specs)
    doc["attributes"] = {**doc.get("attributes", {}), **pairs(attrs, "--attr")}
    doc.update({f"{k}_enabled": v for k, v in switches.items() if v is not None})
    if total_bytes is not None:
        doc["space"] = {**doc.get("space", {}), "total_bytes": total_bytes}
    return doc


def _show(saved: dict[str, Any], as_json: bool) -> None:
    emit_json(saved) if as_json else table([_se_row(saved)], SE_COLUMNS)


@click.command("add")
@click.argument("name")
@_options
def se_add(name: str, site: str | None, kind: str | None, protocol_specs: tuple[str, ...], attrs: tuple[str, ...],
           read: bool | None, write: bool | None, delete: bool | None, total_bytes: int | None,
           as_json: bool) -> None:
    """Add a new SE (admins); `cairn se update` changes one."""
    if not site:
        raise click.UsageError("an SE needs --site")
    if not protocol_specs:
        raise click.UsageError("an SE needs at least one --protocol")
    doc = without_secrets(_apply({"name": name}, site, kind, protocol_specs, attrs,
                                 {"read": read, "write": write, "delete": delete}, total_bytes))

    async def add(client: Client) -> Any:
        try:
            await client.get_se(name)
        except NotFound:
            return await client.put_se(doc)
        raise Conflict(f"SE {name} exists already; change it with `cairn se update {name}`")

    _show(run(add), as_json)


@click.command("update")
@click.argument("name")
@_options
def se_update(name: str, site: str | None, kind: str | None, protocol_specs: tuple[str, ...],
              attrs: tuple[str, ...], read: bool | None, write: bool | None, delete: bool | None,
              total_bytes: int | None, as_json: bool) -> None:
    """Change an SE (admins): --protocol replaces all its protocols, --attr adds or replaces attributes."""

    async def update(client: Client) -> Any:
        current = await client.get_se(name)
        return await client.put_se(without_secrets(_apply(current, site, kind, protocol_specs, attrs,
                                                          {"read": read, "write": write, "delete": delete},
                                                          total_bytes)))

    _show(run(update), as_json)


@click.command("add")
@click.argument("name")
@click.option("--description", default="")
@click.option("--attr", "attrs", multiple=True, help="KEY=VALUE attribute, typed (repeatable)")
def site_add(name: str, description: str, attrs: tuple[str, ...]) -> None:
    """Add a new site (admins)."""
    attributes = pairs(attrs, "--attr")

    async def add(client: Client) -> Any:
        try:
            await client.get_site(name)
        except NotFound:
            return await client.put_site(name, description=description, attributes=attributes)
        raise Conflict(f"site {name} exists already")

    run(add)
    click.echo(f"site {name} added")
