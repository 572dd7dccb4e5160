"""Copy a file between two storage endpoints the best way both allow: a third-party copy when
their protocols can do one together (HTTP/WebDAV COPY, XRootD TPC), else a stream through this
process. The transfer daemons call `copy`; it verifies adler32 and reports what it did.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kernel.errors import CairnError, Conflict, InvalidInput
from storage_plugins.base import StoragePlugin, TpcMode
from storage_plugins.byte_ranges import at_most
from storage_plugins.checksums import Adler32, tee_adler32
from storage_plugins.errors import ChecksumMismatch, StorageError
from storage_plugins.registry import plugin_class, plugin_for, scheme_of

# Third-party-copy families in order of preference: WLCG is moving transfers to HTTP TPC.
TPC_PREFERENCE = ("http", "root")
SECURE_SCHEMES = frozenset({"https", "davs", "roots"})
OptionsByScheme = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class CopyPlan:
    """Which URLs to copy between, and whether the storage does it (tpc) or we do (stream).
    `routed`: a stream that the protocol's own client moves (`StoragePlugin.routed_copy`)."""

    source: str
    dest: str
    mode: Literal["tpc", "stream"]
    protocol: str
    routed: bool = False


@dataclass(frozen=True)
class CopyResult:
    """What `copy` did: how, how many bytes, their adler32, and how long it took."""

    source: str
    dest: str
    mode: Literal["tpc", "stream"]
    protocol: str
    bytes: int
    adler32: str
    seconds: float


def _as_list(urls: str | Sequence[str]) -> list[str]:
    listed = [urls] if isinstance(urls, str) else list(urls)
    if not listed:
        raise InvalidInput("copy needs at least one source URL and one destination URL")
    return listed


def plan_copy(sources: str | Sequence[str], dests: str | Sequence[str]) -> CopyPlan:
    """Pick the best pair among each endpoint's URLs (its protocols, best first).

    A pair whose plugins share a TPC family wins, HTTP before root, TLS on both ends before
    plain; without one, the first source and destination are streamed through the caller.
    """
    source_urls, dest_urls = _as_list(sources), _as_list(dests)
    best: tuple[int, int, CopyPlan] | None = None
    for source in source_urls:
        source_family = plugin_class(scheme_of(source)).tpc_family
        for dest in dest_urls:
            family = plugin_class(scheme_of(dest)).tpc_family
            if family is None or family != source_family or family not in TPC_PREFERENCE:
                continue
            secure = scheme_of(source) in SECURE_SCHEMES and scheme_of(dest) in SECURE_SCHEMES
            rank = (TPC_PREFERENCE.index(family), 0 if secure else 1)
            if best is None or rank < best[:2]:
                best = (*rank, CopyPlan(source, dest, "tpc", family))
    if best is not None:
        return best[2]
    return CopyPlan(source_urls[0], dest_urls[0], "stream", "stream")


def plan_routed(sources: str | Sequence[str], dests: str | Sequence[str]) -> CopyPlan | None:
    """The best pair of one protocol whose client copies between its URLs itself through this
    process (`routes_copies`), or None."""
    for source in _as_list(sources):
        plugin = plugin_class(scheme_of(source))
        if plugin.routes_copies:
            for dest in _as_list(dests):
                if plugin_class(scheme_of(dest)) is plugin:
                    return CopyPlan(source, dest, "stream", plugin.tpc_family or scheme_of(source), routed=True)
    return None


def _plugin(url: str, options: OptionsByScheme | None) -> StoragePlugin:
    return plugin_for(url, (options or {}).get(scheme_of(url)))


def _token(options: OptionsByScheme | None, url: str) -> str | None:
    token = (options or {}).get(scheme_of(url), {}).get("token")
    return str(token) if token else None


async def copy(
    source: str | Sequence[str],
    dest: str | Sequence[str],
    *,
    source_options: OptionsByScheme | None = None,
    dest_options: OptionsByScheme | None = None,
    expected_adler32: str | None = None,
    expected_size: int | None = None,
    overwrite: bool = True,
    allow_tpc: bool = True,
    tpc_mode: TpcMode = "pull",
    timeout_s: float = 3600,
    plan: CopyPlan | None = None,
) -> CopyResult:
    """Copy one file from source to dest and verify it arrived whole.

    source and dest are a URL or the URLs of one file on each endpoint, one per protocol,
    best first; options are per URL scheme (e.g. {"davs": {"ca_file": ...}}). The copied
    file's adler32 must equal expected_adler32 (the catalogue's) if given, else the source's;
    on a mismatch the destination is deleted and ChecksumMismatch raised. expected_size (the
    catalogue's) spares a stream the stat of its source, which is then asked only if the copy
    fails. `plan`: the pair the caller chose already (`plan_copy`'s answer for these URLs).
    """
    plan = plan or plan_copy(source, dest)
    if not allow_tpc and plan.mode == "tpc":
        plan = CopyPlan(_as_list(source)[0], _as_list(dest)[0], "stream", "stream")
    src, dst = _plugin(plan.source, source_options), _plugin(plan.dest, dest_options)
    if not overwrite and await dst.exists(plan.dest):
        raise Conflict(f"{plan.dest}: exists already and overwrite was not asked for")
    started = time.monotonic()
    try:
        if plan.mode == "tpc":
            size, actual, expected = await _third_party(
                plan, src, dst, expected_adler32, source_options, dest_options, overwrite, tpc_mode, timeout_s
            )
        elif plan.routed:
            size, actual, expected = await _routed(plan, src, dst, expected_adler32, expected_size, timeout_s)
        else:
            size, actual, expected = await _stream(plan, src, dst, expected_adler32, expected_size)
    except ChecksumMismatch:
        with contextlib.suppress(CairnError):
            await dst.delete(plan.dest)
        raise
    if actual != expected:
        with contextlib.suppress(CairnError):
            await dst.delete(plan.dest)
        raise ChecksumMismatch(plan.dest, expected, actual)
    return CopyResult(
        plan.source, plan.dest, plan.mode, plan.protocol, size, actual, time.monotonic() - started
    )


async def _third_party(
    plan: CopyPlan,
    src: StoragePlugin,
    dst: StoragePlugin,
    expected_adler32: str | None,
    source_options: OptionsByScheme | None,
    dest_options: OptionsByScheme | None,
    overwrite: bool,
    tpc_mode: TpcMode,
    timeout_s: float,
) -> tuple[int, str, str]:
    expected = expected_adler32 or await src.checksum(plan.source)
    # For HTTP the active party is the destination when pulling and the source when pushing;
    # the passive one may need a token of its own (TransferHeaderAuthorization).
    if plan.protocol == "http" and tpc_mode == "push":
        active, remote_token = src, _token(dest_options, plan.dest)
    else:
        active, remote_token = dst, _token(source_options, plan.source)
    await active.third_party_copy(
        plan.source,
        plan.dest,
        mode=tpc_mode,
        overwrite=overwrite,
        timeout_s=timeout_s,
        remote_token=remote_token,
    )
    size, actual = await dst.size_and_checksum(plan.dest)
    return size, actual, expected


async def _routed(
    plan: CopyPlan, src: StoragePlugin, dst: StoragePlugin, expected_adler32: str | None, expected_size: int | None,
    timeout_s: float,
) -> tuple[int, str, str]:
    expected = expected_adler32 or await src.checksum(plan.source)
    size, actual = await dst.routed_copy(plan.source, plan.dest, expected_adler32=expected, timeout_s=timeout_s)
    if expected_size is not None and size != expected_size:
        raise ChecksumMismatch(plan.dest, f"{expected} of {expected_size} bytes", f"{actual} of {size} bytes")
    return size, actual, expected


async def _stream(
    plan: CopyPlan, src: StoragePlugin, dst: StoragePlugin, expected_adler32: str | None, expected_size: int | None,
) -> tuple[int, str, str]:
    size = expected_size if expected_size is not None else (await src.stat(plan.source)).size
    passed = Adler32()

    def too_many() -> StorageError:
        return StorageError(f"{plan.source}: the source sent more than the file's {size} bytes")

    try:
        await dst.write(plan.dest, tee_adler32(at_most(src.read(plan.source), size, too_many), passed), size=size)
    except StorageError:
        # Written to the catalogue's size: a source that holds another size is a wrong copy. A
        # source that cannot say (its stat fails too) leaves the write's own error to be raised.
        if expected_size is not None and expected_adler32 is not None:
            actual_size = await _size_or_none(src, plan.source)
            if actual_size is not None and actual_size != expected_size:
                raise ChecksumMismatch(plan.source, expected_adler32, f"(size {actual_size}, not {expected_size})") \
                    from None
        raise
    if expected_adler32 is not None and passed.hexdigest() != expected_adler32:
        raise ChecksumMismatch(plan.source, expected_adler32, passed.hexdigest())
    # What passed through us is what the source holds; the destination, if it can say cheaply,
    # must hold the same.
    stored = await dst.checksum(plan.dest) if dst.server_checksum else passed.hexdigest()
    return passed.size, stored, passed.hexdigest()


async def _size_or_none(plugin: StoragePlugin, url: str) -> int | None:
    try:
        return (await plugin.stat(url)).size
    except CairnError:
        return None
