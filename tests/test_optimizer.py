"""The per-link optimizer grows concurrency while throughput rises and backs off on failures."""

from __future__ import annotations

import time

from transfers.optimizer import Optimizer


def run_window(opt: Optimizer, *, ok: bool, nbytes: int, seconds_each: float = 0.0, queued: int = 0) -> None:
    for _ in range(opt.window):
        opt.started("A", "B")
    if seconds_each:
        time.sleep(seconds_each)
    for _ in range(opt.window):
        opt.finished("A", "B", ok=ok, nbytes=nbytes, seconds=seconds_each, queued=queued)


def test_decision_starts_at_the_minimum_and_bounds_starts() -> None:
    opt = Optimizer(min_active=2, max_active=4)
    assert opt.may_start("A", "B")
    opt.started("A", "B")
    opt.started("A", "B")
    assert not opt.may_start("A", "B")


def test_rising_throughput_adds_slots_up_to_the_maximum() -> None:
    opt = Optimizer(min_active=2, max_active=4, window=4)
    for step in range(6):
        run_window(opt, ok=True, nbytes=10_000 * (step + 1) ** 3, seconds_each=0.01)
    assert opt.link("A", "B").decision == 4


def test_failures_cut_the_decision_back_to_the_minimum() -> None:
    opt = Optimizer(min_active=2, max_active=16, window=4)
    opt.link("A", "B").decision = 12
    for _ in range(5):
        run_window(opt, ok=False, nbytes=0)
    assert opt.link("A", "B").decision == 2


def test_falling_throughput_removes_a_slot() -> None:
    opt = Optimizer(min_active=1, max_active=16, window=4)
    run_window(opt, ok=True, nbytes=10_000_000, seconds_each=0.01)
    before = opt.link("A", "B").decision
    run_window(opt, ok=True, nbytes=1_000, seconds_each=0.01)
    assert opt.link("A", "B").decision == before - 1


def test_falling_throughput_after_a_slot_was_taken_keeps_the_decision() -> None:
    opt = Optimizer(min_active=1, max_active=16, window=4)
    run_window(opt, ok=True, nbytes=10_000_000, seconds_each=0.01)
    run_window(opt, ok=True, nbytes=1_000_000, seconds_each=0.01)  # a slot added, then a fall: one off
    after_cut = opt.link("A", "B").decision
    run_window(opt, ok=True, nbytes=100_000, seconds_each=0.01)
    run_window(opt, ok=True, nbytes=10_000, seconds_each=0.01)
    assert opt.link("A", "B").decision == after_cut


def test_global_and_per_se_limits_cap_every_link() -> None:
    opt = Optimizer(min_active=8, max_active=8, global_limit=100, per_se_limit=3)
    for _ in range(3):
        opt.started("A", "B")
    assert not opt.may_start("A", "C")  # A is at its per-SE limit
    assert opt.may_start("D", "C")
