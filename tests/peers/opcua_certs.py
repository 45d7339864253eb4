#!/usr/bin/env python3
"""Self-signed OPC UA application instance certificates for zonegate's integration tests.

    .venv/bin/python tests/peers/opcua_certs.py --out DIR --name hmi --uri urn:zonegate:test:hmi

writes DIR/hmi.der (the certificate, DER: what OPC UA puts on the wire and what asyncua loads by
default), DIR/hmi.pem (the same certificate, PEM) and DIR/hmi.key (the private key, unencrypted
PKCS#8 PEM), and prints one JSON line:

  {"name": "hmi", "uri": "urn:zonegate:test:hmi", "der": "DIR/hmi.der", "pem": "DIR/hmi.pem",
   "key": "DIR/hmi.key", "sha1": "5f0c...", "sha256": "...", "not_after": "2027-..."}

2048-bit RSA, SHA-256 signature, valid for --days (365) from one hour ago, the application URI as
subjectAltName URI (plus --dns names and --ip addresses), keyUsage digitalSignature,
nonRepudiation, keyEncipherment, dataEncipherment, keyCertSign (self-signed), extendedKeyUsage
serverAuth + clientAuth. `sha1` is the OPC UA certificate thumbprint (SHA-1 of the DER).

Only the `cryptography` package (an asyncua dependency) is needed. opcua_server.py imports
make_certificate() from here for its own certificate. See tests/peers/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def make_certificate(
    name: str,
    uri: str,
    dns: list[str] | tuple[str, ...] = (),
    ips: list[str] | tuple[str, ...] = (),
    days: int = 365,
) -> tuple[bytes, bytes]:
    """A new self-signed application certificate: (certificate DER, private key PKCS#8 PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zonegate test peers"),
        ]
    )
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    san += [x509.DNSName(d) for d in dns]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate small clock differences
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # nonRepudiation
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,  # self-signed
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.DER), key_pem


def load_certificate_der(path: str | Path) -> bytes:
    """A certificate file, PEM or DER, as DER bytes."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    x509.load_der_x509_certificate(data)  # check that it is one
    return data


def load_private_key_der(path: str | Path) -> bytes:
    """An unencrypted private key file, PEM or DER, as PKCS#8 DER bytes."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(data, password=None)
    else:
        key = serialization.load_der_private_key(data, password=None)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate_uris(der: bytes) -> list[str]:
    """The subjectAltName URIs of a DER certificate (an OPC UA application URI is one)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def thumbprint(der: bytes) -> str:
    """The OPC UA certificate thumbprint: SHA-1 of the DER, as hex."""
    return hashlib.sha1(der).hexdigest()


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_files(out: Path, name: str, der: bytes, key_pem: bytes) -> dict:
    """Writes OUT/NAME.der, OUT/NAME.pem and OUT/NAME.key; returns the JSON description."""
    out.mkdir(parents=True, exist_ok=True)
    cert = x509.load_der_x509_certificate(der)
    paths = {"der": out / f"{name}.der", "pem": out / f"{name}.pem", "key": out / f"{name}.key"}
    write_atomically(paths["key"], key_pem, 0o600)
    write_atomically(paths["der"], der)
    write_atomically(paths["pem"], cert.public_bytes(serialization.Encoding.PEM))
    return describe(name, der) | {k: str(v) for k, v in paths.items()}


def describe(name: str, der: bytes) -> dict:
    cert = x509.load_der_x509_certificate(der)
    uris = certificate_uris(der)
    return {
        "name": name,
        "uri": uris[0] if uris else None,
        "sha1": thumbprint(der),
        "sha256": hashlib.sha256(der).hexdigest(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        description="Make a self-signed OPC UA application certificate (DIR/NAME.der, .pem, .key)."
    )
    p.add_argument("--out", required=True, help="directory to write to (created if missing)")
    p.add_argument("--name", required=True, help="file name stem and certificate common name")
    p.add_argument("--uri", required=True, help="application URI, put in subjectAltName")
    p.add_argument("--dns", action="append", default=[], help="a subjectAltName DNS name (repeatable)")
    p.add_argument("--ip", action="append", default=[], help="a subjectAltName IP address (repeatable)")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    args = p.parse_args(argv)
    if "/" in args.name or args.name in ("", ".", ".."):
        p.error("--name must be a plain file name")
    try:
        for a in args.ip:
            ipaddress.ip_address(a)
    except ValueError as e:
        p.error(str(e))
    der, key_pem = make_certificate(args.name, args.uri, args.dns, args.ip, args.days)
    print(json.dumps(write_files(Path(args.out), args.name, der, key_pem)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
