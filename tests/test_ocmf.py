"""Signed meter data: each finished session's OCMF document, checked with pyocmf (an independent
verifier), never with evsed's own code."""

import json
import stat
from decimal import Decimal as D

import pytest
from pyocmf import OCMF

from evsed.core.tariff import DriverPrice, Tariff
from evsed.store import ocmf
from evsed.store.sessions import LiveSession, Store


def finished(tmp_path, synced=False, **kw) -> tuple[Store, dict]:
    signer = ocmf.Signer.load_or_create(tmp_path)
    store = Store(tmp_path / "s.db", signer=signer, charger_id="evsed-sim", timezone="Europe/Berlin", version="0.1.0",
                  clock_synced=lambda: synced)
    pricing = Tariff(name="home", prices={"family": DriverPrice("family", per_kwh=D("0.37"))}).pricing(
        "family", "Europe/Berlin")
    s = LiveSession(**{**dict(connector_id=1, id_tag="04A1B2C3", card_name="Alice", card_group="family",
                              auth_source="local", started_at="2026-10-24T19:30:00+00:00", meter_start_wh=10_000,
                              meter_last_wh=10_000, pricing=pricing.to_json()), **kw})
    store.start(s)
    store.stop(s.row_id, 44_500, 7000.0, "ev_disconnected", "2026-10-25T07:00:00+00:00")
    return store, store.session(s.row_id)


def test_the_time_status_is_s_while_the_kernel_says_the_clock_is_synchronised(tmp_path):
    _, row = finished(tmp_path, synced=True)
    doc = OCMF.from_string(row["ocmf"], strict=True)
    assert [str(r.TM)[-1] for r in doc.payload.RD] == ["S", "S"]
    assert doc.verify_signature(row["ocmf_public_key"]) is True


def test_a_finished_sessions_document_verifies_with_pyocmf_and_the_printed_public_key(tmp_path):
    store, row = finished(tmp_path)
    doc = OCMF.from_string(row["ocmf"], strict=True)  # strict: no deviation from the OCMF spec
    assert doc.verify_signature(row["ocmf_public_key"]) is True
    assert (tmp_path / ocmf.PUBLIC_KEY_FILE).read_text().strip() == row["ocmf_public_key"]
    begin, end = doc.payload.RD
    assert (begin.TX, end.TX, begin.RV, end.RV, str(end.RU)) == ("B", "E", D("10"), D("44.5"), "kWh")
    assert str(end.TM) == "2026-10-25T08:00:00,000+0100 U"  # local time, after the DST night
    assert (doc.payload.ID, str(doc.payload.IT), doc.payload.GS, str(doc.signature.SA)) == (
        "04A1B2C3", "ISO14443", "evsed-sim", "ECDSA-secp256r1-SHA256")
    assert "0.37 EUR/kWh" in doc.payload.TT


def test_a_tampered_payload_fails_to_verify(tmp_path):
    store, row = finished(tmp_path)
    head, payload, signature = row["ocmf"].split("|")
    forged = payload.replace('"RV":44.5', '"RV":54.5')
    assert forged != payload
    doc = OCMF.from_string("|".join((head, forged, signature)))
    assert doc.verify_signature(row["ocmf_public_key"]) is False


def test_another_key_does_not_verify_the_document(tmp_path):
    store, row = finished(tmp_path)
    (tmp_path / "b").mkdir()
    other = ocmf.Signer.load_or_create(tmp_path / "b")
    assert OCMF.from_string(row["ocmf"]).verify_signature(other.public_key_hex) is False


def test_the_key_is_made_once_and_kept_0600(tmp_path):
    first = ocmf.Signer.load_or_create(tmp_path)
    assert stat.S_IMODE((tmp_path / ocmf.KEY_FILE).stat().st_mode) == 0o600
    assert ocmf.Signer.load_or_create(tmp_path).public_key_hex == first.public_key_hex


def test_a_session_closed_after_a_power_cut_is_signed_as_a_power_failure(tmp_path):
    signer = ocmf.Signer.load_or_create(tmp_path)
    store = Store(tmp_path / "s.db", signer=signer)
    s = LiveSession(1, "FREEVEND", "", "", "free_vend", "2026-01-05T09:00:00+00:00", 500, 500)
    store.start(s)
    store.checkpoint(s.row_id, 900, 7000.0, "2026-01-05T09:10:00+00:00")
    store.recover()
    row = store.session(s.row_id)
    doc = OCMF.from_string(row["ocmf"], strict=True)
    assert doc.verify_signature(row["ocmf_public_key"])
    assert str(doc.payload.RD[1].TX) == "P" and doc.payload.IS is False and doc.payload.ID is None


@pytest.mark.parametrize("reason, tx", [("local", "L"), ("remote", "R"), ("ground_fault", "A")])
def test_stop_reasons_map_to_ocmf_transaction_codes(tmp_path, reason, tx):
    signer = ocmf.Signer.load_or_create(tmp_path)
    store = Store(tmp_path / "s.db", signer=signer)
    s = LiveSession(1, "CARD-7", "", "", "local", "2026-01-05T09:00:00+00:00", 500, 500)
    store.start(s)
    store.stop(s.row_id, 600, 1.0, reason, "2026-01-05T10:00:00+00:00")
    payload = json.loads(store.session(s.row_id)["ocmf"].split("|")[1])
    assert payload["RD"][1]["TX"] == tx and payload["IT"] == "LOCAL"


def test_a_session_run_by_the_connector_shell_gets_a_document_pyocmf_verifies(tmp_path):
    # today's shell writes the stop at once and raises it with the next reading: both are signed
    from test_connector import Clock, charge, make, reading
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    store.signer = ocmf.Signer.load_or_create(tmp_path)
    charge(ctrl, pilot, clock)
    for wh in (1200, 1400, 1650):
        clock.now += 60
        ctrl.meter_sampled(reading(wh))
    clock.now += 0.5
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())  # unplugged
    clock.now += 0.5
    ctrl.meter_sampled(reading(1652, 0.0))  # the first answer after the contactor opened
    (row,) = store.sessions()
    doc = OCMF.from_string(row["ocmf"], strict=True)
    assert doc.verify_signature(row["ocmf_public_key"]) is True
    assert (doc.payload.RD[0].RV, doc.payload.RD[1].RV) == (D("1"), D("1.652"))
