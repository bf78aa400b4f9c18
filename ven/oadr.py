"""A thin subclass of openleadr's `OpenADRClient` that hands whole distributes to us.

openleadr keeps its own event bookkeeping, which gets several rules wrong
(REFERENCE.md §1): it drops empty distributes, cannot see implied
cancellations, treats a lower modificationNumber as an update, answers optOut
to everything once a handler raised, and loses reports while the VTN is down.
Here:

- `_on_event` passes (requestID, all events) to `distribute_handler`, which
  returns the eventResponses; one oadrCreatedEvent is sent for them before
  the poll returns (so before the next poll);
- a schema-valid distribute is read event by event (`parse_by_event`) when
  openleadr cannot parse it whole (an interval uid that is not an integer, ...):
  the unreadable event becomes a placeholder the rules answer 454 + optOut, the
  others are processed as usual. Only a message that cannot be read at all
  (not schema-valid, wrongly signed, replayed) is refused;
- `_poll` also forwards empty distributes and backs off (exponential, with
  jitter) after transport failures, refused messages and non-200 answers such
  as 463 -- never after a readable distribute, whatever its events hold. The
  gap between two polls is capped (`max_backoff_s`, default max(60 s, 10 poll
  periods)) and the back-off resets after the first good exchange;
- `_report_queue_worker` keeps a report at the head of the queue until the VTN
  has taken it: reports are delivered in order and none is dropped; the queue
  is `ven.reports.ReportQueue`, persisted in the database when given one.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict

from lxml import etree
from openleadr import OpenADRClient, objects, utils
from openleadr.messaging import parse_message, validate_xml_schema, validate_xml_signature

from ven.reports import ReportQueue

log = logging.getLogger(__name__)

DistributeHandler = Callable[[str, list[dict]], Awaitable[list[dict]]]


class UnsignedMessage(ValueError):
    """A message without an XML signature from a VTN whose signatures we require."""


OADR_NS = "http://openadr.org/oadr-2.0b/2012/07"
EI_NS = "http://docs.oasis-open.org/ns/energyinterop/201110"


def _payload_of(element) -> bytes:
    """A bare payload element wrapped as openleadr's parser expects it."""
    return (f'<oadr:oadrPayload xmlns:oadr="{OADR_NS}"><oadr:oadrSignedObject>'.encode()
            + etree.tostring(element) + b"</oadr:oadrSignedObject></oadr:oadrPayload>")


def _text(element, path: str) -> str | None:
    found = element.find(path)
    return found.text.strip() if found is not None and found.text else None


def unreadable_event(element, reason: str) -> dict:
    """What the rules need to answer an event openleadr could not parse: its eventID,
    modificationNumber, status and responseRequired (read straight from the XML), and why."""
    descriptor = f"{{{EI_NS}}}eiEvent/{{{EI_NS}}}eventDescriptor/"
    mod = _text(element, descriptor + f"{{{EI_NS}}}modificationNumber")
    try:
        mod = int(mod) if mod is not None else 0
    except ValueError:
        mod = -1
    return {"event_descriptor": {"event_id": _text(element, descriptor + f"{{{EI_NS}}}eventID") or "?",
                                 "modification_number": mod,
                                 "event_status": _text(element, descriptor + f"{{{EI_NS}}}eventStatus")},
            "response_required": _text(element, f"{{{OADR_NS}}}oadrResponseRequired") or "always",
            "unreadable": reason}


def parse_by_event(tree) -> tuple[str, dict]:
    """Parse a schema-valid oadrDistributeEvent one event at a time. Raises when the
    message is no distribute or its frame (without events) cannot be read either."""
    root = tree.getroot() if hasattr(tree, "getroot") else tree
    distribute = root if root.tag == f"{{{OADR_NS}}}oadrDistributeEvent" else \
        root.find(f".//{{{OADR_NS}}}oadrDistributeEvent")
    if distribute is None:
        raise ValueError("not an oadrDistributeEvent")
    frame = copy.deepcopy(distribute)
    elements = frame.findall(f"{{{OADR_NS}}}oadrEvent")
    for element in elements:
        frame.remove(element)
    message_type, payload = parse_message(_payload_of(frame))
    events = []
    for element in elements:
        one = copy.deepcopy(frame)
        one.append(element)
        try:
            _, parsed = parse_message(_payload_of(one))
            events.extend(parsed.get("events") or [])
        except Exception as err:
            events.append(unreadable_event(element, f"event cannot be read: {err.__class__.__name__}: {err}"))
    payload["events"] = events
    return message_type, payload


class Backoff:
    """Exponential back-off with full jitter; `ready()` says whether to try now."""

    def __init__(self, base_s: float, max_s: float | Callable[[], float], rng: random.Random | None = None):
        """`max_s`: the longest delay, or a function giving it (read at every failure)."""
        self.base_s, self.max_s = base_s, max_s
        self.failures = 0
        self.next_at = 0.0
        self.rng = rng or random.Random()

    def ready(self) -> bool:
        return time.monotonic() >= self.next_at

    def failed(self) -> float:
        self.failures += 1
        longest = self.max_s() if callable(self.max_s) else self.max_s
        delay = min(longest, self.base_s * 2 ** min(self.failures, 60)) * self.rng.uniform(0.5, 1.0)
        self.next_at = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0


class VenOpenADRClient(OpenADRClient):
    def __init__(self, *args, distribute_handler: DistributeHandler, on_poll_result=None, on_report_sent=None,
                 max_backoff_s: float | None = None, tls_fingerprint: str | None = None,
                 report_queue: ReportQueue | None = None, **kwargs):
        """`max_backoff_s`: the longest gap between two polls while backing off (None:
        max(60 s, 10 poll periods)). `report_queue`: where outgoing reports wait (persisted
        when it has a database)."""
        super().__init__(*args, **kwargs)
        self.pending_reports = report_queue if report_queue is not None else ReportQueue()
        self.max_backoff_s = max_backoff_s
        self.tls_fingerprint = tls_fingerprint     # pin the VTN's TLS certificate (openleadr form)
        self.distribute_handler = distribute_handler
        self.on_poll_result = on_poll_result       # called with (ok, seconds the poll took)
        self.on_report_sent = on_report_sent       # called with the number of values the VTN took
        # polls keep their schedule while `ready()` is checked: waiting at most cap - period
        # puts the next poll within the cap
        self.poll_backoff = Backoff(1.0, lambda: max(0.0, self.poll_backoff_cap_s() - self.poll_period_s()))
        self.report_retry = Backoff(0.5, 30.0)
        self.skipped_polls = 0                      # scheduled polls left out while backing off
        self.rejected_messages: list[str] = []      # why incoming messages were refused (schema, signature, replay)

    # -- events --------------------------------------------------------------------
    async def _on_event(self, message: dict) -> None:
        events = message.get("events") or []
        request_id = message.get("request_id") or ""
        try:
            responses = await self.distribute_handler(request_id, events)
        except Exception:  # never let a failure poison the client (openleadr issue #118)
            log.exception("distribute %s could not be processed; answering optOut for its events", request_id)
            responses = [{"event_id": e.get("event_descriptor", {}).get("event_id", "?"),
                          "modification_number": e.get("event_descriptor", {}).get("modification_number", 0),
                          "request_id": request_id, "response_code": 469,
                          "response_description": "VEN could not process the event", "opt_type": "optOut"}
                         for e in events if e.get("response_required", "always") == "always"]
        if not responses:
            return
        message = self._create_message(
            "oadrCreatedEvent", ven_id=self.ven_id, event_responses=responses,
            response={"response_code": 200, "response_description": "OK", "request_id": request_id})
        await self._perform_request("EiEvent", message)

    async def sync_events(self):
        response_type, payload = await self.request_event()
        if response_type == "oadrDistributeEvent":
            await self._on_event(payload)

    # -- opts (openleadr's own versions log with broken arguments and keep unacknowledged opts) --
    async def create_opt(self, opt_type, opt_reason, targets, vavailability=None, event_id=None,
                         modification_number=None, opt_id=None, request_id=None, market_context=None,
                         signal_target_mrid=None):
        opt = objects.Opt(opt_id=opt_id or utils.generate_id(), opt_type=opt_type, opt_reason=opt_reason,
                          vavailability=vavailability, event_id=event_id, modification_number=modification_number,
                          targets=targets, market_context=market_context, signal_target_mrid=signal_target_mrid)
        message = self._create_message("oadrCreateOpt", request_id=request_id or utils.generate_id(),
                                       ven_id=self.ven_id, **asdict(opt))
        response_type, payload = await self._perform_request("EiOpt", message)
        if response_type == "oadrCreatedOpt" and (payload.get("response") or {}).get("response_code") == 200:
            self.opts.append(opt)
            return payload.get("opt_id") or opt.opt_id
        log.warning("the VTN did not acknowledge opt %s (%s)", opt.opt_id, response_type)
        return None

    async def cancel_opt(self, opt_id):
        message = self._create_message("oadrCancelOpt", request_id=utils.generate_id(), opt_id=opt_id,
                                       ven_id=self.ven_id)
        response_type, payload = await self._perform_request("EiOpt", message)
        if response_type == "oadrCanceledOpt" and (payload.get("response") or {}).get("response_code") == 200:
            self.opts = [o for o in self.opts if o.opt_id != opt_id]
            return True
        log.warning("the VTN did not acknowledge the cancellation of opt %s (%s)", opt_id, response_type)
        return False

    # -- polling ----------------------------------------------------------------------
    def poll_period_s(self) -> float:
        return self.poll_frequency.total_seconds() if self.poll_frequency else 10.0

    def poll_backoff_cap_s(self) -> float:
        """The longest gap between two polls while backing off."""
        if self.max_backoff_s is not None:
            return float(self.max_backoff_s)
        return max(60.0, 10 * self.poll_period_s())

    async def _poll(self):
        if not self.poll_backoff.ready():
            self.skipped_polls += 1
            return
        started = time.perf_counter()
        try:
            result = await self.poll()
        except Exception as err:  # openleadr cannot unpack an empty answer
            log.warning("poll failed: %s: %s", err.__class__.__name__, err)
            result = None
        took = time.perf_counter() - started
        response_type, payload = result if isinstance(result, tuple) else (None, {})
        code = (payload.get("response") or {}).get("response_code", 200) if payload else 200
        if response_type is None or code != 200:
            delay = self.poll_backoff.failed()
            log.warning("VTN poll failed (%s); next poll in %.1f s at the earliest",
                        f"response {code}" if response_type else "no valid answer", delay)
            if self.on_poll_result:
                self.on_poll_result(False, took)
            return
        self.poll_backoff.succeeded()
        if self.on_poll_result:
            self.on_poll_result(True, took)
        try:
            await self._dispatch(response_type, payload)
        except Exception:
            log.exception("handling %s from the VTN failed", response_type)

    async def _dispatch(self, response_type: str, payload: dict) -> None:
        if response_type == "oadrResponse":
            return
        if response_type == "oadrDistributeEvent":
            await self._on_event(payload)          # also when it lists no event (rule 61)
        elif response_type == "oadrRequestReregistration":
            await self.send_response(service="EiRegisterParty")
            await self.create_party_reregistration()
        elif response_type == "oadrCreateReport":
            if "report_requests" in payload:
                await self.create_report(payload)
        elif response_type == "oadrCancelReport":
            await self.cancel_report(payload)
        elif response_type == "oadrCancelPartyRegistration":
            await self.on_cancel_party_registration(payload)
        elif response_type == "oadrRegisterReport":
            message = self._create_message("oadrRegisteredReport", report_requests=[], ven_id=self.ven_id,
                                           response={"response_code": 200, "response_description": "OK",
                                                     "request_id": payload.get("request_id")})
            await self._perform_request("EiReport", message)
        else:
            log.warning("no handler for %s from the VTN; ignored", response_type)

    # -- reports ------------------------------------------------------------------------
    async def _report_queue_worker(self):
        """Send queued reports in order; a report stays at the head until the VTN took it."""
        try:
            while True:
                report = await self.pending_reports.head()
                message = self._create_message("oadrUpdateReport", ven_id=self.ven_id,
                                               request_id=utils.generate_id(), reports=[report])
                while True:
                    try:
                        result = await self._perform_request("EiReport", message)
                    except Exception as err:
                        log.warning("report not sent: %s: %s", err.__class__.__name__, err)
                        result = None
                    response_type, payload = result if isinstance(result, tuple) else (None, {})
                    if response_type is not None:
                        self.pending_reports.done(report)
                        self.report_retry.succeeded()
                        if self.on_report_sent:
                            self.on_report_sent(len(report.intervals or []))
                        break
                    delay = self.report_retry.failed()
                    log.warning("VTN did not take report %s; %d more queued; retrying in %.1f s",
                                report.report_request_id, self.pending_reports.qsize(), delay)
                    await asyncio.sleep(delay)
                    # re-sign with a fresh timestamp and nonce: the VTN rejects stale signatures
                    message = self._create_message("oadrUpdateReport", ven_id=self.ven_id,
                                                   request_id=utils.generate_id(), reports=[report])
                if payload and "cancel_report" in payload:
                    await self.cancel_report(payload["cancel_report"])
        except asyncio.CancelledError:
            return

    # -- transport --------------------------------------------------------------------
    def _peer_pinned(self, response) -> bool:
        """The VTN's TLS certificate has the pinned fingerprint."""
        transport = response.connection.transport if response.connection is not None else None
        if transport is None:   # a short body is read at once and the connection handed back to the pool
            protocol = getattr(response, "_protocol", None)
            transport = getattr(protocol, "transport", None)
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen = utils.certificate_fingerprint_from_der(der) if der else None
        if seen != self.tls_fingerprint:
            reason = f"VTN TLS certificate fingerprint {seen} is not the pinned {self.tls_fingerprint}"
            self.rejected_messages.append(reason)
            log.error("refused the connection: %s", reason)
            return False
        return True

    async def _perform_request(self, service, message):
        """openleadr's request, with every refused incoming message logged on our logger
        and counted. A refused message never reaches the handlers, so it changes nothing."""
        await self._ensure_client_session()
        url = f"{self.vtn_url}/{service}"
        try:
            await self._execute_hooks("before_send_xml", utils.ensure_str(message))
            async with self.client_session.post(url, data=message) as req:
                if self.tls_fingerprint and not self._peer_pinned(req):
                    return None, {}
                content = await req.read()
                await self._execute_hooks("after_receive_xml", utils.ensure_str(content))
                if req.status != 200:
                    log.warning("VTN answered HTTP %s to %s", req.status, service)
                    return None, {}
        except Exception as err:
            log.warning("VTN unreachable for %s: %s: %s", service, err.__class__.__name__, err)
            return None, {}
        if not content:
            return None, {}
        try:
            tree = validate_xml_schema(content)
            if self.vtn_fingerprint:
                if tree.find(".//{http://www.w3.org/2000/09/xmldsig#}Signature") is None:
                    raise UnsignedMessage("unsigned message while signatures are required")
                validate_xml_signature(tree, cert_fingerprint=self.vtn_fingerprint)
            try:
                message_type, payload = parse_message(content)
            except Exception as whole:
                try:   # schema-valid and trusted: read it event by event (each bad one answered alone)
                    message_type, payload = parse_by_event(tree)
                except Exception:
                    raise whole from None
                log.warning("a distribute from the VTN could only be read event by event (%s: %s)",
                            whole.__class__.__name__, whole)
            await self._execute_hooks("after_parse_xml", message_type, payload)
        except Exception as err:
            reason = f"{err.__class__.__name__}: {err}"
            self.rejected_messages.append(reason)
            log.error("refused a message from the VTN on %s (%s); nothing was changed", service, reason)
            return None, {}
        code = (payload.get("response") or {}).get("response_code")
        if code is not None and code != 200:
            log.warning("VTN answered %s with OpenADR code %s: %s", service, code,
                        payload["response"].get("response_description"))
        return message_type, payload
