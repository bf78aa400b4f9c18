"""Build the allocator's horizon from the commitments in force (pure).

The horizon starts now and is cut at every commitment boundary up to the last
committed end, so that each allocator interval has one import ceiling. With
nothing committed it is one idle interval of `idle_h`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from aggregator.commitment import CommittedInterval


@dataclass(frozen=True)
class Horizon:
    starts: tuple[datetime, ...]
    ends: tuple[datetime, ...]
    durations_h: np.ndarray
    import_ceiling_kw: np.ndarray   # NaN where nothing is committed


def build_horizon(now: datetime, commitments: list[CommittedInterval],
                  idle: timedelta = timedelta(minutes=15), min_segment: timedelta = timedelta(seconds=1)) -> Horizon:
    future = [c for c in commitments if c.end > now]
    cuts = sorted({t for c in future for t in (c.start, c.end) if t > now})
    # A sliver shorter than min_segment at the front is merged into the next segment.
    while cuts and cuts[0] - now < min_segment and len(cuts) > 1:
        cuts.pop(0)
    if not cuts:
        cuts = [now + idle]
    starts = [now] + cuts[:-1]
    ends = cuts
    ceilings = []
    for start, end in zip(starts, ends):
        middle = start + (end - start) / 2
        covering = [c.import_ceiling_kw for c in future if c.start <= middle < c.end
                    and c.import_ceiling_kw == c.import_ceiling_kw]
        ceilings.append(min(covering) if covering else np.nan)
    durations = np.array([(e - s).total_seconds() / 3600 for s, e in zip(starts, ends)])
    return Horizon(tuple(starts), tuple(ends), durations, np.array(ceilings, dtype=float))
