"""The WebSocket handshake: which station this is and whether it may connect.

- The station id is the last segment of the URL path (`ws[s]://host:port/ocpp/CS-0042`).
- Unknown ids are refused (HTTP 404) before the WebSocket opens.
- Security profile 0: no authentication (development and benchmarks only);
  1: HTTP Basic over plain WebSocket (testing only); 2: HTTP Basic over TLS;
  3: TLS with a client certificate whose common name is the station id.
  Basic auth: user = the station id, password = the one `v2x stations add` printed.
"""
from __future__ import annotations

import base64
import binascii
import logging
import ssl
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from aggregator.ocpp.credentials import StationDirectory

log = logging.getLogger(__name__)


def station_id_of(path: str) -> str:
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def peer_common_name(connection) -> str | None:
    ssl_object = connection.transport.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def make_process_request(directory: StationDirectory, profile: int):
    def refuse(connection, status: HTTPStatus, why: str, station_id: str):
        log.warning("refused station %r at the handshake: %s", station_id, why)
        response = connection.respond(status, why + "\n")
        if status is HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
        return response

    def process_request(connection, request):
        station_id = station_id_of(request.path)
        if not station_id or directory.get(station_id) is None:
            return refuse(connection, HTTPStatus.NOT_FOUND, "unknown station id", station_id)
        if profile in (1, 2):
            given = basic_credentials(request.headers.get("Authorization"))
            if given is None or given[0] != station_id or not directory.check_password(station_id, given[1]):
                return refuse(connection, HTTPStatus.UNAUTHORIZED, "bad or missing credentials", station_id)
        elif profile == 3:
            name = peer_common_name(connection)
            if name != station_id:
                return refuse(connection, HTTPStatus.FORBIDDEN,
                              f"client certificate names {name!r}, not the station", station_id)
        return None

    return process_request


def server_ssl_context(profile: int, cert_file: str | None, key_file: str | None,
                       ca_file: str | None) -> ssl.SSLContext | None:
    if profile < 2:
        return None
    if not cert_file or not key_file:
        raise ValueError(f"OCPP security profile {profile} needs [ocpp] cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if profile == 3:
        if not ca_file:
            raise ValueError("OCPP security profile 3 needs [ocpp] ca_file (the CA of the station certificates)")
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(ca_file)
    return context
