"""Commands that run Cairn's processes: `server`, `daemon NAME`, `up`, and `health`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cairn.cli.output import emit_json, fail, json_option
from cairn.cli.runner import run
from cairn.cli.settings import cli_settings
from kernel.errors import CairnError


@click.command()
@click.option("--host", help="listen address (default: CAIRN_API_HOST or 127.0.0.1)")
@click.option("--port", type=int, help="listen port (default: CAIRN_API_PORT or 8700)")
def server(host: str | None, port: int | None) -> None:
    """Run the API server (stateless: run as many as you like)."""
    from cairn.server import run_server

    overrides = {k: v for k, v in {"api_host": host, "api_port": port}.items() if v is not None}
    settings = cli_settings(**overrides)
    if settings.mongodb_uri is None:
        fail(CairnError("no database: set CAIRN_MONGODB_URI (or use `cairn up`, which starts one)"))
    run_server(settings)


@click.command()
@click.argument("name")
def daemon(name: str) -> None:
    """Run one daemon loop (many instances may run at once; they share work through leases)."""
    from cairn import daemons

    settings = cli_settings()
    if name not in daemons.known_daemons():
        known = ", ".join(daemons.known_daemons()) or "none yet"
        fail(CairnError(f"unknown daemon {name!r}; known daemons: {known}"))
    daemons.main(settings, name)


@click.command()
@click.option("--var", "var_dir", type=click.Path(file_okay=False, path_type=Path),
              help="state directory (default: CAIRN_VAR_DIR or ./var)")
@click.option("--port", type=int, help="API port (default: CAIRN_API_PORT or 8700)")
@click.option("--vo", default="local", show_default=True, help="VO of the admin token")
def up(var_dir: Path | None, port: int | None, vo: str) -> None:
    """Run everything on this machine on the embedded default (FerretDB under ./var/db)."""
    from cairn.up import run_up

    overrides: dict[str, object] = {}
    if var_dir is not None:
        overrides["var_dir"] = var_dir
    if port is not None:
        overrides["api_port"] = port
    settings = cli_settings(**overrides)
    try:
        sys.exit(run_up(settings, vo=vo))
    except CairnError as exc:
        fail(exc)


@click.command()
@json_option
def health(as_json: bool) -> None:
    """Ask the API whether it and its database answer."""
    result = run(lambda c: c.health())
    if as_json:
        emit_json(result)
    else:
        click.echo(f"API {result['status']}, database {result['database']}, version {result['version']}")
