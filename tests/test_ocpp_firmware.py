"""UpdateFirmware: the uplink downloads a signed evsed wheel (and location + ".sig") into the update
spool, reports Downloading, Downloaded, Installing, and later the outcome `evsed update --spool`
left (Installed or InstallationFailed), once. A real CSMS on loopback, the files over real HTTP."""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from ocpp.v16 import call

from evsed.ops import spool as spoolmod
from evsed.ops import update
from evsed.uplink import firmware
from evsed.uplink.settings import running_version
from simulator.csms import CentralSystem
from test_ocpp_fakes import aio, booted, running, until
from test_update import GOOD, make_wheel, site  # noqa: F401 - site is a fixture

WHEEL = "evsed-0.3.0-py3-none-any.whl"


class Files:
    """A loopback HTTP server of path -> bytes; anything else is 404."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.got: list[str] = []
        files, got = self.files, self.got

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                got.append(self.path)
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def files():
    served = Files()
    yield served
    served.server.shutdown()


@pytest.fixture
def release(tmp_path, files):
    """A release key (its public half in release.pub), and a wheel signed by it on the server."""
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "ocpp-release.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "dist").mkdir()
    wheel = make_wheel(tmp_path / "dist", "0.3.0", GOOD).read_bytes()
    files.files[f"/releases/{WHEEL}"] = wheel
    files.files[f"/releases/{WHEEL}.sig"] = key.sign(wheel)
    return key, pub, wheel


def statuses(csms: CentralSystem) -> list[str]:
    return [p["status"] for _, p in csms.actions("FirmwareStatusNotification")]


async def update_firmware(csms: CentralSystem, location: str) -> None:
    await csms.call("CP1", call.UpdateFirmware(location=location, retrieve_date="2020-01-01T00:00:00Z"))


def test_a_signed_wheel_is_spooled_with_its_request_last_and_reported_downloaded_then_installing(
        tmp_path, files, release):
    key, pub, wheel = release

    @aio
    async def scenario():
        csms = CentralSystem()
        async with running(csms, tmp_path, update_key_file=pub) as (uplink, _):
            await booted(csms, uplink)
            await update_firmware(csms, f"{files.url}/releases/{WHEEL}")
            await csms.wait_for(lambda: statuses(csms)[-1:] == ["Installing"])
            assert statuses(csms) == ["Downloading", "Downloaded", "Installing"]
            result = await csms.call("CP1", call.TriggerMessage(requested_message="FirmwareStatusNotification"))
            assert result.status == "Accepted"
            await csms.wait_for(lambda: len(statuses(csms)) == 4)
            assert statuses(csms)[-1] == "Installing"  # until the updater's outcome comes
    scenario()
    spool = tmp_path / "update"
    assert sorted(p.name for p in spool.iterdir()) == [WHEEL, WHEEL + ".sig", "request.json"]  # no .part left
    assert (spool / WHEEL).read_bytes() == wheel
    request = spoolmod.parse_request((spool / "request.json").read_bytes())
    assert request.wheel == WHEEL and request.location == f"{files.url}/releases/{WHEEL}"
    assert files.got == [f"/releases/{WHEEL}", f"/releases/{WHEEL}.sig"]
    assert spool.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("served, status, event", [
    ("no signature", ["Downloading", "Downloaded", "InstallationFailed"], "ocpp.firmware_signature_missing"),
    ("another key's signature", ["Downloading", "Downloaded", "InstallationFailed"],
     "ocpp.firmware_signature_invalid"),
    ("no wheel", ["Downloading", "DownloadFailed"], "ocpp.firmware_download_failed"),
])
def test_a_release_that_cannot_be_checked_is_not_spooled(tmp_path, files, release, served, status, event):
    key, pub, wheel = release
    if served == "no signature":
        del files.files[f"/releases/{WHEEL}.sig"]
    elif served == "another key's signature":
        files.files[f"/releases/{WHEEL}.sig"] = ed25519.Ed25519PrivateKey.generate().sign(wheel)
    else:
        files.files.clear()

    @aio
    async def scenario():
        csms = CentralSystem()
        async with running(csms, tmp_path, update_key_file=pub) as (uplink, _):
            await booted(csms, uplink)
            await update_firmware(csms, f"{files.url}/releases/{WHEEL}")
            await csms.wait_for(lambda: statuses(csms)[-1:] == status[-1:])
            await until(lambda: uplink.firmware.status == "Idle", what="firmware status Idle")
            assert statuses(csms) == status
    with structlog.testing.capture_logs() as logs:
        scenario()
    assert statuses_of(logs, event)
    assert list((tmp_path / "update").iterdir()) == []  # nothing for the updater to install


def statuses_of(logs: list[dict], event: str) -> list[dict]:
    return [e for e in logs if e["event"] == event]


@pytest.mark.parametrize("location, key", [("/releases/firmware.bin", True), (f"/releases/{WHEEL}", False)])
def test_a_location_not_naming_an_evsed_wheel_or_a_charger_without_a_release_key_refuses(
        tmp_path, files, release, location, key):
    @aio
    async def scenario():
        csms = CentralSystem()
        async with running(csms, tmp_path, update_key_file=release[1] if key else None) as (uplink, _):
            await booted(csms, uplink)
            await update_firmware(csms, files.url + location)
            await csms.wait_for(lambda: statuses(csms) == ["InstallationFailed"])
    with structlog.testing.capture_logs() as logs:
        scenario()
    assert statuses_of(logs, "ocpp.firmware_refused") and files.got == []
    assert not (tmp_path / "update").exists()


class Started:
    """evsed.service as the updater sees it: started and READY at once (the real start is test_update's)."""

    def __init__(self):
        self.starts = 0

    def stop(self) -> None:
        pass

    def start(self, timeout_s: float) -> bool:
        self.starts += 1
        return True

    def health(self) -> update.Health:
        return update.Health("active", 1000 + self.starts, 0)


def test_the_updaters_outcome_is_reported_once_after_the_restart_with_the_running_version_in_boot(
        tmp_path, files, release, site):  # noqa: F811 - the fixture
    updater, _, _, _ = site
    key, pub, wheel = release
    updater.settings = update.UpdateSettings(public_key_file=pub, ready_timeout_s=20)
    updater.service = Started()

    async def uplink_run(csms, then):
        async with running(csms, tmp_path, update_key_file=pub) as (uplink, _):
            await booted(csms, uplink)
            await then(csms, uplink)

    async def spooled(csms, uplink):
        await update_firmware(csms, f"{files.url}/releases/{WHEEL}")
        await csms.wait_for(lambda: statuses(csms)[-1:] == ["Installing"])

    async def reported(csms, uplink):
        await csms.wait_for(lambda: statuses(csms) == ["Installed"])
        # answered, so out of the durable queue (an unanswered one is sent again after a restart)
        await until(lambda: not [q for q in uplink.state.queued() if q.action == "FirmwareStatusNotification"],
                    what="the notification answered")

    async def nothing_more(csms, uplink):
        assert not uplink.firmware.pending() and uplink.firmware.status == "Idle"
        assert [q.action for q in uplink.state.queued() if q.action == "FirmwareStatusNotification"] == []
        await csms.call("CP1", call.TriggerMessage(requested_message="Heartbeat"))
        await csms.wait_for(lambda: csms.actions("Heartbeat"))

    @aio
    async def scenario():
        await uplink_run(CentralSystem(), spooled)
        # the uplink stops with evsed; the path unit's evsed update --spool runs:
        outcome = updater.run_spool(tmp_path / "update")
        assert outcome is not None and outcome.result == "Installed" and updater.service.starts == 1
        csms = CentralSystem()
        await uplink_run(csms, reported)
        actions = [a for _, a, _, _ in csms.messages]
        assert actions.index("BootNotification") < actions.index("FirmwareStatusNotification")
        assert csms.actions("BootNotification")[0][1]["firmwareVersion"] == running_version()
        again = CentralSystem()
        await uplink_run(again, nothing_more)
        assert statuses(again) == []
    scenario()
    assert (updater.opt / "current").resolve() == updater.opt / "releases/0.3.0"


def test_an_installation_failure_is_reported_while_the_uplink_runs(tmp_path, files, release, monkeypatch):
    """The updater may fail without restarting evsed (a session ran for a week, a bad release):
    the uplink looks for the outcome while a request is pending."""
    key, pub, wheel = release
    monkeypatch.setattr(firmware, "POLL_S", 0.05)

    @aio
    async def scenario():
        csms = CentralSystem()
        async with running(csms, tmp_path, update_key_file=pub) as (uplink, _):
            await booted(csms, uplink)
            await update_firmware(csms, f"{files.url}/releases/{WHEEL}")
            await csms.wait_for(lambda: statuses(csms)[-1:] == ["Installing"])
            request = json.loads((tmp_path / "update/request.json").read_text())
            with spoolmod.Spool(tmp_path / "update") as spool:
                spool.write(spoolmod.STATUS, spoolmod.encode(spoolmod.Outcome(
                    request["id"], "0.3.0", "InstallationFailed", "a session runs on connector 1")))
            await csms.wait_for(lambda: statuses(csms)[-1:] == ["InstallationFailed"])
            assert statuses(csms) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
            assert uplink.firmware.status == "Idle" and not uplink.firmware.pending()
    scenario()


def test_the_signature_is_the_locations_path_with_sig_and_the_wheel_name_its_last_part():
    assert firmware.signature_location("https://h/r/evsed-1.0-py3-none-any.whl?t=1") == \
        "https://h/r/evsed-1.0-py3-none-any.whl.sig?t=1"
    assert firmware.wheel_name("https://h/r/evsed-1.0-py3-none-any.whl?t=1") == "evsed-1.0-py3-none-any.whl"
    assert firmware.wheel_name("https://h/r/evsed-1.0-py3-none-any.whl/") is None
    assert firmware.wheel_name("https://h/..%2F..%2Fevsed-1.0-py3-none-any.whl") == "evsed-1.0-py3-none-any.whl"


def test_boot_notification_says_the_running_version_unless_the_config_names_one(tmp_path):
    from evsed.config import parse
    from evsed.uplink import settings
    base = (Path(__file__).parent.parent / "config/simulator.toml").read_text() + '\n[ocpp]\nurl = "ws://h/"\n'
    assert settings.parse(parse(base, tmp_path / "evsed.toml")).firmware_version == running_version()
    named = settings.parse(parse(base + 'firmware_version = "vendor-7"\n', tmp_path / "evsed.toml"))
    assert named.firmware_version == "vendor-7"


def test_a_spool_that_is_not_a_directory_refuses_the_update(tmp_path, files, release):
    (tmp_path / "update").write_text("not a directory")

    @aio
    async def scenario():
        csms = CentralSystem()
        async with running(csms, tmp_path, update_key_file=release[1]) as (uplink, _):
            await booted(csms, uplink)
            await update_firmware(csms, f"{files.url}/releases/{WHEEL}")
            await csms.wait_for(lambda: statuses(csms) == ["InstallationFailed"])
    with structlog.testing.capture_logs() as logs:
        scenario()
    assert [e["reason"] for e in statuses_of(logs, "ocpp.firmware_refused")][0].startswith("the spool: ")
    assert files.got == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_a_spool_another_service_made_first_is_refused_and_its_outcome_not_reported(tmp_path, files, release):
    # every service may write services/: the web page's user makes update/ before the uplink does
    squatted = tmp_path / "update"
    squatted.mkdir(mode=0o755)
    os.chown(squatted, 65534, 65534)

    @aio
    async def scenario():
        csms = CentralSystem()
        async with running(csms, tmp_path, update_key_file=release[1]) as (uplink, _):
            await booted(csms, uplink)
            await update_firmware(csms, f"{files.url}/releases/{WHEEL}")
            await csms.wait_for(lambda: statuses(csms) == ["InstallationFailed"])
            # a request of ours pending, and the squatter's outcome for it: not reported
            uplink.state.set_meta("firmware_requested", "r1")
            (squatted / "status.json").write_bytes(spoolmod.encode(spoolmod.Outcome("r1", "9.9", "Installed")))
            assert not uplink.firmware.check_outcome() and uplink.firmware.pending()
    with structlog.testing.capture_logs() as logs:
        scenario()
    reasons = [e["reason"] for e in statuses_of(logs, "ocpp.firmware_refused")]
    assert reasons and "owned by uid 65534, not by the OCPP uplink" in reasons[0]
    assert files.got == [] and sorted(p.name for p in squatted.iterdir()) == ["status.json"]
