"""Tokens of trusted issuers mapped to VOs (issue 14): the mapping names the VO whatever the token
claims, the configured claim carries the groups, and only the built-in issuer names VO `*`."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.errors import InvalidInput, Unauthenticated
from kernel.settings import TrustedIssuer
from kernel.tokens import BuiltinIssuer, TokenVerifier

AUDIENCE = "cairn-test"
IAM = "https://iam-cta.example.org/"


def external(issuer: str = IAM) -> BuiltinIssuer:
    """Another service's issuer (it signs like ours; the verifier knows only its public key)."""
    return BuiltinIssuer(issuer, AUDIENCE, Ed25519PrivateKey.generate(), 600)


def verifier(signer: BuiltinIssuer, **mapping: str) -> TokenVerifier:
    trusted = TrustedIssuer(issuer=signer.issuer, public_keys=[signer.public_pem.decode()], **mapping)
    return TokenVerifier(audience=AUDIENCE, builtin=None, trusted=[trusted])


async def test_a_mapped_issuer_names_the_vo_and_its_groups_claim_carries_the_groups() -> None:
    signer = external()
    token = signer.issue(sub="ann", vo="lhcb", scopes=["catalogue.read"],
                         extra={"wlcg.groups": ["/cta", "/cta/phys"]})
    ann = await verifier(signer, vo="cta", groups_claim="wlcg.groups").verify(token)
    assert (ann.vo, ann.groups) == ("cta", ("cta", "cta/phys"))
    assert ann.qualified_groups == ("cta:cta", "cta:cta/phys")


async def test_entitlements_become_groups_of_the_mapped_vo() -> None:
    signer = external()
    entitlement = "urn:mace:egi.eu:group:km3net.org:role=member#aai.egi.eu"
    token = signer.issue(sub="ben", vo="x", extra={"eduperson_entitlement": entitlement})
    ben = await verifier(signer, vo="km3net", groups_claim="eduperson_entitlement").verify(token)
    assert (ben.vo, ben.groups) == ("km3net", (entitlement,))


async def test_without_a_mapping_the_tokens_vo_claim_counts_but_never_the_global_vo() -> None:
    signer = external()
    plain = verifier(signer)
    assert (await plain.verify(signer.issue(sub="cy", vo="lhcb"))).vo == "lhcb"
    with pytest.raises(Unauthenticated, match="only the built-in issuer"):
        await plain.verify(signer.issue(sub="cy", vo="*", scopes=["admin"]))
    mapped = await verifier(signer, vo="cta").verify(signer.issue(sub="cy", vo="*", scopes=["admin"]))
    assert mapped.vo == "cta"  # the mapping wins over what the token claims


def test_the_built_in_issuer_gives_vo_star_to_admin_tokens_only() -> None:
    signer = external()
    with pytest.raises(InvalidInput, match="admin scope"):
        signer.issue(sub="root", vo="*", scopes=["catalogue.read"])
    assert signer.issue(sub="root", vo="*", scopes=["admin"])
