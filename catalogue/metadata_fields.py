"""Declared (indexed) metadata fields and the typing of metadata values.

Users may store any key; admins *declare* some keys with a type (int, float, string, datetime,
strings = list of strings). A declared key:
- is validated (and coerced: "12" -> 12 for int, an ISO text -> datetime) on every set;
- gets a MongoDB index on the effective field `meta_effective.<key>` of files (and directories),
  which is what makes metadata queries on it index-backed on MongoDB.
Undeclared keys take any JSON scalar or a list of strings as given.

Keys are identifiers (`[A-Za-z][A-Za-z0-9_]{0,63}`, matched whole by `fullmatch`: with `match`,
`$` let a final newline through): no dots or `$`, so a key is always one level below `meta` and
can never address something else in the document.

A field belongs to the whole installation (`vo` None; declared by a global admin) or to one VO
(declared by that VO's admin): a VO's field types values only in that VO's namespace
(`types_for`), and only its VO's admins or a global admin change it. A key is declared once
in the installation (one index, one type for queries), so a VO cannot take a key another holds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field
from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kernel.bounds import INT64_MAX, INT64_MIN
from kernel.db import Document, database_errors
from kernel.errors import Conflict, InvalidInput, LimitExceeded, NotFound
from kernel.principal import Principal

METADATA_FIELDS = "metadata_fields"
EFFECTIVE = "meta_effective"
ORIGIN = "meta_origin"
FieldType = Literal["int", "float", "string", "datetime", "strings"]
FIELD_TYPES: tuple[str, ...] = ("int", "float", "string", "datetime", "strings")
KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_STRING = 4096
MAX_LIST = 256
MAX_VALUES_CHARS = 64 * 1024
"""Most characters of text (strings, list items) in the values of one call: a directory's values
are copied to every entry below it, so an 8 MB list set on a directory of 300 files wrote 2.4 GB."""
MAX_KEYS_PER_ENTRY = 1000
MAX_TEXT_PER_ENTRY = 1024 * 1024
"""Most own keys of one file or directory, and characters of text in their values, however many
calls set them (only MongoDB's 16 MB document bounded them; each value is stored twice, with its
origin path once more): a physicist's entry carries tens of keys and kilobytes."""


def _strings(value: Any) -> bool:
    """A list of strings within MAX_LIST items of MAX_STRING characters each."""
    return isinstance(value, list) and len(value) <= MAX_LIST and all(
        isinstance(v, str) and len(v) <= MAX_STRING for v in value)


def _start_of(value: Any) -> str:
    """A refused value as an error message shows it: its start only."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    return sum(len(v) for v in value if isinstance(v, str)) if isinstance(value, list) else 0


class MetadataMaps(TypedDict):
    """The metadata every file and directory record carries: its own values (`meta`), the
    effective ones including those inherited from ancestor directories, and where each came from."""

    meta: dict[str, Any]
    meta_effective: dict[str, Any]
    meta_origin: dict[str, str]


class FieldDeclaration(BaseModel):
    """An indexed metadata key and its type."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(..., pattern=KEY_PATTERN.pattern)
    type: FieldType
    description: str = Field("", max_length=1000)
    vo: str | None = Field(None, max_length=64, description="the VO whose namespace the field types (None: every "
                           "VO's); a VO admin's declarations are always its VO's")


def check_key(key: object) -> str:
    """`key` if it is a valid metadata key, else InvalidInput."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise InvalidInput(f"metadata key {key!r} is not an identifier (letters, digits, _; a letter first; "
                           "at most 64)", details={"key": str(key)})
    return key


def parse_datetime(value: str) -> dt.datetime:
    """An ISO 8601 date or date-time; naive values are taken as UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def coerce(key: str, kind: str, value: Any) -> Any:
    """`value` as the declared type `kind`; ValueError saying why it cannot be."""
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError(f"{key} is an int, not a boolean")
        number: int | None = None
        if isinstance(value, int):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or (
                isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,20}", value.strip())):
            number = int(value)
        if number is not None and INT64_MIN <= number <= INT64_MAX:
            return number
        raise ValueError(f"{key} is an int (signed 64-bit), got {value!r}")
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"{key} is a float, not a boolean")
        real: float | None = None
        if isinstance(value, int | float):
            real = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                real = float(value)
        # 'inf' and 'nan' are floats to Python, not to JSON: stored, every answer would show null.
        if real is not None and math.isfinite(real):
            return real
        raise ValueError(f"{key} is a (finite) float, got {value!r}")
    if kind == "string":
        if isinstance(value, str) and len(value) <= MAX_STRING:
            return value
        raise ValueError(f"{key} is a string (at most {MAX_STRING} characters), got {_start_of(value)}")
    if kind == "datetime":
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, str):
            return parse_datetime(value)
        raise ValueError(f"{key} is a datetime (ISO 8601 text), got {value!r}")
    if kind == "strings":
        if _strings(value):
            return value
        raise ValueError(f"{key} is a list of strings (at most {MAX_LIST}, each at most {MAX_STRING} characters), "
                         f"got {_start_of(value)}")
    raise ValueError(f"unknown field type {kind!r}")


def free_value(key: str, value: Any) -> Any:
    """An undeclared key's value: a JSON scalar or a list of strings, stored as given."""
    if isinstance(value, bool | int | float | dt.datetime):
        return value
    if isinstance(value, str) and len(value) <= MAX_STRING:
        return value
    if _strings(value):
        return value
    raise ValueError(f"{key}: a value is a number, a string (at most {MAX_STRING} characters), a boolean, a "
                     f"datetime or a list of at most {MAX_LIST} such strings; got {_start_of(value)}")


def check_entry_bounds(path: str, own: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    """LimitExceeded (413) when `own` values with `changes` set over them would pass
    MAX_KEYS_PER_ENTRY keys or MAX_TEXT_PER_ENTRY characters of text."""
    after = {**own, **changes}
    keys, text = len(after), sum(_text_chars(value) for value in after.values())
    if keys > MAX_KEYS_PER_ENTRY or text > MAX_TEXT_PER_ENTRY:
        raise LimitExceeded(
            f"{path} would hold {keys} metadata keys and {text} characters of text; an entry holds at most "
            f"{MAX_KEYS_PER_ENTRY} keys and {MAX_TEXT_PER_ENTRY} characters: remove some first",
            details={"keys": keys, "max_keys": MAX_KEYS_PER_ENTRY, "text": text, "max_text": MAX_TEXT_PER_ENTRY})


def typed_values(values: Mapping[str, Any], declared: Mapping[str, str]) -> dict[str, Any]:
    """Validate a `{key: value}` mapping against the declared types; InvalidInput naming every
    bad key (so nothing is written when one is wrong), and at most MAX_VALUES_CHARS of text in all."""
    text = sum(_text_chars(value) for value in values.values())
    if text > MAX_VALUES_CHARS:
        raise InvalidInput(f"the values hold {text} characters of text; at most {MAX_VALUES_CHARS} may be set at once")
    out: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, value in values.items():
        try:
            check_key(key)
            out[key] = coerce(key, declared[key], value) if key in declared else free_value(key, value)
        except (ValueError, InvalidInput) as exc:
            problems[str(key)] = exc.message if isinstance(exc, InvalidInput) else str(exc)
    if problems:
        raise InvalidInput("invalid metadata: " + "; ".join(problems.values()), details={"keys": problems})
    return out


async def declared_fields(db: AsyncDatabase[Document]) -> dict[str, str]:
    """`{key: type}` of every declared field (one small query; the collection is tiny)."""
    with database_errors():
        docs = await db[METADATA_FIELDS].find({}).to_list()
    return {d["_id"]: d["type"] for d in docs}


async def field_types(db: AsyncDatabase[Document]) -> dict[str, tuple[str, str | None]]:
    """`{key: (type, vo)}` of every declared field (`vo` None: the installation's)."""
    with database_errors():
        docs = await db[METADATA_FIELDS].find({}).to_list()
    return {d["_id"]: (d["type"], d.get("vo")) for d in docs}


def types_for(fields: Mapping[str, tuple[str, str | None]], vo: str | None) -> dict[str, str]:
    """`{key: type}` of the fields that type values in VO `vo`'s namespace: the installation's and its own."""
    return {key: kind for key, (kind, owner) in fields.items() if owner is None or owner == vo}


async def query_fields(db: AsyncDatabase[Document], principal: Principal) -> dict[str, str]:
    """`{key: type}` of the fields the caller's metadata queries are typed by: those it is shown
    (GET /metadata/fields), the installation's and its VO's; every field for a caller not
    confined to a VO. Another VO's key is a free one to it, so no answer tells that it is declared."""
    fields = await field_types(db)
    if not principal.confined:
        return {key: kind for key, (kind, _) in fields.items()}
    return types_for(fields, principal.vo)


def _shown(doc: Document) -> dict[str, Any]:
    return {"key": doc["_id"], "type": doc["type"], "description": doc.get("description", ""),
            "vo": doc.get("vo"), "indexed": True}


async def list_fields(db: AsyncDatabase[Document], vo: str | None = None) -> list[dict[str, Any]]:
    """Every declared field with its type, description and VO, sorted by key; with `vo`, only
    the installation's fields and that VO's."""
    query = {} if vo is None else {"vo": {"$in": [None, vo]}}
    with database_errors():
        docs = await db[METADATA_FIELDS].find(query).sort("_id", 1).to_list()
    return [_shown(d) for d in docs]


async def declaration_of(db: AsyncDatabase[Document], key: str) -> Document | None:
    """The stored declaration of `key`, or None."""
    with database_errors():
        return await db[METADATA_FIELDS].find_one({"_id": key})


def index_name(key: str) -> str:
    return f"meta_{key}"


async def declare_field(db: AsyncDatabase[Document], declaration: FieldDeclaration) -> dict[str, Any]:
    """Declare (or re-describe) an indexed field and create its indexes on files and directories.

    Changing the type of a declared field is refused: stored values were validated against the
    old type, and a silent change would leave them wrong.
    """
    with database_errors():
        existing = await db[METADATA_FIELDS].find_one({"_id": declaration.key})
        declared = [d["_id"] for d in await db[METADATA_FIELDS].find({}, {"_id": 1}).to_list()]
    # Index names are case-insensitive on FerretDB's SQLite backend: `run` and `Run` cannot both
    # be indexed there, so keys that differ only in case are refused everywhere.
    twin = next((k for k in declared if k != declaration.key and k.lower() == declaration.key.lower()), None)
    if twin is not None:
        raise Conflict(f"field {twin} is declared; keys that differ only in case cannot both be declared")
    if existing is not None and existing.get("vo") != declaration.vo:
        raise Conflict(f"field {declaration.key} is declared for {existing.get('vo') or 'the whole installation'}; "
                       "a key is declared once in the installation")
    if existing is not None and existing["type"] != declaration.type:
        raise InvalidInput(f"field {declaration.key} is declared as {existing['type']}; remove it before "
                           f"declaring it as {declaration.type}")
    stored = {"_id": declaration.key, "type": declaration.type, "description": declaration.description,
              "vo": declaration.vo}
    with database_errors():
        # Written only over the declaration looked at (none: an insert): two VOs declaring one
        # key at once both passed the look, and the second upsert took the first's field over.
        try:
            if existing is None:
                await db[METADATA_FIELDS].insert_one(stored)
                replaced = True
            else:
                replaced = (await db[METADATA_FIELDS].replace_one(
                    {"_id": declaration.key, "vo": existing.get("vo"), "type": existing["type"]}, stored)
                ).matched_count == 1
        except DuplicateKeyError:
            replaced = False
    if not replaced:
        raise Conflict(f"field {declaration.key} was declared or changed meanwhile; read it again")
    with database_errors():
        for collection in ("files", "directories"):
            names = set(await db[collection].index_information())
            if index_name(declaration.key) not in names:
                # One index per createIndexes: FerretDB 1.24 panics on several existing ones.
                await db[collection].create_indexes(
                    [IndexModel([(f"{EFFECTIVE}.{declaration.key}", 1)], name=index_name(declaration.key))])
    return {"key": declaration.key, "type": declaration.type, "description": declaration.description,
            "vo": declaration.vo, "indexed": True}


async def undeclare_field(db: AsyncDatabase[Document], key: str) -> None:
    """Forget a declaration and drop its indexes; stored values stay (as free-form values)."""
    check_key(key)
    with database_errors():
        result = await db[METADATA_FIELDS].delete_one({"_id": key})
        if result.deleted_count == 0:
            raise NotFound(f"metadata field {key} is not declared")
        for collection in ("files", "directories"):
            if index_name(key) in set(await db[collection].index_information()):
                await db[collection].drop_index(index_name(key))
