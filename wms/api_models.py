"""Bodies of the job routes that pilots and users send (validated at the edge)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kernel.bounds import Int64, PositiveInt64, Size


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pilot: str = Field(..., min_length=1, max_length=200)
    site: str = Field(..., min_length=1, max_length=64)
    cpu: int = Field(1, ge=1, le=4096)
    memory_mb: PositiveInt64 = 2048
    tags: list[str] = Field(default_factory=list, max_length=1000)


class PilotReport(BaseModel):
    """Identifies the attempt a pilot holds; every pilot call carries it."""

    model_config = ConfigDict(extra="forbid")

    pilot: str = Field(..., min_length=1, max_length=200)
    attempt: PositiveInt64


class FinalReport(PilotReport):
    state: Literal["done", "failed", "killed"]
    reason: str = Field("", max_length=2000)
    exit_code: Int64 | None = None
    stdout: str = ""
    stderr: str = ""


class UploadedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str
    url: str
    size: Size
    adler32: str = Field(..., pattern=r"^[0-9a-f]{8}$")


class OutputsReport(PilotReport):
    files: list[UploadedOutput] = Field(..., min_length=1, max_length=1000)


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


class ShareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    share: float = Field(..., gt=0, le=1e6,
                         description="relative weight of the group (within its VO) or of the VO (between VOs)")
