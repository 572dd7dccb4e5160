"""Batch systems the pilot factory submits pilots to.

A backend submits N pilots at once (each a shell script with its own log file), tells the
state of many batch jobs in one call, kills one, and counts what a queue holds. States are the
factory's, not the batch system's: waiting, running, done, failed, aborted (killed by the batch
system or an operator), lost (the batch system no longer knows the job).

Backends: `local` (child processes of the factory, the embedded default `cairn up` uses) and
`slurm` (sbatch/squeue/sacct/scancel). Extension points, not yet written: an HTCondor backend
would submit one cluster of N procs with `condor_submit` (batch id CLUSTER.PROC), read states
from `condor_q -json` then `condor_history -json`, kill with `condor_rm`; an ARC backend would
submit with `arcsub` (the job id is a URL), read states with `arcstat`, kill with `arckill`
and fetch logs with `arcget`. Each only implements `BatchBackend` and registers in `backend_for`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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


def backend_for(kind: str, work_dir: Path) -> BatchBackend:
    """The backend of a queue's kind ("local" or "slurm")."""
    if kind == "local":
        from wms.batch.local import LocalBackend

        return LocalBackend(work_dir)
    if kind == "slurm":
        from wms.batch.slurm import SlurmBackend

        return SlurmBackend()
    raise BatchError(f"unknown batch backend {kind!r}; known: local, slurm")
