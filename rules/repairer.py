"""`cairn daemon rule-repairer`: gets stuck rules going again, or suspends them.

For each stuck lock (its transfer failed for good) it picks another SE the rule's expression
allows — writable, within the account's quota, not already locked for that file, not one the
file failed on before — ranked like the evaluator ranks (`rules.placement.rank`),
and moves the lock there: the stuck lock is released, a replicating one created (it remembers
`failed_ses` and `moved_from`), and the rule goes back to replicating with the reason recorded
in `error` (until the rule is ok) and in `last_repair` (kept). A stuck lock on a file that has
more locks than the rule's copies (its replacement written by a repair killed before it released
the old one) is released, not moved again. Locks with nowhere to go stay
stuck; a rule stuck for longer than `rules.suspend_after_s` is suspended (the evaluator then
leaves it alone until an update resumes it). A rule with files that found no SE at all is
marked dirty for another placement.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.availability import available_on
from catalogue.directories import now
from kernel.db import Document
from kernel.settings import RuleSettings
from rules import backoff, locks, quotas, rule_admission, rule_claims
from rules.daemon import RULES_PER_CYCLE, RuleDaemon
from rules.evaluation import stuck_too_long
from rules.placement import rank
from rules.se_expression import resolve

log = logging.getLogger("cairn.rules")

async def repair(db: AsyncDatabase[Document], rule: Document, settings: RuleSettings) -> tuple[int, str | None]:
    """Move the rule's stuck locks to other allowed SEs; returns (moved, first reason seen). A rule
    whose counters disagree with its locks has them set right (in `rule` too): a repair cut short
    between a lock's removal and its count left stuck ones counted (`RuleRepairer.work_on`)."""
    ses = await rule_admission.rule_ses(db, rule.get("vo"))
    names = resolve(rule["expression"], ses)
    candidates = [se for se in ses if se["name"] in names and se.get("write_enabled", True)]
    room = await quotas.room_in_vo(db, rule["account"], rule.get("vo"), names)
    # Reads first, each collection once (see rules.evaluation), then writes per batch.
    every = await locks.locks_of(db, rule["_id"], projection={"lfn": 1, "se": 1, "state": 1})
    read = Counter(lock["state"] for lock in every)
    if {state: read.get(state, 0) for state in locks.LOCK_STATES} != locks.counters_of(rule):
        rule.update({f"locks_{state}": n for state, n in (await locks.recount(db, rule["_id"])).items()})
    if not read.get("stuck"):
        return 0, None
    stuck = await locks.locks_of(db, rule["_id"], "stuck")
    taken: dict[str, set[str]] = {}
    for lock in every:
        taken.setdefault(lock["lfn"], set()).add(lock["se"])
    del every
    replicas = await available_on(db, {lock["lfn"] for lock in stuck})
    moved = 0
    reason = stuck[0].get("error") if stuck else None
    for start in range(0, len(stuck), settings.batch):
        chunk = stuck[start:start + settings.batch]
        old: list[Document] = []
        new: list[Document] = []
        surplus: list[Document] = []
        for lock in chunk:
            lfn, size = lock["lfn"], int(lock["size"])
            if len(taken.get(lfn, ())) > int(rule["copies"]):
                # Its replacement is there already (a repair killed between the two writes, or
                # copies lowered since): released, not moved again.
                surplus.append(lock)
                taken[lfn].discard(lock["se"])
                continue
            failed = [*lock.get("failed_ses", []), lock["se"]]
            excluded = set(failed) | taken.get(lfn, set())
            ranked = rank(candidates, [(lfn, size)], {}, replicas, rule.get("weight"))
            choice = next((se for se in ranked if se not in excluded
                           and (room.get(se) is None or (room.get(se) or 0) >= size)), None)
            if choice is None:
                continue
            if room.get(choice) is not None:
                room[choice] = (room[choice] or 0) - size
            taken.setdefault(lfn, set()).add(choice)
            old.append(lock)
            new.append(locks.new_lock(rule, lfn, choice, size,
                                           "ok" if choice in replicas.get(lfn, ()) else "replicating",
                                           failed_ses=failed, moved_from=lock["se"], moved_because=lock.get("error")))
        # The new locks first: one whose SE's room went meanwhile is refused, and its old lock stays.
        refused: list[Document] = []
        await locks.insert_locks(db, rule, new, refused=refused)
        kept = {lock["_id"] for lock in refused}
        await locks.remove_locks(db, rule, [*surplus, *(lock for lock, placed in zip(old, new, strict=True)
                                                       if placed["_id"] not in kept)])
        moved += len(new) - len(kept) + len(surplus)
    return moved, reason


class RuleRepairer(RuleDaemon):
    name = "rule-repairer"

    def query(self) -> dict[str, Any]:
        return {"state": "stuck", **backoff.ready("repair_retry_at", now())}

    async def give_back(self, rule: Document, error: str) -> None:
        """A repair that raised is counted (`repair_failures`) and the rule not taken again before
        its `repair_retry_at` (`rules.backoff`), its error kept; it stays stuck (the suspension
        of a rule stuck too long is the repairer's own, from `stuck_since`)."""
        await self.give_back_later(rule, error, "repair_failures", "repair_retry_at")

    # Its own loop: a rule it could not repair stays stuck with the same `due`, so each cycle
    # skips the rules it has seen already.
    async def run_once(self) -> int:
        handled = 0
        seen: set[str] = set()
        for _ in range(RULES_PER_CYCLE):
            rule = await self.claim({**self.query(), "_id": {"$nin": sorted(seen)}})
            if rule is None or self.stopping:
                if rule is not None:
                    await rule_claims.release(self.db, rule, self.worker, {})
                break
            seen.add(rule["_id"])
            handled += await self.isolated(rule, [])
        return handled

    async def work_on(self, rule: Document) -> int:
        """Repair one claimed stuck rule, then give it back (when this raised, `give_back` does).
        Its state is given back only if the rule's `generation` is still the one it read (its own
        dirtying counted): a resume, a change of copies or of the DID's content meanwhile bumped it
        and made the rule dirty, and is not undone (a resume was suspended again, or given back its
        old `stuck_since` and suspended at the next repair); the evaluator settles such a rule."""
        generation = rule.get("generation")
        fields: dict[str, Any] = {}
        moved, reason = await repair(self.db, rule, self.settings)
        if moved:
            fields = {"state": "replicating", "stuck_since": None, "due": now(),
                      "error": f"moved {moved} stuck lock(s) to other SEs; last failure: {reason}",
                      "last_repair": {"at": now(), "moved": moved, "reason": reason}}
            log.info("rule %s: %s", rule["_id"], fields["error"])
        elif int(rule.get("unplaced", 0)) > 0 and not rule.get("dirty") and await rule_claims.set_fields(
                self.db, rule["_id"], {}, make_dirty=True, guard={"generation": generation}):
            generation = int(generation or 0) + 1
        if not moved and not (int(rule.get("locks_stuck", 0)) or int(rule.get("unplaced", 0))):
            # Stuck by a count left off, none in fact (`repair` set it right): for the evaluator to
            # settle, not suspended for having nothing to move.
            fields = {"state": "replicating", "stuck_since": None, "due": now()}
        elif not moved and stuck_too_long(rule, self.settings.suspend_after_s):
            fields = {"state": "suspended", "error": f"stuck since {rule['stuck_since'].isoformat()} "
                      f"and nowhere else to go; suspended (last failure: {reason or rule.get('error')})"}
            log.warning("rule %s: %s", rule["_id"], fields["error"])
        done = {"repair_failures": 0, "repair_retry_at": None}
        if not await rule_claims.release(self.db, rule, self.worker, {**fields, **done},
                                         guard={"generation": generation}):
            kept = {"last_repair": fields["last_repair"]} if moved else {}
            await rule_claims.release(self.db, rule, self.worker, {**kept, **done})
        return 1 if fields else 0
