"""CPython's cyclic garbage collector, set for a long-running process (the API server, a daemon).

By default the collector passes over generation 0 every 700 container objects allocated (net)
and over everything the process holds every 100 such passes. A process that reads pages of
thousands of documents allocates that many in moments, so it collected all the time, and each
full pass walked again every module, class and route the process made at start, all of which
live as long as it does: a gc callback in the API server counted 0.95 of its 3.3 CPU-s in the
collector while streaming a 100k-entry Parquet `find` (29%).
"""

from __future__ import annotations

import gc

# Container objects allocated (net) between passes over generation 0 (CPython's default: 700).
# A pass is then rare, and at most this many objects of cyclic garbage wait for one.
GEN0_THRESHOLD = 10_000


def settle_collector() -> None:
    """Once the process has started: collect, then move every object alive now out of the
    collector's sight (`gc.freeze`: they live as long as the process), and pass over generation 0
    every GEN0_THRESHOLD allocations. Nothing changes for objects made from here on but how often
    the collector looks at them."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, older, oldest)
