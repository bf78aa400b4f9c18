"""A thin subclass of openleadr's `OpenADRClient` that hands whole distributes to us.

openleadr keeps its own event bookkeeping, which gets several rules wrong
(REFERENCE.md §1): it drops empty distributes, cannot see implied
cancellations, treats a lower modificationNumber as an update, answers optOut
to everything once a handler raised, and loses reports while the VTN is down.
Here:

- `_on_event` passes (requestID, all events) to `distribute_handler`, which
  returns the eventResponses; one oadrCreatedEvent is sent for them before
  the poll returns (so before the next poll);
- `_poll` also forwards empty distributes and backs off (exponential, with
  jitter) after transport errors and non-200 answers such as 463;
- `_report_queue_worker` keeps a report at the head of the queue until the VTN
  has taken it: reports are delivered in order and none is dropped.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from dataclasses import asdict

from openleadr import OpenADRClient, objects, utils
from openleadr.messaging import parse_message, validate_xml_schema, validate_xml_signature

log = logging.getLogger(__name__)

DistributeHandler = Callable[[str, list[dict]], Awaitable[list[dict]]]


class UnsignedMessage(ValueError):
    """A message without an XML signature from a VTN whose signatures we require."""


class Backoff:
    """Exponential back-off with full jitter; `ready()` says whether to try now."""

    def __init__(self, base_s: float, max_s: float, rng: random.Random | None = None):
        self.base_s, self.max_s = base_s, max_s
        self.failures = 0
        self.next_at = 0.0
        self.rng = rng or random.Random()

    def ready(self) -> bool:
        return time.monotonic() >= self.next_at

    def failed(self) -> float:
        self.failures += 1
        delay = min(self.max_s, self.base_s * 2 ** self.failures) * self.rng.uniform(0.5, 1.0)
        self.next_at = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0


class VenOpenADRClient(OpenADRClient):
    def __init__(self, *args, distribute_handler: DistributeHandler, on_poll_result=None, on_report_sent=None,
                 max_backoff_s: float = 300.0, tls_fingerprint: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tls_fingerprint = tls_fingerprint     # pin the VTN's TLS certificate (openleadr form)
        self.distribute_handler = distribute_handler
        self.on_poll_result = on_poll_result       # called with (ok, seconds the poll took)
        self.on_report_sent = on_report_sent       # called with the number of values the VTN took
        self.poll_backoff = Backoff(1.0, max_backoff_s)
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
                report = await self.pending_reports.get()
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
            message_type, payload = parse_message(content)
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
