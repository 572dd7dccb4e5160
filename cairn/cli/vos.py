"""`cairn vo add|list|show|members|update|shares|se|delete|migrate`: the VOs one installation serves."""

from __future__ import annotations

from typing import Any

import click

from cairn.cli.output import emit, emit_json, json_option, table
from cairn.cli.runner import run, run_and_say
from cairn.cli.ses import switch_changes, switch_options
from kernel.principal import DEFAULT_VO

SHARE = click.FloatRange(0, 1e6, min_open=True)
VO_COLUMNS = ["name", "roots", "scopes", "ses", "sites", "admins", "fair_share", "transfer_share"]


def _row(vo: dict[str, Any]) -> dict[str, Any]:
    ses = [f"{name}:{se['path']}" + (f" ({se['quota_bytes']} B)" if se.get("quota_bytes") is not None else "")
           + "".join(f" no-{op}" for op in ("read", "write", "delete") if not se.get(f"{op}_enabled", True))
           for name, se in vo.get("ses", {}).items()]
    return {**vo, "ses": ses}


def _se_option(value: str) -> tuple[str, dict[str, Any]]:
    """`NAME[:PATH[:QUOTA_BYTES]]` -> (NAME, {path, quota_bytes})."""
    name, _, rest = value.partition(":")
    path, _, quota = rest.partition(":")
    try:
        return name, {"path": path or "/", "quota_bytes": int(quota) if quota else None}
    except ValueError as exc:
        raise click.BadParameter(f"quota of {value!r} must be a number of bytes") from exc


@click.group()
def vo() -> None:
    """VOs: collaborations sharing this installation, each isolated from the others."""


@vo.command("add")
@click.argument("name")
@click.option("--root", "roots", multiple=True, required=True, help="namespace root, e.g. /cta (repeatable)")
@click.option("--scope", "scopes", multiple=True, help="DID scope of the VO (repeatable)")
@click.option("--se", "ses", multiple=True, help="SE the VO may use: NAME[:PATH[:QUOTA_BYTES]] (repeatable)")
@click.option("--site", "sites", multiple=True, help="site of the VO (repeatable)")
@click.option("--admin", "admins", multiple=True, help="user who administers the VO (repeatable)")
@click.option("--share", type=click.FloatRange(0, 1e6, min_open=True), default=1.0, show_default=True,
              help="the VO's share of the pilots against other VOs")
@click.option("--transfer-share", type=SHARE, default=1.0, show_default=True,
              help="the VO's share of the transfer queue against other VOs")
@json_option
def vo_add(name: str, roots: tuple[str, ...], scopes: tuple[str, ...], ses: tuple[str, ...],
           sites: tuple[str, ...], admins: tuple[str, ...], share: float, transfer_share: float,
           as_json: bool) -> None:
    """Create or replace a VO (global admins); its missing root directories are made."""
    body = {"name": name, "roots": list(roots), "scopes": list(scopes), "ses": dict(_se_option(s) for s in ses),
            "sites": list(sites), "admins": list(admins), "fair_share": share, "transfer_share": transfer_share}
    saved = run(lambda c: c.put_vo(body))
    emit_json(saved) if as_json else click.echo(f"VO {saved['name']} saved (roots {', '.join(saved['roots'])})")


@vo.command("list")
@json_option
def vo_list(as_json: bool) -> None:
    """The VOs you may see (yours; every VO for a global admin)."""
    found = run(lambda c: c.list_vos())
    emit(found, as_json, [_row(v) for v in found], VO_COLUMNS)


@vo.command("show")
@click.argument("name")
@json_option
def vo_show(name: str, as_json: bool) -> None:
    """One VO."""
    found = run(lambda c: c.get_vo(name))
    emit(found, as_json, [_row(found)], VO_COLUMNS)


@vo.command("members")
@click.argument("name")
@click.option("--add", "add", multiple=True, help="user to add (repeatable)")
@click.option("--remove", "remove", multiple=True, help="user to remove (repeatable)")
@click.option("--admins", is_flag=True, help="change the VO's admins instead of its members")
@json_option
def vo_members(name: str, add: tuple[str, ...], remove: tuple[str, ...], admins: bool, as_json: bool) -> None:
    """Show a VO's members and admins; with --add/--remove, change them (the VO's admins)."""
    if add or remove:
        found = run(lambda c: c.change_vo_members(name, add=add, remove=remove, admins=admins))
    else:
        found = run(lambda c: c.vo_members(name))
    emit(found, as_json, [{"user": u, "role": "admin"} for u in found["admins"]]
         + [{"user": u, "role": "member"} for u in found["members"]], ["user", "role"], title=f"VO {name}")


@vo.command("update")
@click.argument("name")
@click.option("--share", type=SHARE, help="the VO's share of the pilots against other VOs")
@click.option("--transfer-share", type=SHARE, help="the VO's share of the transfer queue against other VOs")
@json_option
def vo_update(name: str, share: float | None, transfer_share: float | None, as_json: bool) -> None:
    """Change a VO's fair share of the pilots and/or of the transfer queue (global admins); the
    rest of the VO stays as it is."""
    if share is None and transfer_share is None:
        raise click.UsageError("nothing to change: give --share and/or --transfer-share")
    saved: dict[str, Any] = {"vo": name}
    if share is not None:
        saved["share"] = run(lambda c: c.set_vo_share(name, share))["share"]
    if transfer_share is not None:
        saved["transfer_share"] = run(lambda c: c.set_vo_transfer_share(name, transfer_share))["share"]
    changed = ", ".join(f"{key.replace('_', ' ')} {saved[key]}" for key in ("share", "transfer_share") if key in saved)
    emit_json(saved) if as_json else click.echo(f"VO {name}: {changed}")


@vo.command("shares")
@json_option
def vo_shares(as_json: bool) -> None:
    """Fair share between VOs: each VO's share and jobs at pilots (yours only, unless global admin)."""
    found = run(lambda c: c.vo_shares())
    emit_json(found) if as_json else table(found, ["vo", "share", "running"])


@vo.command("se")
@click.argument("name")
@click.argument("se")
@switch_options
@json_option
def vo_se(name: str, se: str, read: bool | None, write: bool | None, delete: bool | None, as_json: bool) -> None:
    """Switch reads/writes/deletes of VO NAME's files on its SE (the VO's admins); the SE's own
    switches (`cairn se set`, global admins) are unchanged."""
    changes = switch_changes(read, write, delete)
    if not changes:
        raise click.UsageError("nothing to change: give --read/--no-read, --write/--no-write or --delete/--no-delete")
    found = run(lambda c: c.switch_vo_se(name, se, **changes))
    emit(found, as_json, [_row(found)], VO_COLUMNS)


@vo.command("delete")
@click.argument("name")
def vo_delete(name: str) -> None:
    """Delete a VO with no files, directories or datasets left, nor open jobs, rules, requests,
    subscriptions or transformations (global admins)."""
    run_and_say(lambda c: c.delete_vo(name), f"VO {name} deleted")


@vo.command("migrate")
@click.option("--to", "target", default=DEFAULT_VO, show_default=True, help="the VO to give them to")
@json_option
def vo_migrate(target: str, as_json: bool) -> None:
    """Give every rule, subscription, request, job, transformation and production stored
    without a VO to VO --to (global admins); running it again changes nothing."""
    found = run(lambda c: c.migrate_to_vo(target))
    emit(found, as_json, [{"collection": k, "adopted": v} for k, v in found["adopted"].items()],
         ["collection", "adopted"], title=f"given to VO {found['vo']}")
