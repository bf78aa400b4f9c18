"""Schemathesis against the served OpenAPI document, once per role: no 5xx, and every answer
(status, content type, body, headers) as the document says; invalid input is rejected.
A bounded number of examples per operation and generation mode keeps it to a minute or two."""
from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

from tests.api.live import LiveAggregator

pytestmark = pytest.mark.integration
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 12}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    running = LiveAggregator(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}").start()
    try:
        yield running.with_history()
    finally:
        running.stop()


def _fuzz(operation, mode: GenerationMode, headers: dict, base_url: str, fixed_path: dict | None) -> int:
    calls = []
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed_path))
    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=30)
        calls.append(1)

    try:
        run()
    except Unsatisfiable:   # nothing to negate (an operation without parameters or body)
        assert mode is GenerationMode.NEGATIVE
    return len(calls)


@pytest.mark.parametrize("role", ["operator", "utility", "driver", "anonymous"])
def test_every_operation_answers_as_documented(served, role):
    started = time.monotonic()
    own = sorted(served.app.registry.plugged_vehicle_ids())[0]
    headers = {} if role == "anonymous" else {
        "Authorization": f"Bearer {served.token(role, own if role == 'driver' else None)}"}
    schema = schemathesis.openapi.from_url(f"{served.url}/api/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in EXAMPLES:
            fixed = None
            if role == "driver" and "{vehicle_id}" in operation.path and mode is GenerationMode.POSITIVE:
                fixed = {"vehicle_id": own}   # its own vehicle; others are covered by the other modes and roles
            calls += _fuzz(operation, mode, headers, served.url, fixed)
    assert calls > 0
    print(f"{role}: {calls} calls in {time.monotonic() - started:.1f} s")
