"""A replication rule (Rucio's): "N copies of a DID on the SEs of an expression, for a lifetime".

A rule is one document in `rules`; its locks (one per file and SE) are in `rules.locks`.
The rule daemons (`rules.evaluator`, `rules.repairer`, `rules.cleaner`) work on one rule
at a time under the rule's own lease (`rules.rule_claims.claim`), so the rule's locks and lock counters are only
ever changed by the holder of that lease.

States:

    replicating --all locks ok--> ok --content grows--> replicating
    replicating --a lock's transfer failed for good--> stuck --repaired--> replicating
    stuck --stuck longer than rules.suspend_after_s--> suspended  (left alone until updated)
    any --its evaluation raised rules.suspend_after_failures passes in a row--> suspended

A failed evaluation is retried after a growing delay (`rules.backoff`, `retry_at`). A suspended
rule is resumed by an update (`cairn rule update --resume`), which also resets its count of failed
evaluations (`evaluation_failures`) and its delay, and moves its `error` to `last_error`. An
expired rule is the cleaner's whatever its state.

A new rule, a rule whose copies changed and a rule whose DID gained or lost content are `dirty`
(see `rules.triggers`): the evaluator (re)computes its locks. Deleting a rule sets its
expiry to now; the cleaner releases its locks and removes it.

Grouping decides where files go: ALL puts every file of the DID on the same SEs, DATASET the
files of each dataset on the same SEs, NONE chooses per file.

Here: the rule's document (`Rule`), what is asked to create or change one, and its public view.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field

from kernel import claims, request_ids
from kernel.bounds import MAX_LIFETIME_S
from kernel.db import Document
from kernel.principal import Principal

Grouping = Literal["ALL", "DATASET", "NONE"]
STATES = ("replicating", "ok", "stuck", "suspended")


class RulePlacement(BaseModel):
    """What a rule asks of its copies: a rule's own (`RuleIn`) and a subscription's template for
    the rules it makes (`rules.subscriptions`), with the same bounds."""

    model_config = ConfigDict(extra="forbid")

    copies: int = Field(..., ge=1, le=100)
    expression: str = Field(..., min_length=1, max_length=2000, description="RSE expression, e.g. tier=1&kind=disk")
    grouping: Grouping = "DATASET"
    lifetime_s: int | None = Field(None, gt=0, le=MAX_LIFETIME_S,
                                     description="the rule expires this long after creation")
    weight: str | None = Field(None, max_length=64, description="SE attribute preferred by its numeric value")
    activity: str = Field("default", max_length=64)
    source_expression: str | None = Field(None, max_length=2000, description="copy only from replicas on these SEs")
    comment: str = Field("", max_length=2000)
    priority: int = Field(3, ge=1, le=5)


class RuleIn(RulePlacement):
    """A rule to create."""

    did: str = Field(..., description="scope:name of a dataset or container, or a file's LFN")
    locked: bool = Field(False, description="a locked rule cannot be deleted, nor expire, until unlocked")
    account: str | None = Field(None, max_length=128, description="owning account (admins only; default: caller)")
    request_id: str | None = Field(None, pattern=request_ids.PATTERN, description=request_ids.DESCRIPTION)


class Rule(claims.Leased):
    """A document of `rules` as `create_rule` stores it (the daemons add `evaluated`,
    `ok_since`, `last_repair`); the `locks_*` counters count its locks by state."""

    _id: str
    vo: str
    did: str
    did_type: str
    account: str
    copies: int
    expression: str
    grouping: Grouping
    weight: str | None
    activity: str
    source_expression: str | None
    locked: bool
    comment: str
    priority: int
    subscription: str | None
    # the change feed's event (its sequence number) the subscription made it for
    # (`rules.subscription_counts`)
    subscription_event: NotRequired[int]
    # the digest of the call that made it, when the call named itself (`rules.rule_requests`)
    request: NotRequired[str]
    state: str
    error: str | None
    stuck_since: dt.datetime | None
    created: dt.datetime
    modified: dt.datetime
    expires_at: dt.datetime | None
    dirty: bool
    generation: int
    due: dt.datetime
    # set by `rules.wake`: wakes counted, and the earliest a wake may bring `due` to
    wakes: NotRequired[int]
    next_wake: NotRequired[dt.datetime]
    # set by `rules.evaluator`: its passes over the rule that raised in a row (0 after one that did
    # not), and the earliest it takes the rule again after one that raised (`rules.backoff`)
    evaluation_failures: NotRequired[int]
    retry_at: NotRequired[dt.datetime | None]
    # the same of `rules.cleaner`'s passes over the expired rule
    cleaning_failures: NotRequired[int]
    cleaning_retry_at: NotRequired[dt.datetime | None]
    # set by `rules.repairer` alike: its failed repairs in a row, and when it may try again
    repair_failures: NotRequired[int]
    repair_retry_at: NotRequired[dt.datetime | None]
    # set by a resume: the error the rule had until then (its `error` is cleared)
    last_error: NotRequired[str | None]
    # counted by a resume: a daemon's failed pass that read fewer does not record its failure
    resumes: NotRequired[int]
    unplaced: int
    locks_replicating: int
    locks_ok: int
    locks_stuck: int


class RuleUpdate(BaseModel):
    """What may change on an existing rule."""

    model_config = ConfigDict(extra="forbid")

    copies: int | None = Field(None, ge=1, le=100)
    lifetime_s: int | None = Field(None, ge=0, le=MAX_LIFETIME_S, description="from now; 0 removes the expiry")
    locked: bool | None = None
    comment: str | None = Field(None, max_length=2000)
    activity: str | None = Field(None, max_length=64)
    state: Literal["replicating"] | None = Field(None, description="resume a suspended or stuck rule")


# What a rule's reader who is neither its account nor an administrator sees of a dataset or
# container rule's error (`rule_view`): a stuck file's, or a failed evaluation's, that may name
# a file too.
ERROR_WITHHELD = "the reason is shown to the rule's account and administrators"


def rule_view(doc: Document, viewer: Principal) -> dict[str, Any]:
    """The public shape of a rule, as `viewer` (one allowed to see it) is shown it. A rule's error
    names one of its files and quotes a transfer's error (URLs, paths): on a dataset or container,
    whose readers may not reach every file in it, only the rule's account and administrators see
    it (a hidden file answers as a missing one); a file rule's readers reach its file."""
    hidden = ("_id", claims.OWNER, claims.EXPIRES, "request")  # bookkeeping: leases, the making call's digest
    view = {"id": doc["_id"], **{k: v for k, v in doc.items() if k not in hidden}}
    on_file = str(doc.get("did", "")).startswith("/")
    if not (on_file or viewer.is_admin or doc.get("account") == viewer.sub):
        for field in ("error", "last_error"):
            if view.get(field):
                view[field] = ERROR_WITHHELD
        if isinstance(view.get("last_repair"), dict) and view["last_repair"].get("reason"):
            view["last_repair"] = {**view["last_repair"], "reason": ERROR_WITHHELD}
    view["locks"] = {s: int(doc.get(f"locks_{s}", 0)) for s in ("replicating", "ok", "stuck")}
    for s in ("replicating", "ok", "stuck"):
        view.pop(f"locks_{s}", None)
    return view
