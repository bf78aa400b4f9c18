"""The scripted VTN's schema check can fail: a message that breaks the OpenADR 2.0b XSD is
refused (HTTP 400) and recorded, so a VEN test that sends one fails."""
from __future__ import annotations

import aiohttp
import pytest
from openleadr.messaging import create_message

from tests.conftest import free_port
from tests.integration.scripted_vtn import PATH, ScriptedVtn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_schema_violations_are_refused_and_recorded():
    vtn = ScriptedVtn(free_port(), secure=False)
    await vtn.start()
    try:
        good = create_message("oadrPoll", ven_id="ven_py")
        bad = good.replace("<ei:venID>ven_py</ei:venID>", "<ei:venID>ven_py</ei:venID><ei:bogus>1</ei:bogus>")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{vtn.port}{PATH}/OadrPoll", data=good) as ok:
                assert ok.status == 200
            async with http.post(f"http://127.0.0.1:{vtn.port}{PATH}/OadrPoll", data=bad) as refused:
                assert refused.status == 400
    finally:
        await vtn.stop()
    assert len(vtn.schema_errors) == 1 and "bogus" in vtn.schema_errors[0]
