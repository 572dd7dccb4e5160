"""The batch backend interface: what every backend implements, and the states the factory uses
(see the package docstring)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kernel.process import without_settings

WAITING, RUNNING, DONE, FAILED, ABORTED, LOST = "waiting", "running", "done", "failed", "aborted", "lost"
ACTIVE = (WAITING, RUNNING)
FINAL = (DONE, FAILED, ABORTED, LOST)


@dataclass(frozen=True)
class PilotSpec:
    """One pilot to submit: its name, the script it runs, its environment, its resources."""

    name: str
    script: str
    env: Mapping[str, str]
    log_path: Path
    cores: int = 1
    memory_mb: int = 2048
    time_limit_s: int = 3600


def pilot_environment(spec: PilotSpec) -> dict[str, str]:
    """The environment a pilot starts with: the factory's less its secrets
    (`kernel.process.SECRET_SETTINGS`), and the spec's (the pilot's own token, the SEs' credentials).
    Backends hand it over as the environment, never written in a script the batch system keeps
    (a payload can read its job's script back: `scontrol write batch_script`)."""
    return {**without_settings(os.environ), **spec.env}


@dataclass(frozen=True)
class BatchStatus:
    state: str
    exit_code: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class QueueConfig:
    """What the factory needs to know about one queue (see catalogue.site_queues)."""

    name: str
    site: str
    backend: str
    partition: str = ""
    cores: int = 1
    memory_mb: int = 2048
    max_waiting: int = 10
    max_running: int = 50
    tags: Sequence[str] = field(default_factory=tuple)


class BatchError(Exception):
    """The batch system refused or failed a command."""


class BatchBackend(ABC):
    """One batch system."""

    @abstractmethod
    async def submit(self, queue: QueueConfig, pilots: Sequence[PilotSpec]) -> list[str]:
        """Submit the pilots; their batch ids, in order. Raises BatchError when nothing was submitted."""

    @abstractmethod
    async def status(self, batch_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """The state of each batch id (unknown ones are LOST)."""

    @abstractmethod
    async def kill(self, batch_id: str) -> None:
        """Stop one pilot."""

    async def queue_status(self, queue: QueueConfig, batch_ids: Sequence[str]) -> dict[str, int]:
        """How many of these pilots wait and run."""
        counts = {WAITING: 0, RUNNING: 0}
        for st in (await self.status(batch_ids)).values():
            if st.state in counts:
                counts[st.state] += 1
        return counts

    async def find(self, names: Sequence[str]) -> dict[str, str]:
        """Batch ids of pilots submitted under these names (for pilots whose submission was not
        confirmed: the factory died between sbatch and recording the id)."""
        return {}

    def follow(self, batch_id: str, log_path: Path) -> None:  # noqa: B027 - only the local backend needs it
        """Follow a pilot this process did not submit (after a factory restart)."""

    def log_path(self, work_dir: Path, name: str) -> Path:
        """Where a pilot's output and log go."""
        return work_dir / f"{name}.log"
