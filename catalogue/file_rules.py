"""Replication rules made on a file DID, as the file's record keeps them: `named_by_rules`, the
ids of the rules whose DID is the file's LFN. The catalogue writes it on the rules' behalf
(`rules.store`, `rules.cleaner`), as it does their locks (`catalogue.replica_locks`).

A rule names its file by LFN: a move of the file would leave the rule, its locks still being
replicated and its transfers at an LFN no file has (its transfers then fail "no such file" and
the rule goes stuck). So a move refuses a file some rule names (`catalogue.moves`), even before
any of the rule's locks is ok (ok locks show on the replicas too). A rule names the file first
and looks for a move or removal under way after (`catalogue.directory_moves.leaving`); a move
marks the file first and reads its names after: one of the two sees the other. A rule names its
file after it is stored and is unnamed before it is removed: a call cut short between the two
writes leaves a file movable under a rule only until the rule's first evaluation, which names
it (`rules.store.name_its_file`), never a name without its rule, which would refuse the file's
moves for good.
"""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.directory_moves import leaving
from kernel.db import Document, database_errors

NAMED_BY = "named_by_rules"


async def name_file(db: AsyncDatabase[Document], lfn: str, rule_id: str, *, unless_named: bool = False) -> bool:
    """Record that rule `rule_id` names the file at lfn; False (and nothing recorded) when the
    file is gone, or is being moved or removed. `unless_named` (the evaluator, naming again the
    file of a rule whose making was cut short before it named it): the write matches only a file
    the rule does not name yet, and when it matches none there is nothing to look for (True)."""
    flt: Document = {"_id": lfn, NAMED_BY: {"$ne": rule_id}} if unless_named else {"_id": lfn}
    with database_errors():
        result = await db[FILES].update_one(flt, {"$addToSet": {NAMED_BY: rule_id}})
    if unless_named and not result.modified_count:
        return True
    if not await leaving(db, [lfn]):
        return True
    await unname_file(db, lfn, rule_id)
    return False


async def unname_file(db: AsyncDatabase[Document], lfn: str, rule_id: str) -> None:
    """The rule no longer names the file (before the rule is removed)."""
    with database_errors():
        await db[FILES].update_one({"_id": lfn}, {"$pull": {NAMED_BY: rule_id}})
