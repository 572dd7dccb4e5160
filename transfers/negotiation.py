"""Protocol negotiation between two SEs for one file, and the copy that follows from it.

The transfer daemons hand a source SE (and the replica's registered URL), a destination SE and
an LFN to `copy_between`. `negotiate` picks the URLs: for a file of at most `route_below` bytes,
a client-routed copy when both SEs speak a protocol whose own client copies through this
process (root:// with XrdCl; a small file's TPC costs the destination server a process);
else a third-party copy over the best family both SEs flag for TPC (HTTP before root, TLS on
both ends before plain), so the bytes go storage to storage; else a stream through this process
from the source's best read protocol to the destination's best write protocol (S3 <-> XRootD,
anything <-> disk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from catalogue.storage_elements import StorageElement
from kernel.errors import CairnError
from storage_plugins.base import TpcMode
from storage_plugins.copy import CopyPlan, CopyResult, copy, plan_copy, plan_routed
from transfers.endpoints import Endpoint, endpoints, options_by_scheme

Credentials = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class Negotiated:
    """What to hand to `storage_plugins.copy`: the URLs of the chosen pair and their options."""

    plan: CopyPlan
    source: Endpoint
    dest: Endpoint

    @property
    def source_options(self) -> dict[str, dict[str, Any]]:
        return options_by_scheme([self.source])

    @property
    def dest_options(self) -> dict[str, dict[str, Any]]:
        return options_by_scheme([self.dest])


def negotiate(
    source_se: StorageElement,
    dest_se: StorageElement,
    lfn: str,
    *,
    source_url: str | None = None,
    source_lfn: str | None = None,
    credentials: Credentials | None = None,
    dest_endpoints: list[Endpoint] | None = None,
    size: int | None = None,
    route_below: int = 0,
) -> Negotiated:
    """The best URL pair to copy lfn from source_se to dest_se.

    Only protocols the SEs flag `third_party_copy` take part in a TPC; the plugins decide
    whether two of those can meet (same family). Raises Forbidden naming the SE and LFN when
    the source is switched off for reading or the destination for writing. `dest_endpoints`:
    dest_se's write endpoints for lfn when the caller has them already; `source_lfn`: the path
    the source replica's bytes lie at, when it is not lfn's (a moved file's, `catalogue.moved_paths`).
    `size` (the catalogue's) at most `route_below`: a client-routed pair wins when there is one.
    """
    sources = endpoints(source_se, source_lfn or lfn, "read", credentials=credentials, registered_url=source_url)
    dests = dest_endpoints or endpoints(dest_se, lfn, "write", credentials=credentials)
    if size is not None and size <= route_below:
        routed = plan_routed([e.url for e in sources], [e.url for e in dests])
        if routed is not None:
            return Negotiated(routed, next(e for e in sources if e.url == routed.source),
                              next(e for e in dests if e.url == routed.dest))
    tpc_sources = [e for e in sources if e.protocol.third_party_copy]
    tpc_dests = [e for e in dests if e.protocol.third_party_copy]
    if tpc_sources and tpc_dests:
        plan = plan_copy([e.url for e in tpc_sources], [e.url for e in tpc_dests])
        if plan.mode == "tpc":
            source = next(e for e in tpc_sources if e.url == plan.source)
            dest = next(e for e in tpc_dests if e.url == plan.dest)
            return Negotiated(plan, source, dest)
    return Negotiated(CopyPlan(sources[0].url, dests[0].url, "stream", "stream"), sources[0], dests[0])


async def copy_between(
    source_se: StorageElement,
    dest_se: StorageElement,
    lfn: str,
    *,
    source_url: str | None = None,
    source_lfn: str | None = None,
    expected_adler32: str,
    expected_size: int | None = None,
    credentials: Credentials | None = None,
    overwrite: bool = True,
    tpc_mode: TpcMode = "pull",
    timeout_s: float = 3600,
    dest_endpoints: list[Endpoint] | None = None,
    route_below: int = 0,
) -> CopyResult:
    """Copy lfn's replica on source_se to dest_se the best way both allow, verifying adler32
    (and the size, `expected_size`: the catalogue's, which spares a stream a stat of its source).

    On a checksum mismatch the destination's copy is removed (by `storage_plugins.copy`).
    Every error names the LFN and both SEs besides the URL the storage complained about, and
    carries the side it came from in `details["side"]` when that is known (`error_side`).
    `route_below`: see `negotiate` (needs `expected_size`).
    """
    context = f"copy of {lfn} from SE {source_se.name} to SE {dest_se.name}"
    chosen: Negotiated | None = None
    try:
        chosen = negotiate(source_se, dest_se, lfn, source_url=source_url, source_lfn=source_lfn,
                           credentials=credentials, dest_endpoints=dest_endpoints, size=expected_size,
                           route_below=route_below)
        return await copy(
            chosen.plan.source,
            chosen.plan.dest,
            source_options=chosen.source_options,
            dest_options=chosen.dest_options,
            expected_adler32=expected_adler32,
            expected_size=expected_size,
            overwrite=overwrite,
            allow_tpc=chosen.plan.mode == "tpc",
            tpc_mode=tpc_mode,
            timeout_s=timeout_s,
            plan=chosen.plan,  # negotiated above: not planned twice per file
        )
    except CairnError as exc:
        side = error_side(exc, chosen.plan.source, chosen.plan.dest) if chosen is not None else None
        if side is not None:
            exc.details.setdefault("side", side)
        raise exc.within(context) from None


def error_side(exc: CairnError, source: str, dest: str) -> str | None:
    """"source" or "destination": the side a storage error is about, by the URL its message
    starts with (every storage error names the URL it is about first); None when it names both
    (a third-party copy's, whose cause either side may hold) or neither. A NotFound is only the
    source's loss when the source said it: a destination's (an S3 bucket gone, a 404 to a PUT)
    must not mark healthy source replicas lost (`transfers.failed_copies`)."""
    message = exc.message
    if message.startswith((f"{source} -> ", f"{dest} -> ")):
        return None
    if message.startswith(f"{dest}:"):
        return "destination"
    if message.startswith(f"{source}:"):
        return "source"
    return None
