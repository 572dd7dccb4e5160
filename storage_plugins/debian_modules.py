"""Python bindings Debian installs for its own Python (python3-gfal2, python3-xrootd): importable as
usual when they are on sys.path, else from Debian's dist-packages, which this Python does not
search."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from kernel.errors import ConfigurationError

DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def import_debian_module(name: str, missing: str) -> ModuleType:
    """Import `name`, looking in Debian's dist-packages too; ConfigurationError(`missing`) if absent.
    Only the module comes from there: the directory leaves sys.path again at once."""
    try:
        return importlib.import_module(name)
    except ImportError:
        sys.path.append(DEBIAN_DIST_PACKAGES)
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(missing) from exc
        finally:
            sys.path.remove(DEBIAN_DIST_PACKAGES)
