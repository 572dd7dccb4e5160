"""The local backend: pilots are child processes of the factory's host (the embedded default).

Each pilot runs `sh SCRIPT` in its own session; a wrapper writes the exit code beside the log,
so a restarted factory still learns how a pilot it did not start ended. Batch ids are
`local-PID`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from kernel.process import child_preexec
from wms.batch.interface import (
    ABORTED,
    DONE,
    FAILED,
    LOST,
    RUNNING,
    BatchBackend,
    BatchError,
    BatchStatus,
    PilotSpec,
    QueueConfig,
    pilot_environment,
)


class LocalBackend(BatchBackend):
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._logs: dict[str, Path] = {}

    async def submit(self, queue: QueueConfig, pilots: Sequence[PilotSpec]) -> list[str]:
        ids: list[str] = []
        for spec in pilots:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            script = spec.log_path.with_suffix(".sh")
            script.write_text(spec.script)
            script.chmod(0o700)
            exit_file = spec.log_path.with_suffix(".exit")
            wrapper = f'sh "{script}"; echo $? > "{exit_file}"'
            try:
                with spec.log_path.open("ab") as out:
                    proc = await asyncio.create_subprocess_exec(
                        "sh", "-c", wrapper, stdout=out, stderr=asyncio.subprocess.STDOUT,
                        stdin=asyncio.subprocess.DEVNULL, env=pilot_environment(spec),
                        preexec_fn=child_preexec, start_new_session=True)
            except OSError as exc:
                if not ids:
                    raise BatchError(f"cannot start a local pilot: {exc}") from exc
                break
            batch_id = f"local-{proc.pid}"
            self._children[batch_id] = proc
            self._logs[batch_id] = spec.log_path
            ids.append(batch_id)
        return ids

    def follow(self, batch_id: str, log_path: Path) -> None:
        self._logs.setdefault(batch_id, log_path)

    async def status(self, batch_ids: Sequence[str]) -> dict[str, BatchStatus]:
        out = {}
        for batch_id in batch_ids:
            child = self._children.get(batch_id)
            log = self._logs.get(batch_id)
            exit_file = log.with_suffix(".exit") if log else None
            if exit_file is not None and exit_file.exists():
                code = int(exit_file.read_text().strip() or "1")
                out[batch_id] = BatchStatus(DONE if code == 0 else FAILED, code)
            elif child is not None and child.returncode is not None:
                out[batch_id] = BatchStatus(ABORTED, child.returncode, "killed")
            elif _alive(batch_id):
                out[batch_id] = BatchStatus(RUNNING)
            else:
                out[batch_id] = BatchStatus(LOST, None, "no such process")
        return out

    async def kill(self, batch_id: str) -> None:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(batch_id.removeprefix("local-")), signal.SIGKILL)
        child = self._children.get(batch_id)
        if child is not None:
            await child.wait()


def _alive(batch_id: str) -> bool:
    try:
        os.kill(int(batch_id.removeprefix("local-")), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
