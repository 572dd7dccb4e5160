"""`cairn transfers stats`: how the transfer system is doing."""

from __future__ import annotations

import click

from cairn.cli.output import emit_json, json_option, table
from cairn.cli.runner import run


@click.group()
def transfers() -> None:
    """Watch the transfer system."""


@transfers.command("stats")
@json_option
def stats(as_json: bool) -> None:
    """Per-link throughput, queue depths and failures by reason."""
    doc = run(lambda c: c.transfer_stats())
    if as_json:
        emit_json(doc)
        return
    table(doc["links"], ["source", "dest", "done", "failed", "bytes", "mean_file_mb_s", "wall_mb_s", "failures"],
          title="links")
    table(doc["queues"], ["kind", "state", "dest_se", "requests"], title="requests")
    table([{"reason": k, "attempts": v} for k, v in doc["failures"].items()], ["reason", "attempts"],
          title="failures by reason")
