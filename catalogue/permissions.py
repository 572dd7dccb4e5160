"""Path authorization: token scopes combined with POSIX-like owner/group/mode on the namespace.

The route's policy checks the scope first (`catalogue.read` to look, `catalogue.write` to
change). Then, on the entries themselves (directories and files both carry owner, group, mode):

- class: the caller is the *owner* when the token's `sub` equals the entry's owner; else *group*
  when the entry's group is one of the token's groups; else *other*. Only that class's bits count
  (as in POSIX: an owner without r is refused even if the group has r).
- traversal: every ancestor directory of the path needs x. The root `/` is virtual, owned by
  `root:admin` with mode 0755.
- stat of an entry: traversal only (like POSIX stat).
- reading a file (its replicas, i.e. where its bytes are): r on the file, plus traversal.
- listing a directory: r and x on the directory, plus traversal.
- creating an entry (mkdir, register): w and x on the nearest existing ancestor (the parent, or
  for `mkdir -p` the deepest directory that already exists), plus traversal.
- removing an entry: w and x on its parent, plus traversal.
- moving: w and x on the source's parent and on the destination's parent.
- changing a file's replicas (add, remove, status): w on the file, plus traversal.
- chmod: the owner or an admin. chown of the owner: admins only. chgrp: the owner, to one of
  their own groups, or an admin.
- the `admin` scope bypasses every check above.
- VOs (`catalogue.vos`): a confined caller reaches only paths whose VO is its own, the VO whose
  namespace root is the longest one above the path. Any other path is answered like a missing
  one (`NO_SUCH_FILE`, 404), before every check above; admins of a VO are confined too. An SE
  the caller's VO does not use (`se_in_vo`) is answered like a missing SE.
- an entry the caller cannot reach (no traversal) is reported like a missing one
  (`hiding_denial`); `catalogue.authorization` says what each action on a DID needs.

New entries belong to the caller (`sub`, primary group = first group of the token) with mode
0775 for directories and 0664 for files unless a mode is given: collaborations share by group.

Ancestors are fetched in one `_id $in` query per request (per batch, for bulk calls).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from catalogue.lfn import ROOT, ancestors, is_within, parent_of
from kernel.errors import Forbidden, NotFound
from kernel.principal import Principal

READ, WRITE, EXECUTE = 4, 2, 1
DEFAULT_DIR_MODE = 0o775
DEFAULT_FILE_MODE = 0o664
ROOT_ENTRY: dict[str, Any] = {"_id": ROOT, "parent": ROOT, "name": "", "owner": "root", "group": "admin",
                              "mode": 0o755, "meta": {}}

Entries = Mapping[str, Mapping[str, Any]]
NO_SUCH_FILE = "no such file"
_BIT_NAMES = {READ: "r", WRITE: "w", EXECUTE: "x"}
# What `permits` reads of an entry: a projection of entries to be checked keeps these.
PERMISSION_FIELDS = ("owner", "group", "mode")


def permits(principal: Principal, entry: Mapping[str, Any], bits: int) -> bool:
    """True when the caller's class (owner, group or other) holds every bit asked for."""
    if principal.is_admin:
        return True
    mode = int(entry.get("mode", 0))
    if entry.get("owner") == principal.sub:
        held = (mode >> 6) & 7
    elif entry.get("group") in principal.groups:
        held = (mode >> 3) & 7
    else:
        held = mode & 7
    return held & bits == bits


def _bits(bits: int) -> str:
    return "".join(name for bit, name in _BIT_NAMES.items() if bits & bit)


def within_reach(principal: Principal, path: str) -> bool:
    """Is `path` in the caller's VO: below one of its roots deeper than any other VO's root above it?"""
    if not principal.confined:
        return True
    own = max((len(r) for r in principal.roots if is_within(path, r)), default=-1)
    foreign = max((len(r) for r in principal.foreign_roots if is_within(path, r)), default=-1)
    return own > foreign


def se_in_vo(principal: Principal, se: str) -> bool:
    """May the caller's VO use SE `se` (every SE when the VO lists none)?"""
    return not principal.confined or not principal.ses or se in principal.ses


def traversal_denial(principal: Principal, path: str, dirs: Entries,
                     walked: dict[str, str | None] | None = None) -> str | None:
    """Why the caller may not reach `path` (outside its VO: NO_SUCH_FILE; no x on an existing
    ancestor), or None. The walk up the ancestors depends on the parent directory alone, so a
    batch of paths passes one `walked` dict to make it once per directory."""
    if not within_reach(principal, path):
        return NO_SUCH_FILE
    if walked is None or path == ROOT:
        return _search_denial(principal, path, dirs)
    parent = parent_of(path)
    if parent not in walked:
        walked[parent] = _search_denial(principal, path, dirs)
    return walked[parent]


def _search_denial(principal: Principal, path: str, dirs: Entries) -> str | None:
    for ancestor in ancestors(path):
        entry = ROOT_ENTRY if ancestor == ROOT else dirs.get(ancestor)
        if entry is None:
            return None  # the rest does not exist yet; creation rules decide
        if not permits(principal, entry, EXECUTE):
            return f"permission denied: no search (x) permission on directory {ancestor}"
    return None


def entry_denial(principal: Principal, path: str, entry: Mapping[str, Any], bits: int, dirs: Entries) -> str | None:
    """Why the caller may not act on an existing entry needing `bits`, or None."""
    return traversal_denial(principal, path, dirs) or _bits_denial(principal, path, entry, bits)


def _bits_denial(principal: Principal, path: str, entry: Mapping[str, Any], bits: int) -> str | None:
    if bits and not permits(principal, entry, bits):
        return f"permission denied: {_bits(bits)} permission needed on {path}"
    return None


def hiding_denial(principal: Principal, path: str, entry: Mapping[str, Any], bits: int, dirs: Entries,
                  walked: dict[str, str | None] | None = None) -> str | None:
    """As `entry_denial`, but an entry the caller cannot reach (no traversal) gets NO_SUCH_FILE,
    the reason of a missing one, so that no answer tells whether a hidden entry exists.
    `walked` as for `traversal_denial`."""
    if traversal_denial(principal, path, dirs, walked):
        return NO_SUCH_FILE
    return _bits_denial(principal, path, entry, bits)


def creation_denial(principal: Principal, path: str, dirs: Entries) -> str | None:
    """Why the caller may not create `path` (and any missing parents), or None."""
    reason = traversal_denial(principal, path, dirs)
    if reason:
        return reason
    for ancestor in reversed(ancestors(path)):
        entry = ROOT_ENTRY if ancestor == ROOT else dirs.get(ancestor)
        if entry is not None:
            if not permits(principal, entry, WRITE | EXECUTE):
                return f"permission denied: wx permission needed on directory {ancestor} to create {path}"
            return None
    return None


def removal_denial(principal: Principal, path: str, dirs: Entries) -> str | None:
    """Why the caller may not remove (or move away) `path`, or None."""
    if not within_reach(principal, path):
        return NO_SUCH_FILE
    parent = parent_of(path)
    entry = ROOT_ENTRY if parent == ROOT else dirs.get(parent)
    if entry is None:
        return None
    return entry_denial(principal, parent, entry, WRITE | EXECUTE, dirs)


def require(reason: str | None, path: str = "") -> None:
    """Raise Forbidden when a check above gave a reason; when the reason is that `path` is
    hidden, the NotFound a missing entry gets."""
    if reason == NO_SUCH_FILE:
        raise NotFound(f"{path or 'entry'} does not exist")
    if reason:
        raise Forbidden(reason)


def check_chmod(principal: Principal, entry: Mapping[str, Any]) -> None:
    if not principal.is_admin and entry.get("owner") != principal.sub:
        raise Forbidden(f"only the owner ({entry.get('owner')}) or an admin may change the mode of {entry['_id']}")


def check_chown(principal: Principal, entry: Mapping[str, Any], owner: str | None, group: str | None) -> None:
    if principal.is_admin:
        return
    if owner is not None and owner != entry.get("owner"):
        raise Forbidden("only an admin may change the owner of an entry")
    if group is not None:
        if entry.get("owner") != principal.sub:
            raise Forbidden(f"only the owner ({entry.get('owner')}) or an admin may change the group")
        if group not in principal.groups:
            raise Forbidden(f"you may only give your entries to one of your own groups, not {group!r}")
