"""Source replicas are ranked: available and readable only; disk before tape; TPC; same site."""

from __future__ import annotations

from catalogue.storage_elements import Protocol, StorageElement
from transfers.sources import rank_sources


def se(name: str, site: str, *, kind: str = "disk", scheme: str = "root", tpc: bool = True,
       read_enabled: bool = True) -> StorageElement:
    return StorageElement(name=name, site=site, kind=kind,  # type: ignore[arg-type]
                          protocols=[Protocol(scheme=scheme, host="h", prefix="/d", third_party_copy=tpc)],  # type: ignore[arg-type]
                          read_enabled=read_enabled)


SES = {s.name: s for s in [
    se("DEST", "S1"),
    se("TAPE", "S1", kind="tape"),
    se("FAR-ROOT", "S2"),
    se("NEAR-ROOT", "S1"),
    se("FAR-FILE", "S3", scheme="file", tpc=False),
    se("OFF", "S1", read_enabled=False),
]}


def file_with(*names: str, status: str = "available") -> dict[str, object]:
    return {"_id": "/vo/f", "replicas": [{"se": n, "url": f"root://h//{n}/f", "status": status} for n in names]}


def order(doc: dict[str, object], **kw: object) -> list[str]:
    return [s.se.name for s in rank_sources(doc, SES, SES["DEST"], **kw)]  # type: ignore[arg-type]


def test_disk_before_tape_tpc_before_streaming_and_same_site_first() -> None:
    ranked = order(file_with("TAPE", "FAR-FILE", "FAR-ROOT", "NEAR-ROOT"))
    assert ranked == ["NEAR-ROOT", "FAR-ROOT", "FAR-FILE", "TAPE"]


def test_unreadable_ses_unavailable_replicas_and_the_destination_are_never_sources() -> None:
    assert order(file_with("OFF", "DEST")) == []
    assert order(file_with("NEAR-ROOT", status="bad")) == []


def test_a_forced_source_is_the_only_candidate() -> None:
    assert order(file_with("NEAR-ROOT", "FAR-ROOT"), only_se="FAR-ROOT") == ["FAR-ROOT"]


def test_replicas_that_failed_this_request_go_last_among_equals() -> None:
    assert order(file_with("NEAR-ROOT", "FAR-ROOT"), failed_on=["NEAR-ROOT"]) == ["FAR-ROOT", "NEAR-ROOT"]
