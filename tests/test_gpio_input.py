"""The gpio control input ([site.input] backend = "gpio"): a ripple-control receiver's or grid
operator's contact (§14a EnWG). Real gpiozero devices on its MockFactory pins, options through
the real config loader."""

from __future__ import annotations

import pytest

from evsed import config
from evsed.config import backends
from evsed.shell import devices
from hal import Closable, ContactInput, DeviceUnavailable, Notifying
from hal.gpio import pin_factory

SIM_CONNECTOR = '[[connector]]\n[connector.pilot]\nbackend = "sim"\n[connector.contactor]\nbackend = "sim"\n'


def site_config(toml: str) -> config.Config:
    return config.parse(SIM_CONNECTOR + f'[site.input]\nbackend = "gpio"\npin_factory = "mock"\n{toml}\n')


def build(toml: str, shared: dict):
    options = dict(site_config(toml).site.load.input.options)
    return backends.create("input", "gpio", options, backends.BackendContext(connector_id=0, shared=shared))


@pytest.fixture
def shared():
    return {}


@pytest.fixture
def mock(shared):
    factory = pin_factory("mock", shared)
    yield factory
    factory.close()


def test_the_gpio_input_is_a_notifying_closable_contact_input(mock, shared):
    contact = build("pin = 5", shared)
    assert isinstance(contact, ContactInput) and isinstance(contact, Notifying) and isinstance(contact, Closable)


def test_by_default_the_contact_is_active_low_with_a_pull_up(mock, shared):
    contact = build("pin = 5", shared)
    assert contact.active() is False  # the pull-up holds an open contact high
    mock.pin(5).drive_low()  # the receiver closes its contact to ground
    assert contact.active() is True
    mock.pin(5).drive_high()
    assert contact.active() is False


def test_an_active_high_input_with_a_pull_down_reads_a_contact_to_3v3(mock, shared):
    contact = build('pin = 5\nactive_high = true\npull = "down"', shared)
    assert contact.active() is False
    mock.pin(5).drive_high()
    assert contact.active() is True


@pytest.mark.parametrize("active_high", [True, False])
@pytest.mark.parametrize("pull", ["up", "down", "none"])
def test_the_active_level_and_the_pull_are_independent(mock, shared, active_high, pull):
    """A receiver whose contact opens while the cap is ordered, on a pull-up (active high, pull up),
    reads right too: gpiozero couples level and pull, the backend does not."""
    contact = build(f'pin = 5\nactive_high = {str(active_high).lower()}\npull = "{pull}"', shared)
    ordered, released = (mock.pin(5).drive_high, mock.pin(5).drive_low) if active_high else (
        mock.pin(5).drive_low, mock.pin(5).drive_high)
    ordered()
    assert contact.active() is True
    released()
    assert contact.active() is False


@pytest.mark.parametrize("pull, idle_high", [("up", True), ("down", False)])
def test_the_pull_sets_the_idle_level_of_an_open_contact(mock, shared, pull, idle_high):
    build(f'pin = 5\npull = "{pull}"', shared)
    assert mock.pin(5).pull == pull
    assert mock.pin(5).state is idle_high


def test_each_change_of_the_contact_calls_on_change_with_the_new_level_readable(mock, shared):
    contact = build("pin = 5", shared)
    seen: list[bool] = []
    contact.on_change(lambda: seen.append(contact.active()))
    mock.pin(5).drive_low()
    mock.pin(5).drive_high()
    assert seen == [True, False]


def test_every_callback_is_called(mock, shared):
    contact = build("pin = 5", shared)
    a: list[int] = []
    b: list[int] = []
    contact.on_change(lambda: a.append(1))
    contact.on_change(lambda: b.append(1))
    mock.pin(5).drive_low()
    assert a == b == [1]


def test_a_bouncing_contact_is_not_debounced_but_ends_at_its_last_level(mock, shared):
    """No debounce in the backend: each edge calls on_change, and the policy re-reads active(),
    so a relay's bounce costs a few extra reads and the last level holds."""
    contact = build("pin = 5", shared)
    calls: list[bool] = []
    contact.on_change(lambda: calls.append(contact.active()))
    for _ in range(3):
        mock.pin(5).drive_low()
        mock.pin(5).drive_high()
    mock.pin(5).drive_low()
    assert len(calls) == 7 and calls[-1] is True and contact.active() is True


def test_release_frees_the_pin(mock, shared):
    contact = build("pin = 5", shared)
    contact.release()
    build("pin = 5", shared)  # claimable again


def test_a_pin_in_use_is_device_unavailable_naming_the_control_input(mock, shared):
    build("pin = 5", shared)
    with pytest.raises(DeviceUnavailable, match="control input on GPIO5"):
        build("pin = 5", shared)


@pytest.mark.parametrize("option", ["pin = 54", 'pull = "sideways"', 'active_high = "yes"'])
def test_the_options_are_bounded(option):
    with pytest.raises(config.ConfigError, match=option.split()[0]):
        site_config("pin = 5\n" + option if not option.startswith("pin =") else option)


def test_the_daemon_builds_the_configured_contact_as_its_site_input():
    built = devices.build(site_config("pin = 5"), lambda: 0.0)
    try:
        inp = built.site_input
        assert isinstance(inp, ContactInput) and isinstance(inp, Notifying)
        inp.contact.device.pin.drive_low()
        assert inp.active() is True
    finally:
        for d in built.all():
            if isinstance(d, Closable):
                d.release()
