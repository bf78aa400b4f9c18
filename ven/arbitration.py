"""Priority and overlap arbitration between events (rule 18), pure.

Each event brings time pieces (start, end, payload). Where events overlap,
the one with the highest priority governs: priority 1 is highest, larger
numbers are lower, 0 means none (lowest of all). Between equal priorities the
first activated wins (earlier effective start, then earlier received). The
result is, per event, the parts of its pieces it still governs.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Piece(Generic[T]):
    start: datetime
    end: datetime
    payload: T


@dataclass(frozen=True)
class Contender(Generic[T]):
    event_id: str
    priority: int
    activated: tuple          # sort key: (effective start, received at, event id)
    pieces: tuple[Piece[T], ...]


def rank(contender: Contender) -> tuple:
    """Smaller is stronger: priorities 1, 2, 3, … then 0 (none); then first activated."""
    priority = contender.priority if contender.priority > 0 else float("inf")
    return (priority, contender.activated)


def arbitrate(contenders: list[Contender[T]]) -> dict[str, list[Piece[T]]]:
    """Clip every event's pieces to the time no stronger event covers."""
    ordered = sorted(contenders, key=rank)
    taken: list[tuple[datetime, datetime]] = []     # time already governed by stronger events
    out: dict[str, list[Piece[T]]] = {}
    for contender in ordered:
        kept: list[Piece[T]] = []
        for piece in contender.pieces:
            kept.extend(_subtract(piece, taken))
        out[contender.event_id] = kept
        taken.extend((p.start, p.end) for p in contender.pieces)
    return out


def _subtract(piece: Piece[T], taken: list[tuple[datetime, datetime]]) -> list[Piece[T]]:
    parts = [(piece.start, piece.end)]
    for t0, t1 in taken:
        next_parts = []
        for a, b in parts:
            if t1 <= a or t0 >= b:
                next_parts.append((a, b))
                continue
            if a < t0:
                next_parts.append((a, t0))
            if t1 < b:
                next_parts.append((t1, b))
        parts = next_parts
    return [Piece(a, b, piece.payload) for a, b in parts if b > a]
