"""Resolving a job's dataset or query input to the LFNs it stands for, at submission.

`input_dataset` becomes the files of the dataset (a container's: of every dataset below it),
as `catalogue.dataset_contents.file_lfns` lists them, less those the submitter cannot reach (as
GET /dids/contents shows them; one it can see but not read is refused at submission).
`input_query` becomes what `catalogue.find.open_query` returns for the submitter, with the same permission rules as
`cairn find` (files the submitter may not read are left out; the scope directory must be
readable). Either is a snapshot: files attached or matching later do not join the job.

Each distinct dataset or (query, path) is resolved once per submission, so a parametric
description over one dataset costs one lookup. Refusals (unknown dataset, syntax error, no
files, more than MAX_INPUTS_PER_JOB inputs) name the job and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import require_did, visible_files
from catalogue.dataset_contents import file_lfns
from catalogue.find import open_query
from catalogue.lfn import check_lfn
from kernel.db import Document
from kernel.errors import CairnError, InvalidInput
from kernel.principal import Principal
from wms.description import MAX_INPUTS_PER_JOB, JobDescription

Selection = tuple[str, str, str]  # ("dataset", did, "") or ("query", query, path)


def _selection(job: JobDescription) -> Selection | None:
    if job.input_dataset is not None:
        return ("dataset", job.input_dataset, "")
    if job.input_query is not None:
        return ("query", job.input_query, job.input_path)
    return None


async def _resolve(db: AsyncDatabase[Document], principal: Principal, selection: Selection) -> list[str]:
    kind, what, path = selection
    if kind == "dataset":
        lfns = await file_lfns(db, require_did(principal, what), limit=MAX_INPUTS_PER_JOB)
        # As GET /dids/contents: a file the submitter cannot reach is left out (hidden = not attached).
        seen = await visible_files(db, principal, lfns)
        if not seen:
            raise InvalidInput(f"input_dataset {what} holds no files")
        return [lfn for lfn in lfns if lfn in seen]
    results = await open_query(db, principal, what, scope=check_lfn(path))
    found: list[str] = []
    async for doc in results:
        found.append(doc["_id"])
        if len(found) > MAX_INPUTS_PER_JOB:
            raise InvalidInput(f"input_query finds more than {MAX_INPUTS_PER_JOB} files; narrow it or split the job")
    if not found:
        raise InvalidInput(f"input_query {what!r} in {path} finds no file you may read")
    return found


async def resolve_inputs(
    db: AsyncDatabase[Document], principal: Principal, concrete: Sequence[JobDescription]
) -> list[JobDescription]:
    """The jobs with their dataset or query inputs added to `input_data` (others unchanged)."""
    resolved: dict[Selection, list[str]] = {}
    out = []
    for index, job in enumerate(concrete):
        selection = _selection(job)
        if selection is None:
            out.append(job)
            continue
        if selection not in resolved:
            try:
                resolved[selection] = await _resolve(db, principal, selection)
            except CairnError as exc:
                raise exc.within(f"job #{index}") from None
        lfns = list(dict.fromkeys([*job.input_data, *resolved[selection]]))
        if len(lfns) > MAX_INPUTS_PER_JOB:
            raise InvalidInput(f"job #{index}: {len(lfns)} inputs exceed the limit of {MAX_INPUTS_PER_JOB} per job")
        try:
            out.append(JobDescription.model_validate({**job.model_dump(), "input_data": lfns}))
        except ValueError as exc:
            raise InvalidInput(f"job #{index}: its resolved inputs are not usable: {exc}") from exc
    return out
