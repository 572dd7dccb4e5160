"""An SE's file is reached by each protocol allowing the operation, best first, with its options."""

from __future__ import annotations

import pytest

from catalogue.storage_elements import Protocol, StorageElement
from kernel.errors import Forbidden, InvalidInput
from transfers.endpoints import endpoints, options_by_scheme, tape_endpoint

SE = StorageElement(
    name="S3-AND-ROOT", site="CERN",
    protocols=[
        Protocol(scheme="root", host="xrd.example", port=1094, prefix="/data", priority=2, write=False),
        Protocol(scheme="s3", host="bucket", prefix="/cta", priority=1, extra={"endpoint_url": "http://s3:9000"}),
    ],
)


def test_protocols_come_best_priority_first_with_their_urls() -> None:
    eps = endpoints(SE, "/cta/run1/f.root", "read")
    assert [e.url for e in eps] == ["s3://bucket/cta/cta/run1/f.root", "root://xrd.example:1094//data/cta/run1/f.root"]


def test_only_protocols_allowing_the_operation_are_offered() -> None:
    assert [e.scheme for e in endpoints(SE, "/cta/f", "write")] == ["s3"]


def test_secrets_from_settings_overlay_the_catalogue_options() -> None:
    eps = endpoints(SE, "/cta/f", "read", credentials={"S3-AND-ROOT": {"access_key": "k", "secret_key": "s"}})
    assert options_by_scheme(eps)["s3"] == {"endpoint_url": "http://s3:9000", "access_key": "k", "secret_key": "s"}


def test_a_registered_url_that_is_the_ses_own_url_for_the_lfn_is_accepted() -> None:
    eps = endpoints(SE, "/cta/f", "read", registered_url="ROOT://xrd.example//data//cta/%66")
    assert [e.url for e in eps] == ["s3://bucket/cta/cta/f", "root://xrd.example:1094//data/cta/f"]


@pytest.mark.parametrize("registered", [
    "root://other:1094//elsewhere/f",           # another host
    "root://xrd.example:1094//data/lhcb/f",     # inside the SE, but another LFN's file
    "root://xrd.example:1094//data/cta/x/../f",
    "s3://bucket/cta/cta/%2E%2E/f",
    "file:///etc/passwd",
])
def test_a_registered_url_outside_the_se_or_of_another_lfn_is_refused(registered: str) -> None:
    with pytest.raises(InvalidInput, match="refused"):
        endpoints(SE, "/cta/f", "read", registered_url=registered)


def test_an_lfn_whose_url_would_leave_the_se_is_refused() -> None:
    with pytest.raises(InvalidInput, match="refused"):
        endpoints(SE, "/cta/%2e%2e/%2e%2e/lhcb/f", "read")


def test_an_se_switched_off_refuses_with_its_name() -> None:
    off = SE.model_copy(update={"write_enabled": False})
    with pytest.raises(Forbidden, match="S3-AND-ROOT"):
        endpoints(off, "/cta/f", "write")


def test_the_tape_endpoint_refuses_a_registered_url_outside_the_tape_se() -> None:
    tape = StorageElement(name="TAPE", site="CERN", kind="tape", protocols=[
        Protocol(scheme="tape", prefix="/tape/cta", extra={"cache_dir": "/cache"})])
    assert tape_endpoint(tape, "/cta/f", credentials={}, registered_url="tape:///tape//cta/cta/f")[1] == \
        "tape:///tape/cta/cta/f"
    for outside in ("tape:///etc/passwd", "tape:///tape/cta/cta/%2e%2e/%2e%2e/x", "tape:///tape/cta/lhcb/f"):
        with pytest.raises(InvalidInput, match="refused"):
            tape_endpoint(tape, "/cta/f", credentials={}, registered_url=outside)
