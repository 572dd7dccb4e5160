"""The authorization matrix (issue 12): every route of the route table (the one the OpenAPI
document is generated from) called by bob (owner of /lhcb), carol (bob's group), alice (same
VO, other group), dave (a token without scopes) and mallory (a token of an untrusted issuer),
on bob's objects (tests.fixtures.authz). Each call must answer the status listed, and a call
not listed as changing state must leave the database and every SE's bytes as they were.

A route missing from MATRIX fails the test, so a new route gets an entry (and a decision)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cairn.components import route_tables
from tests.fixtures.authz import ALICES, DATASET, PRIVATE, SHARED, World

USERS = ("alice", "carol", "bob")  # callers holding every user scope; bob (the owner) goes last
Body = dict[str, Any] | Callable[[str], dict[str, Any]] | None


@dataclass
class Case:
    """One route's call and what bob, carol and alice get; `changes`: who may change state."""

    path: str
    expect: tuple[int, int, int]  # (bob, carol, alice)
    body: Body = None
    params: dict[str, str] = field(default_factory=dict)
    changes: frozenset[str] = frozenset({"bob"})

    def status_for(self, who: str) -> int:
        return dict(zip(("bob", "carol", "alice"), self.expect, strict=True))[who]


def same(status: int, path: str, **kw: Any) -> Case:
    """A route that answers every user alike and changes nothing (reads of shared things)."""
    return Case(path, (status, status, status), changes=frozenset(), **kw)


def admin_only(path: str) -> Case:
    return Case(path, (403, 403, 403), changes=frozenset())


def pilot_only(path: str) -> Case:
    return Case(path, (403, 403, 403), changes=frozenset())


def per_user(**bodies: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    return lambda who: bodies[who]


VICTIM_DIR = "/lhcb/pub/victims"
RULE = {"copies": 1, "expression": "DISK2"}
JOB = {"executable": "/bin/true", "input_data": [SHARED]}
TRANSFORMATION = {"name": "bobs", "input_query": "kind=raw", "job": {"executable": "/bin/true"}}

# (bob, carol, alice). Decisions: see catalogue.authorization; namespace refusals that are not
# about hidden contents stay 403 (traversal is checked before existence, so they reveal nothing).
MATRIX: dict[str, Case] = {
    "GET /health": same(200, "/health"),
    "GET /openapi.json": same(200, "/openapi.json"),
    "GET /.well-known/jwks.json": same(200, "/.well-known/jwks.json"),
    "GET /whoami": same(200, "/whoami"),
    # Anyone may revoke (their reach: tests/test_token_revocation.py); a token long expired stores nothing.
    "POST /tokens/revocations": same(200, "/tokens/revocations", body=lambda who: {"token": MATRIX_IDS["expired"]}),
    "GET /tokens/revocations": admin_only("/tokens/revocations"),
    "POST /namespace/mkdir": Case("/namespace/mkdir", (201, 403, 403), {"path": "/lhcb/pub/newdir"}),
    "GET /namespace/stat": Case("/namespace/stat", (200, 200, 403), params={"path": SHARED}, changes=frozenset()),
    "GET /namespace/ls": Case("/namespace/ls", (200, 200, 403), params={"path": "/lhcb/pub"}, changes=frozenset()),
    "GET /namespace/ls/stream": Case("/namespace/ls/stream", (200, 200, 403), params={"path": "/lhcb/pub"},
                                     changes=frozenset()),
    "POST /namespace/move": Case("/namespace/move", (200, 403, 403),
                                 {"source": f"{VICTIM_DIR}/mv.root", "destination": f"{VICTIM_DIR}/moved.root"}),
    "POST /namespace/remove": Case("/namespace/remove", (200, 403, 403), {"path": f"{VICTIM_DIR}/rm.root"}),
    "POST /namespace/chmod": Case("/namespace/chmod", (200, 403, 403), {"path": SHARED, "mode": 0o640}),
    "POST /namespace/chown": Case("/namespace/chown", (200, 403, 403), {"path": SHARED, "group": "lhcb"}),
    # bulk calls answer 200/201 with per-item failures: "nothing changed" is what tells
    "POST /files/register": Case("/files/register", (200, 200, 200), {"files": [
        {"lfn": "/lhcb/pub/new.root", "size": 1, "adler32": "00020002"}]}),
    "GET /files": Case("/files", (200, 200, 404), params={"lfn": SHARED}, changes=frozenset()),
    "POST /files/remove": Case("/files/remove", (200, 200, 200), {"lfns": [f"{VICTIM_DIR}/rmf.root"]}),
    "POST /replicas/resolve": same(200, "/replicas/resolve", body={"lfns": [SHARED, PRIVATE]}),
    "POST /replicas/add": Case("/replicas/add", (200, 200, 200), {"replicas": [{"lfn": SHARED, "se": "TAPE1"}]}),
    "POST /replicas/remove": Case("/replicas/remove", (200, 200, 200),
                                  {"replicas": [{"lfn": SHARED, "se": "TAPE1"}]}),
    "POST /replicas/status": Case("/replicas/status", (200, 403, 404),
                                  {"lfn": SHARED, "se": "DISK1", "status": "available"}),
    "POST /replicas/statuses": Case("/replicas/statuses", (200, 200, 200),
                                    {"replicas": [{"lfn": SHARED, "se": "DISK1", "status": "available"}]}),
    "POST /replicas/hold": Case("/replicas/hold", (200, 200, 200),
                                {"writer": "w" * 32, "replicas": [{"lfn": SHARED, "se": "DISK1"}]}),
    "POST /replicas/undo": Case("/replicas/undo", (200, 200, 200),
                                {"writer": "w" * 32, "se": "DISK1", "lfns": [SHARED]}),
    "POST /files/lookup": same(200, "/files/lookup", body={"lfns": [SHARED, PRIVATE]}),
    "GET /ses": same(200, "/ses"),
    "GET /ses/{name}": same(200, "/ses/DISK1"),
    "PUT /ses/{name}": admin_only("/ses/DISK1"),
    "PATCH /ses/{name}": admin_only("/ses/DISK1"),
    "DELETE /ses/{name}": admin_only("/ses/DISK1"),
    "GET /sites": same(200, "/sites"),
    "GET /sites/{name}": same(200, "/sites/SITE"),
    "PUT /sites/{name}": admin_only("/sites/SITE"),
    "DELETE /sites/{name}": admin_only("/sites/SITE"),
    "GET /site-queues": same(200, "/site-queues"),
    "PUT /sites/{name}/queues/{queue}": admin_only("/sites/SITE/queues/Q"),
    "DELETE /sites/{name}/queues/{queue}": admin_only("/sites/SITE/queues/Q"),
    "GET /metadata/fields": same(200, "/metadata/fields"),
    "PUT /metadata/fields": admin_only("/metadata/fields"),
    "DELETE /metadata/fields": admin_only("/metadata/fields"),
    "GET /metadata": Case("/metadata", (200, 200, 403), params={"path": SHARED}, changes=frozenset()),
    "POST /metadata/set": Case("/metadata/set", (200, 403, 403), {"path": SHARED, "values": {"run": 7}}),
    "POST /metadata/remove": Case("/metadata/remove", (200, 403, 403), {"path": SHARED, "keys": ["run"]}),
    "POST /find": Case("/find", (200, 200, 404), {"query": "size >= 0", "path": "/lhcb/pub"}, changes=frozenset()),
    "POST /find/explain": admin_only("/find/explain"),
    "POST /dids": Case("/dids", (201, 403, 403), {"did": "user.bob:new", "type": "dataset"}),
    "GET /dids": same(200, "/dids", params={"did": DATASET}),
    "GET /dids/list": same(200, "/dids/list", params={"scope": "lhcb"}),
    # DIDs change for their owner and their group (catalogue.datasets): carol may
    "POST /dids/state": Case("/dids/state", (200, 200, 403), per_user(
        alice={"did": "lhcb:victim", "action": "close"}, carol={"did": "lhcb:victim", "action": "close"},
        bob={"did": "lhcb:victim", "action": "reopen"}), changes=frozenset({"bob", "carol"})),
    "POST /dids/attach": Case("/dids/attach", (200, 200, 403), {"did": DATASET, "lfns": [ALICES]},
                              changes=frozenset({"bob", "carol"})),
    "POST /dids/detach": Case("/dids/detach", (200, 200, 403), {"did": DATASET, "lfns": [ALICES]},
                              changes=frozenset({"bob", "carol"})),
    "POST /dids/refresh": Case("/dids/refresh", (400, 400, 403), {"did": DATASET}, changes=frozenset()),
    "POST /dids/rebuild-counts": admin_only("/dids/rebuild-counts"),
    "GET /dids/contents": same(200, "/dids/contents", params={"did": DATASET}),
    "GET /dids/contents/stream": same(200, "/dids/contents/stream", params={"did": DATASET}),
    "GET /provenance": Case("/provenance", (200, 200, 404), params={"lfn": SHARED}, changes=frozenset()),
    "POST /provenance/link": Case("/provenance/link", (200, 403, 404), {"lfn": SHARED, "ancestors": [ALICES]}),
    "GET /usage/directory": Case("/usage/directory", (200, 200, 404), params={"path": "/lhcb/pub"},
                                 changes=frozenset()),
    "GET /usage/ses": same(200, "/usage/ses"),
    "POST /usage/rebuild": admin_only("/usage/rebuild"),
    "GET /replicas/bad": admin_only("/replicas/bad"),
    "GET /feed": admin_only("/feed"),
    "GET /ses/{name}/dump": admin_only("/ses/DISK1/dump"),
    "GET /expressions/resolve": same(200, "/expressions/resolve", params={"expression": "DISK1"}),
    "POST /rules": Case("/rules", (201, 201, 404), {"did": SHARED, **RULE}, changes=frozenset({"bob", "carol"})),
    "GET /rules": same(200, "/rules"),
    "GET /rules/{id}": Case("/rules/{rule}", (200, 404, 404), changes=frozenset()),
    "GET /rules/{id}/locks": Case("/rules/{rule}/locks", (200, 404, 404), changes=frozenset()),
    "PATCH /rules/{id}": Case("/rules/{rule}", (200, 404, 404), {"comment": "changed"}),
    "DELETE /rules/{id}": Case("/rules/{victim_rule}", (200, 404, 404)),
    "GET /quotas": same(200, "/quotas"),
    "PUT /quotas": admin_only("/quotas"),  # users hold rules.write: refused as no admins
    "DELETE /quotas": admin_only("/quotas"),
    "POST /quotas/rebuild": admin_only("/quotas/rebuild"),
    # subscriptions are anyone's with rules.write (their rules are not checked per dataset)
    "POST /subscriptions": Case("/subscriptions", (201, 201, 201), lambda who: {
        "name": f"sub-{who}", "filter": {"scopes": ["lhcb"]}, "rule": RULE}, changes=frozenset(USERS)),
    "GET /subscriptions": same(200, "/subscriptions"),
    "GET /subscriptions/{name}": same(200, "/subscriptions/bobsub"),
    "DELETE /subscriptions/{name}": Case("/subscriptions/bobsub", (200, 403, 403)),
    "POST /requests/transfers": Case("/requests/transfers", (201, 201, 201), {"lfns": [SHARED], "dest_se": "DISK2"},
                                     changes=frozenset({"bob", "carol"})),
    "POST /requests/stages": Case("/requests/stages", (201, 201, 201), {"lfns": [SHARED], "se": "TAPE1"},
                                  changes=frozenset({"bob", "carol"})),
    "POST /requests/deletions": Case("/requests/deletions", (201, 201, 201), {"lfns": [SHARED], "se": "DISK2"}),
    "GET /requests": same(200, "/requests"),
    "GET /requests/{id}": Case("/requests/{request}", (200, 404, 404), changes=frozenset()),
    "GET /submissions/{id}": Case("/submissions/{submission}", (200, 404, 404), changes=frozenset()),
    "POST /requests/cancel": Case("/requests/cancel", (200, 200, 200), lambda who: {"ids": [MATRIX_IDS["request"]]}),
    "POST /requests/release": Case("/requests/release", (200, 200, 200),
                                   lambda who: {"ids": [MATRIX_IDS["request"]]}),
    # a GET URL needs r on the file; the SE (posix) then cannot sign: 501
    "POST /storage/signed-url": Case("/storage/signed-url", (501, 501, 404), {"lfn": SHARED, "se": "DISK1"},
                                     changes=frozenset()),
    # deleting an upload's object needs w on the file and a copying replica (bob's is available: 409)
    "POST /storage/discard": Case("/storage/discard", (409, 403, 404), {"lfn": SHARED, "se": "DISK1"},
                                  changes=frozenset()),
    "GET /transfers/stats": same(200, "/transfers/stats"),
    "GET /transfers/series": same(200, "/transfers/series"),
    "GET /transfers/activity": same(200, "/transfers/activity"),
    "GET /transfer-shares": same(200, "/transfer-shares"),
    "PUT /transfer-shares/vos/{vo}": Case("/transfer-shares/vos/lhcb", (403, 403, 403), {"share": 2},
                                          changes=frozenset()),
    "PUT /transfer-shares/activities/{activity}": Case("/transfer-shares/activities/production", (403, 403, 403),
                                                       {"share": 2}, changes=frozenset()),
    "DELETE /transfer-shares/activities/{activity}": admin_only("/transfer-shares/activities/production"),
    "POST /jobs": Case("/jobs", (201, 201, 201), {"jobs": [JOB]}, changes=frozenset(USERS)),
    "GET /jobs": same(200, "/jobs"),
    "GET /job-summary": same(200, "/job-summary"),
    # jobs are no namespace objects; another's job answers as a missing one (ids are sequential)
    "GET /jobs/{id}": Case("/jobs/{job}", (200, 404, 404), changes=frozenset()),
    "GET /jobs/{id}/logs": Case("/jobs/{job}/logs", (200, 404, 404), changes=frozenset()),
    "POST /jobs/{id}/kill": Case("/jobs/{job}/kill", (200, 404, 404), {}),
    "POST /jobs/{id}/reschedule": Case("/jobs/{job}/reschedule", (200, 404, 404), {}),  # killed just before
    "GET /task-queues": same(200, "/task-queues"),
    "GET /job-shares": same(200, "/job-shares"),
    "PUT /job-shares/{group}": Case("/job-shares/lhcb", (403, 403, 403), {"share": 2}, changes=frozenset()),
    "POST /job-counters/rebuild": admin_only("/job-counters/rebuild"),
    "GET /vo-shares": same(200, "/vo-shares"),
    "PUT /vo-shares/{vo}": Case("/vo-shares/lhcb", (403, 403, 403), {"share": 2}, changes=frozenset()),
    "POST /jobs/match": pilot_only("/jobs/match"),
    "POST /jobs/{id}/start": pilot_only("/jobs/{job}/start"),  # users hold no jobs.pilot
    "POST /jobs/{id}/heartbeat": pilot_only("/jobs/{job}/heartbeat"),
    "POST /jobs/{id}/outputs": pilot_only("/jobs/{job}/outputs"),
    "POST /jobs/{id}/output-slots": pilot_only("/jobs/{job}/output-slots"),
    "POST /jobs/{id}/report": pilot_only("/jobs/{job}/report"),
    # transformations are like jobs: only the owner (or an admin) sees one; to others it is missing
    "POST /transformations": Case("/transformations", (201, 201, 201), lambda who: {**TRANSFORMATION, "name": who},
                                  changes=frozenset(USERS)),
    "GET /transformations": same(200, "/transformations"),
    "GET /transformations/{id}": Case("/transformations/{transformation}", (200, 404, 404), changes=frozenset()),
    "GET /transformations/{id}/files": Case("/transformations/{transformation}/files", (200, 404, 404),
                                            changes=frozenset()),
    "GET /transformations/{id}/tasks": Case("/transformations/{transformation}/tasks", (200, 404, 404),
                                            changes=frozenset()),
    # bob's is new (no feeder runs here): it cannot be flushed before its initial query ran
    "POST /transformations/{id}/flush": Case("/transformations/{transformation}/flush", (409, 404, 404), {},
                                             changes=frozenset()),
    "POST /transformations/{id}/stop": Case("/transformations/{transformation}/stop", (200, 404, 404), {}),
    "POST /transformations/{id}/start": Case("/transformations/{transformation}/start", (200, 404, 404), {}),
    "POST /transformations/{id}/extend": Case("/transformations/{transformation}/extend", (200, 404, 404),
                                              {"tasks": 1}),
    # bob's is active again after start: it must be stopped before it is cleaned
    "POST /transformations/{id}/clean": Case("/transformations/{transformation}/clean", (409, 404, 404), {},
                                             changes=frozenset()),
    "DELETE /transformations/{id}": Case("/transformations/{transformation}", (200, 404, 404)),
    "POST /productions": Case("/productions", (201, 201, 201),
                              lambda who: {"name": who, "steps": [{**TRANSFORMATION, "name": who}]},
                              changes=frozenset(USERS)),
    "GET /productions": same(200, "/productions"),
    "GET /productions/{id}": Case("/productions/{production}", (200, 404, 404), changes=frozenset()),
    "GET /productions/{id}/status": Case("/productions/{production}/status", (200, 404, 404), changes=frozenset()),
    "POST /productions/{id}/stop": Case("/productions/{production}/stop", (200, 404, 404), {}),
    "POST /productions/{id}/start": Case("/productions/{production}/start", (200, 404, 404), {}),
    "DELETE /productions/{id}": Case("/productions/{production}", (200, 404, 404)),
    "GET /pilots": same(200, "/pilots"),
    "GET /pilots/{name}": same(404, "/pilots/NOPE"),  # pilots are no user's objects; none exists here
    "GET /pilots/{name}/logs": admin_only("/pilots/NOPE/logs"),
    # a report counts only when the server finds the replica missing too: bob's is there
    "POST /replicas/suspicious": Case("/replicas/suspicious", (200, 200, 404), {"lfn": SHARED, "se": "DISK1"},
                                      changes=frozenset()),
    "POST /audit/runs": admin_only("/audit/runs"),
    "GET /audit/runs": admin_only("/audit/runs"),
    "GET /audit/runs/{id}": admin_only("/audit/runs/audit-000000000000"),
    "GET /audit/runs/{id}/entries": admin_only("/audit/runs/audit-000000000000/entries"),
    "POST /audit/runs/{id}/clean-dark": admin_only("/audit/runs/audit-000000000000/clean-dark"),
    # no VO is registered here (single-VO installation): tests/test_multi_vo.py covers VOs
    "GET /vos": same(200, "/vos"),
    "GET /vos/{name}": same(404, "/vos/NOPE"),
    "PUT /vos/{name}": admin_only("/vos/NOPE"),
    "GET /vos/{name}/members": same(404, "/vos/NOPE/members"),
    "PATCH /vos/{name}/members": same(404, "/vos/NOPE/members", body={"add": ["eve"]}),
    "DELETE /vos/{name}": admin_only("/vos/NOPE"),
    "PATCH /vos/{name}/ses/{se}": same(404, "/vos/NOPE/ses/DISK1", body={"write_enabled": False}),
    "POST /vos/{name}/migrate": admin_only("/vos/NOPE/migrate"),
    "GET /identities": admin_only("/identities"),
    "PUT /identities/{name}": Case("/identities/bob", (403, 403, 403), {"issuer": "https://iam.example"},
                                   changes=frozenset()),
    "DELETE /identities/{name}": admin_only("/identities/bob"),
    "POST /identities/move": Case("/identities/move", (403, 403, 403), {"from": "cairn", "to": "https://iam.example"},
                                  changes=frozenset()),
}
MATRIX_IDS: dict[str, str] = {}


async def bobs_objects(world: World) -> None:
    """What the matrix acts on besides the world's files: victims, a rule, a request, a job."""
    MATRIX_IDS["expired"] = world.api.token("bob", vo="cta", groups=("lhcb",), lifetime_s=-3600)
    async with world.client("bob") as bob:
        await bob.mkdir(VICTIM_DIR, mode=0o755)  # carol (group lhcb) may not write in it
        result = await bob.register_files([{"lfn": f"{VICTIM_DIR}/{n}", "size": 1, "adler32": "00020002"}
                                           for n in ("mv.root", "rm.root", "rmf.root")])
        assert not result["failed"], result
        await bob.request("POST", "/dids", json_body={"did": "lhcb:victim", "type": "dataset"})
    for key, body in (("rule", {"did": PRIVATE, **RULE}), ("victim_rule", {"did": PRIVATE, **RULE})):
        status, answer = await world.call("bob", "POST", "/rules", body)
        assert status == 201, answer
        MATRIX_IDS[key] = answer["id"]
    status, answer = await world.call("bob", "POST", "/requests/transfers", {"lfns": [PRIVATE], "dest_se": "DISK2"})
    assert status == 201 and answer["successful"], answer
    MATRIX_IDS.update(request=answer["successful"][PRIVATE], submission=answer["submission"])
    status, answer = await world.call("bob", "POST", "/subscriptions", {"name": "bobsub", "rule": RULE})
    assert status == 201, answer
    status, answer = await world.call("bob", "POST", "/jobs", {"jobs": [JOB]})
    assert status == 201, answer
    MATRIX_IDS["job"] = answer["ids"][0]
    status, answer = await world.call("bob", "POST", "/transformations", TRANSFORMATION)
    assert status == 201, answer
    MATRIX_IDS["transformation"] = answer["id"]
    status, answer = await world.call("bob", "POST", "/productions", {"name": "bobs", "steps": [TRANSFORMATION]})
    assert status == 201, answer
    MATRIX_IDS["production"] = answer["id"]


def generic_status(policy: str, who: str) -> int:
    """dave (no scopes) and mallory (untrusted issuer) get what the route's policy says."""
    if who == "mallory":
        return 401  # a bad token is refused even on public routes
    return 200 if policy in ("public", "any authenticated caller") else 403


async def test_every_route_answers_every_caller_as_the_matrix_says(world: World) -> None:
    routes = [(f"{r.method} {r.path}", r.policy.describe()) for table in route_tables() for r in table.routes]
    missing = [key for key, _ in routes if key not in MATRIX]
    assert not missing, f"routes without an entry in the authorization matrix: {missing}"
    assert not set(MATRIX) - {key for key, _ in routes}, "matrix entries for routes that do not exist"
    await bobs_objects(world)
    wrong: list[str] = []
    state = await world.snapshot()

    async def unchanged_by(callers: list[str], key: str) -> dict[str, Any]:
        """The state now, after checking that `callers` (none of whom may change it) did not."""
        after = await world.snapshot()
        if after != state:
            wrong.append(f"{key} as {' or '.join(callers)}: changed the database or storage")
        return after

    for key, policy in routes:
        case = MATRIX[key]
        method = key.split(" ", 1)[0]
        path = case.path.format(**MATRIX_IDS)
        # The state is read once after a run of callers who may not change it (the snapshot is
        # most of this test's time), and after each caller who may.
        quiet: list[str] = []
        for who in ("mallory", "dave", *USERS):
            body = case.body(who if who in USERS else "bob") if callable(case.body) else case.body
            generic = who in ("mallory", "dave") or policy == "admin"
            may_change = not generic and who in case.changes
            if may_change and quiet:
                state, quiet = await unchanged_by(quiet, key), []
            expected = generic_status(policy, who) if who in ("mallory", "dave") else case.status_for(who)
            status, answer = await world.call(who, method, path, body, case.params or None)
            if status != expected:
                wrong.append(f"{key} as {who}: {status} (expected {expected}) {str(answer)[:200]}")
            if may_change:
                state = await world.snapshot()
            else:
                quiet.append(f"{who} ({status})")
        if quiet:
            state = await unchanged_by(quiet, key)
    assert not wrong, "\n".join(wrong)
