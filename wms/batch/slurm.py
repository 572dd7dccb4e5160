"""The Slurm backend: `sbatch --parsable` per pilot (concurrently), `squeue` for queued and
running pilots, `sacct -c` (the job completion log) for finished ones, `scancel` to kill.

The commands find their cluster the usual way (SLURM_CONF or /etc/slurm/slurm.conf). A pilot
that squeue no longer lists and the completion log does not know yet is reported LOST; the
factory waits a grace period before believing it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import Mapping, Sequence

from wms.batch.interface import (
    ABORTED,
    DONE,
    FAILED,
    LOST,
    RUNNING,
    WAITING,
    BatchBackend,
    BatchError,
    BatchStatus,
    PilotSpec,
    QueueConfig,
    pilot_environment,
)

COMMAND_TIMEOUT_S = 60
SUBMIT_CONCURRENCY = 8
QUEUED = {"PENDING": WAITING, "CONFIGURING": WAITING, "REQUEUED": WAITING, "RESV_DEL_HOLD": WAITING,
          "REQUEUE_HOLD": WAITING, "SUSPENDED": RUNNING, "RUNNING": RUNNING, "COMPLETING": RUNNING,
          "STAGE_OUT": RUNNING, "SIGNALING": RUNNING}
FINISHED = {"COMPLETED": DONE, "FAILED": FAILED, "NODE_FAIL": FAILED, "OUT_OF_MEMORY": FAILED,
            "BOOT_FAIL": FAILED, "TIMEOUT": ABORTED, "CANCELLED": ABORTED, "PREEMPTED": ABORTED,
            "DEADLINE": ABORTED}


async def run_command(*argv: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run one batch command (in env, else this process's environment); its stdout, or
    BatchError with its stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    except OSError as exc:
        raise BatchError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None),
                                          COMMAND_TIMEOUT_S)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise BatchError(f"{argv[0]} did not answer in {COMMAND_TIMEOUT_S}s") from exc
    if proc.returncode != 0:
        raise BatchError(f"{argv[0]} failed ({proc.returncode}): {err.decode(errors='replace').strip()[:500]}")
    return out.decode(errors="replace")


class SlurmBackend(BatchBackend):
    async def submit(self, queue: QueueConfig, pilots: Sequence[PilotSpec]) -> list[str]:
        gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def one(spec: PilotSpec) -> str:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            argv = ["sbatch", "--parsable", f"--job-name={spec.name}", f"--output={spec.log_path}",
                    f"--cpus-per-task={spec.cores}", f"--time={max(1, spec.time_limit_s // 60)}",
                    "--export=ALL"]
            if queue.partition:
                argv.append(f"--partition={queue.partition}")
            if queue.memory_mb:
                argv.append(f"--mem={spec.memory_mb}M")
            async with gate:
                # The environment goes with --export=ALL; the script (which Slurm keeps, and gives
                # back to its job's processes) holds no value of it.
                out = await run_command(*argv, stdin=f"#!/bin/sh\n{spec.script}", env=pilot_environment(spec))
            return out.strip().split(";")[0]

        results = await asyncio.gather(*(one(s) for s in pilots), return_exceptions=True)
        ids = [r if isinstance(r, str) else "" for r in results]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and not any(ids):
            raise BatchError(str(errors[0]))
        return ids

    async def status(self, batch_ids: Sequence[str]) -> dict[str, BatchStatus]:
        if not batch_ids:
            return {}
        wanted = set(batch_ids)
        out: dict[str, BatchStatus] = {}
        listing = await run_command("squeue", "-h", "-o", "%i|%T", "-u", _user())
        for line in listing.splitlines():
            job_id, _, state = line.strip().partition("|")
            if job_id in wanted:
                out[job_id] = BatchStatus(QUEUED.get(state, RUNNING), None, state.lower())
        rest = [b for b in batch_ids if b not in out]
        if rest:
            done = await run_command("sacct", "-c", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(rest))
            for line in done.splitlines():
                parts = line.strip().split("|")
                if len(parts) < 3 or parts[0] not in wanted:
                    continue
                state = parts[1].split()[0] if parts[1] else ""
                code = _exit_code(parts[2])
                kind = FINISHED.get(state, FAILED)
                if kind == DONE and code not in (0, None):
                    kind = FAILED
                out[parts[0]] = BatchStatus(kind, code, state.lower())
        for b in batch_ids:
            out.setdefault(b, BatchStatus(LOST, None, "unknown to squeue and sacct"))
        return out

    async def find(self, names: Sequence[str]) -> dict[str, str]:
        wanted = set(names)
        found = {}
        listing = await run_command("squeue", "-h", "-o", "%j|%i", "-u", _user())
        finished = await run_command("sacct", "-c", "-n", "-P", "-o", "JobName,JobID")
        for line in (listing + finished).splitlines():
            name, _, job_id = line.strip().partition("|")
            if name in wanted and job_id:
                found[name] = job_id
        return found

    async def kill(self, batch_id: str) -> None:
        await run_command("scancel", batch_id)


def _exit_code(text: str) -> int | None:
    head = text.split(":")[0]
    return int(head) if head.isdigit() else None


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name
