"""A development PKI for OpenADR over mutual TLS with XML signatures (EC P-256).

`create_dev_pki(folder)` writes a CA, a VTN certificate (serverAuth and
clientAuth; SAN localhost and 127.0.0.1 plus any extra names) and a VEN
certificate (clientAuth), each with its private key, and returns the OpenADR
fingerprints (openleadr's form: the last 10 bytes of the SHA-256 of the DER
certificate, colon-separated) to exchange out of band. For development and
tests only: a utility issues production certificates from its own CA.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def fingerprint_of(pem: bytes) -> str:
    """OpenADR/openleadr certificate fingerprint of a PEM certificate."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    hex_ = digest.finalize().hex()
    return ":".join(hex_[i:i + 2].upper() for i in range(44, 64, 2))


@dataclass(frozen=True)
class DevPki:
    folder: Path
    ca_cert: Path
    vtn_cert: Path
    vtn_key: Path
    ven_cert: Path
    ven_key: Path
    vtn_fingerprint: str
    ven_fingerprint: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(name: str, key, ca_name: x509.Name, ca_key, usages, sans: list[x509.GeneralName], days: int):
    now = datetime.now(timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def create_dev_pki(folder: str | Path, ven_name: str = "v2x-ven", vtn_names: tuple[str, ...] = (),
                   days: int = 365) -> DevPki:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "v2x development CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    vtn_key, ven_key = _key(), _key()
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    names += [x509.DNSName(n) for n in vtn_names]
    vtn = _issue("v2x development VTN", vtn_key, ca_name, ca_key,
                 [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], names, days)
    ven = _issue(ven_name, ven_key, ca_name, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH], [], days)
    pem = serialization.Encoding.PEM
    _write(folder / "ca.crt", ca.public_bytes(pem))
    _write(folder / "ca.key", _pem_key(ca_key), private=True)
    _write(folder / "vtn.crt", vtn.public_bytes(pem))
    _write(folder / "vtn.key", _pem_key(vtn_key), private=True)
    _write(folder / "ven.crt", ven.public_bytes(pem))
    _write(folder / "ven.key", _pem_key(ven_key), private=True)
    return DevPki(folder, folder / "ca.crt", folder / "vtn.crt", folder / "vtn.key", folder / "ven.crt",
                  folder / "ven.key", fingerprint_of(vtn.public_bytes(pem)), fingerprint_of(ven.public_bytes(pem)))


def ven_client_options(ven_cert: str | Path, ven_key: str | Path, ca_file: str | Path,
                       vtn_fingerprint: str, vtn_tls_fingerprint: str | None = None) -> dict:
    """`VenClient(client_options=…)` for mutual TLS, signed messages and a pinned VTN.

    `vtn_fingerprint` pins the certificate that signs the VTN's messages (unsigned,
    tampered, replayed or differently signed messages are refused);
    `vtn_tls_fingerprint` (default: the same) pins the VTN's TLS certificate."""
    return {"cert": str(ven_cert), "key": str(ven_key), "ca_file": str(ca_file), "vtn_fingerprint": vtn_fingerprint,
            "tls_fingerprint": vtn_tls_fingerprint or vtn_fingerprint}
