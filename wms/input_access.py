"""May this caller read these input files? POSIX-like owner/group/mode on the file documents.

Kept beside the job layer until the catalogue's own path ACL functions land; the rule is the
catalogue's: admin reads everything; otherwise the owner bits apply to the owner, the group
bits to members of the file's group, the other bits to everyone else.
"""

from __future__ import annotations

from collections.abc import Mapping

from kernel.db import Document
from kernel.principal import Principal

DEFAULT_MODE = 0o644


def may_read(principal: Principal, doc: Document) -> bool:
    if principal.is_admin:
        return True
    mode = int(doc.get("mode", DEFAULT_MODE))
    if doc.get("owner") == principal.sub:
        return bool(mode & 0o400)
    if doc.get("group") in principal.groups:
        return bool(mode & 0o040)
    return bool(mode & 0o004)


def unreadable(principal: Principal, files: Mapping[str, Document]) -> list[str]:
    """The LFNs among `files` that the principal may not read."""
    return sorted(lfn for lfn, doc in files.items() if not may_read(principal, doc))
