"""A production described in one YAML file: a name and its steps, each a transformation spec
(`productions.spec.TransformationSpec`). Checked as a whole before anything is created:

- unknown fields anywhere are refused (pydantic `extra=forbid`);
- step names are unique; every step after the first has an input query;
- each later step's query could match some output of the steps before it (judged on the
  outputs' template metadata, `productions.query_match`), or the step could never run;
- no step's query surely matches its own outputs or those of a later step (a cycle: a step
  feeding itself, or an earlier step, for ever).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from catalogue.meta_query import compile_query
from kernel.errors import InvalidInput
from kernel.patterns import PatternError
from productions.query_match import UNKNOWN, check_patterns, could_match
from productions.spec import TransformationSpec
from wms.description import NAME_PATTERN


class ProductionSpec(BaseModel):
    """A named chain of transformations."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN)
    steps: list[TransformationSpec] = Field(..., min_length=1, max_length=50)

    @model_validator(mode="after")
    def _unique_names(self) -> ProductionSpec:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names repeat: {names}")
        return self


def output_metadata(step: TransformationSpec) -> list[dict[str, Any]]:
    """The metadata each output of the step's job template is registered with (placeholders
    unknown); replication and removal steps make no files."""
    return [{k: (UNKNOWN if isinstance(v, str) and "%(" in v else v) for k, v in (o.get("meta") or {}).items()}
            for o in (step.job or {}).get("outputs") or []]


def _made_by(steps: list[TransformationSpec], index: int) -> list[dict[str, Any]]:
    """What step `index` may feed on: the outputs of the steps before it (a replication step
    may keep copies of an earlier step's files, not only of the one just before)."""
    return [meta for before in steps[:index] for meta in output_metadata(before)]


def _matches_any(step: TransformationSpec, outputs: list[dict[str, Any]], declared: dict[str, str], *,
                 surely: bool = False) -> bool:
    """Could (or, `surely`, must) the step's query match one of these outputs?"""
    assert step.input_query is not None
    flt = compile_query(step.input_query, declared)
    try:
        check_patterns(flt)
    except PatternError as exc:
        raise InvalidInput(f"step {step.name}: a pattern of its query {step.input_query!r} is refused: {exc}") \
            from None
    results = [could_match(flt, meta) for meta in outputs]
    return any(r is True for r in results) if surely else any(r is not False for r in results)


def check_chain(spec: ProductionSpec, declared: dict[str, str]) -> None:
    """InvalidInput naming the step when the chain cannot work (see the module docstring)."""
    for index, step in enumerate(spec.steps[1:], start=1):
        if step.input_query is None:
            raise InvalidInput(f"step {step.name} follows {spec.steps[index - 1].name} but has no input_query")
        if not _matches_any(step, _made_by(spec.steps, index), declared):
            raise InvalidInput(f"step {step.name}: its query {step.input_query!r} can never match the outputs of "
                               f"the steps before it (their metadata: {_made_by(spec.steps, index)})")
    for i, step in enumerate(spec.steps):
        if step.input_query is None:
            continue
        for later in spec.steps[i:]:
            if _matches_any(step, output_metadata(later), declared, surely=True):
                raise InvalidInput(f"cycle: step {step.name}'s query {step.input_query!r} matches the outputs of "
                                   f"step {later.name}, which would feed it again")
