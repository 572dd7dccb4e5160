"""Tunables of the job layer, from `CAIRN_WMS_*` environment variables (defaults suit production)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WmsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_WMS_", extra="ignore")

    # How often a pilot reports that its job is alive, and when silence means stalled.
    heartbeat_s: float = Field(30.0, gt=0)
    stalled_after_s: float = Field(300.0, gt=0)
    # How many times a stalled job is put back in the queue before it fails for good.
    max_reschedules: int = Field(3, ge=0)
    # Jobs per checker pass (one catalogue query per pass), and how often staging jobs are rechecked.
    check_batch: int = Field(500, ge=1)
    staging_recheck_s: float = Field(30.0, gt=0)
    # Captured stdout/stderr kept per job (the tail, in bytes).
    log_tail_bytes: int = Field(64 * 1024, ge=1024)
    # A waiting job its checker placed but did not queue (it died in between) is queued by the
    # watchdog once it has waited this long.
    unqueued_repair_s: float = Field(60.0, gt=0)
    # How far apart the watchdog's two looks at the task queues' and groups' counters must be for
    # it to mend one both looks found drifted alike (`wms.counter_recount.QuietMender`).
    counter_mend_s: float = Field(60.0, gt=0)
    # The Unix account a pilot running as root runs payloads as (`wms.payload_account`), and
    # where their job directories go (default: a new directory in the system's temporary one).
    payload_user: str | None = None
    payload_dir: Path | None = None


def wms_settings() -> WmsSettings:
    return WmsSettings()
