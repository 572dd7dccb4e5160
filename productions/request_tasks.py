"""Tasks of replication and removal transformations: each becomes requests in the transfer
queue (`transfers.queueing.submit`), and is followed by their states.

Submission is exactly once without a recorded id: the task's id is the requests' `submission`,
and the queue reuses an identical open request instead of doubling it, so a submitter that
died before recording the requests submits again and gets the same ones. Replication asks
for copies on the SEs of the expression that do not hold the file yet, until `copies` of them
do (a task of the `broadcast` plugin: on every one of its `target_ses`; of the `share` plugin:
one copy on the expression's SEs at its `site`); removal deletes the replicas on the
expression's SEs, never a file's last replica (no request for those: they are left as they are).

A task asks as its transformation's owner (the requests are the owner's, `user:<owner>`, as its
direct ones), with the checks `POST /requests/...` makes: the transfers.write scope, r on each
file to copy it, w to delete its replicas (feeding needs only r), only SEs of the owner's VO,
and the requests stamped with that VO. A task holding a file the owner may not act on is
refused whole (`Forbidden`; task_submission records the refusal), nothing of it queued.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import REQUEST_DELETION, REQUEST_TRANSFER, Action, authorize_files, se_in_vo, vo_stamp
from catalogue.permissions import NO_SUCH_FILE
from catalogue.vos import confine_owner
from kernel.db import Document
from kernel.errors import Forbidden
from kernel.principal import Principal
from productions import tasks, transformation_files, transformations
from rules.rule_admission import resolve_expression
from transfers import queueing, requests
from transfers.shared_requests import cancel_as, of_submission

REQUEST_KIND: dict[str, requests.Kind] = {"replication": "transfer", "removal": "delete"}
REQUEST_ACTION: dict[str, Action] = {"replication": REQUEST_TRANSFER, "removal": REQUEST_DELETION}


def _items(kind: str, template: dict[str, Any], files: dict[str, Document], targets: list[str]) -> list[Document]:
    items: list[Document] = []
    for lfn, doc in sorted(files.items()):
        held = [r["se"] for r in doc.get("replicas", []) if r.get("status", "available") == "available"]
        guid = doc.get("guid")  # the file the owner was authorized for, not one registered at the LFN later
        if kind == "replication":
            missing = max(0, int(template["copies"]) - len([se for se in held if se in targets]))
            items += [{"lfn": lfn, "dest_se": se, "guid": guid} for se in targets if se not in held][:missing]
        else:
            doomed = [se for se in held if se in targets]
            if len(doomed) == len(held):
                doomed = doomed[1:]  # keep the last replica
            items += [{"lfn": lfn, "dest_se": se, "guid": guid} for se in doomed]
    return items


def _task_targets(template: dict[str, Any], env: dict[str, Any], ses: list[Document]) -> tuple[list[str], int]:
    """The SEs this task may copy to, and how many copies it keeps there."""
    if env.get("target_ses") is not None:
        wanted = {se["name"] for se in ses} & set(env["target_ses"])
        return sorted(wanted), len(wanted)
    if env.get("site") is not None:
        return [se["name"] for se in ses if se["site"] == env["site"]], 1
    return [se["name"] for se in ses], int(template["copies"])


async def _owner_ses(db: AsyncDatabase[Document], owner: Principal, expression: str) -> list[Document]:
    """The SEs of the expression that the owner's VO uses (as `require_se` for a direct request)."""
    return [se for se in await resolve_expression(db, expression) if se_in_vo(owner, se["name"])]


async def _owner_files(db: AsyncDatabase[Document], owner: Principal, doc: Document,
                       task: Document) -> dict[str, Document]:
    """The task's files (records), each of which the owner may act on; Forbidden otherwise. A
    file gone since it was fed (or hidden from the owner now) is left out, as a gone one was."""
    action = REQUEST_ACTION[doc["spec"]["type"]]
    files, denied = await authorize_files(db, owner, task["files"], action)
    refused = {lfn: reason for lfn, reason in denied.items() if reason != NO_SUCH_FILE}
    if refused:
        lfn, reason = sorted(refused.items())[0]
        more = f" (and {len(refused) - 1} more files)" if len(refused) > 1 else ""
        raise Forbidden(f"the owner may not {action.name} of {lfn}: {reason}{more}")
    return files


async def submit_task(db: AsyncDatabase[Document], doc: Document, task: Document) -> None:
    """Queue the task's requests as the owner and record them; a task with nothing to ask is
    done at once. Forbidden when the owner may not act on one of its files."""
    template = doc["spec"]["request"]
    owner = await confine_owner(db, transformations.owner_principal(doc))
    if not owner.has_scope("transfers.write"):
        raise Forbidden("the owner may not ask for transfers or deletions (no transfers.write scope)")
    targets, copies = _task_targets(template, task.get("env", {}), await _owner_ses(db, owner, template["ses"]))
    files = await _owner_files(db, owner, doc, task)
    items = _items(doc["spec"]["type"], {**template, "copies": copies}, files, targets)
    if not items:
        await transformation_files.finish_task_files(db, doc["_id"], task["_id"], "processed")
        await tasks.mark(db, [task["_id"]], ["created"], "done", "nothing to do")
        return
    result = await queueing.submit(db, REQUEST_KIND[doc["spec"]["type"]], items,
                                   requester=queueing.user_requester(owner.sub),
                                   activity=template["activity"], priority=int(doc["spec"]["priority"]) // 2,
                                   submission=task["_id"], vo=vo_stamp(owner))
    await tasks.mark(db, [task["_id"]], ["created"], "submitted", "requests queued",
                     requests=sorted(set(result["successful"].values())),
                     request_attempt=int(task.get("seen_attempt", 0)) + 1)


async def follow_task(db: AsyncDatabase[Document], doc: Document, task: Document) -> int:
    """Done when every request is done; a failed or cancelled request fails the task (its files
    problematic) once the transformation's attempts ran out, else its requests are asked again."""
    found = [await requests.get_request(db, rid) for rid in task.get("requests", [])]
    states = [r["state"] if r else "failed" for r in found]
    if any(s in requests.OPEN_STATES for s in states):
        return 0
    if all(s == "done" for s in states):
        await transformation_files.finish_task_files(db, doc["_id"], task["_id"], "processed")
        return await tasks.mark(db, [task["_id"]], ["submitted"], "done", "requests done")
    # The attempt the submission recorded: a pass stopped between counting it and asking again
    # leaves `seen_attempt` at it, so the next pass finds it counted (tasks submitted before
    # attempts were recorded count the one after the last seen, as they did).
    attempt = int(task.get("request_attempt") or int(task.get("seen_attempt", 0)) + 1)
    counted = await tasks.count_failure(db, task, attempt) or task
    if int(counted["failures"]) < int(doc["spec"]["max_attempts"]):
        return await tasks.mark(db, [task["_id"]], ["submitted"], "created", "requests failed: asking again",
                                requests=[])
    await transformation_files.finish_task_files(db, doc["_id"], task["_id"], "problematic", failed=True)
    return await tasks.mark(db, [task["_id"]], ["submitted"], "failed", f"requests {states}")


async def cancel_task(db: AsyncDatabase[Document], doc: Document, task: Document) -> int:
    """Cancel the task's open requests (a stopped transformation) for its owner: one another
    requester joined stays theirs (`transfers.shared_requests`); how many the owner no longer has."""
    # Those it made and those it joined (another requester's identical open request, which names
    # the task's submission among its joined ones): the owner leaves both.
    return await cancel_as(db, of_submission(task["_id"]), queueing.user_requester(doc["owner"]))
