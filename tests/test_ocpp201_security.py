"""OCPP 2.0.1 security against a wss CSMS on loopback: profile 2 with basic auth, the CSMS's
roots and the station's own certificate installed by the CSMS (InstallCertificate, SignCertificate
and CertificateSigned) and then used for a profile 3 connection; GetInstalledCertificateIds,
DeleteCertificate; a refused CSMS certificate reported as a security event."""

from __future__ import annotations

import datetime as dt
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.v201 import call

from simulator.csms201 import CentralSystem201
from test_mqtt_broker import make_ca
from test_ocpp201_fakes import running
from test_ocpp_fakes import aio, booted, until
from test_ocpp_tls import server_context


def sign(csr_pem: str, ca_dir, name: str) -> tuple[str, object]:
    """A CA made here signs the station's CSR: (the certificate chain PEM, the CA's PEM path)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    leaf = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_name).public_key(csr.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    path = ca_dir / f"{name}-ca.pem"
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return leaf.public_bytes(serialization.Encoding.PEM).decode(), path


@aio
async def test_profile_2_boots_over_tls_with_the_password(tmp_path):
    ca, cert, key = make_ca(tmp_path, "csms")
    csms = CentralSystem201(password="secret-password-2")
    port = await csms.start(ssl=server_context(cert, key))
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=2,
                       password="secret-password-2", ca_file=ca) as (uplink, _):
        await booted(csms, uplink)
    assert csms.problems == []


@aio
async def test_certificates_the_csms_installs_carry_the_next_profile_3_connection(tmp_path):
    ca, cert, key = make_ca(tmp_path, "csms")
    client_ca, client_cert, client_key = make_ca(tmp_path, "charger")
    csms = CentralSystem201()
    port = await csms.start(ssl=server_context(cert, key, client_ca=client_ca))
    new_ca, new_cert, new_key = make_ca(tmp_path, "csms2")  # the CSMS moves to another CA
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=3,
                       ca_file=ca, cert_file=client_cert, key_file=client_key) as (uplink, _):
        await booted(csms, uplink)
        installed = await csms.call("CP1", call.InstallCertificate(
            certificate_type="CSMSRootCertificate", certificate=new_ca.read_text()))
        assert installed.status == "Accepted"
        leaf = await csms.call("CP1", call.InstallCertificate(certificate_type="CSMSRootCertificate",
                                                              certificate=new_cert.read_text()))
        assert leaf.status == "Rejected"  # not a CA
        trigger = await csms.call("CP1", call.TriggerMessage(requested_message="SignChargingStationCertificate"))
        assert trigger.status == "Accepted"
        await csms.wait_for(lambda: csms.actions("SignCertificate"))
        (_, request), = csms.actions("SignCertificate")
        csr = x509.load_pem_x509_csr(request["csr"].encode())
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP1"
        chain, operator_ca = sign(request["csr"], tmp_path, "operator")
        wrong, _ = sign(make_csr(), tmp_path, "stranger")
        assert (await csms.call("CP1", call.CertificateSigned(certificate_chain=wrong))).status == "Rejected"
        assert (await csms.call("CP1", call.CertificateSigned(certificate_chain=chain))).status == "Accepted"
        ids = await csms.call("CP1", call.GetInstalledCertificateIds(certificate_type=["CSMSRootCertificate"]))
        assert ids.status == "Accepted" and len(ids.certificate_hash_data_chain) == 1
        await csms.stop()
        moved = CentralSystem201()  # only the installed root and the signed certificate can reach it
        await moved.start(port=port, ssl=server_context(new_cert, new_key, client_ca=operator_ca))
        await moved.wait_for(lambda: moved.actions("BootNotification"), timeout=15)
        hash_data = ids.certificate_hash_data_chain[0]["certificate_hash_data"]
        deleted = await moved.call("CP1", call.DeleteCertificate(certificate_hash_data=hash_data))
        missing = await moved.call("CP1", call.DeleteCertificate(certificate_hash_data=hash_data))
        assert (deleted.status, missing.status) == ("Accepted", "NotFound")
        events = [p["type"] for c in (csms, moved) for _, p in c.actions("SecurityEventNotification")]
        await moved.stop()
    assert "ReconfigurationOfSecurityParameters" in events and "InvalidChargingStationCertificate" in events
    assert (tmp_path / "ocpp-certs" / "station-key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ocpp-certs").stat().st_mode & 0o777 == 0o700


def make_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@aio
async def test_a_csms_certificate_the_station_does_not_trust_is_a_security_event_once_it_connects(tmp_path):
    ca, cert, key = make_ca(tmp_path, "csms")
    other_ca, other_cert, other_key = make_ca(tmp_path, "other")
    csms = CentralSystem201(password="secret-password-2")
    port = await csms.start(ssl=server_context(other_cert, other_key))
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=2,
                       password="secret-password-2", ca_file=ca) as (uplink, _):
        await until(lambda: uplink.connection.attempts >= 3, what="refused handshakes")
        assert csms.messages == []
        await csms.stop()
        trusted = CentralSystem201(password="secret-password-2")
        await trusted.start(port=port, ssl=server_context(cert, key))
        await trusted.wait_for(lambda: trusted.actions("SecurityEventNotification") and any(
            p["type"] == "InvalidCsmsCertificate" for _, p in trusted.actions("SecurityEventNotification")))
        await trusted.stop()
    assert [p["type"] for _, p in trusted.actions("SecurityEventNotification")].count("InvalidCsmsCertificate") == 1
    assert isinstance(ssl.SSLCertVerificationError(), OSError)


@aio
async def test_a_new_basic_auth_password_is_answered_stored_0600_and_used_from_the_next_connection(tmp_path):
    ca, cert, key = make_ca(tmp_path, "csms")
    secret = tmp_path / "ocpp-password"
    secret.write_text("first-password-123\n")
    secret.chmod(0o600)
    csms = CentralSystem201(password="first-password-123")
    port = await csms.start(ssl=server_context(cert, key))
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=2,
                       password="first-password-123", password_file=secret, ca_file=ca) as (uplink, _):
        await booted(csms, uplink)
        answer = await csms.call("CP1", call.SetVariables(set_variable_data=[{
            "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"},
            "attribute_value": "second-password-456"}]))
        assert answer.set_variable_result[0]["attribute_status"] == "Accepted"
        csms.password = "second-password-456"  # the CSMS now wants the new one
        await csms.wait_for(lambda: csms.connections == 2 and len(csms.actions("BootNotification")) == 2)
        assert "second-password" not in str(uplink.state.keys())
    assert secret.read_text() == "second-password-456\n" and secret.stat().st_mode & 0o777 == 0o600
