"""Translate an openleadr-parsed event dict into a domain `Event` (pure function).

OpenADR intervals usually carry no start time: starts are computed
cumulatively from the event's dtstart (rules 2/8); every interval needs its
uid, uids are 0, 1, 2, ... without gaps or repeats. A duration of zero means
open-ended (rule 47). Power signals are scaled to kW from their itemBase
siScaleCode.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ven.event import Event, EventInterval

OPEN_END = datetime.max.replace(tzinfo=timezone.utc)

# siScaleCode multipliers relative to the base unit (W for powerReal).
SI_SCALE = {"p": 1e-12, "n": 1e-9, "micro": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1,
            "none": 1.0, None: 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
POWER_ITEM_KEYS = ("power_real", "power_apparent", "power_reactive")


class MalformedEvent(ValueError):
    """The event cannot be executed as sent; the message names the event and the problem."""


def _event_signal(event: dict) -> dict:
    signals = event.get("event_signals")
    if isinstance(signals, dict):  # openleadr sometimes nests the list
        signals = signals.get("event_signals")
    if not signals:
        raise MalformedEvent("event has no eventSignals")
    # A baseline or price signal may travel beside the dispatch signal; the
    # first non-price signal is the one the fleet acts on.
    for signal in signals:
        if signal.get("signal_name") != "ELECTRICITY_PRICE":
            return signal
    return signals[0]


def _scale_to_kw(signal: dict) -> tuple[float, str]:
    """Multiplier from the signal's payload to kW, and the unit label.

    openleadr parses a power itemBase into `measurement` {name, unit, scale};
    other itemBases keep their element name with item_units/si_scale_code.
    """
    item = signal.get("measurement")
    if item and item.get("name") in ("powerReal", "powerApparent", "powerReactive"):
        unit, scale = item.get("unit") or "W", item.get("scale") or "none"
    else:
        item = next((signal[key] for key in POWER_ITEM_KEYS if signal.get(key)), None)
        if item is None:
            return 1.0, ""
        unit, scale = item.get("item_units") or "W", item.get("si_scale_code") or "none"
    if scale not in SI_SCALE:
        raise MalformedEvent(f"unknown siScaleCode {scale!r}")
    if unit.lower() == "kw":          # a VTN that writes kW has scaled already
        return SI_SCALE[scale], "kW"
    if unit.lower() not in ("w", "va", "var"):
        raise MalformedEvent(f"power signal in unsupported unit {unit!r}")
    return SI_SCALE[scale] / 1e3, "kW"


def translate_event(event: dict, request_id: str | None = None) -> Event:
    """Build a domain Event; raises MalformedEvent with a clear message on bad input."""
    try:
        descriptor = event["event_descriptor"]
        event_id = descriptor["event_id"]
    except (KeyError, TypeError) as err:
        raise MalformedEvent(f"event without eventDescriptor/eventID: {err}") from None
    if event.get("unreadable"):    # openleadr could not parse this event (ven.oadr.parse_by_event)
        raise MalformedEvent(f"event {event_id}: {event['unreadable']}")
    try:
        period = event["active_period"]
        dtstart: datetime = period["dtstart"]
        if dtstart.tzinfo is None:
            raise MalformedEvent(f"event {event_id}: dtstart has no time zone")
        signal = _event_signal(event)
        multiplier, units = _scale_to_kw(signal)
        raw_intervals = signal.get("intervals") or []
        if not raw_intervals:
            raise MalformedEvent(f"event {event_id}: signal has no intervals")
        if any(not isinstance(i, dict) or i.get("uid") is None for i in raw_intervals):
            raise MalformedEvent(f"event {event_id}: an interval has no uid (rules 2/8)")
        uids = [i["uid"] for i in raw_intervals]
        if len(set(uids)) != len(uids):
            raise MalformedEvent(f"event {event_id}: duplicated interval uid in {uids}")
        raw_intervals = sorted(raw_intervals, key=lambda i: int(i["uid"]))
        intervals = []
        start = dtstart.astimezone(timezone.utc)
        for position, raw in enumerate(raw_intervals):
            uid = int(raw["uid"])
            if uid != position:
                raise MalformedEvent(f"event {event_id}: interval uids must be 0,1,2,… (got {uid} at {position})")
            duration: timedelta = raw["duration"]
            value = float(raw["signal_payload"])
            if value != value:  # NaN
                raise MalformedEvent(f"event {event_id}: interval {uid} payload is NaN")
            if duration.total_seconds() < 0:
                raise MalformedEvent(f"event {event_id}: interval {uid} has a negative duration")
            open_ended = duration.total_seconds() == 0
            end = OPEN_END if open_ended else start + duration
            if open_ended and position != len(raw_intervals) - 1:
                raise MalformedEvent(f"event {event_id}: only the last interval may be open-ended")
            intervals.append(EventInterval(uid=uid, start=start, end=end, value=value * multiplier))
            start = end
        total: timedelta = period.get("duration") or timedelta(0)
        if total.total_seconds() > 0 and intervals[-1].end != OPEN_END:
            summed = intervals[-1].end - intervals[0].start
            if summed != total:
                raise MalformedEvent(
                    f"event {event_id}: interval durations sum to {summed}, event duration is {total}")
        tolerance = (period.get("tolerance") or {}).get("tolerate") or {}
        return Event(
            event_id=event_id,
            modification_number=int(descriptor.get("modification_number", 0)),
            status=str(descriptor.get("event_status", "far")),
            signal_name=str(signal.get("signal_name")),
            signal_type=str(signal.get("signal_type")),
            intervals=tuple(intervals),
            market_context=str(descriptor.get("market_context") or ""),
            priority=int(descriptor.get("priority") or 0),
            test_event=bool(descriptor.get("test_event", False)),
            response_required=str(event.get("response_required", "always")),
            request_id=request_id,
            units=units,
            ramp_up=period.get("ramp_up"),
            recovery=period.get("recovery"),
            start_after=tolerance.get("startafter"),
            targets=tuple(event.get("targets") or ()),
        )
    except MalformedEvent:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise MalformedEvent(f"event {event_id}: {err.__class__.__name__}: {err}") from None
