"""Job states and the moves between them.

received -> checking -> (staging) -> waiting -> matched -> running -> done | failed
Any state before the end may become killed; matched/running may become stalled when the
pilot's heartbeats stop; a stalled or failed-to-start job may be rescheduled (back to received).
"""

from __future__ import annotations

RECEIVED = "received"
CHECKING = "checking"
STAGING = "staging"
WAITING = "waiting"
MATCHED = "matched"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
STALLED = "stalled"
KILLED = "killed"

ALL = (RECEIVED, CHECKING, STAGING, WAITING, MATCHED, RUNNING, DONE, FAILED, STALLED, KILLED)
FINAL = (DONE, FAILED, KILLED)
# States in which a pilot holds the job (and the group's running count includes it).
AT_PILOT = (MATCHED, RUNNING)
# States from which a user or admin may reschedule.
RESCHEDULABLE = (STALLED, FAILED, KILLED)
