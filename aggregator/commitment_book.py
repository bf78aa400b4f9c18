"""The commitments in force: what the dispatcher must deliver, per event and interval.

Written by the event intake, read by the dispatcher each step (`version`
changes on every write, so the dispatcher knows when to re-plan)."""
from __future__ import annotations

from aggregator.commitment import CommittedInterval


class CommitmentBook:
    def __init__(self):
        self._by_event: dict[str, list[CommittedInterval]] = {}
        self.version = 0

    def set(self, event_id: str, intervals: list[CommittedInterval]) -> None:
        self._by_event[event_id] = list(intervals)
        self.version += 1

    def withdraw(self, event_id: str) -> None:
        if self._by_event.pop(event_id, None) is not None:
            self.version += 1

    def intervals(self) -> list[tuple[str, CommittedInterval]]:
        return [(event_id, c) for event_id, intervals in self._by_event.items() for c in intervals]
