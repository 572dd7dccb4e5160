"""`cairn job ...` (submit, status, list, logs, kill, reschedule, queues) and `cairn pilot`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import click

from cairn.cli.output import drift_title, emit, emit_json, fail, json_option, safe_text, table
from cairn.cli.runner import run
from cairn.cli.settings import cli_settings
from kernel import event_loop
from kernel.errors import InvalidInput

JOB_COLUMNS = ["id", "name", "owner", "group", "state", "reason", "site", "attempt", "updated"]


@click.group()
def job() -> None:
    """Submit and watch jobs."""


def read_description(path: Path) -> Any:
    import yaml  # only the commands that read a description need it

    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:  # RecursionError: nested too deep
        fail(InvalidInput(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"))


@job.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--request-id", help="a key naming this submission (8-128 of A-Z a-z 0-9 _ . : -): run again with "
                                   "the same key, it answers the jobs the first run stored instead of new ones")
@json_option
def submit(file: Path, request_id: str | None, as_json: bool) -> None:
    """Submit the job description(s) in FILE (JSON or YAML; a list submits in bulk)."""
    description = read_description(file)
    ids = run(lambda c: c.submit_jobs(description, request_id=request_id))
    if as_json:
        emit_json({"ids": ids})
    else:
        click.echo(f"submitted {len(ids)} job(s): {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''}")


@job.command("status")
@click.argument("job_ids", nargs=-1, required=True)
@json_option
def status(job_ids: tuple[str, ...], as_json: bool) -> None:
    """State, placement and history of jobs."""
    async def fetch(c: Any) -> list[dict[str, Any]]:
        return [await c.get_job(i) for i in job_ids]

    found = run(fetch)
    if as_json:
        emit_json(found if len(found) > 1 else found[0])
        return
    table(found, JOB_COLUMNS)
    table(found, ["id", "pilot", "batch_id", "pilot_queue"], title="pilots")
    for item in found:
        table(item.get("history", []), ["state", "time", "reason"], title=f"job {item['id']} history")


@job.command("list")
@click.option("--state", help="only jobs in this state")
@click.option("--owner", help="whose jobs (admins)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def list_(state: str | None, owner: str | None, limit: int, as_json: bool) -> None:
    """Jobs, newest first."""
    found = run(lambda c: c.list_jobs(owner=owner, state=state, limit=limit))
    if as_json:
        emit_json(found)
    else:
        table(found, JOB_COLUMNS)


@job.command("logs")
@click.argument("job_id")
@click.option("--raw", is_flag=True, help="print the payload's output as it wrote it, terminal control "
              "characters included (shown escaped otherwise)")
@json_option
def logs(job_id: str, raw: bool, as_json: bool) -> None:
    """Exit code, stdout and stderr (their tails) of a job."""
    found = run(lambda c: c.job_logs(job_id))
    if as_json:
        emit_json(found)
        return
    click.echo(f"job {found['id']}: {found['state']}, exit code {found['exit_code']}")
    for stream in ("stdout", "stderr"):
        click.echo(f"--- {stream} ---")
        click.echo(found[stream] if raw else safe_text(found[stream], lines=True), nl=False)


@job.command("kill")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--reason", default="", help="recorded in the job's history")
@json_option
def kill(job_ids: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Kill jobs (yours, or anyone's for admins)."""
    async def go(c: Any) -> list[dict[str, Any]]:
        return [await c.kill_job(i, reason) for i in job_ids]

    found = run(go)
    if as_json:
        emit_json(found)
    else:
        table(found, ["id", "state"])


@job.command("reschedule")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--reason", default="", help="recorded in the job's history")
@json_option
def reschedule(job_ids: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Run stalled, failed or killed jobs again."""
    async def go(c: Any) -> list[dict[str, Any]]:
        return [await c.reschedule_job(i, reason) for i in job_ids]

    found = run(go)
    if as_json:
        emit_json(found)
    else:
        table(found, JOB_COLUMNS)


@job.command("summary")
@json_option
def summary(as_json: bool) -> None:
    """How many jobs are in each state (yours; everyone's for admins)."""
    found = run(lambda c: c.job_summary())
    if as_json:
        emit_json(found)
    else:
        table([{"state": k, "jobs": v} for k, v in found.items() if v], ["state", "jobs"])


@job.command("queues")
@json_option
def queues(as_json: bool) -> None:
    """Task queues and their waiting jobs."""
    found = run(lambda c: c.task_queues())
    if as_json:
        emit_json(found)
    else:
        table(found, ["id", "sites", "tags", "cpu", "memory_mb", "group", "priority", "waiting"])


@job.command("shares")
@click.option("--set", "setting", nargs=2, type=(str, float),
              help="GROUP SHARE: set a group's share within its VO (the VO's admins)")
@json_option
def shares(setting: tuple[str, float] | None, as_json: bool) -> None:
    """Fair share between groups of a VO: share and jobs at pilots (the matcher favours the VO, then the
    group, with the lowest running/share; `cairn vo shares` shows the VOs')."""
    if setting:
        run(lambda c: c.set_job_share(setting[0], setting[1]))
    found = run(lambda c: c.job_shares())
    if as_json:
        emit_json(found)
    else:
        table(found, ["group", "vo", "share", "running"])


@job.command("rebuild-counters")
@click.option("--dry-run", is_flag=True, help="report drift without fixing it")
@json_option
def rebuild_counters(dry_run: bool, as_json: bool) -> None:
    """Recount the task queues' waiting jobs and the groups' jobs at pilots, report drift and fix it
    (admins; the job watchdog mends what stays drifted on its own)."""
    report = run(lambda c: c.rebuild_job_counters(fix=not dry_run))
    rows = [{"counter": name, "vo": v["vo"] or "", "stored": v["stored"], "recounted": v["recounted"]}
            for name, v in report["drift"].items()]
    emit(report, as_json, rows, ["counter", "vo", "stored", "recounted"], title=drift_title(report, dry_run))


@click.command()
@click.option("--site", required=True, help="the site this pilot runs at")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("pilot-work"),
              show_default=True, help="where job work directories are made")
@click.option("--cpu", type=click.IntRange(1, 4096), default=1, show_default=True)
@click.option("--memory-mb", type=click.IntRange(1), default=2048, show_default=True)
@click.option("--tag", "tags", multiple=True, help="a tag this pilot offers (repeatable)")
@click.option("--max-cycles", type=click.IntRange(1), help="stop after this many match attempts (default: never)")
@click.option("--idle-exit-s", type=click.FloatRange(0), help="stop after this long without a matching job")
@click.option("--payload-user", help="run payloads as this Unix account (a pilot running as root; default: "
                                     "$CAIRN_WMS_PAYLOAD_USER, else the pilot's own account)")
def pilot(site: str, work_dir: Path, cpu: int, memory_mb: int, tags: tuple[str, ...], max_cycles: int | None,
          idle_exit_s: float | None, payload_user: str | None) -> None:
    """Run a pilot: pull jobs for SITE and run them (needs a token with scope jobs.pilot)."""
    from cairn.sdk import Client
    from kernel.errors import ConfigurationError
    from kernel.private_files import private_dir
    from kernel.process import keep_memory_private
    from wms.config import wms_settings
    from wms.payload_account import PayloadAccount
    from wms.pilot import Pilot, Resources

    keep_memory_private()  # first: its payloads run as the same Unix user and must not read its secrets
    settings = cli_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = wms_settings()
    account_name = payload_user or config.payload_user
    try:
        # Only this account may enter it: a job's inputs (files the catalogue lets only the job's
        # owner read), its outputs and its logs lie there while it runs.
        root = private_dir(work_dir).resolve()
        account = PayloadAccount.named(account_name, config.payload_dir) if account_name else None
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from exc

    async def go() -> None:
        agent = Pilot(Client(), site, root, config, Resources(cpu, memory_mb, list(tags)),
                      name=os.environ.get("CAIRN_PILOT_NAME") or None, idle_exit_s=idle_exit_s,
                      credentials=settings.storage_credentials, payload_account=account)
        agent.install_signal_handlers()
        await agent.run(max_cycles=max_cycles)

    event_loop.run(go())
