"""`cairn token issue` (built-in issuer, signs locally with the key under ./var) and `cairn whoami`."""

from __future__ import annotations

import click

from cairn.cli.output import emit_json, fail, json_option, table
from cairn.cli.runner import run
from cairn.cli.settings import cli_settings
from kernel.errors import CairnError
from kernel.principal import DEFAULT_VO, GLOBAL_VO, SCOPES


@click.group()
def token() -> None:
    """Tokens of the built-in issuer."""


@token.command("issue")
@click.option("--user", "-u", required=True, help="subject (user name)")
@click.option("--vo", default=DEFAULT_VO, show_default=True,
              help=f"virtual organisation ({GLOBAL_VO!r} with --scope admin: a global admin)")
@click.option("--group", "-g", "groups", multiple=True, help="group (repeatable; the first is primary)")
@click.option("--scope", "-s", "scopes", multiple=True, help=f"scope (repeatable): {', '.join(SCOPES)}")
@click.option("--lifetime", type=click.IntRange(60, 366 * 86400), help="seconds until it expires")
def issue(user: str, vo: str, groups: tuple[str, ...], scopes: tuple[str, ...], lifetime: int | None) -> None:
    """Sign a token with the built-in issuer's key (kept under ./var/keys)."""
    from kernel.tokens import BuiltinIssuer  # jwt and cryptography: for this command only

    settings = cli_settings()
    try:
        issuer = BuiltinIssuer.from_settings(settings)
        scope_list = [s for item in scopes for s in item.replace(",", " ").split()]
        click.echo(issuer.issue(sub=user, vo=vo, groups=groups or (vo,), scopes=scope_list, lifetime_s=lifetime))
    except CairnError as exc:
        fail(exc)


@click.command()
@json_option
def whoami(as_json: bool) -> None:
    """Show who the current token says you are."""
    me = run(lambda c: c.whoami())
    if as_json:
        emit_json(me)
    else:
        table([me], ["sub", "vo", "groups", "scopes", "admin", "global_admin", "roots"])
