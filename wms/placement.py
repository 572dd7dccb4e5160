"""Where a job can run, decided from its inputs' replicas. No database access here.

The rule: a site is a candidate when its SEs hold every input on disk (replica status
available, SE readable). When no site holds them all, the fallback is the sites holding the
most inputs on disk, and the pilot reads the rest remotely. Inputs with no disk replica but
an available tape replica must be staged first; inputs with no usable replica at all are
missing and fail the job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kernel.db import Document
from wms.input_data import SiteStore

USABLE = "available"


@dataclass
class Placement:
    sites: list[str] = field(default_factory=list)
    all_local: bool = False
    missing: list[str] = field(default_factory=list)
    # tape-only LFN -> tape SE it can be staged from
    tape_only: dict[str, str] = field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        return not self.missing and not self.tape_only


def usable_replicas(doc: Document, ses: Mapping[str, SiteStore], kind: str) -> list[Document]:
    out = []
    for replica in doc.get("replicas", []):
        se = ses.get(replica.get("se", ""))
        if se is not None and se.kind == kind and se.read_enabled and replica.get("status", USABLE) == USABLE:
            out.append(replica)
    return out


def allowed_sites(requested: Sequence[str], vo_sites: Sequence[str]) -> list[str] | None:
    """The sites a job may run at: those it asked for, kept to its VO's sites when the VO lists
    any (a VO's jobs run only where the VO runs); None when none of its sites is the VO's.
    An empty list means any site."""
    if not vo_sites:
        return list(requested)
    if not requested:
        return sorted(vo_sites)
    kept = [site for site in requested if site in vo_sites]
    return kept or None


def place(
    lfns: Sequence[str],
    files: Mapping[str, Document],
    ses: Mapping[str, SiteStore],
    *,
    allowed_sites: Sequence[str] = (),
) -> Placement:
    """Candidate sites for a job with these inputs, restricted to `allowed_sites` if given."""
    result = Placement()
    holders: Counter[str] = Counter()
    for lfn in dict.fromkeys(lfns):
        doc = files.get(lfn)
        if doc is None:
            result.missing.append(lfn)
            continue
        disk = usable_replicas(doc, ses, "disk")
        if disk:
            holders.update({ses[r["se"]].site for r in disk})
            continue
        tape = usable_replicas(doc, ses, "tape")
        if tape:
            result.tape_only[lfn] = tape[0]["se"]
        else:
            result.missing.append(lfn)
    if result.missing:
        return result
    wanted = len(dict.fromkeys(lfns)) - len(result.tape_only)
    if allowed_sites:
        holders = Counter({site: n for site, n in holders.items() if site in allowed_sites})
    if not lfns:
        result.sites = sorted(allowed_sites)
        result.all_local = True
        return result
    if holders:
        best = max(holders.values())
        result.sites = sorted(site for site, n in holders.items() if n == best)
        result.all_local = best == wanted
    elif allowed_sites:
        result.sites = sorted(allowed_sites)
    return result


def staging_site(placement: Placement, ses: Mapping[str, SiteStore], allowed_sites: Sequence[str]) -> str | None:
    """The site whose disk should receive tape-only inputs: the best data site; else the site of
    the tape SEs holding most of them (the copy then stays inside one site); else the first site
    with disk. Only sites with a disk SE that can be read and written count."""
    with_disk = {se.site for se in ses.values() if _takes_copies(se)}
    data_sites = [site for site in placement.sites if site in with_disk]
    if data_sites:
        return data_sites[0]
    candidates = sorted(site for site in with_disk if not allowed_sites or site in allowed_sites)
    tape_sites = Counter(ses[tape].site for tape in placement.tape_only.values())
    return max(candidates, key=lambda site: tape_sites[site], default=None)  # ties: the first by name


def disk_se_at(site: str, ses: Mapping[str, SiteStore]) -> str | None:
    names = sorted(se.name for se in ses.values() if se.site == site and _takes_copies(se))
    return names[0] if names else None


def _takes_copies(se: SiteStore) -> bool:
    return se.kind == "disk" and se.read_enabled and se.write_enabled


def best_replica(doc: Document, ses: Mapping[str, SiteStore], site: str) -> Document | None:
    """The replica a pilot at `site` should read: a local disk one, else any disk replica."""
    disk = usable_replicas(doc, ses, "disk")
    local = [r for r in disk if ses[r["se"]].site == site]
    chosen = sorted(local or disk, key=lambda r: r["se"])
    return chosen[0] if chosen else None
