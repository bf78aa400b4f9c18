"""Incoming CALLs (and the answers to ours) checked against the OCPP JSON schemas, fast.

The `ocpp` package validates with `jsonschema`, which costs about a millisecond for
a TransactionEvent: at 10,000 stations connecting at once that is what limits the
CSMS. Here each request schema of the `ocpp` package is compiled once with
`fastjsonschema` (read as draft-04, as the package reads it). A payload it accepts
is valid; one it refuses goes through the package's own validation, which raises
the CALLERROR the package always raised (TypeConstraintViolation,
FormatViolation, OccurrenceConstraintViolation, ProtocolError). So the verdict and
the error are the package's; only the common, valid case is faster.
"""
from __future__ import annotations

import functools
import json
from importlib.resources import files

import fastjsonschema
from ocpp.messages import Call, CallResult, _validate_payload

DRAFT_04 = "http://json-schema.org/draft-04/schema#"


@functools.cache
def _compiled(version: str, action: str, kind: str = "Request"):
    """The compiled Request or Response schema, or None if the package has none (it then decides)."""
    try:
        text = files("ocpp").joinpath(f"v{version.replace('.', '')}", "schemas", f"{action}{kind}.json").read_text()
    except (OSError, ValueError):
        return None
    schema = json.loads(text)
    schema["$schema"] = DRAFT_04
    schema.pop("$id", None)
    # The package checks no formats (no format checker): neither do we.
    return fastjsonschema.compile(schema, formats={"date-time": lambda _: True})


def check_call(msg: Call, version: str) -> None:
    """Raise the `ocpp` package's OCPPError for an out-of-schema request; return if it is valid."""
    _check(msg, _compiled(version, msg.action), version)


def check_result(action: str, payload, version: str) -> None:
    """The same for the answer to one of our CALLs."""
    _check(CallResult("-", payload, action), _compiled(version, action, "Response"), version)


def _check(message: Call | CallResult, validate, version: str) -> None:
    if validate is not None:
        try:
            validate(message.payload)
            return
        except fastjsonschema.JsonSchemaException:
            pass   # the package names the violation (and has the last word)
    _validate_payload(message, version)
