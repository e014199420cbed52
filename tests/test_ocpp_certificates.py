"""OCPP 1.6 security whitepaper certificates against the 1.6 CSMS on loopback, the same store as
2.0.1's: InstallCertificate, GetInstalledCertificateIds, DeleteCertificate, ExtendedTriggerMessage
SignChargePointCertificate with SignCertificate and CertificateSigned; the signed certificate and
the installed root carry the next profile 3 connection (they were NotSupported before)."""

from __future__ import annotations

from ocpp.v16 import call

from simulator.csms import CentralSystem
from test_mqtt_broker import make_ca
from test_ocpp201_security import sign
from test_ocpp_fakes import aio, booted, running
from test_ocpp_tls import server_context


@aio
async def test_certificates_installed_and_signed_over_1_6_carry_the_next_profile_3_connection(tmp_path):
    ca, cert, key = make_ca(tmp_path, "csms")
    client_ca, client_cert, client_key = make_ca(tmp_path, "charger")
    csms = CentralSystem()
    port = await csms.start(ssl=server_context(cert, key, client_ca=client_ca))
    new_ca, new_cert, new_key = make_ca(tmp_path, "csms2")
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=3,
                       ca_file=ca, cert_file=client_cert, key_file=client_key) as (uplink, _):
        await booted(csms, uplink)
        installed = await csms.call("CP1", call.InstallCertificate(
            certificate_type="CentralSystemRootCertificate", certificate=new_ca.read_text()))
        assert installed.status == "Accepted"
        trigger = await csms.call("CP1", call.ExtendedTriggerMessage(requested_message="SignChargePointCertificate"))
        assert trigger.status == "Accepted"
        await csms.wait_for(lambda: csms.actions("SignCertificate"))
        chain, operator_ca = sign(csms.actions("SignCertificate")[0][1]["csr"], tmp_path, "operator")
        assert (await csms.call("CP1", call.CertificateSigned(certificate_chain=chain))).status == "Accepted"
        ids = await csms.call("CP1", call.GetInstalledCertificateIds(certificate_type="CentralSystemRootCertificate"))
        assert ids.status == "Accepted" and len(ids.certificate_hash_data) == 1
        await csms.stop()
        moved = CentralSystem()
        await moved.start(port=port, ssl=server_context(new_cert, new_key, client_ca=operator_ca))
        await moved.wait_for(lambda: moved.actions("BootNotification"), timeout=15)
        deleted = await moved.call("CP1", call.DeleteCertificate(certificate_hash_data=ids.certificate_hash_data[0]))
        assert deleted.status == "Accepted"
        none = await moved.call("CP1", call.GetInstalledCertificateIds(certificate_type="ManufacturerRootCertificate"))
        assert none.status == "NotFound"
        await moved.stop()
