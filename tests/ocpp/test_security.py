"""Security profiles over TLS on 127.0.0.1: profile 2 (HTTP Basic, hashed passwords)
and profile 3 (client certificates naming the station), good and bad."""
from __future__ import annotations

import ssl

import pytest
import websockets

from aggregator.ocpp.credentials import StationDirectory, StationEntry, add_station, hash_password, verify_password
from aggregator.ocpp.handshake import server_ssl_context
from tests.ocpp.conftest import start_world
from ven.pki import create_dev_pki


def client_context(pki, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if with_cert:
        context.load_cert_chain(str(pki.ven_cert), str(pki.ven_key))
    return context


def test_passwords_are_stored_hashed_and_verified(engine):
    password = add_station(engine, "CS-1", max_discharge_kw=11.0)
    directory = StationDirectory.from_database(engine)
    stored = directory.get("CS-1").password_hash
    assert password not in stored and stored.startswith("scrypt$")
    assert directory.check_password("CS-1", password) and not directory.check_password("CS-1", password + "x")
    assert hash_password(password) != stored and verify_password(password, hash_password(password))


async def test_profile2_basic_auth_over_tls(engine, now, tmp_path):
    pki = create_dev_pki(tmp_path / "pki")
    sid = "cp-school-bus-01"
    password = "a-station-password-0123456789"
    directory = StationDirectory([StationEntry(sid, hash_password(password), 0, 60.0, 60.0)])
    registry, sink, csms, fleet = await start_world(
        engine, now, limit=1, security_profile=2, directory=directory,
        ssl_context=server_ssl_context(2, str(pki.vtn_cert), str(pki.vtn_key), None))
    client = fleet.clients[sid]
    try:
        assert csms.url.startswith("wss://")
        for bad in ("wrong-password-0123456789", None):
            with pytest.raises(websockets.InvalidStatus) as err:
                await client.connect(csms.url, password=bad, ssl_context=client_context(pki, False))
            assert err.value.response.status_code == 401
        with pytest.raises(ssl.SSLError):   # a station that does not trust our certificate
            await client.connect(csms.url, password=password, ssl_context=ssl.create_default_context())
        await client.connect(csms.url, password=password, ssl_context=client_context(pki, False))
        await fleet.flush()
        assert registry.stations[sid].session is not None
    finally:
        await fleet.close()
        await csms.stop()


async def test_profile3_client_certificates(engine, now, tmp_path):
    sid = "cp-school-bus-01"
    pki = create_dev_pki(tmp_path / "pki", ven_name=sid)            # the station's certificate: CN = its id
    other = create_dev_pki(tmp_path / "other", ven_name=sid)        # same name, another CA
    directory = StationDirectory([StationEntry(sid, None, 0, 60.0, 60.0),
                                  StationEntry("cp-school-bus-02", None, 0, 60.0, 60.0)])
    registry, sink, csms, fleet = await start_world(
        engine, now, limit=2, security_profile=3, directory=directory,
        ssl_context=server_ssl_context(3, str(pki.vtn_cert), str(pki.vtn_key), str(pki.ca_cert)))
    client, impostor = fleet.clients[sid], fleet.clients["cp-school-bus-02"]
    try:
        with pytest.raises((ssl.SSLError, websockets.InvalidHandshake, ConnectionError, OSError)):
            await client.connect(csms.url, ssl_context=client_context(pki, False))     # no certificate
        bad = ssl.create_default_context(cafile=str(pki.ca_cert))
        bad.load_cert_chain(str(other.ven_cert), str(other.ven_key))
        with pytest.raises((ssl.SSLError, websockets.InvalidHandshake, ConnectionError, OSError)):
            await client.connect(csms.url, ssl_context=bad)                          # not signed by our CA
        with pytest.raises(websockets.InvalidStatus) as err:   # a valid certificate for another station
            await impostor.connect(csms.url, ssl_context=client_context(pki, True))
        assert err.value.response.status_code == 403
        await client.connect(csms.url, ssl_context=client_context(pki, True))
        await client.outbox.join()
        assert registry.stations[sid].session is not None
    finally:
        await fleet.close()
        await csms.stop()
