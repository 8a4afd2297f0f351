"""A private certificate authority and one broker certificate, made locally with ``cryptography``.

Written once, at a secured broker's first start, and kept in its data directory:

* ``ca.pem``: the CA's certificate, what clients trust (``ssl.ca.location``). The CA's key is
  never written: nobody, not even a later ``up``, can issue another certificate under it.
* ``broker.pem``: the broker's unencrypted PKCS#8 key followed by its certificate, the layout
  Kafka reads as a ``ssl.keystore.type=PEM`` keystore; mode 0600. It is also the client
  certificate the broker (and streamtrain, for set-up) presents on the mutual-TLS internal
  listeners, where it authenticates as :data:`BROKER_PRINCIPAL`.

>>> import tempfile
>>> from pathlib import Path
>>> tls = ensure_tls(Path(tempfile.mkdtemp()), "localhost")
>>> tls.ca_pem.read_text().startswith("-----BEGIN CERTIFICATE-----")
True
>>> oct(tls.broker_pem.stat().st_mode & 0o777)
'0o600'
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BROKER_CN = "streamtrain-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_CN}"
"""The broker certificate's principal under Kafka's default SSL principal mapping."""
CA_FILE = "ca.pem"
BROKER_FILE = "broker.pem"
_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class TlsFiles:
    """Where a secured broker's certificate files are."""

    ca_pem: Path
    broker_pem: Path

    def broker_key_and_cert(self) -> tuple[str, str]:
        """The broker's key and certificate as PEM text (for a client presenting it)."""
        text = self.broker_pem.read_text(encoding="ascii")
        end = "-----END PRIVATE KEY-----"
        key, _, cert = text.partition(end)
        return key + end + "\n", cert.strip() + "\n"


def ensure_tls(directory: Path, host: str) -> TlsFiles:
    """The CA and broker certificate in ``directory``, made now if either is missing.

    The broker certificate names ``host``, ``localhost`` and 127.0.0.1, so clients verify the
    broker's name (librdkafka's ``ssl.endpoint.identification.algorithm=https``).
    """
    files = TlsFiles(directory / CA_FILE, directory / BROKER_FILE)
    if files.ca_pem.is_file() and files.broker_pem.is_file():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamtrain local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            # Server for its listeners, client for the mutual-TLS internal ones.
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(files.broker_pem, key_pem + cert.public_bytes(serialization.Encoding.PEM))
    # The CA certificate last: its presence with the broker's marks a complete set.
    files.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return files


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only, from the first byte."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)
