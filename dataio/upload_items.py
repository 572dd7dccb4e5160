"""What an upload knows of each local file it sends (`dataio.upload`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class PlannedFile:
    """A local file to upload to an LFN, with its size and adler32 once summed."""

    local: Path
    lfn: str
    size: int = 0
    adler32: str = ""
    created: bool = False
    unreadable: str | None = None  # why its sum could not be read (it fails alone)
