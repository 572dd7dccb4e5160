"""`cairn transfers stats|series|activity|shares`: how the transfer system is doing, over time, by
activity, and how its queue is shared."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import TYPE_CHECKING, Any

import click

from cairn.cli.output import emit_json, json_option, table
from cairn.cli.runner import run

if TYPE_CHECKING:
    from cairn.sdk import Client


@click.group()
def transfers() -> None:
    """Watch the transfer system."""


@transfers.command("stats")
@json_option
def stats(as_json: bool) -> None:
    """Per-link throughput, queue depths, failures by reason, and DB commands per file."""
    doc = run(lambda c: c.transfer_stats())
    if as_json:
        emit_json(doc)
        return
    table(doc["links"], ["source", "dest", "done", "failed", "bytes", "mean_file_mb_s", "wall_mb_s",
                         "db_commands_per_file", "failures"], title="links")
    click.echo(f"database commands per transferred file: {doc.get('db_commands_per_file') or 'not reported yet'}")
    table(doc["queues"], ["kind", "state", "dest_se", "requests"], title="requests")
    table([{"reason": k, "attempts": v} for k, v in doc["failures"].items()], ["reason", "attempts"],
          title="failures by reason")


@transfers.command("series")
@click.option("--hours", type=int, default=48, show_default=True)
@click.option("--source", help="only from this SE")
@click.option("--dest", help="only to this SE")
@json_option
def series(hours: int, source: str | None, dest: str | None, as_json: bool) -> None:
    """Files done and failed and MB moved per hour."""
    doc = run(lambda c: c.transfer_series(hours=hours, source=source, dest=dest))
    if as_json:
        emit_json(doc)
        return
    rows = [{"hour": dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:00"), "done": d, "failed": f, "mb": m}
            for t, d, f, m in zip(doc["hours"], doc["done"], doc["failed"], doc["mb"], strict=True)]
    table(rows, ["hour", "done", "failed", "mb"], title="per hour (UTC)")


@transfers.command("activity")
@click.option("--hours", type=int, default=48, show_default=True)
@click.option("--step-hours", type=int, default=1, show_default=True, help="bucket width")
@json_option
def activity(hours: int, step_hours: int, as_json: bool) -> None:
    """Transfers per activity (done, failed attempts, bytes): totals, and with --json per bucket."""
    doc = run(lambda c: c.transfer_activity(hours=hours, step_hours=step_hours))
    if as_json:
        emit_json(doc)
        return
    table(doc["totals"], ["activity", "done", "failed", "bytes"], title=f"by activity, last {hours} h")


def _activity_share(value: str) -> tuple[str, float]:
    """`NAME=SHARE` -> (NAME, SHARE); the server checks both."""
    name, sep, share = value.rpartition("=")
    try:
        if not sep:
            raise ValueError(value)
        return name, float(share)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not NAME=SHARE") from exc


async def _set_activity(client: Client, *, name: str, share: float) -> Any:
    return await client.set_activity_share(name, share)


async def _forget_activity(client: Client, *, name: str) -> Any:
    return await client.forget_activity_share(name)


@transfers.command("shares")
@click.option("--activity", "set_activities", multiple=True, metavar="NAME=SHARE",
              help="set an activity's share within its VO's part ('*' for every unlisted one; global admins; "
                   "repeatable)")
@click.option("--forget-activity", "forget", multiple=True, metavar="NAME",
              help="give an activity the default share again (global admins; repeatable)")
@json_option
def shares(set_activities: tuple[str, ...], forget: tuple[str, ...], as_json: bool) -> None:
    """Shares of the transfer queue: VOs' (`cairn vo update --transfer-share`) with their backlogged
    flows, then activities' within a VO; with options, change activities' shares first."""
    for name, share in map(_activity_share, set_activities):
        run(partial(_set_activity, name=name, share=share))
    for name in forget:
        run(partial(_forget_activity, name=name))
    doc = run(lambda c: c.transfer_shares())
    if as_json:
        emit_json(doc)
        return
    table(doc["vos"], ["vo", "share", "backlogged"], title="VOs")
    rows = [{"activity": k, "share": v} for k, v in doc["activities"].items()]
    table([*rows, {"activity": "(any other)", "share": doc["default_activity_share"]}], ["activity", "share"],
          title="activities (within a VO)")
