"""A scripted OpenADR 2.0b VTN (aiohttp) for the VEN tests.

It serves raw XML: each poll takes the next queued message (a spec sample or a
hand-written edge case, wrapped in oadrPayload/oadrSignedObject, signed when
the VTN has a key), else an empty oadrResponse. It answers registration,
oadrRequestEvent (with the current full event list), reports and opts, and
validates every message the VEN sends against the OpenADR 2.0b XSD shipped in
openleadr: a message that fails the schema is answered HTTP 400 and recorded
in `schema_errors`, which the tests assert empty. With a VEN fingerprint it
also checks the VEN's signature on every message.
"""
from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape

from aiohttp import web
from lxml import etree
from openleadr import utils
from openleadr.messaging import create_message, parse_message, validate_xml_schema, validate_xml_signature

NS = {
    "oadr": "http://openadr.org/oadr-2.0b/2012/07",
    "ei": "http://docs.oasis-open.org/ns/energyinterop/201110",
    "pyld": "http://docs.oasis-open.org/ns/energyinterop/201110/payloads",
    "emix": "http://docs.oasis-open.org/ns/emix/2011/06",
    "power": "http://docs.oasis-open.org/ns/emix/2011/06/power",
    "scale": "http://docs.oasis-open.org/ns/emix/2011/06/siscale",
    "xcal": "urn:ietf:params:xml:ns:icalendar-2.0",
    "strm": "urn:ietf:params:xml:ns:icalendar-2.0:stream",
}
XMLNS = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items())
PATH = "/OpenADR2/Simple/2.0b"
_PKI = None


def secure_by_default() -> bool:
    """V2X_TEST_SECURE=1 runs every scripted-VTN test over mutual TLS with signed messages."""
    return os.environ.get("V2X_TEST_SECURE") == "1"


def dev_pki():
    """One development PKI per test process (EC P-256), made by `ven.pki`."""
    global _PKI
    if _PKI is None:
        from ven.pki import create_dev_pki
        _PKI = create_dev_pki(tempfile.mkdtemp(prefix="v2x-pki-"), ven_name="ven-under-test")
    return _PKI


def server_ssl_context(pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.vtn_cert, pki.vtn_key)
    context.load_verify_locations(pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED     # mutual TLS: the VEN must show a CA-signed certificate
    return context


def ts(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dur(value: timedelta) -> str:
    return utils.timedeltaformat(value)


POWER_KW = ("<power:powerReal><power:itemDescription>RealPower</power:itemDescription>"
            "<power:itemUnits>W</power:itemUnits><scale:siScaleCode>k</scale:siScaleCode>"
            "<power:powerAttributes><power:hertz>60</power:hertz><power:voltage>240</power:voltage>"
            "<power:ac>true</power:ac></power:powerAttributes></power:powerReal>")
PRICE_USD = ("<oadr:currencyPerKWh><oadr:itemDescription>currencyPerKWh</oadr:itemDescription>"
             "<oadr:itemUnits>USD</oadr:itemUnits><scale:siScaleCode>none</scale:siScaleCode></oadr:currencyPerKWh>")


def event_xml(event_id: str, start: datetime, intervals: list[tuple[timedelta, float]], *, mod: int = 0,
              status: str = "far", signal_name: str = "LOAD_DISPATCH", signal_type: str = "setpoint",
              item_base: str | None = POWER_KW, market_context: str = "http://utility.example/programs/v2x-summer",
              priority: int = 1, test_event: bool = False, response_required: str = "always",
              targets: str = "", start_after: timedelta | None = None, ramp_up: timedelta | None = None,
              recovery: timedelta | None = None, uids: list[int] | None = None,
              duration: timedelta | None = None) -> str:
    """One oadrEvent element, elements in XSD order."""
    total = duration if duration is not None else sum((d for d, _ in intervals), timedelta(0))
    uids = uids if uids is not None else list(range(len(intervals)))
    tolerance = (f"<xcal:tolerance><xcal:tolerate><xcal:startafter>{dur(start_after)}</xcal:startafter>"
                 f"</xcal:tolerate></xcal:tolerance>") if start_after else ""
    ramp = f"<ei:x-eiRampUp><xcal:duration>{dur(ramp_up)}</xcal:duration></ei:x-eiRampUp>" if ramp_up else ""
    rec = f"<ei:x-eiRecovery><xcal:duration>{dur(recovery)}</xcal:duration></ei:x-eiRecovery>" if recovery else ""
    ints = "".join(
        f"<ei:interval><xcal:duration><xcal:duration>{dur(d)}</xcal:duration></xcal:duration>"
        f"<xcal:uid><xcal:text>{uid}</xcal:text></xcal:uid><ei:signalPayload><ei:payloadFloat>"
        f"<ei:value>{v}</ei:value></ei:payloadFloat></ei:signalPayload></ei:interval>"
        for uid, (d, v) in zip(uids, intervals))
    return (
        f"<oadr:oadrEvent><ei:eiEvent><ei:eventDescriptor><ei:eventID>{escape(event_id)}</ei:eventID>"
        f"<ei:modificationNumber>{mod}</ei:modificationNumber><ei:priority>{priority}</ei:priority>"
        f"<ei:eiMarketContext><emix:marketContext>{escape(market_context)}</emix:marketContext></ei:eiMarketContext>"
        f"<ei:createdDateTime>{ts(datetime.now(timezone.utc))}</ei:createdDateTime>"
        f"<ei:eventStatus>{status}</ei:eventStatus><ei:testEvent>{'true' if test_event else 'false'}</ei:testEvent>"
        f"</ei:eventDescriptor><ei:eiActivePeriod><xcal:properties>"
        f"<xcal:dtstart><xcal:date-time>{ts(start)}</xcal:date-time></xcal:dtstart>"
        f"<xcal:duration><xcal:duration>{dur(total)}</xcal:duration></xcal:duration>{tolerance}{ramp}{rec}"
        f"</xcal:properties><xcal:components/></ei:eiActivePeriod>"
        f"<ei:eiEventSignals><ei:eiEventSignal><strm:intervals>{ints}</strm:intervals>"
        f"<ei:signalName>{signal_name}</ei:signalName><ei:signalType>{signal_type}</ei:signalType>"
        f"<ei:signalID>sig-{escape(event_id)}</ei:signalID>{item_base or ''}"
        f"<ei:currentValue><ei:payloadFloat><ei:value>0</ei:value></ei:payloadFloat></ei:currentValue>"
        f"</ei:eiEventSignal></ei:eiEventSignals><ei:eiTarget>{targets}</ei:eiTarget></ei:eiEvent>"
        f"<oadr:oadrResponseRequired>{response_required}</oadr:oadrResponseRequired></oadr:oadrEvent>")


def distribute_xml(events: list[str], request_id: str, vtn_id: str = "VTN_1") -> str:
    return (f'<oadr:oadrDistributeEvent ei:schemaVersion="2.0b" {XMLNS}>'
            f"<ei:eiResponse><ei:responseCode>200</ei:responseCode><ei:responseDescription>OK</ei:responseDescription>"
            f"<pyld:requestID/></ei:eiResponse><pyld:requestID>{request_id}</pyld:requestID>"
            f"<ei:vtnID>{vtn_id}</ei:vtnID>{''.join(events)}</oadr:oadrDistributeEvent>")


def replay_protect(signed_at: datetime):
    """The signature's ReplayProtect element with this timestamp and a fresh nonce."""
    dsp = "http://openadr.org/oadr-2.0b/2012/07/xmldsig-properties"
    element = etree.Element(f"{{{dsp}}}ReplayProtect", nsmap={"dsp": dsp}, attrib={"Id": "myid", "Target": "#mytarget"})
    etree.SubElement(element, f"{{{dsp}}}timestamp").text = utils.datetimeformat(signed_at)
    etree.SubElement(element, f"{{{dsp}}}nonce").text = uuid.uuid4().hex
    return element


def envelope(inner: str | bytes, cert: bytes | None = None, key: bytes | None = None,
             signed_at: datetime | None = None) -> bytes:
    """Wrap a bare payload element in oadrPayload/oadrSignedObject, signing it when given a key
    (`signed_at`: the ReplayProtect timestamp, now when not given)."""
    element = etree.fromstring(inner.encode() if isinstance(inner, str) else inner)
    signed_object = etree.Element(f"{{{NS['oadr']}}}oadrSignedObject", nsmap={"oadr": NS["oadr"]})
    signed_object.set(f"{{{NS['oadr']}}}Id", "oadrSignedObject")
    signed_object.append(element)
    text = etree.tostring(signed_object).decode()
    signature = ""
    if cert and key:
        from signxml import XMLSigner, methods
        from signxml.algorithms import SignatureMethod
        from openleadr.messaging import _create_replay_protect, get_signature_algorithm_from_private_key
        signer = XMLSigner(method=methods.detached, c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315")
        signer.namespaces["oadr"] = NS["oadr"]
        signer.sign_alg = SignatureMethod.from_fragment(get_signature_algorithm_from_private_key(key))
        tree = signer.sign(etree.fromstring(text), key=key, cert=cert, reference_uri="#oadrSignedObject",
                           signature_properties=replay_protect(signed_at) if signed_at else _create_replay_protect())
        signature = etree.tostring(tree).decode()
    return (f'<?xml version="1.0" encoding="utf-8"?><oadr:oadrPayload xmlns:oadr="{NS["oadr"]}">'
            f"{signature}{text}</oadr:oadrPayload>").encode()


@dataclass
class Received:
    service: str
    message_type: str
    payload: dict
    xml: bytes
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))



def soon(minutes: float = 10) -> datetime:
    """A whole second `minutes` from now (event start times in the tests)."""
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=minutes)

class ScriptedVtn:
    def __init__(self, port: int, *, vtn_id: str = "VTN_1", ven_id: str = "ven_py", poll_s: int = 1,
                 cert: bytes | None = None, key: bytes | None = None, ven_fingerprint: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, secure: bool | None = None):
        if secure if secure is not None else secure_by_default():
            pki = dev_pki()
            cert, key = pki.vtn_cert.read_bytes(), pki.vtn_key.read_bytes()
            ven_fingerprint, ssl_context = pki.ven_fingerprint, server_ssl_context(pki)
        self.port, self.vtn_id, self.ven_id, self.poll_s = port, vtn_id, ven_id, poll_s
        self.cert, self.key, self.ven_fingerprint, self.ssl_context = cert, key, ven_fingerprint, ssl_context
        self.queue: list[bytes] = []
        self.events: list[str] = []              # the "full" list served on oadrRequestEvent
        self.received: list[Received] = []
        self.schema_errors: list[str] = []
        self.signature_errors: list[str] = []
        self.report_requests: list[str] = []     # raw oadrCreateReport payloads to answer oadrRegisterReport with
        self.down = False                        # answer HTTP 503 to everything
        self.error_code: int | None = None       # answer polls with this OpenADR error (e.g. 463)
        self.served: list[bytes] = []            # raw bodies served on polls (to replay them)
        self.tamper = None                       # bytes -> bytes, applied to the next raw message served
        self.unsigned_next = False               # serve the next raw message without a signature
        self.signer_next: tuple[bytes, bytes] | None = None   # (cert, key) signing the next raw message instead
        self.signed_at_next: datetime | None = None           # ReplayProtect timestamp of the next raw message
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host = "localhost" if self.ssl_context else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}{PATH}"

    async def start(self) -> None:
        app = web.Application()
        for service in ("EiRegisterParty", "EiEvent", "EiReport", "EiOpt", "OadrPoll"):
            app.router.add_post(f"{PATH}/{service}", self._handler(service))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- scripting --------------------------------------------------------------------
    def push(self, inner: str | bytes) -> None:
        """Queue a bare payload element (e.g. an oadrDistributeEvent) for the next poll."""
        self.queue.append(inner.encode() if isinstance(inner, str) else inner)

    def push_message(self, message_type: str, **payload) -> None:
        """Queue a message rendered by openleadr's templates (e.g. oadrCreateReport)."""
        tree = etree.fromstring(create_message(message_type, **payload).encode())
        self.push(etree.tostring(tree.find(f"{{{NS['oadr']}}}oadrSignedObject")[0]))

    def distribute(self, events: list[str], request_id: str | None = None) -> str:
        """Queue a full distribute with these events (they become the current list); returns its requestID."""
        request_id = request_id or f"req-{uuid.uuid4().hex[:8]}"
        self.events = list(events)
        self.push(distribute_xml(events, request_id, self.vtn_id))
        return request_id

    def messages(self, message_type: str) -> list[Received]:
        return [r for r in self.received if r.message_type == message_type]

    async def wait_for(self, message_type: str, count: int = 1, timeout: float = 20.0,
                       where=lambda r: True) -> list[Received]:
        async def waiter():
            while True:
                found = [r for r in self.messages(message_type) if where(r)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(waiter(), timeout)

    async def wait_served(self, timeout: float = 20.0) -> None:
        """Until every queued message has been taken by a poll."""
        async def waiter():
            while self.queue:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(waiter(), timeout)

    # -- serving ------------------------------------------------------------------------
    def _reply(self, message_type: str, **payload) -> web.Response:
        body = create_message(message_type, cert=self.cert, key=self.key, **payload)
        return web.Response(body=body.encode() if isinstance(body, str) else body, content_type="application/xml")

    def _raw(self, inner: bytes) -> web.Response:
        if inner.startswith(b"<?xml"):            # already a whole message (a replay)
            body = inner
        else:
            cert, key = self.signer_next or (self.cert, self.key)
            body = envelope(inner, None if self.unsigned_next else cert, key, signed_at=self.signed_at_next)
        self.unsigned_next, self.signer_next, self.signed_at_next = False, None, None
        if self.tamper is not None:
            body, self.tamper = self.tamper(body), None
        self.served.append(body)
        return web.Response(body=body, content_type="application/xml")

    def _handler(self, service: str):
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                return await self._handle(service, body)
            finally:
                self._changed.set()
        return handle

    async def _handle(self, service: str, body: bytes) -> web.Response:
        if self.down:
            return web.Response(status=503, text="down")
        try:
            tree = validate_xml_schema(body)
        except Exception as err:
            self.schema_errors.append(f"{service}: {err}: {body[:2000]!r}")
            return web.Response(status=400, text=f"schema: {err}")
        if self.ven_fingerprint:
            try:
                validate_xml_signature(tree, cert_fingerprint=self.ven_fingerprint)
            except Exception as err:
                self.signature_errors.append(f"{service}: {err.__class__.__name__}: {err}")
                return web.Response(status=403, text="signature")
        message_type, payload = parse_message(body)
        self.received.append(Received(service, message_type, payload, body))
        ok = {"response_code": 200, "response_description": "OK", "request_id": payload.get("request_id")}
        if message_type == "oadrQueryRegistration":
            return self._reply("oadrCreatedPartyRegistration", response=ok, vtn_id=self.vtn_id,
                               ven_id=None, registration_id=None, profiles=[{"profile_name": "2.0b",
                               "transports": [{"transport_name": "simpleHttp"}]}],
                               requested_oadr_poll_freq=timedelta(seconds=self.poll_s))
        if message_type == "oadrCreatePartyRegistration":
            registration_id = payload.get("registration_id") or f"reg-{uuid.uuid4().hex[:8]}"
            return self._reply("oadrCreatedPartyRegistration", response=ok, vtn_id=self.vtn_id,
                               ven_id=self.ven_id, registration_id=registration_id,
                               profiles=[{"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}],
                               requested_oadr_poll_freq=timedelta(seconds=self.poll_s))
        if message_type == "oadrRequestEvent":
            return self._raw(distribute_xml(self.events, f"req-{uuid.uuid4().hex[:8]}", self.vtn_id).encode())
        if message_type == "oadrPoll":
            if self.error_code:
                return self._reply("oadrResponse", response={"response_code": self.error_code,
                                   "response_description": "ERROR", "request_id": None}, ven_id=self.ven_id)
            if self.queue:
                return self._raw(self.queue.pop(0))
            return self._reply("oadrResponse", response={"response_code": 200, "response_description": "OK",
                                                          "request_id": None}, ven_id=self.ven_id)
        if message_type == "oadrRegisterReport":
            if self.report_requests:
                inner = self.report_requests.pop(0)
                return self._raw(inner.encode())
            return self._reply("oadrRegisteredReport", response=ok, ven_id=self.ven_id, report_requests=[])
        if message_type == "oadrUpdateReport":
            return self._reply("oadrUpdatedReport", response=ok, ven_id=self.ven_id)
        if message_type == "oadrCreateOpt":
            return self._reply("oadrCreatedOpt", response=ok, opt_id=payload.get("opt_id"))
        if message_type == "oadrCancelOpt":
            return self._reply("oadrCanceledOpt", response=ok, opt_id=payload.get("opt_id"))
        return self._reply("oadrResponse", response=ok, ven_id=self.ven_id)


class VenUnderTest:
    """Our VEN (VenClient) pointed at a VTN, with the aggregator's fleet port behind it:
    the event intake writing a `CommitmentBook`, over a fake fleet (`tests.ven.fakes.FakeFleet`)
    that is also the telemetry. `port` records what crosses the VEN's fleet port."""

    def __init__(self, vtn_url: str, database_url: str, *, program: dict | None = None, identity=None,
                 seed: int = 7, client_options: dict | None = None, report_sampling=timedelta(seconds=1),
                 opt_check_interval=timedelta(seconds=1), secure: bool | None = None):
        import random

        from aggregator.commitment_book import CommitmentBook
        from aggregator.config import ProgramSettings
        from aggregator.event_intake import EventIntake
        from aggregator.metrics import Metrics
        from aggregator.store.db import make_engine
        from tests.ven.fakes import FakeFleet, RecordingPort
        from ven.client import VenClient
        from ven.rules import Identity

        if secure if secure is not None else secure_by_default():
            from ven.pki import ven_client_options
            pki = dev_pki()
            client_options = {**ven_client_options(pki.ven_cert, pki.ven_key, pki.ca_cert, pki.vtn_fingerprint),
                              **(client_options or {})}
            vtn_url = vtn_url.replace("http://127.0.0.1", "https://localhost")
        self.now = datetime.now(timezone.utc)
        self.engine = make_engine(database_url)
        self.metrics = Metrics()
        self.fleet = FakeFleet(self.now, seed=seed)
        self.book = CommitmentBook(self.engine)
        self.program = ProgramSettings.model_validate(program or {})
        self.intake = EventIntake(self.book, self.fleet, self.program, lambda: datetime.now(timezone.utc))
        self.port = RecordingPort(self.intake)
        identity = identity or Identity(
            resource_ids=frozenset({"Resource_123", "RES_123"}), party_ids=frozenset({"Party_123"}),
            group_ids=frozenset({"Group_123"}), market_contexts=frozenset({self.program.market_context}))
        self.ven = VenClient(vtn_url, "ven-under-test", self.port, self.fleet, store_engine=self.engine,
                             identity=identity, market_context=self.program.market_context,
                             rng=random.Random(seed), client_options=client_options, metrics=self.metrics,
                             report_sampling=report_sampling, opt_check_interval=opt_check_interval)

    def committed(self, event_id: str):
        """The commitment book's pieces for an event (what the dispatcher will deliver)."""
        return self.book.of(event_id)

    async def start(self, **kwargs) -> None:
        await self.ven.start(**kwargs)

    async def drop(self, vehicle_ids) -> None:
        """These EVs' chargers go offline (the fleet reports them gone)."""
        self.fleet.drop(vehicle_ids)

    async def stop(self) -> None:
        await self.ven.stop()
        self.engine.dispose()
