"""Digital inputs that are not safety inputs: a ripple-control receiver's or a grid operator's
control contact (§14a EnWG) that orders a power cap while active.

One small interface (hal.ContactInput) and a gpiozero backend; the simulator has its own.
"""

from __future__ import annotations

from typing import Any, Callable

from hal import gpio


class GpioInput:
    """A contact on a GPIO input; active() is True while the cap is ordered.

    Not debounced: every edge calls on_change, and the listener re-reads active(), so a
    relay's bounce costs a few reads and the last level holds (tests/test_gpio_input.py)."""

    def __init__(self, contact: Any):
        self.contact = contact
        self._callbacks: list[Callable[[], None]] = []
        contact.watch(self._fire)

    def _fire(self) -> None:
        for callback in list(self._callbacks):
            callback()

    def active(self) -> bool:
        return self.contact.is_active

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def release(self) -> None:
        self.contact.close()


def gpio_input(options: dict, ctx: Any) -> GpioInput:
    factory = gpio.pin_factory(options["pin_factory"], ctx.shared)
    return GpioInput(gpio._input("control input", options["pin"], options["active_high"], options["pull"],
                                 factory))
