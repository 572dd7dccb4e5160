"""How the CLI prints: human tables by default, JSON with --json. Listings of any size print as
they arrive (`emit_json_lines_stream`, `stream_table`), holding one chunk of rows, never the result."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import AsyncIterable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

from kernel import jsonio
from kernel.errors import CairnError

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def console(*, stderr: bool = False) -> Console:
    """The rich console of stdout (or stderr), made on first use: commands that print JSON or a
    streamed table never import rich."""
    from rich.console import Console

    return Console(stderr=stderr)


def err_console() -> Console:
    return console(stderr=True)


# What a value chosen by another user (an LFN, a metadata value, a job's output, an error naming
# them) could use to drive the viewer's terminal or hide text: C0 controls (ESC starts CSI/OSC
# sequences, e.g. OSC 52 writes the clipboard; CR overwrites a line), DEL, C1 controls and the
# bidirectional overrides. Shown escaped (`\x1b`); JSON output escapes them itself.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_IN_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(value: str, *, lines: bool = False) -> str:
    """`value` with every terminal control character shown escaped; `lines` keeps newlines and
    tabs (a job's output, a log)."""
    return (_UNSAFE_IN_LINES if lines else _UNSAFE).sub(_escaped, value)


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")


# DEL and the C1 controls (U+0080-U+009F; 0x9B is CSI to an 8-bit terminal) as JSON writes them
# raw in strings, in UTF-8: shown as \u escapes instead, the same JSON value. (The C0 controls
# and ESC are escaped by JSON itself.) In UTF-8, 0xC2 is only ever a lead byte, so the pairs
# matched here are those characters and nothing else.
RAW_CONTROLS = re.compile(rb"\x7f|\xc2[\x80-\x9f]")


def escaped_controls(data: bytes) -> bytes:
    """JSON text with DEL and the C1 controls escaped (`\u007f`), so another user's value printed
    with --json drives no terminal either."""
    return RAW_CONTROLS.sub(lambda m: b"\\u%04x" % ord(m.group().decode()), data)


def emit_json(data: Any) -> None:
    click.echo(escaped_controls(jsonio.dumps_bytes(data, indent=True)))


CHUNK = 500


async def emit_json_lines_stream(chunks: AsyncIterable[list[bytes]]) -> int:
    """Print one JSON array (an item per line) from chunks of JSON lines as the API sent them,
    each already one compact item: passed on undecoded, one write per chunk. Returns how many."""
    out = sys.stdout.buffer
    count = 0
    out.write(b"[")
    async for lines in chunks:
        out.write(escaped_controls((b",\n  " if count else b"\n  ") + b",\n  ".join(lines)))
        out.flush()
        count += len(lines)
    out.write(b"\n]\n" if count else b"]\n")
    out.flush()
    return count


async def stream_table(rows: AsyncIterable[dict[str, Any]], columns: Sequence[str], *, sample: int = CHUNK) -> int:
    """Print rows as a plain aligned table as they arrive: the column widths come from the first
    `sample` rows (a longer cell later only pushes its own line out). Returns how many rows."""
    widths = [len(col) for col in columns]
    held: list[list[str]] = [[col.upper() for col in columns]]
    sized = False
    count = 0
    async for row in rows:
        held.append([_cell(row.get(col)) for col in columns])
        count += 1
        if not sized and count >= sample:
            widths, sized = _widths(held, widths), True
        if sized and len(held) >= CHUNK:
            click.echo("\n".join(_line(cells, widths) for cells in held))
            held = []
    if not sized:
        widths = _widths(held, widths)
    if held:
        click.echo("\n".join(_line(cells, widths) for cells in held))
    return count


def emit(found: Any, as_json: bool, rows: Iterable[dict[str, Any]], columns: Sequence[str], *,
         title: str | None = None) -> None:
    """What a command found: as JSON with --json, else `rows` (its view of it) as a table."""
    if as_json:
        emit_json(found)
    else:
        table(rows, columns, title=title)


def drift_title(report: dict[str, Any], dry_run: bool) -> str:
    """The title of a rebuild's drift table (`cairn usage rebuild`, `cairn quota rebuild`, `cairn job
    rebuild-counters`, whose counters that moved while it ran are `moved`: not fixed)."""
    title = f"{report['drifted']} of {report['checked']} drifted" + ("" if dry_run else " (fixed)")
    if moved := report.get("moved"):
        title += f"; {len(moved)} moved meanwhile, not fixed (run it again): {', '.join(moved)}"
    return title


def _widths(rows: list[list[str]], widths: list[int]) -> list[int]:
    for cells in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    return widths


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str], *, title: str | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    view = Table(title=Text(safe_text(title)) if title else None, show_edge=False, header_style="bold")
    for col in columns:
        view.add_column(col)
    for row in rows:  # Text, not str: a value is shown as written, never read as rich markup
        view.add_row(*[Text(_cell(row.get(col))) for col in columns])
    console().print(view)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return safe_text(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return safe_text(", ".join(f"{k}={v}" for k, v in value.items()))
    return safe_text(str(value))


def fail(exc: CairnError) -> None:
    from rich.text import Text

    err_console().print(Text.assemble(("error", "red"), f" ({exc.code}): {safe_text(exc.message)}"))
    sys.exit(2 if exc.status < 500 else 3)
