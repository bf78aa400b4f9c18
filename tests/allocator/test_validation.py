import numpy as np
import pytest

from aggregator.allocator import (AllocatorOptions, FleetArrays, FleetValidationError, Targets, allocate,
                                  validate_fleet)

from .helpers import fleet


@pytest.mark.parametrize(
    "field,value,fragment",
    [
        ("energy_kwh", np.nan, "energy_kwh=nan must be a finite number"),
        ("capacity_kwh", -3.0, "capacity_kwh=-3 must be > 0"),
        ("energy_kwh", 70.0, "SoC above 100 %"),
        ("energy_kwh", -1.0, "SoC below 0 %"),
        ("departure_h", -0.5, "departure in the past"),
        ("departure_h", 0.0, "departure in the past"),
        ("floor_kwh", 80.0, "floor_kwh=80 exceeds capacity_kwh=60"),
        ("need_kwh", 61.0, "need_kwh=61 exceeds capacity_kwh=60"),
        ("max_charge_kw", -1.0, "max_charge_kw=-1 must be >= 0"),
        ("max_discharge_kw", -2.0, "max_discharge_kw=-2"),
        ("eta_charge", 0.0, "eta_charge=0 must be in (0, 1]"),
        ("eta_discharge", 1.5, "eta_discharge=1.5 must be in (0, 1]"),
        ("max_charge_kw", np.inf, "must be a finite number"),
    ],
)
def test_bad_field_is_named_and_rest_of_fleet_planned(field, value, fragment):
    f = fleet(3)
    arr = getattr(f, field).copy()
    arr[1] = value
    f = FleetArrays(**{**{k: getattr(f, k) for k in f.__dataclass_fields__}, field: arr})
    valid, errors = validate_fleet(f)
    assert len(valid) == 2 and list(valid.ids) == ["ev-0", "ev-2"]
    assert any(e.field == field and e.vehicle_id == "ev-1" for e in errors)
    msg = [str(e) for e in errors if e.field == field][0]
    assert msg.startswith("vehicle ev-1: ") and fragment in msg

    plan = allocate(f, Targets.flat(4, 0.25, -5.0))
    assert plan.infeasible_ids == ("ev-1",)
    assert np.all(plan.power_kw[1] == 0)
    assert plan.power_kw.shape == (3, 4)
    assert isinstance(plan.errors[0], FleetValidationError) and isinstance(plan.errors[0], ValueError)
    # the others still help the commitment
    assert plan.fleet_kw[0] < 0


def test_error_str_format():
    err = FleetValidationError("bus-07", "capacity_kwh", "capacity_kwh=-3 must be > 0")
    assert str(err) == "vehicle bus-07: capacity_kwh=-3 must be > 0"
    assert err.vehicle_id == "bus-07" and err.field == "capacity_kwh"


def test_duplicate_ids_and_bad_site():
    f = fleet(3, site=np.array([0, 1, 5]))
    f = FleetArrays(**{**{k: getattr(f, k) for k in f.__dataclass_fields__}, "ids": np.array(["a", "a", "b"], dtype=object)})
    _, errors = validate_fleet(f, n_sites=2)
    fields = {(e.vehicle_id, e.field) for e in errors}
    assert ("a", "ids") in fields and ("b", "site") in fields


def test_validate_now_h():
    f = fleet(2, departure_h=np.array([1.0, 3.0]))
    valid, errors = validate_fleet(f, now_h=2.0)
    assert list(valid.ids) == ["ev-1"] and errors[0].field == "departure_h"


def test_from_records_defaults_and_bad_values():
    recs = [
        dict(id="a", energy_kwh=20, capacity_kwh=50, need_kwh=40, departure_h=5, max_charge_kw=7),
        dict(vehicle_id="b", energy_kwh="oops", capacity_kwh=50, need_kwh=40, departure_h=5, max_charge_kw=7),
    ]
    f = FleetArrays.from_records(recs)
    assert f.floor_kwh[0] == 0 and f.eta_charge[0] == 1.0 and f.max_discharge_kw[0] == 0
    valid, errors = validate_fleet(f)
    assert list(valid.ids) == ["a"] and errors[0].vehicle_id == "b" and errors[0].field == "energy_kwh"


def test_all_invalid_gives_empty_plan():
    f = fleet(2, capacity_kwh=-1.0)
    plan = allocate(f, Targets.flat(3, 1.0, -5.0))
    assert plan.method == "empty" and plan.power_kw.shape == (2, 3)
    assert np.allclose(plan.shortfall_kw, 5.0)
    assert set(plan.infeasible_ids) == {"ev-0", "ev-1"}


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        FleetArrays(ids=np.array(["a", "b"]), energy_kwh=np.zeros(3), capacity_kwh=1, floor_kwh=0, need_kwh=0,
                    departure_h=1, max_charge_kw=1, max_discharge_kw=1, eta_charge=1, eta_discharge=1)
    with pytest.raises(ValueError):
        Targets(np.ones(3), np.ones(2))
    with pytest.raises(ValueError):
        AllocatorOptions(method="magic")
