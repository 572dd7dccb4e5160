"""Rules end to end with real transfer workers on local disk SEs: a rule on a dataset ends ok
with every file on its SEs; content added later follows; failures are repaired; expiry frees."""

from __future__ import annotations

from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import rule_locks, rules
from catalogue.rules import RuleIn
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import (
    dataset_on_src,
    replicas_by_file,
    rule_daemons,
    rule_settings,
    rule_state,
    run_until,
    tiered_ses,
)


async def test_two_copies_on_tier1_of_a_dataset_end_ok_and_new_content_follows(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tier1 = await tiered_ses(database, tmp_path)
    lfns = [f"/vo/ds/f{i:03d}" for i in range(50)]
    await dataset_on_src(database, "vo:ds", lfns)
    rule = await rules.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=2, expression="tier=1"))
    fast = rule_settings(settings)

    async def ok() -> bool:
        return await rule_state(database, rule["_id"]) == "ok"

    await run_until(ok, rule_daemons(fast, database))
    placed = await replicas_by_file(database, lfns)
    chosen = placed[lfns[0]] - {"SRC"}
    assert len(chosen) == 2 and chosen <= set(tier1)
    assert all(ses - {"SRC"} == chosen for ses in placed.values())
    done = await rules.get_rule(database, rule["_id"])
    assert (done["locks_ok"], done["locks_replicating"], done["locks_stuck"]) == (100, 0, 0)
    locked = await database["files"].find({"_id": {"$in": lfns}}, {"replicas": 1}).to_list()
    assert all(r.get("locks") == 1 for d in locked for r in d["replicas"] if r["se"] in chosen)

    more = [f"/vo/ds/g{i:02d}" for i in range(10)]
    await dataset_on_src(database, "vo:ds", more)
    assert (await rules.get_rule(database, rule["_id"]))["dirty"] is True

    async def all_placed() -> bool:
        current = await rules.get_rule(database, rule["_id"])
        return current["state"] == "ok" and not current["dirty"] and current["locks_ok"] == 120

    await run_until(all_placed, rule_daemons(fast, database))
    assert all(ses - {"SRC"} == chosen for ses in (await replicas_by_file(database, more)).values())
    assert await database[rule_locks.LOCKS].count_documents({"rule": rule["_id"], "state": "ok"}) == 120
