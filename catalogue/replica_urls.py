"""Which URLs may stand for a replica: the one rule that keeps every action inside its SE.

A replica's URL is derived on the server from the SE's protocols and the LFN (`replica_url`,
"lfn2pfn"). A URL a client sends is accepted only when, after normalisation (scheme and host in
lower case, default port dropped, percent-decoding, duplicate slashes collapsed), it *equals*
that URL for one of the SE's protocols. Lying under the SE's prefix is not enough: another
user's file on the same SE lies under it too. Dot segments (`.`, `..`, also percent-encoded),
control characters, a `%` left after decoding, a query, a fragment or user info are refused
outright, and the derived URL itself must lie under its protocol's base URL.

One variant is allowed: the derived URL followed by `!` and a tag (`variant_url`), e.g. the URL a
job attempt writes its output to, so that no other attempt writes there. `!` is not allowed in an
LFN, so a variant can never be the URL of another file, nor another file's variant.

`se_url` is used where URLs enter (registration) and where they are acted on
(`transfers.endpoints`), so both sides apply the same rule.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote, urlsplit

from catalogue.storage_elements import Protocol, StorageElement, replica_url
from kernel.errors import InvalidInput

DEFAULT_PORTS = {"http": 80, "dav": 80, "https": 443, "davs": 443, "root": 1094}
VARIANT_MARK = "!"
VARIANT_TAG = re.compile(r"[A-Za-z0-9_-]{1,64}")


def variant_url(url: str, tag: str) -> str:
    """The variant of a derived URL named by `tag` (letters, digits, `_` and `-`)."""
    if not VARIANT_TAG.fullmatch(tag):
        raise InvalidInput(f"a URL variant tag has 1-64 letters, digits, '_' or '-', not {tag!r}")
    return f"{url}{VARIANT_MARK}{tag}"


def _refused(url: str, why: str) -> InvalidInput:
    shown = url if len(url) <= 300 else f"{url[:300]}..."
    return InvalidInput(f"replica URL {shown!r} refused: {why}", details={"url": shown})


# An LFN of segments of LFN characters, none of them '.' or '..' (what check_lfn lets through).
_PLAIN_LFN = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9_\-.+=,@~:]+)+")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")  # control characters and backslash


# Cached: every copy checks its URLs against its SEs' base URLs, the same few strings each time.
@functools.lru_cache(maxsize=4096)
def normalised_url(url: str) -> str:
    """`url` in canonical form (see the module docstring); InvalidInput when it cannot be trusted."""
    if _UNSAFE.search(url):
        raise _refused(url, "it holds control characters or a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refused(url, f"it is not a valid URL ({exc})") from exc
    if not parts.scheme:
        raise _refused(url, "it has no scheme")
    if parts.query or parts.fragment or "?" in url or "#" in url or parts.username or parts.password:
        raise _refused(url, "a replica URL has no query, fragment or user info")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme == "file" and host == "localhost":
        host = ""
    if port == DEFAULT_PORTS.get(scheme):
        port = None
    path = unquote(parts.path)
    if "%" in path or _UNSAFE.search(path):
        raise _refused(url, "it holds percent-encoded control characters, backslashes or a double encoding")
    segments = [segment for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise _refused(url, "it holds a '.' or '..' segment (also when percent-encoded)")
    netloc = host + (f":{port}" if port else "")
    return f"{scheme}://{netloc}/" + "/".join(segments)


def lies_under(url: str, base: str) -> bool:
    """Whether `url` is `base` or below it, both normalised (a segment boundary, not a string prefix)."""
    inner, outer = normalised_url(url), normalised_url(base).rstrip("/")
    return inner == outer or inner.startswith(outer + "/")


def derived_url(protocol: Protocol, lfn: str) -> str:
    """The lfn2pfn URL of lfn on protocol, refused if it would leave the protocol's base URL."""
    url = replica_url(protocol, lfn)
    if _PLAIN_LFN.fullmatch(lfn):  # base + '/' + plain segments: under the base by construction
        return url
    if not lies_under(url, protocol.base_url()):
        raise _refused(url, f"it does not lie under {protocol.base_url()}")
    return url


def se_url(se: StorageElement, lfn: str, url: str | None = None) -> str:
    """The URL of lfn's replica on se: the derived URL of se's preferred protocol when `url` is None,
    else the derived URL `url` stands for on one of se's protocols; InvalidInput (400) otherwise."""
    if url is None:
        protocol = se.preferred_protocol("read") or se.preferred_protocol("write")
        if protocol is None:
            raise InvalidInput(f"SE {se.name} has no read or write protocol to build a URL from")
        return derived_url(protocol, lfn)
    derived_urls = [derived_url(protocol, lfn) for protocol in sorted(se.protocols, key=lambda p: p.priority)]
    if url in derived_urls:  # exactly what the SE's rule builds (the common case: no parsing)
        return url
    wanted, mark, tag = normalised_url(url).partition(VARIANT_MARK)
    if mark and not VARIANT_TAG.fullmatch(tag):
        raise _refused(url, f"a URL variant is the derived URL, '{VARIANT_MARK}' and a tag of "
                            "letters, digits, '_' and '-'")
    for derived in derived_urls:
        if normalised_url(derived) == wanted:
            return variant_url(derived, tag) if mark else derived
    expected = derived_url(min(se.protocols, key=lambda p: p.priority), lfn)
    raise _refused(url, f"the URL of {lfn} on SE {se.name} is derived from the SE's protocols "
                        f"(e.g. {expected}); leave `url` out or give that URL")
