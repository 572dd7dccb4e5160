"""A trusted issuer mapped to one VO speaks for that VO only: a `jobs.pilot` token of its own
does not make an installation pilot (pilots run every VO's jobs), so it cannot take another VO's
jobs; the installation's pilots (built-in issuer) still can."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.settings import Settings, TrustedIssuer
from kernel.tokens import BuiltinIssuer
from tests.fixtures.authz import World
from tests.fixtures.grid import check_all
from wms.config import WmsSettings

CTA_IAM = BuiltinIssuer("https://iam-cta.example.org/", "", Ed25519PrivateKey.generate(), 600)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings, trusting cta's own token issuer for VO cta."""
    CTA_IAM.audience = settings.token_audience
    iam = TrustedIssuer(issuer=CTA_IAM.issuer, public_keys=[CTA_IAM.public_pem.decode()], vo="cta")
    return settings.model_copy(update={"trusted_issuers": [iam]})


async def test_a_vo_issuers_pilot_token_takes_no_job_of_another_vo(vo_world: World, wms_config: WmsSettings) -> None:
    status, answer = await vo_world.call("bob", "POST", "/jobs", {"jobs": [{"executable": "/bin/true"}]})
    assert status == 201, answer
    await check_all(vo_world.db, wms_config)
    vo_world.tokens["cta-iam-pilot"] = CTA_IAM.issue(sub="robot", vo="cta", scopes=["jobs.pilot"])
    status, answer = await vo_world.call("cta-iam-pilot", "POST", "/jobs/match", {"pilot": "p1", "site": "SITE"})
    assert status == 403, answer
    vo_world.tokens["pilot"] = vo_world.api.token(sub="pilot", scopes=("jobs.pilot",))
    status, answer = await vo_world.call("pilot", "POST", "/jobs/match", {"pilot": "p2", "site": "SITE"})
    assert status == 200 and answer["job"]["owner"] == "lhcb:bob", answer
