"""An SE's file is reached by each protocol allowing the operation, best first, with its options."""

from __future__ import annotations

import pytest

from catalogue.storage_elements import Protocol, StorageElement
from kernel.errors import Forbidden
from transfers.endpoints import endpoints, options_by_scheme

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


def test_a_registered_url_is_kept_for_its_scheme() -> None:
    eps = endpoints(SE, "/cta/f", "read", registered_url="root://other:1094//elsewhere/f")
    assert eps[1].url == "root://other:1094//elsewhere/f"


def test_an_se_switched_off_refuses_with_its_name() -> None:
    off = SE.model_copy(update={"write_enabled": False})
    with pytest.raises(Forbidden, match="S3-AND-ROOT"):
        endpoints(off, "/cta/f", "write")
