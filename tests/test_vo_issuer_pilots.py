"""A token of an issuer mapped to one VO (that VO's own IdP) speaks for that VO only: with scope
jobs.pilot alone it is no installation pilot, which would match and report on every VO's jobs."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.errors import Forbidden
from kernel.settings import Settings, TrustedIssuer, load_settings
from kernel.tokens import BuiltinIssuer
from tests.fixtures.authz import World
from tests.fixtures.grid import check_all
from wms.config import WmsSettings

IAM = BuiltinIssuer("https://iam-cta.example.org/", "cairn", Ed25519PrivateKey.generate(), 600)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings, trusting CTA's IdP for VO cta."""
    trusted = TrustedIssuer(issuer=IAM.issuer, public_keys=[IAM.public_pem.decode()], vo="cta")
    return load_settings(**{**settings.model_dump(), "trusted_issuers": [trusted]})


async def test_a_vo_issuers_pilot_token_matches_no_other_vos_job(vo_world: World, wms_config: WmsSettings) -> None:
    status, answer = await vo_world.call("bob", "POST", "/jobs", {"executable": "/bin/true"})  # an lhcb job
    assert status == 201, answer
    await check_all(vo_world.db, wms_config)
    token = IAM.issue(sub="mallory", vo="cta", scopes=["jobs.pilot"])
    async with vo_world.api.client(token) as mallory:
        with pytest.raises(Forbidden):
            await mallory.match_job(pilot="p", site="SITE")
    async with vo_world.api.client(vo_world.api.token(sub="pilot", scopes=("jobs.pilot",))) as pilot:
        order = await pilot.match_job(pilot="p", site="SITE")  # the installation's pilot still takes it
    assert order is not None and order["id"] == answer["ids"][0]
