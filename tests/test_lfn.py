"""LFN rules: absolute, normalised, bounded, plain characters; each broken rule is named."""

from __future__ import annotations

import pytest

from catalogue.lfn import ancestors, check_lfn, is_within, name_of, parent_of
from kernel.errors import InvalidInput


@pytest.mark.parametrize("lfn", ["/", "/cta", "/cta/mc/run_01/f-1.root", "/a/b.c/d+e=f,g@h~i:k", "/...", "/.a/..b/c..",
                                 "/" + "a" * 255, "/a" * 64])
def test_valid_lfns_pass(lfn: str) -> None:
    assert check_lfn(lfn) == lfn


@pytest.mark.parametrize(
    ("lfn", "rule"),
    [
        (42, "type"),
        ("cta/f", "absolute"),
        ("", "absolute"),
        ("/cta/", "trailing_slash"),
        ("/cta//f", "empty_segment"),
        ("/cta/./f", "dot_segment"),
        ("/cta/../etc/passwd", "dot_segment"),
        ("/cta/..", "dot_segment"),
        ("/.", "dot_segment"),
        ("/cta/.", "dot_segment"),
        ("/../cta", "dot_segment"),
        ("/" + "a" * 1100, "length"),
        ("/" + "a" * 256, "segment_length"),
        ("/a" * 65, "depth"),
        ("/cta/with space", "characters"),
        ("/cta/new\nline", "characters"),
        ("/cta/q?x=1", "characters"),
        ("/cta/h#x", "characters"),
        ("/cta/ü", "characters"),
        ("/r4/nl.root\n", "characters"),
        ("/r4/m\n", "characters"),
        ("/cta/tab\tx", "characters"),
        ("/cta/nul\x00", "characters"),
        ("/cta/mc/%2e%2e/%2e%2e/lhcb/pub/f.root", "characters"),
        ("/cta/a%20b", "characters"),
    ],
)
def test_each_broken_rule_is_named(lfn: object, rule: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_lfn(lfn)
    assert caught.value.details["rule"] == rule


def test_path_arithmetic() -> None:
    assert parent_of("/cta/a/f") == "/cta/a" and parent_of("/cta") == "/"
    assert name_of("/cta/a/f") == "f"
    assert ancestors("/cta/a/f") == ["/", "/cta", "/cta/a"]
    assert is_within("/cta/a/f", "/cta/a") and not is_within("/cta/ab", "/cta/a")
