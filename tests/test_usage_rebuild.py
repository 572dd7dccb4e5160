"""`cairn usage rebuild` on a live catalogue: the rebuild reads the counters before it counts the
files, and sets a counter only where it did not move meanwhile, so a registration that lands while
it counts is never set back out of the usage (it is reported `moved`, and the next run mends it).
The drift to mend is made by a real outage: a register call cut short after writing its records
(`tests.fixtures.tcp_gate.cut_short`), which never counted them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage
from catalogue.collection_names import FILES
from catalogue.files import register_files, remove_files
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.tcp_gate import TcpGate, cut_short
from tests.fixtures.transfers import add_ses, disk_se

SIZE = 1000


def files(directory: str, count: int) -> list[dict[str, Any]]:
    return [{"lfn": f"{directory}/f{i}", "size": SIZE, "adler32": "00000001", "replicas": [{"se": "D1"}]}
            for i in range(count)]


async def counted(db: AsyncDatabase[Document], key: str) -> int:
    record = await db[usage.USAGE].find_one({"_id": key}) or {}
    return int(record.get("replicas" if key.startswith("se:") else "files", 0))


async def test_a_registration_that_lands_while_the_rebuild_counts_is_not_set_back(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, tmp_path: Path,
) -> None:
    await add_ses(database, disk_se("D1", tmp_path / "d1"))
    assert not (await register_files(database, ADMIN, files("/vo/a", 3)))["failed"]
    await cut_short(db_gate, settings.database, "insert", FILES,
                    lambda db: register_files(db, ADMIN, files("/vo/c", 4)))
    assert [await counted(database, key) for key in ("dir:/", "dir:/vo/c", "se:D1")] == [3, 0, 3]

    held = await usage.stored_usage(database)
    truth, calls = await usage.recount(database)
    assert (truth["dir:/"]["files"], len(calls)) == (7, 2)
    # Another user's registration lands between the rebuild's count and its writes.
    assert not (await register_files(database, ADMIN, files("/vo/b", 5)))["failed"]
    report = await usage.apply_recount(database, held, truth, calls, fix=True)
    assert report["drifted"] == 4 and sorted(report["moved"]) == ["dir:/", "dir:/vo", "se:D1"]
    # /vo/c, which nothing else touched, is set; the moved counters keep the registration's five.
    assert [await counted(database, key) for key in ("dir:/", "dir:/vo", "dir:/vo/b", "dir:/vo/c", "se:D1")] \
        == [8, 8, 5, 4, 8]

    again = await usage.rebuild(database)
    assert (again["drifted"], again["moved"]) == (3, [])
    assert [await counted(database, key) for key in ("dir:/", "dir:/vo", "se:D1")] == [12, 12, 12]
    assert (await usage.rebuild(database, fix=False))["drifted"] == 0
    # The cut call was claimed by the rebuild that counted its records: their removal takes them
    # off once (a removal that met an unclaimed call would count its records first).
    removed = await remove_files(database, ADMIN, [f["lfn"] for f in files("/vo/c", 4)], force=True)
    assert len(removed["successful"]) == 4
    assert [await counted(database, key) for key in ("dir:/", "dir:/vo/c", "se:D1")] == [8, 0, 8]
    assert (await usage.rebuild(database, fix=False))["drifted"] == 0


async def test_a_call_cut_short_after_the_count_is_left_for_its_retry_to_count(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, tmp_path: Path,
) -> None:
    await add_ses(database, disk_se("D1", tmp_path / "d1"))
    assert not (await register_files(database, ADMIN, files("/vo/a", 3)))["failed"]
    held = await usage.stored_usage(database)
    truth, calls = await usage.recount(database)
    # A register call cut short after its records, which the count did not read.
    await cut_short(db_gate, settings.database, "insert", FILES,
                    lambda db: register_files(db, ADMIN, files("/vo/c", 4)))
    report = await usage.apply_recount(database, held, truth, calls, fix=True)
    assert (report["drifted"], report["moved"]) == (0, [])
    # The rebuild claimed only the calls it counted: the retry takes the cut call over and counts it.
    assert not (await register_files(database, ADMIN, files("/vo/c", 4)))["failed"]
    assert [await counted(database, key) for key in ("dir:/", "dir:/vo/c", "se:D1")] == [7, 4, 7]
    assert (await usage.rebuild(database, fix=False))["drifted"] == 0
