"""The compiled schema check (aggregator/ocpp/validation.py) gives the `ocpp` package's
verdict and error on valid and mutated requests."""
import copy
import random

import pytest
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, _validate_payload

from aggregator.ocpp.validation import check_call

VALID = {
    "TransactionEvent": {
        "eventType": "Updated", "timestamp": "2026-07-01T17:00:00Z", "triggerReason": "MeterValuePeriodic",
        "seqNo": 3, "transactionInfo": {"transactionId": "tx-1", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": "2026-07-01T17:00:00Z", "sampledValue": [
            {"value": -7200.0, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}},
            {"value": 55.5, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}}]}]},
    "BootNotification": {"chargingStation": {"model": "m", "vendorName": "v"}, "reason": "PowerUp"},
    "NotifyEVChargingNeeds": {"evseId": 1, "timestamp": "2026-07-01T17:00:00Z", "chargingNeeds": {
        "requestedEnergyTransfer": "DC_BPT", "availableEnergyTransfer": ["DC", "DC_BPT"],
        "controlMode": "ScheduledControl", "departureTime": "2026-07-01T22:00:00Z",
        "dcChargingParameters": {"evMaxCurrent": 200.0, "evMaxVoltage": 500.0, "evMaxPower": 11000.0,
                                 "evEnergyCapacity": 60000.0, "energyAmount": 20000.0, "stateOfCharge": 50},
        "v2xChargingParameters": {"evTargetEnergyRequest": 20000.0, "evMinV2XEnergyRequest": -24000.0,
                                  "maxChargePower": 11000.0, "maxDischargePower": 11000.0}}},
}


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    else:
        yield path


def _mutations(payload, rng):
    """Wrong types, extra properties, missing fields and over-long strings at random places."""
    for path in list(_leaves(payload)):
        for bad in ("text", 12345678901, None, [], {"x": 1}, "x" * 300, -1.5):
            mutated = copy.deepcopy(payload)
            node = mutated
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = bad
            yield mutated
        mutated = copy.deepcopy(payload)
        node = mutated
        for key in path[:-1]:
            node = node[key]
        if isinstance(node, dict):
            del node[path[-1]]
            node["notInTheSchema"] = rng.random()
            yield mutated


def _verdict(check, action, payload, version):
    """None if `check` accepts the request, else the class and code of its OCPPError."""
    try:
        check(Call("1", action, payload), version)
        return None
    except OCPPError as err:
        return type(err), err.code


@pytest.mark.parametrize("version", ["2.1", "2.0.1"])
@pytest.mark.parametrize("action", sorted(VALID))
def test_fast_check_agrees_with_the_package(action, version):
    if version == "2.0.1" and action == "NotifyEVChargingNeeds":
        payload = {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "DC", "departureTime": "2026-07-01T22:00:00Z",
                                                  "dcChargingParameters": {"evMaxCurrent": 200, "evMaxVoltage": 500}}}
    else:
        payload = VALID[action]
    assert _verdict(check_call, action, payload, version) is None
    rng = random.Random(7)
    refused = 0
    for mutated in _mutations(payload, rng):
        ours = _verdict(check_call, action, mutated, version)
        theirs = _verdict(_validate_payload, action, mutated, version)
        assert ours == theirs, (mutated, ours, theirs)
        refused += ours is not None
    assert refused > 10   # the mutations do break the schema
