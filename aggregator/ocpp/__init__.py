"""The CSMS: OCPP 2.1 (and 2.0.1, charge-only) charging stations behind the charger port.

- `credentials`: which stations may connect, their hashed passwords (security profile 2);
- `handshake`: the WebSocket handshake (station id from the URL, subprotocol, Basic auth, client certificates);
- `messages`: OCPP payloads <-> the charger port's events and setpoints (pure functions);
- `connection`: one connected station (the `ocpp` package's ChargePoint, one per version);
- `csms`: the server; implements `ChargerPort` and pushes station events into the fleet registry.
"""
from aggregator.ocpp.csms import Csms

__all__ = ["Csms"]
