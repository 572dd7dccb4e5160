"""A hidden object answers exactly like a missing one, on every route of the route table.

Each route's call is the authorization matrix's (tests/test_authz_matrix.py) on bob's objects,
made twice by a caller who may not see them: once naming them (a file or directory below a
0700 directory, under a root the caller cannot traverse, in another VO; bob's rule, request,
job, transformation, production ids) and once naming missing ones at parallel names (the same
directory, a file or directory that was never made; an id of the same shape). The two answers
must have the same status, the same body once the names are swapped back, and the same headers
but for Date and Content-Length. Bulk routes answer per item: the reasons are compared so.

Views: alice (same VO, group cta: /lhcb is 0750 lhcb), carol (group lhcb: /lhcb/data is 0700
bob's) and eve (another VO: lhcb's root). What a route answers a caller who may see the object
is the matrix's business; names the caller may see (DIDs and subscriptions are shared names
within a VO) are left as they are for the same-VO callers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from cairn.components import route_tables
from kernel.db import COMMANDS
from kernel.web import API_PREFIX
from tests.fixtures.authz import DATASET, PRIVATE, SHARED, World
from tests.test_authz_matrix import MATRIX, MATRIX_IDS, bobs_objects

LOOSE_HEADERS = {"date", "content-length"}
# Routes whose matrix call names nothing of bob's (or makes the caller's own, named by its caller).
NAMES_NOTHING_HIDDEN = {"POST /subscriptions", "POST /transformations", "POST /productions"}
# Calls the matrix does not make, naming bob's objects where it names none: (method, path, body, params).
EXTRA: dict[str, tuple[str, str, Any, dict[str, str] | None]] = {
    "job output over a file": ("POST", "/jobs", {"executable": "/bin/true",
                                                 "outputs": [{"path": "o", "lfn": SHARED, "se": "DISK1"}]}, None),
    "rules of a file": ("GET", "/rules", None, {"did": SHARED}),
    "directory listing of its files": ("GET", "/namespace/ls", None, {"path": "/lhcb/pub/victims"}),
    "a file's descendants": ("GET", "/provenance", None, {"lfn": SHARED, "direction": "descendants"}),
    "registering an existing file": ("POST", "/files/register", {"files": [
        {"lfn": SHARED, "size": 1, "adler32": "00020002"}]}, None),
    "making an existing directory": ("POST", "/namespace/mkdir", {"path": "/lhcb/pub/victims"}, None),
    "a directory's metadata": ("GET", "/metadata", None, {"path": "/lhcb/pub/victims"}),
    "setting a directory's metadata": ("POST", "/metadata/set", {"path": "/lhcb/pub/victims", "values": {"a": 1}},
                                       None),
    "a directory's mode": ("POST", "/namespace/chmod", {"path": "/lhcb/pub/victims", "mode": 0o777}, None),
    "moving a directory": ("POST", "/namespace/move", {"source": "/lhcb/pub/victims",
                                                        "destination": "/cta/mc/v"}, None),
    "removing a directory": ("POST", "/namespace/remove", {"path": "/lhcb/pub/victims"}, None),
    "a directory listing as a stream": ("GET", "/namespace/ls/stream", None, {"path": "/lhcb/pub/victims"}),
    "a directory's entry": ("GET", "/namespace/stat", None, {"path": "/lhcb/pub/victims"}),
    # SEs of one VO are hidden from another's members and admins (DISK2 is lhcb's in vo_world)
    "an SE": ("GET", "/ses/DISK2", None, None),
    "an SE's dump": ("GET", "/ses/DISK2/dump", None, None),
    "an SE's audit": ("POST", "/audit/runs", {"se": "DISK2"}, None),
    "an SE's audits": ("GET", "/audit/runs", None, {"se": "DISK2"}),
    "an SE's space for the VO": ("PATCH", "/vos/cta/ses/DISK2", {"write_enabled": False}, None),
    "a quota on an SE": ("PUT", "/quotas", {"account": "cta:eve", "se": "DISK2", "bytes": 1}, None),
    "a scope's DIDs": ("GET", "/dids/list", None, {"scope": "lhcb"}),
}
FRESH = ("submission", "ids", "id")  # what names an object the call itself made (new at each call)


@dataclass
class View:
    who: str
    hidden: dict[str, str]  # the matrix's names -> names the caller cannot see (applied in order)
    missing: dict[str, str]  # those names -> parallel names of nothing (none inside another)


DATA = {SHARED: PRIVATE, "/lhcb/pub/victims": "/lhcb/data/victims", "/lhcb/pub": "/lhcb/data/victims"}
TO_DATA = {"/lhcb/data/f1.root": "/lhcb/data/f9.root", "/lhcb/data/victims": "/lhcb/data/victimz"}
SAME_VO = (
    View("alice", {}, {"/lhcb/data/f1.root": "/lhcb/data/f9.root", "/lhcb/pub": "/lhcb/pux"}),
    View("alice", DATA, TO_DATA),  # below the 0700 directory too
    View("carol", DATA, TO_DATA),  # carol reads /lhcb/pub: only /lhcb/data is hidden from her
)
# DIDs, subscriptions and SEs are shared within a VO; another VO's are hidden (scope lhcb: a missing one)
FOREIGN = {"lhcb:bob.ds": "lhcz:bob.ds", "lhcb:victim": "lhcz:victim", "bobsub": "bobsuc", "DISK2": "DISK9",
           "TAPE1": "TAPE9", "\"lhcb\"": "\"lhcz\""}
OTHER_VO = tuple(View(who, v.hidden, {**v.missing, **FOREIGN}) for v in SAME_VO[:2] for who in ("eve", "ctaadmin"))


def flipped_ids() -> dict[str, str]:
    flip = str.maketrans("0123456789abcdef", "fedcba9876543210")
    return {v: str(10 ** 9 + int(v)) if v.isdigit() else v.translate(flip)
            for k, v in MATRIX_IDS.items() if k != "expired"}


def rename(value: Any, names: dict[str, str]) -> Any:
    """`names` replaced by substring, in order."""
    text = json.dumps(value)
    for old, new in names.items():
        text = text.replace(old, new)
    return json.loads(text)


def settled(status: int, answer: Any) -> Any:
    """The answer with the ids of what the call made itself left out."""
    if status == 201 and isinstance(answer, dict):
        return {k: "<made>" if k in FRESH else v for k, v in answer.items()}
    return answer


async def call(world: World, who: str, method: str, path: str, body: Any,
               params: dict[str, str] | None) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {world.tokens[who]}"}
    async with aiohttp.ClientSession() as session, session.request(
            method, world.api.url + API_PREFIX + path, json=body, params=params, headers=headers) as resp:
        text = await resp.text()
        kept = {k.lower(): v for k, v in resp.headers.items() if k.lower() not in LOOSE_HEADERS}
        try:
            return resp.status, json.loads(text), kept
        except ValueError:
            return resp.status, text, kept


def calls() -> list[tuple[str, str, str, Any, dict[str, str] | None]]:
    """(what, method, path, body, params): the matrix's call of every route, then the extra ones."""
    found = []
    for table in route_tables():
        for route in table.routes:
            key = f"{route.method} {route.path}"
            if key in NAMES_NOTHING_HIDDEN:
                continue
            case = MATRIX[key]
            body = case.body("alice") if callable(case.body) else case.body
            found.append((key, route.method, case.path.format(**MATRIX_IDS), body, case.params or None))
    return found + [(what, *call) for what, call in EXTRA.items()]


async def differences(world: World, view: View) -> list[str]:
    names = {**flipped_ids(), **view.missing}
    back = {new: old for old, new in reversed(names.items())}
    wrong: list[str] = []
    for what, method, path, body, params in calls():
        hidden = rename([path, body, params], view.hidden)
        missing = rename(hidden, names)
        if missing == hidden:
            continue  # names nothing of bob's
        status, answer, headers = await call(world, view.who, method, *hidden)
        status_b, answer_b, headers_b = await call(world, view.who, method, *missing)
        seen = (status, settled(status, answer), headers)
        absent = (status_b, settled(status_b, rename(answer_b, back)), headers_b)
        if seen != absent:
            wrong.append(f"{what} as {view.who} ({path} {body} {params}):\n    hidden {seen}\n    missing {absent}")
    return wrong


async def test_a_hidden_object_answers_like_a_missing_one_on_every_route(world: World) -> None:
    await bobs_objects(world)
    await hidden_victims(world)
    wrong = [line for view in SAME_VO for line in await differences(world, view)]
    assert not wrong, "\n".join(wrong)


async def test_another_vos_object_answers_like_a_missing_one_beside_it_on_every_route(vo_world: World) -> None:
    await bobs_objects(vo_world)
    await hidden_victims(vo_world)
    wrong = [line for view in OTHER_VO for line in await differences(vo_world, view)]
    assert not wrong, "\n".join(wrong)


async def hidden_victims(world: World) -> None:
    """Files for the moves and removals of the matrix, below bob's 0700 directory."""
    async with world.client("bob") as bob:
        await bob.mkdir("/lhcb/data/victims", mode=0o755)
        result = await bob.register_files([{"lfn": f"/lhcb/data/victims/{n}", "size": 1, "adler32": "00020002"}
                                           for n in ("mv.root", "rm.root", "rmf.root")])
        assert not result["failed"], result


BULK = {  # routes naming many files: (path, body for the names)
    "/replicas/resolve": lambda lfns: {"lfns": lfns},
    "/files/lookup": lambda lfns: {"lfns": lfns},
    "/files/remove": lambda lfns: {"lfns": lfns},
    "/replicas/statuses": lambda lfns: {"replicas": [{"lfn": f, "se": "DISK1", "status": "bad"} for f in lfns]},
    "/replicas/add": lambda lfns: {"replicas": [{"lfn": f, "se": "TAPE1"} for f in lfns]},
    "/replicas/remove": lambda lfns: {"replicas": [{"lfn": f, "se": "DISK1"} for f in lfns]},
    "/replicas/hold": lambda lfns: {"writer": "w" * 32, "replicas": [{"lfn": f, "se": "DISK1"} for f in lfns]},
    "/requests/transfers": lambda lfns: {"lfns": lfns, "dest_se": "DISK2"},
    "/requests/stages": lambda lfns: {"lfns": lfns, "se": "TAPE1"},
    "/requests/deletions": lambda lfns: {"lfns": lfns, "se": "DISK1"},
    "/dids/attach": lambda lfns: {"did": DATASET, "lfns": lfns},
    "/jobs": lambda lfns: {"executable": "/bin/true", "input_data": lfns},
}


async def test_a_batch_naming_hidden_files_does_not_read_them(world: World, monkeypatch: Any) -> None:
    """A batch of names in a directory the caller cannot search costs what a batch of missing
    names does: the hidden files' records are not read (they made it 3-10x slower per name,
    telling how many of the names exist)."""
    wrong = await hidden_records_read(world, monkeypatch, ("alice", "carol"))
    assert not wrong, "\n".join(wrong)


async def test_a_batch_naming_another_vos_files_does_not_read_them(vo_world: World, monkeypatch: Any) -> None:
    wrong = await hidden_records_read(vo_world, monkeypatch, ("eve", "ctaadmin"))
    assert not wrong, "\n".join(wrong)


async def hidden_records_read(world: World, monkeypatch: Any, callers: tuple[str, ...]) -> list[str]:
    """The bulk routes that, called by `callers`, read records of files below bob's 0700 directory."""
    hidden = [f"/lhcb/data/many/f{i}.root" for i in range(20)]
    async with world.client("bob") as bob:
        await bob.mkdir("/lhcb/data/many", mode=0o755)
        result = await bob.register_files([{"lfn": lfn, "size": 1, "adler32": "00020002",
                                            "replicas": [{"se": "DISK1"}]} for lfn in hidden])
        assert not result["failed"], result
    read: list[str] = []
    monkeypatch.setattr(COMMANDS, "succeeded", lambda event: read.append(json.dumps(event.reply, default=str)))
    wrong = []
    for who in callers:
        for path, body in BULK.items():
            read.clear()
            status, _ = await world.call(who, "POST", path, body(hidden))
            if any(lfn in reply for reply in read for lfn in hidden):
                wrong.append(f"{path} as {who} ({status}) read hidden files' records")
    return wrong
