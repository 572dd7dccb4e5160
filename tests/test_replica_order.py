"""Which replica a reader tries first: available on a readable SE; its own site, then disk
before tape, then by name; the others are reported with the reason."""

from __future__ import annotations

from catalogue.storage_elements import Protocol, StorageElement
from dataio.replica_order import replicas_to_read


def se(name: str, site: str, kind: str = "disk", **changes: object) -> StorageElement:
    return StorageElement(name=name, site=site, kind=kind,
                          protocols=[Protocol(scheme="file", prefix=f"/se/{name}")], **changes)


SES = {s.name: s for s in (se("A-TAPE", "A", "tape"), se("A-DISK", "A"), se("B-DISK", "B"),
                           se("C-OFF", "C", read_enabled=False))}


def replicas(*names: str, status: str = "available") -> list[dict[str, str]]:
    return [{"se": n, "status": status, "url": f"file:///se/{n}/f"} for n in names]


def test_the_readers_site_comes_first_and_disk_before_tape() -> None:
    order, _ = replicas_to_read("/vo/f", replicas("B-DISK", "A-TAPE", "A-DISK"), SES, site="A")
    assert [r.se.name for r in order] == ["A-DISK", "A-TAPE", "B-DISK"]


def test_without_a_site_disk_comes_before_tape() -> None:
    order, _ = replicas_to_read("/vo/f", replicas("A-TAPE", "B-DISK", "A-DISK"), SES)
    assert [r.se.name for r in order] == ["A-DISK", "B-DISK", "A-TAPE"]


def test_unusable_replicas_are_left_out_with_the_reason() -> None:
    listed = replicas("C-OFF", "GONE") + replicas("B-DISK", status="bad")
    order, skipped = replicas_to_read("/vo/f", listed, SES)
    assert order == []
    assert skipped == {"C-OFF": "SE C-OFF is switched off for reading", "GONE": "unknown SE",
                       "B-DISK": "replica is bad"}
