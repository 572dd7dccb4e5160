"""`cairn token issue` (built-in issuer, signs locally with the key under ./var), `cairn token
revoke` and `cairn token revocations` (through the API), and `cairn whoami`."""

from __future__ import annotations

from typing import TextIO

import click

from cairn.cli.output import emit, emit_json, fail, json_option, table
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


@token.command("revoke")
@click.option("--jti", help="the token's id (jti claim): revoked within your reach, whether or not you see it")
@click.option("--token-file", type=click.File("r"), help="a file holding the token itself ('-': stdin)")
@click.option("--user", "-u", help="revoke every token of this user issued until now (yours: sign out everywhere)")
@click.option("--issuer", help="with --jti: only this issuer's token; with --user: the user's issuer (default: yours)")
@json_option
def revoke(jti: str | None, token_file: TextIO | None, user: str | None, issuer: str | None,
           as_json: bool) -> None:
    """Revoke a token (--jti or --token-file) or a user's tokens (--user): refused at once here,
    within 5 s on every server."""
    if sum(given is not None for given in (jti, token_file, user)) != 1:
        raise click.UsageError("give exactly one of --jti, --token-file, --user")
    whole = token_file.read().strip() if token_file is not None else None
    entry = run(lambda c: c.revoke_token(jti=jti, token=whole, user=user, issuer=issuer))
    if as_json:
        emit_json(entry)
    elif entry["kind"] == "jti":
        click.echo(f"revoked token {entry['jti']}" + (f" of {entry['user']}" if entry["user"] else "")
                   + (f" in VO {entry['vo']}" if entry["vo"] else ""))
    else:
        click.echo(f"revoked every token of {entry['user']} ({entry['issuer']}) issued before "
                   f"{entry['not_before']}" + (f" in VO {entry['vo']}" if entry["vo"] else ""))


@token.command("revocations")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@json_option
def revocations(limit: int, as_json: bool) -> None:
    """Live revocations, newest first (admins; a VO's admin sees its VO's)."""
    found = run(lambda c: c.token_revocations(limit=limit))
    emit(found, as_json, found, ["kind", "jti", "issuer", "user", "vo", "not_before", "expires", "by", "changed"])


@click.command()
@json_option
def whoami(as_json: bool) -> None:
    """Show who the current token says you are."""
    me = run(lambda c: c.whoami())
    if as_json:
        emit_json(me)
    else:
        table([me], ["sub", "vo", "groups", "scopes", "admin", "global_admin", "roots"])
