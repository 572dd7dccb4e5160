"""A user name belongs to the issuer whose token first used it: a second issuer trusted for the
same VO cannot mint an existing user's name (or a VO admin's), until an admin moves the name."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.settings import Settings, TrustedIssuer, load_settings
from kernel.tokens import BuiltinIssuer
from tests.fixtures.authz import USER_SCOPES, World
from tests.fixtures.cli import run_cli

STAT = "/namespace/stat?path=/cta"
STAT_LHCB = "/namespace/stat?path=/lhcb"
IAM = BuiltinIssuer("https://iam-cta.example.org/", "cairn", Ed25519PrivateKey.generate(), 600)
OTHER = BuiltinIssuer("https://other-idp.example.org/", "cairn", Ed25519PrivateKey.generate(), 600)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings, trusting two IdPs for VO cta (beside the built-in issuer)."""
    trusted = [TrustedIssuer(issuer=idp.issuer, public_keys=[idp.public_pem.decode()], vo="cta")
               for idp in (IAM, OTHER)]
    return load_settings(**{**settings.model_dump(), "trusted_issuers": trusted})


def iam_token(sub: str, *, admin: bool = False) -> str:
    return IAM.issue(sub=sub, vo="cta", groups=["phys"], scopes=[*USER_SCOPES, *(["admin"] if admin else [])])


async def as_iam(world: World, sub: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    world.tokens[f"iam:{sub}"] = iam_token(sub)
    return await world.call(f"iam:{sub}", method, path, body)


async def test_another_issuers_token_cannot_take_an_existing_users_name(vo_world: World) -> None:
    status, answer = await as_iam(vo_world, "eve", "GET", STAT)
    assert status == 401, answer
    assert "another issuer" in str(answer)
    status, _ = await vo_world.call("eve", "GET", STAT)  # the built-in issuer's eve is unchanged
    assert status == 200


async def test_a_vo_admins_name_from_another_issuer_is_no_admin(vo_world: World) -> None:
    assert (await vo_world.call("ctaadmin", "GET", "/identities"))[0] == 200  # its name is bound now
    vo_world.tokens["iam:ctaadmin"] = iam_token("ctaadmin")
    status, answer = await vo_world.call("iam:ctaadmin", "PATCH", "/vos/cta/members", {"add": ["mallory"]})
    assert status == 401, answer
    assert "mallory" not in str((await vo_world.call("admin", "GET", "/vos/cta/members"))[1])


async def test_a_new_name_binds_to_its_first_issuer_and_refuses_the_others(vo_world: World) -> None:
    status, _ = await as_iam(vo_world, "frank", "GET", STAT)
    assert status == 200
    vo_world.tokens["other:frank"] = OTHER.issue(sub="frank", vo="cta", groups=["phys"], scopes=USER_SCOPES)
    status, answer = await vo_world.call("other:frank", "GET", STAT)
    assert status == 401, answer
    # The installation's own issuer is never refused (its key's holders mint any token anyway).
    vo_world.tokens["builtin:frank"] = vo_world.api.token("frank", vo="cta", groups=("phys",), scopes=USER_SCOPES)
    assert (await vo_world.call("builtin:frank", "GET", STAT))[0] == 200
    status, bound = await vo_world.call("ctaadmin", "GET", "/identities")
    names = {row["_id"]: row["issuer"] for row in bound}  # type: ignore[union-attr]
    assert names["cta:frank"] == IAM.issuer and names["cta:eve"] == vo_world.api.issuer.issuer
    assert not any(name.startswith("lhcb:") for name in names)  # a VO's admin sees its VO's names


async def test_an_admin_moves_a_name_to_another_issuer(vo_world: World) -> None:
    assert (await vo_world.call("eve", "GET", STAT))[0] == 200
    status, answer = await vo_world.call("ctaadmin", "PUT", "/identities/cta:eve", {"issuer": IAM.issuer})
    assert status == 200, answer
    assert (await as_iam(vo_world, "eve", "GET", STAT))[0] == 200
    assert (await vo_world.call("eve", "GET", STAT))[0] == 200  # the built-in issuer's still


async def test_a_vo_admin_cannot_bind_or_see_another_vos_names(vo_world: World) -> None:
    assert (await vo_world.call("bob", "GET", STAT_LHCB))[0] == 200  # lhcb:bob is bound
    assert (await vo_world.call("ctaadmin", "GET", STAT))[0] == 200  # and cta:ctaadmin
    before = await vo_world.snapshot()
    status, answer = await vo_world.call("ctaadmin", "PUT", "/identities/lhcb:bob", {"issuer": IAM.issuer})
    assert status == 403, answer
    hidden = await vo_world.call("ctaadmin", "DELETE", "/identities/lhcb:bob")
    missing = await vo_world.call("ctaadmin", "DELETE", "/identities/cta:nobody")
    assert hidden[0] == missing[0] == 404
    assert str(hidden[1]).replace("lhcb:bob", "X") == str(missing[1]).replace("cta:nobody", "X")
    assert await vo_world.snapshot() == before  # the refusals changed nothing
    status, _ = await vo_world.call("ctaadmin", "POST", "/identities/move",
                                    {"from": vo_world.api.issuer.issuer, "to": IAM.issuer})
    assert status == 200
    assert (await vo_world.call("bob", "GET", STAT_LHCB))[0] == 200
    _, bound = await vo_world.call("admin", "GET", "/identities")
    issuers = {row["_id"]: row["issuer"] for row in bound}  # type: ignore[union-attr]
    assert issuers["cta:eve"] == IAM.issuer  # cta's names moved
    assert issuers["lhcb:bob"] == vo_world.api.issuer.issuer  # another VO's did not


async def test_members_may_not_manage_identities_and_bad_input_is_refused(vo_world: World) -> None:
    assert (await vo_world.call("eve", "GET", "/identities"))[0] == 403
    assert (await vo_world.call("eve", "PUT", "/identities/cta:eve", {"issuer": IAM.issuer}))[0] == 403
    for body in ({"issuer": ""}, {"issuer": 5}, {"issuer": "x" * 5000}, {"issuer": "a", "extra": 1}):
        status, answer = await vo_world.call("ctaadmin", "PUT", "/identities/cta:eve", body)
        assert status == 400, (body, answer)
    status, answer = await vo_world.call("ctaadmin", "PUT", "/identities/cta:e%07ve", {"issuer": IAM.issuer})
    assert status == 400, answer


async def test_the_cli_lists_binds_and_forgets(vo_world: World) -> None:
    assert (await vo_world.call("eve", "GET", STAT))[0] == 200
    token = vo_world.tokens["ctaadmin"]
    listed = await run_cli(vo_world.api.url, token, "identity", "list")
    assert listed.returncode == 0 and "cta:eve" in listed.stdout, listed.stderr
    bound = await run_cli(vo_world.api.url, token, "identity", "bind", "cta:eve", IAM.issuer)
    assert bound.returncode == 0, bound.stderr
    assert (await as_iam(vo_world, "eve", "GET", STAT))[0] == 200
    forgot = await run_cli(vo_world.api.url, token, "identity", "forget", "cta:eve")
    assert forgot.returncode == 0, forgot.stderr
    again = await run_cli(vo_world.api.url, token, "identity", "forget", "cta:eve")
    assert again.returncode != 0 and "not bound" in again.stderr


async def test_an_admin_of_the_vo_of_bare_names_cannot_rebind_a_global_admins_name(vo_world: World) -> None:
    """Bare names are VO `local`'s, and a global admin's name is bare too (bound with VO `*`):
    an admin of a confined `local` binds its members' names, not the global admin's."""
    async with vo_world.client("admin") as admin:
        await admin.put_vo({"name": "local", "roots": ["/local"], "admins": ["localadmin"]})
    vo_world.tokens["localadmin"] = vo_world.api.token("localadmin", vo="local", groups=("phys",),
                                                       scopes=USER_SCOPES)
    assert (await vo_world.call("admin", "GET", "/identities"))[0] == 200  # binds root (VO *)
    before = await vo_world.db["identities"].find_one({"_id": "root"})
    status, answer = await vo_world.call("localadmin", "PUT", "/identities/root", {"issuer": IAM.issuer})
    assert status == 403, answer
    assert await vo_world.db["identities"].find_one({"_id": "root"}) == before
    assert (await vo_world.call("localadmin", "PUT", "/identities/newbie", {"issuer": IAM.issuer}))[0] == 200
