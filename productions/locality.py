"""Where a window of a transformation's unused files are, for the grouping plugins that look
(`broadcast`, `share`): each file is tagged with `ses` (the SEs holding an available replica
now, read from the catalogue rather than remembered, since replicas come and go), `sites` (their
sites) and `targets` (a replication's: the SEs of its expression that do not hold it yet).
Two queries per window: the files' replicas, and every SE with its site.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from kernel.db import Document
from rules.rule_admission import all_ses
from rules.se_expression import resolve


async def tag(db: AsyncDatabase[Document], doc: Document, files: Sequence[Document]) -> None:
    """Tag these transformation files (see the module docstring) in place."""
    ses = await all_ses(db)
    site_of = {se["name"]: se["site"] for se in ses}
    request = doc["spec"].get("request") or {}
    targets = sorted(resolve(request["ses"], ses)) if doc["spec"]["type"] == "replication" else []
    found = await fetch_files(db, [f["lfn"] for f in files], {"replicas": 1})
    for f in files:
        replicas = (found.get(f["lfn"]) or {}).get("replicas", [])
        f["ses"] = sorted({r["se"] for r in replicas if r.get("status", "available") == "available"})
        f["sites"] = sorted({site_of[se] for se in f["ses"] if se in site_of})
        f["targets"] = [se for se in targets if se not in f["ses"]]
