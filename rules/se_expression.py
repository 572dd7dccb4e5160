"""RSE expressions: which storage elements a rule means, in Rucio's notation.

    expression := term (operator term)*        operators, applied left to right:
    operator   := '|' (union) | '&' (intersection) | '\\' (difference)
    term       := '(' expression ')' | '*' | key '=' value | key '>' number | key '<' number | NAME

`NAME` alone is an SE name; if no SE has that name it means every SE whose attribute NAME is
true (Rucio's convention). `key=value` compares an attribute (or `site`, `kind`, `name`) as text,
so `tier=1` matches the attribute 1 and "1". `*` is every SE. Errors name the position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kernel.bounds import MAX_EXPRESSION_DEPTH
from kernel.errors import InvalidInput

_TOKEN = re.compile(r"\s*(?:(?P<op>[|&\\()])|(?P<cmp>[A-Za-z0-9_.:-]+\s*(?:=|>|<)\s*[A-Za-z0-9_.:+-]+)"
                    r"|(?P<star>\*)|(?P<name>[A-Za-z0-9_.-]+))")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


class ExpressionError(InvalidInput):
    code = "invalid_expression"


def _error(expression: str, pos: int, problem: str) -> ExpressionError:
    pointer = " " * pos + "^"
    return ExpressionError(f"{problem} at position {pos}:\n  {expression}\n  {pointer}",
                           details={"position": pos, "expression": expression})


def tokenize(expression: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(expression):
        if expression[pos:].strip() == "":
            break
        match = _TOKEN.match(expression, pos)
        if match is None or match.end() == pos:
            skipped = len(expression[pos:]) - len(expression[pos:].lstrip())
            raise _error(expression, pos + skipped, f"unexpected character {expression[pos + skipped]!r}")
        kind = match.lastgroup or ""
        text = match.group(kind)
        tokens.append(Token(kind, "".join(text.split()), match.start(kind)))  # any whitespace, as `\s` took it
        pos = match.end()
    if not tokens:
        raise _error(expression, 0, "empty expression")
    return tokens


SE = Mapping[str, Any]


def _attr_values(se: SE) -> dict[str, Any]:
    values = dict(se.get("attributes", {}))
    values.update({"name": se["name"], "site": se.get("site"), "kind": se.get("kind")})
    return values


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _Parser:
    def __init__(self, expression: str, ses: list[SE]) -> None:
        self.expression = expression
        self.tokens = tokenize(expression)
        self.index = 0
        self.depth = 0
        self.ses = ses
        self.all = {se["name"] for se in ses}

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise _error(self.expression, len(self.expression), "expression ends too early")
        self.index += 1
        return token

    def parse(self) -> set[str]:
        result = self.expression_()
        token = self.peek()
        if token is not None:
            raise _error(self.expression, token.pos, f"unexpected {token.text!r}")
        return result

    def expression_(self) -> set[str]:
        result = self.term()
        while (token := self.peek()) is not None and token.kind == "op" and token.text in "|&\\":
            self.take()
            right = self.term()
            if token.text == "|":
                result = result | right
            elif token.text == "&":
                result = result & right
            else:
                result = result - right
        return result

    def term(self) -> set[str]:
        token = self.take()
        if token.kind == "op" and token.text == "(":
            self.depth += 1
            if self.depth > MAX_EXPRESSION_DEPTH:
                raise _error(self.expression, token.pos, f"parentheses nest deeper than {MAX_EXPRESSION_DEPTH} levels")
            inner = self.expression_()
            self.depth -= 1
            closing = self.peek()
            if closing is None or closing.text != ")":
                pos = closing.pos if closing else len(self.expression)
                raise _error(self.expression, pos, "missing ')'")
            self.take()
            return inner
        if token.kind == "star":
            return set(self.all)
        if token.kind == "cmp":
            return self.compare(token)
        if token.kind == "name":
            if token.text in self.all:
                return {token.text}
            return {se["name"] for se in self.ses if _attr_values(se).get(token.text) is True}
        raise _error(self.expression, token.pos, f"unexpected {token.text!r}")

    def compare(self, token: Token) -> set[str]:
        key, op, value = re.split(r"(=|>|<)", token.text, maxsplit=1)
        limit = _number(value)
        if op != "=" and limit is None:
            raise _error(self.expression, token.pos, f"{key}{op}{value}: {value!r} is not a number")
        matched: set[str] = set()
        for se in self.ses:
            have = _attr_values(se).get(key)
            if have is None:
                continue
            if op == "=":
                if _as_text(have).lower() == value.lower():
                    matched.add(se["name"])
                continue
            number = _number(have)
            if number is not None and limit is not None and (number > limit if op == ">" else number < limit):
                matched.add(se["name"])
        return matched


def resolve(expression: str, ses: Iterable[SE]) -> set[str]:
    """The names of the SEs an expression means, given every SE as a dict (name, site, kind, attributes)."""
    return _Parser(expression, list(ses)).parse()


def validate(expression: str) -> None:
    """Raise ExpressionError if the expression does not parse (no SE needed)."""
    _Parser(expression, []).parse()
