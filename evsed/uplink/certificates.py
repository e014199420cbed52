"""Certificates the CSMS manages, whatever the OCPP version (2.0.1 A02-A03, M03-M05; the 1.6
security whitepaper): the root certificates it installs, the charging station certificate it signs
from the station's own key, kept in a folder beside the OCPP state (0700, files 0600, the uplink's
user), and the TLS context a connection uses: the installed CSMS roots and station certificate.
cryptography is imported when a certificate is handled, not with the uplink (its memory)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from cryptography import x509

log = structlog.get_logger("evsed.uplink")
ROOTS = ("CSMSRootCertificate", "ManufacturerRootCertificate", "MORootCertificate", "V2GRootCertificate")
STATION = "ChargingStationCertificate"
HashData = dict[str, str]  # hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber


def _key_bits(key: Any) -> bytes:
    """The subjectPublicKey BIT STRING's contents (what issuerKeyHash hashes, RFC 6960)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise ValueError(f"unsupported key type {type(key).__name__}")


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None) -> HashData:
    """The certificate's CertificateHashDataType (SHA256); a root is its own issuer."""
    issuer = issuer or cert
    return {"hashAlgorithm": "SHA256",
            "issuerNameHash": hashlib.sha256(cert.issuer.public_bytes()).hexdigest(),
            "issuerKeyHash": hashlib.sha256(_key_bits(issuer.public_key())).hexdigest(),
            "serialNumber": format(cert.serial_number, "x")}


def _same(a: HashData, b: dict[str, Any]) -> bool:
    return all(str(a[k]).lower().lstrip("0") == str(b.get(k, "")).lower().lstrip("0")
               for k in ("issuerNameHash", "issuerKeyHash", "serialNumber")) and b.get("hashAlgorithm") == "SHA256"


class Certificates:
    """The folder holds <use>-<serial>.pem for roots, station-cert.pem with station-key.pem, and
    the key of a signing request until its certificate comes (pending-key.pem)."""

    def __init__(self, folder: Path, identity: str, max_entries: int = 100):
        self.folder, self.identity, self.max_entries = folder, identity, max_entries
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.folder / f".{name}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)

    def _root_files(self) -> list[tuple[str, Path]]:
        return [(path.name.rsplit("-", 1)[0], path) for path in sorted(self.folder.glob("*-*.pem"))
                if path.name.rsplit("-", 1)[0] in ROOTS]

    def _roots(self) -> list[tuple[str, Path, x509.Certificate]]:
        from cryptography import x509

        out = []
        for use, path in self._root_files():
            if use in ROOTS:
                try:
                    out.append((use, path, x509.load_pem_x509_certificate(path.read_bytes())))
                except ValueError:
                    log.warning("ocpp.certificate_unreadable", file=str(path))
        return out

    def count(self) -> int:
        return len(self._root_files()) + (1 if (self.folder / "station-cert.pem").exists() else 0)

    # -- roots -------------------------------------------------------------------------------------
    def install(self, use: str, pem: str) -> str:
        """InstallCertificate: Accepted, Rejected (not a valid CA certificate now) or Failed."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            return "Rejected"
        now = dt.datetime.now(dt.timezone.utc)
        try:
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if use not in ROOTS or not ca or not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            log.info("ocpp.certificate_rejected", use=use, ca=ca)
            return "Rejected"
        if self.count() >= self.max_entries:
            return "Failed"
        try:
            self._write(f"{use}-{cert.serial_number:x}.pem", cert.public_bytes(serialization.Encoding.PEM))
        except OSError as exc:
            log.warning("ocpp.certificate_not_written", error=type(exc).__name__)
            return "Failed"
        log.info("ocpp.certificate_installed", use=use, subject=cert.subject.rfc4514_string()[:200])
        return "Accepted"

    def installed(self, uses: list[str] | None = None) -> list[tuple[str, HashData]]:
        """(use, hash data) of each installed root of the uses asked for (None: all)."""
        return [(use, hash_data(cert)) for use, _, cert in self._roots() if not uses or use in uses]

    def delete(self, wanted: dict[str, Any]) -> str:
        """DeleteCertificate: Accepted, NotFound, or Failed (the station's own certificate)."""
        station = self.station_certificate()
        if station is not None and _same(hash_data(station, self._issuer(station)), wanted):
            return "Failed"
        for use, path, cert in self._roots():
            if _same(hash_data(cert), wanted):
                path.unlink()
                log.info("ocpp.certificate_deleted", use=use)
                return "Accepted"
        return "NotFound"

    def _issuer(self, cert: x509.Certificate) -> x509.Certificate | None:
        return next((c for _, _, c in self._roots() if c.subject == cert.issuer), None)

    # -- the station's certificate -------------------------------------------------------------------
    def request(self, organization: str) -> str:
        """A new key (kept until its certificate comes) and the PEM CSR SignCertificate carries."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        self._write("pending-key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.identity),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization or "evsed")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def signed(self, chain: str) -> str:
        """CertificateSigned: Accepted when the chain's first certificate is valid now and holds
        the pending key; the key and chain then become the station's (used from the next connection)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        pending = self.folder / "pending-key.pem"
        try:
            certs = x509.load_pem_x509_certificates(chain.encode())
            key = serialization.load_pem_private_key(pending.read_bytes(), None)
        except (ValueError, OSError):
            return "Rejected"
        leaf, now = certs[0], dt.datetime.now(dt.timezone.utc)
        if _key_bits(leaf.public_key()) != _key_bits(key.public_key()) or not (
                leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc):
            log.info("ocpp.station_certificate_rejected", subject=leaf.subject.rfc4514_string()[:200])
            return "Rejected"
        self._write("station-cert.pem", b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        os.replace(pending, self.folder / "station-key.pem")
        log.info("ocpp.station_certificate_installed", subject=leaf.subject.rfc4514_string()[:200],
                 not_after=leaf.not_valid_after_utc.isoformat())
        return "Accepted"

    def station_certificate(self) -> x509.Certificate | None:
        from cryptography import x509

        path = self.folder / "station-cert.pem"
        try:
            return x509.load_pem_x509_certificate(path.read_bytes()) if path.exists() else None
        except ValueError:
            return None

    def tls(self, ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
            client_certificate: bool) -> ssl.SSLContext:
        """The context of a wss connection: the configured CA and the installed CSMS roots; with
        client_certificate (profile 3), the signed station certificate, else the configured one."""
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        for use, path in self._root_files():
            if use == "CSMSRootCertificate":
                context.load_verify_locations(cafile=str(path))
        if client_certificate:
            cert, key = self.folder / "station-cert.pem", self.folder / "station-key.pem"
            if cert.exists() and key.exists():
                context.load_cert_chain(str(cert), str(key))
            elif cert_file is not None and key_file is not None:
                context.load_cert_chain(str(cert_file), str(key_file))
        return context
