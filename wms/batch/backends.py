"""Backends by the kind a queue names."""

from __future__ import annotations

from pathlib import Path

from wms.batch.interface import BatchBackend, BatchError
from wms.batch.local import LocalBackend
from wms.batch.slurm import SlurmBackend


def backend_for(kind: str, work_dir: Path) -> BatchBackend:
    """The backend of a queue's kind ("local" or "slurm")."""
    if kind == "local":
        return LocalBackend(work_dir)
    if kind == "slurm":
        return SlurmBackend()
    raise BatchError(f"unknown batch backend {kind!r}; known: local, slurm")
