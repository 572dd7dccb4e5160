"""Several VOs on one installation (issue 14), on tests.fixtures.multi_vo: lhcb (bob, carol) and
cta (eve, and ctaadmin, an admin of cta only).

The cross-VO sweep takes every route of the route table (the OpenAPI document's source) with
the call the authorization matrix makes on bob's objects (tests/test_authz_matrix.py; a new
route without a matrix entry fails there first) and makes it as eve and as ctaadmin. Each call
must answer exactly as the same call on objects that never existed (lhcb's names swapped for
missing ones, answers compared with the names swapped back), must be refused (403/404) unless
the matrix lets an outsider succeed, must not name lhcb's paths, DIDs or object ids it was not
asked about (listings), and must leave the database and the SEs as they were, unless the route
creates the caller's own objects, which then leave every other document alone.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from cairn.components import route_tables
from tests.fixtures.authz import ALICES, DATASET, PRIVATE, SHARED, World
from tests.fixtures.multi_vo import CTA_QUOTA
from tests.test_authz_matrix import MATRIX, MATRIX_IDS, Case, bobs_objects

# Routes whose matrix call does not name lhcb's objects: here they do.
VO_CASES: dict[str, Case] = {
    "GET /vos/{name}": Case("/vos/lhcb", (200, 200, 404), changes=frozenset()),
    "GET /vos/{name}/members": Case("/vos/lhcb/members", (200, 200, 404), changes=frozenset()),
    "PATCH /vos/{name}/members": Case("/vos/lhcb/members", (403, 403, 404), {"add": ["mallory"]},
                                      changes=frozenset()),
    "PUT /quotas": Case("/quotas", (403, 403, 403), {"account": "lhcb:bob", "se": "DISK2", "bytes": 1},
                        changes=frozenset()),
    "DELETE /quotas": Case("/quotas", (403, 403, 403), params={"account": "lhcb:bob", "se": "DISK2"},
                           changes=frozenset()),
    "PUT /vos/{name}": Case("/vos/lhcb", (403, 403, 403), {"name": "lhcb", "roots": ["/cta"]},
                            changes=frozenset()),
    "PUT /job-shares/{group}": Case("/job-shares/lhcb:phys", (403, 403, 403), {"share": 5}, changes=frozenset()),
    "DELETE /vos/{name}": Case("/vos/lhcb", (403, 403, 403), changes=frozenset()),
    "PATCH /vos/{name}/ses/{se}": Case("/vos/lhcb/ses/DISK1", (403, 403, 404), {"write_enabled": False},
                                       changes=frozenset()),
    "POST /vos/{name}/migrate": Case("/vos/lhcb/migrate", (403, 403, 403), changes=frozenset()),
    # A VO's admin lists and moves its VO's names only; another VO's name is refused by its text.
    "GET /identities": Case("/identities", (403, 403, 200), changes=frozenset()),
    "PUT /identities/{name}": Case("/identities/lhcb:bob", (403, 403, 403), {"issuer": "https://iam.example"},
                                   changes=frozenset()),
    "DELETE /identities/{name}": Case("/identities/lhcb:bob", (403, 403, 404), changes=frozenset()),
    "POST /identities/move": Case("/identities/move", (403, 403, 200),
                                  {"from": "https://nobody.example", "to": "https://iam.example"},
                                  changes=frozenset()),
    # A VO's admin declares fields for its own VO (tests/test_multi_vo_fields.py): an outsider's own object.
    "PUT /metadata/fields": Case("/metadata/fields", (403, 403, 200), {"key": "ctaonly", "type": "int"},
                                 changes=frozenset({"alice"})),
    "DELETE /metadata/fields": Case("/metadata/fields", (403, 403, 404), params={"key": "nosuchfield"},
                                    changes=frozenset()),
    # A revocation by jti reaches the caller's own VO only, and answers alike whatever the jti names
    # (tests/test_token_revocation.py): an outsider's own object. A VO's admin lists its VO's.
    "POST /tokens/revocations": Case("/tokens/revocations", (200, 200, 200), {"jti": "some-token-id"},
                                     changes=frozenset({"alice"})),
    "GET /tokens/revocations": Case("/tokens/revocations", (403, 403, 200), changes=frozenset()),
}
# Installation totals that mix VOs are refused to a confined caller.
REFUSED = {"GET /usage/ses", "GET /transfers/stats", "GET /transfers/series"}


NAMES = {"/lhcb": "/lhcz", "lhcb:": "lhcz:", "bobsub": "nosub"}  # substrings of lhcb's names


def missing_ids() -> dict[str, str]:
    """Ids of bob's objects -> ids of the same shape that no object has."""
    flip = str.maketrans("0123456789abcdef", "fedcba9876543210")
    return {v: str(10 ** 9 + int(v)) if v.isdigit() else v.translate(flip) for v in MATRIX_IDS.values()}


def swap(value: Any, ids: dict[str, str]) -> Any:
    """lhcb's names in a path, body or query swapped for missing ones: whole ids, names by substring."""
    if isinstance(value, dict):
        return {k: swap(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [swap(v, ids) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith("/") and not value.startswith("/lhcb"):
        return "/".join(ids.get(part, part) for part in value.split("/"))
    if value in ids:
        return ids[value]
    if value == "lhcb":
        return "lhcz"
    for old, new in NAMES.items():
        value = value.replace(old, new)
    return value


def unswap(value: Any, ids: dict[str, str]) -> Any:
    """An answer about the missing names, told with lhcb's names (the fakes are unique strings)."""
    text = json.dumps(value)
    for real, fake in ids.items():
        text = text.replace(fake, real)
    for real, fake in {"lhcz": "lhcb", "nosub": "bobsub"}.items():
        text = text.replace(real, fake)
    return json.loads(text)


def call_of(key: str) -> tuple[str, str, Any, dict[str, str] | None, Case]:
    case = VO_CASES.get(key) or MATRIX[key]
    body = case.body("alice") if callable(case.body) else case.body
    return key.split(" ", 1)[0], case.path.format(**MATRIX_IDS), body, case.params or None, case


def additions_only(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Nothing that existed was changed or removed (counters and the change feed may move on)."""
    moving = {"counters", "feed_sequence", "catalogue_events"}
    return all(set(docs) <= set(after.get(name, [])) for name, docs in before.items() if name not in moving)


async def sweep(world: World, who: str) -> list[str]:
    names = missing_ids()
    # what names lhcb's objects in an answer (numeric job ids are too short to look for)
    markers = ["/lhcb", "lhcb:", "bobsub", *[v for v in MATRIX_IDS.values() if not v.isdigit()]]
    wrong: list[str] = []
    asked = ""
    state = await world.snapshot()
    for table in route_tables():
        for route in table.routes:
            key = f"{route.method} {route.path}"
            method, path, body, params, case = call_of(key)
            status, answer = await world.call(who, method, path, body, params)
            creates = "alice" in case.changes and status in (200, 201)
            after = await world.snapshot()
            if (creates and not additions_only(state, after)) or (not creates and after != state):
                wrong.append(f"{key} as {who}: changed the database or storage ({status})")
            state = after
            outsider_ok = case.status_for("alice") in (200, 201)
            refused = key in REFUSED or route.policy.admin
            if (refused and status != 403) or (not outsider_ok and status not in (403, 404)):
                wrong.append(f"{key} as {who}: {status}, expected a refusal: {str(answer)[:200]}")
            asked += json.dumps([path, body, params])  # the caller's own objects hold what it sent
            leaked = [m for m in markers if m in json.dumps(answer) and m not in asked]
            if leaked:
                wrong.append(f"{key} as {who}: the answer names lhcb's {leaked}: {str(answer)[:200]}")
            if creates:
                continue
            status_b, answer_b = await world.call(who, method, swap(path, names), swap(body, names),
                                                  swap(params, names))
            state = await world.snapshot()
            if (status, answer) != (status_b, unswap(answer_b, names)):
                wrong.append(f"{key} as {who}: answers {status} {str(answer)[:150]} but for missing objects "
                             f"{status_b} {str(unswap(answer_b, names))[:150]}")
    return wrong


async def test_a_user_of_another_vo_gets_what_missing_objects_get_on_every_route(vo_world: World) -> None:
    await bobs_objects(vo_world)
    wrong = await sweep(vo_world, "eve")
    assert not wrong, "\n".join(wrong)


async def test_an_admin_of_another_vo_gets_what_missing_objects_get_on_every_route(vo_world: World) -> None:
    await bobs_objects(vo_world)
    wrong = await sweep(vo_world, "ctaadmin")
    assert not wrong, "\n".join(wrong)


async def test_members_of_one_vo_work_as_in_a_single_vo_installation(vo_world: World) -> None:
    await bobs_objects(vo_world)
    for who in ("bob", "carol"):
        status, answer = await vo_world.call(who, "GET", "/files", params={"lfn": SHARED})
        assert status == 200 and answer["lfn"] == SHARED, answer
    status, answer = await vo_world.call("carol", "GET", "/files", params={"lfn": PRIVATE})
    assert status == 404, answer  # hidden inside the VO as before
    status, answer = await vo_world.call("bob", "GET", f"/rules/{MATRIX_IDS['rule']}")
    assert status == 200, answer
    status, answer = await vo_world.call("bob", "GET", "/dids/contents", params={"did": DATASET})
    assert status == 200 and {m["lfn"] for m in answer["members"]} == {PRIVATE, SHARED}, answer


async def test_a_vo_admin_is_admin_inside_its_vo(vo_world: World) -> None:
    status, answer = await vo_world.call("lhcbadmin", "GET", "/files", params={"lfn": PRIVATE})
    assert status == 200, answer  # bob's 0600 file: the VO's admin bypasses the modes
    status, answer = await vo_world.call("lhcbadmin", "GET", "/files", params={"lfn": ALICES})
    assert status == 404, answer
    status, answer = await vo_world.call("lhcbadmin", "PUT", "/sites/NEWSITE", {"name": "NEWSITE"})
    assert status == 403, answer  # global operation


async def test_listings_keep_to_the_callers_vo(vo_world: World) -> None:
    await bobs_objects(vo_world)
    for route in ("/rules", "/requests", "/jobs", "/transformations", "/productions", "/subscriptions"):
        status, seen_by_eve = await vo_world.call("eve", "GET", route)
        assert status == 200 and seen_by_eve == [], (route, seen_by_eve)
        status, seen_by_lhcbadmin = await vo_world.call("lhcbadmin", "GET", route)
        assert status == 200 and seen_by_lhcbadmin, (route, seen_by_lhcbadmin)
    status, listing = await vo_world.call("admin", "GET", "/namespace/ls", params={"path": "/"})
    assert {e["name"] for e in listing["entries"]} == {"lhcb", "cta"}
    status, answer = await vo_world.call("eve", "GET", "/namespace/ls", params={"path": "/"})
    assert status == 404, answer  # above the VO's root: like a missing directory
    status, ses = await vo_world.call("eve", "GET", "/ses")
    assert [s["name"] for s in ses] == ["DISK1", "DISK3"]


async def test_groups_of_the_same_name_in_two_vos_are_distinct(vo_world: World) -> None:
    _, bob = await vo_world.call("bob", "GET", "/whoami")
    _, eve = await vo_world.call("eve", "GET", "/whoami")
    assert (bob["vo"], bob["groups"], bob["roots"]) == ("lhcb", ["lhcb:phys"], ["/lhcb"])
    assert (eve["vo"], eve["groups"], eve["roots"]) == ("cta", ["cta:phys"], ["/cta"])
    assert not bob["global_admin"]
    _, entry = await vo_world.call("bob", "GET", "/namespace/stat", params={"path": SHARED})
    assert (entry["owner"], entry["group"]) == ("lhcb:bob", "lhcb:phys")


async def test_quotas_and_ses_are_per_vo(vo_world: World) -> None:
    rule = {"copies": 1, "expression": "DISK1"}
    status, answer = await vo_world.call("eve", "POST", "/rules", {"did": ALICES, **rule})
    assert status == 422 and answer["code"] == "quota_exceeded", answer  # cta's quota on DISK1
    status, answer = await vo_world.call("bob", "POST", "/rules", {"did": SHARED, **rule})
    assert status == 201, answer  # the same SE, lhcb has no quota there
    status, answer = await vo_world.call("eve", "POST", "/rules", {"did": ALICES, "copies": 1,
                                                                   "expression": "DISK2"})
    assert status == 400, answer  # lhcb's SE: not one cta may use
    status, answer = await vo_world.call("eve", "POST", "/requests/transfers", {"lfns": [ALICES], "dest_se": "DISK2"})
    assert status == 404, answer
    _, vo = await vo_world.call("ctaadmin", "GET", "/vos/cta")
    assert vo["ses"]["DISK1"]["quota_bytes"] == CTA_QUOTA


async def test_a_job_cannot_take_another_vos_dataset_as_input(vo_world: World) -> None:
    job = {"executable": "/bin/true", "input_dataset": DATASET}
    status, answer = await vo_world.call("eve", "POST", "/jobs", job)
    assert status == 404 and answer["message"] == f"job #0: DID {DATASET} does not exist", answer
    status, answer = await vo_world.call("bob", "POST", "/jobs", job)
    assert status == 201, answer


async def test_tokens_of_an_unregistered_vo_or_a_global_non_admin_are_refused(vo_world: World) -> None:
    status, _ = await vo_world.call("stranger", "GET", "/whoami")
    assert status == 401
    token = vo_world.api.token("root", vo="lhcb:x", groups=(), scopes=("catalogue.read",))
    vo_world.tokens["odd"] = token
    status, _ = await vo_world.call("odd", "GET", "/whoami")
    assert status == 401


async def test_a_vo_admin_manages_only_its_own_vos_members(vo_world: World) -> None:
    status, answer = await vo_world.call("ctaadmin", "PATCH", "/vos/cta/members", {"add": ["frank"]})
    assert status == 200 and answer["members"] == ["frank"], answer
    status, answer = await vo_world.call("eve", "PATCH", "/vos/cta/members", {"add": ["gina"]})
    assert status == 403, answer
    status, answer = await vo_world.call("ctaadmin", "PATCH", "/vos/lhcb/members", {"add": ["frank"]})
    assert status == 404, answer
    status, answer = await vo_world.call("ctaadmin", "PUT", "/vos/cta", {"name": "cta", "roots": ["/"]})
    assert status == 403, answer


async def test_fair_shares_of_groups_of_the_same_name_are_per_vo(vo_world: World) -> None:
    for group, share in (("lhcb:phys", 1.0), ("cta:phys", 3.0)):
        status, answer = await vo_world.call("admin", "PUT", f"/job-shares/{group}", {"share": share})
        assert status == 200, answer
    _, seen_by_eve = await vo_world.call("eve", "GET", "/job-shares")
    _, seen_by_bob = await vo_world.call("bob", "GET", "/job-shares")
    assert [(s["group"], s["share"]) for s in seen_by_eve] == [("cta:phys", 3.0)]
    assert [(s["group"], s["share"]) for s in seen_by_bob] == [("lhcb:phys", 1.0)]
    status, answer = await vo_world.call("ctaadmin", "PUT", "/job-shares/cta:phys", {"share": 9})
    assert status == 200, answer  # a VO's admin shares its VO's pilots among its groups
    status, answer = await vo_world.call("ctaadmin", "PUT", "/job-shares/lhcb:phys", {"share": 9})
    assert status == 404 and answer["message"] == "group lhcb:phys does not exist", answer
    status, answer = await vo_world.call("eve", "PUT", "/job-shares/cta:phys", {"share": 9})
    assert status == 403, answer
    _, seen_by_bob = await vo_world.call("bob", "GET", "/job-shares")
    assert [(s["group"], s["share"]) for s in seen_by_bob] == [("lhcb:phys", 1.0)]


async def test_a_vo_admin_sets_quotas_of_its_own_members_on_its_own_ses(vo_world: World) -> None:
    quota = {"account": "cta:eve", "se": "DISK3", "bytes": 5}
    status, answer = await vo_world.call("ctaadmin", "PUT", "/quotas", quota)
    assert status == 200, answer
    status, answer = await vo_world.call("eve", "GET", "/quotas")
    assert [(q["account"], q["se"], q["quota_bytes"]) for q in answer] == [("cta:eve", "DISK3", 5)]
    for refused in ({**quota, "se": "DISK2"}, {**quota, "account": "lhcb:bob"}, {**quota, "account": "eve"}):
        status, answer = await vo_world.call("ctaadmin", "PUT", "/quotas", refused)
        assert status == 403, (refused, answer)
    status, answer = await vo_world.call("eve", "PUT", "/quotas", quota)
    assert status == 403, answer


async def test_a_vo_cannot_take_another_vos_root_or_scope(vo_world: World) -> None:
    for body in ({"name": "km3net", "roots": ["/cta"]}, {"name": "km3net", "roots": ["/km3net"], "scopes": ["cta"]}):
        status, answer = await vo_world.call("admin", "PUT", "/vos/km3net", body)
        assert status == 409, answer
    status, answer = await vo_world.call("admin", "PUT", "/vos/km3net", {"name": "km3net", "roots": ["/km3net"]})
    assert status == 200, answer
    _, entry = await vo_world.call("admin", "GET", "/namespace/stat", params={"path": "/km3net"})
    assert entry["group"] == "km3net:km3net"


def test_missing_names_differ_from_the_real_ones() -> None:
    MATRIX_IDS.update(job="12", rule=uuid.uuid4().hex)
    ids = missing_ids()
    assert swap("/jobs/12/kill", ids) == f"/jobs/{10 ** 9 + 12}/kill"
    assert swap({"ids": [MATRIX_IDS["rule"]], "mode": 12}, ids) == {"ids": [ids[MATRIX_IDS["rule"]]], "mode": 12}
    assert swap({"did": "lhcb:x", "path": "/lhcb/a"}, ids) == {"did": "lhcz:x", "path": "/lhcz/a"}
    MATRIX_IDS.clear()
