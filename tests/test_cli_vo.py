"""`cairn vo add|list|show|members`, `cairn whoami` and `cairn token issue --vo` through
`python -m cairn` against the in-process API."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.transfers import add_ses, disk_se

USER = ("catalogue.read", "catalogue.write")


async def cairn(api: RunningApi, token: str, *args: str) -> tuple[int, str, str]:
    done = await run_cli(api.url, token, *args)
    return done.returncode, done.stdout, done.stderr


async def test_vo_add_list_show_and_members_round_trip(
    api: RunningApi, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await add_ses(database, disk_se("DISK1", tmp_path / "disk1"))
    root = api.token("root", vo="*", groups=("admin",), scopes=("admin",))
    code, out, err = await cairn(api, root, "vo", "add", "cta", "--root", "/cta", "--scope", "cta",
                                 "--se", "DISK1:/cta:1000", "--site", "SITE", "--admin", "ctaadmin", "--json")
    assert code == 0, err
    assert json.loads(out)["ses"] == {"DISK1": {"path": "/cta", "quota_bytes": 1000, "read_enabled": True,
                                                "write_enabled": True, "delete_enabled": True}}
    code, out, err = await cairn(api, root, "vo", "list")
    assert code == 0 and "cta" in out and "/cta" in out, err
    ctaadmin = api.token("ctaadmin", vo="cta", groups=("cta",), scopes=USER)
    code, out, err = await cairn(api, ctaadmin, "vo", "members", "cta", "--add", "eve", "--add", "frank", "--json")
    assert code == 0, err
    assert json.loads(out) == {"vo": "cta", "members": ["eve", "frank"], "admins": ["ctaadmin"]}
    eve = api.token("eve", vo="cta", groups=("cta",), scopes=USER)
    code, out, err = await cairn(api, eve, "vo", "show", "cta", "--json")
    assert code == 0 and json.loads(out)["roots"] == ["/cta"], err
    code, _, err = await cairn(api, eve, "vo", "members", "cta", "--remove", "frank")
    assert code == 2 and "only an admin of VO cta" in err
    assert (await admin.request("GET", "/vos/cta/members"))["members"] == ["eve", "frank"]


async def test_vo_add_refuses_a_taken_root_and_an_unknown_se(api: RunningApi) -> None:
    root = api.token("root", vo="*", groups=("admin",), scopes=("admin",))
    assert (await cairn(api, root, "vo", "add", "cta", "--root", "/cta"))[0] == 0
    code, _, err = await cairn(api, root, "vo", "add", "km3net", "--root", "/cta")
    assert code == 2 and "belong to VO 'cta'" in err
    code, _, err = await cairn(api, root, "vo", "add", "km3net", "--root", "/km3net", "--se", "NOPE")
    assert code == 2 and "unknown SE" in err
    code, out, _ = await cairn(api, root, "vo", "list", "--json")
    assert [v["name"] for v in json.loads(out)] == ["cta"]


async def test_whoami_shows_the_vo_its_qualified_groups_and_roots(api: RunningApi) -> None:
    root = api.token("root", vo="*", groups=("admin",), scopes=("admin",))
    assert (await cairn(api, root, "vo", "add", "cta", "--root", "/cta", "--scope", "cta"))[0] == 0
    code, out, err = await cairn(api, api.token("eve", vo="cta", groups=("phys",), scopes=USER), "whoami", "--json")
    assert code == 0, err
    me = json.loads(out)
    assert (me["sub"], me["vo"], me["groups"], me["roots"], me["global_admin"]) == (
        "cta:eve", "cta", ["cta:phys"], ["/cta"], False)
    code, out, err = await cairn(api, root, "whoami")
    assert code == 0 and "*" in out, err


async def test_token_issue_defaults_to_vo_local_and_keeps_vo_star_for_admins(tmp_path: Path) -> None:
    env = {"CAIRN_VAR_DIR": str(tmp_path)}
    done = await run_cli("http://127.0.0.1:9", None, "token", "issue", "--user", "ann", env=env)
    assert done.returncode == 0, done.stderr
    assert jwt.decode(done.stdout.strip(), options={"verify_signature": False})["vo"] == "local"
    done = await run_cli("http://127.0.0.1:9", None, "token", "issue", "--user", "ann", "--vo", "*", env=env)
    assert done.returncode == 2 and "admin scope" in done.stderr


async def test_vo_members_remove_takes_members_and_admins_away(api: RunningApi, admin: Client) -> None:
    """A removal stored nothing on the embedded database (`$pull` by `$in` matches there but
    pulls nothing) while answering 200: a demoted admin kept administering the VO."""
    root = api.token("root", vo="*", groups=("admin",), scopes=("admin",))
    assert (await cairn(api, root, "vo", "add", "cta", "--root", "/cta", "--admin", "ctaadmin",
                        "--admin", "dave"))[0] == 0
    ctaadmin = api.token("ctaadmin", vo="cta", groups=("cta",), scopes=USER)
    assert (await cairn(api, ctaadmin, "vo", "members", "cta", "--add", "eve", "--add", "frank"))[0] == 0
    code, out, err = await cairn(api, ctaadmin, "vo", "members", "cta", "--remove", "frank", "--json")
    assert code == 0, err
    assert json.loads(out)["members"] == ["eve"]
    code, out, err = await cairn(api, root, "vo", "members", "cta", "--admins", "--remove", "dave", "--json")
    assert code == 0, err
    assert json.loads(out)["admins"] == ["ctaadmin"]
    assert (await admin.request("GET", "/vos/cta/members"))["admins"] == ["ctaadmin"]
    dave = api.token("dave", vo="cta", groups=("cta",), scopes=USER)
    code, _, err = await cairn(api, dave, "vo", "members", "cta", "--add", "mallory")
    assert code == 2 and "only an admin of VO cta" in err
    assert (await admin.request("GET", "/vos/cta/members"))["members"] == ["eve"]
