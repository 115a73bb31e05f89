"""The garbage collector's pace for commands over many files.

A speed trick kept for the workload W5 first push (client CPU). A push of 100,000 files makes
millions of small objects and almost no reference cycles: with the default thresholds the cycle
collector runs thousands of times over the same live objects and frees nothing. It still runs, just
far less often.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 20)


def pace_collector() -> None:
    """Set the collector's thresholds; called before the command line's modules are imported, so that
    loading them is spared the collections too."""
    gc.set_threshold(*GC_THRESHOLDS)
