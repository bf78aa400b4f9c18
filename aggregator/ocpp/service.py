"""Starting the CSMS for the aggregator (`v2x run`): stations from the credential
table, TLS from the [ocpp] settings, attached as the dispatcher's chargers."""
from __future__ import annotations

from aggregator.ocpp.credentials import StationDirectory
from aggregator.ocpp.csms import Csms
from aggregator.ocpp.handshake import server_ssl_context


def commitment_rule(dispatcher):
    """(valid_from, valid_until) -> does a commitment overlap it? Outside commitments the CSMS
    clears its profile and the station charges as the vehicle asks (see `Csms`)."""
    def in_force(start, end) -> bool:
        return any(c.start < end and start < c.end and c.import_ceiling_kw == c.import_ceiling_kw
                   for _, c in dispatcher.commitments())
    return in_force


async def start_csms(app, settings, directory: StationDirectory | None = None) -> Csms:
    o = settings.ocpp
    directory = directory or StationDirectory.from_database(app.engine)
    app.registry.load()   # open sessions continue when their stations re-announce them
    csms = Csms(app.registry, directory, host=o.host, port=o.port, security_profile=o.security_profile,
                ssl_context=server_ssl_context(o.security_profile, o.cert_file, o.key_file, o.ca_file),
                command_timeout=o.command_timeout_s, commitment_in_force=commitment_rule(app.dispatcher))
    await csms.start()
    app.use_chargers(csms)
    return csms
