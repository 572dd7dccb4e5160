"""The metadata query language, shared by the API and `cairn find`, compiled to ONE MongoDB filter.

    query     := group (('or' | '|') group)*
    group     := term (('and' | '&')? term)*          juxtaposition means AND
    term      := '(' query ')' | condition
    condition := key op value | key ('in' | 'nin') value (',' value)*
    op        := '=' | '!=' | '<' | '<=' | '>' | '>='
    value     := bare word | "quoted" | 'quoted' | Any | Missing

Examples: `run>=12 run<=40 particle=proton`, `(site=CERN or site=DESY) and tags in a,b`,
`name=*.root se=CERN-DISK`, `quality=Missing`, `energy!=Any`.

- Keys are metadata keys (their effective, i.e. inherited, values), or the standard keys
  name, lfn, size, created, modified, owner, group, checksum (= adler32), adler32, md5, guid,
  status, se (an SE holding a replica), replica_status. `meta.KEY` always means metadata KEY.
- Values of declared fields are converted to the declared type (a mismatch is an error at the
  value's position); undeclared keys compare numbers when the value looks like one (and `=`
  then matches the number or the same text).
- `*` and `?` are wildcards in unquoted string values of `=` and `!=`; quoted values are literal.
- `key=Any` matches entries that have the key, `key=Missing` those that do not.
- `!=` and `nin` also match entries without the key (add `key=Any` to exclude them). They are
  compiled as `$nor`, which both MongoDB and FerretDB evaluate right on arrays (a plain `$ne`
  or `$nin` on `replicas.se` is wrong on FerretDB 1.24).
Errors say where: position and a caret under the query, as RSE expressions do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from catalogue.metadata_fields import EFFECTIVE, KEY_PATTERN, coerce, parse_datetime
from kernel.bounds import INT64_MAX, INT64_MIN, MAX_EXPRESSION_DEPTH
from kernel.errors import InvalidInput

# standard key -> (document field, type)
STANDARD: dict[str, tuple[str, str]] = {
    "name": ("name", "string"),
    "lfn": ("_id", "string"),
    "size": ("size", "int"),
    "created": ("created", "datetime"),
    "modified": ("modified", "datetime"),
    "owner": ("owner", "string"),
    "group": ("group", "string"),
    "checksum": ("adler32", "string"),
    "adler32": ("adler32", "string"),
    "md5": ("md5", "string"),
    "guid": ("guid", "string"),
    "status": ("status", "string"),
    "se": ("replicas.se", "string"),
    "replica_status": ("replicas.status", "string"),
}
MAX_CONDITIONS = 100
"""Most conditions in one query: each is tested on every file the query scans (900 `or`-ed
conditions scanned 50 times slower than one; an `in` list is one condition)."""
MAX_WILDCARDS = 16
"""Most `*` and `?` in one value: each adds a state to the pattern tested on every name scanned
(5000 of them made a query over 3000 files take 14 s on FerretDB; on MongoDB, whose patterns
backtrack, many `*` cost far more)."""
COMPARISONS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
OPERATORS = ("!=", "<=", ">=", "=", "<", ">")
_KEY = re.compile(r"(?:meta\.)?[A-Za-z][A-Za-z0-9_]*")
_BARE = re.compile(r"[^\s()\"',]+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class QueryError(InvalidInput):
    code = "invalid_query"


def _error(query: str, pos: int, problem: str) -> QueryError:
    return QueryError(f"{problem} at position {pos}:\n  {query}\n  {' ' * pos}^",
                      details={"position": pos, "query": query})


@dataclass(frozen=True)
class Value:
    text: str
    quoted: bool
    pos: int


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    values: tuple[Value, ...]
    pos: int


class _Parser:
    def __init__(self, query: str, declared: Mapping[str, str]) -> None:
        self.query = query
        self.declared = declared
        self.pos = 0
        self.depth = 0
        self.conditions = 0

    # -------------------------------------------------------------------------- scanning

    def skip(self) -> None:
        while self.pos < len(self.query) and self.query[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip()
        return self.pos >= len(self.query)

    def word_ahead(self, *words: str) -> str | None:
        """A keyword at the position (followed by a space, a paren or the end), or None."""
        self.skip()
        for word in words:
            end = self.pos + len(word)
            if self.query[self.pos:end].lower() == word and (end >= len(self.query) or not (
                    self.query[end].isalnum() or self.query[end] in "_.=!<>")):
                return word
        return None

    # --------------------------------------------------------------------------- grammar

    def parse(self) -> dict[str, Any]:
        if self.at_end():
            raise _error(self.query, 0, "empty query")
        result = self.disjunction()
        if not self.at_end():
            char = self.query[self.pos]
            problem = "')' without a matching '('" if char == ")" else f"unexpected {char!r}"
            raise _error(self.query, self.pos, problem)
        return result

    def disjunction(self) -> dict[str, Any]:
        groups = [self.conjunction()]
        while True:
            if self.word_ahead("or"):
                self.pos += 2
            elif not self.at_end() and self.query[self.pos] == "|":
                self.pos += 1
            else:
                break
            groups.append(self.conjunction())
        return groups[0] if len(groups) == 1 else {"$or": groups}

    def conjunction(self) -> dict[str, Any]:
        terms = [self.term()]
        while not self.at_end() and self.query[self.pos] != ")" and self.query[self.pos] != "|" \
                and not self.word_ahead("or"):
            if self.word_ahead("and"):
                self.pos += 3
            elif self.query[self.pos] == "&":
                self.pos += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else {"$and": terms}

    def term(self) -> dict[str, Any]:
        if self.at_end():
            raise _error(self.query, self.pos, "query ends too early (a condition is missing)")
        if self.query[self.pos] == "(":
            opened = self.pos
            self.depth += 1
            if self.depth > MAX_EXPRESSION_DEPTH:
                raise _error(self.query, opened, f"parentheses nest deeper than {MAX_EXPRESSION_DEPTH} levels")
            self.pos += 1
            inner = self.disjunction()
            self.depth -= 1
            if self.at_end():
                raise _error(self.query, opened, "'(' is never closed")
            if self.query[self.pos] != ")":
                raise _error(self.query, self.pos, "expected ')'")
            self.pos += 1
            return inner
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _error(self.query, self.pos, f"a query has at most {MAX_CONDITIONS} conditions")
        return compile_condition(self.condition(), self.declared, self.query)

    def condition(self) -> Condition:
        start = self.pos
        match = _KEY.match(self.query, self.pos)
        if match is None:
            raise _error(self.query, self.pos, f"expected a key, found {self.query[self.pos]!r}")
        key = match.group()
        self.pos = match.end()
        self.skip()
        op = next((o for o in OPERATORS if self.query.startswith(o, self.pos)), None)
        if op is None:
            word = self.word_ahead("nin", "in")
            if word is None:
                raise _error(self.query, self.pos, f"expected an operator (= != < <= > >= in nin) after {key!r}")
            op = word
        self.pos += len(op)
        self.skip()
        if self.pos < len(self.query) and self.query[self.pos] in "=<>!~":
            raise _error(self.query, self.pos - len(op), f"unknown operator {op + self.query[self.pos]!r}")
        values = [self.value()]
        if op in ("in", "nin"):
            while self.pos < len(self.query) and self.query[self.pos] == ",":
                self.pos += 1
                self.skip()
                values.append(self.value())
        return Condition(key, op, tuple(values), start)

    def value(self) -> Value:
        start = self.pos
        if self.pos >= len(self.query):
            raise _error(self.query, self.pos, "a value is missing")
        quote = self.query[self.pos]
        if quote in "\"'":
            end = self.query.find(quote, self.pos + 1)
            if end < 0:
                raise _error(self.query, self.pos, "unterminated quoted value")
            self.pos = end + 1
            return Value(self.query[start + 1:end], True, start)
        match = _BARE.match(self.query, self.pos)
        if match is None:
            raise _error(self.query, self.pos, f"a value is missing before {self.query[self.pos]!r}")
        self.pos = match.end()
        return Value(match.group(), False, start)


def _field(key: str, declared: Mapping[str, str]) -> tuple[str, str | None]:
    if key.startswith("meta."):
        key = key[5:]
    elif key in STANDARD:
        return STANDARD[key]
    if not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"{key!r} is not a metadata key")
    return f"{EFFECTIVE}.{key}", declared.get(key)


def _typed(value: Value, kind: str | None, key: str) -> Any:
    """The value in the key's type; undeclared keys compare as numbers when they look like one."""
    if kind is None:
        if not value.quoted and _NUMBER.fullmatch(value.text):
            number = float(value.text)
            whole = number.is_integer() and re.fullmatch(r"[+-]?\d+", value.text) and INT64_MIN <= number <= INT64_MAX
            return int(number) if whole else number
        return value.text
    if kind == "strings":
        return value.text
    if kind == "datetime":
        return parse_datetime(value.text)
    return coerce(key, kind, value.text)


def _wildcard(text: str) -> dict[str, Any]:
    text = re.sub(r"\*{2,}", "*", text)  # `**` means `*`: one state, not two to backtrack over
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return {"$regex": f"^{pattern}$"}


def compile_condition(cond: Condition, declared: Mapping[str, str], query: str) -> dict[str, Any]:
    """One condition as a MongoDB filter (see the module docstring for the semantics)."""
    try:
        field, kind = _field(cond.key, declared)
    except ValueError as exc:
        raise _error(query, cond.pos, str(exc)) from exc
    first = cond.values[0]
    if not first.quoted and first.text in ("Any", "Missing") and len(cond.values) == 1:
        if cond.op not in ("=", "!="):
            raise _error(query, first.pos, f"{first.text} works with = and != only")
        exists = (first.text == "Any") == (cond.op == "=")
        return {field: {"$exists": exists}}
    wildcard = any(not v.quoted and ("*" in v.text or "?" in v.text) for v in cond.values)
    if wildcard:
        if cond.op not in ("=", "!=") or kind not in (None, "string", "strings"):
            raise _error(query, first.pos, "wildcards work with = and != on string values only")
        if sum(first.text.count(c) for c in "*?") > MAX_WILDCARDS:
            raise _error(query, first.pos, f"a value has at most {MAX_WILDCARDS} wildcards (* and ?)")
        match = {field: _wildcard(first.text)}
        return match if cond.op == "=" else {"$nor": [match]}
    values = []
    for value in cond.values:
        try:
            values.append(_typed(value, kind, cond.key))
        except ValueError as exc:
            raise _error(query, value.pos, f"{cond.key}: {exc}") from exc
    if cond.op in COMPARISONS:
        return {field: {COMPARISONS[cond.op]: values[0]}}
    alternatives = []
    for value, given in zip(values, cond.values, strict=True):
        alternatives.append(value)
        if kind is None and not isinstance(value, str):
            alternatives.append(given.text)  # undeclared: the number or the same text
    if cond.op in ("=", "!="):
        match = {field: alternatives[0]} if len(alternatives) == 1 else {field: {"$in": alternatives}}
    else:
        match = {field: {"$in": alternatives}}
    return match if cond.op in ("=", "in") else {"$nor": [match]}


def compile_query(query: str, declared: Mapping[str, str]) -> dict[str, Any]:
    """The MongoDB filter of a query, given the declared fields `{key: type}`; QueryError
    (400, with position and caret) when it does not parse or a value has the wrong type."""
    if len(query) > 10_000:
        raise QueryError("a query has at most 10000 characters")
    return _Parser(query, declared).parse()
