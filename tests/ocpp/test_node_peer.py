"""The CSMS driven by a station that is not the Python `ocpp` package: a Node
client (ws + ajv) that validates every message against the OCPP 2.1 JSON schemas.
Needs node and `npm install` in tests/ocpp/node (done by .ci/run)."""
from __future__ import annotations

import asyncio
import json
import shutil
from datetime import timedelta
from pathlib import Path

import ocpp
import pytest

from aggregator.chargers.port import Ack, MeterSample, SessionEnded, Setpoint
from aggregator.fleet_state.registry import FleetRegistry
from aggregator.ocpp.credentials import StationDirectory, StationEntry
from aggregator.ocpp.csms import Csms
from tests.ocpp.conftest import Recorder

NODE_DIR = Path(__file__).parent / "node"
SCHEMAS = Path(ocpp.__file__).parent / "v21" / "schemas"


@pytest.mark.integration
async def test_node_station_full_flow(engine, now):
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "ajv").is_dir():
        if __import__("os").environ.get("CI"):
            pytest.fail("node and tests/ocpp/node/node_modules are needed (.ci/run installs them)")
        pytest.skip("node or tests/ocpp/node/node_modules missing (run npm install there)")
    registry = FleetRegistry(engine)
    sink = Recorder(registry)
    sid = "CS-NODE-1"
    csms = Csms(sink, StationDirectory([StationEntry(sid, None, 0, 11.0, 11.0)]), port=0, command_timeout=5)
    await csms.start()
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "station.js"), csms.url, sid, str(SCHEMAS), "node-ev-1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(process.stderr.readline(), 20)
        assert line.strip() == b"ready", line
        live = registry.stations[sid]
        assert live.session is not None and live.session.vehicle_id == "node-ev-1"
        assert live.spec.max_discharge_kw == 11.0 and abs(live.spec.capacity_kwh - 60.0) < 1e-9
        assert abs(live.plug.need_kwh - (33.0 + 12.0)) < 0.01          # SoC 55 % of 60 kWh + 12 kWh
        result = await csms.command(Setpoint(sid, -7.0, now, now + timedelta(minutes=5)))
        assert result.ack is Ack.ACCEPTED, result
        out, err = await asyncio.wait_for(process.communicate(), 30)
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert process.returncode == 0, (summary, err.decode())
        assert summary["protocol"] == "ocpp2.1" and summary["boot"] == "Accepted"
        assert summary["setpointW"] == -7000 and "SetChargingProfile" in summary["received"]
        assert summary["malformedAnswer"][:3] == [4, "-1", "FormatViolation"]
        assert summary["violations"] == []
        samples = sink.of(MeterSample, sid)
        assert samples[-1].power_kw == -7.0 and samples[-1].energy_export_kwh == 0.15
        assert len(sink.of(SessionEnded, sid)) == 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await csms.stop()
