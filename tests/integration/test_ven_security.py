"""Mutual TLS with EC P-256 certificates, XML signatures and VTN fingerprint pinning, against
the scripted VTN: a tampered, unsigned or replayed message is refused, logged, and changes nothing."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import free_port
from tests.integration.scripted_vtn import ScriptedVtn, VenUnderTest, dev_pki, event_xml
from ven.client import VenUnavailable
from ven.pki import create_dev_pki, fingerprint_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
MIN = timedelta(minutes=1)


@pytest.fixture
async def secure_pair(tmp_path):
    vtn = ScriptedVtn(free_port(), secure=True)
    await vtn.start()
    ven = VenUnderTest(vtn.url, f"sqlite:///{tmp_path / 'ven.db'}", secure=True)
    await ven.start()
    yield vtn, ven
    await ven.stop()
    await vtn.stop()
    assert vtn.schema_errors == [] and vtn.signature_errors == []


def test_dev_pki_is_ec_p256_and_chains_to_its_ca(tmp_path):
    pki = create_dev_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    for path in (pki.vtn_cert, pki.ven_cert):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        assert isinstance(cert.public_key().curve, ec.SECP256R1)
        cert.verify_directly_issued_by(ca)
    assert pki.vtn_fingerprint == fingerprint_of(pki.vtn_cert.read_bytes())
    from openleadr.utils import certificate_fingerprint
    assert pki.ven_fingerprint == certificate_fingerprint(pki.ven_cert.read_text())


def test_certs_command_writes_a_pki_and_prints_fingerprints(tmp_path):
    run = subprocess.run([sys.executable, "-m", "aggregator.cli", "certs", "--out", str(tmp_path / "pki")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for name in ("ca.crt", "vtn.crt", "vtn.key", "ven.crt", "ven.key"):
        assert (tmp_path / "pki" / name).exists()
    assert fingerprint_of((tmp_path / "pki" / "vtn.crt").read_bytes()) in run.stdout
    assert fingerprint_of((tmp_path / "pki" / "ven.crt").read_bytes()) in run.stdout


async def test_events_flow_over_mutual_tls_with_signatures(secure_pair):
    vtn, ven = secure_pair
    assert vtn.url.startswith("https://")
    vtn.distribute([event_xml("s1", datetime.now(timezone.utc) + 10 * MIN, [(MIN, 40.0)])])
    created = await vtn.wait_for("oadrCreatedEvent")
    assert created[0].payload["event_responses"][0]["opt_type"] == "optIn"
    assert b"SignatureValue" in created[0].xml                       # our answers are signed
    assert "s1" in ven.port.executed


async def _refused(vtn: ScriptedVtn, ven: VenUnderTest, before: int) -> None:
    """Wait until the VEN refused a message; nothing may have been answered meanwhile."""
    client = ven.ven.client
    for _ in range(30):
        if len(client.rejected_messages) > before:
            break
        await vtn.wait_for("oadrPoll", len(vtn.messages("oadrPoll")) + 1)
    assert len(client.rejected_messages) > before


async def test_tampered_and_unsigned_messages_change_nothing(secure_pair, caplog):
    vtn, ven = secure_pair
    client = ven.ven.client
    start = datetime.now(timezone.utc) + 10 * MIN
    vtn.distribute([event_xml("ok", start, [(MIN, 40.0)])])
    await vtn.wait_for("oadrCreatedEvent")
    genuine = vtn.served[-1]
    answered = len(vtn.messages("oadrCreatedEvent"))

    # tampered after signing: 40 kW becomes 400 kW
    vtn.tamper = lambda body: body.replace(b"<ei:value>40.0</ei:value>", b"<ei:value>400.0</ei:value>")
    vtn.distribute([event_xml("ok", start, [(MIN, 40.0)], mod=1)])
    await _refused(vtn, ven, 0)
    # unsigned while signatures are required
    vtn.unsigned_next = True
    vtn.distribute([event_xml("ok", start, [(MIN, 40.0)], mod=2)])
    await _refused(vtn, ven, 1)

    assert len(vtn.messages("oadrCreatedEvent")) == answered
    assert ven.ven.events["ok"].event.modification_number == 0
    assert [c.export_kw for c in ven.committed("ok")] == [40.0]
    assert "Digest mismatch" in client.rejected_messages[0]
    assert "unsigned" in client.rejected_messages[1]
    assert sum("refused a message" in r.message for r in caplog.records) >= 2
    assert genuine  # (replays: the two tests below)


async def test_a_replayed_message_is_refused_for_its_reused_nonce(secure_pair):
    """The genuine message again, byte for byte. Signed with a timestamp a minute ahead,
    so it cannot age out of the 5 s window meanwhile: only the nonce check can refuse it."""
    vtn, ven = secure_pair
    client = ven.ven.client
    vtn.signed_at_next = datetime.now(timezone.utc) + MIN
    vtn.distribute([event_xml("once", datetime.now(timezone.utc) + 10 * MIN, [(MIN, 40.0)])])
    await vtn.wait_for("oadrCreatedEvent")
    answered, refused = len(vtn.messages("oadrCreatedEvent")), len(client.rejected_messages)
    vtn.push(vtn.served[-1])
    await _refused(vtn, ven, refused)
    assert client.rejected_messages[refused] == "ValueError: This combination of timestamp and nonce was already used."
    assert len(vtn.messages("oadrCreatedEvent")) == answered                  # not answered a second time
    assert [c.export_kw for c in ven.committed("once")] == [40.0]


async def test_a_message_signed_too_long_ago_is_refused(secure_pair):
    vtn, ven = secure_pair
    client = ven.ven.client
    vtn.signed_at_next = datetime.now(timezone.utc) - MIN                  # outside the 5 s window
    vtn.distribute([event_xml("stale", datetime.now(timezone.utc) + 10 * MIN, [(MIN, 40.0)])])
    await _refused(vtn, ven, 0)
    assert client.rejected_messages[0] == "ValueError: The message was signed too long ago."
    assert vtn.messages("oadrCreatedEvent") == []
    assert "stale" not in ven.ven.events and ven.committed("stale") == []


async def test_a_message_signed_by_another_key_over_the_pinned_connection_is_refused(secure_pair, tmp_path):
    """The TLS connection is the pinned VTN's; only the XML signature comes from another
    certificate (a different CA and key). The VEN must check who signed, not only that it is signed."""
    vtn, ven = secure_pair
    client = ven.ven.client
    other = create_dev_pki(tmp_path / "other")
    vtn.signer_next = (other.vtn_cert.read_bytes(), other.vtn_key.read_bytes())
    start = datetime.now(timezone.utc) + 10 * MIN
    vtn.distribute([event_xml("forged", start, [(MIN, 400.0)])])
    await _refused(vtn, ven, 0)
    assert client.rejected_messages[0].startswith("FingerprintMismatch")
    assert other.vtn_fingerprint in client.rejected_messages[0]
    assert vtn.messages("oadrCreatedEvent") == []
    assert "forged" not in ven.ven.events and "forged" not in ven.port.executed and ven.committed("forged") == []
    assert client.poll_backoff.failures >= 1                                  # a wrongly signed message backs off
    # the genuine VTN's next message is taken as usual
    vtn.distribute([event_xml("genuine", start, [(MIN, 40.0)])])
    created = await vtn.wait_for("oadrCreatedEvent", timeout=60)
    assert created[0].payload["event_responses"][0]["event_id"] == "genuine"
    assert [c.export_kw for c in ven.committed("genuine")] == [40.0]
    assert client.poll_backoff.failures == 0                                  # reset by the good exchange


async def test_a_vtn_with_another_certificate_is_refused(tmp_path):
    other = create_dev_pki(tmp_path / "other")        # same CA? no: a different CA and VTN key
    vtn = ScriptedVtn(free_port(), secure=True)
    await vtn.start()
    pki = dev_pki()
    from ven.pki import ven_client_options
    options = ven_client_options(pki.ven_cert, pki.ven_key, pki.ca_cert, vtn_fingerprint=other.vtn_fingerprint)
    ven = VenUnderTest(vtn.url.replace("http://127.0.0.1", "https://localhost"), f"sqlite:///{tmp_path / 'v.db'}",
                       client_options=options, secure=False)
    try:
        with pytest.raises(VenUnavailable):
            await ven.start(attempts=2, first_delay_s=0.1)
        assert ven.ven.registration_id is None
        assert any("fingerprint" in r.lower() for r in ven.ven.client.rejected_messages)
    finally:
        await ven.stop()
        await vtn.stop()
