"""The pilot agent (`cairn pilot --site S`): pull a job, fetch its inputs, run it, store its outputs.

For each job: ask the matcher, mark it running, download every input from its best replica
(site-local first) into a fresh work directory, run the payload with the job's time limit
while a heartbeat task keeps the job alive (and learns of kill requests), upload and register
the outputs with their inputs as ancestors, then report the end with the exit code and the
tails of stdout and stderr. If the server says the pilot no longer holds the job (it was
declared stalled and rescheduled), the payload is stopped and nothing more is reported.

A pilot started by the factory (`wms.pilot_factory`) is named by it (CAIRN_PILOT_NAME, which
links the jobs it takes to its pilot document) and stops by itself after `--idle-exit-s` without
a matching job, giving its batch slot back. A pilot told to stop (SIGTERM: the batch system
cancels or pre-empts it) kills its payload and reports nothing: the job goes silent and the
watchdog reschedules it.

Outputs are fenced by attempt: right before writing, the pilot asks the server for its upload
slot, which a stale attempt is refused (409), and writes only to the slot's URLs, which no other
attempt uses (`wms.outputs.attempt_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from catalogue.storage_paths import storage_lfn
from kernel.daemon import Daemon
from kernel.errors import CairnError, Conflict, ServiceUnavailable
from kernel.process import child_preexec, without_settings
from storage_plugins.registry import close_plugins
from wms.client import JobsClient
from wms.config import WmsSettings
from wms.payload_account import PayloadAccount
from wms.pilot_data import Credentials, DataAccessError, fetch, put

# How long a payload killed by SIGTERM waits for the pilot's own SIGTERM (a batch cancel) to arrive.
SIGNAL_GRACE_S = 2.0

log = logging.getLogger("cairn.pilot")
Logs = tuple[BinaryIO, BinaryIO]  # the payload's stdout and stderr, as the pilot opened them


@dataclass
class Resources:
    cpu: int = 1
    memory_mb: int = 2048
    tags: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    state: str
    reason: str
    exit_code: int | None = None


class LostJob(Exception):
    """The server gave this attempt to someone else: stop without reporting."""


class Pilot(Daemon):
    name = "pilot"
    idle_sleep_s = 2.0

    def __init__(
        self, client: JobsClient, site: str, work_dir: Path, config: WmsSettings, resources: Resources | None = None,
        *, keep_work_dirs: bool = False, name: str | None = None, idle_exit_s: float | None = None,
        credentials: Credentials | None = None, payload_account: PayloadAccount | None = None,
    ) -> None:
        super().__init__()
        self.account = payload_account  # None: payloads run as the pilot's own user
        self.credentials = credentials or {}
        if name:
            self.worker = name
        self.idle_exit_s = idle_exit_s
        self._idle_since = time.monotonic()
        self.client = client
        self.site = site
        self.work_dir = work_dir
        self.config = config
        self.resources = resources or Resources()
        self.keep_work_dirs = keep_work_dirs

    async def run_once(self) -> int:
        try:
            order = await self.client.match_job(pilot=self.worker, site=self.site, cpu=self.resources.cpu,
                                                memory_mb=self.resources.memory_mb, tags=self.resources.tags)
        except ServiceUnavailable:
            self._stop_when_idle()  # an idle pilot that cannot reach the API leaves too
            raise
        if order is None:
            self._stop_when_idle()
            return 0
        log.info("pilot %s: job %s attempt %s", self.worker, order["id"], order["attempt"])
        await self.run_job(order)
        self._idle_since = time.monotonic()
        return 1

    def _stop_when_idle(self) -> None:
        if self.idle_exit_s is not None and time.monotonic() - self._idle_since > self.idle_exit_s:
            log.info("pilot %s: no matching job for %.0fs; stopping", self.worker, self.idle_exit_s)
            self.stop()

    async def close(self) -> None:
        await self.client.close()
        await close_plugins()
        if self.account is not None:
            await asyncio.to_thread(self.account.remove_base)

    async def run_job(self, order: dict[str, Any]) -> None:
        job_id, attempt = order["id"], order["attempt"]
        job_dir = (self.account.base if self.account else self.work_dir) / f"job-{job_id}-{attempt}"
        await asyncio.to_thread(_fresh_dir, job_dir)
        try:
            started = await self.client.start_job(job_id, pilot=self.worker, attempt=attempt)
        except Conflict as exc:
            log.warning("job %s: %s", job_id, exc.message)
            return
        kill = asyncio.Event()
        lost = asyncio.Event()
        if started.get("kill"):
            kill.set()
        beat = asyncio.create_task(self._heartbeats(job_id, attempt, kill, lost))
        # The logs are read back through the pilot's own descriptors: the payload may replace the
        # files by links to what only the pilot may read, whose tails would go into the job's record.
        try:
            with (job_dir / ".stdout").open("w+b") as out, (job_dir / ".stderr").open("w+b") as err:
                outcome = await self._execute(order, job_dir, kill, lost, (out, err))
                stdout = await asyncio.to_thread(self._tail, out)
                stderr = await asyncio.to_thread(self._tail, err)
            if lost.is_set() or outcome.reason == "lost":  # stopped with its payload
                raise LostJob
            await self._report(job_id, attempt, outcome, stdout, stderr)
        except (LostJob, Conflict):
            log.warning("job %s attempt %s was taken from this pilot; dropped", job_id, attempt)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            if not self.keep_work_dirs:
                await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)

    async def _report(self, job_id: str, attempt: int, outcome: Outcome, stdout: str, stderr: str) -> None:
        """The final report, retried while the API is away (the work is done and should count)."""
        for delay in (1, 2, 4, 8, 16, 0):
            try:
                await self.client.report_job(job_id, pilot=self.worker, attempt=attempt, state=outcome.state,
                                             reason=outcome.reason, exit_code=outcome.exit_code, stdout=stdout,
                                             stderr=stderr)
                return
            except ServiceUnavailable as exc:
                if not delay:
                    raise
                log.warning("report of job %s failed (%s); retrying in %ss", job_id, exc.message, delay)
                await asyncio.sleep(delay)

    async def _execute(self, order: dict[str, Any], job_dir: Path, kill: asyncio.Event,
                       lost: asyncio.Event, logs: Logs) -> Outcome:
        if kill.is_set():
            return Outcome("killed", "killed by request before it started")
        try:
            await self._download_inputs(order, job_dir)
        except DataAccessError as exc:
            return Outcome("failed", f"input download failed: {exc.message}")
        if self.account is not None:
            await asyncio.to_thread(self.account.hand_over, job_dir)
        try:
            exit_code, why = await self._run_payload(order, job_dir, kill, lost, logs)
        finally:
            if self.account is not None:
                await asyncio.to_thread(self.account.take_back, job_dir)
        if why == "killed":
            return Outcome("killed", "killed by request", exit_code)
        if why == "timeout":
            return Outcome("failed", f"time limit of {order['time_limit_s']}s exceeded", exit_code)
        if why:
            return Outcome("failed", why, exit_code)
        if exit_code != 0:
            return Outcome("failed", f"payload exited with code {exit_code}", exit_code)
        try:
            await self._upload_outputs(order, job_dir, lost)
        except (DataAccessError, Conflict) as exc:
            if lost.is_set() or isinstance(exc, Conflict):
                raise LostJob from exc
            return Outcome("failed", f"output upload failed: {exc.message}", exit_code)
        return Outcome("done", "payload succeeded and outputs are registered", exit_code)

    async def _download_inputs(self, order: dict[str, Any], job_dir: Path) -> None:
        for item in order["inputs"]:
            dest = job_dir / Path(item["lfn"]).name
            errors = []
            for replica in item["replicas"]:
                try:
                    await fetch(replica["url"], dest, lfn=storage_lfn(item["lfn"], replica),
                                se_config=replica["se_config"],
                                credentials=self.credentials, expected_adler32=item.get("adler32"),
                                size=item["size"] if isinstance(item.get("size"), int) else None)
                    break
                except DataAccessError as exc:
                    errors.append(f"{replica['se']}: {exc.message}")
            else:
                raise DataAccessError(f"{item['lfn']}: no replica could be read ({'; '.join(errors) or 'none'})")

    async def _run_payload(
        self, order: dict[str, Any], job_dir: Path, kill: asyncio.Event, lost: asyncio.Event, logs: Logs,
    ) -> tuple[int | None, str]:
        env = payload_environment(os.environ)
        env.update({"CAIRN_JOB_ID": str(order["id"]), "CAIRN_JOB_ATTEMPT": str(order["attempt"]),
                    "CAIRN_SITE": self.site})
        options: dict[str, Any] = {"preexec_fn": child_preexec, "cwd": job_dir}
        if self.account is not None:
            env["HOME"] = str(job_dir)
            options = self.account.process_options(job_dir)  # its preexec_fn enters job_dir, ends with child_preexec
        out, err = logs
        try:
            proc = await asyncio.create_subprocess_exec(
                order["executable"], *order["arguments"], stdout=out, stderr=err, env=env,
                start_new_session=True, **options,
            )
        except (OSError, ValueError) as exc:  # ValueError: a NUL in a job stored before they were refused
            return None, f"cannot start {order['executable']}: {getattr(exc, 'strerror', None) or exc}"
        except subprocess.SubprocessError:  # the payload account's step before exec failed (`become`)
            return None, (f"cannot start {order['executable']}: could not enter its job directory as payload "
                          f"account {self.account.name if self.account else '?'}")
        waiter = asyncio.create_task(proc.wait())
        stop = asyncio.create_task(_first(kill, lost, self._stop))
        done, _ = await asyncio.wait({waiter, stop}, timeout=order["time_limit_s"],
                                     return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if waiter in done:
            if proc.returncode == -signal.SIGTERM and not self.stopping:
                # A batch system's cancel signals every process of the pilot at once: the
                # payload may die of it before this pilot has seen its own SIGTERM.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), SIGNAL_GRACE_S)
            if self.account is not None:
                _terminate(proc.pid)  # what it left running in its group, before its directory is read
            if proc.returncode == -signal.SIGTERM and self.stopping:
                return proc.returncode, "lost"
            return proc.returncode, ""
        _terminate(proc.pid)
        code = await waiter
        if lost.is_set() or self.stopping:
            return code, "lost"
        return code, "killed" if kill.is_set() else "timeout"

    async def _upload_outputs(self, order: dict[str, Any], job_dir: Path, lost: asyncio.Event) -> None:
        if not order["outputs"]:
            return
        if lost.is_set():
            raise LostJob
        try:
            slots = await self.client.job_output_slots(order["id"], pilot=self.worker, attempt=order["attempt"])
        except Conflict:
            log.warning("job %s attempt %s: upload slot refused by the server; writing nothing",
                        order["id"], order["attempt"])
            raise
        files = []
        for out in slots:
            if lost.is_set():
                raise LostJob
            if out.get("url") is None:
                raise DataAccessError(out.get("problem", f"no destination for {out['lfn']}"))
            src = _produced(job_dir, out["path"], out["lfn"])
            size, checksum = await put(src, out["url"], lfn=out["lfn"], se_config=out["se_config"],
                                       credentials=self.credentials)
            files.append({"lfn": out["lfn"], "url": out["url"], "size": size, "adler32": checksum})
        if files:
            result = await self.client.register_job_outputs(order["id"], pilot=self.worker,
                                                            attempt=order["attempt"], files=files)
            if result["failed"]:
                raise DataAccessError(f"output registration refused: {result['failed']}")

    async def _heartbeats(self, job_id: str, attempt: int, kill: asyncio.Event, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                answer = await self.client.heartbeat_job(job_id, pilot=self.worker, attempt=attempt)
            except Conflict:
                lost.set()
                return
            except CairnError as exc:  # the API is away for a moment; the next beat may pass
                log.warning("heartbeat for job %s failed: %s", job_id, exc.message)
                continue
            if answer.get("kill"):
                kill.set()

    def _tail(self, log: BinaryIO) -> str:
        try:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - self.config.log_tail_bytes))
            return log.read().decode(errors="replace")
        except OSError:
            return ""


def payload_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The pilot's environment less its secrets (`kernel.process.SECRET_SETTINGS`): the payload
    runs as its user, and the SEs' credentials would give it every VO's bytes on them, the
    pilot's token every job's reports."""
    return without_settings(environ)


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _terminate(pid: int) -> None:
    """Stop the payload and everything it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _produced(job_dir: Path, path: str, lfn: str) -> Path:
    """The output file `path` the payload left in its work directory, as a regular file there: a
    symbolic link (of the file, or of a directory on its path) leading out of the directory is
    refused, or a payload could have the pilot upload, under the job owner's LFN, a file only the
    pilot may read (its own credentials, another job's outputs)."""
    src = job_dir / path
    try:
        real = src.resolve()
    except ValueError as exc:  # a NUL in a job stored before they were refused
        raise DataAccessError(f"output {path!r} (for {lfn}) is no path: {exc}") from exc
    if not real.is_relative_to(job_dir.resolve()):
        raise DataAccessError(f"output {path} (for {lfn}) leads out of the job's directory; not uploaded")
    if not real.is_file():
        raise DataAccessError(f"the payload did not produce {path} (for {lfn})")
    return real

