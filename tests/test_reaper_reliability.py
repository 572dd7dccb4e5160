"""The reaper's batched deletions against SIGKILL: reaper processes killed through the work while
they delete leave, once restarted ones finish, every request done, every replica and its
bytes gone, and the SE's usage exact (nothing counted twice, nothing lost); and the usage step
taken twice with the same removal tokens counts once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.usage import count_removals, forget_removals, rebuild, removal_fences, se_usage, uncount_removals
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.daemons import DaemonProcesses, daemon_env, drain_while_killing
from tests.fixtures.transfers import add_ses, disk_se, open_requests, put_files, se_root
from transfers import queueing
from transfers import requests as rq

pytestmark = pytest.mark.slow

# Batches of 20: 400 deletions take many batches, so kills land in the middle of some.
FAST = {"lease_s": 4, "retry_base_s": 0.2, "retry_cap_s": 2, "idle_sleep_s": 0.2, "reaper_batch": 20}
DELETIONS = 400


def _usage_of(rows: list[dict[str, int | str]], se: str) -> tuple[int, int]:
    row = next((r for r in rows if r["se"] == se), {"replicas": 0, "bytes": 0})
    return int(row["replicas"]), int(row["bytes"])


async def test_deletions_survive_reapers_killed_every_few_seconds(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    keep, gone = disk_se("KEEP", tmp_path / "keep"), disk_se("GONE", tmp_path / "gone")
    await add_ses(database, keep, gone)
    lfns = [f"/vo/reap/f{i:03d}" for i in range(DELETIONS)]
    await put_files(database, [keep, gone], lfns, size=1000)
    await queueing.submit(database, "delete", [{"lfn": lfn, "dest_se": "GONE"} for lfn in lfns], requester="t")
    (tmp_path / "logs").mkdir()
    reapers = DaemonProcesses("reaper", daemon_env(settings, **FAST), tmp_path / "logs")
    try:
        for _ in range(2):
            reapers.start()
        await drain_while_killing(reapers, lambda: open_requests(database), kills=3, seed=17, timeout_s=300,
                                  max_kills=20)
    finally:
        reapers.stop_all()
    assert reapers.killed >= 3, "the reapers finished before enough of them were killed to mean anything"
    requests = await database[rq.REQUESTS].find({}).to_list()
    assert {r["state"] for r in requests} == {"done"}
    files = await database["files"].find({"_id": {"$in": lfns}}, {"replicas": 1}).to_list()
    assert all([r["se"] for r in f["replicas"]] == ["KEEP"] for f in files) and len(files) == DELETIONS
    assert not any((se_root(gone) / lfn.lstrip("/")).exists() for lfn in lfns)
    usage = await se_usage(database)
    assert _usage_of(usage, "GONE") == (0, 0) and _usage_of(usage, "KEEP") == (DELETIONS, DELETIONS * 1000)
    report = await rebuild(database, fix=False)
    assert report["drifted"] == 0, report["drift"]


async def test_counting_removals_again_with_the_same_tokens_counts_nothing(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    se = disk_se("SE", tmp_path / "se")
    await add_ses(database, se)
    await put_files(database, [se], [f"/vo/tok/f{i}" for i in range(4)], size=100)
    fences = await removal_fences(database, ["SE"])
    assert await count_removals(database, {"SE": {"t1": 100, "t2": 100}}, fences)
    assert await count_removals(database, {"SE": {"t1": 100, "t2": 100, "t3": 100}}, fences)  # a successor: t3 is new
    assert await count_removals(database, {"SE": {"t3": 100}}, fences)
    assert _usage_of(await se_usage(database), "SE") == (1, 100)


async def test_a_count_read_before_a_token_left_is_refused(database: AsyncDatabase[Document], tmp_path: Path) -> None:
    """A removal complete (its token forgotten) or given back moves the SE's fence: a count whose
    tokens were read before that counts nothing, even of tokens not recorded now."""
    se = disk_se("SE", tmp_path / "se")
    await add_ses(database, se)
    await put_files(database, [se], [f"/vo/fence/f{i}" for i in range(4)], size=100)
    stale = await removal_fences(database, ["SE"])
    assert stale == {"SE": None}
    assert await count_removals(database, {"SE": {"t1": 100}}, stale)
    await forget_removals(database, {"SE": ["t1"]})  # its replica gone
    assert not await count_removals(database, {"SE": {"t1": 100, "t2": 100}}, stale)
    assert _usage_of(await se_usage(database), "SE") == (3, 300)
    fresh = await removal_fences(database, ["SE"])
    assert fresh == {"SE": 1}
    assert await count_removals(database, {"SE": {"t2": 100}}, fresh)
    await uncount_removals(database, {"SE": {"t2": 100}})  # its replica kept after all
    assert _usage_of(await se_usage(database), "SE") == (3, 300)
    assert not await count_removals(database, {"SE": {"t2": 100}}, fresh)
    assert _usage_of(await se_usage(database), "SE") == (3, 300)
    # No replica was removed: a rebuild puts the counters back, and its record's tokens go with
    # the old record, so its fence moves too (and is no counter of its own).
    before_rebuild = await removal_fences(database, ["SE"])
    assert (await rebuild(database))["drifted"] == 1
    assert _usage_of(await se_usage(database), "SE") == (4, 400)
    assert (await rebuild(database, fix=False))["drifted"] == 0
    assert not await count_removals(database, {"SE": {"t3": 100}}, before_rebuild)
    assert _usage_of(await se_usage(database), "SE") == (4, 400)
