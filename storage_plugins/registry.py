"""Which plugin serves which URL scheme (fsspec's `known_implementations` is the model).

Plugins are imported on first use, so a process that never touches root:// never loads gfal2.
One plugin instance is kept per (plugin, options, event loop) so connections are reused.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kernel.errors import InvalidInput
from storage_plugins.base import StoragePlugin

KNOWN_PLUGINS: dict[str, str] = {
    "file": "storage_plugins.posix:PosixPlugin",
    "s3": "storage_plugins.s3:S3Plugin",
    "http": "storage_plugins.webdav:WebDavPlugin",
    "https": "storage_plugins.webdav:WebDavPlugin",
    "dav": "storage_plugins.webdav:WebDavPlugin",
    "davs": "storage_plugins.webdav:WebDavPlugin",
    "root": "storage_plugins.xrootd:XRootDPlugin",
    "tape": "storage_plugins.tape:TapePlugin",
}

_instances: dict[tuple[str, str, int], StoragePlugin] = {}


def scheme_of(url: str) -> str:
    """The URL's scheme in lower case; InvalidInput when it has none."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise InvalidInput(f"{url!r} is not a storage URL: it has no scheme (file://, s3://, root://, ...)")
    return scheme


def register_plugin(scheme: str, target: str) -> None:
    """Serve scheme with the plugin class at `module:Class`."""
    KNOWN_PLUGINS[scheme.lower()] = target


def plugin_class(scheme: str) -> type[StoragePlugin]:
    """The plugin class of a scheme; InvalidInput naming the known schemes if there is none."""
    target = KNOWN_PLUGINS.get(scheme.lower())
    if target is None:
        known = ", ".join(sorted(KNOWN_PLUGINS))
        raise InvalidInput(f"no storage plugin for scheme {scheme!r} (known: {known})")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, StoragePlugin)):
        raise InvalidInput(f"{target} is not a StoragePlugin")
    return cls


def plugin_for(url: str, options: Mapping[str, Any] | None = None) -> StoragePlugin:
    """The plugin serving url, configured with options (shared with earlier calls alike)."""
    cls = plugin_class(scheme_of(url))
    key_options = json.dumps(dict(options or {}), sort_keys=True, default=str)
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    key = (f"{cls.__module__}.{cls.__qualname__}", key_options, loop_id)
    plugin = _instances.get(key)
    if plugin is None:
        plugin = _instances[key] = cls(options)
    return plugin


async def close_plugins() -> None:
    """Close every shared plugin of the running event loop (at process or test-session end)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [key for key in _instances if key[2] in (loop_id, 0)]:
        await _instances.pop(key).close()
