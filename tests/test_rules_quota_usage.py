"""An account's quota usage (`account_usage`) equals what its rules' locks hold: when several
calls insert or release the same locks at once (two daemons, a retry of a call that timed out),
when an insert cut short by a database outage is retried, and, after a call cut short left it
off, once an administrator rebuilt it from the locks (`rules.quota_rebuild`, through
`POST /quotas/rebuild` and `cairn quota rebuild`). Calls are cut short by a real outage: the
database behind a TCP gate that closes as soon as the database answered a given command."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue.directories import now
from kernel.db import Document
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import quota_rebuild, quotas, store
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import CommandCounter
from tests.fixtures.cli import cli_json, run_cli
from tests.fixtures.quota_locks import ALL, HALF, LFNS, SIZE, charged, held_by_locks, new_locks, quota_rule
from tests.fixtures.tcp_gate import TcpGate, cut_short

CALLS = 4
# An insert of the second ten files' locks cut short after its first charge (one write per SE, in
# SE order): SRC is charged for them, T1-A not, and neither holds their locks.
CUT = {"SRC": (20, 20 * SIZE), "T1-A": (10, 10 * SIZE)}


@pytest.fixture
async def rule(database: AsyncDatabase[Document], tmp_path: Path) -> Document:
    return await quota_rule(database, tmp_path)


async def protected(db: AsyncDatabase[Document], rule: Document) -> set[str]:
    """The files whose SRC replica names the rule in its `lock_rules`."""
    files = await db["files"].find({}, {"replicas.se": 1, "replicas.lock_rules": 1}).to_list()
    return {f["_id"] for f in files for replica in f["replicas"]
            if replica["se"] == "SRC" and rule["_id"] in replica.get("lock_rules", [])}


async def test_concurrent_releases_of_the_same_locks_give_their_bytes_back_once(
    database: AsyncDatabase[Document], rule: Document,
) -> None:
    locks = new_locks(rule)
    await rule_locks.insert_locks(database, rule, locks)
    released = await asyncio.gather(*(rule_locks.remove_locks(database, rule, [dict(lock) for lock in locks[:20]])
                                      for _ in range(CALLS)))
    assert sum(released) == 20
    assert await held_by_locks(database) == HALF
    assert await charged(database) == HALF
    assert await protected(database, rule) == set(LFNS[10:])
    counted = rule_locks.counters_of(await store.get_rule(database, rule["_id"]))
    assert counted == await rule_locks.recount(database, rule["_id"])


async def test_concurrent_inserts_of_the_same_locks_charge_them_once(
    database: AsyncDatabase[Document], rule: Document,
) -> None:
    await asyncio.gather(*(rule_locks.insert_locks(database, rule, new_locks(rule)) for _ in range(CALLS)))
    assert await held_by_locks(database) == ALL
    assert await charged(database) == ALL


async def test_an_insert_cut_short_after_writing_its_locks_then_retried_charges_them_once(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate,
) -> None:
    await cut_short(db_gate, settings.database, "insert", rule_locks.LOCKS,
                    lambda db: rule_locks.insert_locks(db, rule, new_locks(rule)))
    assert await held_by_locks(database) == ALL
    await rule_locks.insert_locks(database, rule, new_locks(rule))  # the retry
    assert await charged(database) == ALL


async def test_locks_a_release_marked_before_it_died_are_released_once_its_mark_lapsed(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate,
) -> None:
    await rule_locks.insert_locks(database, rule, new_locks(rule))
    gone = new_locks(rule)[:20]
    await cut_short(db_gate, settings.database, "update", rule_locks.LOCKS,
                    lambda db: rule_locks.remove_locks(db, rule, gone))
    assert await rule_locks.remove_locks(database, rule, gone) == 0  # its mark holds them: it may still run
    shown = await rule_locks.list_locks(database, rule["_id"])
    assert len(shown) == 40 and not any(rule_locks.RELEASING in lock for lock in shown)  # readers see no mark
    lapsed = now() - rule_locks.RELEASE_LEASE - dt.timedelta(seconds=1)  # as if the lease had passed
    await database[rule_locks.LOCKS].update_many({rule_locks.RELEASING: {"$exists": True}},
                                                 {"$set": {f"{rule_locks.RELEASING}.at": lapsed}})
    assert await rule_locks.remove_locks(database, rule, gone) == 20
    assert await held_by_locks(database) == HALF
    assert await charged(database) == HALF
    assert await protected(database, rule) == set(LFNS[10:])


async def test_the_rebuild_finds_and_fixes_a_release_cut_short_between_its_give_backs_through_the_api(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate, admin: Client,
) -> None:
    """Cut after SRC's give-back, before T1-A's and the delete: SRC is given back for locks that
    are still there (until the rule's next holder settles the note, `rules.quota_notes`)."""
    await rule_locks.insert_locks(database, rule, new_locks(rule))
    gone = new_locks(rule)[:20]
    await cut_short(db_gate, settings.database, "update", quotas.ACCOUNT_USAGE,
                    lambda db: rule_locks.remove_locks(db, rule, gone))
    assert await rule_locks.remove_locks(database, rule, gone) == 0  # its mark holds them: it may still run
    assert (await held_by_locks(database), await charged(database)) == (ALL, {**ALL, "SRC": HALF["SRC"]})

    report = await admin.rebuild_quota_usage(fix=False)
    assert (report["checked"], report["drifted"], report["fixed"]) == (2, 1, False)
    assert report["drift"]["root@SRC"] == {"account": "root", "se": "SRC", "stored": {"files": 10, "bytes": 10 * SIZE},
                                           "recounted": {"files": 20, "bytes": 20 * SIZE}}
    assert (await admin.rebuild_quota_usage())["drifted"] == 1
    assert await charged(database) == ALL
    assert (await admin.rebuild_quota_usage(fix=False))["drifted"] == 0


async def test_cairn_quota_rebuild_finds_and_fixes_an_insert_cut_short_before_writing_its_locks(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate, api: RunningApi,
) -> None:
    locks = new_locks(rule)
    await rule_locks.insert_locks(database, rule, locks[:20])
    await cut_short(db_gate, settings.database, "update", quotas.ACCOUNT_USAGE,
                    lambda db: rule_locks.insert_locks(db, rule, locks[20:]))
    assert (await held_by_locks(database), await charged(database)) == (HALF, CUT)

    report = await cli_json(api.url, api.admin_token, "quota", "rebuild", "--dry-run")
    assert isinstance(report, dict) and (report["drifted"], report["fixed"]) == (1, False)
    assert await charged(database) == CUT
    fixed = await run_cli(api.url, api.admin_token, "quota", "rebuild")
    assert fixed.returncode == 0 and "1 of 2 drifted (fixed)" in fixed.stdout, fixed.stderr
    assert await charged(database) == HALF
    report = await cli_json(api.url, api.admin_token, "quota", "rebuild", "--dry-run")
    assert isinstance(report, dict) and report["drifted"] == 0


async def test_a_charge_that_lands_while_the_rebuild_counts_is_not_set_back(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate,
) -> None:
    """The rebuild's steps in turn, with the retry of an insert cut short landing between its count
    of the locks and its writes: the account is charged for locks the count did not see."""
    locks = new_locks(rule)
    await rule_locks.insert_locks(database, rule, locks[:20])
    await cut_short(db_gate, settings.database, "update", quotas.ACCOUNT_USAGE,
                    lambda db: rule_locks.insert_locks(db, rule, locks[20:]))
    held = await quota_rebuild.stored(database)
    counted = await quota_rebuild.recount(database)
    await rule_locks.insert_locks(database, rule, locks[20:])  # the retry: charged again, locks written
    overcharged = {"SRC": (30, 30 * SIZE), "T1-A": ALL["T1-A"]}
    assert (await held_by_locks(database), await charged(database)) == (ALL, overcharged)

    report = await quota_rebuild.apply(database, held, counted, fix=True)
    assert (report["drifted"], report["moved"]) == (1, ["root@SRC"])
    assert await charged(database) == overcharged  # not set back to the count: never under the locks
    assert (await quota_rebuild.rebuild(database))["moved"] == []
    assert await charged(database) == ALL


async def test_a_release_costs_the_same_few_commands_whatever_its_size(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, mongodb_uri: str,
) -> None:
    locks = new_locks(rule)
    await rule_locks.insert_locks(database, rule, locks)
    counter = CommandCounter()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[counter], tz_aware=True)
    sent = {}
    try:
        for size, part in (("small", locks[:2]), ("large", locks[2:])):
            counter.clear()
            assert await rule_locks.remove_locks(client[settings.database], rule, part) == len(part)
            sent[size] = list(counter.commands)
    finally:
        await client.close()
    # mark, read back, the files' replicas (read, write), the usage given back with the call's
    # note (one write per SE), delete, the rule's counters, the notes taken off (one write per SE)
    assert sent["small"] == sent["large"] == ["update", "find", "find", "update", "update", "update", "delete",
                                              "update", "update", "update"]
