"""OCPP 2.0.1 transfers through the core's updater and diagnostics, on the real websocket and
real HTTP: UpdateFirmware with its signature in the request (Downloading, Downloaded,
SignatureVerified, Installing, then the updater's Installed with FirmwareUpdated after the
restart, all with the requestId), a bad signature (InvalidSignature), a foreign signing
certificate (InvalidCertificate); GetLog with LogStatusNotification."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import http.server
import json
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from ocpp.v201 import call

from evsed.ops import spool as spoolmod
from evsed.uplink import firmware
from simulator.csms201 import CentralSystem201
from test_ocpp201_fakes import running
from test_ocpp_fakes import aio, booted
from test_ocpp_firmware import WHEEL, Files, files, release  # noqa: F401 - fixtures

TIME = "2020-01-01T00:00:00Z"


def statuses(csms: CentralSystem201) -> list[str]:
    return [p["status"] for _, p in csms.actions("FirmwareStatusNotification")]


def request(location: str, signature: bytes | None, certificate: str | None = None) -> call.UpdateFirmware:
    body = {"location": location, "retrieve_date_time": TIME}
    if signature is not None:
        body["signature"] = base64.b64encode(signature).decode()
    if certificate is not None:
        body["signing_certificate"] = certificate
    return call.UpdateFirmware(request_id=17, firmware=body)


def test_a_release_signed_in_the_request_is_spooled_and_its_outcome_reported_after_the_restart(
        tmp_path, files, release, monkeypatch):  # noqa: F811 - fixtures
    key, pub, wheel = release
    del files.files[f"/releases/{WHEEL}.sig"]  # the signature travels in the request
    monkeypatch.setattr(firmware, "POLL_S", 0.05)

    @aio
    async def scenario():
        csms = CentralSystem201()
        async with running(csms, tmp_path, update_key_file=pub) as (uplink, _):
            await booted(csms, uplink)
            answer = await csms.call("CP1", request(f"{files.url}/releases/{WHEEL}", key.sign(wheel)))
            assert answer.status == "Accepted"
            await csms.wait_for(lambda: statuses(csms)[-1:] == ["Installing"])
            assert statuses(csms) == ["Downloading", "Downloaded", "SignatureVerified", "Installing"]
            spooled = json.loads((tmp_path / "update/request.json").read_text())
            with spoolmod.Spool(tmp_path / "update") as spool:  # what `evsed update --spool` leaves
                spool.write(spoolmod.STATUS, spoolmod.encode(spoolmod.Outcome(spooled["id"], "0.3.0", "Installed")))
        after = CentralSystem201()
        async with running(after, tmp_path, update_key_file=pub) as (uplink, _):
            await booted(after, uplink)
            await after.wait_for(lambda: statuses(after) == ["Installed"] and any(
                p["type"] == "FirmwareUpdated" for _, p in after.actions("SecurityEventNotification")))
        assert after.actions("BootNotification")[0][1]["reason"] == "FirmwareUpdate"
        assert {p.get("requestId") for _, p in csms.actions("FirmwareStatusNotification")} == {17}
        assert after.actions("FirmwareStatusNotification")[0][1]["requestId"] == 17
        assert csms.problems == after.problems == []
    scenario()
    assert files.got == [f"/releases/{WHEEL}"]


def test_a_signature_not_by_the_release_key_is_invalid_and_nothing_is_spooled(tmp_path, files, release):  # noqa: F811
    key, pub, wheel = release

    @aio
    async def scenario():
        csms = CentralSystem201()
        async with running(csms, tmp_path, update_key_file=pub) as (uplink, _):
            await booted(csms, uplink)
            other = ed25519.Ed25519PrivateKey.generate().sign(wheel)
            await csms.call("CP1", request(f"{files.url}/releases/{WHEEL}", other))
            await csms.wait_for(lambda: statuses(csms)[-1:] == ["InvalidSignature"] and any(
                p["type"] == "InvalidFirmwareSignature" for _, p in csms.actions("SecurityEventNotification")))
        assert statuses(csms) == ["Downloading", "Downloaded", "InvalidSignature"]
    scenario()
    assert list((tmp_path / "update").iterdir()) == []


def test_a_signing_certificate_without_the_release_key_is_an_invalid_certificate(tmp_path, files, release):  # noqa: F811
    key, pub, wheel = release
    stranger = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "somebody's releases")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(stranger.public_key())
                   .serial_number(1).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(
                       now + dt.timedelta(days=1)).sign(stranger, None)).public_bytes(serialization.Encoding.PEM)
    own = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(2).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(
               now + dt.timedelta(days=1)).sign(key, None)).public_bytes(serialization.Encoding.PEM)

    @aio
    async def scenario():
        csms = CentralSystem201()
        async with running(csms, tmp_path, update_key_file=pub) as (uplink, _):
            await booted(csms, uplink)
            refused = await csms.call("CP1", request(f"{files.url}/releases/{WHEEL}", key.sign(wheel),
                                                     certificate.decode()))
            taken = await csms.call("CP1", request(f"{files.url}/releases/{WHEEL}", key.sign(wheel), own.decode()))
            assert (refused.status, taken.status) == ("InvalidCertificate", "Accepted")
            await csms.wait_for(lambda: statuses(csms)[-1:] == ["Installing"])
    scenario()


@pytest.fixture
def uploads():
    """A loopback HTTP server that keeps what is PUT to it."""
    got: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            got[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()


def test_get_log_uploads_the_bundle_and_says_so_with_its_request_id(tmp_path, uploads):
    url, got = uploads

    @aio
    async def scenario():
        csms = CentralSystem201()
        async with running(csms, tmp_path) as (uplink, _):
            await booted(csms, uplink)
            answer = await csms.call("CP1", call.GetLog(log_type="DiagnosticsLog", request_id=5,
                                                        log={"remote_location": f"{url}/logs/"}))
            assert answer.status == "Accepted" and answer.filename.endswith(".json.gz")
            await csms.wait_for(lambda: [p["status"] for _, p in csms.actions("LogStatusNotification")]
                                == ["Uploading", "Uploaded"])
            assert {p["requestId"] for _, p in csms.actions("LogStatusNotification")} == {5}
            return answer.filename
    name = scenario()
    body = json.loads(gzip.decompress(got[f"/logs/{name}"]))
    assert body["identity"] == "CP1" and any(v["variable"]["name"] == "TxStartPoint" for v in body["variables"])
    assert "BasicAuthPassword" not in json.dumps([v for v in body["variables"] if "value" in v["variableAttribute"][0]])
