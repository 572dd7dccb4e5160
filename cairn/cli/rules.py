"""`cairn rule ...`, `cairn quota ...` and `cairn se resolve`: replication rules from the command line."""

from __future__ import annotations

from typing import Any

import click

from cairn.cli.output import drift_title, emit, emit_json, json_option, table
from cairn.cli.runner import run

RULE_COLUMNS = ["id", "did", "account", "copies", "expression", "grouping", "state", "locks", "expires_at", "error"]
QUOTA_COLUMNS = ["account", "se", "quota_bytes", "used_bytes", "used_files"]


@click.group()
def rule() -> None:
    """Replication rules: N copies of a DID on the SEs of an expression."""


@rule.command("add")
@click.argument("did")
@click.option("--copies", type=click.IntRange(1, 100), required=True)
@click.option("--expression", "-e", required=True, help="RSE expression, e.g. 'tier=1&kind=disk'")
@click.option("--grouping", type=click.Choice(["ALL", "DATASET", "NONE"]), default="DATASET", show_default=True)
@click.option("--lifetime", "lifetime_s", type=click.IntRange(1), help="seconds until the rule expires")
@click.option("--weight", help="SE attribute preferred by its value")
@click.option("--activity", default="default", show_default=True)
@click.option("--source-expression", help="copy only from replicas on these SEs")
@click.option("--locked", is_flag=True, help="cannot be deleted (nor expire) until unlocked")
@click.option("--comment", default="")
@click.option("--account", help="owning account (admins)")
@click.option("--request-id", help="a key naming this call (8-128 of A-Z a-z 0-9 _ . : -): run again with the "
                                   "same key, it answers the rule the first run made instead of making a second")
@json_option
def rule_add(did: str, copies: int, expression: str, grouping: str, lifetime_s: int | None, weight: str | None,
             activity: str, source_expression: str | None, locked: bool, comment: str, account: str | None,
             request_id: str | None, as_json: bool) -> None:
    """Create a rule on a dataset, container (scope:name) or file (LFN)."""
    created = run(lambda c: c.add_rule(did, copies, expression, grouping=grouping, lifetime_s=lifetime_s,
                                       weight=weight, activity=activity, source_expression=source_expression,
                                       locked=locked, comment=comment, account=account, request_id=request_id))
    emit_json(created) if as_json else click.echo(f"rule {created['id']} created on {did}")


@rule.command("list")
@click.option("--account")
@click.option("--did")
@click.option("--state", type=click.Choice(["replicating", "ok", "stuck", "suspended"]))
@json_option
def rule_list(account: str | None, did: str | None, state: str | None, as_json: bool) -> None:
    """List rules, newest first."""
    found = run(lambda c: c.list_rules(account=account, did=did, state=state))
    emit_json(found) if as_json else table(found, RULE_COLUMNS)


@rule.command("show")
@click.argument("rule_id")
@click.option("--locks", "with_locks", is_flag=True, help="also list the first 1000 locks")
@json_option
def rule_show(rule_id: str, with_locks: bool, as_json: bool) -> None:
    """Show a rule (and its locks)."""

    async def fetch(client: Any) -> dict[str, Any]:
        found: dict[str, Any] = await client.get_rule(rule_id)
        if with_locks:
            found["lock_list"] = await client.rule_locks(rule_id)
        return found

    found = run(fetch)
    if as_json:
        emit_json(found)
        return
    table([found], RULE_COLUMNS)
    if with_locks:
        table(found["lock_list"], ["lfn", "se", "state", "error"], title="locks")


@rule.command("update")
@click.argument("rule_id")
@click.option("--copies", type=click.IntRange(1, 100))
@click.option("--lifetime", "lifetime_s", type=click.IntRange(0), help="seconds from now; 0 removes the expiry")
@click.option("--locked/--unlocked", default=None)
@click.option("--comment")
@click.option("--activity")
@click.option("--resume", is_flag=True, help="resume a stuck or suspended rule")
@json_option
def rule_update(rule_id: str, copies: int | None, lifetime_s: int | None, locked: bool | None, comment: str | None,
                activity: str | None, resume: bool, as_json: bool) -> None:
    """Change a rule."""
    changed = run(lambda c: c.update_rule(rule_id, copies=copies, lifetime_s=lifetime_s, locked=locked,
                                          comment=comment, activity=activity,
                                          state="replicating" if resume else None))
    emit_json(changed) if as_json else table([changed], RULE_COLUMNS)


@rule.command("delete")
@click.argument("rule_id")
@json_option
def rule_delete(rule_id: str, as_json: bool) -> None:
    """Delete a rule: it expires now and the cleaner releases its locks."""
    deleted = run(lambda c: c.delete_rule(rule_id))
    emit_json(deleted) if as_json else click.echo(f"rule {rule_id} deleted (its locks are released shortly)")


@click.group()
def quota() -> None:
    """Bytes an account's rules may lock per SE."""


@quota.command("list")
@click.option("--account")
@json_option
def quota_list(account: str | None, as_json: bool) -> None:
    """Quotas and usage (non-admins: their own)."""
    rows = run(lambda c: c.quotas(account))
    emit_json(rows) if as_json else table(rows, QUOTA_COLUMNS)


@quota.command("set")
@click.argument("account")
@click.argument("se")
@click.argument("nbytes", type=click.IntRange(0))
@json_option
def quota_set(account: str, se: str, nbytes: int, as_json: bool) -> None:
    """Set ACCOUNT's quota on SE to NBYTES (admins)."""
    saved = run(lambda c: c.set_quota(account, se, nbytes))
    emit_json(saved) if as_json else click.echo(f"quota of {account} on {se}: {nbytes} bytes")


@quota.command("delete")
@click.argument("account")
@click.argument("se")
def quota_delete(account: str, se: str) -> None:
    """Remove ACCOUNT's quota on SE (admins)."""
    run(lambda c: c.delete_quota(account, se))
    click.echo(f"quota of {account} on {se} removed")


@quota.command("rebuild")
@click.option("--dry-run", is_flag=True, help="report drift without fixing it")
@json_option
def quota_rebuild(dry_run: bool, as_json: bool) -> None:
    """Recount quota usage from the rule locks, report drift and fix it (admins)."""
    report = run(lambda c: c.rebuild_quota_usage(fix=not dry_run))
    rows = [{"account": v["account"], "se": v["se"], "stored": v["stored"], "recounted": v["recounted"]}
            for v in report["drift"].values()]
    emit(report, as_json, rows, ["account", "se", "stored", "recounted"], title=drift_title(report, dry_run))


@click.command("resolve")
@click.argument("expression")
@json_option
def se_resolve(expression: str, as_json: bool) -> None:
    """The SEs an RSE expression means now."""
    names = run(lambda c: c.resolve_expression(expression))
    if as_json:
        emit_json(names)
    else:
        for name in names:
            click.echo(name)


@click.group()
def subscription() -> None:
    """Subscriptions: new datasets matching a filter get a rule automatically."""


@subscription.command("add")
@click.argument("name")
@click.option("--copies", type=click.IntRange(1, 100), required=True)
@click.option("--expression", "-e", required=True)
@click.option("--grouping", type=click.Choice(["ALL", "DATASET", "NONE"]), default="DATASET", show_default=True)
@click.option("--lifetime", "lifetime_s", type=click.IntRange(1))
@click.option("--scope", "scopes", multiple=True, help="match datasets of this scope (repeatable)")
@click.option("--name-pattern", help="regular expression searched in the dataset name")
@click.option("--owner", "owners", multiple=True, help="match datasets of this owner (repeatable)")
@click.option("--account", help="owner of the rules (admins)")
@json_option
def subscription_add(name: str, copies: int, expression: str, grouping: str, lifetime_s: int | None,
                     scopes: tuple[str, ...], name_pattern: str | None, owners: tuple[str, ...],
                     account: str | None, as_json: bool) -> None:
    """Add a subscription."""
    rule_template = {"copies": copies, "expression": expression, "grouping": grouping, "lifetime_s": lifetime_s}
    filters = {"scopes": list(scopes), "name_pattern": name_pattern, "owners": list(owners)}
    saved = run(lambda c: c.add_subscription(name, {k: v for k, v in rule_template.items() if v is not None},
                                             filter={k: v for k, v in filters.items() if v}, account=account))
    emit_json(saved) if as_json else click.echo(f"subscription {name} added")


@subscription.command("list")
@json_option
def subscription_list(as_json: bool) -> None:
    """List subscriptions."""
    found = run(lambda c: c.list_subscriptions())
    emit_json(found) if as_json else table(found, ["name", "account", "filter", "rule", "rules_created"])


@subscription.command("show")
@click.argument("name")
@json_option
def subscription_show(name: str, as_json: bool) -> None:
    """Show a subscription (with the rules it could not create)."""
    found = run(lambda c: c.get_subscription(name))
    emit_json(found) if as_json else table([found], ["name", "account", "filter", "rule", "rules_created", "errors"])


@subscription.command("delete")
@click.argument("name")
def subscription_delete(name: str) -> None:
    """Remove a subscription (its rules stay)."""
    run(lambda c: c.delete_subscription(name))
    click.echo(f"subscription {name} deleted")
