"""The scripted VTN and a VEN under test on 127.0.0.1, shared by the VEN rule tests."""
from __future__ import annotations

import pytest

from tests.conftest import free_port
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest


@pytest.fixture
async def pair(tmp_path):
    """A scripted VTN and our VEN registered with it; every message the VEN sent is schema-checked."""
    vtn = ScriptedVtn(free_port())
    await vtn.start()
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}")
    await ven.start()
    yield vtn, ven
    await ven.stop()
    await vtn.stop()
    assert vtn.schema_errors == []
