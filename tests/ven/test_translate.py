"""OpenADR event dict -> domain Event, from the spec samples and hand-made edge cases."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from openleadr.messaging import parse_message

from ven.translate import OPEN_END, MalformedEvent, translate_event

UTC = timezone.utc


def parse_sample(path):
    raw = re.sub(r"<\?xml[^>]*\?>", "", path.read_text())
    envelope = ('<oadr:oadrPayload xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07">'
                f'<oadr:oadrSignedObject>{raw}</oadr:oadrSignedObject></oadr:oadrPayload>')
    return parse_message(envelope.encode())


def make_event(intervals, *, dtstart=datetime(2026, 7, 1, 18, tzinfo=UTC), duration=None, measurement=None,
               signal_name="LOAD_DISPATCH", signal_type="setpoint"):
    signal = {"signal_name": signal_name, "signal_type": signal_type, "signal_id": "s1",
              "intervals": [{"uid": i, "duration": d, "signal_payload": v} for i, (d, v) in enumerate(intervals)]}
    if measurement:
        signal["measurement"] = measurement
    total = duration if duration is not None else sum((d for d, _ in intervals), timedelta())
    return {"event_descriptor": {"event_id": "e1", "modification_number": 2, "event_status": "far",
                                 "market_context": "http://mc", "priority": 1, "test_event": False},
            "active_period": {"dtstart": dtstart, "duration": total},
            "event_signals": [signal], "response_required": "always", "targets": [{"ven_id": "v"}]}


def test_spec_sample_intervals_get_cumulative_starts(fixtures_dir):
    _, payload = parse_sample(fixtures_dir / "Sample_oadrDistributeEvent.xml")
    event = translate_event(payload["events"][0], request_id=payload["request_id"])
    assert event.event_id == "Event_939393"
    assert event.signal_name == "SIMPLE" and event.signal_type == "level"
    assert [i.value for i in event.intervals] == [3.0, 2.0]
    assert event.intervals[0].start == datetime(2001, 12, 17, 9, 40, 47, tzinfo=UTC)
    assert event.intervals[1].start == event.intervals[0].end == event.intervals[0].start + timedelta(minutes=15)
    assert event.start_after == timedelta(seconds=180)
    assert event.ramp_up == timedelta(seconds=300)
    assert event.request_id == "REQ_12345"


@pytest.mark.parametrize("name", ["batch_a_1.xml", "batch_a_2.xml", "batch_a_3.xml", "batch_a_4.xml",
                                  "Sample_oadrDistributeEvent_W_Baseline.xml"])
def test_every_event_in_the_batch_samples_translates(fixtures_dir, name):
    message_type, payload = parse_sample(fixtures_dir / name)
    assert message_type == "oadrDistributeEvent"
    for raw in payload["events"]:
        event = translate_event(raw)
        assert event.intervals, name
        assert all(a.end == b.start for a, b in zip(event.intervals, event.intervals[1:]))


def test_power_in_watts_is_scaled_to_kw():
    event = make_event([(timedelta(minutes=15), 250_000.0)],
                       measurement={"name": "powerReal", "unit": "W", "scale": "none"})
    translated = translate_event(event)
    assert translated.intervals[0].value == pytest.approx(250.0)
    assert translated.units == "kW"


def test_power_with_k_scale_stays_in_kw():
    translated = translate_event(make_event([(timedelta(minutes=15), 300.0)],
                                            measurement={"name": "powerReal", "unit": "W", "scale": "k"}))
    assert translated.intervals[0].value == pytest.approx(300.0)


def test_zero_duration_last_interval_is_open_ended():
    translated = translate_event(make_event([(timedelta(minutes=15), 1.0), (timedelta(0), 2.0)],
                                            duration=timedelta(0), signal_name="SIMPLE", signal_type="level"))
    assert translated.intervals[-1].end == OPEN_END
    assert translated.end == OPEN_END


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e["event_signals"][0]["intervals"][1].update(uid=5), "uids must be 0,1,2"),
    (lambda e: e["active_period"].update(dtstart=datetime(2026, 7, 1, 18)), "no time zone"),
    (lambda e: e["event_signals"][0]["intervals"][0].update(signal_payload=float("nan")), "NaN"),
    (lambda e: e["active_period"].update(duration=timedelta(hours=2)), "sum to"),
    (lambda e: e.update(event_signals=[]), "no eventSignals"),
    (lambda e: e["event_signals"][0].update(measurement={"name": "powerReal", "unit": "W", "scale": "Q"}),
     "siScaleCode"),
])
def test_malformed_events_raise_a_clear_error(mutate, message):
    raw = make_event([(timedelta(minutes=15), 100.0), (timedelta(minutes=15), 200.0)])
    mutate(raw)
    with pytest.raises(MalformedEvent, match=message):
        translate_event(raw)


def test_event_without_descriptor_is_malformed():
    with pytest.raises(MalformedEvent, match="eventDescriptor"):
        translate_event({"active_period": {}})
