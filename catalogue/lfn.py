"""The rules every LFN (and directory path) obeys, checked in one place.

An LFN is an absolute, normalised POSIX-like path:
- it starts with `/` and, except for the root `/` itself, does not end with `/`;
- no empty segment (`//`), no `.` or `..` segment;
- at most MAX_LENGTH characters in all and MAX_SEGMENT in one segment, at most MAX_DEPTH segments;
- each segment is made of letters, digits and `_ - . + = , @ ~ :` only (no spaces, no control
  characters or newlines, no shell or URL metacharacters, no `%`: a percent-encoded `%2e%2e`
  would turn into `..` in a storage URL), so an LFN can be appended to any SE's URL as is.

A broken rule raises InvalidInput whose `details.rule` names the rule.
"""

from __future__ import annotations

import re

from kernel.errors import InvalidInput

ROOT = "/"
MAX_LENGTH = 1024
MAX_SEGMENT = 255
MAX_DEPTH = 64
SEGMENT_CHARS = re.compile(r"[A-Za-z0-9_\-.+=,@~:]+")
# Every valid LFN but the root in one match (checked first: bulk calls check 10k LFNs at a time);
# what it refuses goes through the rules one by one, which name the rule that is broken.
_VALID = re.compile(rf"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9_\-.+=,@~:]{{1,{MAX_SEGMENT}}}){{1,{MAX_DEPTH}}}")


def _broken(value: object, rule: str, text: str) -> InvalidInput:
    shown = value if isinstance(value, str) and len(value) <= 200 else f"{str(value)[:200]}..."
    return InvalidInput(f"invalid LFN {shown!r}: {text}", details={"lfn": shown, "rule": rule})


def check_lfn(value: object) -> str:
    """Return `value` if it is a valid LFN or directory path; raise InvalidInput naming the rule."""
    if isinstance(value, str) and len(value) <= MAX_LENGTH and _VALID.fullmatch(value):
        return value
    if not isinstance(value, str):
        raise _broken(value, "type", f"an LFN is a string, not {type(value).__name__}")
    if not value.startswith("/"):
        raise _broken(value, "absolute", "an LFN must start with '/'")
    if len(value) > MAX_LENGTH:
        raise _broken(value, "length", f"an LFN has at most {MAX_LENGTH} characters")
    if value == ROOT:
        return value
    if value.endswith("/"):
        raise _broken(value, "trailing_slash", "an LFN must not end with '/'")
    segments = value[1:].split("/")
    if len(segments) > MAX_DEPTH:
        raise _broken(value, "depth", f"an LFN has at most {MAX_DEPTH} levels")
    for segment in segments:
        if not segment:
            raise _broken(value, "empty_segment", "an LFN must not contain '//'")
        if segment in (".", ".."):
            raise _broken(value, "dot_segment", "an LFN must not contain '.' or '..' segments")
        if len(segment) > MAX_SEGMENT:
            raise _broken(value, "segment_length", f"a path segment has at most {MAX_SEGMENT} characters")
        if not SEGMENT_CHARS.fullmatch(segment):
            raise _broken(value, "characters", "segments may hold only letters, digits and _ - . + = , @ ~ :")
    return value


def parent_of(path: str) -> str:
    """The directory holding `path` (`/` for top-level entries and for the root itself)."""
    head = path.rsplit("/", 1)[0]
    return head or ROOT


def name_of(path: str) -> str:
    """The last segment of `path` (empty for the root)."""
    return path.rsplit("/", 1)[1] if path != ROOT else ""


def ancestors(path: str) -> list[str]:
    """Every directory above `path`, root first: `/a/b/c` -> `['/', '/a', '/a/b']`."""
    if path == ROOT:
        return []
    parts = path[1:].split("/")[:-1]
    return [ROOT] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def is_within(path: str, directory: str) -> bool:
    """True when `path` is `directory` or lies below it."""
    return directory == ROOT or path == directory or path.startswith(directory + "/")


def descendant_pattern(directory: str) -> str:
    """An anchored regex matching the paths strictly below `directory` (a prefix scan on `_id`)."""
    return "^" + re.escape(directory.rstrip("/") + "/")
