"""A VO's members and admins are bare names as its tokens' `sub` carries them: a VO's admin (or
a global admin) adding `lhcb:bob` (another VO's qualified name, which `confine` refuses in a
token anyway) or a name carrying terminal control sequences is refused, 400."""

from __future__ import annotations

import pytest

from tests.fixtures.authz import World


@pytest.mark.parametrize("name", ["lhcb:bob", "x\x1b]52;c;eA==\x07", "", "a\rb"])
async def test_a_vo_admin_cannot_add_a_qualified_or_control_name(vo_world: World, name: str) -> None:
    for admins in (False, True):
        status, answer = await vo_world.call("ctaadmin", "PATCH", "/vos/cta/members",
                                             {"add": [name], "admins": admins})
        assert status == 400, answer
    status, cta = await vo_world.call("admin", "GET", "/vos/cta")
    assert name not in cta["members"] + cta["admins"]
    status, answer = await vo_world.call("admin", "PUT", "/vos/cta", {**cta, "admins": [name]})
    assert status == 400, answer


async def test_bare_names_are_added_as_before(vo_world: World) -> None:
    added = {"add": ["frank", "gina@example.org"]}
    status, answer = await vo_world.call("ctaadmin", "PATCH", "/vos/cta/members", added)
    assert status == 200 and {"frank", "gina@example.org"} <= set(answer["members"]), answer
