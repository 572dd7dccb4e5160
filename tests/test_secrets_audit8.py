"""Secrets of the eighth audit: state another local account planted or may read is not taken for
this account's own (the signing key, `cairn up`'s var, a pilot's work dir), and SE secrets stay out of
the SE records every user reads."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_db import free_port
from cairn.sdk import Client
from cairn.server import build_app
from kernel.db import Document
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from kernel.tokens import BuiltinIssuer
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.grid import Grid, PilotProcess, check_all, start_pilot, wait_for
from wms.config import WmsSettings

ROOT = Path(__file__).resolve().parents[1]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="files of another account need root to make")


def nobody() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def plant_key(path: Path, mode: int) -> None:
    """An Ed25519 key at path, as whoever wrote it there knows it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(mode)


@as_root
def test_a_signing_key_planted_by_another_account_does_not_start_the_server(settings: Settings) -> None:
    # Another account's key in ./var/keys (a shared project area): its writer would sign tokens of
    # any user, global admins included, that this server accepts.
    key = settings.resolved_signing_key_file
    plant_key(key, 0o600)
    os.chown(key, *nobody())
    with pytest.raises(ConfigurationError, match="another account"):
        build_app(settings)


def test_a_signing_key_others_may_read_is_refused(settings: Settings) -> None:
    key = settings.resolved_signing_key_file
    BuiltinIssuer.from_settings(settings)  # made 0600
    key.chmod(0o644)
    with pytest.raises(ConfigurationError, match="other accounts"):
        BuiltinIssuer.from_settings(settings)
    key.chmod(0o640)  # a group may read it (a secret mounted for the pod's group)
    assert BuiltinIssuer.from_settings(settings).public_pem


@as_root
def test_cairn_up_refuses_a_var_of_another_account(tmp_path: Path) -> None:
    # A var made beforehand by another account: cairn up kept its state there (its owner could
    # plant the signing key, read the logs and the local SEs' files) instead of refusing.
    workdir = tmp_path / "shared"
    (workdir / "var").mkdir(parents=True)
    workdir.chmod(0o1777)
    (workdir / "var").chmod(0o777)
    os.chown(workdir / "var", *nobody())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "up", "--port", str(free_port())], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
        pytest.fail("cairn up ran on another account's var:\n" + output)
    assert proc.returncode != 0
    assert "belongs to another account" in " ".join(output.split())  # (the console wraps it where the path ends)
    assert not (workdir / "var" / "client.json").exists()
    assert not (workdir / "var" / "log").exists()


SE_SECRET = "SK-0123456789abcdef"


@pytest.mark.parametrize("option", ["secret_key", "access_key", "session_token", "token"])
async def test_cairn_se_add_keeps_an_se_secret_out_of_the_catalogue(api: RunningApi, option: str) -> None:
    # A `KEY=VALUE` plugin option of `--protocol` is stored in the SE's record, which GET /ses
    # shows every user: the S3 keys or WebDAV token given so reached anyone with a token.
    scheme = "davs://dav.example.org:8443/data" if option == "token" else "s3://bucket/data"
    done = await run_cli(api.url, api.admin_token, "se", "add", "LEAKY", "--site", "CERN",
                         "--protocol", f"{scheme},{option}={SE_SECRET}")
    assert done.returncode != 0
    assert "CAIRN_STORAGE_CREDENTIALS" in done.stderr and SE_SECRET not in done.stderr
    async with Client(api.url, api.token("bob")) as bob:
        listed = await bob.list_ses()
    assert SE_SECRET not in json.dumps(listed)


async def test_cairn_se_put_keeps_an_se_secret_out_of_the_catalogue(api: RunningApi, tmp_path: Path) -> None:
    definition = tmp_path / "se.json"
    definition.write_text(json.dumps({"name": "LEAKY", "site": "CERN", "protocols": [
        {"scheme": "s3", "host": "bucket", "prefix": "/data", "extra": {"secret_key": SE_SECRET}}]}))
    done = await run_cli(api.url, api.admin_token, "se", "put", str(definition))
    assert done.returncode != 0 and "secret_key" in done.stderr and SE_SECRET not in done.stderr
    async with Client(api.url, api.token("bob")) as bob:
        assert SE_SECRET not in json.dumps(await bob.list_ses())


async def test_the_api_refuses_an_se_secret_and_hides_one_stored_before(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    # The CLI's refusal alone left PUT /ses/NAME storing the key (and GET /ses showing it to all).
    body = {"name": "LEAKY", "site": "CERN", "protocols": [
        {"scheme": "s3", "host": "bucket", "prefix": "/data", "extra": {"region": "r", "secret_key": SE_SECRET}}]}
    ok = {**body, "protocols": [{**body["protocols"][0], "extra": {"region": "r"}}]}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {api.admin_token}"}) as http:
        refused = await http.put(f"{api.url}/api/v1/ses/LEAKY", json=body)
        assert refused.status == 400 and SE_SECRET not in await refused.text()
        assert await database["ses"].find_one({"_id": "LEAKY"}) is None
        # One stored before the refusal (straight into the database) is shown without it.
        stored = await http.put(f"{api.url}/api/v1/ses/LEAKY", json=ok)
        assert stored.status == 200, await stored.text()
    await database["ses"].update_one({"_id": "LEAKY"}, {"$set": {"protocols.0.extra.secret_key": SE_SECRET}})
    async with Client(api.url, api.token("bob")) as bob:
        listed = json.dumps(await bob.list_ses())
    assert SE_SECRET not in listed and '"region": "r"' in listed


def test_the_secret_options_are_the_plugins_secret_fields() -> None:
    from kernel.secret_options import SECRET_OPTIONS
    from storage_plugins.s3 import S3Options
    from storage_plugins.webdav import WebDavOptions

    assert {"access_key", "secret_key", "session_token"} | {"token"} == SECRET_OPTIONS
    assert set(S3Options.model_fields) | set(WebDavOptions.model_fields) >= SECRET_OPTIONS


# Run as `nobody`: the bytes of each job's inputs it can read below a pilot's work directory.
READ_INPUTS = """
import glob, sys
found = {}
for path in glob.glob(sys.argv[1] + "/job-*/*.dat"):
    try:
        found[path] = open(path, "rb").read().decode()
    except OSError as exc:
        found[path] = type(exc).__name__
print(found)
"""


def inputs_nobody_reads(work_dir: Path) -> str:
    done = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-I", "-c", READ_INPUTS,
                           str(work_dir)], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def open_dir() -> Path:
    """A directory every account may enter, as a batch job's often is."""
    made = Path(tempfile.mkdtemp(prefix="cairn-pilot-"))
    made.chmod(0o755)
    return made


@as_root
async def test_another_account_cannot_read_a_running_jobs_inputs_in_the_pilots_work_dir(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess],
) -> None:
    # The pilot downloads a job's inputs into a directory of its work directory: made with the
    # umask's 0755 and 0644, any local account of the worker node read them while the job ran
    # (files the catalogue lets only the job's owner read).
    await grid.add_file("/cta/private.dat", b"alice-only-bytes", ["SITE-A-DISK"], mode=0o600)
    shared = open_dir()
    try:
        async with api.client(api.token(sub="alice", scopes=("jobs.read", "jobs.write"))) as alice:
            [job_id] = await alice.submit_jobs([{"executable": "/bin/sh", "arguments": ["-c", "sleep 4"],
                                                 "input_data": ["/cta/private.dat"]}])
        await check_all(grid.db, wms_config)
        start_pilot(api, "SITE-A", shared, wms_config, pilots)
        [job] = await wait_for(grid.db, [job_id], {"running", "done", "failed"}, pilots=pilots)
        assert job["state"] == "running", job.get("reason")
        seen = await asyncio.to_thread(inputs_nobody_reads, shared / "work-SITE-A-0")
        assert "alice-only-bytes" not in seen, seen
        assert (await wait_for(grid.db, [job_id], {"done", "failed"}, pilots=pilots))[0]["state"] == "done"
    finally:
        shutil.rmtree(shared, ignore_errors=True)
