"""Adaptive concurrency per link (source SE -> destination SE), in the spirit of FTS3's optimizer.

Each link has a decision: how many transfers may run on it at once, between `min_active` and
`max_active`. After every `window` finished transfers on a link the decision moves:

- success rate below 50%: halve; below `min_success` (default 90%): back off by a quarter (at
  least 1) — failing links get fewer slots, so errors do not multiply;
- otherwise, if the smoothed throughput (EMA of bytes/s over the whole link) rose by more than
  `gain` since the last decision or stayed level while work waited: one more slot;
- if the throughput fell by more than `gain` after a slot was added: one slot fewer (the link
  or an end is saturated); after a slot was taken or none changed, keep it: a fall that the
  decision itself caused, or the machine's load, is no reason to take another (taking one each
  time spiralled small-file links down to the minimum);
- else keep it.

Global and per-SE limits cap what the decisions allow (`may_start`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class LinkState:
    decision: int
    ema_bps: float = 0.0
    last_decided_bps: float = 0.0
    results: deque[bool] = field(default_factory=lambda: deque(maxlen=50))
    since_decision: int = 0
    last_step: int = 0  # how the last decision moved: +1, -1 or 0
    active: int = 0
    bytes_in_flight_start: dict[str, float] = field(default_factory=dict)
    window_bytes: int = 0
    window_started: float = field(default_factory=time.monotonic)

    @property
    def success_rate(self) -> float:
        return sum(self.results) / len(self.results) if self.results else 1.0


@dataclass
class Optimizer:
    min_active: int = 2
    max_active: int = 32
    window: int = 8
    min_success: float = 0.9
    gain: float = 0.1
    ema_alpha: float = 0.3
    global_limit: int = 64
    per_se_limit: int = 32
    links: dict[tuple[str, str], LinkState] = field(default_factory=dict)

    def link(self, source: str, dest: str) -> LinkState:
        key = (source, dest)
        if key not in self.links:
            self.links[key] = LinkState(decision=self.min_active)
        return self.links[key]

    def active_on_se(self, se: str) -> int:
        return sum(s.active for (src, dst), s in self.links.items() if se in (src, dst))

    def total_active(self) -> int:
        return sum(s.active for s in self.links.values())

    def may_start(self, source: str, dest: str) -> bool:
        """Whether one more transfer fits the link's decision and the global and per-SE limits."""
        state = self.link(source, dest)
        return (
            state.active < state.decision
            and self.total_active() < self.global_limit
            and self.active_on_se(source) < self.per_se_limit
            and self.active_on_se(dest) < self.per_se_limit
        )

    def started(self, source: str, dest: str) -> None:
        self.link(source, dest).active += 1

    def released(self, source: str, dest: str) -> None:
        """A started transfer stopped without an outcome on the link (its request was taken over,
        or the worker is stopping): its slot is free, and neither a success nor a failure counts."""
        state = self.link(source, dest)
        state.active = max(0, state.active - 1)

    def finished(self, source: str, dest: str, *, ok: bool, nbytes: int, seconds: float, queued: int = 0) -> None:
        """Record one finished transfer and, every `window` of them, move the link's decision."""
        state = self.link(source, dest)
        state.active = max(0, state.active - 1)
        state.results.append(ok)
        state.since_decision += 1
        if ok:
            state.window_bytes += nbytes
        if state.since_decision >= self.window:
            self._decide(state, queued)

    def _decide(self, state: LinkState, queued: int) -> None:
        elapsed = max(1e-3, time.monotonic() - state.window_started)
        bps = state.window_bytes / elapsed
        state.ema_bps = bps if state.ema_bps == 0 else self.ema_alpha * bps + (1 - self.ema_alpha) * state.ema_bps
        previous, before = state.last_decided_bps, state.decision
        if state.success_rate < 0.5:
            state.decision //= 2
        elif state.success_rate < self.min_success:
            state.decision -= max(1, state.decision // 4)
        elif previous == 0 or state.ema_bps > previous * (1 + self.gain):
            state.decision += 1
        elif state.ema_bps < previous * (1 - self.gain):
            state.decision -= 1 if state.last_step > 0 else 0
        elif queued > 0:
            state.decision += 1
        state.decision = max(self.min_active, min(self.max_active, state.decision))
        state.last_step = (state.decision > before) - (state.decision < before)
        state.last_decided_bps = state.ema_bps
        state.since_decision = 0
        state.window_bytes = 0
        state.window_started = time.monotonic()

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {"source": src, "dest": dst, "decision": s.decision, "active": s.active,
             "throughput_bps": round(s.ema_bps, 1), "success_rate": round(s.success_rate, 3)}
            for (src, dst), s in sorted(self.links.items())
        ]
