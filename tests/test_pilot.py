"""Real `cairn pilot` processes: jobs run where their data is, outputs are registered with
provenance, and a pilot killed mid-job leads to stalled -> rescheduled -> done once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, PilotProcess, adler32_hex, check_all, start_pilot, wait_for, watchdog_reschedules
from wms import jobs
from wms.config import WmsSettings
from wms.daemons import JobWatchdog
from wms.outputs import attempt_url

USER = ("jobs.read", "jobs.write")


async def submit(api: RunningApi, descriptions: list[dict[str, Any]]) -> list[str]:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        return await alice.submit_jobs(descriptions)


def reading_job(lfn: str, out_lfn: str, out_se: str) -> dict[str, Any]:
    name = Path(lfn).name
    return {
        "executable": "/bin/sh",
        "arguments": ["-c", f"cat {name} > result.txt && echo \"ran at $CAIRN_SITE\" >> result.txt"],
        "input_data": [lfn],
        "outputs": [{"path": "result.txt", "lfn": out_lfn, "se": out_se}],
    }


async def test_each_job_runs_at_a_site_holding_its_inputs_and_registers_its_outputs(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    placement = {"SITE-A": "/cta/data/a.dat", "SITE-B": "/cta/data/b.dat", "SITE-C": "/cta/data/c.dat"}
    for site, lfn in placement.items():
        await grid.add_file(lfn, f"payload of {site}\n".encode(), [f"{site}-DISK"])
    ids = await submit(api, [reading_job(lfn, f"/cta/out/{site}.txt", "SITE-A-DISK")
                             for site, lfn in placement.items()])
    await check_all(grid.db, wms_config)
    for site in placement:
        start_pilot(api, site, tmp_path, wms_config, pilots)
    done = await wait_for(grid.db, ids, {"done", "failed"}, pilots=pilots)
    assert [(j["state"], j["site"]) for j in done] == [("done", s) for s in placement]
    for site, lfn in placement.items():
        out = await grid.db["files"].find_one({"_id": f"/cta/out/{site}.txt"})
        assert out is not None
        content = await grid.replica_bytes(f"/cta/out/{site}.txt", "SITE-A-DISK")
        assert content == f"payload of {site}\nran at {site}\n".encode()
        assert (out["ancestors"], out["size"], out["adler32"]) == ([lfn], len(content), adler32_hex(content))
        url = attempt_url(grid.url("SITE-A-DISK", f"/cta/out/{site}.txt"), out["produced_by"]["job"], 1)
        assert [(r["se"], r["url"], r["status"]) for r in out["replicas"]] == [("SITE-A-DISK", url, "available")]


async def test_failures_are_reported_with_exit_code_and_stderr(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    ids = await submit(api, [
        {"executable": "/bin/sh", "arguments": ["-c", "echo oops >&2; exit 3"]},
        {"executable": "/bin/sleep", "arguments": ["30"], "time_limit_s": 1},
        {"executable": "/bin/true", "outputs": [{"path": "never.txt", "lfn": "/cta/out/never", "se": "SITE-B-DISK"}]},
        {"executable": "/no/such/program"},
    ])
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-B", tmp_path, wms_config, pilots)
    found = await wait_for(grid.db, ids, {"done", "failed"}, pilots=pilots)
    assert [j["state"] for j in found] == ["failed"] * 4
    assert (found[0]["exit_code"], found[0]["stderr"], found[0]["reason"]) == (
        3, "oops\n", "payload exited with code 3")
    assert "time limit of 1s exceeded" in found[1]["reason"]
    assert "did not produce never.txt" in found[2]["reason"]
    assert "cannot start /no/such/program" in found[3]["reason"]
    assert await grid.db["files"].find_one({"_id": "/cta/out/never"}) is None


async def test_an_output_or_log_that_leads_out_of_the_jobs_directory_is_not_read(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    """A payload links its declared output (or a directory on its path) to a file outside its work
    directory that the pilot can read: the job fails and nothing is uploaded, rather than the
    pilot copying that file to the job owner's LFN; a payload that replaces its log by such a link
    gets its own log's tail reported, not the file's."""
    secret = tmp_path / "pilot-only.txt"
    secret.write_text("the pilot's credentials\n")
    ids = await submit(api, [
        {"executable": "/bin/ln", "arguments": ["-s", str(secret), "out.txt"],
         "outputs": [{"path": "out.txt", "lfn": "/cta/out/stolen", "se": "SITE-B-DISK"}]},
        {"executable": "/bin/ln", "arguments": ["-s", str(tmp_path), "sub"],
         "outputs": [{"path": "sub/pilot-only.txt", "lfn": "/cta/out/stolen2", "se": "SITE-B-DISK"}]},
        {"executable": "/bin/sh", "arguments": ["-c", "echo kept > real.txt && ln -s real.txt out.txt"],
         "outputs": [{"path": "out.txt", "lfn": "/cta/out/inside", "se": "SITE-B-DISK"}]},
        # its log replaced by a link: the tail reported is still what the payload wrote
        {"executable": "/bin/sh", "arguments": ["-c", f"echo mine >&2; rm .stderr; ln -s {secret} .stderr; exit 4"]},
    ])
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-B", tmp_path, wms_config, pilots)
    found = await wait_for(grid.db, ids, {"done", "failed"}, pilots=pilots)
    assert [j["state"] for j in found] == ["failed", "failed", "done", "failed"], [j["reason"] for j in found]
    assert (found[3]["exit_code"], found[3]["stderr"]) == (4, "mine\n")
    assert all("leads out of the job's directory" in j["reason"] for j in found[:2]), [j["reason"] for j in found]
    for lfn in ("/cta/out/stolen", "/cta/out/stolen2"):
        assert await grid.db["files"].find_one({"_id": lfn}) is None
    assert not [p for p in grid.se_roots["SITE-B-DISK"].rglob("*") if p.is_file() and "stolen" in p.name]
    assert await grid.replica_bytes("/cta/out/inside", "SITE-B-DISK") == b"kept\n"  # a link inside is followed


async def test_a_pilot_killed_mid_job_leads_to_stalled_rescheduled_and_done_once(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    await grid.add_file("/cta/data/slow.dat", b"slow input\n", ["SITE-C-DISK"])
    description = {
        "executable": "/bin/sh",
        "arguments": ["-c", "sleep 3; cat slow.dat > r.txt; echo attempt $CAIRN_JOB_ATTEMPT >> r.txt"],
        "input_data": ["/cta/data/slow.dat"],
        "outputs": [{"path": "r.txt", "lfn": "/cta/out/slow.txt", "se": "SITE-C-DISK"}],
    }
    [job_id] = await submit(api, [description])
    await check_all(grid.db, wms_config)
    first = start_pilot(api, "SITE-C", tmp_path, wms_config, pilots)
    await wait_for(grid.db, [job_id], {"running"}, pilots=pilots)
    first.kill()

    await watchdog_reschedules(grid.db, wms_config, job_id)
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-C", tmp_path, wms_config, pilots)
    [job] = await wait_for(grid.db, [job_id], {"done", "failed"}, pilots=pilots)

    assert (job["state"], job["attempt"], job["reschedules"]) == ("done", 2, 1)
    states = [h["state"] for h in job["history"]]
    assert states == ["received", "checking", "waiting", "matched", "running", "stalled", "received", "checking",
                      "waiting", "matched", "running", "done"]
    outputs = await grid.db["files"].find({"_id": "/cta/out/slow.txt"}).to_list()
    assert len(outputs) == 1
    assert outputs[0]["produced_by"] == {"job": job_id, "attempt": 2}
    content = await grid.replica_bytes("/cta/out/slow.txt", "SITE-C-DISK")
    assert content == b"slow input\nattempt 2\n"
    # The watchdog has nothing more to do: the job is not declared stalled a second time.
    await JobWatchdog(grid.db, wms_config).run_once()
    assert (await jobs.get_job(grid.db, job_id))["state"] == "done"


async def test_a_job_that_keeps_stalling_fails_after_the_reschedule_limit(
    grid: Grid, wms_config: WmsSettings
) -> None:
    from kernel.principal import Principal
    from wms import matching, submission
    from wms.description import JobDescription

    alice = Principal(sub="alice", vo="cta", groups=("cta",), scopes=frozenset({"jobs.write"}))
    [job_id] = await submission.submit(grid.db, alice, [JobDescription(executable="/bin/true")])
    watchdog = JobWatchdog(grid.db, wms_config.model_copy(update={"stalled_after_s": 0.2}))
    for _ in range(wms_config.max_reschedules + 1):
        await check_all(grid.db, wms_config)
        assert await matching.match(grid.db, matching.PilotOffer(pilot="silent", site="SITE-A")) is not None
        await asyncio.sleep(0.3)
        await watchdog.run_once()
    job = await jobs.get_job(grid.db, job_id)
    assert job["state"] == "failed"
    assert "stalled 3 times" in job["reason"]


async def test_killing_a_running_job_stops_its_payload(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    marker = tmp_path / "still-running"
    [job_id] = await submit(api, [{"executable": "/bin/sh",
                                   "arguments": ["-c", f"sleep 5; touch {marker}"]}])
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)
    await wait_for(grid.db, [job_id], {"running"}, pilots=pilots)
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        assert (await alice.kill_job(job_id))["state"] == "kill_requested"
    [job] = await wait_for(grid.db, [job_id], {"killed", "done", "failed"}, timeout_s=10, pilots=pilots)
    assert (job["state"], job["reason"]) == ("killed", "killed by request")
    await asyncio.sleep(6)
    assert not marker.exists(), "the payload kept running after the kill"


async def test_pilots_racing_for_jobs_run_each_exactly_once(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    ids = await submit(api, [{"executable": "/bin/sh", "arguments": ["-c", f"echo $CAIRN_JOB_ID >> {runs}"]}
                             for _ in range(4)])
    await check_all(grid.db, wms_config)
    for _ in range(3):
        start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)
    found = await wait_for(grid.db, ids, {"done", "failed"}, pilots=pilots)
    assert [j["state"] for j in found] == ["done"] * 4
    assert sorted(runs.read_text().split()) == sorted(ids)
    for job in found:
        assert [h["state"] for h in job["history"]].count("matched") == 1


async def test_a_corrupt_local_replica_is_skipped_for_a_good_remote_one(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    await grid.add_file("/cta/data/twice.dat", b"good bytes\n", ["SITE-A-DISK", "SITE-B-DISK"])
    (grid.se_roots["SITE-A-DISK"] / "cta/data/twice.dat").write_bytes(b"rotten bits\n")
    [job_id] = await submit(api, [{"executable": "/bin/cat", "arguments": ["twice.dat"],
                                   "input_data": ["/cta/data/twice.dat"], "requirements": {"sites": ["SITE-A"]}}])
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)
    [job] = await wait_for(grid.db, [job_id], {"done", "failed"}, pilots=pilots)
    assert (job["state"], job["site"], job["stdout"]) == ("done", "SITE-A", "good bytes\n")
