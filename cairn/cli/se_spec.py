"""What `cairn se add/update` and `cairn site add` take on the command line, turned into the SE
schema of `catalogue.storage_elements`: typed `KEY=VALUE` pairs and `URL[,flag...]` protocols.

A protocol is its base URL, then comma-separated flags: `ro` (reads only), `noread`, `nowrite`,
`nodelete`, `tpc` (third-party copy), `priority=N`, and any other `KEY=VALUE` is a plugin
option (`extra`). URLs: `file:///data/se1`, `s3://BUCKET/prefix`, `root://host:1094//data/se`,
`davs://host:8443/data/se`, `tape:///archive/se`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click

from kernel.secret_options import SECRET_OPTIONS

SCHEMES = ("file", "s3", "root", "dav", "davs", "http", "https", "tape")


def typed(value: str) -> str | int | float | bool:
    """A command-line value as the type it reads as: true/false, an integer, a number, else text."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def pairs(values: tuple[str, ...], what: str) -> dict[str, str | int | float | bool]:
    """`KEY=VALUE` options as a typed dict; a clear error for one without `=`."""
    out: dict[str, str | int | float | bool] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key.strip()] = typed(value.strip())
    return out


def protocol(spec: str, priority: int) -> dict[str, Any]:
    """One `--protocol URL[,flag...]` as a Protocol document."""
    url, *flags = [part.strip() for part in spec.split(",")]
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise click.BadParameter(f"{url!r}: the scheme must be one of {', '.join(SCHEMES)}", param_hint="--protocol")
    try:
        port = parts.port
    except ValueError as exc:
        raise click.BadParameter(f"{url!r}: {exc}", param_hint="--protocol") from exc
    path = "/" + parts.path.lstrip("/")
    if parts.scheme in ("file", "tape") and parts.netloc:
        raise click.BadParameter(f"{url!r}: a {parts.scheme} URL names a local path: {parts.scheme}:///path",
                                 param_hint="--protocol")
    if parts.scheme not in ("file", "tape") and not parts.hostname:
        raise click.BadParameter(f"{url!r}: a {parts.scheme} URL needs a host (for s3: the bucket)",
                                 param_hint="--protocol")
    doc: dict[str, Any] = {"scheme": parts.scheme, "host": parts.hostname or "", "port": port, "prefix": path,
                           "priority": priority, "extra": {}}
    switches = {"ro": {"write": False, "delete": False}, "noread": {"read": False}, "nowrite": {"write": False},
                "nodelete": {"delete": False}, "tpc": {"third_party_copy": True}}
    for flag in filter(None, flags):
        if flag in switches:
            doc.update(switches[flag])
        elif flag.startswith("priority="):
            doc["priority"] = typed(flag.partition("=")[2])
        elif "=" in flag:
            doc["extra"].update(pairs((flag,), "--protocol"))
        else:
            raise click.BadParameter(f"unknown protocol flag {flag!r} (ro, noread, nowrite, nodelete, tpc, "
                                     "priority=N or KEY=VALUE plugin options)", param_hint="--protocol")
    return doc


def without_secrets(doc: dict[str, Any]) -> dict[str, Any]:
    """doc, an SE about to be saved, if no protocol's `extra` holds a secret option: the SE's
    record is shown to every user (GET /ses, the portal), so its keys would reach them all."""
    for item in doc.get("protocols") or []:
        extra = item.get("extra") if isinstance(item, dict) else None
        found = sorted(SECRET_OPTIONS.intersection(extra or {})) if isinstance(extra, dict) else []
        if found:
            raise click.UsageError(f"{', '.join(found)}: a secret, not stored in the SE's record (every user "
                                   "reads it); give it to the servers and daemons in CAIRN_STORAGE_CREDENTIALS "
                                   "('{\"SE\": {\"OPTION\": ...}}')")
    return doc


def protocols(specs: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every `--protocol`, the first preferred unless a flag says otherwise."""
    return [protocol(spec, index) for index, spec in enumerate(specs, start=1)]
