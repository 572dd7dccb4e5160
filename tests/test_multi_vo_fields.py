"""Metadata fields scoped to a VO (issue 14), on tests.fixtures.multi_vo: a VO's admin declares
fields that type values in its VO's namespace only, and cannot touch another VO's or the
installation's fields."""

from __future__ import annotations

import asyncio
import json

from tests.fixtures.authz import World
from tests.fixtures.cli import run_cli


async def declare(world: World, who: str, key: str, kind: str = "int") -> tuple[int, dict[str, object]]:
    return await world.call(who, "PUT", "/metadata/fields", {"key": key, "type": kind})


async def test_a_vo_admins_field_types_values_in_its_vo_only(vo_world: World) -> None:
    status, answer = await declare(vo_world, "ctaadmin", "energy")
    assert status == 200 and answer["vo"] == "cta", answer
    status, answer = await vo_world.call("eve", "POST", "/metadata/set", {"path": "/cta/mc", "values": {"energy": "x"}})
    assert status == 400 and "energy" in answer["message"], answer
    status, answer = await vo_world.call("bob", "POST", "/metadata/set",
                                         {"path": "/lhcb/pub", "values": {"energy": "x"}})
    assert status == 200, answer  # cta's field does not type lhcb's namespace
    _, seen_by_bob = await vo_world.call("bob", "GET", "/metadata/fields")
    _, seen_by_eve = await vo_world.call("eve", "GET", "/metadata/fields")
    assert "energy" not in [f["key"] for f in seen_by_bob] and [f["key"] for f in seen_by_eve] == ["energy"]


async def test_a_vo_admin_cannot_touch_another_vos_or_the_installations_fields(vo_world: World) -> None:
    assert (await declare(vo_world, "ctaadmin", "energy"))[0] == 200
    status, answer = await vo_world.call("admin", "PUT", "/metadata/fields", {"key": "run", "type": "int"})
    assert status == 200 and answer["vo"] is None, answer
    before = await vo_world.snapshot()
    status, answer = await declare(vo_world, "lhcbadmin", "energy", "float")
    assert status == 409 and "cta" not in answer["message"], answer
    status, answer = await vo_world.call("lhcbadmin", "DELETE", "/metadata/fields", params={"key": "energy"})
    assert (status, answer["message"]) == (404, "metadata field energy is not declared"), answer
    for who in ("lhcbadmin", "ctaadmin"):
        assert (await declare(vo_world, who, "run"))[0] == 403
        assert (await vo_world.call(who, "DELETE", "/metadata/fields", params={"key": "run"}))[0] == 403
    assert (await declare(vo_world, "eve", "muons"))[0] == 403
    assert await vo_world.snapshot() == before
    status, _ = await vo_world.call("ctaadmin", "DELETE", "/metadata/fields", params={"key": "energy"})
    assert status == 200


async def test_a_global_admin_declares_a_field_for_one_vo(vo_world: World) -> None:
    status, answer = await vo_world.call("admin", "PUT", "/metadata/fields", {"key": "pt", "type": "float",
                                                                              "vo": "lhcb"})
    assert status == 200 and answer["vo"] == "lhcb", answer
    status, _ = await vo_world.call("admin", "PUT", "/metadata/fields", {"key": "eta", "type": "float", "vo": "nope"})
    assert status == 404
    status, answer = await vo_world.call("bob", "POST", "/metadata/set", {"path": "/lhcb/pub", "values": {"pt": "x"}})
    assert status == 400, answer


async def test_cli_declares_a_field_for_the_admins_vo(vo_world: World) -> None:
    done = await run_cli(vo_world.api.url, vo_world.tokens["ctaadmin"], "meta", "fields", "--declare", "pt", "float",
                         "--json")
    assert done.returncode == 0, done.stderr
    assert [(f["key"], f["vo"]) for f in json.loads(done.stdout)] == [("pt", "cta")]
    done = await run_cli(vo_world.api.url, vo_world.tokens["eve"], "meta", "fields", "--declare", "muons", "int")
    assert done.returncode == 2 and "declared by administrators" in done.stderr


async def test_two_vos_declaring_one_key_at_once_leave_one_declaration(vo_world: World) -> None:
    """Declaring was a look, then an upsert: two VOs' admins declaring one key at once both got
    200 and the second took the first's field over (its VO and type), under values typed by it."""
    for round_ in range(8):
        key = f"energy{round_}"
        answers = await asyncio.gather(declare(vo_world, "ctaadmin", key, "int"),
                                       declare(vo_world, "lhcbadmin", key, "float"))
        won = [answer for status, answer in answers if status == 200]
        assert len(won) == 1, answers
        assert sorted(status for status, _ in answers) == [200, 409], answers
        _, fields = await vo_world.call("admin", "GET", "/metadata/fields")
        stored = next(f for f in fields if f["key"] == key)
        assert (stored["vo"], stored["type"]) == (won[0]["vo"], won[0]["type"]), (stored, won)
