"""How the CLI prints: human tables by default, JSON with --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kernel import jsonio
from kernel.errors import CairnError

console = Console()
err_console = Console(stderr=True)

json_option = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(json.loads(jsonio.dumps(data)), indent=2))


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str], *, title: str | None = None) -> None:
    view = Table(title=title, show_edge=False, header_style="bold")
    for col in columns:
        view.add_column(col)
    for row in rows:
        view.add_row(*[_cell(row.get(col)) for col in columns])
    console.print(view)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def fail(exc: CairnError) -> None:
    err_console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
    sys.exit(2 if exc.status < 500 else 3)
