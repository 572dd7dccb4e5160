"""How to reach a file on an SE: its URL for each of the SE's protocols, best first, with the
storage-plugin options for each.

Options are the protocol's `extra` from the catalogue (endpoint URL, bucket region, CA file,
tape cache...) overlaid with those of this process's secrets for the SE
(`CAIRN_STORAGE_CREDENTIALS`) that the protocol's plugin takes, so credentials never pass
through the catalogue and reach no plugin they are not for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from catalogue.replica_urls import VARIANT_MARK, derived_url, se_url, variant_url
from catalogue.storage_elements import Protocol, StorageElement
from kernel.errors import CairnError, Forbidden, InvalidInput
from storage_plugins.registry import plugin_class, plugin_for
from storage_plugins.tape import TapePlugin

Operation = Literal["read", "write", "delete"]
GERUNDS: dict[str, str] = {"read": "reading", "write": "writing", "delete": "deleting"}


@dataclass(frozen=True)
class Endpoint:
    """One way to reach one file: the SE, the protocol, the URL and the plugin options."""

    se: StorageElement
    protocol: Protocol
    url: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return self.protocol.scheme


def plugin_options(
    se: StorageElement, protocol: Protocol, credentials: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """The options a storage plugin needs for this SE's protocol (non-secret extra + the SE's
    secrets that this protocol's plugin takes); a local directory's plugin also gets the SE's
    root, to refuse any path that resolves outside it."""
    confined = {"root": protocol.prefix} if protocol.scheme == "file" else {}
    return {**protocol.extra, **_secrets_for(se, protocol, credentials.get(se.name, {})), **confined}


def _secrets_for(se: StorageElement, protocol: Protocol, secrets: Mapping[str, str]) -> dict[str, str]:
    """The SE's secrets that protocol's plugin declares. Secrets are given once per SE, for all its
    protocols (S3 keys beside a WebDAV token), and a plugin refuses keys it does not know; a key
    that none of the SE's plugins takes (a typo, a protocol gone) is refused by name, never value."""
    if not secrets:
        return {}
    taken = {p.scheme: _option_names(p.scheme) for p in se.protocols}
    unknown = sorted(set(secrets).difference(*taken.values()))
    if unknown:
        raise InvalidInput(f"CAIRN_STORAGE_CREDENTIALS for SE {se.name}: {', '.join(unknown)} is an option "
                           "of none of its protocols' storage plugins")
    return {key: value for key, value in secrets.items() if key in taken[protocol.scheme]}


def _option_names(scheme: str) -> frozenset[str]:
    try:
        return frozenset(plugin_class(scheme).Options.model_fields)
    except InvalidInput:  # no plugin for the scheme: plugin_for will say so
        return frozenset()


def endpoints(
    se: StorageElement,
    lfn: str,
    operation: Operation,
    *,
    credentials: Mapping[str, Mapping[str, str]] | None = None,
    registered_url: str | None = None,
) -> list[Endpoint]:
    """Every protocol of se that allows operation, best priority first, with the file's URL on it.

    Raises Forbidden when the SE is switched off for the operation. Every URL handed out lies
    inside se (`catalogue.replica_urls`): a registered URL that is not se's own URL for lfn, or
    an LFN whose URL would leave the SE, raise InvalidInput before any plugin is made, so no
    daemon or route ever reads, writes, signs or deletes a path outside an SE.
    """
    if not se.switched_on(operation, lfn):  # the SE's switch, and that of lfn's VO there
        raise Forbidden(f"SE {se.name} is switched off for {GERUNDS[operation]} ({lfn})")
    tag = ""
    if registered_url:
        # A job attempt's output is registered at a variant of the derived URL: the same variant
        # names those bytes on every protocol of the SE.
        _, _, tag = se_url(se, lfn, registered_url).partition(VARIANT_MARK)
    found = []
    for protocol in sorted(se.protocols, key=lambda p: p.priority):
        if not getattr(protocol, operation):
            continue
        url = variant_url(derived_url(protocol, lfn), tag) if tag else derived_url(protocol, lfn)
        found.append(Endpoint(se, protocol, url, plugin_options(se, protocol, credentials or {})))
    if not found:
        raise Forbidden(f"SE {se.name} has no protocol that allows {operation} ({lfn})")
    return found


def options_by_scheme(eps: Iterable[Endpoint]) -> dict[str, dict[str, Any]]:
    """Options keyed by URL scheme, as storage_plugins.copy wants them (first endpoint wins)."""
    out: dict[str, dict[str, Any]] = {}
    for ep in eps:
        out.setdefault(ep.scheme, ep.options)
    return out


def tape_endpoint(
    se: StorageElement, lfn: str, *, credentials: Mapping[str, Mapping[str, str]], registered_url: str | None,
) -> tuple[TapePlugin, str]:
    """The tape plugin and URL to stage, poll, pin or release lfn on tape SE `se`."""
    if se.kind != "tape":
        raise CairnError(f"SE {se.name} is not a tape SE")
    ep = endpoints(se, lfn, "read", credentials=credentials, registered_url=registered_url)[0]
    plugin = plugin_for(ep.url, ep.options)
    if not isinstance(plugin, TapePlugin):
        raise CairnError(f"SE {se.name} is a tape SE but {ep.url} is not served by the tape plugin")
    return plugin, ep.url
