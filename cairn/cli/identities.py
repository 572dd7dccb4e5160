"""`cairn identity list|bind|forget|move`: which token issuer speaks for each user name."""

from __future__ import annotations

import click

from cairn.cli.output import emit, json_option
from cairn.cli.runner import run

COLUMNS = ["_id", "issuer", "vo", "bound"]


@click.group()
def identity() -> None:
    """User names and the issuer whose tokens speak for each (admins).

    A name is bound to the first issuer whose token used it; tokens of other issuers naming it
    are refused, so a second issuer trusted for a VO cannot mint its users' names."""


@identity.command("list")
@click.option("--vo", help="only this VO's names (global admins)")
@click.option("--issuer", help="only this issuer's names")
@click.option("--after", default="", help="names after this one (paging)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@json_option
def identity_list(vo: str | None, issuer: str | None, after: str, limit: int, as_json: bool) -> None:
    """Bound names, in name order."""
    found = run(lambda c: c.identities(vo=vo, issuer=issuer, after=after, limit=limit))
    emit(found, as_json, found, COLUMNS)


@identity.command("bind")
@click.argument("name")
@click.argument("issuer")
@json_option
def identity_bind(name: str, issuer: str, as_json: bool) -> None:
    """Bind user NAME (as stored: `vo:name` in a multi-VO installation) to ISSUER."""
    done = run(lambda c: c.bind_identity(name, issuer))
    emit(done, as_json, [done], COLUMNS)


@identity.command("forget")
@click.argument("name")
def identity_forget(name: str) -> None:
    """Forget NAME's binding: the next token naming it binds it to its issuer."""
    run(lambda c: c.forget_identity(name))
    click.echo(f"forgot the binding of {name}")


@identity.command("move")
@click.option("--from", "old", required=True, help="the issuer whose names move")
@click.option("--to", "new", required=True, help="the issuer they are bound to from now on")
def identity_move(old: str, new: str) -> None:
    """Bind every name of one issuer to another (an identity provider replaced)."""
    moved = run(lambda c: c.move_identities(old, new))
    click.echo(f"moved {moved['moved']} name(s) from {old} to {new}")
