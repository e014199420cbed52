"""Security profiles 2 (TLS with basic auth) and 3 (TLS client certificates) against a wss CSMS
on loopback, with certificates made here: the uplink trusts only the configured CA."""

from __future__ import annotations

import ssl

from simulator.csms import CentralSystem
from test_mqtt_broker import make_ca
from test_ocpp_fakes import aio, booted, running, until


def server_context(cert, key, client_ca=None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:  # profile 3: the CSMS asks for the charge point's certificate
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(client_ca))
    return context


@aio
async def test_profile_2_boots_over_tls_with_the_password_and_refuses_a_csms_another_ca_signed(tmp_path):
    ca, cert, key = make_ca(tmp_path, "csms")
    csms = CentralSystem(password="secret-password-2")
    port = await csms.start(ssl=server_context(cert, key))
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=2,
                       password="secret-password-2", ca_file=ca):
        await booted(csms)
    other_ca, _, _ = make_ca(tmp_path, "other")
    csms = CentralSystem(password="secret-password-2")
    port = await csms.start(ssl=server_context(cert, key))
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=2,
                       password="secret-password-2", ca_file=other_ca) as (uplink, _):
        await until(lambda: uplink.connection.attempts >= 2, what="two refused handshakes")
        assert csms.messages == [] and uplink.connection.connections == 0


@aio
async def test_profile_3_boots_with_its_client_certificate_and_not_without_one_the_csms_trusts(tmp_path):
    ca, cert, key = make_ca(tmp_path, "csms")
    client_ca, client_cert, client_key = make_ca(tmp_path, "charger")
    csms = CentralSystem()
    port = await csms.start(ssl=server_context(cert, key, client_ca=client_ca))
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=3,
                       ca_file=ca, cert_file=client_cert, key_file=client_key):
        await booted(csms)
    stranger_ca, stranger_cert, stranger_key = make_ca(tmp_path, "stranger")
    csms = CentralSystem()
    port = await csms.start(ssl=server_context(cert, key, client_ca=client_ca))
    async with running(csms, tmp_path, port=port, url=f"wss://127.0.0.1:{port}/ocpp", security_profile=3,
                       ca_file=ca, cert_file=stranger_cert, key_file=stranger_key) as (uplink, _):
        await until(lambda: uplink.connection.attempts >= 2, what="two refused handshakes")
        assert csms.messages == [] and uplink.connection.connections == 0
