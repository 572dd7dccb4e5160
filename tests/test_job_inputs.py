"""Dataset and query inputs: resolved to LFNs at submission, run where the data is; refusals queue nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.dataset_contents import attach_children, attach_files
from catalogue.datasets import DidIn, create_did
from catalogue.directories import directory_document, insert_directories, now
from catalogue.moves import move
from kernel.db import Document
from kernel.errors import Forbidden, InvalidInput, NotFound
from kernel.principal import Principal
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.grid import Grid, PilotProcess, check_all, start_pilot, wait_for
from wms import input_selection
from wms.config import WmsSettings

USER_SCOPES = ("jobs.read", "jobs.write")
ALICE = Principal(sub="alice", vo="cta", groups=("cta",))


async def dataset(db: AsyncDatabase[Document], did: str, lfns: list[str], kind: str = "dataset") -> None:
    await create_did(db, ALICE, DidIn(did=did, type=kind))  # type: ignore[arg-type]
    if lfns:
        await attach_files(db, ALICE, did, lfns)


async def mc_files(grid: Grid) -> None:
    """/cta/mc holds runs 10, 12, 15 of protons and run 13 of gammas, all at SITE-C; /cta/other a
    proton run 20 that a query scoped to /cta/mc must not find."""
    await insert_directories(grid.db, [directory_document("/cta/mc", ALICE, mode=0o755, at=now())])
    for run, particle in ((10, "proton"), (12, "proton"), (13, "gamma"), (15, "proton")):
        await grid.add_file(f"/cta/mc/run{run}.dat", f"{particle} {run}\n".encode(), ["SITE-C-DISK"],
                            meta={"run": run, "particle": particle})
    await grid.add_file("/cta/other/run20.dat", b"proton 20\n", ["SITE-A-DISK"], meta={"run": 20, "particle": "proton"})


def concatenating(**inputs: object) -> dict[str, object]:
    return {"executable": "/bin/sh", "arguments": ["-c", "cat *.dat > result.txt"],
            "outputs": [{"path": "result.txt", "lfn": "/cta/out/result.txt", "se": "SITE-A-DISK"}], **inputs}


async def submit(api: RunningApi, *descriptions: dict[str, object]) -> tuple[list[str], list[Document]]:
    async with api.client(api.token(sub="alice", scopes=USER_SCOPES)) as alice:
        ids = await alice.submit_jobs(list(descriptions))
        return ids, [await alice.get_job(i) for i in ids]


async def job_count(db: AsyncDatabase[Document]) -> int:
    return await db["jobs"].count_documents({})


async def test_a_dataset_input_runs_on_the_dataset_files_at_their_site(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    await grid.add_file("/cta/calib/a.dat", b"first\n", ["SITE-B-DISK"])
    await grid.add_file("/cta/calib/b.dat", b"second\n", ["SITE-B-DISK"])
    await dataset(grid.db, "cta:calib", ["/cta/calib/b.dat", "/cta/calib/a.dat"])
    ids, [job] = await submit(api, concatenating(input_dataset="cta:calib"))
    assert job["description"]["input_data"] == ["/cta/calib/a.dat", "/cta/calib/b.dat"]
    assert job["description"]["input_dataset"] == "cta:calib"
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-B", tmp_path, wms_config, pilots)
    [done] = await wait_for(grid.db, ids, {"done", "failed"}, pilots=pilots)
    assert (done["state"], done["site"]) == ("done", "SITE-B")
    assert await grid.replica_bytes("/cta/out/result.txt", "SITE-A-DISK") == b"first\nsecond\n"


async def test_a_query_input_runs_on_the_files_it_finds_within_its_path(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    await mc_files(grid)
    ids, [job] = await submit(api, concatenating(input_query="run>=12 particle=proton", input_path="/cta/mc"))
    assert job["description"]["input_data"] == ["/cta/mc/run12.dat", "/cta/mc/run15.dat"]
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-C", tmp_path, wms_config, pilots)
    [done] = await wait_for(grid.db, ids, {"done", "failed"}, pilots=pilots)
    assert (done["state"], done["site"]) == ("done", "SITE-C")
    assert await grid.replica_bytes("/cta/out/result.txt", "SITE-A-DISK") == b"proton 12\nproton 15\n"


async def test_a_container_input_is_every_file_below_it_once(api: RunningApi, grid: Grid) -> None:
    for name in ("x", "y", "z"):
        await grid.add_file(f"/cta/c/{name}.dat", name.encode(), ["SITE-A-DISK"])
    await dataset(grid.db, "cta:d1", ["/cta/c/x.dat", "/cta/c/y.dat"])
    await dataset(grid.db, "cta:d2", ["/cta/c/y.dat", "/cta/c/z.dat"])
    await dataset(grid.db, "cta:inner", [], kind="container")
    await dataset(grid.db, "cta:outer", [], kind="container")
    await attach_children(grid.db, ALICE, "cta:inner", ["cta:d2"])
    await attach_children(grid.db, ALICE, "cta:outer", ["cta:d1", "cta:inner"])
    _, [job] = await submit(api, {"executable": "/bin/true", "input_dataset": "cta:outer",
                                  "input_data": ["/cta/c/x.dat"]})
    assert job["description"]["input_data"] == ["/cta/c/x.dat", "/cta/c/y.dat", "/cta/c/z.dat"]


async def test_a_parametric_query_input_resolves_per_value(api: RunningApi, grid: Grid) -> None:
    await mc_files(grid)
    _, jobs = await submit(api, {"executable": "/bin/true", "input_query": "run=%(param)s", "parameters": [10, 13]})
    assert [j["description"]["input_data"] for j in jobs] == [["/cta/mc/run10.dat"], ["/cta/mc/run13.dat"]]


async def test_a_query_input_leaves_out_files_the_submitter_may_not_read(api: RunningApi, grid: Grid) -> None:
    await mc_files(grid)
    await grid.add_file("/cta/mc/run14.dat", b"secret", ["SITE-C-DISK"], owner="carol", group="hess", mode=0o600,
                        meta={"run": 14, "particle": "proton"})
    _, [job] = await submit(api, {"executable": "/bin/true", "input_query": "run>=14", "input_path": "/cta/mc"})
    assert job["description"]["input_data"] == ["/cta/mc/run15.dat"]


@pytest.mark.parametrize("inputs, error, words", [
    ({"input_dataset": "cta:nothing"}, NotFound, "cta:nothing does not exist"),
    ({"input_dataset": "no-colon"}, InvalidInput, "scope:name"),
    ({"input_dataset": "cta:empty"}, InvalidInput, "holds no files"),
    ({"input_query": "run>=>12"}, InvalidInput, "position"),
    ({"input_query": "run>100"}, InvalidInput, "finds no file"),
    ({"input_query": "run>1", "input_path": "/cta/nowhere"}, NotFound, "/cta/nowhere does not exist"),
    ({"input_query": "run>1", "input_dataset": "cta:empty"}, InvalidInput, "not both"),
    ({"input_path": "/cta/mc"}, InvalidInput, "without one"),
    ({"input_dataset": "cta:clash"}, InvalidInput, "names repeat"),
    ({"input_dataset": "cta:private"}, Forbidden, "/cta/private/p.dat"),
])
async def test_a_bad_dataset_or_query_input_is_refused_with_the_reason(
    api: RunningApi, grid: Grid, inputs: dict[str, object], error: type[Exception], words: str
) -> None:
    await mc_files(grid)
    await dataset(grid.db, "cta:empty", [])
    await grid.add_file("/cta/a/f.dat", b"a", ["SITE-A-DISK"])
    await grid.add_file("/cta/b/f.dat", b"b", ["SITE-A-DISK"])
    await dataset(grid.db, "cta:clash", ["/cta/a/f.dat", "/cta/b/f.dat"])
    await grid.add_file("/cta/private/p.dat", b"p", ["SITE-A-DISK"], owner="alice", mode=0o644)
    await dataset(grid.db, "cta:private", ["/cta/private/p.dat"])
    await grid.db["files"].update_one({"_id": "/cta/private/p.dat"}, {"$set": {"owner": "carol", "mode": 0o600}})
    with pytest.raises(error) as err:
        await submit(api, {"executable": "/bin/true", **inputs})
    assert words in str(err.value)
    assert await job_count(grid.db) == 0


async def test_more_inputs_than_the_per_job_limit_are_refused(
    api: RunningApi, grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    await mc_files(grid)
    await dataset(grid.db, "cta:three", ["/cta/mc/run10.dat", "/cta/mc/run12.dat", "/cta/mc/run15.dat"])
    monkeypatch.setattr(input_selection, "MAX_INPUTS_PER_JOB", 2)
    with pytest.raises(InvalidInput, match="more than 2 files"):
        await submit(api, {"executable": "/bin/true", "input_query": "particle=proton"})
    with pytest.raises(InvalidInput, match="more than 2 files"):
        await submit(api, {"executable": "/bin/true", "input_dataset": "cta:three"})
    with pytest.raises(InvalidInput, match="3 inputs exceed the limit of 2"):
        await submit(api, {"executable": "/bin/true", "input_query": "run=10", "input_path": "/cta/mc",
                           "input_data": ["/cta/mc/run12.dat", "/cta/mc/run15.dat"]})
    assert await job_count(grid.db) == 0


async def test_a_moved_input_is_read_by_the_pilot_where_its_bytes_are(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    # `cairn mv` renames in the catalogue only: the bytes stay at the old LFN's path on SITE-B-DISK.
    await grid.add_file("/cta/raw/a.dat", b"moved bytes\n", ["SITE-B-DISK"])
    await insert_directories(grid.db, [directory_document(d, ALICE, mode=0o755, at=now())
                                       for d in ("/cta/raw", "/cta/kept")])
    await move(grid.db, ADMIN, "/cta/raw/a.dat", "/cta/kept/a.dat")
    ids, _ = await submit(api, concatenating(input_data=["/cta/kept/a.dat"]))
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-B", tmp_path, wms_config, pilots)
    [done] = await wait_for(grid.db, ids, {"done", "failed"}, pilots=pilots)
    assert (done["state"], done["site"]) == ("done", "SITE-B")
    assert await grid.replica_bytes("/cta/out/result.txt", "SITE-A-DISK") == b"moved bytes\n"
