"""RSE expressions select SEs by name and attribute, with errors that point at the position."""

from __future__ import annotations

import pytest

from rules.se_expression import ExpressionError, resolve, validate

SES = [
    {"name": "CERN-DISK", "site": "CERN", "kind": "disk", "attributes": {"tier": 0, "country": "ch", "cloud": True}},
    {"name": "CERN-TAPE", "site": "CERN", "kind": "tape", "attributes": {"tier": 0, "country": "ch"}},
    {"name": "DESY-DISK", "site": "DESY", "kind": "disk", "attributes": {"tier": 1, "country": "de", "cloud": True}},
    {"name": "IN2P3-DISK", "site": "IN2P3", "kind": "disk", "attributes": {"tier": 1, "country": "fr"}},
    {"name": "PIC-DISK", "site": "PIC", "kind": "disk", "attributes": {"tier": 2, "country": "es", "freespace": 250}},
]


@pytest.mark.parametrize(("expression", "expected"), [
    ("CERN-DISK", {"CERN-DISK"}),
    ("tier=1", {"DESY-DISK", "IN2P3-DISK"}),
    ("tier<1", {"CERN-DISK", "CERN-TAPE"}),
    ("tier>0", {"DESY-DISK", "IN2P3-DISK", "PIC-DISK"}),
    ("freespace>100", {"PIC-DISK"}),
    ("country=ch|country=fr", {"CERN-DISK", "CERN-TAPE", "IN2P3-DISK"}),
    ("tier<2&kind=disk", {"CERN-DISK", "DESY-DISK", "IN2P3-DISK"}),
    ("*\\kind=tape", {"CERN-DISK", "DESY-DISK", "IN2P3-DISK", "PIC-DISK"}),
    ("cloud", {"CERN-DISK", "DESY-DISK"}),
    ("(tier=0|tier=1)\\(country=ch&kind=tape)", {"CERN-DISK", "DESY-DISK", "IN2P3-DISK"}),
    ("tier=1 | site = PIC", {"DESY-DISK", "IN2P3-DISK", "PIC-DISK"}),
    ("tier\t=\t1|site\u00a0=PIC", {"DESY-DISK", "IN2P3-DISK", "PIC-DISK"}),  # any whitespace, not only spaces
    ("tier=5", set()),
])
def test_expression_selects(expression: str, expected: set[str]) -> None:
    assert resolve(expression, SES) == expected


def test_operators_apply_left_to_right_with_parentheses_for_grouping() -> None:
    assert resolve("tier=0|tier=1&country=de", SES) == {"DESY-DISK"}
    assert resolve("tier=0|(tier=1&country=de)", SES) == {"CERN-DISK", "CERN-TAPE", "DESY-DISK"}


@pytest.mark.parametrize(("expression", "position", "problem"), [
    ("tier=1&", 7, "ends too early"),
    ("(tier=1|tier=2", 14, "missing ')'"),
    ("tier=1)", 6, "unexpected ')'"),
    ("tier=1 $ x", 7, "unexpected character '$'"),
    ("tier>abc", 0, "not a number"),
    ("", 0, "empty expression"),
    ("tier=1 tier=2", 7, "unexpected 'tier=2'"),
])
def test_errors_point_at_the_position(expression: str, position: int, problem: str) -> None:
    with pytest.raises(ExpressionError) as err:
        resolve(expression, SES)
    assert problem in err.value.message
    assert err.value.details["position"] == position


def test_validate_needs_no_storage_elements() -> None:
    validate("tier=1&country=de")
    with pytest.raises(ExpressionError):
        validate("tier=1&&")
    with pytest.raises(ExpressionError, match="not a number"):
        validate("freespace>lots")
