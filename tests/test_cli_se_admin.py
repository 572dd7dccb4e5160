"""`cairn se add`, `cairn se update` and `cairn site add` through `python -m cairn` against the
in-process API: round trips of every SE kind, typed options, and a clear error per wrong field."""

from __future__ import annotations

import json

import pytest

from cairn.sdk import Client
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli


async def cairn(api: RunningApi, *args: str) -> tuple[int, str, str]:
    done = await run_cli(api.url, api.admin_token, *args)
    return done.returncode, done.stdout, done.stderr


async def test_se_add_makes_each_kind_of_se_with_typed_options_and_update_changes_it(
    api: RunningApi, admin: Client,
) -> None:
    code, _, err = await cairn(api, "se", "add", "TAPE-1", "--site", "CERN", "--kind", "tape",
                                 "--protocol", "tape:///archive/t1,cache_dir=/cache/t1,stage_delay_s=2",
                                 "--attr", "tier=0", "--attr", "country=CH", "--json")
    assert code == 0, err
    tape = await admin.get_se("TAPE-1")
    assert tape["kind"] == "tape" and tape["attributes"] == {"tier": 0, "country": "CH"}
    assert tape["protocols"][0]["extra"] == {"cache_dir": "/cache/t1", "stage_delay_s": 2}
    code, _, err = await cairn(api, "se", "add", "MIX", "--site", "CERN",
                               "--protocol", "davs://eos.example.org:8443/eos/cta,tpc,ca_file=/etc/ca.pem",
                               "--protocol", "root://eos.example.org:1094//eos/cta,tpc",
                               "--protocol", "s3://cta-bucket/data,ro,endpoint_url=https://s3.example.org,priority=5")
    assert code == 0, err
    mix = await admin.get_se("MIX")
    assert [(p["scheme"], p["host"], p["port"], p["prefix"], p["priority"], p["third_party_copy"], p["write"])
            for p in mix["protocols"]] == [
        ("davs", "eos.example.org", 8443, "/eos/cta", 1, True, True),
        ("root", "eos.example.org", 1094, "/eos/cta", 2, True, True),
        ("s3", "cta-bucket", None, "/data", 5, False, False)]
    code, _, err = await cairn(api, "se", "update", "MIX", "--no-write", "--attr", "tier=1",
                               "--protocol", "file:///data/mix")
    assert code == 0, err
    mix = await admin.get_se("MIX")
    assert (mix["write_enabled"], mix["attributes"], mix["protocols"][0]["prefix"]) == (False, {"tier": 1}, "/data/mix")
    assert len(mix["protocols"]) == 1
    code, _, err = await cairn(api, "site", "add", "DESY", "--description", "Hamburg", "--attr", "tier=1")
    assert code == 0, err
    assert (await admin.get_site("DESY"))["attributes"] == {"tier": 1}


@pytest.mark.parametrize(("args", "says"), [
    (["--site", "CERN", "--protocol", "ftp://host/x"], "scheme must be one of"),
    (["--site", "CERN", "--protocol", "root:///data"], "needs a host"),
    (["--site", "CERN", "--protocol", "file:///d,fast"], "unknown protocol flag 'fast'"),
    (["--site", "CERN", "--protocol", "file:///d", "--attr", "tier"], "is not KEY=VALUE"),
    (["--site", "CERN", "--protocol", "file:///d", "--attr", "bad key=1"], "attribute key"),
    (["--site", "bad site!", "--protocol", "file:///d"], "site"),
    (["--site", "CERN", "--protocol", "root://h:99999//d"], "out of range"),
    (["--site", "CERN", "--protocol", "file:///d,priority=0"], "priority"),
    (["--site", "CERN"], "at least one --protocol"),
    (["--protocol", "file:///d"], "needs --site"),
])
async def test_se_add_names_the_wrong_field_and_changes_nothing(
    api: RunningApi, admin: Client, args: list[str], says: str,
) -> None:
    code, out, err = await cairn(api, "se", "add", "WRONG", *args)
    assert code != 0
    assert says in out + err, out + err
    assert [se["name"] for se in await admin.list_ses()] == []


async def test_adding_an_se_or_site_twice_is_refused(api: RunningApi, admin: Client) -> None:
    assert (await cairn(api, "se", "add", "ONE", "--site", "S", "--protocol", "file:///one"))[0] == 0
    code, out, err = await cairn(api, "se", "add", "ONE", "--site", "S", "--protocol", "file:///other")
    assert code != 0 and "cairn se update ONE" in out + err
    assert (await admin.get_se("ONE"))["protocols"][0]["prefix"] == "/one"
    code, out, err = await cairn(api, "site", "add", "S")
    assert code != 0 and "exists already" in out + err
    code, out, err = await cairn(api, "se", "update", "NOPE", "--no-read")
    assert code != 0 and "does not exist" in out + err
    assert json.loads((await cairn(api, "se", "list", "--json"))[1])[0]["name"] == "ONE"
