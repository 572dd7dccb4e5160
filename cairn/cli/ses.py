"""`cairn se ...` and `cairn site ...`: storage elements and sites (changes need an admin token)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cairn.cli.output import emit, emit_json, json_option, table
from cairn.cli.runner import run, run_and_say
from cairn.cli.se_spec import without_secrets

SE_COLUMNS = ["name", "site", "kind", "read_enabled", "write_enabled", "delete_enabled", "protocols"]


def _se_row(se: dict[str, Any]) -> dict[str, Any]:
    protocols = [f"{p['scheme']}://{p.get('host') or ''}{p['prefix']}" for p in se.get("protocols", [])]
    return {**se, "protocols": protocols}


def switch_options(command: Callable[..., None]) -> Callable[..., None]:
    """`--read/--no-read`, `--write/--no-write`, `--delete/--no-delete` (None when not given)."""
    for name, what in (("delete", "deletions"), ("write", "writes"), ("read", "reads")):
        command = click.option(f"--{name}/--no-{name}", name, default=None, help=f"switch {what}")(command)
    return command


def switch_changes(read: bool | None, write: bool | None, delete: bool | None) -> dict[str, bool]:
    """The switches given, as the API names them (`read_enabled`, ...)."""
    given = {"read_enabled": read, "write_enabled": write, "delete_enabled": delete}
    return {k: v for k, v in given.items() if v is not None}


@click.group()
def se() -> None:
    """Storage elements."""


@se.command("list")
@click.option("--site")
@json_option
def se_list(site: str | None, as_json: bool) -> None:
    """List SEs (of one site with --site)."""
    ses = run(lambda c: c.list_ses(site=site))
    emit(ses, as_json, [_se_row(s) for s in ses], SE_COLUMNS)


@se.command("show")
@click.argument("name")
@json_option
def se_show(name: str, as_json: bool) -> None:
    """Show one SE."""
    found = run(lambda c: c.get_se(name))
    if as_json:
        emit_json(found)
    else:
        table([_se_row(found)], SE_COLUMNS)
        table([found["space"]], list(found["space"]), title="space")


@se.command("put")
@click.argument("definition", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def se_put(definition: Path, as_json: bool) -> None:
    """Create or replace an SE from a JSON file (admins): the fields of `cairn se show NAME --json`,
    described in the README's "Storage elements"; `cairn se add` builds one from options."""
    doc = without_secrets(json.loads(definition.read_text()))
    saved = run(lambda c: c.put_se(doc))
    emit_json(saved) if as_json else click.echo(f"SE {saved['name']} saved")


@se.command("set")
@click.argument("name")
@switch_options
@click.option("--total-bytes", type=click.IntRange(0))
@click.option("--used-bytes", type=click.IntRange(0))
@json_option
def se_set(name: str, read: bool | None, write: bool | None, delete: bool | None, total_bytes: int | None,
           used_bytes: int | None, as_json: bool) -> None:
    """Switch an SE's reads/writes/deletes or set its space figures (admins)."""
    changes: dict[str, Any] = switch_changes(read, write, delete)

    async def apply(client: Any) -> Any:
        if total_bytes is not None or used_bytes is not None:
            space = (await client.get_se(name))["space"]
            space.update({k: v for k, v in {"total_bytes": total_bytes, "used_bytes": used_bytes}.items()
                          if v is not None})
            changes["space"] = space
        if not changes:
            raise click.UsageError("nothing to change")
        return await client.update_se(name, **changes)

    saved = run(apply)
    emit(saved, as_json, [_se_row(saved)], SE_COLUMNS)


@se.command("delete")
@click.argument("name")
def se_delete(name: str) -> None:
    """Remove an SE that holds no replica (admins)."""
    run_and_say(lambda c: c.delete_se(name), f"SE {name} deleted")


@se.command("bad-replicas")
@click.argument("name", required=False)
@click.option("--after", help="last LFN of the previous page")
@click.option("--limit", type=int, default=1000, show_default=True)
@json_option
def se_bad_replicas(name: str | None, after: str | None, limit: int, as_json: bool) -> None:
    """Bad replicas (on SE NAME, or anywhere) for triage, one page by LFN (admins)."""
    page = run(lambda c: c.bad_replicas(se=name, after=after, limit=limit))
    if as_json:
        emit_json(page)
        return
    table(page["replicas"], ["lfn", "se", "size", "good_copies"])
    if page["next_after"]:
        click.echo(f"more: --after {page['next_after']}")


@click.group()
def site() -> None:
    """Sites and their local SEs."""


@site.command("list")
@json_option
def site_list(as_json: bool) -> None:
    """List sites."""
    sites = run(lambda c: c.list_sites())
    emit_json(sites) if as_json else table(sites, ["name", "description", "attributes"])


@site.command("show")
@click.argument("name")
@json_option
def site_show(name: str, as_json: bool) -> None:
    """Show a site and its SEs."""
    found = run(lambda c: c.get_site(name))
    if as_json:
        emit_json(found)
    else:
        table([found], ["name", "description", "attributes"])
        table([_se_row(s) for s in found["ses"]], SE_COLUMNS, title="SEs")


@site.command("put")
@click.argument("name")
@click.option("--description", default="")
@click.option("--attribute", "attributes", multiple=True, help="KEY=VALUE (repeatable)")
def site_put(name: str, description: str, attributes: tuple[str, ...]) -> None:
    """Create or replace a site (admins)."""
    attrs = dict(a.split("=", 1) for a in attributes if "=" in a)
    run_and_say(lambda c: c.put_site(name, description=description, attributes=attrs), f"site {name} saved")


@site.command("delete")
@click.argument("name")
def site_delete(name: str) -> None:
    """Remove a site that has no SE (admins)."""
    run_and_say(lambda c: c.delete_site(name), f"site {name} deleted")
