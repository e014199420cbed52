"""A card read twice is one tap on a charger with several connectors, too: the repeat goes back
to the connector that took the first read (which ignores it), not to another waiting EV."""

import datetime as dt

from evsed import config as configmod
from evsed.shell.charger import Charger
from evsed.shell.devices import ConnectorDevices, Devices
from evsed.store.sessions import InlineWriter, Store
from hal import MeterReading, PilotReading


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


class Pilot:
    high_v = 12.0

    def pwm_on(self, duty_pct): pass
    def pwm_off(self): pass
    def pwm_f(self): pass

    def read(self):
        return PilotReading(self.high_v, self.high_v)


class Contactor:
    def close(self): pass
    def open(self): pass


def reading(energy_wh, amps):
    return MeterReading(energy_import_wh=energy_wh, power_total_w=amps * 690, current_a=(amps,) * 3)

TWO_CONNECTORS = """
[[connector]]
id = 1
pilot = { backend = "sim" }
contactor = { backend = "sim" }
meter = { backend = "sim" }
[[connector]]
id = 2
pilot = { backend = "sim" }
contactor = { backend = "sim" }
meter = { backend = "sim" }
[[card]]
uid = "04A1B2C3"
"""


def test_a_card_read_twice_after_stopping_does_not_start_the_ev_next_door(tmp_path):
    clock = Clock()
    pilots = {1: Pilot(), 2: Pilot()}
    devices = Devices(connectors={cid: ConnectorDevices(p, Contactor(), meter=object()) for cid, p in pilots.items()})
    cfg = configmod.parse(TWO_CONNECTORS, tmp_path / "evsed.toml")
    charger = Charger(cfg, devices, clock=clock, wallclock=lambda: dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc),
                      writer=InlineWriter(Store(tmp_path / "s.db")), first_session_id=1)
    charger.start()

    def poll():
        for cid, ctrl in charger.connectors.items():
            ctrl.meter_sampled(reading(1000, 0.0))
            ctrl.poll_inputs(ctrl.read_pilot())

    one, two = charger.connectors[1], charger.connectors[2]
    pilots[2].high_v = 9.0  # an EV on connector 2 only
    poll()
    assert charger.present_card("04A1B2C3") == 2 and two.state.session
    clock.now = 10.0
    pilots[1].high_v = 9.0  # another EV arrives on connector 1 and waits for a card
    poll()
    clock.now = 20.0
    poll()
    assert charger.present_card("04A1B2C3") == 2 and not two.state.session  # the driver stops
    clock.now = 20.5
    assert charger.present_card("04A1B2C3") == 2  # the reader saw the card once more
    assert not one.state.session and one.state.pending_tag is None and one.state.id_tag is None
    clock.now = 23.0
    poll()
    assert charger.present_card("04A1B2C3") == 1 and one.state.session  # a real tap, later
