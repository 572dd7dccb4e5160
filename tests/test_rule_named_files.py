"""A file that a replication rule names (its DID is the file's LFN) keeps its LFN until the rule is
gone, also before any of the rule's locks is ok: the rule's transfers and locks are keyed by that
LFN, and a move left them at an LFN no file has (the transfers failed "no such file", the rule
went stuck). The rule names its file on the file's record (`catalogue.file_rules`), after it is
stored, and looks for a move under way after; the move marks first and reads the names after."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.file_rules import NAMED_BY
from catalogue.moves import move
from catalogue.namespace import mkdir
from kernel.db import Document
from kernel.errors import Conflict, NotFound
from rules import store
from rules.cleaner import RuleCleaner
from rules.evaluator import RuleEvaluator
from rules.rule_models import RuleIn
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.cli import cli_json, run_cli
from tests.fixtures.rules import rule_settings, run_until
from tests.fixtures.transfers import add_ses, disk_se, put_files

RACES = 30


async def test_a_file_a_rule_names_is_not_moved_until_the_rule_is_gone(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    src, dst = disk_se("NAMED-SRC", tmp_path / "src"), disk_se("NAMED-DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/named/f", "/vo/named/g"])
    await mkdir(database, ADMIN, "/vo/away")
    rule = await cli_json(api.url, api.admin_token, "rule", "add", "/vo/named/f", "--copies", "1", "-e", "NAMED-DST")
    assert isinstance(rule, dict)
    # No daemon ran: the rule's lock is not even made, let alone ok; the move is refused all the same.
    for source in ("/vo/named/f", "/vo/named"):
        refused = await run_cli(api.url, api.admin_token, "mv", source, "/vo/away/x")
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and f"is the DID of replication rule {rule['id']}" in said, said
    assert await database["files"].find_one({"_id": "/vo/away/x"}) is None
    await run_cli(api.url, api.admin_token, "mv", "/vo/named/g", "/vo/away/g")  # a file no rule names moves

    deleted = await run_cli(api.url, api.admin_token, "rule", "delete", rule["id"])
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr

    async def gone() -> bool:
        return await database["rules"].find_one({"_id": rule["id"]}) is None

    await run_until(gone, [RuleCleaner(rule_settings(api.settings), database)], timeout_s=30)
    record = await database["files"].find_one({"_id": "/vo/named/f"})
    assert record is not None and not record.get(NAMED_BY)
    moved = await run_cli(api.url, api.admin_token, "mv", "/vo/named", "/vo/away/named")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert await database["files"].find_one({"_id": "/vo/away/named/f"}) is not None


async def test_a_rule_made_while_its_file_moves_is_withdrawn_or_the_move_refused(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """Bounded: RACES rule/move pairs started together in varied orders."""
    src = disk_se("RACE-SRC", tmp_path / "src")
    await add_ses(database, src, disk_se("RACE-DST", tmp_path / "dst"))
    files = [f"/vo/rr/f{i}" for i in range(RACES)]
    await put_files(database, [src], files, size=16)
    await mkdir(database, ADMIN, "/vo/rm")
    pick = random.Random(5)

    async def make(lfn: str, delay: float) -> str | None:
        await asyncio.sleep(delay)
        try:
            made = await store.create_rule(database, ADMIN, RuleIn(did=lfn, copies=1, expression="RACE-DST"))
            return str(made["_id"])
        except (Conflict, NotFound):  # the move was over before the rule looked: no such file there
            return None

    async def moved(lfn: str, delay: float) -> bool:
        await asyncio.sleep(delay)
        try:
            await move(database, ADMIN, lfn, lfn.replace("/vo/rr/", "/vo/rm/"))
        except Conflict:
            return False
        return True

    delays = (0, 0.001, 0.003)
    outcomes = [await asyncio.gather(make(lfn, pick.choice(delays)), moved(lfn, pick.choice(delays))) for lfn in files]
    for lfn, (rule_id, was_moved) in zip(files, outcomes, strict=True):
        assert not (rule_id and was_moved), lfn  # never a live rule on an LFN its file left
        live = [r async for r in database["rules"].find({"did": lfn, "expires_at": None})]
        assert [r["_id"] for r in live] == ([rule_id] if rule_id else []), lfn
    assert any(r for r, _ in outcomes) and any(m for _, m in outcomes)  # both sides won some races


async def test_a_rule_whose_making_was_cut_short_names_its_file_at_its_first_evaluation(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """A making killed between storing the rule and naming its file left the file movable under
    the rule for good; the evaluator names it. One on a file being removed is withdrawn instead."""
    src, dst = disk_se("CUT-SRC", tmp_path / "src"), disk_se("CUT-DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/cut/f", "/vo/cut/g"])
    await mkdir(database, ADMIN, "/vo/cutaway")
    made = {lfn: await store.create_rule(database, ADMIN, RuleIn(did=lfn, copies=1, expression="CUT-DST"))
            for lfn in ("/vo/cut/f", "/vo/cut/g")}
    for lfn, rule in made.items():  # the cut: the rules stored, their names never written
        await database["files"].update_one({"_id": lfn}, {"$pull": {NAMED_BY: rule["_id"]}})
    # g is being removed (a live removal mark) when the evaluator first looks
    await database["files"].update_one({"_id": "/vo/cut/g"},
                                       {"$set": {"removing": {"token": "cut", "at": dt.datetime.now(dt.UTC)}}})

    async def looked_at() -> bool:
        f = await database["files"].find_one({"_id": "/vo/cut/f"})
        g_rule = await database["rules"].find_one({"_id": made["/vo/cut/g"]["_id"]})
        return bool(f and made["/vo/cut/f"]["_id"] in f.get(NAMED_BY, [])) and \
            (g_rule is None or g_rule.get("expires_at") is not None)

    await run_until(looked_at, [RuleEvaluator(rule_settings(api.settings), database)], timeout_s=30)
    refused = await run_cli(api.url, api.admin_token, "mv", "/vo/cut/f", "/vo/cutaway/f")
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and f"is the DID of replication rule {made['/vo/cut/f']['_id']}" in said, said
    g = await database["files"].find_one({"_id": "/vo/cut/g"})
    assert g is not None and not g.get(NAMED_BY)  # withdrawn, not naming the file it gave up
